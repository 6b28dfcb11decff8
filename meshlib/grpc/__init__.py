"""gRPC through the mesh: drop-in ``grpc.Channel`` and ``grpc.aio.Channel`` wrappers.

    with Mesh() as mesh, mesh.grpc_channel("xds:///ratings:9080") as channel:
        stub = RatingsStub(channel)

Each call is routed on ``/package.Service/Method`` and its metadata, passes the fault
filter, and runs the engine's attempt loop (circuit breaking, LB pick over one subchannel
per endpoint, per-try timeouts, retries by gRPC status); outcomes feed outlier detection,
load feedback and telemetry. See docs/grpc.md. The server side is
``meshlib.integrations.grpc_server``.
"""

from ._aio_channel import MeshAioChannel
from ._channel import MeshChannel
from ._router import parse_target
from ._status import HTTP_EQUIVALENT, MeshRpcError, outcome_of

__all__ = [
    "HTTP_EQUIVALENT",
    "MeshAioChannel",
    "MeshChannel",
    "MeshRpcError",
    "outcome_of",
    "parse_target",
]
