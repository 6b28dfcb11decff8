"""Valid bootstraps for the strictness tests and the fuzzer, with real certificate files.

``istio_agent`` has the exact shape istio-agent's grpc-agent template writes
(istio/istio pkg/istio-agent/grpcxds/grpc_bootstrap.go; its golden file
pkg/istio-agent/testdata/grpc-bootstrap.json): Envoy's Node marshalled by Go's
encoding/json, hence ``"locality": {}`` and ``"UserAgentVersionType": null``, a
``file_watcher`` provider ``default`` over ``cert-chain.pem``/``key.pem``/``root-cert.pem``
refreshed every 900s, and the inbound listener template. ``every_field`` sets every field
meshlib reads at least once.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import trustme

__all__ = ["CertFiles", "every_field", "istio_agent"]


class CertFiles:
    """cert-chain.pem, key.pem and root-cert.pem of one workload in ``directory``
    (written unless ``write=False``: then only their names)."""

    def __init__(self, directory: Path, *, write: bool = True) -> None:
        self.directory = directory
        self.cert = directory / "cert-chain.pem"
        self.key = directory / "key.pem"
        self.root = directory / "root-cert.pem"
        if not write:
            return
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        leaf = ca.issue_cert("app.default.svc.cluster.local")
        self.cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        self.key.write_bytes(leaf.private_key_pem.bytes())
        self.root.write_bytes(ca.cert_pem.bytes())


def istio_agent(server_uri: str, certs: CertFiles) -> dict[str, Any]:
    """What istio-agent writes to /etc/istio/proxy/grpc-bootstrap.json."""
    return {
        "xds_servers": [
            {
                "server_uri": server_uri,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": "sidecar~127.0.0.1~app-0.default~default.svc.cluster.local",
            "metadata": {
                "GENERATOR": "grpc",
                "INSTANCE_IPS": "127.0.0.1",
                "ISTIO_VERSION": "1.28.0",
                "METADATA_DISCOVERY": "false",
                "NAMESPACE": "default",
                "PILOT_SAN": ["istiod.istio-system.svc"],
                "WORKLOAD_IDENTITY_SOCKET_FILE": "socket",
            },
            "locality": {},
            "UserAgentVersionType": None,
        },
        "certificate_providers": {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": str(certs.cert),
                    "private_key_file": str(certs.key),
                    "ca_certificate_file": str(certs.root),
                    "refresh_interval": "900s",
                },
            }
        },
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    }


def every_field(server_uri: str, certs: CertFiles) -> dict[str, Any]:
    """Every bootstrap field meshlib reads, each set once."""
    boot = copy.deepcopy(istio_agent(server_uri, certs))
    boot["xds_servers"][0]["server_features"] = ["xds_v3", "ignore_resource_deletion"]
    boot["xds_servers"].append(
        {
            "server_uri": "localhost:1",
            "channel_creds": [
                {"type": "made_up", "config": {"anything": 1}},
                {
                    "type": "tls",
                    "config": {
                        "ca_certificate_file": str(certs.root),
                        "certificate_file": str(certs.cert),
                        "private_key_file": str(certs.key),
                        "refresh_interval": "600s",
                    },
                },
            ],
        }
    )
    boot["node"].update(
        cluster="app",
        locality={"region": "r1", "zone": "z1", "sub_zone": "s1"},
    )
    boot["node"]["metadata"]["LABELS"] = {"app": "app", "version": "v1"}
    boot["certificate_providers"]["roots"] = {
        "plugin_name": "file_watcher",
        "config": {"ca_certificate_file": str(certs.root)},
    }
    boot["client_default_listener_resource_name_template"] = "%s"
    boot["authorities"] = {
        "td.example.com": {
            "client_listener_resource_name_template": (
                "xdstp://td.example.com/envoy.config.listener.v3.Listener/%s"
            ),
            "xds_servers": [
                {"server_uri": "10.0.0.9:443", "channel_creds": [{"type": "insecure"}]}
            ],
        },
        "plain": {},
    }
    boot["cluster_manager"] = {"local_cluster_name": "outbound|80||app.default.svc.cluster.local"}
    return boot
