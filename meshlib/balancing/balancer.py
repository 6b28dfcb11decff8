"""Priorities, localities and panic: the structure above a policy's picker.

A Balancer is built on the xDS thread from the cluster's localities (and again on the
outlier timer thread when an ejection changes who is available); ``pick`` then chooses
a priority level by its precomputed load, a locality by weight (when locality-weighted
balancing is on), and an endpoint with the policy's picker. Semantics are Envoy's:

- Priority loads and panic are Envoy's (``priority.priority_loads``): healthy hosts
  (EDS HEALTHY/UNKNOWN, not ejected) take load first across priorities, then degraded
  ones (EDS DEGRADED, not ejected) take what the healthy ones cannot carry; UNHEALTHY
  and TIMEOUT hosts take traffic only in panic; DRAINING endpoints never do. ``pick``
  chooses (priority, healthy or degraded) by load, then the policy's picker over that
  host set; a panicking priority balances over all its hosts. ``tier`` ("healthy" or
  "degraded") keeps only that host set's loads when it has any (an aggregate cluster
  chose it already).
- Locality weights apply with ``locality_weighted`` (``wrr_locality`` or
  ``common_lb_config.locality_weighted_lb_config``): effective weight = weight x
  min(1, overprovisioning_factor x the locality's share of hosts in the chosen set);
  localities without a weight get no traffic. Hash policies fold locality weights into
  the endpoint weights instead.
- Slow start (ROUND_ROBIN, LEAST_REQUEST): endpoint weights are scaled by their ramp
  factor at build time (``slow_start``); ``ramp_until`` says until when a rebuild changes
  them.
- Zone-aware routing over priority 0's healthy hosts when the workload's own cluster is
  known (``local``; ``zone_aware``); ``zone_aware.fail_traffic_on_panic`` makes a panicking priority
  pick nothing instead of balancing over all its hosts.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState
from ._picker import Picker
from .least_request import LeastRequestPicker
from .maglev import MaglevPicker
from .peak_ewma import PeakEwmaPicker
from .pick_first import PickFirstPicker
from .priority import (
    LevelHealth,
    is_available,
    is_degraded,
    is_healthy,
    is_host,
    priority_loads,
)
from .random_pick import RandomPicker
from .ring_hash import RingHashPicker
from .round_robin import RoundRobinPicker, smooth_schedule
from .slow_start import ramp_weights
from .zone_aware import (
    ZONE_AWARE_POLICIES,
    LocalCluster,
    Locality,
    ZonePicker,
    ZonePlan,
    zone_plan,
)

__all__ = ["HASH_POLICIES", "POLICIES", "Balancer", "LocalityGroup"]

POLICIES: dict[str, Callable[..., Picker]] = {
    "ROUND_ROBIN": RoundRobinPicker,
    "LEAST_REQUEST": LeastRequestPicker,
    "RANDOM": RandomPicker,
    "RING_HASH": RingHashPicker,
    "MAGLEV": MaglevPicker,
    "PEAK_EWMA": PeakEwmaPicker,
    "PICK_FIRST": PickFirstPicker,
}
HASH_POLICIES = frozenset({"RING_HASH", "MAGLEV"})
SLOW_START_POLICIES = frozenset({"ROUND_ROBIN", "LEAST_REQUEST"})


@dataclass(frozen=True, slots=True)
class LocalityGroup:
    """The endpoints of one locality at one priority; ``weight`` 0 means unset."""

    weight: int
    priority: int
    endpoints: tuple[EndpointState, ...]
    locality: Locality = ("", "", "")


class _NoPicker:
    """A level that picks nothing (fail_traffic_on_panic)."""

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        return None


class _LocalityPicker:
    """Smooth weighted round robin over localities, then the policy within one."""

    def __init__(self, weights: list[int], pickers: list[Picker]) -> None:
        self._schedule = [pickers[i] for i in smooth_schedule(weights)]
        self._counter = itertools.count(random.randrange(len(self._schedule) or 1))

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if not self._schedule:
            return None
        return self._schedule[next(self._counter) % len(self._schedule)].pick(
            call, hash_key, attempt
        )


class Balancer:
    """Priority -> locality -> endpoint for one cluster at one availability state."""

    def __init__(
        self,
        groups: Sequence[LocalityGroup],
        config: LbConfig | None = None,
        *,
        overprovisioning_factor: float = 1.4,
        panic_threshold: float = 50.0,
        rng: random.Random | None = None,
        local: LocalCluster | None = None,
        clock: Callable[[], float] = time.monotonic,
        tier: str | None = None,
    ) -> None:
        self.config = config or LbConfig()
        self._rng = rng or random.Random()
        self._local = local
        self._panic_threshold = panic_threshold
        cfg = self.config
        self._ramp = cfg.slow_start if cfg.policy in SLOW_START_POLICIES else None
        self._now = clock() if self._ramp is not None else 0.0
        #: When the last slow-starting endpoint leaves its window (None: none ramps).
        self.ramp_until: float | None = None
        #: Priority 0's zone-aware routing plan (None: no zone-aware routing).
        self.zone_plan: ZonePlan | None = None
        factor = round(overprovisioning_factor * 100)
        by_priority = [
            [g for g in groups if g.priority == p] for p in sorted({g.priority for g in groups})
        ]
        result = priority_loads(
            [LevelHealth.of((e for g in gs for e in g.endpoints), factor) for gs in by_priority],
            panic_threshold,
        )
        self.loads = list(result.healthy)
        self.degraded_loads = list(result.degraded)
        self.panic = list(result.panic)
        # Envoy's order: every level's healthy hosts, then every level's degraded hosts;
        # a panicking level balances both its loads over all its hosts.
        entries: list[tuple[int, str, Picker]] = []
        panicking: dict[int, Picker] = {}
        for source, tier_loads in (("healthy", result.healthy), ("degraded", result.degraded)):
            for i, gs in enumerate(by_priority):
                if tier_loads[i] <= 0:
                    continue
                if not result.panic[i]:
                    member = is_healthy if source == "healthy" else is_degraded
                    picker = self._level(gs, member, factor, zoned=source == "healthy")
                elif self.config.zone_aware.fail_traffic_on_panic:
                    picker = _NoPicker()
                else:
                    picker = panicking.get(i) or self._level(gs, is_host, factor, zoned=False)
                    panicking[i] = picker
                entries.append((tier_loads[i], source, picker))
        if tier is not None and any(t == tier for _, t, _ in entries):
            entries = [entry for entry in entries if entry[1] == tier]
        self._levels: list[Picker] = [picker for _, _, picker in entries]
        self._cumulative = list(itertools.accumulate(load for load, _, _ in entries))
        self._span = self._cumulative[-1] if entries else 0

    def _level(
        self,
        groups: list[LocalityGroup],
        member: Callable[[EndpointState], bool],
        factor: int,
        *,
        zoned: bool,
    ) -> Picker:
        """The policy's picker over ``groups``' endpoints that are ``member``s (healthy,
        degraded, or every host in panic), with locality weights or zone-aware routing."""
        cfg = self.config
        make = POLICIES[cfg.policy]
        chosen = [(g, [e for e in g.endpoints if member(e)]) for g in groups]
        if cfg.policy in HASH_POLICIES:
            flat: list[EndpointState] = []
            weights: list[float] = []
            lsum = sum(g.weight for g, eps in chosen if eps) if cfg.locality_weighted else 1
            for g, eps in chosen:
                wsum = sum(e.endpoint.weight for e in eps)
                share = (g.weight / lsum if lsum else 0.0) if cfg.locality_weighted else 1.0
                for e in eps:
                    if share > 0:
                        flat.append(e)
                        weights.append(e.endpoint.weight / wsum * share)
            norm = sum(weights)
            kwargs: dict[str, Any] = {"weights": [w / norm for w in weights]} if norm else {}
            return make(flat, cfg, self._rng, **kwargs)
        if not cfg.locality_weighted:
            everywhere = self._make([e for _, eps in chosen for e in eps])
            if zoned and groups and groups[0].priority == 0:
                return self._zoned(chosen, everywhere) or everywhere
            return everywhere
        lweights, pickers = [], []
        for g, eps in chosen:
            hosts = [e for e in g.endpoints if is_host(e)]
            if not eps or not g.weight or not hosts:
                continue
            share = 100 if member is is_host else min(100, factor * len(eps) // len(hosts))
            if g.weight * share > 0:
                lweights.append(g.weight * share)
                pickers.append(self._make(eps))
        return _LocalityPicker(lweights, pickers)

    def _make(self, endpoints: list[EndpointState]) -> Picker:
        """The policy's picker, over slow-start weights when some endpoint ramps."""
        make = POLICIES[self.config.policy]
        if self._ramp is not None:
            weights, until = ramp_weights(endpoints, self._ramp, self._now, is_available)
            if until is not None:
                self.ramp_until = max(until, self.ramp_until or until)
                return make(endpoints, self.config, self._rng, weights=weights)
        return make(endpoints, self.config, self._rng)

    def _zoned(
        self, chosen: list[tuple[LocalityGroup, list[EndpointState]]], everywhere: Picker
    ) -> Picker | None:
        """Zone-aware routing over priority 0's healthy endpoints, if it applies."""
        local, cfg = self._local, self.config
        if local is None or cfg.policy not in ZONE_AWARE_POLICIES:
            return None
        by_locality: dict[Locality, list[EndpointState]] = {}
        for g, eps in chosen:
            by_locality.setdefault(g.locality, []).extend(eps)
        upstream = [
            (loc, len(eps), sum(e.endpoint.weight for e in eps)) for loc, eps in by_locality.items()
        ]
        plan = zone_plan(upstream, local, cfg.zone_aware)
        if plan is None:
            return None
        if local.in_panic(self._panic_threshold):
            if not cfg.zone_aware.fail_traffic_on_panic:
                return None
            pickers: list[Picker] = [_NoPicker()] * len(plan.localities)
        else:
            pickers = [self._make(by_locality[loc]) for loc in plan.localities]
        self.zone_plan = plan
        return ZonePicker(plan, pickers, everywhere, cfg.zone_aware, self._rng)

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        """An endpoint, or None when no priority level has any."""
        levels = self._levels
        if len(levels) <= 1:
            return levels[0].pick(call, hash_key, attempt) if levels else None
        span = self._span
        point = hash_key % span if hash_key is not None else self._rng.randrange(span)
        index = bisect.bisect_right(self._cumulative, point)
        return levels[min(index, len(levels) - 1)].pick(call, hash_key, attempt)
