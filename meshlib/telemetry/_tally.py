"""Per-request facts, queued by the data path and folded into the stats registry on read.

Requests are many and reads of the registry (the admin server's ``/stats``, the
dashboard, ``meshlib status``) are few, so the data path does not aggregate: it appends
one flat tuple of plain values per event to a list (an atomic ``list.append``: no lock,
no label tuple, no histogram bucket, no record kept alive), and :meth:`Tally.fold` turns
them into series values, grouped by their labels, when the registry is read
(:meth:`StatsRegistry.flush`) or when ``BACKLOG`` calls wait.

- ``started``: an attempt's cluster, when it starts (``upstream_rq_active`` + 1);
- ``attempts``: ``(cluster, address, outcome kind, status, latency s)`` when it ends
  (``upstream_rq_active`` - 1, ``upstream_rq_total``, ``upstream_rq_time``);
- ``calls``: ``(cluster, authority, protocol, status, grpc_status, flags, elapsed s
  [, route])`` when a call ends (``istio_requests_total``,
  ``istio_request_duration_milliseconds``, ``meshlib_route_requests_total``).

A fold takes the ended attempts before the started ones, so every end it counts has its
start counted too (``upstream_rq_active`` never dips below zero).
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._registry import Histogram
    from ._telemetry import Telemetry

__all__ = ["BACKLOG", "Tally", "attempt_labels", "call_labels"]

#: Calls waiting to be folded that make the call ending last fold them (this bounds
#: memory when the registry is never read).
BACKLOG = 512

_CODES = {code: str(code) for code in range(100, 600)}
_GRPC = {code: str(code) for code in range(17)}
_Row = list[float]


def call_labels(status: int | None, grpc: int | None, flags: str | None) -> tuple[int, str, str]:
    """A call's Istio ``response_code``, ``grpc_response_status`` and ``response_flags``
    from what it ended with (``flags`` None: ended without an error)."""
    if flags is None:
        flags = "-"
        if status is None:
            status = 0 if grpc is None else 200
    return status or 0, "" if grpc is None else (_GRPC.get(grpc) or str(grpc)), flags


def attempt_labels(kind: str, status: int | None) -> tuple[str, str]:
    """An attempt's ``outcome`` and ``response_code`` labels (``kind``: the
    OutcomeKind's value)."""
    return kind, "0" if status is None else (_CODES.get(status) or str(status))


class Tally:
    """The facts one :class:`Telemetry` queued, and their fold into its registry."""

    __slots__ = ("__weakref__", "_t", "attempts", "calls", "started")

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry
        self.started: list[str] = []
        self.attempts: list[tuple[str, str, str, int | None, float]] = []
        self.calls: list[tuple[Any, ...]] = []
        telemetry.stats.on_read(self.fold)

    def fold(self) -> None:
        """Fold every queued fact into the registry's series (one lock round)."""
        if not (self.calls or self.attempts or self.started):
            return
        t = self._t
        with t.stats.lock:  # one fold at a time: each fact is taken once
            self._fold(t)

    def _fold(self, t: Telemetry) -> None:
        # Take a prefix of each list (a slice and a del, each atomic) while requests go
        # on appending: ended attempts first (see the module docstring).
        attempts = _take(self.attempts)
        started = _take(self.started)
        calls = _take(self.calls)
        by_attempt: defaultdict[tuple[Any, ...], list[float]] = defaultdict(list)
        for cluster, address, kind, status, latency in attempts:
            by_attempt[cluster, address, kind, status].append(latency)
        by_call: defaultdict[tuple[Any, ...], list[float]] = defaultdict(list)
        by_route: Counter[tuple[str, str, int | None, int | None, str | None]] = Counter()
        for row in calls:
            cluster, authority, protocol, status, grpc, flags, elapsed = row[:7]
            by_call[cluster, authority, protocol, status, grpc, flags].append(elapsed)
            by_route[row[7] if len(row) > 7 else "", cluster, status, grpc, flags] += 1
        reg = t.registry
        active, rq, requests = reg.active._values, reg.upstream_rq._values, reg.requests._values
        for cluster, n in Counter(started).items():
            key: tuple[str, ...] = (cluster,)
            active[key] = active.get(key, 0.0) + n
        for (cluster, address, kind, status), latencies in by_attempt.items():
            key = (cluster,)
            active[key] = active.get(key, 0.0) - len(latencies)
            key = (cluster, address, *attempt_labels(kind, status))
            rq[key] = rq.get(key, 0.0) + len(latencies)
            _observe(reg.upstream_time, (cluster, address), latencies)
        workload, namespace = t.workload, t.namespace
        for shape, durations in by_call.items():
            cluster, authority, protocol, status, grpc, flags = shape
            key = reg.istio_key(
                workload, namespace, cluster, authority, protocol,
                *call_labels(status, grpc, flags),
            )  # fmt: skip
            requests[key] = requests.get(key, 0.0) + len(durations)
            _observe(reg.duration, key, durations)
        routes = reg.routes._values
        for (route, cluster, status, grpc, flags), n in by_route.items():
            code, _, flag = call_labels(status, grpc, flags)
            key = (route, cluster, str(code), flag)
            routes[key] = routes.get(key, 0.0) + n


def _take(queue: list[Any]) -> list[Any]:
    n = len(queue)
    batch = queue[:n]
    del queue[:n]
    return batch


def _observe(hist: Histogram, key: tuple[str, ...], seconds: list[float]) -> None:
    """Add observations (in seconds) to a millisecond histogram's series (lock held)."""
    bounds = hist.bounds
    row: _Row | None = hist._series.get(key)
    if row is None:
        row = hist._series[key] = [0.0] * (len(bounds) + 3)
    ms = [s * 1000.0 for s in seconds]
    for i, n in Counter(map(functools.partial(bisect.bisect_left, bounds), ms)).items():
        row[i] += n
    row[-2] += sum(ms)
    row[-1] += len(ms)
