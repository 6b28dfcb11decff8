"""Cluster circuit breaking: max_requests overflow, max_retries, retry budget, per priority."""

from __future__ import annotations

import threading

import pytest

from meshlib import CircuitBreakerOpen, MeshError
from meshlib._snapshot import ClusterView
from meshlib.resilience.breakers import ClusterBreaker
from xds_client.resources import CircuitThresholds, RetryBudget


def breaker(*thresholds: CircuitThresholds) -> ClusterBreaker:
    return ClusterBreaker("c1", thresholds)


def test_max_requests_overflow_fails_fast_with_a_distinct_error() -> None:
    b = breaker(CircuitThresholds(max_requests=2))
    first, second = b.admit_request(), b.admit_request()
    with pytest.raises(CircuitBreakerOpen) as err:
        b.admit_request(target="svc:80")
    e = err.value
    assert isinstance(e, MeshError)
    assert (e.reason, e.cluster, e.limit, e.target) == ("overflow", "c1", "max_requests", "svc:80")
    assert (e.http_status, e.grpc_status) == (503, 14)
    assert b.stats.rq_overflow == 1
    first.release()
    first.release()  # idempotent
    assert b.active("requests") == 1
    with b.admit_request():
        assert b.active("requests") == 2
    second.release()
    assert b.active("requests") == 0


def test_default_thresholds_are_envoys_1024() -> None:
    b = breaker()
    held = [b.admit_request() for _ in range(1024)]
    with pytest.raises(CircuitBreakerOpen):
        b.admit_request()
    for a in held:
        a.release()
    retries = [b.admit_retry() for _ in range(3)]
    assert all(retries) and b.admit_retry() is None
    assert b.stats.retry_overflow == 1


def test_priorities_have_separate_thresholds_and_counters() -> None:
    b = breaker(CircuitThresholds(max_requests=1), CircuitThresholds("HIGH", max_requests=2))
    b.admit_request()
    with pytest.raises(CircuitBreakerOpen):
        b.admit_request()
    b.admit_request("HIGH")
    b.admit_request("HIGH")
    with pytest.raises(CircuitBreakerOpen):
        b.admit_request("HIGH")


@pytest.mark.parametrize(
    ("budget", "active", "allowed"),
    [
        (RetryBudget(20.0, 3), 0, 3),  # min_retry_concurrency floor
        (RetryBudget(20.0, 3), 50, 10),  # 20% of 50 active requests
        (RetryBudget(50.0, 1), 10, 5),
        (RetryBudget(0.0, 2), 100, 2),
    ],
)
def test_retry_budget(budget: RetryBudget, active: int, allowed: int) -> None:
    b = breaker(CircuitThresholds(max_retries=0, retry_budget=budget))  # max_retries ignored
    for _ in range(active):
        b.admit_request()
    granted = [r for _ in range(allowed + 5) if (r := b.admit_retry()) is not None]
    assert len(granted) == allowed
    granted[0].release()
    assert b.admit_retry() is not None


def test_config_push_keeps_counters() -> None:
    b = breaker(CircuitThresholds(max_requests=5))
    held = [b.admit_request() for _ in range(3)]
    b.configure([CircuitThresholds(max_requests=3)])
    with pytest.raises(CircuitBreakerOpen):
        b.admit_request()
    held[0].release()
    b.admit_request()


def test_concurrent_admissions_never_exceed_the_limit() -> None:
    b = breaker(CircuitThresholds(max_requests=10))
    peak = []
    lock = threading.Lock()
    overflow = []

    def worker() -> None:
        for _ in range(200):
            try:
                a = b.admit_request()
            except CircuitBreakerOpen:
                overflow.append(1)
                continue
            with lock:
                peak.append(b.active("requests"))
            a.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(peak) <= 10 and b.active("requests") == 0
    assert len(peak) + len(overflow) == 1600


def test_cluster_view_interface() -> None:
    view = ClusterView("c1", None, (), None, "", breaker(CircuitThresholds(max_requests=1)))
    a = view.admit_request()
    with pytest.raises(CircuitBreakerOpen):
        view.admit_request()
    a.release()
    assert view.admit_retry() is not None
    bare = ClusterView("c2", None, (), None)  # no breaker: nothing is counted
    bare.admit_request().release()


def test_max_connections_counts_connections_and_the_overflow() -> None:
    b = breaker(CircuitThresholds(max_connections=2))
    assert b.open_connection() and b.open_connection(first=True)
    assert b.active("connections") == 2
    assert not b.open_connection()  # full: the request waits pending instead
    assert (b.stats.cx_overflow, b.active("connections")) == (1, 2)
    # a host with no connection gets one over the limit (the overflow still counts)
    assert b.open_connection(first=True)
    assert (b.stats.cx_overflow, b.active("connections")) == (2, 3)
    for _ in range(3):
        b.close_connection()
    assert b.active("connections") == 0 and b.open_connection()


def test_max_pending_requests_overflow_fails_fast_with_its_limit() -> None:
    b = breaker(CircuitThresholds(max_pending_requests=1))
    waiting = b.admit_pending()
    with pytest.raises(CircuitBreakerOpen) as err:
        b.admit_pending(target="svc:80")
    e = err.value
    assert (e.reason, e.cluster, e.limit, e.target) == (
        "overflow",
        "c1",
        "max_pending_requests",
        "svc:80",
    )
    assert (e.http_status, e.grpc_status) == (503, 14)
    assert (b.stats.rq_pending_overflow, b.stats.rq_overflow) == (1, 0)
    assert b.active("pending") == 1
    waiting.release()
    waiting.release()  # idempotent
    assert b.active("pending") == 0
    b.admit_pending().release()


def test_connection_and_pending_limits_are_per_priority() -> None:
    b = breaker(
        CircuitThresholds(max_connections=1, max_pending_requests=0),
        CircuitThresholds("HIGH", max_connections=2, max_pending_requests=1),
    )
    assert b.open_connection() and not b.open_connection()
    assert b.open_connection("HIGH") and b.open_connection("HIGH")
    with pytest.raises(CircuitBreakerOpen):
        b.admit_pending()
    b.admit_pending("HIGH")
    assert (b.active("connections"), b.active("connections", "HIGH")) == (1, 2)


def test_defaults_allow_1024_connections_and_pending_requests() -> None:
    b = breaker()
    assert all(b.open_connection() for _ in range(1024))
    assert not b.open_connection()
    held = [b.admit_pending() for _ in range(1024)]
    with pytest.raises(CircuitBreakerOpen):
        b.admit_pending()
    for a in held:
        a.release()
