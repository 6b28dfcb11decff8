"""meshlib's gRPC channel against grpcio's own xDS channel, same control plane, same
backends: weighted cluster split and method routes, retries (how many attempts reach
the server) and the fault filter's abort rate must come out the same.

grpcio reads its bootstrap once per process, so its client runs in a subprocess
(``calls <target> <method> <n>`` on stdin, one JSON line of counts per command).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshlib import Mesh
from meshlib.controlplane import ControlPlane
from tests.grpc.support import Backend, StaticCache, route, service

pytestmark = pytest.mark.timeout(60)

TARGET = "echo:7070"
CLIENT = textwrap.dedent(
    """
    import collections, json, sys
    import grpc

    channels = {}
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        _, target, method, n, *code = cmd
        channel = channels.setdefault(target, grpc.insecure_channel(target))
        call = channel.unary_unary(method)
        metadata = [("x-code", code[0])] if code else None
        counts, errors = collections.Counter(), []
        for _ in range(int(n)):
            try:
                counts[call(b"x", timeout=5, metadata=metadata).decode().split("|")[0]] += 1
            except grpc.RpcError as err:
                errors.append(f"{err.code()}: {err.details()}")
        print(json.dumps({"counts": counts, "errors": errors}), flush=True)
    """
)


class GrpcioXds:
    def __init__(self, bootstrap: dict[str, Any], tmp_path: Path) -> None:
        path = tmp_path / "grpcio-bootstrap.json"
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

    def calls(self, method: str, n: int, target: str = TARGET) -> dict[str, int]:
        result = self.run(method, n, target)
        assert result["errors"] == [], result["errors"][:3]
        return dict(result["counts"])

    def run(self, method: str, n: int, target: str, code: str = "") -> dict[str, Any]:
        """``n`` calls: replies per backend (``counts``) and error strings (``errors``)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"calls xds:///{target} {method} {n} {code}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"grpcio client died: {self.proc.communicate()[1][-2000:]}")
        return dict(json.loads(line))

    def close(self) -> None:
        try:
            self.proc.communicate("quit\n", timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend(f"b{i}") for i in range(3)]
    yield started
    for b in started:
        b.stop()


def meshlib_calls(mesh: Mesh, method: str, n: int) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        call = channel.unary_unary(method)
        for _ in range(n):
            counts[call(b"x", timeout=5).decode().split("|")[0]] += 1
    return dict(counts)


def test_weighted_split_and_method_routes_match_grpcio(
    tmp_path: Path, backends: list[Backend]
) -> None:
    routes = [
        route({"heavy": 80, "light": 20}, path="/test.Echo/Echo"),
        route("other", prefix="/test.Echo/"),
    ]
    clusters = {
        "heavy": [backends[0].address],
        "light": [backends[1].address],
        "other": [backends[2].address],
    }
    cache = StaticCache(service(TARGET, routes, clusters))
    (tmp_path / "empty").mkdir()
    n = 400
    with ControlPlane(tmp_path / "empty", cache=cache) as cp:
        grpcio = GrpcioXds(cp.bootstrap(), tmp_path)
        try:
            theirs = grpcio.calls("/test.Echo/Echo", n)
            theirs_other = grpcio.calls("/test.Echo/Other", 20)
        finally:
            grpcio.close()
        with Mesh(bootstrap=cp.bootstrap(), resolve_timeout=5) as mesh:
            ours = meshlib_calls(mesh, "/test.Echo/Echo", n)
            ours_other = meshlib_calls(mesh, "/test.Echo/Other", 20)
        assert cp.nacks() == []
    # method routes: identical
    assert theirs_other == ours_other == {"b2": 20}
    # weighted split: both near 80/20 (5 sigma of a binomial(400, 0.8) is +-40)
    for counts in (theirs, ours):
        assert set(counts) == {"b0", "b1"}, counts
        assert abs(counts["b0"] - 0.8 * n) <= 40, counts
    # and near each other (the difference of two such counts: 5 sigma is about +-57)
    assert abs(theirs["b0"] - ours["b0"]) <= 57, (theirs, ours)


FQDN_TARGET = "echo.default.svc.cluster.local:7070"
ISTIO_CONFIG = """\
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: grpc, port: 7070, targetPort: 7070, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-0
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
ports: [{{name: grpc, port: {port}, protocol: TCP}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo]
  http:
  - match: [{{uri: {{prefix: /test.Echo/Other}}}}]
    fault: {{abort: {{grpcStatus: RESOURCE_EXHAUSTED, percentage: {{value: 50}}}}}}
    route: [{{destination: {{host: echo}}}}]
  - retries: {{attempts: 2, retryOn: unavailable}}
    route: [{{destination: {{host: echo}}}}]
"""


def test_retries_and_fault_aborts_match_grpcio(tmp_path: Path, backends: list[Backend]) -> None:
    """A VirtualService's retries and fault, translated by the project's control plane."""
    backend = backends[0]
    config = tmp_path / "config"
    config.mkdir()
    (config / "echo.yaml").write_text(ISTIO_CONFIG.format(port=backend.port))
    failing, n_faults = 6, 200

    def served() -> int:
        return backend.logic.aborted + backend.logic.calls

    with ControlPlane(config) as cp:
        grpcio = GrpcioXds(cp.bootstrap(), tmp_path)
        try:
            assert grpcio.calls("/test.Echo/Echo", 1, FQDN_TARGET)  # resolved
            before = served()
            theirs = grpcio.run("/test.Echo/Echo", failing, FQDN_TARGET, "14")
            theirs_hits = served() - before
            theirs_faults = grpcio.run("/test.Echo/Other", n_faults, FQDN_TARGET)
        finally:
            grpcio.close()
        with (
            Mesh(bootstrap=cp.bootstrap(), resolve_timeout=5) as mesh,
            mesh.grpc_channel(f"xds:///{FQDN_TARGET}") as channel,
        ):
            echo = channel.unary_unary("/test.Echo/Echo")
            echo(b"x", timeout=5)
            before = served()
            ours_errors = 0
            for _ in range(failing):
                try:
                    echo(b"x", timeout=5, metadata=[("x-code", "14")])
                except grpc.RpcError as err:
                    assert err.code() is grpc.StatusCode.UNAVAILABLE
                    ours_errors += 1
            ours_hits = served() - before
            other = channel.unary_unary("/test.Echo/Other")
            ours_aborts = 0
            for _ in range(n_faults):
                try:
                    other(b"x", timeout=5)
                except grpc.RpcError as err:
                    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    ours_aborts += 1
        assert cp.nacks() == []
    # retries: every call fails after 1 + 2 attempts, in both clients
    assert len(theirs["errors"]) == ours_errors == failing
    assert all(e.startswith("StatusCode.UNAVAILABLE") for e in theirs["errors"])
    assert theirs_hits == ours_hits == 3 * failing
    # fault aborts: both near 50% (5 sigma of a binomial(200, 0.5) is about +-35)
    theirs_aborts = len(theirs_faults["errors"])
    assert all(e.startswith("StatusCode.RESOURCE_EXHAUSTED") for e in theirs_faults["errors"])
    for aborts in (theirs_aborts, ours_aborts):
        assert abs(aborts - n_faults / 2) <= 35, (theirs_aborts, ours_aborts)
    assert abs(theirs_aborts - ours_aborts) <= 50, (theirs_aborts, ours_aborts)
