"""Slow start: decoding (Envoy's fields and defaults, precise NACKs), the weight formula,
the share a ramping endpoint gets under a controllable clock, and the ramp timer."""

from __future__ import annotations

import collections
import math
import random
from typing import Any

import pytest
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from google.protobuf import json_format

from meshlib import Call
from meshlib.balancing import Balancer, LocalityGroup, RampTimer, slow_start_factor
from meshlib.cluster import EndpointRegistry, EndpointState
from tests.meshlib.test_cluster_decode import cluster, lbp
from xds_client.resources import CLUSTER, Endpoint, LbConfig, ResourceError
from xds_client.resources.cluster import SlowStart

CALL = Call("svc:80", "GET", "/")


def rr(**slow_start: Any) -> round_robin_pb2.RoundRobin:
    return json_format.ParseDict({"slow_start_config": slow_start}, round_robin_pb2.RoundRobin())


def lr(**slow_start: Any) -> least_request_pb2.LeastRequest:
    msg = least_request_pb2.LeastRequest()
    return json_format.ParseDict({"slow_start_config": slow_start}, msg)


# -- decoding -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),  # no slow_start_config
        ({"round_robin_lb_config": {"slow_start_config": {}}}, None),  # no window: off
        (
            {"round_robin_lb_config": {"slow_start_config": {"slow_start_window": "0s"}}},
            None,
        ),
        (
            {"round_robin_lb_config": {"slow_start_config": {"slow_start_window": "30s"}}},
            SlowStart(30.0, 1.0, 10.0),  # Envoy's defaults: aggression 1.0, 10%
        ),
        (
            {
                "lb_policy": "LEAST_REQUEST",
                "least_request_lb_config": {
                    "slow_start_config": {
                        "slow_start_window": "2.5s",
                        "aggression": {"default_value": 2.0, "runtime_key": "k"},
                        "min_weight_percent": {"value": 25},
                    }
                },
            },
            SlowStart(2.5, 2.0, 25.0),
        ),
        ({"load_balancing_policy": lbp(rr(slow_start_window="10s"))}, SlowStart(10.0)),
        (
            {"load_balancing_policy": lbp(lr(slow_start_window="1s", min_weight_percent={}))},
            SlowStart(1.0, 1.0, 0.0),
        ),
        (
            {
                "load_balancing_policy": lbp(
                    json_format.ParseDict(
                        {"endpoint_picking_policy": lbp(rr(slow_start_window="4s"))},
                        wrr_locality_pb2.WrrLocality(),
                    )
                )
            },
            SlowStart(4.0),
        ),
    ],
    ids=["none", "empty", "zero-window", "rr-defaults", "lr-all", "typed-rr", "typed-lr", "wrr"],
)
def test_slow_start_decodes_with_envoy_defaults(
    fields: dict[str, Any], expected: SlowStart | None
) -> None:
    _, c = CLUSTER.decode(cluster(**fields))
    assert c.lb.slow_start == expected


def test_slow_start_is_not_read_for_other_policies() -> None:
    # round_robin_lb_config under RING_HASH is not the policy's config: ignored, as Envoy
    fields = {"lb_policy": "RING_HASH", "round_robin_lb_config": {"slow_start_config": {}}}
    _, c = CLUSTER.decode(cluster(**fields))
    assert c.lb.slow_start is None and c.lb.policy == "RING_HASH"


@pytest.mark.parametrize(
    ("fields", "path", "problem"),
    [
        (
            {"round_robin_lb_config": {"slow_start_config": {"slow_start_window": "-1s"}}},
            "round_robin_lb_config.slow_start_config.slow_start_window",
            "non-negative",
        ),
        (
            {
                "lb_policy": "LEAST_REQUEST",
                "least_request_lb_config": {
                    "slow_start_config": {
                        "slow_start_window": "1s",
                        "min_weight_percent": {"value": 101},
                    }
                },
            },
            "least_request_lb_config.slow_start_config.min_weight_percent.value",
            "0-100",
        ),
        (
            {
                "load_balancing_policy": lbp(
                    lr(slow_start_window="1s", min_weight_percent={"value": 250})
                )
            },
            "load_balancing_policy.policies[0].typed_extension_config.typed_config"
            ".slow_start_config.min_weight_percent.value",
            "0-100",
        ),
    ],
    ids=["negative-window", "min-weight-101", "typed"],
)
def test_bad_slow_start_is_nacked_with_the_field_path(
    fields: dict[str, Any], path: str, problem: str
) -> None:
    with pytest.raises(ResourceError) as info:
        CLUSTER.decode(cluster(**fields))
    assert info.value.field == path and problem in str(info.value)


