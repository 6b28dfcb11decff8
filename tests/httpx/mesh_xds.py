"""xDS for the httpx adapter tests: one API listener ``<host>:80`` routing path prefixes
to clusters whose transport socket (mTLS) and HTTP protocol the test chooses, served by
the project's control plane over real ADS streams; workload certificates from its CA."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2

from meshlib import Mesh
from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    CertificateAuthority,
    ControlPlane,
    Resources,
    VersionedSnapshotCache,
    WorkloadFiles,
    spiffe_id,
)
from tests.meshlib.xds_builders import api_listener, load_assignment, route_config
from xds_client import builders as b

TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HPO = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HPO_NAME = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SERVER_ID = spiffe_id("default", "reviews")
CLIENT_ID = spiffe_id("default", "productpage")
RETRY_ALL = {
    "retry_on": "connect-failure,reset,5xx",
    "num_retries": 3,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
}


def mtls_socket(sans: Sequence[str] = (SERVER_ID,), instance: str = "default") -> dict[str, Any]:
    """An UpstreamTlsContext as istiod sends proxyless clients for ISTIO_MUTUAL."""
    provider = {"instance_name": instance, "certificate_name": "default"}
    roots = {"instance_name": instance, "certificate_name": "ROOTCA"}
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TLS,
            "common_tls_context": {
                "tls_certificate_provider_instance": provider,
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_subject_alt_names": [{"exact": s} for s in sans],
                        "ca_certificate_provider_instance": roots,
                    },
                },
            },
            "sni": "outbound_.80_._.reviews.default.svc.cluster.local",
        },
    }


HTTP2 = {HPO_NAME: {"@type": HPO, "explicit_http_config": {"http2_protocol_options": {}}}}


@dataclass
class Upstream:
    """A cluster: its endpoint ports and connection settings (Envoy JSON fields)."""

    ports: Sequence[int]
    tls: dict[str, Any] | None = None
    http2: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def build_cluster(name: str, up: Upstream) -> cluster_pb2.Cluster:
    fields: dict[str, Any] = dict(up.extra)
    if up.tls is not None:
        fields["transport_socket"] = up.tls
    if up.http2:
        fields["typed_extension_protocol_options"] = HTTP2
    return b.cluster(name, **fields)


def mesh_resources(
    host: str,
    clusters: dict[str, Upstream],
    routes: Sequence[tuple[str, str, dict[str, Any]]],
) -> Resources:
    """``routes``: (path prefix, cluster, extra RouteAction fields), first match wins."""
    vhost = {
        "name": host,
        "domains": [f"{host}:80", host],
        "routes": [
            {"match": {"prefix": prefix}, "route": {"cluster": c, **extra}}
            for prefix, c, extra in routes
        ],
    }
    return Resources(
        shared={
            LISTENER_TYPE: {f"{host}:80": api_listener(f"{host}:80")},
            ROUTE_TYPE: {"test-routes": route_config([vhost])},
            CLUSTER_TYPE: {n: build_cluster(n, up) for n, up in clusters.items()},
            ENDPOINT_TYPE: {n: load_assignment(n, up.ports) for n, up in clusters.items()},
        }
    )


@dataclass
class Pki:
    ca: CertificateAuthority
    server: WorkloadFiles
    client: WorkloadFiles


def make_pki(base: Path) -> Pki:
    ca = CertificateAuthority(base / "ca")
    return Pki(
        ca,
        ca.write_workload_files(SERVER_ID, base / "server"),
        ca.write_workload_files(CLIENT_ID, base / "client"),
    )


def providers(files: WorkloadFiles, refresh: str = "600s") -> dict[str, Any]:
    """A bootstrap ``certificate_providers`` section (instance ``default``)."""
    config = {
        "certificate_file": str(files.cert_chain),
        "private_key_file": str(files.key),
        "ca_certificate_file": str(files.root_cert),
        "refresh_interval": refresh,
    }
    return {"default": {"plugin_name": "file_watcher", "config": config}}


class Served:
    """The control plane serving test resources; ``push`` replaces them."""

    def __init__(self, cp: ControlPlane, cache: VersionedSnapshotCache) -> None:
        self.cp = cp
        self.cache = cache

    def push(self, res: Resources) -> None:
        self.cache.set_resources(res)

    def bootstrap(self, certificate_providers: dict[str, Any] | None = None) -> dict[str, Any]:
        out = self.cp.bootstrap()
        if certificate_providers is not None:
            out["certificate_providers"] = certificate_providers
        return out

    def mesh(self, certificate_providers: dict[str, Any] | None = None, **kwargs: Any) -> Mesh:
        return Mesh(bootstrap=self.bootstrap(certificate_providers), **kwargs)


@contextmanager
def serving(tmp_path: Path, res: Resources) -> Iterator[Served]:
    empty = tmp_path / "empty-config"
    empty.mkdir(exist_ok=True)
    cache = VersionedSnapshotCache()
    with ControlPlane(empty, cache=cache) as cp:
        cache.set_resources(res)
        yield Served(cp, cache)
