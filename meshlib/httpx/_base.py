"""What the sync and async httpx transports hold in common: settings, per-endpoint pools,
and how a request becomes an :class:`Exchange`. The subclasses only send and wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpcore
import httpx

from .._call import Call, authority_of
from .._engine import Engine
from .._errors import MeshClosed, MeshError, TargetNotResolved
from .._snapshot import ClusterView, ListenerView, Snapshot
from ..cluster._endpoints import EndpointState
from ..local_reply import check_local_replies
from ..telemetry import Telemetry
from ._body import DEFAULT_RETRY_BUFFER
from ._connections import AsyncEndpointPool, EndpointPool, PoolCore
from ._errors import mesh_error
from ._exchange import Exchange, Shadow
from ._pools import DEFAULT_LIMITS, Connector, Connectors, EndpointPools

__all__ = ["TransportBase", "UnknownHostPolicy", "check_policy"]

UnknownHostPolicy = str  # "passthrough" or "fail"
PassT = TypeVar("PassT", httpx.BaseTransport, httpx.AsyncBaseTransport)
PoolT = TypeVar("PoolT", EndpointPool, AsyncEndpointPool)


def check_policy(unknown_hosts: str) -> None:
    if unknown_hosts not in ("passthrough", "fail"):
        raise ValueError(f"unknown_hosts must be 'passthrough' or 'fail', got {unknown_hosts!r}")


class TransportBase(Generic[PassT, PoolT]):
    """Settings and pools shared by :class:`MeshTransport` and :class:`AsyncMeshTransport`."""

    _pool_class: type[PoolT]
    _connection_class: type[httpcore.HTTPConnection] | type[httpcore.AsyncHTTPConnection]

    def __init__(
        self,
        engine: Engine,
        *,
        resolve_timeout: float = 10.0,
        unknown_hosts: UnknownHostPolicy = "passthrough",
        passthrough: PassT | None = None,
        telemetry: Telemetry | None = None,
        connectors: Connectors | None = None,
        limits: httpx.Limits | None = None,
        retry_buffer: int = DEFAULT_RETRY_BUFFER,
        local_replies: str = "envoy",
    ) -> None:
        check_policy(unknown_hosts)
        self._local_replies = check_local_replies(local_replies)
        self._engine = engine
        self._resolve_timeout = resolve_timeout
        self._unknown_hosts = unknown_hosts
        self._passthrough: PassT | None = passthrough
        self._telemetry = telemetry
        self._connectors = connectors or Connectors()
        self._limits = limits or httpx.Limits(**DEFAULT_LIMITS)
        self._retry_buffer = retry_buffer
        self._pools: EndpointPools[PoolT] = EndpointPools(self._new_pool)
        self._setup()

    def _setup(self) -> None:
        """Driver-specific state (how mirrors are sent)."""

    def _new_pool(self, view: ClusterView, endpoint: EndpointState, connector: Connector) -> PoolT:
        ep = endpoint.endpoint
        origin = httpcore.Origin(connector.scheme.encode(), ep.host.encode("ascii"), ep.port)
        make_connection: Any = self._connection_class
        settings = {
            "ssl_context": connector.ssl_context if connector.tls else None,
            "keepalive_expiry": self._limits.keepalive_expiry,
            "http1": connector.http1,
            "http2": connector.http2,
        }
        core: Any = PoolCore(
            lambda: make_connection(origin, **settings),
            breaker=view.breaker,
            limits=self._limits,
            multiplexed=connector.http2 and not connector.http1,
            target=view.name,
        )
        return self._pool_class(core)

    def _stale_pools(self, snapshot: Snapshot) -> list[PoolT]:
        """Pools of endpoints no longer in the Snapshot, for the caller to close."""
        pools = self._pools
        if pools.current(snapshot):
            return []
        return pools.stale(snapshot, self._connectors.for_cluster)

    def _unrouted(self, exc: MeshError, request: httpx.Request) -> httpx.TransportError:
        """The error for a request the mesh could not look up (closed, resolve timeout)."""
        if self._telemetry is not None and not isinstance(exc, MeshClosed):
            self._telemetry.start_call(_call_of(request), "http").end(error=exc)
        return mesh_error(exc, request)

    def _unresolved(
        self, view: ListenerView, authority: str, request: httpx.Request
    ) -> httpx.TransportError:
        """A listener the control plane did not resolve (or, with ``unknown_hosts="fail"``,
        does not know): no route table to answer from, so an error in either mode."""
        error = TargetNotResolved(
            f"{authority}: {view.error or 'no such listener'}",
            target=authority,
            reason="listener_error",
        )
        return self._unrouted(error, request)

    def _exchange(
        self,
        snapshot: Snapshot,
        view: ListenerView,
        request: httpx.Request,
        authority: str,
        mirror: Callable[[Shadow], None],
    ) -> Exchange:
        return Exchange(
            snapshot,
            view,
            request,
            self._connectors,
            telemetry=self._telemetry,
            retry_buffer=self._retry_buffer,
            authority=authority,
            local_replies=self._local_replies,
            mirror=mirror,
        )


def _call_of(request: httpx.Request) -> Call:
    url = request.url
    return Call(
        authority_of(url.host, url.port, url.scheme),
        request.method,
        url.raw_path.decode("ascii"),
        request.headers,
        url.scheme,
    )
