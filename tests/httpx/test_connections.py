"""PoolCore's decisions with stand-in connections: reuse, keep-alive limit, expired and
closed connections, first-come-first-served hand-over, HTTP/2 sharing, retirement, and
httpcore errors mapped to httpx's."""

from __future__ import annotations

from typing import Any

import httpcore
import httpx
import pytest

from meshlib import CircuitBreakerOpen
from meshlib.httpx._connections import map_error
from meshlib.httpx._pool_core import PoolCore, Retired, ThreadWaiter
from meshlib.resilience.breakers import ClusterBreaker
from xds_client.resources import CircuitThresholds


class Conn:
    """What PoolCore asks of an httpcore connection."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.busy = False
        self.closed = False
        self.expired = False
        self.multiplexed = False

    def is_available(self) -> bool:
        return not self.closed and (self.multiplexed or not self.busy)

    def has_expired(self) -> bool:
        return self.expired

    def is_closed(self) -> bool:
        return self.closed

    def __repr__(self) -> str:
        return f"Conn({self.n})"


def core(
    max_connections: int | None = None,
    keep: int | None = None,
    breaker: ClusterBreaker | None = None,
    multiplexed: bool = False,
) -> tuple[Any, list[Conn]]:
    made: list[Conn] = []

    def make() -> Conn:
        made.append(Conn(len(made)))
        return made[-1]

    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=keep)
    pool: Any = PoolCore(make, breaker=breaker, limits=limits, multiplexed=multiplexed)
    return pool, made


def test_a_free_connection_is_reused_most_recent_first() -> None:
    pool, made = core()
    a, b = pool.checkout(ThreadWaiter), pool.checkout(ThreadWaiter)
    assert (a, b) == (made[0], made[1])
    pool.checkin(a)
    pool.checkin(b)
    assert pool.checkout(ThreadWaiter) is b
    assert len(made) == 2


def test_expired_and_closed_connections_are_dropped_to_the_trash() -> None:
    b = ClusterBreaker("c")
    pool, _made = core(breaker=b)
    first, second = pool.checkout(ThreadWaiter), pool.checkout(ThreadWaiter)
    pool.checkin(first)
    pool.checkin(second)
    second.expired = True
    assert pool.checkout(ThreadWaiter) is first  # second was looked at and dropped
    assert pool.trash() == [second] and pool.trash() == []
    first.closed = True
    pool.checkin(first)
    assert pool.trash() == [first]
    assert len(pool) == 0 and b.active("connections") == 0


def test_keepalive_limit_closes_the_extra_idle_connections() -> None:
    pool, _made = core(keep=1)
    conns = [pool.checkout(ThreadWaiter) for _ in range(3)]
    for c in conns:
        pool.checkin(c)
    assert pool.trash() == conns[1:]
    assert len(pool) == 1


def test_waiters_are_served_first_come_first_served_and_counted_pending() -> None:
    b = ClusterBreaker("c", [CircuitThresholds(max_connections=1, max_pending_requests=2)])
    pool, made = core(breaker=b)
    conn = pool.checkout(ThreadWaiter)
    w1, w2 = pool.checkout(ThreadWaiter), pool.checkout(ThreadWaiter)
    assert isinstance(w1, ThreadWaiter) and isinstance(w2, ThreadWaiter)
    assert b.active("pending") == 2 and b.stats.cx_overflow == 2
    with pytest.raises(CircuitBreakerOpen) as err:
        pool.checkout(ThreadWaiter)
    assert err.value.limit == "max_pending_requests"
    pool.checkin(conn)
    assert w1.event.is_set() and w1.conn is conn and not w2.event.is_set()
    assert b.active("pending") == 1
    assert pool.cancel(w2) is None  # gave up: no longer pending
    assert b.active("pending") == 0
    pool.checkin(conn)
    assert pool.checkout(ThreadWaiter) is conn and len(made) == 1


def test_a_closed_connection_lets_a_waiter_open_a_new_one() -> None:
    b = ClusterBreaker("c", [CircuitThresholds(max_connections=1)])
    pool, made = core(breaker=b)
    conn = pool.checkout(ThreadWaiter)
    waiter = pool.checkout(ThreadWaiter)
    conn.closed = True
    pool.checkin(conn)
    assert waiter.event.is_set() and waiter.conn is None  # look again
    assert pool.checkout(ThreadWaiter) is made[-1] and len(made) == 2
    assert b.active("connections") == 1


def test_endpoint_limit_queues_without_a_breaker() -> None:
    pool, _made = core(max_connections=1)
    conn = pool.checkout(ThreadWaiter)
    waiter = pool.checkout(ThreadWaiter)
    assert isinstance(waiter, ThreadWaiter)
    pool.checkin(conn)
    assert waiter.conn is conn


def test_http2_connections_are_shared_and_hand_over_to_waiters() -> None:
    pool, made = core(multiplexed=True)
    conns = [pool.checkout(ThreadWaiter) for _ in range(3)]
    assert conns == [made[0]] * 3  # h2 prior knowledge: shared while connecting
    pool2, _made2 = core(max_connections=1)  # ALPN: known as h2 once a response says so
    first = pool2.checkout(ThreadWaiter)
    first.busy = True
    waiter = pool2.checkout(ThreadWaiter)
    first.multiplexed = True
    pool2.multiplexed(first)
    assert waiter.conn is first
    assert pool2.checkout(ThreadWaiter) is first


def test_retire_only_when_idle_then_refuse() -> None:
    pool, _made = core()
    conn = pool.checkout(ThreadWaiter)
    assert not pool.retire()
    pool.checkin(conn)
    assert pool.retire() and pool.trash() == [conn]
    with pytest.raises(Retired):
        pool.checkout(ThreadWaiter)


def test_httpcore_errors_map_to_the_most_specific_httpx_error() -> None:
    request = httpx.Request("GET", "http://x/")
    for src, dst in [
        (httpcore.ConnectTimeout("t"), httpx.ConnectTimeout),
        (httpcore.ReadError("r"), httpx.ReadError),
        (httpcore.RemoteProtocolError("p"), httpx.RemoteProtocolError),
        (httpcore.PoolTimeout("p"), httpx.PoolTimeout),
    ]:
        mapped = map_error(src, request)
        assert type(mapped) is dst and mapped.request is request and str(mapped) == str(src)
    assert map_error(ValueError("x"), request) is None
