"""meshlib: a proxyless service mesh for Python.

from meshlib import Mesh

with Mesh() as mesh:                          # bootstrap from GRPC_XDS_BOOTSTRAP
    client = mesh.httpx_client(timeout=5)
    client.get("http://reviews.default.svc.cluster.local:9080/health")
"""

from xds_client import BootstrapError

from ._call import Call
from ._errors import (
    CircuitBreakerOpen,
    MeshClosed,
    MeshError,
    NoHealthyUpstream,
    Overloaded,
    RequestDropped,
    RouteNotFound,
    TargetNotResolved,
    UpstreamTimeout,
)
from ._mesh import Mesh
from ._snapshot import Snapshot
from .httpx import (
    AsyncMeshTransport,
    CircuitBreakerOverflowError,
    MeshClosedError,
    MeshConnectError,
    MeshTimeoutError,
    MeshTransport,
    NoHealthyUpstreamError,
    RouteNotFoundError,
    UpstreamConnectError,
    UpstreamResetError,
    UpstreamTlsConfigError,
)
from .local_reply import LocalReply

__all__ = [
    "AsyncMeshTransport",
    "BootstrapError",
    "Call",
    "CircuitBreakerOpen",
    "CircuitBreakerOverflowError",
    "LocalReply",
    "Mesh",
    "MeshClosed",
    "MeshClosedError",
    "MeshConnectError",
    "MeshError",
    "MeshTimeoutError",
    "MeshTransport",
    "NoHealthyUpstream",
    "NoHealthyUpstreamError",
    "Overloaded",
    "RequestDropped",
    "RouteNotFound",
    "RouteNotFoundError",
    "Snapshot",
    "TargetNotResolved",
    "UpstreamConnectError",
    "UpstreamResetError",
    "UpstreamTimeout",
    "UpstreamTlsConfigError",
]
