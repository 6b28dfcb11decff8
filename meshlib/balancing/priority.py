"""Envoy's priority-load rule: the share of traffic each priority level's healthy and
degraded hosts get, and which levels panic. One rule for a cluster's ``Balancer`` and
for an aggregate cluster's linearized levels.

Per level (``LevelHealth``: hosts, healthy, degraded, overprovisioning factor in percent):

- health = min(100, factor x healthy / hosts), degraded = min(100, factor x degraded /
  hosts), both in integer percent; the normalized total availability is the sum of both
  over all levels, capped at 100.
- Healthy loads are assigned first, in priority order (health x 100 / total, capped by
  what is left), then what remains goes to degraded hosts in priority order the same
  way: degraded hosts take traffic only once the healthy ones cannot carry it all, as
  if they were a lower priority. The rounding remainder goes to the first level with
  healthy hosts (else the first with degraded hosts).
- Panic (``panic_threshold`` > 0): when the normalized total is 100 no level panics;
  otherwise a level panics when its healthy + degraded share of hosts is below the
  threshold. When every level panics (total panic) the loads follow host counts. A
  threshold of 0 disables panic (no available host: no load anywhere).

An endpoint is healthy when its EDS health is HEALTHY or UNKNOWN and outlier detection
has not ejected it, degraded when its health is DEGRADED and it is not ejected; DRAINING
endpoints are not hosts at all; UNHEALTHY and TIMEOUT ones are hosts that are neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..cluster._endpoints import EndpointState

__all__ = [
    "LevelHealth",
    "PriorityLoads",
    "is_available",
    "is_degraded",
    "is_healthy",
    "is_host",
    "priority_loads",
]


def is_host(e: EndpointState) -> bool:
    """Counted as a host of its priority (everything but DRAINING)."""
    return e.endpoint.health != "DRAINING"


def is_healthy(e: EndpointState) -> bool:
    """Takes healthy traffic: EDS health HEALTHY or UNKNOWN, and not ejected."""
    return e.endpoint.usable and not e.ejected


def is_degraded(e: EndpointState) -> bool:
    """Takes traffic only as spillover: EDS health DEGRADED, and not ejected."""
    return e.endpoint.health == "DEGRADED" and not e.ejected


def is_available(e: EndpointState) -> bool:
    """Healthy or degraded: may take traffic outside panic."""
    return is_healthy(e) or is_degraded(e)


@dataclass(frozen=True, slots=True)
class LevelHealth:
    """The host counts of one priority level and its overprovisioning factor (percent)."""

    hosts: int
    healthy: int
    degraded: int = 0
    factor: int = 140

    @classmethod
    def of(cls, endpoints: Iterable[EndpointState], factor: int = 140) -> LevelHealth:
        """Count ``endpoints`` (DRAINING ones are left out)."""
        hosts = healthy = degraded = 0
        for e in endpoints:
            if not is_host(e):
                continue
            hosts += 1
            if is_healthy(e):
                healthy += 1
            elif is_degraded(e):
                degraded += 1
        return cls(hosts, healthy, degraded, factor)

    @property
    def health(self) -> int:
        return min(100, self.factor * self.healthy // self.hosts) if self.hosts else 0

    @property
    def degraded_health(self) -> int:
        return min(100, self.factor * self.degraded // self.hosts) if self.hosts else 0


@dataclass(frozen=True, slots=True)
class PriorityLoads:
    """Percent of traffic per level to its healthy and to its degraded hosts (they sum
    to 100, or to 0 when nothing may be picked), and each level's panic flag (a
    panicking level balances its whole load over all its hosts)."""

    healthy: tuple[int, ...]
    degraded: tuple[int, ...]
    panic: tuple[bool, ...]


def _assign(values: Sequence[int], total: int, remaining: int) -> tuple[list[int], int]:
    loads = []
    for value in values:
        load = min(remaining, value * 100 // total)
        loads.append(load)
        remaining -= load
    return loads, remaining


def priority_loads(levels: Sequence[LevelHealth], panic_threshold: float) -> PriorityLoads:
    """Envoy's healthy and degraded priority loads and panic flags for ``levels``, in
    priority order (see the module docstring)."""
    n = len(levels)
    health = [lv.health for lv in levels]
    degraded = [lv.degraded_health for lv in levels]
    total = min(100, sum(health) + sum(degraded))
    if panic_threshold > 0 and total < 100:
        panic = [
            not lv.hosts or 100 * (lv.healthy + lv.degraded) < panic_threshold * lv.hosts
            for lv in levels
        ]
    else:
        panic = [False] * n
    if n and all(panic):
        # Total panic: loads by host count, all of it "healthy" (every host is used).
        hosts_total = sum(lv.hosts for lv in levels)
        loads = [100 * lv.hosts // hosts_total if hosts_total else 0 for lv in levels]
        first = next((i for i, lv in enumerate(levels) if lv.hosts), None)
        if first is not None:
            loads[first] += 100 - sum(loads)
        return PriorityLoads(tuple(loads), (0,) * n, tuple(panic))
    if total == 0:
        return PriorityLoads((0,) * n, (0,) * n, tuple(panic))
    healthy_loads, remaining = _assign(health, total, 100)
    degraded_loads, remaining = _assign(degraded, total, remaining)
    if remaining:
        first = next((i for i, h in enumerate(health) if h), None)
        if first is not None:
            healthy_loads[first] += remaining
        else:
            first = next(i for i, d in enumerate(degraded) if d)
            degraded_loads[first] += remaining
    return PriorityLoads(tuple(healthy_loads), tuple(degraded_loads), tuple(panic))
