"""Outlier detection: Envoy's ejection of misbehaving endpoints, per cluster.

Consecutive-error detectors run as each outcome is recorded (``record``, request
thread): consecutive_5xx, consecutive_gateway_failure (502/503/504) and, with
``split_external_local_origin_errors``, consecutive_local_origin_failure (connect
failure, reset, timeout; without the split these count as 5xx and gateway failures).
Statistical detectors run on the interval sweep (``sweep``, the Mesh's timer thread):
success rate (mean - stdev_factor/1000 x stdev, over hosts with at least
request_volume requests, when at least minimum_hosts qualify) and failure percentage.

An ejection lasts base_ejection_time x times ejected (+ jitter), capped at
max_ejection_time; a sweep un-ejects expired hosts (resetting their counters) and
lowers the multiplier of hosts that stayed in. Ejections stop at max_ejection_percent
of the cluster (``always_eject_one_host`` allows one regardless). Each detector fires
with its ``enforcing_*`` probability. ``on_change`` is called when availability
changed, so the balancer can be rebuilt off the request path.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence

from xds_client.resources import OutlierDetection

from .._outcome import Outcome
from .._timer import TimerThread
from ..cluster._endpoints import EndpointState, HostStats

__all__ = ["OutlierDetector", "OutlierSweeper"]


class OutlierDetector:
    """Ejection state machine for one cluster; host counters live on EndpointState."""

    def __init__(
        self,
        cluster: str,
        config: OutlierDetection,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._hosts: tuple[EndpointState, ...] = ()
        self.next_sweep = clock() + config.interval
        self.ejections_total = 0

    def configure(self, config: OutlierDetection, hosts: Sequence[EndpointState]) -> None:
        """A new config or endpoint set (on the xDS thread)."""
        with self._lock:
            if config.interval != self.config.interval:
                self.next_sweep = self._clock() + config.interval
            self.config = config
            self._hosts = tuple(hosts)
            for h in self._hosts:
                h.outlier = self

    @property
    def ejected(self) -> list[EndpointState]:
        return [h for h in self._hosts if h.ejected]

    # -- request path -------------------------------------------------------------------
    def record(self, state: EndpointState, outcome: Outcome) -> None:
        if not outcome.reached_upstream:
            return
        c = self.config
        split = c.split_external_local_origin_errors
        fire: list[str] = []
        with state.lock:
            s = state.stats
            local = outcome.local_origin_failure
            if split and local:
                s.local_total += 1
                s.local_failed += 1
                s.consecutive_local += 1
                if s.consecutive_local == c.consecutive_local_origin_failure:
                    fire.append("local")
            else:
                if split:  # a response arrived: the connection worked
                    s.local_total += 1
                    s.consecutive_local = 0
                s.external_total += 1
                if outcome.http_5xx or local:  # without the split, local errors count here
                    s.external_failed += 1
                    s.consecutive_5xx += 1
                    if s.consecutive_5xx == c.consecutive_5xx:
                        fire.append("5xx")
                    if outcome.gateway_failure or local:
                        s.consecutive_gateway += 1
                        if s.consecutive_gateway == c.consecutive_gateway_failure:
                            fire.append("gateway")
                    else:
                        s.consecutive_gateway = 0
                else:
                    s.consecutive_5xx = s.consecutive_gateway = 0
        self._fire(state, fire)

    def _fire(self, state: EndpointState, detectors: list[str]) -> None:
        c = self.config
        enforcing = {
            "5xx": c.enforcing_consecutive_5xx,
            "gateway": c.enforcing_consecutive_gateway_failure,
            "local": c.enforcing_consecutive_local_origin_failure,
        }
        for d in detectors:
            if self._eject(state, enforcing[d]):
                self.on_change()
                return

    def _eject(self, state: EndpointState, enforcing: int) -> bool:
        if enforcing <= 0 or (enforcing < 100 and self._rng.randrange(100) >= enforcing):
            return False
        c = self.config
        with self._lock:
            if state.ejected or state not in self._hosts:
                return False
            ejected = sum(1 for h in self._hosts if h.ejected)
            within = 100 * (ejected + 1) <= c.max_ejection_percent * len(self._hosts)
            if not within and not (c.always_eject_one_host and ejected == 0):
                return False
            s = state.stats
            s.times_ejected += 1
            jitter = self._rng.uniform(0, c.max_ejection_time_jitter)
            s.eject_for = min(c.base_ejection_time * s.times_ejected, c.max_ejection_time)
            s.eject_for += jitter
            s.ejected_at = self._clock()
            state.ejected = True
            self.ejections_total += 1
        return True

    # -- interval sweep (timer thread) --------------------------------------------------
    def sweep(self, now: float | None = None) -> bool:
        """Un-eject expired hosts, run the statistical detectors, start a new interval.
        Returns True when availability changed."""
        now = self._clock() if now is None else now
        c = self.config
        changed = False
        self.next_sweep = now + c.interval
        for h in self._hosts:
            s = h.stats
            if h.ejected and now >= s.ejected_at + s.eject_for:
                with h.lock:
                    s.reset_consecutive()
                h.ejected = False
                changed = True
            elif not h.ejected and s.times_ejected > 0 and now >= s.ejected_at + s.eject_for:
                s.times_ejected -= 1
        with_local = c.split_external_local_origin_errors
        snapshot = [(h, self._interval(h.stats)) for h in self._hosts if not h.ejected]
        changed |= self._success_rate(snapshot, 0, c.enforcing_success_rate)
        changed |= self._failure_percentage(snapshot, 0, c.enforcing_failure_percentage)
        if with_local:
            changed |= self._success_rate(snapshot, 1, c.enforcing_local_origin_success_rate)
            changed |= self._failure_percentage(
                snapshot, 1, c.enforcing_failure_percentage_local_origin
            )
        for h in self._hosts:
            with h.lock:
                h.stats.reset_interval()
        return changed

    @staticmethod
    def _interval(s: HostStats) -> tuple[tuple[int, int], tuple[int, int]]:
        return (s.external_total, s.external_failed), (s.local_total, s.local_failed)

    def _success_rate(
        self,
        hosts: list[tuple[EndpointState, tuple[tuple[int, int], tuple[int, int]]]],
        which: int,
        enforcing: int,
    ) -> bool:
        c = self.config
        rates = [
            (h, 100.0 * (v[which][0] - v[which][1]) / v[which][0])
            for h, v in hosts
            if v[which][0] >= c.success_rate_request_volume
        ]
        if len(rates) < c.success_rate_minimum_hosts or len(rates) < 2:
            return False
        values = [r for _, r in rates]
        threshold = statistics.fmean(values) - c.success_rate_stdev_factor / 1000.0 * (
            statistics.pstdev(values)
        )
        changed = False
        for h, rate in rates:
            if rate < threshold and not math.isclose(rate, threshold):
                changed |= self._eject(h, enforcing)
        return changed

    def _failure_percentage(
        self,
        hosts: list[tuple[EndpointState, tuple[tuple[int, int], tuple[int, int]]]],
        which: int,
        enforcing: int,
    ) -> bool:
        c = self.config
        eligible = [
            (h, 100.0 * v[which][1] / v[which][0])
            for h, v in hosts
            if v[which][0] >= c.failure_percentage_request_volume
        ]
        if len(eligible) < c.failure_percentage_minimum_hosts:
            return False
        changed = False
        for h, pct in eligible:
            if pct >= c.failure_percentage_threshold:
                changed |= self._eject(h, enforcing)
        return changed


class OutlierSweeper(TimerThread):
    """The per-Mesh timer thread: runs each detector's interval sweep when due and
    rebuilds a cluster's balancer when its availability changed. Bounded work per wake:
    one pass over the endpoints of due or changed clusters."""

    _thread_name = "meshlib-outlier"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._entries: dict[str, tuple[OutlierDetector, Callable[[], None]]] = {}
        self._dirty: set[str] = set()

    def register(
        self, cluster: str, detector: OutlierDetector, rebuild: Callable[[], None]
    ) -> None:
        """Sweep ``detector``; call ``rebuild`` after availability changes."""
        detector.on_change = lambda: self.mark(cluster)
        with self._lock:
            self._entries[cluster] = (detector, rebuild)
        self._start()

    def unregister(self, cluster: str) -> None:
        with self._lock:
            self._entries.pop(cluster, None)
            self._dirty.discard(cluster)

    def mark(self, cluster: str) -> None:
        """Availability of ``cluster`` changed (called from the request path)."""
        with self._lock:
            self._dirty.add(cluster)
        self._wake.set()

    def run_once(self, now: float | None = None) -> float:
        """Sweep what is due and rebuild what changed; returns seconds until next due."""
        now = self._clock() if now is None else now
        with self._lock:
            entries = dict(self._entries)
            dirty, self._dirty = self._dirty, set()
        for cluster, (detector, _) in entries.items():
            if now >= detector.next_sweep and detector.sweep(now):
                dirty.add(cluster)
        for cluster in dirty:
            entry = entries.get(cluster)
            if entry is not None:
                entry[1]()
        due = [d.next_sweep for d, _ in entries.values()]
        return max(0.0, min(due) - self._clock()) if due else 3600.0
