"""LEAST_REQUEST: Envoy's least-request balancer.

Equal weights (Envoy's common case): power of ``choice_count`` choices, drawn uniformly
with replacement; the endpoint with the fewest active requests wins (the first drawn on
a tie). Unequal weights: weighted round robin by earliest-deadline-first scheduling, as
Envoy does, where an endpoint's effective weight is
``weight / (active_requests + 1) ** active_request_bias`` (bias 0: plain weighted round
robin; bias 1, the default: divided by the load). The schedule keeps one deadline per
endpoint; a pick pops the earliest and puts that endpoint back ``1 / effective weight``
later, the weight taken from its active count at that moment, so each pick costs
O(log n) and only the picked endpoint is re-weighed (Envoy's ``pickAndAdd``). The
schedule starts a random number of picks in, so clients do not march in step.
``weights`` overrides the endpoint weights (slow start passes its ramped ones).
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState

__all__ = ["LeastRequestPicker"]

#: Floor for an effective weight, so a zero weight sorts last instead of dividing by 0.
_MIN_WEIGHT = 1e-12


class LeastRequestPicker:
    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig | None = None,
        rng: random.Random | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        cfg = config or LbConfig(policy="LEAST_REQUEST")
        self._endpoints = tuple(endpoints)
        self._choices = cfg.choice_count
        self._bias = cfg.active_request_bias
        self._rng = rng or random.Random()
        if weights is None:
            weights = [float(e.endpoint.weight) for e in self._endpoints]
        self._weights = tuple(float(w) for w in weights)
        self._weighted = len(set(self._weights)) > 1
        self._lock = threading.Lock()
        self._order = itertools.count()  # ties go to the earlier-scheduled entry
        self._schedule: list[tuple[float, int, int]] = []
        if self._weighted:
            self._schedule = [
                (1.0 / self._weight(i), next(self._order), i) for i in range(len(self._weights))
            ]
            heapq.heapify(self._schedule)
            for _ in range(self._rng.randrange(len(self._endpoints))):
                self._advance()

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        eps = self._endpoints
        if len(eps) < 2:
            return eps[0] if eps else None
        if self._weighted:
            with self._lock:
                return eps[self._advance()]
        rng = self._rng
        best = eps[rng.randrange(len(eps))]
        for _ in range(self._choices - 1):
            other = eps[rng.randrange(len(eps))]
            if other.active_requests < best.active_requests:
                best = other
        return best

    def _advance(self) -> int:
        """Pop the earliest deadline; reschedule that endpoint at its current weight."""
        due, _, i = self._schedule[0]
        heapq.heapreplace(self._schedule, (due + 1.0 / self._weight(i), next(self._order), i))
        return i

    def _weight(self, i: int) -> float:
        """Effective weight: ``weight / (active + 1) ** active_request_bias``."""
        weight = self._weights[i]
        if self._bias == 1.0:
            weight /= self._endpoints[i].active_requests + 1
        elif self._bias != 0.0:
            weight /= float(self._endpoints[i].active_requests + 1) ** self._bias
        return max(weight, _MIN_WEIGHT)
