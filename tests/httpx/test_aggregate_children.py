"""An aggregate cluster's children keep their own connection settings: an attempt (and a
mirror copy) that lands on an HTTP/2 child speaks HTTP/2, one on an HTTP/1.1 child
HTTP/1.1, whatever the aggregate itself says. Sync and async, through the public API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from tests.httpx.mesh_xds import CLUSTER_TYPE, Served, Upstream, mesh_resources, serving
from tests.httpx.servers import EchoApp, HypercornThread
from tests.support import UvicornThread

HOST = "agg.test"
AGGREGATE_TYPE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"

pytestmark = pytest.mark.timeout(60)


def aggregate(name: str, children: list[str]) -> Any:
    from envoy.config.cluster.v3 import cluster_pb2

    spec = {
        "name": name,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {"@type": AGGREGATE_TYPE, "clusters": children},
        },
    }
    return json_format.ParseDict(spec, cluster_pb2.Cluster())


class RecordingApp(EchoApp):
    """EchoApp that also records the HTTP version each path arrived with."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.versions: dict[str, list[str]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.versions.setdefault(scope["path"], []).append(scope["http_version"])
        await super().__call__(scope, receive, send)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    h1_app, h2_app = EchoApp("h1"), RecordingApp("h2")
    with UvicornThread(h1_app) as h1, HypercornThread(h2_app) as h2:
        clusters = {
            "h2-child": Upstream([h2.port], http2=True),
            "h1-child": Upstream([h1.port]),
        }
        routes = [
            ("/to-h2/", "agg-h2-first", {}),
            ("/to-h1/", "agg-h1-first", {}),
            (
                "/mirrored/",
                "h1-child",
                {"request_mirror_policies": [{"cluster": "agg-h2-first"}]},
            ),
        ]
        res = mesh_resources(HOST, clusters, routes)
        res.shared[CLUSTER_TYPE]["agg-h2-first"] = aggregate(
            "agg-h2-first", ["h2-child", "h1-child"]
        )
        res.shared[CLUSTER_TYPE]["agg-h1-first"] = aggregate(
            "agg-h1-first", ["h1-child", "h2-child"]
        )
        served: Served
        with serving(tmp_path_factory.mktemp("cp"), res) as served, served.mesh() as mesh:
            yield {"mesh": mesh, "apps": {"h1": h1_app, "h2": h2_app}}


def get(kind: str, mesh: Any, url: str) -> dict[str, Any]:
    if kind == "sync":
        with mesh.httpx_client(timeout=5) as client:
            return client.get(url).json()  # type: ignore[no-any-return]

    async def go() -> dict[str, Any]:
        async with mesh.httpx_async_client(timeout=5) as client:
            return (await client.get(url)).json()  # type: ignore[no-any-return]

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_each_child_is_reached_with_its_own_protocol(kind: str, world: dict[str, Any]) -> None:
    to_h2 = get(kind, world["mesh"], f"http://{HOST}/to-h2/echo")
    assert to_h2["backend"] == "h2" and to_h2["http_version"] == "2"
    to_h1 = get(kind, world["mesh"], f"http://{HOST}/to-h1/echo")
    assert to_h1["backend"] == "h1" and to_h1["http_version"] == "1.1"


def test_a_mirror_to_an_aggregate_uses_the_childs_protocol(world: dict[str, Any]) -> None:
    h2_app: RecordingApp = world["apps"]["h2"]
    path = "/mirrored/echo-mirror"
    before = h2_app.hits[path]
    # The client stays open until the copy lands: closing a transport drops queued copies.
    with world["mesh"].httpx_client(timeout=5) as client:
        body = client.get(f"http://{HOST}{path}").json()
        assert body["backend"] == "h1"
        deadline = time.monotonic() + 10
        while h2_app.hits[path] == before and time.monotonic() < deadline:
            time.sleep(0.02)
    # The shadow copy went to the aggregate's first child, over that child's HTTP/2.
    assert h2_app.hits[path] == before + 1
    assert h2_app.versions[path][-1] == "2"
