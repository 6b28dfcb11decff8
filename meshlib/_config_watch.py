"""Follows targets through the xDS graph and publishes Snapshots.

Listener -> RouteConfiguration -> Cluster -> ClusterLoadAssignment. The watcher keeps
exactly the subscriptions its targets need (reconciled after every update) and swaps
in a new immutable Snapshot; compiled pieces whose resources did not change are reused.
Runs on the xDS client's thread, except ``request`` which any thread may call.

Per-cluster state that outlives a push is kept here and handed to each new ClusterView:
endpoint states (EndpointRegistry), the cluster circuit breaker, the outlier detector
(swept, with balancer rebuilds, on the OutlierSweeper's thread) and, when
``endpoint_breakers`` is given, one pybreaker breaker per endpoint.

Slow start: endpoints that join a cluster after its first endpoint set carry the time
they joined; while any of them ramps, the ``RampTimer`` thread rebuilds that cluster's
balancer in steps. Zone-aware routing: with a local cluster (``local_cluster``, default
the bootstrap's ``cluster_manager.local_cluster_name``) the watcher also subscribes to it
and hands its host spread, with the node's locality, to every balancer; without one there
is no zone-aware routing, as in Envoy.

Aggregate clusters: the watcher follows each route cluster's tree (``cluster_tree``:
children depth-first, at most ``MAX_DEPTH`` levels, no loops), subscribes to every
cluster in it and to its leaves' endpoints, counts a target settled only when the whole
tree is, and publishes an ``AggregateView`` under the aggregate's name next to its
children's views. A child's balancer rebuild (ejection, slow-start step) also refreshes
the aggregates that contain it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from xds_client import ResourceDoesNotExist, XdsClient
from xds_client.resources import (
    CLUSTER,
    ENDPOINTS,
    LISTENER,
    ROUTE_CONFIG,
    ClusterResource,
    EndpointsResource,
    FaultConfig,
    ListenerResource,
    ResourceType,
    RouteConfigResource,
)
from xds_client.resources._hcm import FAULT_TYPE

from ._aggregate import AggregateBalancer, AggregateView, Child, ClusterTree, cluster_tree
from ._endpoints import EndpointRegistry, EndpointState
from ._routing import RouteTable
from ._snapshot import ClusterView, ListenerView, LiveBalancer, Snapshot
from .balancing import LocalCluster, LocalityGroup, RampTimer
from .resilience.breakers import ClusterBreaker
from .resilience.endpoint_breaker import EndpointBreakers
from .resilience.outlier import OutlierDetector, OutlierSweeper

__all__ = ["ConfigWatcher"]

log = logging.getLogger("meshlib")
_Key = tuple[str, str]  # (type_url, name)


class _Slot:
    """The latest value (or error) of one watched resource."""

    __slots__ = ("cancel", "error", "missing", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: str = ""
        self.missing = False
        self.cancel: Callable[[], None] = lambda: None

    @property
    def settled(self) -> bool:
        return self.value is not None or bool(self.error)


class _SlotWatcher:
    def __init__(self, owner: ConfigWatcher, slot: _Slot) -> None:
        self._owner, self._slot = owner, slot

    def on_resource_changed(self, name: str, resource: Any) -> None:
        with self._owner._lock:
            self._slot.value, self._slot.error, self._slot.missing = resource, "", False
        self._owner._changed()

    def on_resource_error(self, name: str, error: Exception) -> None:
        with self._owner._lock:
            self._slot.value, self._slot.error = None, str(error)
            self._slot.missing = isinstance(error, ResourceDoesNotExist)
        self._owner._changed()

    def on_ambient_error(self, name: str, error: Exception) -> None:
        log.info("xDS: %s: keeping last good config: %s", name, error)


def _listener_fault(listener: ListenerResource) -> FaultConfig | None:
    """The HTTP fault filter's listener-level config (routes may override it)."""
    for f in listener.http_filters:
        if f.type_url == FAULT_TYPE and isinstance(f.config, FaultConfig):
            return f.config
    return None


