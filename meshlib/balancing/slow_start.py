"""Slow start (Envoy's ``slow_start_config``): new endpoints ramp up to their weight.

An endpoint that joined an existing cluster (``EndpointState.slow_start_at``; endpoints of
the cluster's first endpoint set never ramp, as in Envoy, whose balancer starts with them)
is in slow start for ``window`` seconds. Its weight is scaled by
``max(min_weight_percent / 100, time_factor ** (1 / aggression))`` with
``time_factor = max(age, 1 ms) / window``; after the window it gets its full weight.
Only available endpoints ramp (in panic an unavailable one keeps its weight).

Pickers are immutable, so the weights are frozen when a Balancer is built;
``RampTimer`` rebuilds the balancers of clusters with ramping endpoints on one timer
thread, in ``STEPS`` steps per window, off the request path, until the last endpoint
leaves its window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from xds_client.resources.cluster import SlowStart

from .._timer import TimerThread
from ..cluster._endpoints import EndpointState

__all__ = ["STEPS", "RampTimer", "ramp_weights", "slow_start_factor"]

log = logging.getLogger("meshlib")

#: Rebuilds per slow-start window (the weight curve is followed in this many steps).
STEPS = 20
#: The shortest interval between two rebuilds of one cluster, seconds.
MIN_INTERVAL = 0.05


def slow_start_factor(config: SlowStart, age: float) -> float:
    """The weight multiplier of an endpoint ``age`` seconds into its window (1.0 after)."""
    if age >= config.window:
        return 1.0
    time_factor = max(age, 0.001) / config.window
    if config.aggression != 1.0:
        time_factor = time_factor ** (1.0 / config.aggression)
    return max(config.min_weight_percent / 100.0, time_factor)


def ramp_weights(
    endpoints: Sequence[EndpointState],
    config: SlowStart,
    now: float,
    available: Callable[[EndpointState], bool],
) -> tuple[list[float], float | None]:
    """Effective weights of ``endpoints`` at ``now``, and when the last ramping one leaves
    its window (None: none is ramping; the weights are then the endpoint weights)."""
    weights: list[float] = []
    until: float | None = None
    for e in endpoints:
        weight = float(e.endpoint.weight)
        since = e.slow_start_at
        if since is not None and now - since < config.window and available(e):
            weight *= slow_start_factor(config, now - since)
            end = since + config.window
            until = end if until is None else max(until, end)
        weights.append(weight)
    return weights, until


class RampTimer(TimerThread):
    """One daemon thread that rebuilds the balancers of clusters with ramping endpoints.

    ``track(cluster, rebuild, interval)``: ``rebuild()`` builds the cluster's balancer
    anew and returns when its last endpoint leaves slow start (None: done, stop).
    """

    _thread_name = "meshlib-slow-start"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        # cluster -> (rebuild, interval, next due)
        self._entries: dict[str, tuple[Callable[[], float | None], float, float]] = {}

    def track(self, cluster: str, rebuild: Callable[[], float | None], window: float) -> None:
        """Rebuild ``cluster`` every ``window / STEPS`` seconds while it ramps."""
        interval = max(MIN_INTERVAL, window / STEPS)
        with self._lock:
            self._entries[cluster] = (rebuild, interval, self._clock() + interval)
        self._start()

    def untrack(self, cluster: str) -> None:
        with self._lock:
            self._entries.pop(cluster, None)

    def tracking(self, cluster: str) -> bool:
        with self._lock:
            return cluster in self._entries

    def run_once(self, now: float | None = None) -> float:
        """Rebuild what is due; returns seconds until the next rebuild."""
        now = self._clock() if now is None else now
        with self._lock:
            due = [(c, e) for c, e in self._entries.items() if e[2] <= now]
        for cluster, (rebuild, interval, _) in due:
            try:
                until = rebuild()
            except Exception:  # a broken rebuild must not stop the other clusters' ramps
                log.exception("slow start: rebuilding %s failed", cluster)
                until = None
            with self._lock:
                if self._entries.get(cluster, (None,))[0] is not rebuild:
                    continue  # replaced or untracked meanwhile
                if until is None:
                    del self._entries[cluster]
                else:
                    self._entries[cluster] = (rebuild, interval, now + interval)
        with self._lock:
            nxt = min((e[2] for e in self._entries.values()), default=None)
        return 3600.0 if nxt is None else max(0.0, nxt - self._clock())
