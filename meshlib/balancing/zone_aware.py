"""Zone-aware routing (Envoy's zone-aware load balancing) at priority 0.

Envoy keeps as much traffic in the caller's own locality as the upstream can take there
without overloading it, judged against the caller's own service (the *local cluster*,
``cluster_manager.local_cluster_name``): with ``local[i]`` the share of the local
cluster's healthy hosts in locality ``i`` and ``upstream[i]`` the upstream's, both in
1/10,000ths,

- ``upstream[local] >= local[local]``: every request stays in the local locality (direct);
- otherwise ``upstream[local] / local[local]`` of them stay, and the rest spill over to
  the other localities in proportion to their residual capacity
  ``max(0, upstream[i] - local[i])`` (residual).

There is no zone-aware routing (requests use every healthy host of the priority) without
a local cluster, with fewer than two upstream localities, when the caller's locality has
no healthy upstream host, or with fewer than ``min_cluster_size`` healthy upstream hosts.
``routing_enabled`` percent of requests are considered. When the local cluster is in panic
(healthy share below the upstream's panic threshold) requests use every host, or fail with
``fail_traffic_on_panic``. Ring hash and Maglev, and locality-weighted balancing, are
not zone-aware (as in Envoy).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from xds_client.resources import LocalityEndpoints
from xds_client.resources.cluster import ZoneAware

from .._call import Call
from ..cluster._endpoints import EndpointState
from ._picker import Picker

__all__ = ["ZONE_AWARE_POLICIES", "LocalCluster", "Locality", "ZonePicker", "ZonePlan", "zone_plan"]

Locality = tuple[str, str, str]  # (region, zone, sub_zone)
ZONE_AWARE_POLICIES = frozenset({"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PEAK_EWMA"})


@dataclass(frozen=True, slots=True)
class LocalCluster:
    """The workload's own cluster at priority 0: its locality (the bootstrap node's) and
    its hosts' spread over localities (healthy host counts and weights)."""

    locality: Locality
    healthy: Mapping[Locality, int] = field(default_factory=dict)
    healthy_weight: Mapping[Locality, int] = field(default_factory=dict)
    hosts: int = 0  # all priority-0 hosts but DRAINING ones

    @classmethod
    def from_localities(
        cls, locality: Locality, localities: Iterable[LocalityEndpoints]
    ) -> LocalCluster:
        """From the local cluster's ClusterLoadAssignment localities."""
        healthy: dict[Locality, int] = {}
        weight: dict[Locality, int] = {}
        hosts = 0
        for loc in localities:
            if loc.priority != 0:
                continue
            key = (loc.region, loc.zone, loc.sub_zone)
            for e in loc.endpoints:
                if e.health == "DRAINING":
                    continue
                hosts += 1
                if e.usable:
                    healthy[key] = healthy.get(key, 0) + 1
                    weight[key] = weight.get(key, 0) + e.weight
        return cls(locality, healthy, weight, hosts)

    def in_panic(self, threshold: float) -> bool:
        """Envoy's panic test on the local host set (no overprovisioning factor)."""
        healthy = sum(self.healthy.values())
        percent = 100.0 * healthy / self.hosts if self.hosts else 0.0
        return percent < threshold


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """How priority-0 picks spread over localities (``localities[0]`` is the local one)."""

    localities: tuple[Locality, ...]
    direct: bool
    local_percent: int = 10_000  # of 10,000 picks, how many stay local (residual mode)
    residual: tuple[int, ...] = ()  # cumulative residual capacity per locality


def zone_plan(
    upstream: Sequence[tuple[Locality, int, int]], local: LocalCluster, config: ZoneAware
) -> ZonePlan | None:
    """The routing plan for the upstream's priority-0 localities given as (locality,
    healthy hosts, healthy weight); None: no zone-aware routing."""
    if len(upstream) < 2:
        return None
    mine = next((u for u in upstream if u[0] == local.locality), None)
    if mine is None or mine[1] == 0:
        return None
    if sum(u[1] for u in upstream) < config.min_cluster_size:
        return None
    ordered = [mine, *(u for u in upstream if u[0] != local.locality)]
    names = tuple(u[0] for u in ordered)
    if config.force_local_zone_min_size is not None and mine[1] >= config.force_local_zone_min_size:
        return ZonePlan(names, True)
    local_counts = local.healthy_weight if config.by_weight else local.healthy
    up_counts = [u[2] if config.by_weight else u[1] for u in ordered]
    total_local = sum(local_counts.values())
    total_up = sum(up_counts)
    local_pct = [
        10_000 * local_counts.get(u[0], 0) // total_local if total_local else 0 for u in ordered
    ]
    up_pct = [10_000 * n // total_up if total_up else 0 for n in up_counts]
    if up_pct[0] >= local_pct[0]:
        return ZonePlan(names, True)
    residual, acc = [0], 0
    for lp, upct in zip(local_pct[1:], up_pct[1:], strict=True):
        acc += max(0, upct - lp)
        residual.append(acc)
    return ZonePlan(names, False, up_pct[0] * 10_000 // local_pct[0], tuple(residual))


class ZonePicker:
    """Picks a locality by the plan, then an endpoint with that locality's picker;
    ``everywhere`` serves the requests not considered (``routing_enabled``)."""

    def __init__(
        self,
        plan: ZonePlan,
        pickers: Sequence[Picker],
        everywhere: Picker,
        config: ZoneAware,
        rng: random.Random,
    ) -> None:
        self.plan = plan
        self._pickers = tuple(pickers)
        self._everywhere = everywhere
        self._enabled = config.routing_enabled
        self._rng = rng
        self._direct = plan.direct

    def locality_index(self) -> int:
        """Draw the locality for one pick (an index into ``plan.localities``): one uniform
        draw decides local vs spill-over and, scaled, the spill-over locality."""
        plan = self.plan
        if plan.direct:
            return 0
        x = self._rng.random() * 10_000
        if x < plan.local_percent or not plan.residual or plan.residual[-1] <= 0:
            return 0
        point = (x - plan.local_percent) / (10_000 - plan.local_percent) * plan.residual[-1]
        return bisect.bisect_right(plan.residual, point)

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if self._enabled < 100.0 and self._rng.random() * 100.0 >= self._enabled:
            return self._everywhere.pick(call, hash_key, attempt)
        if self._direct:
            return self._pickers[0].pick(call, hash_key, attempt)
        return self._pickers[self.locality_index()].pick(call, hash_key, attempt)
