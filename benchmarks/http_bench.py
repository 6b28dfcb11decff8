"""HTTP: plain httpx, meshlib, an Envoy client sidecar, the full sidecar mesh with mTLS.

Every path ends at the same backend (nginx, see :func:`start_backends`), so what differs
is the client side. Rounds are interleaved; ratios are to plain httpx in the same run.

* plain httpx -> backend (the limit)
* meshlib: ``Mesh.httpx_client()`` -> backend, configured by ``meshlib control-plane``
* httpx -> client Envoy -> backend (one sidecar hop)
* httpx -> client Envoy =mTLS=> server Envoy -> backend (the full sidecar mesh)
* meshlib =mTLS=> server Envoy -> backend (a proxyless client in a sidecar mesh: the
  DestinationRule's MUTUAL tls reaches meshlib as the cluster's UpstreamTlsContext)

Sequential and threaded rounds send with sync clients; the async section keeps
:data:`ASYNC_IN_FLIGHT` requests in flight on one event loop (plain httpx.AsyncClient vs
meshlib's AsyncMeshTransport, plaintext and mTLS).

The Envoys run static bootstraps written here (see docs/benchmarks.md for what should move
to the control plane's Envoy output once it exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trustme
import yaml

from meshlib import Mesh

from ._harness import (
    Measurement,
    Row,
    Variant,
    check,
    cpu_seconds,
    measure_interleaved,
    row,
    start_backends,
    start_control_plane,
    start_envoy,
)

__all__ = ["ASYNC_IN_FLIGHT", "CONCURRENCY", "envoy_bootstrap", "mesh_bootstrap", "run"]

_PLAIN = "plain httpx"
_MESHLIB = "meshlib"
_SIDECAR = "httpx + Envoy sidecar"
_FULL_MESH = "sidecar mesh, mTLS (2 Envoys)"
_MESHLIB_MTLS = "meshlib, mTLS"
CONCURRENCY = 8
ASYNC_IN_FLIGHT = 100
_TLS_SERVICE = "bench-mtls.default.svc.cluster.local"
_ENVOY_CONCURRENCY = 2  # istio-proxy's default worker count
_SERVICE = "bench.default.svc.cluster.local"
_SERVICE_PORT = 8080
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _hcm(cluster: str) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": cluster}}
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "bench",
            "route_config": {
                "name": "bench",
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _ROUTER},
                }
            ],
        },
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _tls_socket(kind: str, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": _TLS + kind, **context},
    }


def _common_tls(certs: dict[str, Path], who: str) -> dict[str, Any]:
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(certs[f"{who}.crt"])},
                "private_key": {"filename": str(certs[f"{who}.key"])},
            }
        ],
        "validation_context": {"trusted_ca": {"filename": str(certs["ca.crt"])}},
    }


def envoy_bootstrap(
    upstream_port: int,
    *,
    downstream_tls: dict[str, Any] | None = None,
    upstream_tls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A static Envoy: listener ``proxy`` on a free port -> cluster ``upstream``."""
    chain: dict[str, Any] = {"filters": [_hcm("upstream")]}
    if downstream_tls is not None:
        chain["transport_socket"] = _tls_socket("DownstreamTlsContext", downstream_tls)
    cluster: dict[str, Any] = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(upstream_port)}}]}],
        },
    }
    if upstream_tls is not None:
        cluster["transport_socket"] = _tls_socket("UpstreamTlsContext", upstream_tls)
    return {
        "admin": {"address": _address(0)},
        "static_resources": {
            "listeners": [{"name": "proxy", "address": _address(0), "filter_chains": [chain]}],
            "clusters": [cluster],
        },
    }


