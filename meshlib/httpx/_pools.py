"""Connection pools per endpoint, and how to connect to each cluster's endpoints.

A :class:`Connector` is a cluster's connection settings (TLS context, HTTP/1.1 or
HTTP/2, SNI, connect timeout); equal settings give the same Connector, so a config push
that does not change them keeps every pool. :class:`EndpointPools` holds one pool of
httpcore connections (:mod:`._connections`) per (cluster, endpoint address, Connector),
reused across Snapshots; pools of endpoints no Snapshot names any more are retired and
handed back to the driver to close once they are idle. The sync and async transports
share all of it and differ only in the pool type they build and how they close one.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from xds_client.resources import ClusterResource, UpstreamTls

from .._errors import MeshError
from .._snapshot import ClusterView, Snapshot
from ..cluster._endpoints import EndpointState
from ..security import CertificateProviders, UpstreamTlsError, upstream_context

__all__ = ["DEFAULT_LIMITS", "Connector", "Connectors", "EndpointPools", "Retirable"]

log = logging.getLogger("meshlib.httpx")

#: Per endpoint (the cluster's max_connections also applies): httpx's defaults are per
#: client; an endpoint needs no more.
DEFAULT_LIMITS = {"max_connections": 100, "max_keepalive_connections": 20}
_plaintext_context: ssl.SSLContext | None = None


def plaintext_context() -> ssl.SSLContext:
    """A context never used for a handshake: it spares httpx loading CA bundles per pool."""
    global _plaintext_context
    if _plaintext_context is None:
        _plaintext_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _plaintext_context


@dataclass(frozen=True, eq=False, slots=True)
class Connector:
    """How to connect to one cluster's endpoints (identity-compared: one per setting)."""

    scheme: str  # "http" or "https"
    http1: bool
    http2: bool
    ssl_context: ssl.SSLContext
    sni: str = ""
    connect_timeout: float | None = None
    error: MeshError | None = None  # the settings cannot be used: fail requests with it
    protocol: str = "http1"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


_PLAIN_KEY = (None, "http1", None)


class Connectors:
    """Cluster -> Connector, recomputed only when the cluster's resource object changes."""

    def __init__(self, providers: CertificateProviders | None = None) -> None:
        self._providers = providers or CertificateProviders()
        self._by_cluster: dict[str, tuple[ClusterResource | None, Connector]] = {}
        self._by_setting: dict[tuple[UpstreamTls | None, str, float | None], Connector] = {}
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()

    @property
    def plaintext(self) -> Connector:
        """HTTP/1.1 without TLS: the default for a cluster without settings."""
        return self._build("", None)

    def for_cluster(self, view: ClusterView) -> Connector:
        entry = self._by_cluster.get(view.name)
        resource = view.resource
        if entry is not None and entry[0] is resource:
            return entry[1]
        with self._lock:
            connector = self._build(view.name, resource)
            self._by_cluster[view.name] = (resource, connector)
        return connector

    def _build(self, cluster: str, resource: ClusterResource | None) -> Connector:
        if resource is None:
            key: tuple[UpstreamTls | None, str, float | None] = _PLAIN_KEY
        else:
            key = (resource.tls, resource.upstream_protocol, resource.connect_timeout)
        found = self._by_setting.get(key)
        if found is not None and found.error is None:
            return found
        tls, protocol, connect_timeout = key
        http1, http2 = protocol != "http2", protocol != "http1"
        if tls is None:
            if protocol == "auto":  # no ALPN without TLS: HTTP/1.1, as Envoy's auto_config
                http2 = False
            connector = Connector(
                "http", http1, http2, plaintext_context(), "", connect_timeout, None, protocol
            )
        else:
            try:
                ctx: ssl.SSLContext = upstream_context(
                    tls, self._providers, cluster=cluster, protocol=protocol
                )
                error = None
            except UpstreamTlsError as exc:
                ctx, error = plaintext_context(), exc
                if (cluster, str(exc)) not in self._logged:
                    self._logged.add((cluster, str(exc)))
                    log.error("%s", exc)
            connector = Connector(
                "https", http1, http2, ctx, tls.sni, connect_timeout, error, protocol
            )
        if connector.error is None:
            self._by_setting[key] = connector
        return connector


class Retirable(Protocol):
    """A pool :class:`EndpointPools` can retire: ``retire()`` is True once it is idle
    and will take no more requests (its connections are then the driver's to close)."""

    def retire(self) -> bool: ...


P = TypeVar("P", bound=Retirable)


class EndpointPools(Generic[P]):
    """One pool per (cluster, endpoint address, Connector), kept across Snapshots.

    ``make(view, endpoint, connector)`` builds a pool for an endpoint of cluster ``view``
    (it counts connections against the cluster's breaker, as Envoy keeps a pool per
    cluster and host). ``stale(snapshot, connector_of)`` retires and returns the idle
    pools the Snapshot no longer uses (endpoint gone, or its cluster's connection
    settings changed), for the driver to close; busy ones are kept until a later look.
    """

    def __init__(self, make: Callable[[ClusterView, EndpointState, Connector], P]) -> None:
        self._make = make
        self._pools: dict[tuple[str, str, Connector], P] = {}
        self._lock = threading.Lock()
        self._seen: Snapshot | None = None
        self._orphans: set[tuple[str, str, Connector]] = set()
        self._closed = False

    def get(self, view: ClusterView, endpoint: EndpointState, connector: Connector) -> P:
        key = (view.name, endpoint.address, connector)
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the transport is closed")
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._pools[key] = self._make(view, endpoint, connector)
        return pool

    def __len__(self) -> int:
        return len(self._pools)

    def current(self, snapshot: Snapshot) -> bool:
        """Nothing to look for: ``snapshot`` was looked at and no pool waits to retire."""
        return snapshot is self._seen and not self._orphans

    def stale(
        self, snapshot: Snapshot, connector_of: Callable[[ClusterView], Connector]
    ) -> list[P]:
        """Idle pools ``snapshot`` does not use (looked for once per Snapshot), retired."""
        if snapshot is self._seen and not self._orphans:
            return []
        with self._lock:
            if snapshot is not self._seen:
                self._seen = snapshot
                live = {
                    (name, ep.address, connector_of(view))
                    for name, view in snapshot.clusters.items()
                    for ep in view.endpoints
                }
                self._orphans = {k for k in self._pools if k not in live}
            out = []
            for key in list(self._orphans):
                pool = self._pools.get(key)
                if pool is None:
                    self._orphans.discard(key)
                elif pool.retire():
                    del self._pools[key]
                    self._orphans.discard(key)
                    out.append(pool)
            return out

    def drain(self) -> list[P]:
        """Every pool, removed (the transport is closing: no new pool after this)."""
        with self._lock:
            self._closed = True
            out = list(self._pools.values())
            self._pools.clear()
            self._orphans.clear()
            return out
