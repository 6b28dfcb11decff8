"""HTTP: plain httpx, meshlib, an Envoy client sidecar, the full sidecar mesh with mTLS.

Every path ends at the same backend (nginx, see :func:`start_backends`), so what differs
is the client side. Rounds are interleaved; ratios are to plain httpx in the same run.

* plain httpx -> backend (the limit)
* meshlib: ``Mesh.httpx_client()`` -> backend, configured by ``meshlib control-plane``
* httpx -> client Envoy -> backend (one sidecar hop)
* httpx -> client Envoy =mTLS=> server Envoy -> backend (the full sidecar mesh)
* meshlib with mTLS: not built yet, reported as not yet available

The Envoys run static bootstraps written here (see docs/benchmarks.md for what should move
to the control plane's Envoy output once it exists).
"""

from __future__ import annotations

import contextlib
import tempfile
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
    measure_interleaved,
    row,
    start_backends,
    start_control_plane,
    start_envoy,
)

__all__ = ["CONCURRENCY", "envoy_bootstrap", "mesh_bootstrap", "run"]

_PLAIN = "plain httpx"
_MESHLIB = "meshlib"
_SIDECAR = "httpx + Envoy sidecar"
_FULL_MESH = "sidecar mesh, mTLS (2 Envoys)"
_MESHLIB_MTLS = "meshlib, mTLS"
CONCURRENCY = 8
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


def _mesh_config(directory: Path, backend_port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    objects = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": _SERVICE_PORT}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "bench-0",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "bench"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": backend_port, "protocol": "TCP"}],
        },
    ]
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


def _variants(stack: contextlib.ExitStack, work: Path) -> tuple[list[Variant], str]:
    """Start backend, control plane and Envoys; return the variants and the backend kind."""
    backends = start_backends(stack, 1, work / "backend")
    backend = backends.ports[0]
    address = start_control_plane(stack, _mesh_config(work / "mesh", backend))
    mesh = stack.enter_context(Mesh(bootstrap=mesh_bootstrap(address)))
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
    return variants, backends.kind


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
    missing = "meshlib mTLS for httpx: not yet available"
    rows.append(
        row(
            f"{group} {_MESHLIB_MTLS} throughput",
            None,
            "req/s",
            group=group,
            variant=_MESHLIB_MTLS,
            metric="throughput",
            note=missing,
        )
    )
    mesh = results[_MESHLIB].throughput
    sidecar = results[_SIDECAR].throughput
    full = results[_FULL_MESH].throughput
    before = "measured before any code existed: {}"
    rows += [
        _ratio(group, f"{_MESHLIB} / {_PLAIN}", mesh / base, 0.95),
        _ratio(group, f"{_MESHLIB} / {_SIDECAR}", mesh / sidecar, 1.5),
        _ratio(group, f"{_MESHLIB_MTLS} / {_FULL_MESH}", None, 1.75, missing),
        _ratio(group, f"{_SIDECAR} / {_PLAIN}", sidecar / base, note=before.format("0.64x")),
        _ratio(group, f"{_FULL_MESH} / {_PLAIN}", full / base, note=before.format("0.54x")),
    ]
    return rows


def run(quick: bool) -> list[Row]:
    """Measure every HTTP path, sequential and with :data:`CONCURRENCY` threads."""
    rounds, seconds, warmup = (2, 0.15, 0.1) if quick else (5, 1.5, 0.5)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshlib-http-bench-")))
        variants, backend = _variants(stack, work)
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
    rows.append(row("HTTP backend", None, "", note=backend))
    return rows
