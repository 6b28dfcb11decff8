"""Round robin: smooth, weighted, over usable endpoints only."""

from __future__ import annotations

import collections

from meshlib import Call
from meshlib._endpoints import EndpointState
from meshlib.balancing import RoundRobinPicker
from meshlib.balancing.round_robin import smooth_schedule
from xds_client.resources import Endpoint

CALL = Call("svc:80", "GET", "/")


def states(*specs: tuple[int, str]) -> list[EndpointState]:
    return [
        EndpointState("c", Endpoint("127.0.0.1", 9000 + i, w, h)) for i, (w, h) in enumerate(specs)
    ]


def test_smooth_schedule_interleaves_heavy_endpoints() -> None:
    assert smooth_schedule([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
    assert smooth_schedule([2, 2]) == [0, 1]  # reduced by gcd


def test_equal_weights_spread_exactly() -> None:
    picker = RoundRobinPicker(states((1, "HEALTHY"), (1, "HEALTHY"), (1, "UNKNOWN")))
    counts = collections.Counter(p.address for _ in range(300) if (p := picker.pick(CALL)))
    assert sorted(counts.values()) == [100, 100, 100]


def test_weights_and_health_are_honoured() -> None:
    picker = RoundRobinPicker(
        states((3, "HEALTHY"), (1, "HEALTHY"), (5, "UNHEALTHY"), (5, "DRAINING"))
    )
    counts = collections.Counter(p.address for _ in range(400) if (p := picker.pick(CALL)))
    assert counts == {"127.0.0.1:9000": 300, "127.0.0.1:9001": 100}


def test_no_usable_endpoint() -> None:
    assert RoundRobinPicker(states((1, "UNHEALTHY"))).pick(CALL) is None
    assert RoundRobinPicker([]).pick(CALL) is None
