"""Local replies through the public API: ``Mesh``, its sync and async httpx clients, in
the default mode (Envoy's responses, as the differential against Envoy pinned them) and
with ``local_replies="raise"`` (typed httpx exceptions); response flags in the Istio
metrics; what a client gets after ``Mesh.close()``."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import meshlib
from meshlib import Mesh
from tests.meshlib.local_reply_xds import ENVOY, MESH_HOST, LocalReplyWorld
from tests.peers.test_envoy_cluster_differential import wait_for

pytestmark = pytest.mark.timeout(60)
PATHS = list(ENVOY)
#: The exception raise mode gives for each path, and the httpx class it must be.
RAISED: dict[str, tuple[type[Exception], type[Exception]]] = {
    "/nothing": (meshlib.RouteNotFoundError, httpx.ConnectError),
    "/uh": (meshlib.NoHealthyUpstreamError, httpx.ConnectError),
    "/uo": (meshlib.CircuitBreakerOverflowError, httpx.ConnectError),
    "/ut": (meshlib.MeshTimeoutError, httpx.TimeoutException),
    "/uf": (meshlib.UpstreamConnectError, httpx.ConnectError),
    "/urx": (meshlib.UpstreamConnectError, httpx.ConnectError),
    "/uc": (meshlib.UpstreamResetError, httpx.RemoteProtocolError),
    "/do": (meshlib.CircuitBreakerOverflowError, httpx.ConnectError),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReplyWorld]:
    w = LocalReplyWorld(tmp_path_factory.mktemp("local-replies-e2e"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def mesh(world: LocalReplyWorld) -> Iterator[Mesh]:
    with Mesh(world.cp.bootstrap()) as m, m.httpx_client(timeout=10) as client:
        wait_for(lambda: client.get(f"http://{MESH_HOST}/ok").status_code == 200, "the route")
        yield m


@pytest.fixture(scope="module")
def raising(world: LocalReplyWorld) -> Iterator[Mesh]:
    with Mesh(world.cp.bootstrap(), local_replies="raise") as m:
        with m.httpx_client(timeout=10) as client:
            wait_for(lambda: client.get(f"http://{MESH_HOST}/ok").status_code == 200, "route")
        yield m


def envoy_shaped(r: httpx.Response, path: str) -> None:
    status, body, headers, flag = ENVOY[path]
    assert (r.status_code, r.content) == (status, body)
    assert r.headers["content-length"] == str(len(body))
    assert {k: v for k, v in r.headers.items() if k.startswith("x-envoy-")} == headers
    if body:
        assert r.headers["content-type"] == "text/plain"
    assert r.extensions["meshlib.local_reply"].flag == flag


@pytest.mark.parametrize("path", PATHS)
def test_sync_client_gets_envoys_reply(mesh: Mesh, path: str) -> None:
    with mesh.httpx_client(timeout=10) as client:
        envoy_shaped(client.get(f"http://{MESH_HOST}{path}"), path)


def test_async_client_gets_envoys_replies(mesh: Mesh) -> None:
    async def run() -> list[httpx.Response]:
        async with mesh.httpx_async_client(timeout=10) as client:
            return [await client.get(f"http://{MESH_HOST}{p}") for p in PATHS]

    for path, response in zip(PATHS, asyncio.run(run()), strict=True):
        envoy_shaped(response, path)


def test_flags_reach_the_istio_metrics(mesh: Mesh) -> None:
    with mesh.httpx_client(timeout=10) as client:
        for path in PATHS:
            client.get(f"http://{MESH_HOST}{path}")
    text = mesh.telemetry.stats.prometheus()
    for path in PATHS:
        status, _, _, flag = ENVOY[path]
        assert f'response_code="{status}",grpc_response_status="",response_flags="{flag}"' in text


@pytest.mark.parametrize("path", sorted(RAISED))
def test_raise_mode_gives_typed_httpx_errors(raising: Mesh, path: str) -> None:
    kind, base = RAISED[path]
    with raising.httpx_client(timeout=10) as client, pytest.raises(kind) as info:
        client.get(f"http://{MESH_HOST}{path}")
    error = info.value
    assert isinstance(error, base) and isinstance(error, httpx.TransportError)
    assert error.response_flag == ENVOY[path][3]  # type: ignore[attr-defined]
    assert error.reason and error.reply.status == ENVOY[path][0]  # type: ignore[attr-defined]
    if path != "/nothing":
        assert error.cluster  # type: ignore[attr-defined]


def test_raise_mode_async_and_fault_aborts_stay_responses(raising: Mesh) -> None:
    async def run() -> tuple[httpx.Response, BaseException]:
        async with raising.httpx_async_client(timeout=10) as client:
            aborted = await client.get(f"http://{MESH_HOST}/fi")
            try:
                await client.get(f"http://{MESH_HOST}/uo")
            except httpx.TransportError as exc:
                return aborted, exc
            raise AssertionError("no overflow error")

    aborted, error = asyncio.run(run())
    envoy_shaped(aborted, "/fi")  # the configured abort is the application's answer
    assert isinstance(error, meshlib.CircuitBreakerOverflowError)
    assert (error.cluster, error.reason, error.response_flag) == ("full", "overflow", "UO")


def test_unknown_local_replies_value_is_refused(world: LocalReplyWorld) -> None:
    with pytest.raises(ValueError, match="local_replies"):
        Mesh(world.cp.bootstrap(), local_replies="silent")


def test_after_close_every_call_is_mesh_closed(world: LocalReplyWorld, tmp_path: Path) -> None:
    m = Mesh(world.cp.bootstrap())
    client = m.httpx_client(timeout=10)
    wait_for(lambda: client.get(f"http://{MESH_HOST}/ok").status_code == 200, "the route")
    m.close()
    for host in (MESH_HOST, "never-asked.test:80"):  # known, and never resolved
        with pytest.raises(meshlib.MeshClosedError) as info:
            client.get(f"http://{host}/ok")
        assert isinstance(info.value, httpx.TransportError)
        assert info.value.reason == "closed"

    async def run() -> None:
        async with m.httpx_async_client(timeout=10) as aclient:
            await aclient.get(f"http://{MESH_HOST}/ok")

    with pytest.raises(meshlib.MeshClosedError):
        asyncio.run(run())
    client.close()


def test_the_access_log_writes_envoys_line_with_the_flag(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    """Off by default; with ``meshlib.access`` at INFO, one line per call in Envoy's
    default format: the status and the response flag the core decided."""
    with mesh.httpx_client(timeout=10) as client:
        with caplog.at_level(logging.INFO, logger="meshlib"):
            client.get(f"http://{MESH_HOST}/ok")
        assert not [r for r in caplog.records if r.name == "meshlib.access"]  # opt-in
        with caplog.at_level(logging.INFO, logger="meshlib.access"):
            client.get(f"http://{MESH_HOST}/ok", headers={"x-request-id": "req-1"})
            client.get(f"http://{MESH_HOST}/uo")
            client.get(f"http://{MESH_HOST}/nothing")
    lines = [r.getMessage() for r in caplog.records if r.name == "meshlib.access"]
    assert len(lines) == 3, lines
    ok, overflow, no_route = lines
    assert re.fullmatch(
        r'\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /ok HTTP/1\.1" 200 - - - \d+ - '
        rf'"-" "python-httpx/[^"]+" "req-1" "{re.escape(MESH_HOST)}" "127\.0\.0\.1:\d+"',
        ok,
    ), ok
    assert '"GET /uo HTTP/1.1" 503 UO ' in overflow
    assert '"GET /nothing HTTP/1.1" 404 NR ' in no_route
