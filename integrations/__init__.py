"""Inbound adapters: the server side of the mesh, framework by framework.

Framework-specific modules are imported on their own so that using one framework never
imports another: ``meshlib.integrations.asgi`` (FastAPI/Starlette), ``.flask`` and
``.wsgi``, ``.grpc_server``, ``.uvicorn`` (peer identity under mTLS), ``.tls`` (server
contexts), ``.instrumentor`` (zero-code httpx adoption). This package exports the
framework-neutral pieces.
"""

from ._inbound import Authorizer, AuthzDecision, Inbound, InboundCall, InboundRequest
from ._rbac import RbacAuthorizer, compile_rbac
from ._server_listener import MeshInbound, ServingState

__all__ = [
    "Authorizer",
    "AuthzDecision",
    "Inbound",
    "InboundCall",
    "InboundRequest",
    "MeshInbound",
    "RbacAuthorizer",
    "ServingState",
    "compile_rbac",
]
