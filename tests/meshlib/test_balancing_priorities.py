"""Priorities, overprovisioning, panic, locality weights and health status (Envoy's rules)."""

from __future__ import annotations

import collections
import random

import pytest

from meshlib import Call
from meshlib.balancing import Balancer, LocalityGroup
from meshlib.cluster import EndpointState
from xds_client.resources import Endpoint, LbConfig

CALL = Call("svc:80", "GET", "/")
_port = iter(range(20000, 30000))


def group(priority: int, healthy: int, unhealthy: int = 0, weight: int = 1) -> LocalityGroup:
    eps = [EndpointState("c", Endpoint("127.0.0.1", next(_port))) for _ in range(healthy)]
    eps += [
        EndpointState("c", Endpoint("127.0.0.1", next(_port), health="UNHEALTHY"))
        for _ in range(unhealthy)
    ]
    return LocalityGroup(weight, priority, tuple(eps))


@pytest.mark.parametrize(
    ("levels", "factor", "loads", "panic"),
    [
        # (healthy, unhealthy) per priority; Envoy's documented examples
        ([(10, 0), (10, 0)], 1.4, [100, 0], [False, False]),
        ([(8, 2), (10, 0)], 1.4, [100, 0], [False, False]),  # 80% x 1.4 >= 100
        ([(7, 3), (10, 0)], 1.4, [98, 2], [False, False]),
        ([(5, 5), (10, 0)], 1.4, [70, 30], [False, False]),
        # P0 below 50%, but the normalized total is 100: no panic (Envoy)
        ([(2, 8), (10, 0)], 1.4, [28, 72], [False, False]),
        ([(0, 10), (10, 0)], 1.4, [0, 100], [False, False]),
        ([(2, 8), (5, 5)], 1.4, [29, 71], [True, False]),  # total 98: P0 panics inside
        ([(5, 5), (5, 5)], 1.0, [50, 50], [False, False]),
        ([(2, 8), (2, 8)], 1.4, [50, 50], [True, True]),  # every level panics: total panic
        ([(0, 2), (2, 3)], 1.4, [29, 71], [True, True]),  # total 56, still total panic
        ([(1, 9), (1, 9)], 1.4, [50, 50], [True, True]),  # total panic: by host count
    ],
)
def test_priority_loads(
    levels: list[tuple[int, int]], factor: float, loads: list[int], panic: list[bool]
) -> None:
    groups = [group(p, h, u) for p, (h, u) in enumerate(levels)]
    b = Balancer(groups, overprovisioning_factor=factor)
    assert b.loads == loads
    assert b.panic == panic


def test_failover_traffic_follows_loads() -> None:
    g0, g1 = group(0, 5, 5), group(1, 10)
    b = Balancer([g0, g1], rng=random.Random(4))
    n = 5000
    in_p0 = sum(1 for _ in range(n) if b.pick(CALL) in g0.endpoints)
    assert abs(in_p0 / n - 0.70) < 0.03
    # no pick goes to an unhealthy endpoint outside panic
    assert all(b.pick(CALL).endpoint.usable for _ in range(500))  # type: ignore[union-attr]


def test_panic_routes_to_all_hosts_and_threshold_zero_disables_it() -> None:
    g = group(0, 1, 9)
    counts = collections.Counter(
        e.endpoint.usable for _ in range(2000) if (e := Balancer([g]).pick(CALL))
    )
    assert counts[False] > 1000  # panic: unhealthy hosts take traffic too
    strict = Balancer([g], panic_threshold=0)
    assert {strict.pick(CALL) for _ in range(200)} == {g.endpoints[0]}
    assert Balancer([group(0, 0, 3)], panic_threshold=0).pick(CALL) is None


@pytest.mark.parametrize("status", ["UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"])
def test_health_status_excluded(status: str) -> None:
    # 3 of 4 healthy x 1.4 >= 100%: not even a DEGRADED host is needed.
    good = [EndpointState("c", Endpoint("127.0.0.1", next(_port))) for _ in range(3)]
    bad = EndpointState("c", Endpoint("127.0.0.1", next(_port), health=status))
    b = Balancer([LocalityGroup(1, 0, (*good, bad))])
    assert all(b.pick(CALL) is not bad for _ in range(200))


def test_draining_never_used_even_in_panic() -> None:
    draining = EndpointState("c", Endpoint("127.0.0.1", next(_port), health="DRAINING"))
    unhealthy = EndpointState("c", Endpoint("127.0.0.1", next(_port), health="UNHEALTHY"))
    b = Balancer([LocalityGroup(1, 0, (draining, unhealthy))])
    assert {b.pick(CALL) for _ in range(100)} == {unhealthy}


def test_locality_weights_only_when_enabled() -> None:
    a, b_ = group(0, 1, weight=3), group(0, 3, weight=1)
    weighted = Balancer([a, b_], LbConfig(locality_weighted=True))
    flat = Balancer([a, b_], LbConfig())
    n = 4000
    in_a_weighted = sum(1 for _ in range(n) if weighted.pick(CALL) in a.endpoints)
    in_a_flat = sum(1 for _ in range(n) if flat.pick(CALL) in a.endpoints)
    assert in_a_weighted == 3000  # smooth WRR over localities: exact per cycle
    assert in_a_flat == 1000  # one endpoint of four


def test_locality_weight_scaled_by_health_and_unset_weight_gets_nothing() -> None:
    a = group(0, 1, 3, weight=1)  # 25% healthy x 1.4 = 35% of its weight
    b_ = group(0, 4, weight=1)
    none = group(0, 4, weight=0)
    bal = Balancer([a, b_, none], LbConfig(locality_weighted=True))
    n = 2700
    picks = [bal.pick(CALL) for _ in range(n)]
    assert not any(p in none.endpoints for p in picks)
    in_a = sum(1 for p in picks if p in a.endpoints)
    assert in_a == pytest.approx(n * 35 / 135, abs=2)


def test_hash_policy_picks_priority_by_key() -> None:
    g0, g1 = group(0, 5, 5), group(1, 10)
    b = Balancer([g0, g1], LbConfig("RING_HASH"))
    keys = range(0, 100000, 7)
    assert all(b.pick(CALL, k) is b.pick(CALL, k) for k in keys)
    share = sum(1 for k in keys if b.pick(CALL, k) in g0.endpoints) / len(keys)
    assert abs(share - 0.70) < 0.02


def test_ejected_endpoints_leave_the_rebuilt_balancer() -> None:
    g = group(0, 4)
    g.endpoints[0].ejected = True
    b = Balancer([g])
    assert all(b.pick(CALL) is not g.endpoints[0] for _ in range(100))
