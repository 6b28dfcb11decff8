"""meshlib's bootstrap loader against grpcio's own xDS client, on the same files.

Each variant is written once and given to both: grpcio (in a subprocess, one per file,
since it reads the bootstrap once per process) makes a call over ``xds:///`` through the
project's control plane to a real gRPC server; meshlib loads it with ``load_bootstrap``.
meshlib must accept what grpcio accepts, for the fields gRPC defines, and refuse what
grpcio refuses. The differences are on purpose and listed: unknown keys (grpcio ignores
them, meshlib names them) and certificate files that do not exist (grpcio reads them
only when a cluster uses them; meshlib refuses at start).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshlib.controlplane import ControlPlane
from tests.support import service_objects, write_config
from tests.xds_client.bootstrap_samples import CertFiles, istio_agent
from xds_client import BootstrapError, load_bootstrap

pytestmark = pytest.mark.timeout(120)

TARGET = "xds:///echo.default.svc.cluster.local:7070"
CLIENT = textwrap.dedent(
    """
    import json, sys, grpc
    try:
        with grpc.insecure_channel(sys.argv[1]) as channel:
            echo = channel.unary_unary("/test.Echo/Echo")
            print(json.dumps({"ok": echo(b"ping", timeout=8).decode()}))
    except grpc.RpcError as err:
        print(json.dumps({"error": f"{err.code()}: {err.details()}"}))
    except Exception as err:
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
    """
)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(boot: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = boot
        for step in parents:
            target = target[int(step)] if step.isdigit() else target[step]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()

# name, mutation, what meshlib does: "same" as grpcio, or the documented difference
VARIANTS: list[tuple[str, Mutation, str]] = [
    ("istio-agent", lambda b: None, "same"),
    ("no-node-locality", _set("node.locality", _DELETE), "same"),
    ("made-up-cred-first", _set("xds_servers.0.channel_creds", [
        {"type": "made_up", "config": {"x": 1}}, {"type": "insecure"}]), "same"),
    ("odd-server-features", _set("xds_servers.0.server_features", ["xds_v3", 7, "future"]), "same"),
    ("node-cluster-and-zone", lambda b: b["node"].update(
        cluster="c", locality={"region": "r", "zone": "z", "sub_zone": "s"}), "same"),
    ("metadata-33-deep", _set("node.metadata.DEEP", nested(30)), "same"),
    ("default-template", _set("client_default_listener_resource_name_template", "%s"), "same"),
    ("authorities", _set("authorities", {"plain": {}}), "same"),
    ("no-channel-creds", _set("xds_servers.0.channel_creds", _DELETE), "same"),
    ("empty-channel-creds", _set("xds_servers.0.channel_creds", []), "same"),
    ("unsupported-cred-only", _set("xds_servers.0.channel_creds", [{"type": "insecur"}]), "same"),
    ("no-servers", _set("xds_servers", []), "same"),
    ("no-server-uri", _set("xds_servers.0.server_uri", _DELETE), "same"),
    ("node-id-number", _set("node.id", 7), "same"),
    ("plugin-typo", _set("certificate_providers.default.plugin_name", "file_watchr"), "same"),
    ("cert-without-key", _set("certificate_providers.default.config.private_key_file", _DELETE),
     "same"),
    ("authority-bad-template", _set("authorities", {
        "a": {"client_listener_resource_name_template": "x/%s"}}), "same"),
    ("unknown-top-level-key", _set("future_field", {"x": 1}), "meshlib refuses"),
    ("unknown-node-key", _set("node.Id", "x"), "meshlib refuses"),
    ("missing-cert-file", _set("certificate_providers.default.config.certificate_file",
                               "/nonexistent/cert-chain.pem"), "meshlib refuses"),
]  # fmt: skip


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"echo")}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    config = write_config(tmp_path / "config", service_objects("echo", 7070, [("127.0.0.1", port)]))
    with ControlPlane(config) as cp:
        yield cp
    server.stop(0)


def test_meshlib_accepts_what_grpcio_accepts(tmp_path: Path, control_plane: ControlPlane) -> None:
    certs = CertFiles(tmp_path / "certs")
    base = istio_agent(control_plane.address, certs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env["GRPC_VERBOSITY"] = "NONE"
    runs = []
    for name, mutate, _ in VARIANTS:
        boot = copy.deepcopy(base)
        mutate(boot)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(boot))
        proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, TARGET],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**env, "GRPC_XDS_BOOTSTRAP": str(path)},
        )
        runs.append((name, path, proc))
    lines = []
    mismatches = []
    for (name, path, proc), (_, _, expected) in zip(runs, VARIANTS, strict=True):
        out, _ = proc.communicate(timeout=60)
        grpcio = json.loads(out)
        try:
            load_bootstrap(path)
            meshlib = "accepts"
        except BootstrapError as err:
            meshlib = f"refuses: {str(err).removeprefix(f'{path}: ')}"
        grpcio_ok = grpcio.get("ok") == "echo"
        said = "accepts" if grpcio_ok else f"refuses: {grpcio['error'][:80]}"
        lines.append(f"{name:24} grpcio {said}\n{'':24} meshlib {meshlib[:100]}")
        meshlib_ok = meshlib == "accepts"
        if expected == "same" and grpcio_ok != meshlib_ok:
            mismatches.append(name)
        if expected == "meshlib refuses" and not (grpcio_ok and not meshlib_ok):
            mismatches.append(name)
    print("\n".join(lines))
    assert not mismatches, "\n".join(lines)
