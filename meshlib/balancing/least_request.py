"""LEAST_REQUEST: power of ``choice_count`` choices over active requests.

With equal weights (Envoy's common case) it draws ``choice_count`` endpoints uniformly
and takes the one with the fewest active requests. With unequal weights Envoy scores an
endpoint ``weight / (active_requests + 1) ** active_request_bias``; meshlib draws the
candidates in proportion to weight and takes the best score, which keeps the per-pick
cost at ``choice_count`` draws (Envoy's EDF schedule is not reproduced). ``weights``
overrides the endpoint weights (slow start passes its ramped ones).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from .._endpoints import EndpointState

__all__ = ["LeastRequestPicker"]


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
        self._weights = tuple(weights)
        self._weighted = len(set(weights)) > 1
        self._cumulative = list(itertools.accumulate(weights))

    def _draw(self) -> int:
        if not self._weighted:
            return self._rng.randrange(len(self._endpoints))
        point = self._rng.random() * self._cumulative[-1]
        return min(bisect.bisect_right(self._cumulative, point), len(self._endpoints) - 1)

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if not self._endpoints:
            return None
        if len(self._endpoints) == 1:
            return self._endpoints[0]
        eps = self._endpoints
        if not self._weighted:
            best = eps[self._draw()]
            for _ in range(self._choices - 1):
                other = eps[self._draw()]
                if other.active_requests < best.active_requests:
                    best = other
            return best
        i = self._draw()
        best, best_score = eps[i], self._score(i)
        for _ in range(self._choices - 1):
            j = self._draw()
            score = self._score(j)
            if score > best_score:
                best, best_score = eps[j], score
        return best

    def _score(self, i: int) -> float:
        active = self._endpoints[i].active_requests
        score: float = self._weights[i] / float(active + 1) ** self._bias
        return score
