"""Per-endpoint state that outlives config pushes, keyed by (cluster, address)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from xds_client.resources import Endpoint

from ._outcome import Outcome

__all__ = ["EndpointRegistry", "EndpointState"]


@dataclass(eq=False, slots=True)
class EndpointState:
    """One upstream endpoint of one cluster, with counters the balancers read."""

    cluster: str
    endpoint: Endpoint
    active_requests: int = 0
    total_requests: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def address(self) -> str:
        return self.endpoint.address

    def started(self) -> None:
        with self._lock:
            self.active_requests += 1
            self.total_requests += 1

    def finished(self, outcome: Outcome) -> None:
        """Record the attempt's outcome (feeds outlier detection and LB feedback)."""
        with self._lock:
            self.active_requests -= 1
            if outcome.upstream_failure:
                self.failures += 1


class EndpointRegistry:
    """Hands out the same EndpointState for the same (cluster, address) across Snapshots."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], EndpointState] = {}

    def get(self, cluster: str, endpoint: Endpoint) -> EndpointState:
        key = (cluster, endpoint.address)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = EndpointState(cluster, endpoint)
        else:
            state.endpoint = endpoint  # weight / health may change; counters carry over
        return state

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Forget endpoints no Snapshot refers to any more."""
        for key in [k for k in self._states if k not in keys]:
            del self._states[key]
