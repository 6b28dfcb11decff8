"""Outlier detection, field by field against Envoy's documented meaning (fake clock)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from meshlib._outcome import Outcome, OutcomeKind
from meshlib.cluster import EndpointState
from meshlib.resilience.outlier import OutlierDetector, OutlierSweeper
from xds_client.resources import Endpoint, OutlierDetection

OK = Outcome(OutcomeKind.RESPONSE, 200)
E500 = Outcome(OutcomeKind.RESPONSE, 500)
E503 = Outcome(OutcomeKind.RESPONSE, 503)
CONNECT = Outcome(OutcomeKind.CONNECT_FAILURE)
LOCAL = Outcome(OutcomeKind.LOCAL)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(n: int = 10, **fields: object) -> tuple[OutlierDetector, list[EndpointState], Clock]:
    clock = Clock()
    config = dataclasses.replace(OutlierDetection(), **fields)  # type: ignore[arg-type]
    hosts = [EndpointState("c", Endpoint("127.0.0.1", 9000 + i)) for i in range(n)]
    d = OutlierDetector("c", config, clock=clock, rng=random.Random(1))
    d.configure(config, hosts)
    return d, hosts, clock


def send(h: EndpointState, outcome: Outcome, times: int = 1) -> None:
    for _ in range(times):
        h.started()
        h.finished(outcome)


def test_consecutive_5xx_ejects_at_the_threshold() -> None:
    _d, hosts, _ = setup()
    send(hosts[0], E500, 4)
    assert not hosts[0].ejected
    send(hosts[0], E500)
    assert hosts[0].ejected and hosts[0].stats.times_ejected == 1


def test_a_success_resets_the_count_and_local_outcomes_do_not_count() -> None:
    _d, hosts, _ = setup()
    send(hosts[0], E500, 4)
    send(hosts[0], OK)
    send(hosts[0], E500, 4)
    send(hosts[0], LOCAL, 10)  # fault aborts / overflow never reached the endpoint
    assert not hosts[0].ejected


def test_connect_failures_count_as_5xx_without_split() -> None:
    _d, hosts, _ = setup()
    send(hosts[0], CONNECT, 5)
    assert hosts[0].ejected


def test_consecutive_gateway_failure_is_not_enforced_by_default() -> None:
    _d, hosts, _ = setup(consecutive_5xx=100)
    send(hosts[0], E503, 10)
    assert not hosts[0].ejected
    _d, hosts, _ = setup(consecutive_5xx=100, enforcing_consecutive_gateway_failure=100)
    send(hosts[0], E503, 4)
    send(hosts[0], E500)  # a non-gateway 5xx breaks the gateway streak
    send(hosts[0], E503, 4)
    assert not hosts[0].ejected
    send(hosts[0], E503)
    assert hosts[0].ejected


def test_split_local_origin_errors() -> None:
    _d, hosts, _ = setup(
        split_external_local_origin_errors=True, consecutive_local_origin_failure=3
    )
    send(hosts[0], E500, 4)
    send(hosts[0], CONNECT, 2)
    assert not hosts[0].ejected  # local errors no longer count as 5xx
    send(hosts[0], CONNECT)
    assert hosts[0].ejected
    send(hosts[1], CONNECT, 2)
    send(hosts[1], E500)  # a response means the connection worked: local streak resets
    send(hosts[1], CONNECT, 2)
    assert not hosts[1].ejected


def test_enforcing_zero_never_ejects() -> None:
    _d, hosts, _ = setup(enforcing_consecutive_5xx=0)
    send(hosts[0], E500, 20)
    assert not hosts[0].ejected


@pytest.mark.parametrize(
    ("n", "percent", "always_one", "ejectable"),
    [
        (10, 10, False, 1),
        (10, 20, False, 2),
        (3, 10, False, 0),  # one host is 33% > 10%
        (3, 10, True, 1),  # always_eject_one_host
        (3, 50, False, 1),
        (4, 100, False, 4),
    ],
)
def test_max_ejection_percent(n: int, percent: int, always_one: bool, ejectable: int) -> None:
    _d, hosts, _ = setup(n, max_ejection_percent=percent, always_eject_one_host=always_one)
    for h in hosts:
        send(h, E500, 5)
    assert sum(h.ejected for h in hosts) == ejectable


def test_ejection_time_grows_with_times_ejected_and_is_capped() -> None:
    d, hosts, clock = setup(base_ejection_time=30.0, max_ejection_time=70.0, interval=10.0)
    h = hosts[0]
    expected = [30.0, 60.0, 70.0]
    for want in expected:
        send(h, E500, 5)
        assert h.ejected and h.stats.eject_for == want
        clock.now += want - 1
        d.sweep()
        assert h.ejected  # not yet
        clock.now += 1
        d.sweep()
        assert not h.ejected  # un-ejected on the first sweep after expiry
        assert h.stats.consecutive_5xx == 0


def test_multiplier_decays_while_the_host_stays_healthy() -> None:
    d, hosts, clock = setup(base_ejection_time=30.0)
    h = hosts[0]
    send(h, E500, 5)
    clock.now += 30
    d.sweep()
    assert h.stats.times_ejected == 1
    clock.now += 10
    d.sweep()
    assert h.stats.times_ejected == 0
    send(h, E500, 5)
    assert h.stats.eject_for == 30.0


def test_success_rate_ejects_the_statistical_outlier() -> None:
    d, hosts, _ = setup(5, consecutive_5xx=1000, max_ejection_percent=100)
    for i, h in enumerate(hosts):
        for k in range(100):
            send(h, E500 if (i == 0 and k % 2 == 0) or (i > 0 and k % 50 == 0) else OK)
    assert d.sweep() and [h.ejected for h in hosts] == [True, False, False, False, False]


@pytest.mark.parametrize(
    ("fields", "n", "volume"),
    [
        ({}, 4, 100),  # fewer than success_rate_minimum_hosts (5)
        ({}, 5, 99),  # below success_rate_request_volume (100)
        ({"enforcing_success_rate": 0}, 5, 100),
    ],
)
def test_success_rate_preconditions(fields: dict[str, object], n: int, volume: int) -> None:
    d, hosts, _ = setup(n, consecutive_5xx=1000, max_ejection_percent=100, **fields)
    for i, h in enumerate(hosts):
        for k in range(volume):
            send(h, E500 if i == 0 and k % 2 == 0 else OK)
    assert not d.sweep() and not any(h.ejected for h in hosts)


def test_failure_percentage_off_by_default_then_threshold() -> None:
    def run(**fields: object) -> list[bool]:
        d, hosts, _ = setup(
            5, consecutive_5xx=1000, enforcing_success_rate=0, max_ejection_percent=100, **fields
        )
        for i, h in enumerate(hosts):
            for k in range(50):
                send(h, E500 if (i == 0 and k % 10 != 0) else OK)  # host 0: 90% failures
        d.sweep()
        return [h.ejected for h in hosts]

    assert run() == [False] * 5  # enforcing_failure_percentage defaults to 0
    assert run(enforcing_failure_percentage=100) == [True, False, False, False, False]
    assert run(enforcing_failure_percentage=100, failure_percentage_threshold=95) == [False] * 5
    assert (
        run(enforcing_failure_percentage=100, failure_percentage_request_volume=51) == [False] * 5
    )


def test_interval_counters_reset_each_sweep() -> None:
    d, hosts, _ = setup(2)
    send(hosts[0], OK, 3)
    d.sweep()
    assert hosts[0].stats.external_total == 0


def test_sweeper_rebuilds_on_change_and_sweeps_when_due() -> None:
    clock = Clock()
    config = OutlierDetection(interval=10.0, max_ejection_percent=100)
    hosts = [EndpointState("c", Endpoint("127.0.0.1", 9000 + i)) for i in range(2)]
    d = OutlierDetector("c", config, clock=clock)
    d.configure(config, hosts)
    sweeper = OutlierSweeper(clock=clock)
    rebuilds: list[int] = []
    sweeper._closed = True  # drive it by hand: no thread
    sweeper.register("c", d, lambda: rebuilds.append(1))
    send(hosts[0], E500, 5)
    assert hosts[0].ejected
    sweeper.run_once()
    assert rebuilds == [1]  # the ejection asked for a rebuild
    clock.now += 30
    sweeper.run_once()  # sweep due: un-ejects: another rebuild
    assert not hosts[0].ejected and rebuilds == [1, 1]
    sweeper.unregister("c")
    sweeper.close()
