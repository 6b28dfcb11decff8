"""ROUND_ROBIN: smooth weighted round robin (Envoy's default policy)."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState

__all__ = ["RoundRobinPicker", "smooth_schedule"]

MAX_SCHEDULE = 65_536
#: Fractional weights (slow start) are kept to 1/RESOLUTION of a unit of weight.
RESOLUTION = 100


def smooth_schedule(weights: Sequence[int]) -> list[int]:
    """Indices in smooth weighted round-robin order, one full cycle.

    Earliest-deadline-first, as Envoy schedules weighted hosts: endpoint ``i`` is due at
    (k + 1/2) / w_i for its k-th turn, ties to the lower index. Weights {5, 1, 1} give
    a a a b c a a rather than a a a a a b c. Weights are reduced by their gcd; a cycle
    longer than MAX_SCHEDULE is scaled down proportionally. Equal weights are plain
    order. Building costs O(cycle x log n).
    """
    if not weights:
        return []
    g = math.gcd(*weights)
    reduced = [w // g for w in weights]
    total = sum(reduced)
    if total == len(reduced):
        return list(range(total))
    if total > MAX_SCHEDULE:
        reduced = [max(1, w * MAX_SCHEDULE // total) for w in reduced]
        total = sum(reduced)
    heap = [(0.5 / w, i) for i, w in enumerate(reduced)]
    heapq.heapify(heap)
    order = []
    for _ in range(total):
        due, i = heapq.heappop(heap)
        order.append(i)
        heapq.heappush(heap, (due + 1.0 / reduced[i], i))
    return order


class RoundRobinPicker:
    """Lock-free: a precomputed schedule over endpoint weights and an atomic counter.

    ``weights`` overrides the endpoint weights (slow start passes fractional ones).
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig | None = None,
        rng: random.Random | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self._endpoints = list(endpoints)
        if weights is None:
            ints = [e.endpoint.weight for e in self._endpoints]
        else:
            ints = [max(1, round(w * RESOLUTION)) for w in weights]
        schedule = smooth_schedule(ints)
        self._schedule = [self._endpoints[i] for i in schedule]
        # Envoy starts each round-robin at a random point so clients do not march in step.
        start = (rng or random).randrange(len(self._schedule) or 1)
        self._counter = itertools.count(start)

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if not self._schedule:
            return None
        return self._schedule[next(self._counter) % len(self._schedule)]
