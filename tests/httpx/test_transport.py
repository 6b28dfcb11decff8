"""The httpx transports end to end, sync and async: HTTP/1.1 (uvicorn) and HTTP/2
(hypercorn, h2c), streaming both ways, retries on 503 and on reset, timeouts, errors,
pools kept across config pushes. Config comes from the project's control plane."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from meshlib import Mesh
from meshlib.httpx import (
    CircuitBreakerOverflowError,
    MeshConnectError,
    NoHealthyUpstreamError,
)
from tests.httpx.mesh_xds import RETRY_ALL, Served, Upstream, mesh_resources, serving
from tests.httpx.servers import EchoApp, HypercornThread, ResettingServer
from tests.support import UvicornThread

HOST = "app.test"
KINDS = ["sync", "async"]
PROTOCOLS = ["h1", "h2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    h1_app, h2_app = EchoApp("h1"), EchoApp("h2")
    with (
        UvicornThread(h1_app) as h1,
        HypercornThread(h2_app) as h2,
        ResettingServer() as resetting,
    ):
        dead = UvicornThread(EchoApp()).start()
        dead_port = dead.port
        dead.stop()  # nothing listens there any more
        clusters = {
            "h1": Upstream([h1.port]),
            "h2": Upstream([h2.port], http2=True),
            "reset": Upstream([resetting.port, h1.port], extra={"lb_policy": "ROUND_ROBIN"}),
            "dead": Upstream([dead_port]),
            "tiny": Upstream(
                [h1.port],
                extra={"circuit_breakers": {"thresholds": [{"max_requests": 1}]}},
            ),
        }
        routes = [
            ("/h2/", "h2", {"retry_policy": {"retry_on": "5xx", "num_retries": 2}}),
            ("/h2slow/", "h2", {"timeout": "0.3s"}),
            ("/reset/", "reset", {"retry_policy": RETRY_ALL}),
            ("/dead/", "dead", {}),
            ("/tiny/", "tiny", {}),
            ("/slow/", "h1", {"timeout": "0.3s"}),
            ("/", "h1", {"retry_policy": {"retry_on": "5xx", "num_retries": 2}}),
        ]
        res = mesh_resources(HOST, clusters, routes)
        with (
            serving(tmp_path_factory.mktemp("cp"), res) as served,
            served.mesh(local_replies="raise") as mesh,
        ):
            yield {
                "mesh": mesh,
                "served": served,
                "apps": {"h1": h1_app, "h2": h2_app},
                "resetting": resetting,
                "res": res,
                "clusters": clusters,
                "routes": routes,
            }


def send(kind: str, mesh: Mesh, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request through the sync or the async transport, body read."""
    if kind == "sync":
        with mesh.httpx_client(timeout=5) as client:
            r = client.request(method, url, **kwargs)
            r.read()
            return r

    async def go() -> httpx.Response:
        async with mesh.httpx_async_client(timeout=5) as client:
            r = await client.request(method, url, **kwargs)
            await r.aread()
            return r

    return asyncio.run(go())


def prefix(protocol: str) -> str:
    return "/h2" if protocol == "h2" else ""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_protocol_host_and_url_are_kept(kind: str, protocol: str, world: dict[str, Any]) -> None:
    url = f"http://{HOST}{prefix(protocol)}/echo?q=1"
    r = send(kind, world["mesh"], "GET", url, headers={"x-app": "yes"})
    body = r.json()
    assert r.status_code == 200 and body["backend"] == protocol
    assert body["http_version"] == ("2" if protocol == "h2" else "1.1")
    assert body["headers"]["host"] == HOST
    assert body["headers"]["x-app"] == "yes"
    assert str(r.request.url) == url  # the application's URL, not the endpoint's


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retries_on_503(kind: str, protocol: str, world: dict[str, Any]) -> None:
    path = f"{prefix(protocol)}/flaky/{kind}/2"
    r = send(kind, world["mesh"], "GET", f"http://{HOST}{path}")
    assert r.status_code == 200
    assert world["apps"][protocol].hits[path] == 3


@pytest.mark.parametrize("kind", KINDS)
def test_retries_on_reset(kind: str, world: dict[str, Any]) -> None:
    before = world["resetting"].resets
    for i in range(4):  # round robin: every other first try lands on the resetting endpoint
        r = send(kind, world["mesh"], "GET", f"http://{HOST}/reset/{kind}/{i}")
        assert r.status_code == 200 and r.json()["backend"] == "h1"
    assert world["resetting"].resets > before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_route_timeout(kind: str, protocol: str, world: dict[str, Any]) -> None:
    path = "/h2slow/slow/2000" if protocol == "h2" else "/slow/2000"
    with pytest.raises(httpx.TimeoutException):
        send(kind, world["mesh"], "GET", f"http://{HOST}{path}")


def chunks(count: int, size: int) -> Iterator[bytes]:
    for i in range(count):
        yield bytes([65 + i % 26]) * size


