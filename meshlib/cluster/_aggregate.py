"""Aggregate clusters (Envoy's ``envoy.clusters.aggregate``): failover across clusters.

An aggregate cluster has no endpoints of its own; it lists child clusters in fallback
order. Balancing is tiered, as in Envoy: the aggregate linearizes its children's priority
levels into one list (primary P0, P1, then secondary P0, ...: levels without hosts are
left out), gives each level a healthy and a degraded load with the priority-load rule
clusters use (``meshlib.balancing.priority_loads``: healthy hosts first across levels,
then degraded ones; panic below the aggregate's ``healthy_panic_threshold``), chooses a
(level, healthy or degraded) by load, and lets the child's own policy pick a host of
that set at that level (with the child's own panic rule, locality weights, slow start
and outlier ejections).

Nested aggregates are flattened depth-first into their leaf clusters (gRFC A37; Envoy
gives a nested aggregate no hosts); a cluster listed twice counts once, at its first
place. :func:`cluster_tree` walks the tree: a loop, or a tree deeper than
``MAX_DEPTH``, makes the aggregate unusable, with that error.

:class:`AggregateView` has ``ClusterView``'s interface. Its breaker is the aggregate's
own (Envoy's router admits a request against the route's cluster); outlier detection
stays per child. A picked endpoint's ``cluster`` is the child cluster's name: its
connection settings are the child's.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from xds_client.resources import ClusterResource

from .._call import Call
from .._errors import NoHealthyUpstream
from .._snapshot import MAX_SELECTIONS, ClusterView, LiveBalancer
from ..balancing import (
    LevelHealth,
    LocalCluster,
    LocalityGroup,
    PriorityLoads,
    is_host,
    priority_loads,
)
from ._endpoints import EndpointState

__all__ = [
    "MAX_DEPTH",
    "AggregateBalancer",
    "AggregateView",
    "Child",
    "ClusterTree",
    "cluster_tree",
]

#: Levels an aggregate cluster tree may have (the aggregate itself is level 1; gRFC A37).
MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class ClusterTree:
    """The clusters an aggregate reaches: ``clusters`` (every one, for subscriptions),
    ``leaves`` (non-aggregate ones in fallback order) and ``error`` (loop, depth)."""

    clusters: tuple[str, ...]
    leaves: tuple[str, ...]
    error: str = ""


def cluster_tree(root: str, lookup: Callable[[str], ClusterResource | None]) -> ClusterTree:
    """Walk ``root``'s tree depth-first; ``lookup`` gives a cluster's resource (None while
    unknown or unusable: the walk does not go below it)."""
    clusters: dict[str, None] = {}
    leaves: dict[str, None] = {}
    errors: list[str] = []

    def walk(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            errors.append(f"aggregate cluster loop: {' -> '.join((*path, name))}")
            return
        if len(path) >= MAX_DEPTH:
            errors.append(f"aggregate cluster tree deeper than {MAX_DEPTH}: {name!r}")
            return
        clusters[name] = None
        resource = lookup(name)
        if resource is None:
            return
        if resource.discovery_type != "AGGREGATE":
            leaves[name] = None
            return
        for child in resource.aggregate_clusters:
            walk(child, (*path, name))
            if errors:
                return

    walk(root, ())
    return ClusterTree(tuple(clusters), tuple(leaves), errors[0] if errors else "")


@dataclass(frozen=True, slots=True)
class Child:
    """A leaf child cluster as the aggregate balances over it: its view, its locality
    groups (all priorities), its EDS overprovisioning factor and the local cluster."""

    view: ClusterView
    groups: tuple[LocalityGroup, ...]
    overprovisioning_factor: float = 1.4
    local: LocalCluster | None = None


@dataclass(frozen=True, slots=True)
class _Level:
    """One priority level of one child and its host counts."""

    child: Child
    priority: int
    groups: tuple[LocalityGroup, ...]
    hosts: tuple[EndpointState, ...]
    health: LevelHealth

    def view(self, tier: str) -> ClusterView:
        """A single-level view whose balancer picks from ``tier``'s hosts."""
        view, resource = self.child.view, self.child.view.resource
        assert resource is not None
        live = LiveBalancer(
            self.groups,
            resource.lb,
            self.child.overprovisioning_factor,
            resource.healthy_panic_threshold,
            local=self.child.local,
            tier=tier,
        )
        return ClusterView(view.name, resource, self.hosts, live, view.error)


@dataclass(frozen=True, slots=True)
class _Table:
    key: tuple[object, ...]  # the children's balancers it was built from
    levels: tuple[_Level, ...]  # every linearized level
    loads: PriorityLoads
    picks: tuple[ClusterView, ...]  # (level, tier) views with load > 0, in Envoy's order
    cumulative: tuple[int, ...]
    forced: bool = False  # rebuilt by ``level(fresh=True)``, not for a changed child


