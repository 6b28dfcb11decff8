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
    RouteNotFound,
    TargetNotResolved,
    UpstreamTimeout,
)
from ._httpx_transport import AsyncMeshTransport, MeshConnectError, MeshTimeoutError, MeshTransport
from ._mesh import Mesh
from ._snapshot import Snapshot

__all__ = [
    "AsyncMeshTransport",
    "BootstrapError",
    "Call",
    "CircuitBreakerOpen",
    "Mesh",
    "MeshConnectError",
    "MeshError",
    "MeshTimeoutError",
    "MeshTransport",
    "NoHealthyUpstream",
    "RouteNotFound",
    "Snapshot",
    "TargetNotResolved",
    "UpstreamTimeout",
]
