"""What both gRPC channels share per target: parsing it, resolving it, and starting the
:class:`~meshlib.grpc._exchange.RpcExchange` of each call (or passing calls to hosts the
mesh does not know straight through). The sync and asyncio channels differ only in how
they wait.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .._engine import Engine
from .._errors import MeshError
from .._snapshot import ListenerView
from ._exchange import Metadata, RpcExchange, Try
from ._status import MeshRpcError

if TYPE_CHECKING:
    from ..telemetry import Telemetry
    from ._tls_bridge import TlsBridge

__all__ = ["Router", "parse_target"]


def parse_target(target: str) -> str:
    """The authority (listener name) of ``xds:///host:port``, ``xds:host:port`` or
    ``host:port``. Raises ValueError naming the target when it has no host."""
    rest = target
    if rest.startswith("xds:"):
        rest = rest[4:]
        if rest.startswith("//"):
            authority_part, _, rest = rest[2:].partition("/")
            if authority_part:
                raise ValueError(
                    f"target {target!r}: xDS authorities ({authority_part!r}) are not supported"
                )
    rest = rest.lstrip("/")
    if not rest or "/" in rest:
        raise ValueError(f"target {target!r}: expected xds:///host:port or host:port")
    return rest


class Router:
    """Routes the calls of one channel (one target) through the engine."""

    def __init__(
        self,
        engine: Engine,
        target: str,
        *,
        resolve_timeout: float,
        unknown_hosts: str,
        telemetry: Telemetry | None = None,
        tls_bridge: TlsBridge | None = None,
    ) -> None:
        if unknown_hosts not in ("passthrough", "fail"):
            raise ValueError("unknown_hosts must be 'passthrough' or 'fail'")
        self.engine = engine
        self.target = target
        self.authority = parse_target(target)
        self.resolve_timeout = resolve_timeout
        self.passthrough = unknown_hosts == "passthrough" and not target.startswith("xds:")
        self.telemetry = telemetry
        self.tls_bridge = tls_bridge
        self._own_bridge: TlsBridge | None = None
        self._lock = threading.Lock()
        # (Snapshot, the listener resolved in it): one read for each call after the first
        self._seen: tuple[object, ListenerView] | None = None

    def via(self, t: Try) -> str | None:
        """What the attempt's subchannel dials instead of the endpoint: the TLS bridge
        when the endpoint's cluster has an UpstreamTlsContext; None for plaintext."""
        return self.via_for(t.attempt.endpoint.cluster, t.address)

    def via_for(self, cluster: str, address: str) -> str | None:
        """:meth:`via` for an endpoint ``address`` of ``cluster``."""
        view = self.engine.snapshot.clusters.get(cluster)
        resource = view.resource if view is not None else None
        if resource is None or resource.tls is None:
            return None
        bridge = self.tls_bridge
        if bridge is None:  # a channel not made by a Mesh: its own bridge, no providers
            from ._tls_bridge import TlsBridge

            with self._lock:
                if self.tls_bridge is None:
                    self.tls_bridge = self._own_bridge = TlsBridge()
                bridge = self.tls_bridge
        return bridge.dial(cluster, resource.tls, address, resource.connect_timeout)

    def close(self) -> None:
        """Stop the TLS bridge this router made for itself (a Mesh's is the Mesh's)."""
        if self._own_bridge is not None:
            self._own_bridge.close()

    def listener(self) -> ListenerView | threading.Event:
        """The resolved listener, or an event to wait on (at most ``resolve_timeout``).
        The engine publishes a listener only once the clusters it routes to have settled;
        a resolved one is looked up once per Snapshot."""
        snapshot = self.engine.snapshot
        seen = self._seen
        if seen is not None and seen[0] is snapshot:
            return seen[1]
        try:
            found = self.engine.listener(self.authority)
        except MeshError as exc:  # the mesh is closed
            raise MeshRpcError(exc) from exc
        if isinstance(found, ListenerView):
            self._seen = (snapshot, found)
        return found

    def resolved(self) -> ListenerView | MeshRpcError:
        try:
            return self.engine.resolved(self.authority)
        except MeshError as exc:
            return MeshRpcError(exc)

    def exchange(
        self,
        view: ListenerView,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
        *,
        replayable: bool = True,
    ) -> RpcExchange | None:
        """The exchange of one call; None: pass it straight to the target (not a mesh
        host). Raises MeshRpcError when no route matches."""
        if view.missing and self.passthrough:
            return None
        try:
            return RpcExchange(
                self.engine,
                view,
                self.authority,
                method,
                timeout,
                metadata,
                self.telemetry,
                replayable=replayable,
            )
        except MeshError as exc:
            raise MeshRpcError(exc) from exc