class ConfigWatcher:
    """Subscribes what the requested targets need and publishes Snapshots."""

    def __init__(
        self,
        client: XdsClient,
        publish: Callable[[Snapshot], None],
        *,
        endpoint_breakers: EndpointBreakers | None = None,
        local_cluster: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bootstrap = client.bootstrap
        self._local_name = bootstrap.local_cluster_name if local_cluster is None else local_cluster
        loc = bootstrap.node.locality
        self._locality = (loc.region, loc.zone, loc.sub_zone)
        self._clock = clock
        self.ramp = RampTimer(clock)
        self._seen: set[str] = set()  # clusters whose first endpoint set was built
        self._client = client
        self._endpoint_breakers = endpoint_breakers
        self._breakers: dict[str, ClusterBreaker] = {}
        self._detectors: dict[str, OutlierDetector] = {}
        self.sweeper = OutlierSweeper()
        self._publish = publish
        self._lock = threading.RLock()
        self._targets: dict[str, threading.Event] = {}
        self._slots: dict[_Key, _Slot] = {}
        self._registry = EndpointRegistry()
        self._tables: dict[str, tuple[RouteConfigResource, RouteTable, ListenerResource]] = {}
        self._clusters: dict[str, tuple[Any, Any, ClusterView, LocalCluster | None]] = {}
        self._children: dict[str, Child] = {}  # leaf clusters, as aggregates balance them
        self._dependents: dict[str, tuple[AggregateBalancer, ...]] = {}  # leaf -> aggregates
        self._version = 0
        self._busy = False
        self._dirty = False

    def request(self, target: str) -> threading.Event:
        """Start resolving listener ``target``; the event is set once it is settled."""
        with self._lock:
            event = self._targets.get(target)
            if event is not None:
                return event
            event = self._targets[target] = threading.Event()
        self._changed()
        return event

    # -- reconcile --------------------------------------------------------------------
    def _changed(self) -> None:
        with self._lock:
            if self._busy:  # a watch() inside reconcile delivered a cached resource
                self._dirty = True
                return
            self._busy = True
        try:
            while True:
                with self._lock:
                    self._dirty = False
                self._reconcile()
                with self._lock:
                    if not self._dirty:
                        self._busy = False
                        break
        except BaseException:
            with self._lock:
                self._busy = False
            raise

    def _needed(self) -> set[_Key]:
        with self._lock:
            need: set[_Key] = {(LISTENER.type_url, t) for t in self._targets}
            if self._local_name and self._targets:
                need.add((CLUSTER.type_url, self._local_name))
                local: ClusterResource | None = self._value(CLUSTER, self._local_name)
                if local is not None and local.discovery_type == "EDS":
                    need.add((ENDPOINTS.type_url, local.eds_service_name))
            for t in self._targets:
                listener = self._value(LISTENER, t)
                if listener is None:
                    continue
                routes: RouteConfigResource | None = listener.inline_route_config
                if listener.route_config_name:
                    need.add((ROUTE_CONFIG.type_url, listener.route_config_name))
                    routes = self._value(ROUTE_CONFIG, listener.route_config_name)
                if routes is None:
                    continue
                for cname in routes.cluster_names():
                    for tname in self._tree(cname).clusters:
                        need.add((CLUSTER.type_url, tname))
                        cluster: ClusterResource | None = self._value(CLUSTER, tname)
                        if cluster is not None and cluster.discovery_type == "EDS":
                            need.add((ENDPOINTS.type_url, cluster.eds_service_name))
            return need

    def _tree(self, name: str) -> ClusterTree:
        """The clusters ``name`` reaches (itself; an aggregate's tree)."""
        return cluster_tree(name, lambda n: self._value(CLUSTER, n))

    def _reconcile(self) -> None:
        need = self._needed()
        types: dict[str, ResourceType[Any]] = {
            t.type_url: t for t in (LISTENER, ROUTE_CONFIG, CLUSTER, ENDPOINTS)
        }
        with self._lock:
            stale = [k for k in self._slots if k not in need]
            fresh = [k for k in need if k not in self._slots]
            for key in stale:
                self._slots.pop(key).cancel()
            for key in fresh:
                self._slots[key] = _Slot()
        for key in fresh:
            slot = self._slots[key]
            slot.cancel = self._client.watch(types[key[0]], key[1], _SlotWatcher(self, slot))
        with self._lock:
            again = self._dirty  # cached resources arrived during watch(): loop again first
        if not again:
            self._build()

    def _value(self, rtype: ResourceType[Any], name: str) -> Any:
        slot = self._slots.get((rtype.type_url, name))
        return slot.value if slot is not None else None

    def _error(self, rtype: ResourceType[Any], name: str) -> str:
        slot = self._slots.get((rtype.type_url, name))
        return slot.error if slot is not None else ""

    # -- snapshot ---------------------------------------------------------------------
    def _build(self) -> None:
        with self._lock:
            listeners: dict[str, ListenerView] = {}
            cluster_names: set[str] = set()
            ready: list[threading.Event] = []
            viewed: set[str] = set()
            for target, event in self._targets.items():
                view, names, settled = self._listener_view(target)
                if view is not None:
                    viewed.add(target)
                    # A target is published once every cluster it can reach is settled, so
                    # the first calls never see a route to a cluster still resolving; after
                    # that, updates publish at once (the control plane orders pushes).
                    if settled or event.is_set():
                        listeners[target] = view
                cluster_names |= names
                if settled:
                    ready.append(event)
            local = self._local_cluster()
            clusters = {name: self._cluster_view(name, local) for name in cluster_names}
            self._children = {k: v for k, v in self._children.items() if k in clusters}
            dependents: dict[str, list[AggregateBalancer]] = {}
            for cview in clusters.values():
                if isinstance(cview, AggregateView) and cview.aggregate is not None:
                    for child in cview.aggregate.children:
                        dependents.setdefault(child.view.name, []).append(cview.aggregate)
            self._dependents = {k: tuple(v) for k, v in dependents.items()}
            self._registry.retain({(c, e.address) for c in clusters for e in clusters[c].endpoints})
            self._tables = {k: v for k, v in self._tables.items() if k in viewed}
            self._clusters = {k: v for k, v in self._clusters.items() if k in clusters}
            for gone in self._seen - clusters.keys():
                self.ramp.untrack(gone)
            self._seen &= clusters.keys()
            self._breakers = {k: v for k, v in self._breakers.items() if k in clusters}
            for gone in [k for k in self._detectors if k not in clusters]:
                self.sweeper.unregister(gone)
                del self._detectors[gone]
            self._version += 1
            snapshot = Snapshot(self._version, listeners, clusters)
        self._publish(snapshot)
        for event in ready:
            # Settled only when every cluster it can reach has endpoints or an error.
            event.set()

    def _listener_view(self, target: str) -> tuple[ListenerView | None, set[str], bool]:
        listener: ListenerResource | None = self._value(LISTENER, target)
        if listener is None:
            slot = self._slots.get((LISTENER.type_url, target))
            if slot is None or not slot.error:
                return None, set(), False
            return ListenerView(target, None, slot.error, slot.missing), set(), True
        config = listener.inline_route_config
        if listener.route_config_name:
            config = self._value(ROUTE_CONFIG, listener.route_config_name)
            if config is None:
                err = self._error(ROUTE_CONFIG, listener.route_config_name)
                return (ListenerView(target, None, err) if err else None), set(), bool(err)
        assert config is not None
        cached = self._tables.get(target)
        if cached and cached[0] is config and cached[2] is listener:
            table = cached[1]
        else:
            table = RouteTable(config, base_fault=_listener_fault(listener))
        self._tables[target] = (config, table, listener)
        names = {c for n in config.cluster_names() for c in self._tree(n).clusters}
        settled = all(self._cluster_settled(n) for n in names)
        return ListenerView(target, table), names, settled

    def _cluster_settled(self, name: str) -> bool:
        cluster: ClusterResource | None = self._value(CLUSTER, name)
        if cluster is None:
            return bool(self._error(CLUSTER, name))
        if cluster.discovery_type != "EDS":  # inline endpoints; an aggregate's tree is
            return True  # settled by its clusters
        slot = self._slots.get((ENDPOINTS.type_url, cluster.eds_service_name))
        return slot is not None and slot.settled

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
        tree = self._tree(name)
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
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            slot.cancel()
