"""Zero-code adoption: route every httpx client through the mesh.

    from meshlib.integrations.instrumentor import MeshInstrumentor
    MeshInstrumentor().instrument()          # or: opentelemetry-instrument python app.py

When a bootstrap is configured (``bootstrap=`` or ``mesh=`` keyword, else
``GRPC_XDS_BOOTSTRAP`` / ``GRPC_XDS_BOOTSTRAP_CONFIG``), every ``httpx.Client`` and
``httpx.AsyncClient`` created afterwards sends mesh hosts through the mesh; other hosts
go to the transport the client would have had (its own ``transport=``, or one built from
its ``verify``/``http2``/``limits``... keywords). Without a bootstrap nothing changes.
``uninstrument()`` restores httpx for clients created after it (clients created while
instrumented keep their mesh transport; a Mesh the instrumentor made is closed then).
The entry point ``opentelemetry_instrumentor: meshlib`` lets ``opentelemetry-instrument``
run it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Collection
from typing import Any

import httpx
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from meshlib import Mesh

__all__ = ["MeshInstrumentor"]

log = logging.getLogger("meshlib.instrumentor")
_TRANSPORT_KWARGS = ("verify", "cert", "trust_env", "http1", "http2", "limits")


def _configured() -> bool:
    return bool(os.environ.get("GRPC_XDS_BOOTSTRAP") or os.environ.get("GRPC_XDS_BOOTSTRAP_CONFIG"))


class MeshInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """An OpenTelemetry-style instrumentor that puts the mesh under every httpx client."""

    _mesh: Mesh | None = None
    _owned = False
    _originals: dict[type, Callable[..., None]] = {}

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("httpx >= 0.27",)

    @property
    def mesh(self) -> Mesh | None:
        """The Mesh clients are routed through (None when not instrumented)."""
        return self._mesh

    def _instrument(self, **kwargs: Any) -> None:
        mesh: Mesh | None = kwargs.get("mesh")
        bootstrap = kwargs.get("bootstrap")
        if mesh is None:
            if bootstrap is None and not _configured():
                log.info("meshlib: no xDS bootstrap configured; httpx is left unchanged")
                return
            mesh = Mesh(bootstrap=bootstrap)
            self._owned = True
        self._mesh = mesh
        self._patch(httpx.Client, mesh.httpx_transport, httpx.HTTPTransport)
        self._patch(httpx.AsyncClient, mesh.httpx_async_transport, httpx.AsyncHTTPTransport)

    def _patch(self, cls: type, mesh_transport: Callable[..., Any], plain: type) -> None:
        original = cls.__init__  # type: ignore[misc]
        type(self)._originals[cls] = original

        @functools.wraps(original)
        def __init__(client: Any, *args: Any, **kwargs: Any) -> None:
            own = {k: kwargs[k] for k in _TRANSPORT_KWARGS if k in kwargs}
            passthrough = kwargs.get("transport") or plain(**own)
            kwargs["transport"] = mesh_transport(passthrough=passthrough, limits=own.get("limits"))
            original(client, *args, **kwargs)

        cls.__init__ = __init__  # type: ignore[misc]

    def _uninstrument(self, **kwargs: Any) -> None:
        originals = type(self)._originals
        for cls, original in list(originals.items()):
            cls.__init__ = original  # type: ignore[misc]
            del originals[cls]
        mesh, self._mesh = self._mesh, None
        if mesh is not None and self._owned:
            mesh.close()
        self._owned = False
