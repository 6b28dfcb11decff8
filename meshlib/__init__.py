"""meshlib: a proxyless service mesh for Python.

from meshlib import Mesh

with Mesh() as mesh:                          # bootstrap from GRPC_XDS_BOOTSTRAP
    client = mesh.httpx_client(timeout=5)
    client.get("http://reviews.default.svc.cluster.local:9080/health")
"""

from xds_client import BootstrapError

from ._call import Call
from ._errors import MeshError, NoHealthyUpstream, RouteNotFound, TargetNotResolved
from ._httpx_transport import MeshConnectError, MeshTransport
from ._mesh import Mesh
from ._snapshot import Snapshot

__all__ = [
    "BootstrapError",
    "Call",
    "Mesh",
    "MeshConnectError",
    "MeshError",
    "MeshTransport",
    "NoHealthyUpstream",
    "RouteNotFound",
    "Snapshot",
    "TargetNotResolved",
]
