"""``tls`` channel credentials honour ``refresh_interval``: after the management server
moves to a certificate from another CA and the bootstrap's CA file is rewritten, the next
stream trusts the new file (a channel built once would refuse the server forever)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import trustme

from xds_client import XdsClient
from xds_client import builders as b
from xds_client.resources import CLUSTER
from xds_client.testing import ScriptedAdsServer

from .conftest import Recorder


def tls_server(ca: trustme.CA, port: int = 0) -> ScriptedAdsServer:
    cert = ca.issue_cert("localhost")
    creds = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())]
    )
    return ScriptedAdsServer(port=port, credentials=creds)


def test_rewritten_ca_file_is_trusted_by_the_next_stream(
    tmp_path: Path, make_client: Callable[..., XdsClient]
) -> None:
    first, second = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(first.cert_pem.bytes())
    tls = {
        "type": "tls",
        "config": {"ca_certificate_file": str(ca_file), "refresh_interval": "0.05s"},
    }
    server = tls_server(first).__enter__()
    port = server.port
    try:
        server.set_resources(CLUSTER.type_url, {"c1": b.pack(b.cluster("c1"))})
        bootstrap = server.bootstrap(channel_creds=[tls])
        bootstrap["xds_servers"][0]["server_uri"] = f"localhost:{port}"
        client = make_client(bootstrap)
        w = Recorder()
        client.watch(CLUSTER, "c1", w)
        w.wait("changed")
    finally:
        server.stop()
    ca_file.write_bytes(second.cert_pem.bytes())
    with tls_server(second, port) as server:
        server.set_resources(CLUSTER.type_url, {"c1": b.pack(b.cluster("c1", "v2"))})
        assert w.wait("changed", lambda c: c.eds_service_name == "v2", timeout=20)
