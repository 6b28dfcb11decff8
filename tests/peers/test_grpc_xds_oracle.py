"""grpcio's own xDS client, pointed at the embedded control plane, is the oracle.

grpcio reads GRPC_XDS_BOOTSTRAP once per process, so the xDS client runs in a
subprocess that takes commands on stdin (``call <target> <n>`` / ``quit``) and answers
each with one JSON line: how many calls succeeded, which backends answered, the errors.
Backends are real gRPC servers on 127.0.0.1 ephemeral ports answering with their id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
)

pytestmark = pytest.mark.timeout(30)

ALL_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)

CLIENT = textwrap.dedent(
    """
    import collections, json, sys
    import grpc

    channels = {}
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        _, target, n = cmd
        if target not in channels:
            channels[target] = grpc.insecure_channel(target)
        echo = channels[target].unary_unary("/test.Echo/Echo")
        counts, seq, errors = collections.Counter(), [], []
        for _ in range(int(n)):
            try:
                who = echo(b"ping", timeout=5).decode()
                counts[who] += 1
                seq.append(who)
            except grpc.RpcError as err:
                errors.append(f"{err.code()}: {err.details()}")
                break
        print(json.dumps({"ok": sum(counts.values()), "counts": counts, "seq": seq,
                          "errors": errors}), flush=True)
    for channel in channels.values():
        channel.close()
    """
)


class Backend:
    """A gRPC server on 127.0.0.1 whose /test.Echo/Echo answers with its id."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "test.Echo",
            {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: ident.encode())},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


class XdsClientProcess:
    """grpcio's xDS client in a subprocess with its own bootstrap."""

    def __init__(self, bootstrap: dict[str, Any], tmp_path: Path) -> None:
        path = tmp_path / f"bootstrap-{len(list(tmp_path.glob('bootstrap-*')))}.json"
        path.write_text(json.dumps(bootstrap))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
        env.update(GRPC_XDS_BOOTSTRAP=str(path), GRPC_VERBOSITY="ERROR")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def call(self, target: str, n: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"call {target} {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"xDS client died: {self.proc.communicate()[1][-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.communicate("quit\n", timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend(f"backend-{i}") for i in range(3)]
    yield started
    for b in started:
        b.server.stop(0)


def write_config(directory: Path, backends: list[Backend]) -> None:
    """Service ``echo`` (port 7070) with one EndpointSlice per backend, all on 127.0.0.1."""
    docs = [
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: echo, namespace: default}
        spec:
          clusterIP: 10.96.7.7
          selector: {app: echo}
          ports: [{name: grpc, port: 7070, targetPort: 7070, appProtocol: grpc}]
        """
    ]
    for b in backends:
        docs.append(
            f"""\
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: echo-{b.ident}
              namespace: default
              labels: {{kubernetes.io/service-name: echo}}
            addressType: IPv4
            endpoints:
            - addresses: [127.0.0.1]
              conditions: {{ready: true, serving: true, terminating: false}}
              targetRef: {{kind: Pod, name: {b.ident}, namespace: default}}
            ports: [{{name: grpc, port: {b.port}, protocol: TCP}}]
            """
        )
    (directory / "echo.yaml").write_text("---\n".join(textwrap.dedent(d) for d in docs))


@pytest.fixture
def client_factory(tmp_path: Path) -> Iterator[Any]:
    clients: list[XdsClientProcess] = []

    def make(bootstrap: dict[str, Any]) -> XdsClientProcess:
        client = XdsClientProcess(bootstrap, tmp_path)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_grpcio_round_robins_over_every_backend(
    tmp_path: Path, backends: list[Backend], client_factory: Any
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    write_config(config, backends)
    with ControlPlane(config) as cp:
        bootstrap = cp.bootstrap(namespace="default")
        node_id = bootstrap["node"]["id"]
        client = client_factory(bootstrap)
        idents = {b.ident for b in backends}
        for target in ("xds:///echo.default.svc.cluster.local:7070", "xds:///echo:7070"):
            result = client.call(target, 12)
            assert result["errors"] == []
            assert result["ok"] == 12
            assert set(result["counts"]) == idents, result
            # Round robin: after warm-up, every window of 3 calls hits all three backends.
            assert set(result["seq"][-3:]) == idents, result["seq"]
        for type_url in ALL_TYPES:
            cp.wait_for_ack(node_id, type_url, timeout=5)
        assert cp.nacks() == []
        acked = {e.type_url for e in cp.acks(node_id)}
        assert acked == set(ALL_TYPES)


def test_grpcio_follows_endpoint_changes(
    tmp_path: Path, backends: list[Backend], client_factory: Any
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    write_config(config, backends[:2])
    with ControlPlane(config) as cp:
        bootstrap = cp.bootstrap(namespace="default")
        node_id = bootstrap["node"]["id"]
        client = client_factory(bootstrap)
        target = "xds:///echo.default:7070"
        before = client.call(target, 6)
        assert before["errors"] == []
        assert set(before["counts"]) == {"backend-0", "backend-1"}

        write_config(config, backends[1:])
        version = cp.reload().version
        assert version == "2"
        cp.wait_for_ack(node_id, ENDPOINT_TYPE, timeout=5, version=version)
        after = client.call(target, 12)
        assert after["errors"] == []
        assert set(after["seq"][-8:]) == {"backend-1", "backend-2"}, after["seq"]
        assert cp.nacks() == []
