"""The attempt loop (retries, timeouts, back-off) as a sans-I/O decision object, driven
here by hand with a fake clock and a fake cluster layer."""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

import pytest

from meshlib import Call, UpstreamTimeout
from meshlib._errors import RequestDropped
from meshlib._outcome import Outcome, OutcomeKind
from meshlib.cluster import EndpointState
from meshlib.resilience.retry import AttemptLoop
from meshlib.routing import RoutePlan
from tests.meshlib.xds_builders import table
from xds_client.resources import Endpoint

OK = Outcome(OutcomeKind.RESPONSE, 200)


def response(status: int, grpc: int | None = None) -> Outcome:
    return Outcome(OutcomeKind.RESPONSE, status, grpc)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Token:
    def __init__(self, owner: FakeCluster, kind: str) -> None:
        self.owner, self.kind = owner, kind
        owner.held[kind] += 1

    def release(self) -> None:
        self.owner.held[self.kind] -= 1


class FakeCluster:
    """The cluster layer's interface (check_drop, pick, admit_request, admit_retry),
    recorded."""

    def __init__(self, n: int = 3, retries_allowed: int = 100, drop: bool = False) -> None:
        self.endpoints = [EndpointState("c", Endpoint("127.0.0.1", 1000 + i)) for i in range(n)]
        self.excluded: list[list[EndpointState]] = []
        self.reselections: list[int] = []
        self.held = {"request": 0, "retry": 0}
        self.retries_allowed = retries_allowed
        self.drops: tuple[str, ...] = ("lb",) if drop else ()
        self.drop_checks = 0
        self._next = 0

    def check_drop(self, target: str = "") -> None:
        self.drop_checks += 1
        raise RequestDropped("c: dropped", target=target, cluster="c", category="lb")

    def pick(
        self,
        call: Call,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointState] = (),
        reselections: int = 1,
    ) -> EndpointState:
        self.excluded.append(list(exclude))
        self.reselections.append(reselections)
        for _ in range(len(self.endpoints)):
            ep = self.endpoints[self._next % len(self.endpoints)]
            self._next += 1
            if ep not in exclude:
                return ep
        return self.endpoints[0]

    def admit_request(self, priority: str = "DEFAULT", *, target: str = "") -> Token:
        return Token(self, "request")

    def admit_retry(self, priority: str = "DEFAULT") -> Token | None:
        if self.retries_allowed <= 0:
            return None
        self.retries_allowed -= 1
        return Token(self, "retry")


def plan(retry_policy: dict[str, Any] | None = None, timeout: str | None = None) -> RoutePlan:
    action: dict[str, Any] = {"cluster": "c"}
    if retry_policy is not None:
        action["retry_policy"] = retry_policy
    if timeout is not None:
        action["timeout"] = timeout
    p = table({"match": {"prefix": "/"}, "route": action}).route(Call("h:80", "GET", "/"))
    assert p is not None
    return p


def run(
    loop: AttemptLoop,
    outcomes: list[Outcome],
    headers: dict[str, str] | None = None,
    clock: Clock | None = None,
) -> tuple[int, list[float]]:
    """Drive ``loop`` like an adapter; returns the number of attempts and the back-offs."""
    delays: list[float] = []
    for n, outcome in enumerate(outcomes, 1):
        attempt = loop.next_attempt()
        delay = loop.record(attempt, outcome, headers)
        if delay is None:
            return n, delays
        delays.append(delay)
        if clock is not None:
            clock.now += delay
    raise AssertionError("the loop wanted more attempts than the test scripted")


def attempts(
    policy: dict[str, Any], outcome: Outcome, headers: dict[str, str] | None = None
) -> int:
    policy = {"per_try_timeout": "1s", **policy}  # so a TIMEOUT outcome is a per-try one
    loop = AttemptLoop(plan(policy), Call("h:80", "GET", "/"), {"c": FakeCluster()})
    return run(loop, [outcome] * 10, headers)[0]


