"""Aggregate clusters (Envoy's ``envoy.clusters.aggregate``): failover across clusters.

An aggregate cluster has no endpoints of its own; it lists child clusters in fallback
order. Balancing is tiered, as in Envoy: the aggregate linearizes its children's priority
levels into one list (primary P0, P1, then secondary P0, ...: levels without hosts are
left out), gives each level a load with the standard priority-load rule
(:func:`priority_loads`: health = min(100, overprovisioning_factor x available / hosts),
spill in order, panic below the aggregate's ``healthy_panic_threshold``), chooses a
level by load, and lets the child's own policy pick a host at that level (with the
child's own panic rule, locality weights, slow start and outlier ejections).

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

from ._call import Call
from ._endpoints import EndpointState
from ._errors import NoHealthyUpstream
from ._snapshot import MAX_SELECTIONS, ClusterView, LiveBalancer
from .balancing import LocalCluster, LocalityGroup
from .balancing.balancer import available

__all__ = [
    "MAX_DEPTH",
    "AggregateBalancer",
    "AggregateView",
    "Child",
    "ClusterTree",
    "cluster_tree",
    "priority_loads",
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


def priority_loads(
    levels: Sequence[tuple[int, int, int]], panic_threshold: float
) -> tuple[list[int], list[bool]]:
    """Envoy's priority loads (percent) and panic flags for ``levels`` of
    ``(hosts, available hosts, overprovisioning factor in percent)``, in order.

    Health = min(100, factor x available / hosts); loads follow health in order, scaled
    by the normalized total (capped at 100), the rounding remainder to the first healthy
    level. Below ``panic_threshold`` total health every level panics and loads follow
    host counts; otherwise a level panics when its available share is below the
    threshold. A threshold of 0 disables panic.
    """
    health = [min(100, f * a // h) if h else 0 for h, a, f in levels]
    total = min(100, sum(health))
    if panic_threshold > 0 and total < panic_threshold:
        hosts_total = sum(h for h, _, _ in levels)
        loads = [100 * h // hosts_total if hosts_total else 0 for h, _, _ in levels]
        first = next((i for i, (h, _, _) in enumerate(levels) if h), None)
        panic = [True] * len(levels)
    else:
        loads, remaining = [], 100
        for value in health:
            load = min(remaining, value * 100 // total) if total else 0
            loads.append(load)
            remaining -= load
        first = next((i for i, value in enumerate(health) if value), None)
        panic = [panic_threshold > 0 and 100 * a < panic_threshold * h for h, a, _ in levels]
    if first is not None:
        loads[first] += 100 - sum(loads)
    return loads, panic


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
    """One priority level of one child: a single-level view the child's policy picks on."""

    child: str
    priority: int
    hosts: int
    available: int
    factor: int  # percent
    view: ClusterView


@dataclass(frozen=True, slots=True)
class _Table:
    key: tuple[object, ...]  # the children's balancers it was built from
    levels: tuple[_Level, ...]  # every linearized level
    loads: tuple[int, ...]
    panic: tuple[bool, ...]
    picks: tuple[ClusterView, ...]  # the views of levels with load > 0
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
            view, resource = child.view, child.view.resource
            if view.picker is None or resource is None:
                continue
            factor = round(child.overprovisioning_factor * 100)
            for p in sorted({g.priority for g in child.groups}):
                groups = [g for g in child.groups if g.priority == p]
                hosts = [e for g in groups for e in g.endpoints if e.endpoint.health != "DRAINING"]
                if not hosts:
                    continue
                live = LiveBalancer(
                    groups,
                    resource.lb,
                    child.overprovisioning_factor,
                    resource.healthy_panic_threshold,
                    local=child.local,
                )
                level_view = ClusterView(view.name, resource, tuple(hosts), live, view.error)
                ready = sum(1 for e in hosts if available(e))
                all_levels.append(_Level(view.name, p, len(hosts), ready, factor, level_view))
        loads, panic = priority_loads(
            [(lv.hosts, lv.available, lv.factor) for lv in all_levels], self._panic
        )
        picks, cumulative, acc = [], [], 0
        for level, load in zip(all_levels, loads, strict=True):
            if load > 0:
                acc += load
                picks.append(level.view)
                cumulative.append(acc)
        return _Table(
            key,
            tuple(all_levels),
            tuple(loads),
            tuple(panic),
            tuple(picks),
            tuple(cumulative),
            forced,
        )

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
        """``(child, priority, load percent, panic)`` per linearized level, in order."""
        self.refresh()
        t = self._table
        return [
            (lv.child, lv.priority, load, panic)
            for lv, load, panic in zip(t.levels, t.loads, t.panic, strict=True)
        ]

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
        point = hash_key % 100 if hash_key is not None else int(self._rng.random() * 100)
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
        raise NoHealthyUpstream(
            f"{self.name}: no healthy upstream" + (f" ({why})" if why else ""),
            target=call.authority,
            cluster=self.name,
            reason="no_healthy_upstream",
        )
