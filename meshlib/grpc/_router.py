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
from ._exchange import Metadata, RpcExchange
from ._status import MeshRpcError

if TYPE_CHECKING:
    from ..telemetry import Telemetry

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
    ) -> None:
        if unknown_hosts not in ("passthrough", "fail"):
            raise ValueError("unknown_hosts must be 'passthrough' or 'fail'")
        self.engine = engine
        self.target = target
        self.authority = parse_target(target)
        self.resolve_timeout = resolve_timeout
        self.passthrough = unknown_hosts == "passthrough" and not target.startswith("xds:")
        self.telemetry = telemetry

    def listener(self) -> ListenerView | threading.Event:
        """The resolved listener, or an event to wait on (at most ``resolve_timeout``).
        The engine publishes a listener only once the clusters it routes to have settled."""
        return self.engine.listener(self.authority)

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