@pytest.mark.parametrize("value", [0, -1, "NaN"])
def test_an_aggression_envoy_cannot_use_falls_back_to_one(value: object) -> None:
    # Envoy accepts the config (envoy --mode validate) and uses 1.0 at run time.
    slow = {"slow_start_window": "1s", "aggression": {"default_value": value, "runtime_key": "k"}}
    _, c = CLUSTER.decode(cluster(round_robin_lb_config={"slow_start_config": slow}))
    assert c.lb.slow_start == SlowStart(1.0, 1.0, 10.0)


# -- the weight formula -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "age", "factor"),
    [
        (SlowStart(10.0), 0.0, 0.1),  # min_weight_percent floor
        (SlowStart(10.0), 0.5, 0.1),
        (SlowStart(10.0), 5.0, 0.5),  # linear with aggression 1
        (SlowStart(10.0), 9.0, 0.9),
        (SlowStart(10.0), 10.0, 1.0),  # out of the window
        (SlowStart(10.0, 2.0), 2.5, 0.5),  # (0.25) ** (1/2)
        (SlowStart(10.0, 0.5), 5.0, 0.25),  # (0.5) ** 2
        (SlowStart(10.0, 1.0, 0.0), 0.0, 0.0001),  # time factor counts at least 1 ms
        (SlowStart(10.0, 1.0, 60.0), 5.0, 0.6),
    ],
)
def test_slow_start_factor_is_envoys_formula(config: SlowStart, age: float, factor: float) -> None:
    assert math.isclose(slow_start_factor(config, age), factor, rel_tol=1e-9)


# -- balancing under a controllable clock ------------------------------------------------------
class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def endpoints(clock: Clock) -> tuple[list[EndpointState], EndpointState]:
    """Three endpoints of the initial set and one that joined at ``clock.now``."""
    registry = EndpointRegistry()
    old = [registry.get("c", Endpoint("10.0.0.1", 80 + i)) for i in range(3)]
    new = registry.get("c", Endpoint("10.0.0.2", 80), joined=clock.now)
    assert all(e.slow_start_at is None for e in old) and new.slow_start_at == clock.now
    return old, new


def share_of(balancer: Balancer, target: EndpointState, picks: int) -> float:
    return sum(1 for _ in range(picks) if balancer.pick(CALL) is target) / picks


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.5, 0.1 / 3.1),  # at the floor: 10% of its weight
        (5.0, 0.5 / 3.5),
        (8.0, 0.8 / 3.8),
        (10.0, 1 / 4),  # window over: its full share
        (60.0, 1 / 4),
    ],
)
def test_round_robin_share_follows_the_ramp(age: float, expected: float) -> None:
    clock = Clock()
    old, new = endpoints(clock)
    config = LbConfig(slow_start=SlowStart(10.0))
    clock.now += age
    b = Balancer([LocalityGroup(1, 0, (*old, new))], config, clock=clock, rng=random.Random(3))
    # round robin is exact over whole cycles: 100 x weight units per cycle
    cycle = 310 if age == 0.5 else 350 if age == 5.0 else 380 if age == 8.0 else 4
    assert share_of(b, new, cycle * 10) == pytest.approx(expected, abs=1e-9)
    assert (b.ramp_until is None) == (age >= 10.0)
    if b.ramp_until is not None:
        assert b.ramp_until == new.slow_start_at + 10.0  # type: ignore[operator]


