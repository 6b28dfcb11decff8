"""Per-cluster views for the Snapshot, and the per-cluster state that outlives a push.

``ClusterViews.build(names)`` gives each cluster a ``ClusterView`` (an ``AggregateView``
for an aggregate cluster) from the resources the config watcher holds, reusing a view
whose cluster and endpoint resources did not change, and forgets the state of clusters
no longer named. The state it keeps per cluster: endpoint states (EndpointRegistry),
the cluster circuit breaker, the outlier detector (swept, with balancer rebuilds, on
the OutlierSweeper's thread), one pybreaker breaker per endpoint when
``endpoint_breakers`` is given, slow-start tracking (``RampTimer``) and, for aggregate
clusters, which aggregates a leaf's balancer rebuild must refresh.

Slow start: endpoints that join a cluster after its first endpoint set carry the time
they joined; while any of them ramps, the ``RampTimer`` thread rebuilds that cluster's
balancer in steps. Zone-aware routing: with a local cluster (``local_name``) every
balancer gets its host spread and the node's locality; without one there is none, as
in Envoy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from xds_client.resources import (
    CLUSTER,
    ENDPOINTS,
    ClusterResource,
    EndpointsResource,
    ResourceType,
)

from .._snapshot import ClusterView, LiveBalancer
from ..balancing import LocalCluster, LocalityGroup, RampTimer
from ..resilience.breakers import ClusterBreaker
from ..resilience.endpoint_breaker import EndpointBreakers
from ..resilience.outlier import OutlierDetector, OutlierSweeper
from ._aggregate import AggregateBalancer, AggregateView, Child, ClusterTree, cluster_tree
from ._endpoints import EndpointRegistry, EndpointState

__all__ = ["ClusterViews"]

#: A resource's latest value (or None), and its error text ("" without one).
Lookup = Callable[[ResourceType[Any], str], Any]
ErrorLookup = Callable[[ResourceType[Any], str], str]


class ClusterViews:
    """Builds the Snapshot's cluster views; keeps the state that outlives a push. Called
    under the config watcher's lock, on the xDS client's thread."""

    def __init__(
        self,
        value: Lookup,
        error: ErrorLookup,
        *,
        local_name: str = "",
        locality: tuple[str, str, str] = ("", "", ""),
        endpoint_breakers: EndpointBreakers | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._value, self._error = value, error
        self._local_name = local_name
        self._locality = locality
        self._endpoint_breakers = endpoint_breakers
        self._clock = clock
        self.ramp = RampTimer(clock)
        self.sweeper = OutlierSweeper()
        self._seen: set[str] = set()  # clusters whose first endpoint set was built
        self._registry = EndpointRegistry()
        self._breakers: dict[str, ClusterBreaker] = {}
        self._detectors: dict[str, OutlierDetector] = {}
        self._clusters: dict[str, tuple[Any, Any, ClusterView, LocalCluster | None]] = {}
        self._children: dict[str, Child] = {}  # leaf clusters, as aggregates balance them
        self._dependents: dict[str, tuple[AggregateBalancer, ...]] = {}  # leaf -> aggregates

    def tree(self, name: str) -> ClusterTree:
        """The clusters ``name`` reaches (itself; an aggregate's tree)."""
        return cluster_tree(name, lambda n: self._value(CLUSTER, n))

    def build(self, names: set[str]) -> dict[str, ClusterView]:
        """A view per cluster in ``names``; the state of every other cluster is dropped."""
        local = self._local_cluster()
        clusters = {name: self._cluster_view(name, local) for name in names}
        self._children = {k: v for k, v in self._children.items() if k in clusters}
        dependents: dict[str, list[AggregateBalancer]] = {}
        for cview in clusters.values():
            if isinstance(cview, AggregateView) and cview.aggregate is not None:
                for child in cview.aggregate.children:
                    dependents.setdefault(child.view.name, []).append(cview.aggregate)
        self._dependents = {k: tuple(v) for k, v in dependents.items()}
        self._registry.retain({(c, e.address) for c in clusters for e in clusters[c].endpoints})
        self._clusters = {k: v for k, v in self._clusters.items() if k in clusters}
        for gone in self._seen - clusters.keys():
            self.ramp.untrack(gone)
        self._seen &= clusters.keys()
        self._breakers = {k: v for k, v in self._breakers.items() if k in clusters}
        for gone in [k for k in self._detectors if k not in clusters]:
            self.sweeper.unregister(gone)
            del self._detectors[gone]
        return clusters

    def _local_cluster(self) -> LocalCluster | None:
        """The local cluster's host spread, once its endpoints are known."""
        if not self._local_name:
            return None
        cluster: ClusterResource | None = self._value(CLUSTER, self._local_name)
        if cluster is None:
            return None
        eds: EndpointsResource | None = cluster.load_assignment or self._value(
            ENDPOINTS, cluster.eds_service_name
        )
        if eds is None:
            return None
        return LocalCluster.from_localities(self._locality, eds.localities)

    def _cluster_view(self, name: str, local: LocalCluster | None = None) -> ClusterView:
        cluster: ClusterResource | None = self._value(CLUSTER, name)
        if cluster is None:
            return ClusterView(name, None, (), None, self._error(CLUSTER, name) or "not resolved")
        if cluster.discovery_type == "AGGREGATE":
            return self._aggregate_view(name, cluster, local)
        eds: EndpointsResource | None = cluster.load_assignment
        if eds is None:
            eds = self._value(ENDPOINTS, cluster.eds_service_name)
        cached = self._clusters.get(name)
        if cached and cached[0] is cluster and cached[1] is eds and cached[3] == local:
            return cached[2]
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = ClusterBreaker(name)
        breaker.configure(cluster.circuit_breakers)
        if eds is None:
            err = self._error(ENDPOINTS, cluster.eds_service_name) or "endpoints not resolved"
            view = ClusterView(name, cluster, (), None, err, breaker)
        else:
            # Endpoints new to a cluster that already had an endpoint set slow-start.
            joined = self._clock() if name in self._seen else None
            self._seen.add(name)
            groups = [
                LocalityGroup(
                    loc.weight,
                    loc.priority,
                    tuple(self._registry.get(name, e, joined) for e in loc.endpoints),
                    (loc.region, loc.zone, loc.sub_zone),
                )
                for loc in eds.localities
            ]
            states = tuple(e for g in groups for e in g.endpoints)
            self._attach(name, cluster, states)
            live = LiveBalancer(
                groups,
                cluster.lb,
                eds.overprovisioning_factor,
                cluster.healthy_panic_threshold,
                local=local,
            )
            self._track_ramp(name, cluster, live)
            view = ClusterView(name, cluster, states, live, "", breaker, eds.drop_overloads)
            self._children[name] = Child(view, tuple(groups), eds.overprovisioning_factor, local)
            detector = self._detectors.get(name)
            if detector is not None:
                self.sweeper.register(name, detector, self._rebuilder(name, live))
        self._clusters[name] = (cluster, eds, view, local)
        return view

    def _track_ramp(self, name: str, cluster: ClusterResource, live: LiveBalancer) -> None:
        """Rebuild ``live`` on the ramp timer while its endpoints slow-start."""
        slow_start = cluster.lb.slow_start
        if slow_start is None or live.balancer.ramp_until is None:
            self.ramp.untrack(name)
            return

        rebuilt = self._rebuilder(name, live)

        def rebuild() -> float | None:
            rebuilt()
            return live.balancer.ramp_until

        self.ramp.track(name, rebuild, slow_start.window)

    def _rebuilder(self, name: str, live: LiveBalancer) -> Callable[[], None]:
        """Rebuild ``live`` (cluster ``name``), then the aggregates that contain it."""

        def rebuild() -> None:
            live.rebuild()
            for aggregate in self._dependents.get(name, ()):
                aggregate.refresh()

        return rebuild

    def _aggregate_view(
        self, name: str, cluster: ClusterResource, local: LocalCluster | None
    ) -> ClusterView:
        """An aggregate over the current views of its tree's leaf clusters."""
        tree = self.tree(name)
        leaves = () if tree.error else tuple(self._cluster_view(n, local) for n in tree.leaves)
        problems = [
            f"{n}: {self._error(CLUSTER, n) or 'not resolved'}"
            for n in tree.clusters
            if self._value(CLUSTER, n) is None
        ] + [f"{v.name}: {v.error or 'no endpoints'}" for v in leaves if not v.endpoints]
        # Like Envoy, a child without endpoints is skipped; it is an error only when
        # no child has any.
        usable = any(v.endpoints for v in leaves)
        error = tree.error or ("" if usable else "no usable cluster: " + "; ".join(problems))
        cached = self._clusters.get(name)
        if (
            cached
            and cached[0] is cluster
            and len(cached[1]) == len(leaves)
            and all(a is b for a, b in zip(cached[1], leaves, strict=True))
            and cached[2].error == error
        ):
            return cached[2]
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = ClusterBreaker(name)
        breaker.configure(cluster.circuit_breakers)
        known = self._children
        children = [known[v.name] for v in leaves if v.name in known and known[v.name].view is v]
        balancer = AggregateBalancer(children, cluster.healthy_panic_threshold)
        endpoints = tuple(e for v in leaves for e in v.endpoints)
        view = AggregateView(name, cluster, endpoints, None, error, breaker, aggregate=balancer)
        self._clusters[name] = (cluster, leaves, view, local)
        return view

    def _attach(
        self, name: str, cluster: ClusterResource, states: tuple[EndpointState, ...]
    ) -> None:
        """Give endpoint states their cluster's outlier detector and their breakers."""
        config = cluster.outlier_detection
        detector = self._detectors.get(name)
        if config is None:
            if detector is not None:
                self.sweeper.unregister(name)
                del self._detectors[name]
            for s in states:  # outlier detection removed: nothing stays ejected
                s.outlier, s.ejected = None, False
        elif detector is None:
            detector = self._detectors[name] = OutlierDetector(name, config)
        if detector is not None and config is not None:
            detector.configure(config, states)
        if self._endpoint_breakers is not None:
            for s in states:
                if s.breaker is None:
                    s.breaker = self._endpoint_breakers.create(name, s.address)

    def close(self) -> None:
        self.sweeper.close()
        self.ramp.close()