def _write_certs(directory: Path) -> dict[str, Path]:
    """A CA and two workload certificates (client and server sidecar) as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    files = {"ca.crt": directory / "ca.crt"}
    ca.cert_pem.write_to_path(str(files["ca.crt"]))
    for who in ("client", "server"):
        leaf = ca.issue_cert(f"{who}.bench.sidecar")
        files[f"{who}.crt"] = directory / f"{who}.crt"
        files[f"{who}.key"] = directory / f"{who}.key"
        leaf.cert_chain_pems[0].write_to_path(str(files[f"{who}.crt"]))
        leaf.private_key_pem.write_to_path(str(files[f"{who}.key"]))
    return files


def _service(name: str, port: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": _SERVICE_PORT}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-0",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        },
    ]


def _mesh_config(
    directory: Path, backend_port: int, mtls_port: int, certs: dict[str, Path]
) -> Path:
    """``bench`` (plaintext to the backend) and ``bench-mtls`` (mTLS to the server Envoy,
    by a DestinationRule with MUTUAL tls and the server's SAN)."""
    directory.mkdir(parents=True, exist_ok=True)
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "bench-mtls", "namespace": "default"},
        "spec": {
            "host": _TLS_SERVICE,
            "trafficPolicy": {
                "tls": {
                    "mode": "MUTUAL",
                    "clientCertificate": str(certs["client.crt"]),
                    "privateKey": str(certs["client.key"]),
                    "caCertificates": str(certs["ca.crt"]),
                    "subjectAltNames": ["server.bench.sidecar"],
                }
            },
        },
    }
    objects = [*_service("bench", backend_port), *_service("bench-mtls", mtls_port), rule]
    (directory / "bench.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return directory


def mesh_bootstrap(address: str) -> dict[str, Any]:
    """A gRPC xDS bootstrap for a client pod in namespace ``default``."""
    return {
        "xds_servers": [
            {
                "server_uri": address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": "sidecar~127.0.0.1~bench-client.default~default.svc.cluster.local",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
        },
    }


def _sender(client: httpx.Client, url: str) -> Callable[[], None]:
    def send() -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: status {response.status_code}: {response.text[:200]}")

    return send


def _variants(stack: contextlib.ExitStack, work: Path) -> tuple[list[Variant], str, Mesh, int]:
    """Start backend, control plane and Envoys; return the variants, the backend kind,
    the mesh and the backend port."""
    backends = start_backends(stack, 1, work / "backend")
    backend = backends.ports[0]
    certs = _write_certs(work / "certs")
    sidecar = start_envoy(stack, "sidecar", envoy_bootstrap(backend), work, _ENVOY_CONCURRENCY)
    server = start_envoy(
        stack,
        "server-sidecar",
        envoy_bootstrap(
            backend,
            downstream_tls={
                "require_client_certificate": True,
                "common_tls_context": _common_tls(certs, "server"),
            },
        ),
        work,
        _ENVOY_CONCURRENCY,
    )
    config = _mesh_config(work / "mesh", backend, server.ports["proxy"], certs)
    address = start_control_plane(stack, config)
    mesh = stack.enter_context(Mesh(bootstrap=mesh_bootstrap(address)))
    client_tls = _common_tls(certs, "client")
    client_tls["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "DNS", "matcher": {"exact": "server.bench.sidecar"}}
    ]
    upstream_tls = {"sni": "server.bench.sidecar", "common_tls_context": client_tls}
    client = start_envoy(
        stack,
        "client-sidecar",
        envoy_bootstrap(server.ports["proxy"], upstream_tls=upstream_tls),
        work,
        _ENVOY_CONCURRENCY,
    )
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    def new_client(**kw: Any) -> httpx.Client:
        return stack.enter_context(httpx.Client(limits=limits, **kw))

    mesh_client = new_client(transport=mesh.httpx_transport())
    variants = [
        Variant(_PLAIN, _sender(new_client(), f"http://127.0.0.1:{backend}/")),
        Variant(_MESHLIB, _sender(mesh_client, f"http://{_SERVICE}:{_SERVICE_PORT}/")),
        Variant(
            _MESHLIB_MTLS,
            _sender(mesh_client, f"http://{_TLS_SERVICE}:{_SERVICE_PORT}/"),
            (server.pid,),
        ),
        Variant(
            _SIDECAR,
            _sender(new_client(), f"http://127.0.0.1:{sidecar.ports['proxy']}/"),
            (sidecar.pid,),
        ),
        Variant(
            _FULL_MESH,
            _sender(new_client(), f"http://127.0.0.1:{client.ports['proxy']}/"),
            (client.pid, server.pid),
        ),
    ]
    return variants, backends.kind, mesh, backend


def _ratio(
    group: str,
    label: str,
    value: float | None,
    minimum: float | None = None,
    note: str | None = None,
) -> Row:
    target, ok = check(value, ">=", minimum, "x") if minimum is not None else (None, None)
    return row(f"{group} throughput: {label}", value, "x", target=target, passed=ok, note=note)


def _mode_rows(mode: str, results: dict[str, Measurement]) -> list[Row]:
    group = f"HTTP {mode}"
    base = results[_PLAIN].throughput
    rows: list[Row] = []
    for name, m in results.items():
        metrics = [
            ("throughput", m.throughput, "req/s"),
            ("vs plain httpx", m.throughput / base, "x"),
            ("p50", m.latency_ms(50), "ms"),
            ("p99", m.latency_ms(99), "ms"),
            ("client CPU / 1k req", m.cpu_ms_per_1k(), "ms"),
            ("of which Envoy", m.cpu_ms_per_1k("proxy"), "ms"),
            ("requests", float(m.requests), ""),
        ]
        for metric, value, unit in metrics:
            name_ = f"{group} {name} {metric}"
            chart = metric in ("throughput", "client CPU / 1k req")
            rows.append(
                row(name_, value, unit, group=group, variant=name, metric=metric, chart=chart)
            )
    mesh = results[_MESHLIB].throughput
    mtls = results[_MESHLIB_MTLS].throughput
    sidecar = results[_SIDECAR].throughput
    full = results[_FULL_MESH].throughput
    before = "measured before any code existed: {}"
    rows += [
        _ratio(group, f"{_MESHLIB} / {_PLAIN}", mesh / base, 0.95),
        _p99_ratio(group, results[_MESHLIB], results[_PLAIN], _MESHLIB),
        _ratio(group, f"{_MESHLIB} / {_SIDECAR}", mesh / sidecar, 1.5),
        _ratio(group, f"{_MESHLIB_MTLS} / {_FULL_MESH}", mtls / full, 1.75),
        _ratio(group, f"{_SIDECAR} / {_PLAIN}", sidecar / base, note=before.format("0.64x")),
        _ratio(group, f"{_FULL_MESH} / {_PLAIN}", full / base, note=before.format("0.54x")),
    ]
    return rows


def _p99_ratio(group: str, m: Measurement, base: Measurement, label: str) -> Row:
    value = m.latency_ms(99) / base.latency_ms(99) if base.latency_ms(99) else None
    target, ok = check(value, "<=", 1.10, "x")
    return row(f"{group} p99: {label} / {_PLAIN}", value, "x", target=target, passed=ok)


AsyncSend = Callable[[], Any]


async def _async_round(send: AsyncSend, seconds: float, in_flight: int) -> Measurement:
    """``in_flight`` tasks sending back to back on this loop for ``seconds``."""
    gc.collect()
    app0, _ = cpu_seconds()
    start = time.perf_counter()
    deadline = start + seconds
    latencies: list[float] = []

    async def worker() -> None:
        clock = time.perf_counter
        now = clock()
        while now < deadline:
            await send()
            end = clock()
            latencies.append(end - now)
            now = end

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    app1, _ = cpu_seconds()
    return Measurement(len(latencies), elapsed, app1 - app0, 0.0, latencies)


def _async_sender(client: httpx.AsyncClient, url: str) -> AsyncSend:
    async def send() -> None:
        response = await client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: status {response.status_code}")

    return send


async def _async_measure(
    mesh: Mesh, backend: int, rounds: int, seconds: float, warmup: float
) -> dict[str, Measurement]:
    """Plain AsyncClient vs meshlib's async transport (plaintext, mTLS), interleaved."""
    limits = httpx.Limits(
        max_connections=ASYNC_IN_FLIGHT, max_keepalive_connections=ASYNC_IN_FLIGHT
    )
    async with (
        httpx.AsyncClient(limits=limits) as plain,
        mesh.httpx_async_client(limits=limits) as meshed,
    ):
        variants = [
            (_PLAIN, _async_sender(plain, f"http://127.0.0.1:{backend}/")),
            (_MESHLIB, _async_sender(meshed, f"http://{_SERVICE}:{_SERVICE_PORT}/")),
            (_MESHLIB_MTLS, _async_sender(meshed, f"http://{_TLS_SERVICE}:{_SERVICE_PORT}/")),
        ]
        for _, send in variants:
            await _async_round(send, warmup, ASYNC_IN_FLIGHT)
        totals = {name: Measurement() for name, _ in variants}
        for r in range(rounds):
            k = r % len(variants)
            for name, send in [*variants[k:], *variants[:k]]:
                m = await _async_round(send, seconds, ASYNC_IN_FLIGHT)
                t = totals[name]
                t.requests += m.requests
                t.seconds += m.seconds
                t.app_cpu += m.app_cpu
                t.latencies += m.latencies
    return totals


def _async_rows(results: dict[str, Measurement]) -> list[Row]:
    group = f"HTTP async ({ASYNC_IN_FLIGHT} in flight)"
    base = results[_PLAIN]
    rows: list[Row] = []
    for name, m in results.items():
        for metric, value, unit in (
            ("throughput", m.throughput, "req/s"),
            ("vs plain httpx", m.throughput / base.throughput, "x"),
            ("p50", m.latency_ms(50), "ms"),
            ("p99", m.latency_ms(99), "ms"),
            ("client CPU / 1k req", m.cpu_ms_per_1k(), "ms"),
            ("requests", float(m.requests), ""),
        ):
            chart = metric in ("throughput", "client CPU / 1k req")
            rows.append(
                row(
                    f"{group} {name} {metric}",
                    value,
                    unit,
                    group=group,
                    variant=name,
                    metric=metric,
                    chart=chart,
                )
            )
    mesh = results[_MESHLIB]
    rows += [
        _ratio(group, f"{_MESHLIB} / {_PLAIN}", mesh.throughput / base.throughput, 0.95),
        _p99_ratio(group, mesh, base, _MESHLIB),
        _ratio(
            group,
            f"{_MESHLIB_MTLS} / {_PLAIN} (plaintext)",
            results[_MESHLIB_MTLS].throughput / base.throughput,
            note="mTLS to the server Envoy, which forwards to the backend",
        ),
    ]
    return rows


def run(quick: bool) -> list[Row]:
    """Measure every HTTP path, sequential and with :data:`CONCURRENCY` threads."""
    rounds, seconds, warmup = (2, 0.15, 0.1) if quick else (5, 1.5, 0.5)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshlib-http-bench-")))
        variants, backend, mesh, port = _variants(stack, work)
        for mode, concurrency in (
            ("sequential", 1),
            (f"concurrent ({CONCURRENCY} threads)", CONCURRENCY),
        ):
            results = measure_interleaved(
                variants,
                rounds=rounds,
                round_seconds=seconds,
                warmup_seconds=warmup,
                concurrency=concurrency,
            )
            rows += _mode_rows(mode, results)
        results = asyncio.run(_async_measure(mesh, port, rounds, seconds, warmup))
        rows += _async_rows(results)
    rows.append(row("HTTP backend", None, "", note=backend))
    return rows
