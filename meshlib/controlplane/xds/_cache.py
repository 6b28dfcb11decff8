"""The versioned snapshot cache between translation and the xDS server.

Translation produces a :class:`Resources` (protobuf messages keyed by type URL and
name); the cache packs them into ``Any``, and bumps its version only when the content
changed. Server streams read the current :class:`Snapshot` and await the next one.
Setting is thread-safe from any thread; waiting happens on the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "PUSH_ORDER",
    "ROUTE_TYPE",
    "Resources",
    "Snapshot",
    "SnapshotCache",
    "VersionedSnapshotCache",
]

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

#: The order a change is pushed in (xDS "eventual consistency considerations"):
#: clusters before their endpoints, listeners before their route configurations.
PUSH_ORDER: tuple[str, ...] = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)

# type_url -> resource name -> resource
_Table = Mapping[str, Mapping[str, Any]]
_PackedTable = Mapping[str, Mapping[str, any_pb2.Any]]


@dataclass(frozen=True)
class Resources:
    """Unpacked resources as translation produces them.

    ``shared`` is served to every node. ``by_namespace`` holds names that resolve
    differently per requesting node's namespace (the short ``name:port`` listeners);
    for a node in that namespace they are added to (and win over) ``shared``.

    Optionally, ``render`` derives the full table for one node view (see
    :class:`~meshlib.controlplane.NodeView`); ``inputs`` is what ``render`` depends on
    beyond the tables (compared to decide whether anything changed); ``problems`` are
    translation warnings to report.
    """

    shared: _Table = field(default_factory=dict)
    by_namespace: Mapping[str, _Table] = field(default_factory=dict)
    render: Callable[[Any], _Table] | None = None
    inputs: Any = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One immutable, versioned view of every resource, packed as ``Any``.

    Per-view tables (:meth:`resources_for`) are rendered on first use and kept for the
    snapshot's lifetime, so every node with the same view shares them.
    """

    version: str
    shared: _PackedTable = field(default_factory=dict)
    by_namespace: Mapping[str, _PackedTable] = field(default_factory=dict)
    render: Callable[[Any], _Table] | None = None
    inputs: Any = None
    _views: dict[Any, _PackedTable] = field(default_factory=dict, repr=False)
    _clusters: dict[Any, frozenset[str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resources(self, type_url: str, namespace: str | None = None) -> dict[str, any_pb2.Any]:
        """Resources of ``type_url`` as seen by a node in ``namespace``."""
        out = dict(self.shared.get(type_url, {}))
        if namespace is not None:
            out.update(self.by_namespace.get(namespace, {}).get(type_url, {}))
        return out

    def resources_for(self, view: Any, type_url: str) -> dict[str, any_pb2.Any]:
        """Resources of ``type_url`` as served to a node with ``view`` (a NodeView)."""
        if self.render is None:
            return self.resources(type_url, getattr(view, "namespace", None))
        with self._lock:
            table = self._views.get(view)
            if table is None:
                table = self._views[view] = _pack_table(self.render(view))
        return dict(table.get(type_url, {}))

    def route_clusters(self, view: Any, route_names: frozenset[str]) -> frozenset[str]:
        """Clusters named by the route configurations ``route_names`` of ``view``."""
        key = (view, route_names)
        with self._lock:
            found = self._clusters.get(key)
        if found is not None:
            return found
        routes = self.resources_for(view, ROUTE_TYPE)
        names: set[str] = set()
        for name in route_names:
            packed = routes.get(name)
            if packed is None:
                continue
            rc = route_pb2.RouteConfiguration()
            packed.Unpack(rc)
            for vh in rc.virtual_hosts:
                for route in vh.routes:
                    action = route.route
                    if action.cluster:
                        names.add(action.cluster)
                    names.update(cw.name for cw in action.weighted_clusters.clusters)
        found = frozenset(names)
        with self._lock:
            self._clusters[key] = found
        return found

    def type_urls(self) -> list[str]:
        """Every type URL present, in :data:`PUSH_ORDER` first."""
        present = set(self.shared)
        for table in self.by_namespace.values():
            present.update(table)
        ordered = [t for t in PUSH_ORDER if t in present]
        return ordered + sorted(present.difference(PUSH_ORDER))


class SnapshotCache(Protocol):
    """The seam between whatever produces resources and the xDS server."""

    def snapshot(self) -> Snapshot:
        """The current snapshot."""
        ...

    def set_resources(self, resources: Resources) -> Snapshot:
        """Replace every resource; bumps the version only if something changed."""
        ...

    async def wait_for_change(self, version: str) -> Snapshot:
        """Return the first snapshot whose version differs from ``version``."""
        ...


def _pack_table(table: _Table) -> dict[str, dict[str, any_pb2.Any]]:
    out: dict[str, dict[str, any_pb2.Any]] = {}
    for type_url, named in table.items():
        packed: dict[str, any_pb2.Any] = {}
        for name in sorted(named):
            msg = named[name]
            if isinstance(msg, any_pb2.Any):
                packed[name] = msg
                continue
            anyp = any_pb2.Any()
            anyp.Pack(msg, deterministic=True)
            if anyp.type_url != type_url:
                raise ValueError(f"resource {name!r} is a {anyp.type_url}, not a {type_url}")
            packed[name] = anyp
        out[type_url] = packed
    return out


class VersionedSnapshotCache:
    """In-memory :class:`SnapshotCache` with a monotonically increasing version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = 0
        self._snapshot = Snapshot(version="0")
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Snapshot]]] = []

    def snapshot(self) -> Snapshot:
        """The current snapshot."""
        with self._lock:
            return self._snapshot

    def set_resources(self, resources: Resources) -> Snapshot:
        """Pack and install ``resources``; wake waiting streams if anything changed."""
        shared = _pack_table(resources.shared)
        by_ns = {ns: _pack_table(t) for ns, t in resources.by_namespace.items()}
        by_ns = {ns: t for ns, t in by_ns.items() if any(t.values())}
        with self._lock:
            current = self._snapshot
            if (
                _same(current.shared, shared)
                and _same_ns(current.by_namespace, by_ns)
                and (current.render is None) == (resources.render is None)
                and current.inputs == resources.inputs
            ):
                return current
            self._counter += 1
            snap = Snapshot(
                version=str(self._counter),
                shared=shared,
                by_namespace=by_ns,
                render=resources.render,
                inputs=resources.inputs,
            )
            self._snapshot = snap
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(_resolve, fut, snap)
        return snap

    async def wait_for_change(self, version: str) -> Snapshot:
        """Return the first snapshot whose version differs from ``version``."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._snapshot.version != version:
                return self._snapshot
            fut: asyncio.Future[Snapshot] = loop.create_future()
            entry = (loop, fut)
            self._waiters.append(entry)
        try:
            return await fut
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(entry)


def _resolve(fut: asyncio.Future[Snapshot], snap: Snapshot) -> None:
    if not fut.done():
        fut.set_result(snap)


def _same(a: _PackedTable, b: _PackedTable) -> bool:
    keys = {t for t, named in a.items() if named} | {t for t, named in b.items() if named}
    return all(dict(a.get(t, {})) == dict(b.get(t, {})) for t in keys)


def _same_ns(a: Mapping[str, _PackedTable], b: Mapping[str, _PackedTable]) -> bool:
    return set(a) == set(b) and all(_same(a[ns], b[ns]) for ns in a)