class AggregateBalancer:
    """Linearized priority loads over the children, rebuilt (by ``refresh``) whenever a
    child's balancer was rebuilt (ejections, slow-start steps)."""

    def __init__(
        self,
        children: Sequence[Child],
        panic_threshold: float = 50.0,
        rng: random.Random | None = None,
    ) -> None:
        self.children = tuple(children)
        self._panic = panic_threshold
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._lives = tuple(c.view.picker for c in self.children if c.view.picker is not None)
        self._table = self._build(self._key())

    def _key(self) -> tuple[object, ...]:
        return tuple(live.balancer for live in self._lives)

    def _stale(self) -> bool:
        for live, built in zip(self._lives, self._table.key, strict=True):
            if live.balancer is not built:
                return True
        return False

    def _build(self, key: tuple[object, ...], forced: bool = False) -> _Table:
        all_levels: list[_Level] = []
        for child in self.children:
            if child.view.picker is None or child.view.resource is None:
                continue
            factor = round(child.overprovisioning_factor * 100)
            for p in sorted({g.priority for g in child.groups}):
                groups = tuple(g for g in child.groups if g.priority == p)
                hosts = tuple(e for g in groups for e in g.endpoints if is_host(e))
                if hosts:
                    health = LevelHealth.of(hosts, factor)
                    all_levels.append(_Level(child, p, groups, hosts, health))
        loads = priority_loads([lv.health for lv in all_levels], self._panic)
        picks, cumulative, acc = [], [], 0
        for tier, tier_loads in (("healthy", loads.healthy), ("degraded", loads.degraded)):
            for level, load in zip(all_levels, tier_loads, strict=True):
                if load > 0:
                    acc += load
                    picks.append(level.view(tier))
                    cumulative.append(acc)
        return _Table(key, tuple(all_levels), loads, tuple(picks), tuple(cumulative), forced)

    def refresh(self) -> None:
        """Rebuild the table if a child's balancer changed since it was built."""
        if self._stale() and self._lock.acquire(blocking=False):
            try:
                if self._stale():
                    self._table = self._build(self._key())
            finally:
                self._lock.release()

    @property
    def loads(self) -> list[tuple[str, int, int, bool]]:
        """``(child, priority, load percent, panic)`` per linearized level, in order (the
        load to its healthy and degraded hosts together)."""
        self.refresh()
        t = self._table
        return [
            (lv.child.view.name, lv.priority, healthy + degraded, panic)
            for lv, healthy, degraded, panic in zip(
                t.levels, t.loads.healthy, t.loads.degraded, t.loads.panic, strict=True
            )
        ]

    @property
    def priority_loads(self) -> PriorityLoads:
        """The linearized levels' healthy and degraded loads and panic flags."""
        self.refresh()
        return self._table.loads

    def level(self, hash_key: int | None = None, *, fresh: bool = False) -> ClusterView | None:
        """The level view one request goes to (None: no level has load).

        ``fresh``: the level chosen before had no usable host, because an ejection
        happened and the child's balancer is not rebuilt yet (the sweeper does that on
        its thread). Rebuild from the endpoints' current state and choose again, once
        per change of the children (None when the table is already that fresh)."""
        if fresh:
            with self._lock:
                if self._table.forced:
                    return None
                self._table = self._build(self._key(), forced=True)
        else:
            self.refresh()
        table = self._table
        picks = table.picks
        if len(picks) <= 1:
            return picks[0] if picks else None
        span = table.cumulative[-1]
        point = hash_key % span if hash_key is not None else int(self._rng.random() * span)
        index = bisect.bisect_right(table.cumulative, point)
        return picks[min(index, len(picks) - 1)]


@dataclass(frozen=True, slots=True)
class AggregateView(ClusterView):
    """An aggregate cluster in the Snapshot: ``ClusterView``'s interface over its children
    (``endpoints`` is the union of theirs; ``picker`` is None)."""

    aggregate: AggregateBalancer | None = None

    def pick(
        self,
        call: Call,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointState] = (),
        reselections: int = MAX_SELECTIONS,
    ) -> EndpointState:
        """A level by linearized priority load, then an endpoint by that child's policy;
        raises NoHealthyUpstream (naming the aggregate)."""
        why = self.error
        for fresh in (False, True):
            level = self.aggregate.level(hash_key, fresh=fresh) if self.aggregate else None
            if level is None:
                break
            try:
                return level.pick(
                    call, hash_key=hash_key, exclude=exclude, reselections=reselections
                )
            except NoHealthyUpstream as exc:
                why = str(exc)
        raise self.no_healthy_upstream(call, why)
