"""The retry decision is tenacity's: the route's ``Retrying`` is composed of meshlib's
retry/stop/wait objects and its ``iter()`` decides; the first try needs no tenacity state."""

from __future__ import annotations

import threading

import pytest
import tenacity
from tenacity import stop_after_attempt

from meshlib import Call
from meshlib.resilience.retry import AttemptLoop
from meshlib.resilience.retry_policy import (
    AttemptState,
    retry_if_retry_on,
    retry_unless_route_timeout,
    stop_before_deadline,
    stop_without_retry_admission,
    wait_reset_header,
)
from tests.meshlib.test_retry import OK, Clock, FakeCluster, plan, response, run

CALL = Call("h:80", "GET", "/")


def _flat(stop: object) -> list[object]:
    """``a | b | c`` nests stop_any(stop_any(a, b), c); evaluated in that order."""
    if isinstance(stop, tenacity.stop_any):
        return [leaf for s in stop.stops for leaf in _flat(s)]
    return [stop]


def test_the_routes_retrying_is_composed_of_meshlibs_objects() -> None:
    retry = plan({"retry_on": "5xx", "num_retries": 2}).retry
    assert retry is not None
    r = retry.retrying
    assert isinstance(r.retry, tenacity.retry_all)
    assert [type(x) for x in r.retry.retries] == [retry_unless_route_timeout, retry_if_retry_on]
    assert isinstance(r.wait, wait_reset_header)
    assert isinstance(r.wait.otherwise, tenacity.wait_random_exponential)
    assert (r.wait.otherwise.multiplier, r.wait.otherwise.max) == (0.025, 0.25)
    stops = list(_flat(r.stop))
    assert [type(x) for x in stops] == [
        stop_after_attempt,
        stop_before_deadline,
        stop_without_retry_admission,
    ]
    assert isinstance(stops[0], stop_after_attempt) and stops[0].max_attempt_number == 3


def test_a_first_try_that_succeeds_or_is_not_retriable_makes_no_tenacity_state() -> None:
    for outcome in (OK, response(404)):
        loop = AttemptLoop(plan({"retry_on": "5xx"}), CALL, {"c": FakeCluster()})
        assert loop.record(loop.next_attempt(), outcome) is None
        assert loop._state is None


def test_retries_are_decided_by_retrying_iter(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = AttemptLoop(plan({"retry_on": "5xx", "num_retries": 2}), CALL, {"c": FakeCluster()})
    retry = loop.plan.retry
    assert retry is not None
    decisions: list[object] = []
    real = type(retry.retrying).iter

    def spy(self: tenacity.Retrying, retry_state: tenacity.RetryCallState) -> object:
        assert isinstance(retry_state, AttemptState)
        decided = real(self, retry_state)
        decisions.append(decided)
        return decided

    monkeypatch.setattr(type(retry.retrying), "iter", spy)
    n, delays = run(loop, [response(503)] * 3)
    assert n == 3 and len(delays) == 2
    assert [type(d) for d in decisions] == [tenacity.DoSleep, tenacity.DoSleep, type(None)]
    assert [float(d) for d in decisions[:2]] == delays  # type: ignore[arg-type]


def test_the_deadline_and_the_retry_budget_stop_through_tenacity() -> None:
    clock = Clock()
    policy = {"retry_on": "5xx", "num_retries": 5, "retry_back_off": {"base_interval": "1s"}}
    loop = AttemptLoop(plan(policy, timeout="0.5s"), CALL, {"c": FakeCluster()}, clock=clock)
    # every back-off of [0, 1 s) that reaches past 0.5 s stops; none may outlive the deadline
    n, delays = run(loop, [response(503)] * 6, clock=clock)
    assert all(d < 0.5 for d in delays) and n == len(delays) + 1
    cluster = FakeCluster(retries_allowed=1)
    loop = AttemptLoop(plan({"retry_on": "5xx", "num_retries": 5}), CALL, {"c": cluster})
    assert run(loop, [response(503)] * 6)[0] == 2  # the budget let one retry go
    assert cluster.held == {"request": 0, "retry": 0}


def test_a_call_may_be_recorded_from_another_thread() -> None:
    """Callback drivers record attempts on whichever thread completes them."""
    loop = AttemptLoop(plan({"retry_on": "5xx", "num_retries": 3}), CALL, {"c": FakeCluster()})
    first = loop.record(loop.next_attempt(), response(503))
    assert first is not None
    out: list[float | None] = []
    attempt = loop.next_attempt()
    t = threading.Thread(target=lambda: out.append(loop.record(attempt, response(503))))
    t.start()
    t.join(10)
    assert out and out[0] is not None
    assert loop.record(loop.next_attempt(), OK) is None
