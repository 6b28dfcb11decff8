"""EDS ``policy.drop_overloads`` end to end: the project's control plane serves a
ClusterLoadAssignment that drops a fraction of requests; calls go through meshlib's
httpx transports and gRPC channels to real backends. A dropped call fails locally (httpx:
a TransportError with reason ``drop_overload``; gRPC: UNAVAILABLE), is drawn once per
call and never retried, and never reaches a backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from meshlib import Mesh
from meshlib.admin._views import snapshot_samples
from meshlib.controlplane import ENDPOINT_TYPE, ControlPlane
from meshlib.httpx import MeshConnectError
from tests.grpc.support import Backend as GrpcBackend
from tests.grpc.support import StaticCache, retry_policy, route, service
from tests.meshlib.cluster_xds import Backend, api_listener, cla, cluster, control_plane, routes
from tests.support import UvicornThread

RETRY_EVERYTHING = {
    "retry_on": "5xx,reset,connect-failure,refused-stream,retriable-status-codes",
    "num_retries": 3,
    "retry_back_off": {"base_interval": "0.001s"},
}


def drops(*categories: tuple[str, int]) -> dict[str, Any]:
    """ClusterLoadAssignment.policy with (category, percent) drop_overloads."""
    return {
        "drop_overloads": [
            {"category": c, "drop_percentage": {"numerator": pct}} for c, pct in categories
        ]
    }


@pytest.fixture
def http_env(tmp_path: Path) -> Iterator[tuple[ControlPlane, Backend]]:
    backend = Backend(200)
    server = UvicornThread(backend).start()
    backend.port = server.port
    cp, cache = control_plane(tmp_path)
    cp.start()
    half, every = cluster("half"), cluster("every")
    cache.install(
        half,
        every,
        cla("half", [server.port], policy=drops(("lb", 50))),
        cla("every", [server.port], policy=drops(("none", 0), ("throttle", 100))),
        routes(
            "r",
            [
                ("/half", "half", {"retry_policy": RETRY_EVERYTHING}),
                ("/every", "every", {"retry_policy": RETRY_EVERYTHING}),
            ],
        ),
        api_listener("svc.test:80", "r"),
    )
    yield cp, backend
    cp.stop()
    server.stop()


def test_half_of_the_requests_are_dropped_once_and_never_retried(
    http_env: tuple[ControlPlane, Backend],
) -> None:
    cp, backend = http_env
    dropped = 0
    with (
        Mesh(cp.bootstrap(), local_replies="raise") as mesh,
        mesh.httpx_client(timeout=10) as client,
    ):
        for _ in range(400):
            try:
                assert client.get("http://svc.test/half").status_code == 200
            except httpx.TransportError as exc:
                assert isinstance(exc, MeshConnectError)
                assert (exc.reason, exc.cluster) == ("drop_overload", "half")
                dropped += 1
        breaker = mesh.snapshot.clusters["half"].breaker
        assert breaker is not None and breaker.stats.rq_drop_overload == dropped
        (sample,) = [
            x
            for x in snapshot_samples(mesh)
            if x.name == "envoy_cluster_upstream_rq_drop_overload"
            and ("cluster_name", "half") in x.labels
        ]
        assert sample.value == dropped
    # drawn once per call: 50% (mean 200, sd 10); drawn per try under 3 retries it
    # would be 0.5^4 = 6%
    assert 150 <= dropped <= 250, dropped
    assert backend.hits == 400 - dropped  # a dropped call never reaches the backend


def test_a_full_drop_fails_every_async_call_locally(
    http_env: tuple[ControlPlane, Backend],
) -> None:
    cp, backend = http_env

    async def main() -> list[BaseException | httpx.Response]:
        async with mesh.httpx_async_client(timeout=10) as client:
            return [await _try(client.get("http://svc.test/every")) for _ in range(20)]

    with Mesh(cp.bootstrap(), local_replies="raise") as mesh:
        results = asyncio.run(main())
    assert all(isinstance(r, MeshConnectError) and r.reason == "drop_overload" for r in results)
    assert {getattr(r, "mesh_error", None).category for r in results} == {"throttle"}  # type: ignore[union-attr]
    assert backend.hits == 0


async def _try(request: Any) -> BaseException | httpx.Response:
    try:
        response: httpx.Response = await request
        return response
    except httpx.TransportError as exc:
        return exc


# -- gRPC ------------------------------------------------------------------------------
TARGET = "echo:7070"
CLUSTER = "outbound|7070||echo"


@pytest.fixture
def grpc_env(tmp_path: Path) -> Iterator[tuple[Mesh, GrpcBackend]]:
    backend = GrpcBackend("b0")
    policy = retry_policy("unavailable,cancelled,reset,connect-failure", 3)
    res = service(TARGET, [route(CLUSTER, timeout=5.0, retry=policy)], {CLUSTER: [backend.address]})
    res[ENDPOINT_TYPE][CLUSTER].policy.drop_overloads.add(
        category="lb"
    ).drop_percentage.numerator = 50
    (tmp_path / "empty").mkdir()
    cp = ControlPlane(tmp_path / "empty", cache=StaticCache(res)).start()
    mesh = Mesh(bootstrap=cp.bootstrap(), resolve_timeout=5, local_replies="raise")
    yield mesh, backend
    mesh.close()
    cp.stop()
    backend.stop()


def test_grpc_drops_are_unavailable_and_not_retried(grpc_env: tuple[Mesh, GrpcBackend]) -> None:
    mesh, backend = grpc_env
    codes: list[grpc.StatusCode] = []
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary("/test.Echo/Echo")
        for _ in range(200):
            try:
                echo(b"x", timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                assert "drop_overload" in (exc.details() or "")
    dropped = codes.count(grpc.StatusCode.UNAVAILABLE)
    assert dropped + codes.count(grpc.StatusCode.OK) == 200
    assert 65 <= dropped <= 135, dropped  # mean 100, sd 7
    assert backend.logic.calls == 200 - dropped


def test_grpc_aio_drops_are_unavailable(grpc_env: tuple[Mesh, GrpcBackend]) -> None:
    mesh, backend = grpc_env

    async def main() -> list[grpc.StatusCode]:
        out = []
        async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
            echo = channel.unary_unary("/test.Echo/Echo")
            for _ in range(60):
                try:
                    await echo(b"x", timeout=10)
                    out.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:  # AioRpcError or meshlib's MeshRpcError
                    out.append(exc.code())
        return out

    codes = asyncio.run(main())
    dropped = codes.count(grpc.StatusCode.UNAVAILABLE)
    assert 10 <= dropped <= 50 and dropped + codes.count(grpc.StatusCode.OK) == 60, codes
    assert backend.logic.calls == 60 - dropped
