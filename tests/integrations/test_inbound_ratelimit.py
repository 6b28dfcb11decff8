"""The local rate limit filter of a server listener, enforced by the inbound middleware
(FastAPI on a real uvicorn server): under concurrent load from bounded loops the
admitted count is the bucket's size, every other call gets Envoy's 429
``local_rate_limited`` with the filter's headers, and nothing hangs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoy.config.listener.v3 import listener_pb2
from fastapi import FastAPI
from google.protobuf import json_format
from meshlib.integrations._server_listener import MeshInbound
from meshlib.integrations.asgi import MeshMiddleware

from meshlib import Mesh
from tests.meshlib.cluster_xds import control_plane
from tests.meshlib.local_reply_xds import HCM, RATELIMIT, ROUTER
from tests.support import UvicornThread

pytestmark = pytest.mark.timeout(60)
TOKENS = 5
CALLS, WORKERS = 24, 4


def server_listener(port: int) -> listener_pb2.Listener:
    limit = {
        "@type": RATELIMIT,
        "stat_prefix": "http_local_rate_limiter",
        "token_bucket": {"max_tokens": TOKENS, "tokens_per_fill": 1, "fill_interval": "3600s"},
        "filter_enabled": {"default_value": {"numerator": 100}},
        "filter_enforced": {"default_value": {"numerator": 100}},
        "response_headers_to_add": [{"header": {"key": "x-local-rate-limit", "value": "true"}}],
    }
    hcm = {
        "@type": HCM,
        "stat_prefix": "inbound",
        "route_config": {
            "name": "inbound",
            "virtual_hosts": [
                {
                    "name": "in",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "non_forwarding_action": {}}],
                }
            ],
        },
        "http_filters": [
            {"name": "envoy.filters.http.local_ratelimit", "typed_config": limit},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
    }
    doc = {
        "name": f"xds.istio.io/grpc/lds/inbound/127.0.0.1:{port}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    return json_format.ParseDict(doc, listener_pb2.Listener())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    cp, cache = control_plane(tmp_path)
    cp.start()
    cache.install(server_listener(port))
    try:
        with Mesh(cp.bootstrap()) as mesh:
            inbound = MeshInbound.for_mesh(mesh, port, telemetry=mesh.telemetry)
            assert inbound.wait_until_serving().serving
            app = FastAPI()
            hits: list[int] = []

            @app.get("/work")
            async def work() -> dict[str, int]:
                hits.append(1)
                return {"n": len(hits)}

            app.add_middleware(MeshMiddleware, inbound=inbound)
            with UvicornThread(app, port=port) as server:
                yield {"url": f"http://127.0.0.1:{server.port}/work", "hits": hits, "mesh": mesh}
            inbound.close()
    finally:
        cp.stop()


def test_concurrent_calls_beyond_the_bucket_get_429(served: dict[str, Any]) -> None:
    def one(_: int) -> httpx.Response:
        return httpx.get(served["url"], timeout=10)

    with ThreadPoolExecutor(WORKERS) as pool:
        responses = list(pool.map(one, range(CALLS)))  # bounded: CALLS calls in all
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == TOKENS == len(served["hits"])
    assert statuses.count(429) == CALLS - TOKENS
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.content == b"local_rate_limited"
    assert limited.headers["x-local-rate-limit"] == "true"
    assert limited.headers["content-type"] == "text/plain"
    text = served["mesh"].telemetry.inbound.stats.prometheus()
    assert 'response_code="429"' in text and 'response_flags="RL"' in text