CONNECT = Outcome(OutcomeKind.CONNECT_FAILURE)
RESET = Outcome(OutcomeKind.RESET)
REFUSED = Outcome(OutcomeKind.RESET, refused=True)
TIMEOUT = Outcome(OutcomeKind.TIMEOUT)
LOCAL = Outcome(OutcomeKind.LOCAL)


@pytest.mark.parametrize(
    ("retry_on", "outcome", "retried"),
    [
        ("5xx", response(500), True),
        ("5xx", response(503), True),
        ("5xx", response(404), False),
        ("5xx", CONNECT, True),  # includes connect-failure and resets
        ("5xx", RESET, True),
        ("5xx", TIMEOUT, True),  # a per-try timeout counts as no response
        ("gateway-error", response(502), True),
        ("gateway-error", response(500), False),
        ("gateway-error", CONNECT, True),
        ("reset", RESET, True),
        ("reset", response(503), False),
        ("connect-failure", CONNECT, True),
        ("connect-failure", RESET, False),
        ("connect-failure", response(503), False),
        ("connect-failure", REFUSED, False),
        ("refused-stream", REFUSED, True),
        ("refused-stream", RESET, False),  # another reset is not a refused stream
        ("refused-stream", CONNECT, False),
        ("refused-stream", response(503), False),
        ("reset", REFUSED, True),  # reset, 5xx and gateway-error cover refused streams
        ("5xx", REFUSED, True),
        ("gateway-error", REFUSED, True),
        ("retriable-4xx", response(409), True),
        ("retriable-4xx", response(404), False),
        ("unavailable", response(200, 14), True),
        ("unavailable", response(200, 13), False),
        ("cancelled,deadline-exceeded,internal,resource-exhausted", response(200, 8), True),
        ("cancelled,deadline-exceeded,internal,resource-exhausted", response(200, 4), True),
        ("5xx", LOCAL, False),  # local failures (overflow, fault) are never retried
    ],
)
def test_retry_on(retry_on: str, outcome: Outcome, retried: bool) -> None:
    assert attempts({"retry_on": retry_on}, outcome) == (2 if retried else 1)


def test_retriable_status_codes_and_headers() -> None:
    codes = {
        "retry_on": "retriable-status-codes",
        "retriable_status_codes": [418],
        "num_retries": 2,
    }
    assert attempts(codes, response(418)) == 3
    assert attempts(codes, response(503)) == 1
    by_header = {
        "retry_on": "retriable-headers",
        "retriable_headers": [{"name": "x-upstream-retry", "exact_match": "yes"}],
    }
    assert attempts(by_header, response(200), {"x-upstream-retry": "yes"}) == 2
    assert attempts(by_header, response(200), {"x-upstream-retry": "no"}) == 1


def test_num_retries_default_is_one_and_no_policy_means_one_attempt() -> None:
    assert attempts({"retry_on": "5xx"}, response(503)) == 2
    assert attempts({"retry_on": "5xx", "num_retries": 4}, response(503)) == 5
    loop = AttemptLoop(plan(None), Call("h:80", "GET", "/"), {"c": FakeCluster()})
    assert run(loop, [response(503)])[0] == 1


def test_success_ends_the_loop_and_admissions_are_released() -> None:
    cluster = FakeCluster()
    loop = AttemptLoop(
        plan({"retry_on": "5xx", "num_retries": 3}), Call("h:80", "GET", "/"), {"c": cluster}
    )
    assert run(loop, [response(503), response(503), OK])[0] == 3
    loop.close()
    assert cluster.held == {"request": 0, "retry": 0}


def test_backoff_is_fully_jittered_exponential_with_envoy_defaults() -> None:
    random.seed(1)
    samples: dict[int, list[float]] = {1: [], 2: [], 3: [], 6: []}
    for _ in range(300):
        loop = AttemptLoop(
            plan({"retry_on": "5xx", "num_retries": 6}),
            Call("h:80", "GET", "/"),
            {"c": FakeCluster()},
        )
        _, delays = run(loop, [response(503)] * 7)
        for n in samples:
            samples[n].append(delays[n - 1])
    # retry n waits uniformly in [0, min(25 ms * 2^(n-1), 250 ms)]
    for n, cap in ((1, 0.025), (2, 0.05), (3, 0.1), (6, 0.25)):
        assert min(samples[n]) >= 0 and max(samples[n]) <= cap + 1e-9
        assert max(samples[n]) > 0.8 * cap  # the whole window is used
        assert abs(sum(samples[n]) / len(samples[n]) - cap / 2) < 0.15 * cap  # uniform mean


