"""Follows targets through the xDS graph and publishes Snapshots.

Listener -> RouteConfiguration -> Cluster -> ClusterLoadAssignment. The watcher keeps
exactly the subscriptions its targets need (reconciled after every update) and swaps
in a new immutable Snapshot; compiled pieces whose resources did not change are reused.
Runs on the xDS client's thread, except ``request`` which any thread may call.

Cluster views, and the per-cluster state that outlives a push (endpoint states,
breakers, outlier detection, slow start), are built by ``ClusterViews``
(``meshlib.cluster``). With a local cluster (``local_cluster``, default the bootstrap's
``cluster_manager.local_cluster_name``) the watcher also subscribes to it, for
zone-aware routing.

Aggregate clusters: the watcher follows each route cluster's tree (``cluster_tree``:
children depth-first, at most ``MAX_DEPTH`` levels, no loops), subscribes to every
cluster in it and to its leaves' endpoints, counts a target settled only when the whole
tree is; ``ClusterViews`` publishes an ``AggregateView`` under the aggregate's name next
to its children's views.

Route moves: once a target has been published, a new route configuration naming a cluster
that is not settled yet (no Cluster, or no endpoints for it) does not replace the last
settled one: the target keeps its last settled view (and the watcher its clusters'
subscriptions) until every cluster the new one can reach has arrived or failed, as gRPC
keeps calls off a cluster whose policy is still connecting (gRFC A28/A31) rather than
failing them. A cluster that never arrives fails once its does-not-exist timer fires.
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
    FAULT_TYPE,
    LISTENER,
    ROUTE_CONFIG,
    ClusterResource,
    FaultConfig,
    ListenerResource,
    ResourceType,
    RouteConfigResource,
)
from xds_client.resources.route import LocalRateLimitConfig

from ._snapshot import ListenerView, Snapshot
from .cluster._cluster_views import ClusterViews
from .resilience.endpoint_breaker import EndpointBreakers
from .routing import RouteTable

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


def _listener_ratelimit(listener: ListenerResource) -> LocalRateLimitConfig | None:
    """The local rate limit filter's listener-level config (routes may override it)."""
    for f in listener.http_filters:
        if isinstance(f.config, LocalRateLimitConfig):
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
        self._client = client
        self._publish = publish
        self._lock = threading.RLock()
        self._targets: dict[str, threading.Event] = {}
        self._slots: dict[_Key, _Slot] = {}
        self._tables: dict[str, tuple[RouteConfigResource, RouteTable, ListenerResource]] = {}
        #: The last settled view of each published target and the clusters it reaches.
        self._held: dict[str, tuple[ListenerView, frozenset[str]]] = {}
        self._views = ClusterViews(
            self._value,
            self._error,
            local_name=self._local_name,
            locality=(loc.region, loc.zone, loc.sub_zone),
            endpoint_breakers=endpoint_breakers,
            clock=clock,
        )
        #: The timer threads of slow start and outlier detection.
        self.ramp, self.sweeper = self._views.ramp, self._views.sweeper
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
                    for tname in self._views.tree(cname).clusters:
                        need.add((CLUSTER.type_url, tname))
                        cluster: ClusterResource | None = self._value(CLUSTER, tname)
                        if cluster is not None and cluster.discovery_type == "EDS":
                            need.add((ENDPOINTS.type_url, cluster.eds_service_name))
            for _, held_names in self._held.values():  # still served until a move settles
                for tname in held_names:
                    need.add((CLUSTER.type_url, tname))
                    held: ClusterResource | None = self._value(CLUSTER, tname)
                    if held is not None and held.discovery_type == "EDS":
                        need.add((ENDPOINTS.type_url, held.eds_service_name))
            return need

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
            released = False
            for target, event in self._targets.items():
                view, names, settled = self._listener_view(target)
                if view is not None:
                    viewed.add(target)
                held = self._held.get(target)
                if settled and view is not None:
                    # Published once every cluster it can reach is settled, so no call
                    # sees a route to a cluster still resolving.
                    listeners[target] = view
                    frozen = frozenset(names)
                    released |= held is not None and not held[1] <= frozen
                    self._held[target] = (view, frozen)
                elif held is not None:  # a move still resolving: keep the last settled one
                    listeners[target] = held[0]
                    names |= held[1]
                cluster_names |= names
                if settled:
                    ready.append(event)
            if released:  # drop the subscriptions only the replaced views needed
                self._dirty = True
            clusters = self._views.build(cluster_names)
            self._tables = {k: v for k, v in self._tables.items() if k in viewed}
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
            table = RouteTable(
                config,
                base_fault=_listener_fault(listener),
                base_ratelimit=_listener_ratelimit(listener),
            )
        self._tables[target] = (config, table, listener)
        names = {c for n in config.cluster_names() for c in self._views.tree(n).clusters}
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

    def close(self) -> None:
        self._views.close()
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            slot.cancel()