def test_least_request_gives_a_ramping_endpoint_less_then_its_full_share() -> None:
    clock = Clock()
    old, new = endpoints(clock)
    config = LbConfig("LEAST_REQUEST", slow_start=SlowStart(10.0))
    early = Balancer([LocalityGroup(1, 0, (*old, new))], config, clock=clock, rng=random.Random(5))
    clock.now += 5.0
    middle = Balancer([LocalityGroup(1, 0, (*old, new))], config, clock=clock, rng=random.Random(5))
    clock.now += 5.0
    done = Balancer([LocalityGroup(1, 0, (*old, new))], config, clock=clock, rng=random.Random(5))
    n = 20_000
    shares = [share_of(b, new, n) for b in (early, middle, done)]
    assert shares[0] < shares[1] < 0.2
    # out of the window: plain power of two choices, a quarter each (chi-square, 3 dof)
    counts = collections.Counter(done.pick(CALL) for _ in range(n))
    assert sum((c - n / 4) ** 2 / (n / 4) for c in counts.values()) < 16.27
    assert done.ramp_until is None


def test_initial_endpoints_and_unhealthy_joiners_do_not_ramp() -> None:
    registry = EndpointRegistry()
    first = registry.get("c", Endpoint("10.0.0.1", 80))
    sick = registry.get("c", Endpoint("10.0.0.2", 80, health="UNHEALTHY"), joined=5.0)
    again = registry.get("c", Endpoint("10.0.0.1", 80), joined=7.0)  # known: unchanged
    assert first.slow_start_at is None and sick.slow_start_at is None
    assert again is first and again.slow_start_at is None


def test_when_all_endpoints_are_new_they_share_equally() -> None:
    # Envoy gives no special treatment: equal ages give equal factors, so equal shares.
    clock = Clock()
    registry = EndpointRegistry()
    eps = tuple(registry.get("c", Endpoint("10.0.0.1", 80 + i), joined=clock.now) for i in range(3))
    clock.now += 2.0
    b = Balancer([LocalityGroup(1, 0, eps)], LbConfig(slow_start=SlowStart(10.0)), clock=clock)
    counts = collections.Counter(b.pick(CALL) for _ in range(300))
    assert sorted(counts.values()) == [100, 100, 100]
    assert b.ramp_until == clock.now + 8.0


def test_other_policies_ignore_slow_start() -> None:
    clock = Clock()
    old, new = endpoints(clock)
    config = LbConfig("RANDOM", slow_start=SlowStart(10.0))
    b = Balancer([LocalityGroup(1, 0, (*old, new))], config, clock=clock, rng=random.Random(2))
    assert b.ramp_until is None
    assert share_of(b, new, 8000) == pytest.approx(0.25, abs=0.03)


def test_ejected_endpoint_in_panic_keeps_its_weight() -> None:
    clock = Clock()
    old, new = endpoints(clock)
    for e in (*old, new):
        e.ejected = True  # everyone ejected: panic balances over all hosts
    b = Balancer(
        [LocalityGroup(1, 0, (*old, new))], LbConfig(slow_start=SlowStart(10.0)), clock=clock
    )
    assert b.panic == [True] and b.ramp_until is None
    assert share_of(b, new, 400) == 0.25


# -- the ramp timer ---------------------------------------------------------------------------
def test_ramp_timer_rebuilds_in_steps_until_the_window_ends() -> None:
    clock = Clock(0.0)
    timer = RampTimer(clock)
    ends_at = 10.0
    calls: list[float] = []

    def rebuild() -> float | None:
        calls.append(clock.now)
        return ends_at if clock.now < ends_at else None

    timer.track("c", rebuild, window=10.0)  # 20 steps: every 0.5 s
    try:
        assert timer.run_once() == pytest.approx(0.5)
        assert calls == []  # nothing due yet
        for _ in range(40):
            clock.now += 0.5
            timer.run_once()
        assert calls == [pytest.approx(0.5 * i) for i in range(1, 21)]
        assert not timer.tracking("c")  # the rebuild at 10 s had nothing ramping: stopped
        assert timer.run_once() == 3600.0
    finally:
        timer.close()


def test_ramp_timer_survives_a_failing_rebuild_and_untracks() -> None:
    clock = Clock(0.0)
    timer = RampTimer(clock)

    def broken() -> float | None:
        raise RuntimeError("boom")

    timer.track("bad", broken, window=1.0)
    timer.track("ok", lambda: 100.0, window=1.0)
    clock.now = 1.0
    try:
        timer.run_once()
        assert not timer.tracking("bad") and timer.tracking("ok")
        timer.untrack("ok")
        assert not timer.tracking("ok")
    finally:
        timer.close()