def test_custom_backoff_intervals() -> None:
    random.seed(2)
    policy = {
        "retry_on": "5xx",
        "num_retries": 5,
        "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.15s"},
    }
    loop = AttemptLoop(plan(policy), Call("h:80", "GET", "/"), {"c": FakeCluster()})
    _, delays = run(loop, [response(503)] * 6)
    assert delays[0] <= 0.1 and all(d <= 0.15 for d in delays)


def test_rate_limited_backoff_uses_reset_header() -> None:
    policy = {
        "retry_on": "retriable-status-codes",
        "retriable_status_codes": [429],
        "rate_limited_retry_back_off": {
            "reset_headers": [{"name": "retry-after"}],
            "max_interval": "3s",
        },
    }
    loop = AttemptLoop(plan(policy), Call("h:80", "GET", "/"), {"c": FakeCluster()})
    assert run(loop, [response(429), OK], {"retry-after": "2"})[1] == [2.0]
    # a reset interval above max_interval is discarded: the jittered back-off applies
    loop = AttemptLoop(plan(policy), Call("h:80", "GET", "/"), {"c": FakeCluster()})
    (delay,) = run(loop, [response(429), OK], {"retry-after": "30"})[1]
    assert delay <= 0.025


def test_previous_hosts_predicate_excludes_tried_endpoints() -> None:
    cluster = FakeCluster(n=3)
    policy = {
        "retry_on": "5xx",
        "num_retries": 2,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
    }
    loop = AttemptLoop(plan(policy), Call("h:80", "GET", "/"), {"c": cluster})
    run(loop, [response(503)] * 3)
    assert [len(e) for e in cluster.excluded] == [0, 1, 2]
    assert len(set(loop.tried)) == 3
    plain = FakeCluster(n=3)
    run(
        AttemptLoop(plan({"retry_on": "5xx"}), Call("h:80", "GET", "/"), {"c": plain}),
        [response(503)] * 2,
    )
    assert plain.excluded == [[], []]


def test_retry_budget_refusal_stops_retrying() -> None:
    cluster = FakeCluster(retries_allowed=1)
    loop = AttemptLoop(
        plan({"retry_on": "5xx", "num_retries": 5}), Call("h:80", "GET", "/"), {"c": cluster}
    )
    assert run(loop, [response(503)] * 6)[0] == 2  # one retry admitted, the next refused


def test_non_replayable_and_retriable_request_headers() -> None:
    policy = {
        "retry_on": "5xx",
        "retriable_request_headers": [{"name": ":method", "exact_match": "GET"}],
    }
    assert (
        run(
            AttemptLoop(plan(policy), Call("h:80", "GET", "/"), {"c": FakeCluster()}),
            [response(503)] * 3,
        )[0]
        == 2
    )
    assert (
        run(
            AttemptLoop(plan(policy), Call("h:80", "POST", "/"), {"c": FakeCluster()}),
            [response(503)] * 3,
        )[0]
        == 1
    )
    loop = AttemptLoop(
        plan({"retry_on": "5xx"}), Call("h:80", "GET", "/"), {"c": FakeCluster()}, replayable=False
    )
    assert run(loop, [response(503)] * 3)[0] == 1


