"""Mesh: the application's handle on the mesh."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from xds_client import Bootstrap, XdsClient, load_bootstrap

from ._config_watch import ConfigWatcher
from ._engine import Engine
from ._snapshot import Snapshot
from .httpx import (
    DEFAULT_RETRY_BUFFER,
    AsyncMeshTransport,
    Connectors,
    MeshTransport,
    UnknownHostPolicy,
)
from .httpx._sync import check_policy
from .local_reply import check_local_replies
from .resilience.endpoint_breaker import EndpointBreakers
from .security import CertificateProviders
from .telemetry import Telemetry

if TYPE_CHECKING:
    import grpc

    from .admin import AdminServer
    from .grpc import MeshAioChannel, MeshChannel

#: httpx.Client keywords that configure its own transport: they also configure the
#: passthrough transport for hosts the mesh does not know (``limits``: each endpoint's pool).
TRANSPORT_KWARGS = ("verify", "cert", "trust_env", "http1", "http2", "limits")


def _workload(node_id: str) -> tuple[str, str]:
    """(workload, namespace) from an istio node id ``sidecar~ip~pod.ns~ns.svc...``."""
    parts = node_id.split("~")
    pod_ns = parts[2].split(".") if len(parts) > 2 else []
    workload = pod_ns[0].rsplit("-", 2)[0] if pod_ns else "unknown"
    return workload, pod_ns[1] if len(pod_ns) > 1 else "unknown"


__all__ = ["Mesh"]


class Mesh:
    """Connects to the control plane named by the bootstrap and routes clients through it.

    ``bootstrap`` is a path, a dict, or None to read ``GRPC_XDS_BOOTSTRAP`` /
    ``GRPC_XDS_BOOTSTRAP_CONFIG``. Use as a context manager, or call ``close()``.
    ``telemetry`` (default: one following the global OpenTelemetry providers) records
    every call; ``unknown_hosts="fail"`` refuses hosts the control plane does not know;
    ``endpoint_breakers`` turns on per-endpoint pybreaker breakers (optionally sharing
    state through Redis, see ``meshlib.resilience.EndpointBreakers``).
    ``local_replies``: what an httpx application gets when the mesh answers a request
    itself (no route, no healthy upstream, overflow, timeouts, connect failures, fault
    aborts: see ``meshlib.local_reply``): ``"envoy"`` (default) the response Envoy
    would send, ``"raise"`` a typed httpx exception carrying ``cluster``, ``reason``
    and ``response_flag``. gRPC callers get status codes either way. After
    ``close()`` every call fails with ``MeshClosedError`` (gRPC: UNAVAILABLE).
    """

    def __init__(
        self,
        bootstrap: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        resolve_timeout: float = 10.0,
        unknown_hosts: UnknownHostPolicy = "passthrough",
        telemetry: Telemetry | None = None,
        endpoint_breakers: EndpointBreakers | None = None,
        local_replies: str = "envoy",
    ) -> None:
        check_policy(unknown_hosts)
        self.local_replies = check_local_replies(local_replies)
        self.bootstrap: Bootstrap = load_bootstrap(bootstrap)
        self.resolve_timeout = resolve_timeout
        self.unknown_hosts = unknown_hosts
        self._client = XdsClient(self.bootstrap)
        workload, namespace = _workload(self.bootstrap.node.id)
        self.telemetry: Telemetry = telemetry or Telemetry(workload=workload, namespace=namespace)
        providers = CertificateProviders(self.bootstrap.certificate_providers)
        self._connectors = Connectors(providers)
        self._tls_bridge: Any = None  # meshlib.grpc's TlsBridge, made by the first channel
        self._providers = providers
        template = self.bootstrap.client_default_listener_resource_name_template
        self._engine = Engine(
            lambda publish: ConfigWatcher(
                self._client, publish, endpoint_breakers=endpoint_breakers
            ),
            lambda authority: template.replace("%s", authority),
        )

    @property
    def snapshot(self) -> Snapshot:
        """The current immutable config snapshot."""
        return self._engine.snapshot

    def httpx_transport(
        self,
        *,
        passthrough: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
        retry_buffer: int = DEFAULT_RETRY_BUFFER,
    ) -> MeshTransport:
        """A transport to pass as ``httpx.Client(transport=...)``: mesh hosts go through
        the mesh (``limits`` per endpoint pool), others to ``passthrough``."""
        return MeshTransport(
            self._engine,
            resolve_timeout=self.resolve_timeout,
            unknown_hosts=self.unknown_hosts,
            passthrough=passthrough,
            telemetry=self.telemetry,
            connectors=self._connectors,
            limits=limits,
            retry_buffer=retry_buffer,
            local_replies=self.local_replies,
        )

    def httpx_client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` whose requests go through the mesh; kwargs go to httpx
        (``verify``, ``http2``, ``limits``... also shape the passthrough transport)."""
        own = {k: kwargs.pop(k) for k in TRANSPORT_KWARGS if k in kwargs}
        transport = self.httpx_transport(
            passthrough=httpx.HTTPTransport(**own), limits=own.get("limits")
        )
        return httpx.Client(transport=transport, **kwargs)

    def grpc_channel(
        self,
        target: str,
        *,
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> MeshChannel:
        """A drop-in ``grpc.Channel`` for ``xds:///host:port`` whose calls go through the mesh."""
        from .grpc import MeshChannel

        return MeshChannel(self._engine, target, **self._grpc_settings(options, credentials))

    def _grpc_settings(
        self, options: Sequence[tuple[str, Any]], credentials: grpc.ChannelCredentials | None
    ) -> dict[str, Any]:
        """What both gRPC channel kinds take from this mesh."""
        return {
            "options": options,
            "credentials": credentials,
            "resolve_timeout": self.resolve_timeout,
            "unknown_hosts": self.unknown_hosts,
            "telemetry": self.telemetry,
            "tls_bridge": self._grpc_tls_bridge(),
        }

    def _grpc_tls_bridge(self) -> Any:
        """The TLS bridge the gRPC channels share (its thread starts on first TLS use)."""
        if self._tls_bridge is None:
            from .grpc._tls_bridge import TlsBridge

            self._tls_bridge = TlsBridge(self._providers)
        return self._tls_bridge

    def grpc_aio_channel(
        self,
        target: str,
        *,
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> MeshAioChannel:
        """A drop-in ``grpc.aio.Channel`` for ``xds:///host:port`` (use it on one event loop)."""
        from .grpc import MeshAioChannel

        return MeshAioChannel(self._engine, target, **self._grpc_settings(options, credentials))

    def httpx_async_transport(
        self,
        *,
        passthrough: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        retry_buffer: int = DEFAULT_RETRY_BUFFER,
    ) -> AsyncMeshTransport:
        """A transport to pass as ``httpx.AsyncClient(transport=...)``."""
        return AsyncMeshTransport(
            self._engine,
            resolve_timeout=self.resolve_timeout,
            unknown_hosts=self.unknown_hosts,
            passthrough=passthrough,
            telemetry=self.telemetry,
            connectors=self._connectors,
            limits=limits,
            retry_buffer=retry_buffer,
            local_replies=self.local_replies,
        )

    def httpx_async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` whose requests go through the mesh; kwargs go to httpx."""
        own = {k: kwargs.pop(k) for k in TRANSPORT_KWARGS if k in kwargs}
        transport = self.httpx_async_transport(
            passthrough=httpx.AsyncHTTPTransport(**own), limits=own.get("limits")
        )
        return httpx.AsyncClient(transport=transport, **kwargs)

    def admin(self, port: int = 0, **kwargs: Any) -> AdminServer:
        """Start an admin server for this mesh (loopback); stop it or use it as a context."""
        from .admin import AdminServer

        return AdminServer(self, port=port, telemetry=self.telemetry, **kwargs).start()

    @property
    def xds_client(self) -> XdsClient:
        """The xDS client this mesh subscribes through (CSDS dumps, extra watches; the
        inbound side uses it: ``meshlib.integrations.MeshInbound.for_mesh``)."""
        return self._client

    def describe(self) -> str:
        """The client stack, outermost layer first."""
        return self._engine.describe()

    def close(self) -> None:
        """End the xDS stream and its thread."""
        self._engine.close()
        self._client.close()
        if self._tls_bridge is not None:
            self._tls_bridge.close()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
