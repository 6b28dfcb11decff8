"""Which connection of one endpoint a request uses, when a new one may be opened, and
when a request has to wait: the decisions both httpx drivers share (see
:mod:`._connections` for the drivers and :mod:`meshlib.resilience.breakers` for the
cluster's limits).

- an idle HTTP/1.1 connection (the most recently used first), or an HTTP/2 connection
  with room, is used at once;
- else a new connection is opened while the endpoint is under its own limit
  (``httpx.Limits.max_connections``) and the cluster under ``max_connections`` (a host
  with no connection always gets one);
- else the request waits pending (under ``max_pending_requests``, else it fails fast
  with ``CircuitBreakerOpen``) for a connection of this endpoint to come free, first
  come first served.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpcore
import httpx

from ..resilience.breakers import Admission, ClusterBreaker

__all__ = ["PoolCore", "Retired", "TaskWaiter", "ThreadWaiter"]

C = TypeVar("C", httpcore.HTTPConnection, httpcore.AsyncHTTPConnection)
W = TypeVar("W", bound="_Waiter")


class Retired(Exception):
    """The pool was retired (its endpoint left the Snapshot): look the pool up again."""


class _Waiter:
    """A pending request; ``wake()`` is called under the pool's lock."""

    __slots__ = ("admission", "conn", "woken")

    def __init__(self) -> None:
        self.admission: Admission | None = None
        self.conn: Any = None  # handed over by the pool; None: look again
        self.woken = False

    def wake(self) -> None:
        raise NotImplementedError


class ThreadWaiter(_Waiter):
    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class TaskWaiter(_Waiter):
    __slots__ = ("future",)

    def __init__(self) -> None:
        super().__init__()
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        future = self.future
        loop = future.get_loop()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            if not future.done():
                future.set_result(None)
        else:
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PoolCore(Generic[C]):
    """Which connection of one endpoint a request uses, or that it waits (thread-safe).

    ``make()`` builds an unconnected httpcore connection; ``multiplexed`` says every
    connection is HTTP/2 (others become so when a response says ``HTTP/2``).
    Connections to close are collected in ``trash()`` for the driver.
    """

    def __init__(
        self,
        make: Callable[[], C],
        *,
        breaker: ClusterBreaker | None = None,
        limits: httpx.Limits | None = None,
        multiplexed: bool = False,
        target: str = "",
    ) -> None:
        limits = limits or httpx.Limits()
        self._make: Callable[[], C] = make
        self._breaker = breaker
        self._max = limits.max_connections if limits.max_connections is not None else 1 << 62
        keep = limits.max_keepalive_connections
        self._max_idle = keep if keep is not None else 1 << 62
        self._multiplexed = multiplexed
        self._target = target
        self._lock = threading.Lock()
        self._users: dict[C, int] = {}  # every open connection: requests on it
        self._shared: list[C] = []  # HTTP/2 connections
        self._idle: list[C] = []  # free HTTP/1.1 connections, oldest first
        self._waiters: deque[_Waiter] = deque()
        self._trash: list[C] = []
        self.retired = False

    # -- what the drivers call ---------------------------------------------------------
    def checkout(self, new_waiter: Callable[[], W]) -> C | W:
        """A connection to send on (counted as in use), or a queued waiter."""
        with self._lock:
            if self.retired:
                raise Retired()
            for conn in self._shared:
                if conn.is_available():
                    self._users[conn] += 1
                    return conn
            idle = self._idle
            while idle:
                conn = idle.pop()
                if conn.has_expired() or conn.is_closed():
                    self._drop(conn)
                    continue
                self._users[conn] = 1
                return conn
            count = len(self._users)
            breaker = self._breaker
            if count < self._max and (breaker is None or breaker.open_connection(first=count == 0)):
                conn = self._make()
                self._users[conn] = 1
                if self._multiplexed:
                    self._shared.append(conn)
                return conn
            waiter = new_waiter()
            if breaker is not None:
                waiter.admission = breaker.admit_pending(target=self._target)
            self._waiters.append(waiter)
            return waiter

    def checkin(self, conn: C) -> None:
        """A request on ``conn`` is over (its response closed, or it failed)."""
        with self._lock:
            n = self._users.get(conn)
            if n is None:
                return
            self._users[conn] = n = n - 1
            if conn.is_closed():
                self._drop(conn)
                self._wake(None)  # a waiter may open a connection in its place
            elif conn in self._shared:
                self._hand_shared(conn)
            elif n == 0:
                if self._waiters:
                    self._users[conn] = 1
                    self._wake(conn)
                elif len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                else:
                    self._drop(conn)

    def multiplexed(self, conn: C) -> None:
        """``conn`` turned out to be HTTP/2: share it, with the waiters too."""
        with self._lock:
            if conn in self._users and conn not in self._shared:
                self._shared.append(conn)
                self._hand_shared(conn)

    def cancel(self, waiter: _Waiter) -> Any:
        """The waiter gives up; returns the connection it was handed meanwhile, if any."""
        with self._lock:
            if not waiter.woken:
                self._waiters.remove(waiter)
                waiter.woken = True
                _release(waiter)
            return waiter.conn

    @property
    def has_trash(self) -> bool:
        return bool(self._trash)

    def trash(self) -> list[C]:
        """Connections dropped since the last look, for the driver to close."""
        if not self._trash:
            return []
        with self._lock:
            out, self._trash = self._trash, []
            return out

    def retire(self) -> bool:
        """Retire the pool if no request uses or waits on it; its connections go to
        ``trash()``. False: busy, look again later."""
        with self._lock:
            if self.retired:
                return True
            if self._waiters or any(self._users.values()):
                return False
            self.retired = True
            for conn in list(self._users):
                self._drop(conn)
            return True

    def close(self) -> None:
        """Drop every connection (to ``trash()``); waiters are woken to fail."""
        with self._lock:
            self.retired = True
            for conn in list(self._users):
                self._drop(conn)
            while self._waiters:
                self._wake(None)

    def idle(self) -> bool:
        """No request uses or waits on this pool."""
        return not self._waiters and not any(self._users.values())

    def __len__(self) -> int:
        """Open connections (connecting, busy or idle)."""
        return len(self._users)

    # -- under the lock ----------------------------------------------------------------
    def _drop(self, conn: C) -> None:
        del self._users[conn]
        if conn in self._shared:
            self._shared.remove(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        if self._breaker is not None:
            self._breaker.close_connection()
        self._trash.append(conn)

    def _wake(self, conn: C | None) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.conn = conn
            waiter.woken = True
            _release(waiter)
            waiter.wake()

    def _hand_shared(self, conn: C) -> None:
        while self._waiters and conn.is_available():
            self._users[conn] += 1
            self._wake(conn)


def _release(waiter: _Waiter) -> None:
    if waiter.admission is not None:
        waiter.admission.release()
        waiter.admission = None
