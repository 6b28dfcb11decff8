"""End to end through httpx (sync and async transports): the project's control plane
serves hand-built xDS resources; real uvicorn backends on 127.0.0.1 count their hits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib import Mesh, MeshConnectError
from tests.meshlib.xds_builders import (
    Backend,
    api_listener,
    mesh_for,
    resources,
    route_config,
    serving,
)
from tests.support import UvicornThread

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, tuple[Backend, UvicornThread]]]:
    out = {}
    for name in ("main", "shadow"):
        app = Backend(name)
        out[name] = (app, UvicornThread(app).start())
    yield out
    for _, server in out.values():
        server.stop()


def vhost(domain: str, *routes: dict[str, Any]) -> dict[str, Any]:
    return {"name": domain, "domains": [domain, domain.split(":")[0]], "routes": list(routes)}


def fault(spec: dict[str, Any]) -> dict[str, Any]:
    return {"envoy.filters.http.fault": {"@type": FAULT, **spec}}


RETRY = {"retry_on": "5xx", "num_retries": 2, "per_try_timeout": "0.3s"}
ROUTES = [
    vhost(
        "app.test:80",
        {
            "match": {"prefix": "/once"},
            "route": {"cluster": "main", "retry_policy": {"retry_on": "5xx"}},
        },
        {"match": {"prefix": "/flaky"}, "route": {"cluster": "main", "retry_policy": RETRY}},
        {"match": {"prefix": "/slow/noretry"}, "route": {"cluster": "main", "timeout": "0.3s"}},
        {"match": {"prefix": "/slow"}, "route": {"cluster": "main", "retry_policy": RETRY}},
        {
            "match": {"prefix": "/abort"},
            "route": {"cluster": "main"},
            "typed_per_filter_config": fault(
                {"abort": {"http_status": 418, "percentage": {"numerator": 100}}}
            ),
        },
        {
            "match": {"prefix": "/grpc-abort"},
            "route": {"cluster": "main"},
            "typed_per_filter_config": fault(
                {"abort": {"grpc_status": 14, "percentage": {"numerator": 100}}}
            ),
        },
        {
            "match": {"prefix": "/delay"},
            "route": {"cluster": "main"},
            "typed_per_filter_config": fault(
                {"delay": {"header_delay": {}, "percentage": {"numerator": 100}}}
            ),
        },
        {
            "match": {"prefix": "/mirror"},
            "route": {"cluster": "main", "request_mirror_policies": [{"cluster": "shadow"}]},
        },
        {
            "match": {"prefix": "/mirror-down"},
            "route": {"cluster": "main", "request_mirror_policies": [{"cluster": "down"}]},
        },
        {
            "match": {"prefix": "/old/"},
            "request_headers_to_add": [{"header": {"key": "x-route", "value": "old"}}],
            "request_headers_to_remove": ["x-drop"],
            "response_headers_to_add": [{"header": {"key": "x-mesh", "value": "yes"}}],
            "response_headers_to_remove": ["x-backend"],
            "route": {
                "cluster": "main",
                "prefix_rewrite": "/new/",
                "host_rewrite_literal": "rewritten.test",
            },
        },
        {
            "match": {"prefix": "/", "headers": [{"name": "x-version", "exact_match": "2"}]},
            "route": {"cluster": "shadow"},
        },
        {"match": {"prefix": "/"}, "route": {"cluster": "main"}},
    )
]


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, backends: dict[str, tuple[Backend, UvicornThread]]
) -> Iterator[Mesh]:
    down = UvicornThread(Backend("down")).start()
    down_port = down.port
    down.stop()  # a port nothing listens on any more
    res = resources(
        [api_listener("app.test:80")],
        [route_config(ROUTES)],
        {
            "main": [backends["main"][1].port],
            "shadow": [backends["shadow"][1].port],
            "down": [down_port],
        },
    )
    tmp: Path = tmp_path_factory.mktemp("cp")
    with serving(tmp, res) as cp, mesh_for(cp, local_replies="raise") as m:
        yield m


def request(kind: str, mesh: Mesh, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request through the sync or the async transport (same decisions, other waits)."""
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


KINDS = ["sync", "async"]


@pytest.mark.parametrize("kind", KINDS)
def test_retries_on_503_until_success(kind: str, mesh: Mesh, backends: dict[str, Any]) -> None:
    app: Backend = backends["main"][0]
    r = request(kind, mesh, "GET", f"http://app.test/flaky/{kind}-a/2")
    assert r.status_code == 200
    assert app.hits[f"flaky/{kind}-a"] == 3  # two 503s, then the success


@pytest.mark.parametrize("kind", KINDS)
def test_retries_exhausted_return_the_last_response(
    kind: str, mesh: Mesh, backends: dict[str, Any]
) -> None:
    app: Backend = backends["main"][0]
    r = request(kind, mesh, "GET", f"http://app.test/flaky/{kind}-b/5")
    assert r.status_code == 503
    assert app.hits[f"flaky/{kind}-b"] == 3  # num_retries 2: three tries