def test_route_timeout_covers_all_attempts() -> None:
    clock = Clock()
    policy = {"retry_on": "5xx", "num_retries": 10, "per_try_timeout": "0.4s"}
    loop = AttemptLoop(
        plan(policy, timeout="1s"), Call("h:80", "GET", "/"), {"c": FakeCluster()}, clock=clock
    )
    first = loop.next_attempt()
    assert (first.timeout, first.final_timeout) == (0.4, False)
    clock.now += 0.4  # per-try timeout fired: retried
    delay = loop.record(first, TIMEOUT)
    assert delay is not None
    clock.now += delay + 0.4
    second = loop.next_attempt()
    assert second.timeout == pytest.approx(1 - 0.8 - delay) and second.final_timeout
    assert second.timeout is not None
    clock.now += second.timeout  # the route timeout fired: no retry
    assert loop.record(second, TIMEOUT) is None
    with pytest.raises(UpstreamTimeout):
        loop.next_attempt()


def test_backoff_past_the_deadline_ends_the_loop() -> None:
    clock = Clock()
    policy = {
        "retry_on": "5xx",
        "rate_limited_retry_back_off": {"reset_headers": [{"name": "retry-after"}]},
    }
    loop = AttemptLoop(
        plan(policy, timeout="1s"), Call("h:80", "GET", "/"), {"c": FakeCluster()}, clock=clock
    )
    attempt = loop.next_attempt()
    clock.now += 0.5
    assert loop.record(attempt, response(503), {"retry-after": "2"}) is None  # 2 s > 0.5 s left
    loop = AttemptLoop(
        plan(policy, timeout="5s"), Call("h:80", "GET", "/"), {"c": FakeCluster()}, clock=clock
    )
    attempt = loop.next_attempt()
    assert loop.record(attempt, response(503), {"retry-after": "2"}) == 2.0


def test_per_try_timeout_not_shorter_than_route_timeout_is_ignored() -> None:
    loop = AttemptLoop(
        plan({"retry_on": "5xx", "per_try_timeout": "3s"}, timeout="2s"),
        Call("h:80", "GET", "/"),
        {"c": FakeCluster()},
    )
    a = loop.next_attempt()
    assert a.final_timeout and a.timeout is not None and a.timeout <= 2


def test_unknown_cluster_is_no_healthy_upstream() -> None:
    from meshlib import NoHealthyUpstream

    loop = AttemptLoop(plan({"retry_on": "5xx"}), Call("h:80", "GET", "/"), {})
    with pytest.raises(NoHealthyUpstream):
        loop.next_attempt()


def test_hash_key_reaches_the_cluster_layer() -> None:
    seen: list[int | None] = []

    class HashCluster(FakeCluster):
        def pick(
            self,
            call: Call,
            *,
            hash_key: int | None = None,
            exclude: Collection[EndpointState] = (),
            reselections: int = 1,
        ) -> EndpointState:
            seen.append(hash_key)
            return super().pick(call, exclude=exclude)

    t = table(
        {
            "match": {"prefix": "/"},
            "route": {"cluster": "c", "hash_policy": [{"header": {"header_name": "x-user"}}]},
        }
    )
    call = Call("h:80", "GET", "/", {"x-user": "ann"})
    p = t.route(call)
    assert p is not None and p.hash_key is not None
    AttemptLoop(p, call, {"c": HashCluster()}).next_attempt()
    assert seen == [p.hash_key]


def test_host_selection_retry_max_attempts_reaches_the_cluster_layer() -> None:
    predicate = [{"name": "envoy.retry_host_predicates.previous_hosts"}]
    for configured, passed in ((None, 1), (5, 5)):
        policy: dict[str, Any] = {
            "retry_on": "5xx",
            "num_retries": 2,
            "retry_host_predicate": predicate,
        }
        if configured is not None:
            policy["host_selection_retry_max_attempts"] = configured
        cluster = FakeCluster(n=3)
        run(
            AttemptLoop(plan(policy), Call("h:80", "GET", "/"), {"c": cluster}), [response(503)] * 3
        )
        # the first try has nothing to avoid; each retry re-selects up to the bound
        assert cluster.excluded[0] == [] and cluster.reselections[1:] == [passed, passed]


