"""gRPC callers keep their status codes for what the mesh answers itself, and the calls
carry the same response flags as HTTP ones (Istio's ``response_flags``); after
``Mesh.close()`` every call is UNAVAILABLE with a clear reason."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from meshlib.grpc import MeshRpcError

from .conftest import CLUSTER, TARGET, MeshFactory
from .support import Backend, grpc_fault, route, service

ECHO = "/test.Echo/Echo"


def flags_of(text: str) -> set[str]:
    """The response_flags label values of the grpc calls in a Prometheus text."""
    return {
        line.split('response_flags="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if "istio_requests_total{" in line and 'request_protocol="grpc"' in line
    }


def test_flags_of_local_answers(backends: list[Backend], mesh_factory: MeshFactory) -> None:
    down = backends[2]
    down.stop()
    routes = [
        route("empty", prefix="/test.Echo/Empty"),
        route("down", prefix="/test.Echo/Down"),
        route(CLUSTER, prefix="/test.Echo/Abort", fault=grpc_fault(abort=8)),
        route(CLUSTER, prefix=ECHO),
    ]
    clusters = {CLUSTER: [backends[0].address], "empty": [], "down": [down.address]}
    mesh, _ = mesh_factory(service(TARGET, routes, clusters))
    codes = {}
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        assert channel.unary_unary(ECHO)(b"x", timeout=5)
        for method in ("Empty", "Down", "Abort", "Nothing"):
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(f"/test.Echo/{method}")(b"x", timeout=5)
            codes[method] = info.value.code()
    assert codes == {
        "Empty": grpc.StatusCode.UNAVAILABLE,  # UH
        "Down": grpc.StatusCode.UNAVAILABLE,  # UF: grpcio's own error stands
        "Abort": grpc.StatusCode.RESOURCE_EXHAUSTED,  # FI, the configured status
        "Nothing": grpc.StatusCode.UNAVAILABLE,  # NR
    }
    assert flags_of(mesh.telemetry.stats.prometheus()) == {"-", "UH", "UF", "FI", "NR"}


def test_after_close_calls_are_unavailable(mesh_factory: MeshFactory, mesh: object) -> None:
    from meshlib import Mesh

    assert isinstance(mesh, Mesh)
    channel = mesh.grpc_channel(f"xds:///{TARGET}")
    assert channel.unary_unary(ECHO)(b"x", timeout=5)
    mesh.close()
    with pytest.raises(MeshRpcError) as info:
        channel.unary_unary(ECHO)(b"x", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert info.value.reason == "closed" and "closed" in info.value.details()
    future = channel.unary_unary(ECHO).future(b"x", timeout=5)
    assert isinstance(future.exception(), MeshRpcError)

    async def aio() -> grpc.StatusCode:
        async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as achannel:
            try:
                await achannel.unary_unary(ECHO)(b"x", timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        raise AssertionError("the call went through a closed mesh")

    assert asyncio.run(aio()) is grpc.StatusCode.UNAVAILABLE
    channel.close()
