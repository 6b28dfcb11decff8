"""ROUND_ROBIN: smooth weighted round robin over usable endpoints."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

from .._call import Call
from .._endpoints import EndpointState

__all__ = ["RoundRobinPicker", "smooth_schedule"]

MAX_SCHEDULE = 65_536


def smooth_schedule(weights: Sequence[int]) -> list[int]:
    """Indices in smooth weighted round-robin order (nginx's algorithm), one full cycle.

    Weights {5, 1, 1} give a a b a c a a rather than a a a a a b c. Weights are reduced by
    their gcd; a cycle longer than MAX_SCHEDULE is scaled down proportionally.
    """
    if not weights:
        return []
    g = math.gcd(*weights)
    reduced = [w // g for w in weights]
    total = sum(reduced)
    if total > MAX_SCHEDULE:
        reduced = [max(1, w * MAX_SCHEDULE // total) for w in reduced]
        total = sum(reduced)
    current = [0] * len(reduced)
    order = []
    for _ in range(total):
        for i, w in enumerate(reduced):
            current[i] += w
        best = max(range(len(current)), key=current.__getitem__)
        current[best] -= total
        order.append(best)
    return order


class RoundRobinPicker:
    """Lock-free: a precomputed schedule and an atomic counter."""

    def __init__(self, endpoints: Sequence[EndpointState]) -> None:
        self._endpoints = [e for e in endpoints if e.endpoint.usable]
        schedule = smooth_schedule([e.endpoint.weight for e in self._endpoints])
        self._schedule = [self._endpoints[i] for i in schedule]
        # Envoy starts each round-robin at a random point so clients do not march in step.
        self._counter = itertools.count(random.randrange(len(self._schedule) or 1))

    def pick(self, call: Call) -> EndpointState | None:
        if not self._schedule:
            return None
        return self._schedule[next(self._counter) % len(self._schedule)]