async def achunks(count: int, size: int) -> AsyncIterator[bytes]:
    for chunk in chunks(count, size):
        yield chunk


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_streaming_upload_is_replayed_on_retry(
    kind: str, protocol: str, world: dict[str, Any]
) -> None:
    path = f"{prefix(protocol)}/flaky/upload-{kind}/1"
    body = chunks(8, 4096) if kind == "sync" else achunks(8, 4096)
    r = send(kind, world["mesh"], "POST", f"http://{HOST}{path}", content=body)
    assert r.status_code == 200 and r.json()["body_size"] == 8 * 4096
    app = world["apps"][protocol]
    assert app.hits[path] == 2
    assert app.bodies[path] == b"".join(chunks(8, 4096))  # the replay is byte-identical


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_streaming_upload_beyond_the_buffer_is_sent_once(
    protocol: str, world: dict[str, Any]
) -> None:
    path = f"{prefix(protocol)}/flaky/big/1"
    with world["mesh"].httpx_client(timeout=5) as client:
        client._transport._retry_buffer = 10_000  # type: ignore[attr-defined]
        r = client.post(f"http://{HOST}{path}", content=chunks(8, 4096))
    assert r.status_code == 503 and world["apps"][protocol].hits[path] == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_streaming_download(kind: str, protocol: str, world: dict[str, Any]) -> None:
    url = f"http://{HOST}{prefix(protocol)}/stream/200"
    mesh: Mesh = world["mesh"]
    if kind == "sync":
        with mesh.httpx_client(timeout=5) as client, client.stream("GET", url) as r:
            lines = list(r.iter_lines())
    else:

        async def go() -> list[str]:
            async with (
                mesh.httpx_async_client(timeout=5) as client,
                client.stream("GET", url) as r,
            ):
                return [line async for line in r.aiter_lines()]

        lines = asyncio.run(go())
    assert lines == [str(i) for i in range(200)]


@pytest.mark.parametrize("kind", KINDS)
def test_mesh_errors_are_httpx_errors(kind: str, world: dict[str, Any]) -> None:
    with pytest.raises(httpx.ConnectError) as info:
        send(kind, world["mesh"], "GET", f"http://{HOST}/dead/x")
    assert not isinstance(info.value, MeshConnectError)  # the endpoint's own failure
    mesh: Mesh = world["mesh"]
    view = mesh.snapshot.clusters["dead"]
    for state in view.endpoints:
        state.ejected = True  # as outlier detection would
    try:
        with pytest.raises(NoHealthyUpstreamError) as nh:
            send(kind, mesh, "GET", f"http://{HOST}/dead/y")
    finally:
        for state in view.endpoints:
            state.ejected = False
    assert isinstance(nh.value, httpx.TransportError)
    assert nh.value.cluster == "dead" and nh.value.reason == "no_healthy_upstream"


def test_circuit_breaker_overflow_is_an_httpx_error(world: dict[str, Any]) -> None:
    mesh: Mesh = world["mesh"]
    url = f"http://{HOST}/tiny/stream/400"
    with mesh.httpx_client(timeout=5) as client:
        breaker = mesh.snapshot.clusters["tiny"].breaker
        assert breaker is not None
        held = breaker.admit_request()  # one request in flight fills max_requests 1
        try:
            with pytest.raises(CircuitBreakerOverflowError) as info:
                client.get(url)
        finally:
            held.release()
        assert isinstance(info.value, httpx.ConnectError)
        assert info.value.reason == "overflow" and info.value.cluster == "tiny"
        assert client.get(url).status_code == 200


def test_pools_survive_a_config_push(world: dict[str, Any]) -> None:
    served: Served = world["served"]
    mesh: Mesh = world["mesh"]
    with mesh.httpx_client(timeout=5) as client:
        first = client.get(f"http://{HOST}/echo").json()["client_port"]
        version = mesh.snapshot.version
        routes = [("/moved/", "h1", {}), *world["routes"]]
        served.push(mesh_resources(HOST, world["clusters"], routes))
        for _ in range(200):  # bounded wait for the push
            if mesh.snapshot.version != version:
                break
            asyncio.run(asyncio.sleep(0.02))
        assert mesh.snapshot.version != version
        after = client.get(f"http://{HOST}/moved/echo").json()["client_port"]
    assert after == first  # the same pooled connection carried on


def test_unknown_hosts_pass_through_or_fail(world: dict[str, Any]) -> None:
    port = world["clusters"]["h1"].ports[0]
    mesh: Mesh = world["mesh"]
    with mesh.httpx_client(timeout=5) as client:
        assert client.get(f"http://127.0.0.1:{port}/echo").json()["backend"] == "h1"
    strict = Mesh(
        bootstrap=world["served"].bootstrap(), unknown_hosts="fail", local_replies="raise"
    )
    with strict, strict.httpx_client(timeout=5) as client, pytest.raises(MeshConnectError):
        client.get(f"http://127.0.0.1:{port}/echo")
