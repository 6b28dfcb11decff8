"""The bootstrap a workload needs, shaped as istio-agent's grpc-agent writes it."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ISTIO_CERT_DIR", "build_bootstrap"]

ISTIO_CERT_DIR = "/var/lib/istio/data"  # where istio-agent writes workload certificates


def build_bootstrap(
    xds: str,
    *,
    node_id: str | None = None,
    pod: str | None = None,
    namespace: str | None = None,
    ip: str | None = None,
    service_account: str = "default",
    labels: dict[str, str] | None = None,
    cert_dir: str | None = ISTIO_CERT_DIR,
    refresh_interval: str = "900s",
) -> dict[str, Any]:
    """A gRPC xDS bootstrap for one workload, shaped as istio-agent's grpc-agent writes it.

    The node id is istio's ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`` (or
    ``node_id``, whose ip and namespace then fill in what is not given); the metadata has
    ``GENERATOR=grpc`` so istiod-style control planes send proxyless config; certificate
    provider ``default`` is a ``file_watcher`` over ``cert_dir``'s istio file names
    (``cert_dir=None``: no certificate provider, for plaintext-only workloads).
    """
    if node_id is None and pod is None:
        raise ValueError("bootstrap: give node_id or pod")
    parts = node_id.split("~") if node_id else []
    if len(parts) == 4 and parts[0] == "sidecar":  # sidecar~IP~POD.NS~NS.svc.cluster.local
        ip = ip or parts[1]
        namespace = namespace or parts[3].split(".", 1)[0]
    ip = ip or "127.0.0.1"
    namespace = namespace or "default"
    node_id = node_id or f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"
    metadata: dict[str, Any] = {
        "GENERATOR": "grpc",
        "NAMESPACE": namespace,
        "INSTANCE_IPS": ip,
        "SERVICE_ACCOUNT": service_account,
    }
    if labels:
        metadata["LABELS"] = dict(labels)
    bootstrap: dict[str, Any] = {
        "xds_servers": [
            {
                "server_uri": xds,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "metadata": metadata, "locality": {}},
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    }
    if cert_dir is not None:
        directory = os.path.abspath(cert_dir)
        bootstrap["certificate_providers"] = {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": os.path.join(directory, "cert-chain.pem"),
                    "private_key_file": os.path.join(directory, "key.pem"),
                    "ca_certificate_file": os.path.join(directory, "root-cert.pem"),
                    "refresh_interval": refresh_interval,
                },
            }
        }
    return bootstrap