def test_drop_overload_is_drawn_once_before_selection_and_never_retried() -> None:
    cluster = FakeCluster(drop=True)
    loop = AttemptLoop(
        plan({"retry_on": "5xx,reset,connect-failure", "num_retries": 3}),
        Call("h:80", "GET", "/"),
        {"c": cluster},
    )
    with pytest.raises(RequestDropped) as info:
        loop.next_attempt()
    assert info.value.reason == "drop_overload" and info.value.category == "lb"
    assert cluster.drop_checks == 1
    assert cluster.excluded == [] and cluster.held == {"request": 0, "retry": 0}
    # a retry is not drawn again: only the first try of a call is subject to drops
    kept = FakeCluster()
    loop = AttemptLoop(plan({"retry_on": "5xx"}), Call("h:80", "GET", "/"), {"c": kept})
    first = loop.next_attempt()
    assert loop.record(first, response(503)) is not None
    kept.drops = ("lb",)
    loop.next_attempt()
    assert kept.drop_checks == 0


def test_a_successful_first_try_leaves_nothing_held() -> None:
    cluster = FakeCluster()
    loop = AttemptLoop(
        plan({"retry_on": "5xx", "num_retries": 3, "per_try_timeout": "1s"}),
        Call("h:80", "GET", "/"),
        {"c": cluster},
    )
    attempt = loop.next_attempt()
    assert (attempt.number, attempt.timeout, attempt.final_timeout) == (1, 1.0, False)
    assert cluster.held == {"request": 1, "retry": 0}
    assert loop.record(attempt, OK) is None
    assert cluster.held == {"request": 0, "retry": 0} and loop.tried == []
    ep = attempt.endpoint
    assert (ep.active_requests, ep.total_requests) == (0, 1)


def test_a_caller_deadline_earlier_than_the_route_timeout_caps_the_call() -> None:
    clock = Clock()
    loop = AttemptLoop(
        plan(None, timeout="10s"),
        Call("h:80", "GET", "/"),
        {"c": FakeCluster()},
        clock=clock,
        deadline=clock.now + 2,
    )
    assert loop.at == 102.0
    attempt = loop.next_attempt()
    assert (attempt.timeout, attempt.final_timeout) == (2.0, True)
    later = AttemptLoop(
        plan(None, timeout="1s"),
        Call("h:80", "GET", "/"),
        {"c": FakeCluster()},
        clock=clock,
        deadline=clock.now + 5,  # later than the route timeout: ignored
    )
    assert later.next_attempt().timeout == 1.0


def test_cap_only_brings_the_deadline_forward() -> None:
    clock = Clock()
    loop = AttemptLoop(
        plan(None, timeout="0s"), Call("h:80", "GET", "/"), {"c": FakeCluster()}, clock=clock
    )
    assert loop.at is None  # timeout 0: no limit
    loop.cap(None)
    assert loop.at is None
    loop.cap(clock.now + 3)
    loop.cap(clock.now + 30)  # later: no effect
    assert loop.at == 103.0 and loop.deadline.at == 103.0
    attempt = loop.next_attempt()
    assert attempt.timeout == 3.0
    loop.record(attempt, OK)
    loop.cap(clock.now - 1)  # already past: no further attempt can start
    with pytest.raises(UpstreamTimeout):
        loop.next_attempt()


def test_outcomes_and_calls_compare_by_value() -> None:
    a = Outcome(OutcomeKind.RESET, latency=0.5, refused=True)
    assert a == Outcome(OutcomeKind.RESET, None, None, 0.5, True)
    assert hash(a) == hash(Outcome(OutcomeKind.RESET, latency=0.5, refused=True))
    assert a != Outcome(OutcomeKind.RESET, latency=0.5)
    assert "refused=True" in repr(a)
    call = Call("h:80", "GET", "/", {"x": "1"}, timeout=2.0)
    assert call == Call("h:80", "GET", "/", {"x": "1"}, "http", "", 2.0)
    assert call != Call("h:80", "GET", "/", {"x": "1"})
    assert (call.host, call.scheme, call.source_ip) == ("h", "http", "")
    assert Call("h:80", "GET", "/").headers.get("x") is None
