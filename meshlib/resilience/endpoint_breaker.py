"""The per-endpoint breaker: pybreaker's closed / open / half-open, as Linkerd recovers an
endpoint.

``fail_max`` consecutive upstream failures (5xx or connection-level; LOCAL outcomes are
ignored) open an endpoint's breaker: pickers skip it. After ``reset_timeout`` seconds one
request — a single probe per process — may go to it (half-open); success closes the
breaker, failure opens it for another ``reset_timeout``. Opt-in:

    breakers = EndpointBreakers(fail_max=5, reset_timeout=30)
    # ConfigWatcher(client, publish, endpoint_breakers=breakers)

``redis=`` (a ``redis.Redis``) keeps breaker state in Redis (pybreaker's
CircuitRedisStorage) so replicas of a service share it: an endpoint one replica opened is
skipped by all of them. State is then read from Redis at most every ``refresh`` seconds on
the pick path; pybreaker's Redis storage keeps the opening time in whole seconds, so use a
``reset_timeout`` of a few seconds with it. pybreaker listeners feed
``EndpointBreakers.metrics`` (state changes, failures, successes) and
``on_state_change(cluster, address, old, new)``.

pybreaker is used through its public API only. It runs the operation it guards
(``CircuitBreaker.call``) and has no other way to be told an outcome; meshlib's attempt
runs elsewhere (in a blocking, asyncio or callback driver), so the guarded operation is
the delivery of the finished attempt's outcome (:func:`_deliver` raises
:class:`UpstreamFailure` for an upstream failure) and pybreaker's own state machine,
counters and listeners do the rest. When the breaker opened is read from the storage
meshlib gives it (``CircuitBreakerStorage.opened_at``: in memory, or in Redis).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker

from .._outcome import Outcome

__all__ = ["EndpointBreaker", "EndpointBreakers", "UpstreamFailure"]

StateHook = Callable[[str, str, str, str], None]


class UpstreamFailure(Exception):
    """An attempt's upstream failure (5xx, connect failure, reset, timeout), as pybreaker
    and its listeners see it; ``outcome`` is the attempt's."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"upstream failure: {outcome.kind.name}")
        self.outcome = outcome


def _deliver(outcome: Outcome) -> None:
    """The operation pybreaker guards: a finished attempt delivering its outcome."""
    if outcome.upstream_failure:
        raise UpstreamFailure(outcome)


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: EndpointBreakers, cluster: str, address: str) -> None:
        self._owner, self._cluster, self._address = owner, cluster, address

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else "none"
        self._owner._count(f"state.{new_state.name}")
        if self._owner.on_state_change is not None:
            self._owner.on_state_change(self._cluster, self._address, old, new_state.name)

    def failure(self, cb: Any, exc: BaseException) -> None:
        self._owner._count("failure")

    def success(self, cb: Any) -> None:
        self._owner._count("success")


class EndpointBreaker:
    """One endpoint's breaker as the picker and the attempt loop use it."""

    def __init__(
        self,
        cb: pybreaker.CircuitBreaker,
        refresh: float,
        clock: Callable[[], float],
        storage: pybreaker.CircuitBreakerStorage,
    ) -> None:
        self.cb = cb
        self.storage = storage  # the one ``cb`` keeps its state in
        self._refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._probe_until = 0.0  # a local probe is in flight until then
        self._state = pybreaker.STATE_CLOSED
        self._state_read = -1e18

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (possibly ``refresh`` seconds stale)."""
        now = self._clock()
        if now - self._state_read >= self._refresh:
            self._state = self.cb.current_state
            self._state_read = now
        return str(self._state)

    def _probe_due(self) -> bool:
        opened = self.storage.opened_at
        timeout = timedelta(seconds=self.cb.reset_timeout)
        return opened is None or datetime.now(UTC) >= opened + timeout

    def allows(self) -> bool:
        state = self.state
        if state == pybreaker.STATE_CLOSED:
            return True
        if self._clock() < self._probe_until:
            return False
        return state == pybreaker.STATE_HALF_OPEN or self._probe_due()

    def try_acquire(self) -> bool:
        """May an attempt go now? Claims the single half-open probe when one is due."""
        if self.state == pybreaker.STATE_CLOSED:
            return True
        with self._lock:
            if not self.allows():
                return False
            # One probe at a time; if its outcome never comes, another after reset_timeout.
            self._probe_until = self._clock() + max(self.cb.reset_timeout, 1.0)
            return True

    def record(self, outcome: Outcome) -> None:
        if not outcome.reached_upstream:
            return
        with self._lock:
            self._probe_until = 0.0
        # CircuitBreakerError: still open, the outcome of an attempt sent before it opened
        with contextlib.suppress(UpstreamFailure, pybreaker.CircuitBreakerError):
            self.cb.call(_deliver, outcome)
        self._state_read = -1e18  # re-read after our own change


class EndpointBreakers:
    """Factory and policy for per-endpoint breakers (opt-in; see the module docstring)."""

    def __init__(
        self,
        *,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        redis: Any | None = None,
        namespace: str = "meshlib",
        refresh: float = 0.5,
        on_state_change: StateHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fail_max < 1:
            raise ValueError("fail_max must be at least 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be positive")
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.redis = redis
        self.namespace = namespace
        self.refresh = refresh if redis is not None else 0.0
        self.on_state_change = on_state_change
        self.metrics: Counter[str] = Counter()
        self._metrics_lock = threading.Lock()
        self._clock = clock

    def _count(self, key: str) -> None:
        with self._metrics_lock:
            self.metrics[key] += 1

    def create(self, cluster: str, address: str) -> EndpointBreaker:
        """A breaker for one endpoint (shared through Redis when configured)."""
        storage: pybreaker.CircuitBreakerStorage
        if self.redis is not None:
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED,
                self.redis,
                namespace=f"{self.namespace}:{cluster}:{address}",
            )
        else:
            storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        cb = pybreaker.CircuitBreaker(
            fail_max=self.fail_max,
            reset_timeout=self.reset_timeout,
            listeners=[_Listener(self, cluster, address)],
            state_storage=storage,
            name=f"{cluster}/{address}",
            throw_new_error_on_trip=False,
        )
        return EndpointBreaker(cb, self.refresh, self._clock, storage)
