"""Cluster circuit breaking: Envoy's per-cluster, per-routing-priority thresholds.

One ``ClusterBreaker`` per cluster lives across config pushes (its counters carry over;
thresholds are replaced). The attempt loop uses it through ``ClusterView``:

- ``admit_request()`` once per upstream request (every attempt, retries included, as
  Envoy counts them): an ``Admission`` to ``release()`` when the attempt ends, or
  ``CircuitBreakerOpen`` (reason ``overflow``) when ``max_requests`` requests are
  already active. Envoy answers that caller with HTTP 503 (gRPC UNAVAILABLE).
- ``admit_retry()`` before each retry: an ``Admission`` or None when ``max_retries``
  retries are active, or, with a ``retry_budget``, when active retries would exceed
  max(min_retry_concurrency, budget_percent x active requests) (max_retries is then
  ignored, as in Envoy).

- ``open_connection()`` / ``close_connection()`` count the connections to all hosts of
  the cluster (connecting, active or idle) against ``max_connections``. Over the limit
  no connection is opened (``cx_overflow`` += 1, Envoy's ``upstream_cx_overflow``) and
  the request waits pending instead, unless the chosen host has no connection at all:
  Envoy then opens one anyway, so a pending request always has a connection to wait on.
- ``admit_pending()`` before a request waits for a connection (the httpx pools queue
  per endpoint): an ``Admission`` released when it gets one or gives up, or
  ``CircuitBreakerOpen`` (``limit="max_pending_requests"``) when ``max_pending_requests``
  requests already wait (``rq_pending_overflow`` += 1). HTTP/2 multiplexes on one
  connection, so requests wait there only while it connects.

Every threshold is kept per routing priority (DEFAULT, HIGH), as in Envoy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from xds_client.resources import CircuitThresholds

from .._errors import CircuitBreakerOpen

__all__ = ["Admission", "BreakerStats", "ClusterBreaker"]


_DEFAULTS: dict[str, CircuitThresholds] = {}  # Envoy's defaults, per priority (immutable)


class Admission:
    """A slot under a threshold; ``release()`` (idempotent) or use as a context manager."""

    __slots__ = ("_breaker", "_key")

    def __init__(self, breaker: ClusterBreaker | None, key: tuple[str, str]) -> None:
        self._breaker: ClusterBreaker | None = breaker
        self._key = key

    def release(self) -> None:
        breaker, self._breaker = self._breaker, None
        if breaker is not None:
            breaker._release(self._key)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(slots=True)
class BreakerStats:
    """Overflow counters: ``rq_overflow`` (max_requests), ``retry_overflow`` (Envoy's
    ``upstream_rq_retry_overflow``), ``cx_overflow`` (``upstream_cx_overflow``),
    ``rq_pending_overflow`` (max_pending_requests), ``rq_pending_total`` (requests that
    waited pending), and ``rq_drop_overload`` (requests
    dropped by the EDS drop_overloads, Envoy's ``upstream_rq_drop_overload``; kept here
    because the breaker outlives config pushes)."""

    rq_overflow: int = 0
    retry_overflow: int = 0
    cx_overflow: int = 0
    rq_pending_overflow: int = 0
    rq_drop_overload: int = 0
    #: Requests that waited for a connection (admitted pending: Envoy's
    #: ``upstream_rq_pending_total``). A request that opens its own connection does not
    #: wait in the queue, so it is not counted.
    rq_pending_total: int = 0
    #: Pending requests failed by a connection failure (Envoy's
    #: ``upstream_rq_pending_failure_eject``): a waiter of meshlib's pools is woken to
    #: look again when a connection fails, never failed with it, so this stays 0.
    rq_pending_failure_eject: int = 0


class ClusterBreaker:
    """Active requests, retries, connections and pending requests of one cluster, per
    routing priority."""

    def __init__(self, cluster: str, thresholds: Iterable[CircuitThresholds] = ()) -> None:
        self.cluster = cluster
        self.stats = BreakerStats()
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], int] = {}
        self._thresholds: dict[str, CircuitThresholds] = {}
        self.configure(thresholds)

    def configure(self, thresholds: Iterable[CircuitThresholds]) -> None:
        """Install a new config's thresholds (counters are kept)."""
        self._thresholds = {t.priority: t for t in thresholds}

    def thresholds(self, priority: str = "DEFAULT") -> CircuitThresholds:
        found = self._thresholds.get(priority)
        if found is None:
            found = _DEFAULTS.get(priority)
            if found is None:
                found = _DEFAULTS[priority] = CircuitThresholds(priority)
        return found

    def active(self, kind: str = "requests", priority: str = "DEFAULT") -> int:
        """Active ``requests``, ``retries``, ``connections`` or ``pending`` requests at
        ``priority``."""
        return self._active.get((kind, priority), 0)

    def admit_request(self, priority: str = "DEFAULT", *, target: str = "") -> Admission:
        """A slot under max_requests for one upstream request; raises CircuitBreakerOpen
        (``limit="max_requests"``)."""
        return self._admit("requests", "max_requests", "rq_overflow", priority, target)

    def admit_retry(self, priority: str = "DEFAULT") -> Admission | None:
        t = self.thresholds(priority)
        key = ("retries", priority)
        with self._lock:
            n = self._active.get(key, 0)
            if t.retry_budget is not None:
                budget = t.retry_budget
                requests = self._active.get(("requests", priority), 0)
                limit = max(budget.min_retry_concurrency, budget.budget_percent * requests / 100)
            else:
                limit = t.max_retries
            if n >= limit:
                self.stats.retry_overflow += 1
                return None
            self._active[key] = n + 1
        return Admission(self, key)

    def open_connection(self, priority: str = "DEFAULT", *, first: bool = False) -> bool:
        """Count a new connection. False when ``max_connections`` are open (then
        ``cx_overflow`` += 1 and nothing is counted), unless ``first``: the host has no
        connection, and Envoy opens one anyway (still counting the overflow)."""
        limit = self.thresholds(priority).max_connections
        key = ("connections", priority)
        with self._lock:
            n = self._active.get(key, 0)
            if n >= limit:
                self.stats.cx_overflow += 1
                if not first:
                    return False
            self._active[key] = n + 1
        return True

    def close_connection(self, priority: str = "DEFAULT") -> None:
        """A connection counted by ``open_connection`` closed."""
        self._release(("connections", priority))

    def admit_pending(self, priority: str = "DEFAULT", *, target: str = "") -> Admission:
        """A slot under max_pending_requests for a request about to wait for a
        connection; raises CircuitBreakerOpen (``limit="max_pending_requests"``)."""
        return self._admit(
            "pending", "max_pending_requests", "rq_pending_overflow", priority, target
        )

    def _admit(
        self, kind: str, limit_name: str, stat: str, priority: str, target: str
    ) -> Admission:
        limit: int = getattr(self.thresholds(priority), limit_name)
        key = (kind, priority)
        with self._lock:
            n = self._active.get(key, 0)
            overflow = n >= limit
            if overflow:
                setattr(self.stats, stat, getattr(self.stats, stat) + 1)
            else:
                self._active[key] = n + 1
                if kind == "pending":
                    self.stats.rq_pending_total += 1
        if overflow:
            raise CircuitBreakerOpen(
                f"{self.cluster}: circuit breaker {limit_name}={limit} reached ({priority})",
                target=target,
                cluster=self.cluster,
                limit=limit_name,
            )
        return Admission(self, key)

    def count_drop(self) -> None:
        """One request dropped by drop_overloads."""
        with self._lock:
            self.stats.rq_drop_overload += 1

    def _release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active[key] = self._active.get(key, 1) - 1
