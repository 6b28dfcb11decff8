"""Per-endpoint state that outlives config pushes, keyed by (cluster, address).

``EndpointState`` is what a picker returns and what the attempt loop reports to:
``started()`` before the attempt, ``finished(outcome)`` after it. ``finished`` feeds the
active-request count (LEAST_REQUEST), the peak-EWMA latency (PEAK_EWMA), the cluster's
outlier detector and the endpoint's pybreaker breaker when those are configured.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from xds_client.resources import Endpoint

from .._outcome import Outcome

__all__ = ["EndpointRegistry", "EndpointState", "HostStats", "OutcomeSink", "ProbeGate"]


class OutcomeSink(Protocol):
    """Where an endpoint reports outcomes (the cluster's outlier detector)."""

    def record(self, state: EndpointState, outcome: Outcome) -> None: ...


class ProbeGate(Protocol):
    """A per-endpoint breaker as the picker sees it (see resilience.endpoint_breaker)."""

    def allows(self) -> bool: ...

    def try_acquire(self) -> bool: ...

    def record(self, outcome: Outcome) -> None: ...


@dataclass(eq=False, slots=True)
class HostStats:
    """Outlier-detection counters of one endpoint (guarded by its EndpointState's lock)."""

    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    consecutive_local: int = 0
    external_total: int = 0  # this interval
    external_failed: int = 0
    local_total: int = 0
    local_failed: int = 0
    times_ejected: int = 0
    ejected_at: float = 0.0
    eject_for: float = 0.0  # seconds

    def reset_consecutive(self) -> None:
        self.consecutive_5xx = self.consecutive_gateway = self.consecutive_local = 0

    def reset_interval(self) -> None:
        self.external_total = self.external_failed = self.local_total = self.local_failed = 0


@dataclass(eq=False, slots=True)
class EndpointState:
    """One upstream endpoint of one cluster, with counters the balancers read."""

    cluster: str
    endpoint: Endpoint
    active_requests: int = 0
    total_requests: int = 0
    failures: int = 0
    ewma: float = 0.0  # peak-EWMA latency, seconds (0: nothing seen yet)
    ewma_stamp: float = 0.0
    decay_time: float = 10.0  # seconds, for the peak EWMA
    ejected: bool = False  # set and cleared by the cluster's outlier detector
    #: When it joined an existing cluster (monotonic seconds), for slow start; None for
    #: the cluster's first endpoint set and for endpoints that joined unhealthy.
    slow_start_at: float | None = None
    stats: HostStats = field(default_factory=HostStats)
    outlier: OutcomeSink | None = None
    breaker: ProbeGate | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: ``host:port``; fixed for the state's life (the registry keys states by it).
    address: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.address:
            self.address = self.endpoint.address

    @property
    def blocked(self) -> bool:
        """Ejected by outlier detection, or its breaker is open (no probe due)."""
        return self.ejected or (self.breaker is not None and not self.breaker.allows())

    def try_acquire(self) -> bool:
        """True if an attempt may go here now; claims the breaker's half-open probe."""
        if self.ejected:
            return False
        return self.breaker is None or self.breaker.try_acquire()

    def started(self) -> None:
        with self.lock:
            self.active_requests += 1
            self.total_requests += 1

    def not_sent(self) -> None:
        """The attempt counted by :meth:`started` never left (the connection pool refused
        it): it is no request to this endpoint, as Envoy's ``rq_total`` counts only
        streams attached to a connection. :meth:`finished` still follows."""
        with self.lock:
            self.total_requests -= 1

    def finished(self, outcome: Outcome) -> None:
        """Record the attempt's outcome (feeds outlier detection and LB feedback)."""
        with self.lock:
            self.active_requests -= 1
            if outcome.upstream_failure:
                self.failures += 1
            if outcome.reached_upstream:
                self._observe_latency(outcome.latency, time.monotonic())
        if self.outlier is not None:
            self.outlier.record(self, outcome)
        if self.breaker is not None:
            self.breaker.record(outcome)

    def _observe_latency(self, rtt: float, now: float) -> None:
        # Peak EWMA (Finagle): jump up to a slower sample at once, decay towards faster
        # ones with a weight that depends on the time since the last sample.
        if rtt >= self.ewma:
            self.ewma = rtt
        else:
            w = math.exp(-(now - self.ewma_stamp) / self.decay_time)
            self.ewma = self.ewma * w + rtt * (1.0 - w)
        self.ewma_stamp = now


class EndpointRegistry:
    """Hands out the same EndpointState for the same (cluster, address) across Snapshots."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], EndpointState] = {}

    def get(self, cluster: str, endpoint: Endpoint, joined: float | None = None) -> EndpointState:
        """The state of ``endpoint``; a new one records ``joined`` (the time it joined an
        existing cluster) as its slow-start start when it joins healthy."""
        key = (cluster, endpoint.address)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = EndpointState(cluster, endpoint)
            if endpoint.usable:
                state.slow_start_at = joined
        else:
            state.endpoint = endpoint  # weight / health may change; counters carry over
        return state

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Forget endpoints no Snapshot refers to any more."""
        for key in [k for k in self._states if k not in keys]:
            del self._states[key]
