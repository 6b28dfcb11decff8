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
    MeshConnectError,
    MeshTimeoutError,
    MeshTransport,
    NoHealthyUpstreamError,
    UpstreamTlsConfigError,
)

__all__ = [
    "AsyncMeshTransport",
    "BootstrapError",
    "Call",
    "CircuitBreakerOpen",
    "CircuitBreakerOverflowError",
    "Mesh",
    "MeshConnectError",
    "MeshError",
    "MeshTimeoutError",
    "MeshTransport",
    "NoHealthyUpstream",
    "NoHealthyUpstreamError",
    "Overloaded",
    "RequestDropped",
    "RouteNotFound",
    "Snapshot",
    "TargetNotResolved",
    "UpstreamTimeout",
    "UpstreamTlsConfigError",
]
