"""Decoding a cluster's transport socket and HTTP protocol options, and the client
contexts built from them (including files caught mid-rotation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2

from meshlib.httpx import Connectors
from meshlib.security import CertificateProviders, FileWatcherProvider, client_context
from tests.httpx.mesh_xds import (
    HTTP2,
    SERVER_ID,
    Upstream,
    build_cluster,
    make_pki,
    mtls_socket,
)
from xds_client import load_bootstrap
from xds_client.resources import ClusterType, ResourceError


def decode(up: Upstream) -> Any:
    packed = any_pb2.Any()
    packed.Pack(build_cluster("c", up))
    return ClusterType().decode(packed)[1]


def test_istio_mutual_socket_decodes() -> None:
    c = decode(Upstream([1], tls=mtls_socket()))
    assert c.tls.identity_provider.instance_name == "default"
    assert c.tls.validation.ca_provider.instance_name == "default"
    assert [(m.kind, m.value) for m in c.tls.validation.subject_alt_names] == [("exact", SERVER_ID)]
    assert c.tls.sni.startswith("outbound_.80_")
    assert c.upstream_protocol == "http1"


def test_plaintext_and_http2() -> None:
    c = decode(Upstream([1], http2=True))
    assert c.tls is None and c.upstream_protocol == "http2"
    raw = {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
        },
    }
    assert decode(Upstream([1], tls=raw)).tls is None
    auto = {**HTTP2}
    key = next(iter(auto))
    auto[key] = {"@type": HTTP2[key]["@type"], "auto_config": {}}
    assert (
        decode(Upstream([1], extra={"typed_extension_protocol_options": auto})).upstream_protocol
        == "auto"
    )


def test_bad_sockets_are_nacked_with_the_field() -> None:
    bad = mtls_socket()
    bad["typed_config"]["common_tls_context"]["tls_certificate_provider_instance"] = {
        "instance_name": ""
    }
    with pytest.raises(ResourceError, match=r"tls_certificate_provider_instance\.instance_name"):
        decode(Upstream([1], tls=bad))
    odd = {
        "name": "envoy.transport_sockets.alts",
        "typed_config": {"@type": HTTP2[next(iter(HTTP2))]["@type"]},
    }
    with pytest.raises(ResourceError, match="transport_socket: unsupported transport socket"):
        decode(Upstream([1], tls=odd))


def test_transport_socket_matches_only_when_simple() -> None:
    plain = {"name": "envoy.transport_sockets.raw_buffer"}
    simple = [{"name": "all", "match": {}, "transport_socket": mtls_socket()}]
    c = decode(Upstream([1], extra={"transport_socket_matches": simple}))
    assert c.tls is not None and c.tls.identity_provider.instance_name == "default"
    per_endpoint = [
        {"name": "istio", "match": {"tlsMode": "istio"}, "transport_socket": mtls_socket()},
        {"name": "plain", "match": {}, "transport_socket": plain},
    ]
    with pytest.raises(ResourceError, match="transport_socket_matches: per-endpoint"):
        decode(Upstream([1], extra={"transport_socket_matches": per_endpoint}))


def test_connectors_follow_settings_and_report_missing_providers(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    boot = load_bootstrap(
        {
            "xds_servers": [{"server_uri": "127.0.0.1:1", "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "n"},
            "certificate_providers": {
                "default": {
                    "plugin_name": "file_watcher",
                    "config": {
                        "certificate_file": str(pki.client.cert_chain),
                        "private_key_file": str(pki.client.key),
                        "ca_certificate_file": str(pki.client.root_cert),
                    },
                }
            },
        }
    )
    connectors = Connectors(CertificateProviders(boot.certificate_providers))

    class View:
        def __init__(self, name: str, resource: Any) -> None:
            self.name, self.resource = name, resource

    h2tls = decode(Upstream([1], tls=mtls_socket(), http2=True))
    a = connectors.for_cluster(View("a", h2tls))  # type: ignore[arg-type]
    b = connectors.for_cluster(View("b", decode(Upstream([1], tls=mtls_socket(), http2=True))))  # type: ignore[arg-type]
    assert a is b  # equal settings share pools
    assert a.scheme == "https" and a.http2 and not a.http1 and a.error is None
    assert a.ssl_context.current().get_ca_certs()  # type: ignore[attr-defined]
    missing = connectors.for_cluster(
        View("m", decode(Upstream([1], tls=mtls_socket(instance="nope"))))
    )  # type: ignore[arg-type]
    assert missing.error is not None and missing.error.reason == "tls_config"
    assert "'nope'" in str(missing.error) and "m:" in str(missing.error)
    plain = connectors.for_cluster(View("p", decode(Upstream([1]))))  # type: ignore[arg-type]
    assert plain.scheme == "http" and plain.http1 and not plain.http2


def test_files_caught_mid_rotation_keep_the_last_good_context(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    me = FileWatcherProvider(
        certificate_file=pki.client.cert_chain,
        private_key_file=pki.client.key,
        ca_certificate_file=pki.client.root_cert,
        refresh_interval=0.0,
    )
    good = client_context(me, me)
    # a new key beside the old certificate: what a reader sees between the two renames
    newer = pki.ca.issue(SERVER_ID)
    pki.client.key.write_bytes(newer.key_pem)
    assert client_context(me, me) is good
    pki.client.cert_chain.write_bytes(newer.cert_pem)
    assert client_context(me, me) is not good  # the consistent pair loads
