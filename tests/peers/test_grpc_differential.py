"""meshlib's gRPC channel against grpcio's own xDS channel, same control plane, same
backends: weighted cluster split and method routes must come out the same.

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
        _, target, method, n = cmd
        channel = channels.setdefault(target, grpc.insecure_channel(target))
        call = channel.unary_unary(method)
        counts, errors = collections.Counter(), []
        for _ in range(int(n)):
            try:
                counts[call(b"x", timeout=5).decode().split("|")[0]] += 1
            except grpc.RpcError as err:
                errors.append(f"{err.code()}: {err.details()}")
        print(json.dumps({"counts": counts, "errors": errors[:3]}), flush=True)
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

    def calls(self, method: str, n: int) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"calls xds:///{TARGET} {method} {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"grpcio client died: {self.proc.communicate()[1][-2000:]}")
        result = json.loads(line)
        assert result["errors"] == [], result
        return dict(result["counts"])

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
