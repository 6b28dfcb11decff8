"""XdsClient: watch xDS resources by type and name; get validated, immutable models.

The client keeps one :class:`Connection` per set of management servers (the top-level
``xds_servers`` for old-style names, an authority's servers for ``xdstp://`` names,
gRFC A47). Each runs its ADS stream (state of the world or delta, chosen per server) on
its own daemon thread, started by the first watch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from ._bootstrap import Bootstrap, Node, ServerConfig
from ._cache import WILDCARD
from ._connection import Backoff, Connection, Settings
from ._csds import client_config
from ._names import canonical_name, parse_xdstp
from ._timers import TimerQueue
from ._transport import AdsTransport, GrpcAdsTransport
from ._watchers import ResourceWatcher
from .resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG, SECRET, ResourceType

__all__ = ["DEFAULT_RESOURCE_TYPES", "XdsClient"]

R = TypeVar("R")
USER_AGENT = "meshlib-xds-client"
DOES_NOT_EXIST_TIMEOUT = 15.0
FALLBACK_RECHECK = 30.0
DEFAULT_RESOURCE_TYPES: tuple[ResourceType[Any], ...] = (
    LISTENER,
    ROUTE_CONFIG,
    CLUSTER,
    ENDPOINTS,
    SECRET,
)


class XdsClient:
    """A strict xDS client (gRPC proxyless semantics, Envoy's meaning of fields).

    - ``transport``: the ADS transport seam (default: grpcio).
    - ``protocol``: ``"sotw"`` or ``"delta"`` for every server; by default each server
      speaks delta if its bootstrap ``server_features`` lists ``delta_ads``.
    - ``does_not_exist_timeout``: how long a subscribed resource may stay unanswered
      before watchers hear it does not exist (gRPC: 15 s).
    - ``fallback_recheck``: while on a fallback server, how often the primary is tried.

    Streams reconnect with jittered exponential backoff and re-send every subscription
    with the last accepted versions; cached resources keep serving while disconnected.
    Watcher callbacks run on the client's threads and must return quickly.
    """

    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        transport: AdsTransport | None = None,
        resource_types: tuple[ResourceType[Any], ...] = DEFAULT_RESOURCE_TYPES,
        does_not_exist_timeout: float = DOES_NOT_EXIST_TIMEOUT,
        protocol: str | None = None,
        backoff: Backoff | None = None,
        fallback_recheck: float = FALLBACK_RECHECK,
    ) -> None:
        if protocol not in (None, "sotw", "delta"):
            raise ValueError(f"protocol must be 'sotw' or 'delta', got {protocol!r}")
        self.bootstrap = bootstrap
        self.node = node_proto(bootstrap.node)
        self._transport = transport or GrpcAdsTransport()
        self._types = {t.type_url: t for t in resource_types}
        self._settings = Settings(
            node=self.node,
            dne_timeout=does_not_exist_timeout,
            backoff=backoff or Backoff(),
            fallback_recheck=fallback_recheck,
            protocol_for=(lambda s: protocol) if protocol else (lambda s: s.protocol),
        )
        self._timers = TimerQueue()
        self._lock = threading.Lock()
        self._connections: dict[tuple[Any, ...], Connection] = {}
        self._closed = False
        self._held: list[list[Connection]] = []

    # -- public API -------------------------------------------------------------------
    def watch(
        self, rtype: ResourceType[R], name: str, watcher: ResourceWatcher[R]
    ) -> Callable[[], None]:
        """Subscribe ``watcher`` to resource ``name`` (``"*"``: every resource of the
        type, the wildcard subscription); returns a function that cancels it.

        The first watcher of a name subscribes it; cancelling the last unsubscribes.
        A cached resource (or known error) is delivered to a new watcher at once.
        """
        if rtype.type_url not in self._types:
            raise ValueError(f"resource type {rtype.type_url} is not registered with this client")
        name = canonical_name(name)
        connection = self._connection_for(rtype, name)
        connection.watch(rtype, name, watcher)
        done = threading.Event()

        def cancel() -> None:
            if not done.is_set():
                done.set()
                connection.cancel(rtype, name, watcher)

        return cancel

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Coalesce the subscriptions made inside the block into one request per type::

            with client.batch():
                for name in names:
                    client.watch(ENDPOINTS, name, watcher)

        (Watches made from watcher callbacks are coalesced the same way already.)"""
        with self._lock:
            held = list(self._connections.values())
            self._held.append(held)
        for connection in held:
            connection.hold()
        try:
            yield
        finally:
            with self._lock:
                self._held.remove(held)
            for connection in held:
                connection.release()

    def dump(self) -> Any:
        """The client's config for CSDS: an ``envoy.service.status.v3.ClientConfig``
        with one ``GenericXdsConfig`` per resource (REQUESTED, DOES_NOT_EXIST, ACKED,
        or NACKED with the error)."""
        with self._lock:
            connections = list(self._connections.values())
        return client_config(self.node, connections)

    def update_counts(self) -> dict[tuple[str, bool], int]:
        """Responses ACKed (``(type_url, True)``) and NACKed (``False``) so far."""
        with self._lock:
            connections = list(self._connections.values())
        out: dict[tuple[str, bool], int] = {}
        for c in connections:
            for key, n in list(c.updates.items()):
                out[key] = out.get(key, 0) + n
        return out

    def servers(self) -> list[ServerConfig | None]:
        """The server each connection's live stream talks to (None: disconnected)."""
        with self._lock:
            return [c.server for c in self._connections.values()]

    def close(self) -> None:
        """End every stream and thread."""
        with self._lock:
            self._closed = True
            connections = list(self._connections.values())
        for connection in connections:
            connection.close()
        self._timers.close()
        self._transport.close()

    def __enter__(self) -> XdsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------
    def _connection_for(self, rtype: ResourceType[Any], name: str) -> Connection:
        servers = self.bootstrap.xds_servers
        if name != WILDCARD:
            try:
                parsed = parse_xdstp(name)
            except ValueError as exc:
                raise ValueError(f"{rtype.type_name} {name!r}: {exc}") from None
            if parsed is not None:
                if parsed.authority not in self.bootstrap.authorities:
                    raise ValueError(
                        f"{rtype.type_name} {name!r}: authority {parsed.authority!r} is not in "
                        f"the bootstrap's authorities ({self.bootstrap.source})"
                    )
                expected = rtype.type_url.rpartition("/")[2]
                if parsed.resource_type != expected:
                    raise ValueError(
                        f"{rtype.type_name} {name!r}: resource type in the name must be "
                        f"{expected!r}"
                    )
                servers = self.bootstrap.servers_for(parsed.authority)
        key = tuple((s.server_uri, s.channel_creds_type, s.server_features) for s in servers)
        with self._lock:
            if self._closed:
                raise RuntimeError("XdsClient is closed")
            connection = self._connections.get(key)
            if connection is None:
                connection = self._connections[key] = Connection(
                    servers,
                    self._transport,
                    tuple(self._types.values()),
                    self._settings,
                    self._timers,
                )
                for held in self._held:  # a batch in progress holds new connections too
                    connection.hold()
                    held.append(connection)
            return connection


def node_proto(node: Node) -> base_pb2.Node:
    """The bootstrap node as the ``envoy.config.core.v3.Node`` sent on every stream."""
    metadata = struct_pb2.Struct()
    metadata.update(dict(node.metadata))
    msg = base_pb2.Node(
        id=node.id,
        cluster=node.cluster,
        metadata=metadata,
        user_agent_name=USER_AGENT,
        user_agent_version=_version(),
        client_features=[
            "envoy.lb.does_not_support_overprovisioning",
            "xds.config.resource-in-sotw",
        ],
    )
    msg.locality.region = node.locality.region
    msg.locality.zone = node.locality.zone
    msg.locality.sub_zone = node.locality.sub_zone
    return msg


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("meshlib-proxyless")
    except Exception:
        return "0"
