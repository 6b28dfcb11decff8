"""uvicorn with mesh mTLS: the caller's SPIFFE ID in the ASGI scope.

uvicorn does not implement the ASGI TLS extension. ``MeshH11Protocol`` fills in
``scope["extensions"]["tls"]["meshlib.peer_identity"]`` from the verified client
certificate, where ``MeshMiddleware`` (and ``current_request().peer_identity``) read it::

    uvicorn.Config(app, http=MeshH11Protocol,
                   ssl_context_factory=lambda config, default: mesh_server_context(provider))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from meshlib.security import peer_spiffe_id

__all__ = ["MeshH11Protocol"]


class MeshH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the peer identity of mTLS connections."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        identity = peer_spiffe_id(ssl_object.getpeercert()) if ssl_object is not None else None
        if identity is None:
            return
        app: Callable[..., Awaitable[None]] = self.app

        async def with_identity(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            extensions = scope.setdefault("extensions", {})
            extensions["tls"] = {**extensions.get("tls", {}), "meshlib.peer_identity": identity}
            await app(scope, receive, send)

        self.app = with_identity