def test_default_num_retries_is_one(mesh: Mesh, backends: dict[str, Any]) -> None:
    app: Backend = backends["main"][0]
    r = request("sync", mesh, "GET", "http://app.test/once/d/9")
    assert r.status_code == 503 and app.hits["once/d"] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_per_try_timeout_then_retry(kind: str, mesh: Mesh, backends: dict[str, Any]) -> None:
    app: Backend = backends["main"][0]
    r = request(kind, mesh, "GET", f"http://app.test/slow/{kind}-c/2000")
    assert r.status_code == 200
    assert app.hits[f"slow/{kind}-c"] == 2  # the first try timed out after 0.3 s


@pytest.mark.parametrize("kind", KINDS)
def test_route_timeout_without_retry_raises_timeout(kind: str, mesh: Mesh) -> None:
    with pytest.raises(httpx.TimeoutException):
        request(kind, mesh, "GET", f"http://app.test/slow/noretry-{kind}/2000")


def test_streaming_body_is_not_retried(mesh: Mesh, backends: dict[str, Any]) -> None:
    app: Backend = backends["main"][0]

    def body() -> Iterator[bytes]:  # larger than the retry buffer: cannot be replayed
        yield b"x" * 700_000
        yield b"y" * 700_000

    r = request("sync", mesh, "POST", "http://app.test/flaky/stream/3", content=body())
    assert r.status_code == 503 and app.hits["flaky/stream"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_fault_abort_answers_locally(kind: str, mesh: Mesh, backends: dict[str, Any]) -> None:
    app: Backend = backends["main"][0]
    r = request(kind, mesh, "GET", "http://app.test/abort/x")
    assert r.status_code == 418 and r.text == "fault filter abort"
    assert app.hits["abort/x"] == 0
    g = request(
        kind,
        mesh,
        "POST",
        "http://app.test/grpc-abort/x",
        headers={"content-type": "application/grpc"},
    )
    assert (g.status_code, g.headers["grpc-status"]) == (200, "14")


@pytest.mark.parametrize("kind", KINDS)
def test_header_controlled_delay_still_delivers(kind: str, mesh: Mesh) -> None:
    r = request(
        kind, mesh, "GET", "http://app.test/delay/x", headers={"x-envoy-fault-delay-request": "50"}
    )
    assert r.status_code == 200 and r.json()["path"] == "/delay/x"


def test_mirror_sends_a_shadow_copy(mesh: Mesh, backends: dict[str, Any]) -> None:
    shadow: Backend = backends["shadow"][0]
    with mesh.httpx_client(timeout=5) as client:  # open until the shadow arrives
        r = client.post("http://app.test/mirror/sync", content=b"payload")
        assert r.status_code == 200 and r.json()["backend"] == "main"
        deadline = time.monotonic() + 5
        while shadow.hits["mirror/sync"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert shadow.hits["mirror/sync"] == 1
    assert shadow.hosts["mirror/sync"] == "app.test-shadow"  # Envoy's shadow host


async def test_async_mirror_sends_a_shadow_copy(mesh: Mesh, backends: dict[str, Any]) -> None:
    shadow: Backend = backends["shadow"][0]
    async with mesh.httpx_async_client(timeout=5) as client:
        r = await client.post("http://app.test/mirror/async", content=b"payload")
        assert r.status_code == 200 and r.json()["backend"] == "main"
        deadline = time.monotonic() + 5
        while shadow.hits["mirror/async"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert shadow.hits["mirror/async"] == 1
    assert shadow.hosts["mirror/async"] == "app.test-shadow"


def test_mirror_to_a_dead_cluster_never_fails_the_call(mesh: Mesh) -> None:
    for kind in KINDS:
        assert request(kind, mesh, "GET", "http://app.test/mirror-down/x").status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_rewrites_and_header_mutations(kind: str, mesh: Mesh) -> None:
    r = request(
        kind, mesh, "GET", "http://app.test/old/item?q=1", headers={"x-drop": "1", "x-keep": "2"}
    )
    body = r.json()
    assert (body["path"], body["query"]) == ("/new/item", "q=1")
    assert body["headers"]["host"] == "rewritten.test"
    assert body["headers"]["x-route"] == "old" and body["headers"]["x-keep"] == "2"
    assert "x-drop" not in body["headers"]
    assert r.headers["x-mesh"] == "yes" and "x-backend" not in r.headers
    # the application's own request object is untouched
    assert str(r.request.url) == "http://app.test/old/item?q=1"


@pytest.mark.parametrize("kind", KINDS)
def test_header_route(kind: str, mesh: Mesh) -> None:
    assert (
        request(kind, mesh, "GET", "http://app.test/x", headers={"x-version": "2"}).json()[
            "backend"
        ]
        == "shadow"
    )
    assert request(kind, mesh, "GET", "http://app.test/x").json()["backend"] == "main"


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_route_is_a_mesh_error(kind: str, mesh: Mesh) -> None:
    with pytest.raises(MeshConnectError) as err:
        request(kind, mesh, "GET", "http://app.test/x", headers={"host": "other.test"})
    assert err.value.reason == "no_route"


def test_mirror_attempts_are_recorded_on_the_mirror_endpoint(mesh: Mesh) -> None:
    (shadow_ep,) = mesh.snapshot.clusters["shadow"].endpoints
    before = shadow_ep.total_requests
    request("sync", mesh, "GET", "http://app.test/mirror/recorded")
    deadline = time.monotonic() + 5
    while (shadow_ep.total_requests == before or shadow_ep.active_requests) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert shadow_ep.total_requests == before + 1 and shadow_ep.active_requests == 0
