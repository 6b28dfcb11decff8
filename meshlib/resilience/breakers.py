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

``max_connections`` and ``max_pending_requests`` are decoded and exposed through
``thresholds()`` for the connection pool to size itself; meshlib's pools do not queue.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from xds_client.resources import CircuitThresholds

from .._errors import CircuitBreakerOpen

__all__ = ["Admission", "BreakerStats", "ClusterBreaker"]


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
    """Envoy's ``upstream_rq_active_overflow`` / ``upstream_rq_retry_overflow`` analogues."""

    rq_overflow: int = 0
    retry_overflow: int = 0


class ClusterBreaker:
    """Active-request and active-retry counters of one cluster, per routing priority."""

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
        return self._thresholds.get(priority) or CircuitThresholds(priority)

    def active(self, kind: str = "requests", priority: str = "DEFAULT") -> int:
        """Active ``requests`` or ``retries`` at ``priority``."""
        return self._active.get((kind, priority), 0)

    def admit_request(self, priority: str = "DEFAULT", *, target: str = "") -> Admission:
        limit = self.thresholds(priority).max_requests
        key = ("requests", priority)
        with self._lock:
            n = self._active.get(key, 0)
            if n >= limit:
                self.stats.rq_overflow += 1
                overflow = True
            else:
                self._active[key] = n + 1
                overflow = False
        if overflow:
            raise CircuitBreakerOpen(
                f"{self.cluster}: circuit breaker max_requests={limit} reached ({priority})",
                target=target,
                cluster=self.cluster,
                limit="max_requests",
            )
        return Admission(self, key)

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

    def _release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active[key] = self._active.get(key, 1) - 1
