"""Bootstrap features beyond the basics: waiting for the file, server URIs, TLS channel
credentials, file_watcher certificate providers, authorities and xdstp:// names."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xds_client import (
    BootstrapError,
    XdsClient,
    canonical_name,
    listener_resource_name,
    load_bootstrap,
    parse_bootstrap,
    parse_xdstp,
    server_listener_resource_name,
)
from xds_client import builders as b
from xds_client.resources import CLUSTER, LISTENER
from xds_client.testing import ScriptedAdsServer

from .conftest import Recorder

INSECURE = [{"type": "insecure"}]
BASE: dict[str, Any] = {
    "xds_servers": [{"server_uri": "127.0.0.1:1", "channel_creds": INSECURE}],
    "node": {"id": "n"},
}


def write_later(path: Path, data: dict[str, Any], delay: float = 0.2) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        path.write_text(json.dumps(data))

    t = threading.Thread(target=run)
    t.start()
    return t


def test_waits_for_a_file_written_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "late.json"
    writer = write_later(path, BASE)
    assert load_bootstrap(path, wait_for_file=10).node.id == "n"
    writer.join()
    # GRPC_XDS_BOOTSTRAP waits by default (istio-agent writes the file after start).
    env_path = tmp_path / "env.json"
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(env_path))
    writer = write_later(env_path, BASE)
    assert load_bootstrap().source == str(env_path)
    writer.join()


def test_gives_up_waiting_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        BootstrapError, match=r"never\.json: bootstrap file does not exist \(waited"
    ):
        load_bootstrap(tmp_path / "never.json", wait_for_file=0.1)


def server(**fields: Any) -> dict[str, Any]:
    entry = {"server_uri": "127.0.0.1:1", "channel_creds": INSECURE, **fields}
    return {**BASE, "xds_servers": [entry]}


def test_server_uris_and_tls_creds() -> None:
    uris = ("unix:///etc/istio/proxy/XDS", "unix:rel.sock", "[::1]:15010", "dns:///cp:1", "cp")
    for uri in uris:  # "cp": gRPC's default port 443
        assert load_bootstrap(server(server_uri=uri)).xds_servers[0].server_uri == uri
    tls = {"type": "tls", "config": {"ca_certificate_file": "/ca.pem"}}
    loaded = parse_bootstrap(server(channel_creds=[tls]), "<test>").xds_servers[0]
    assert loaded.channel_creds_type == "tls"
    assert loaded.channel_creds_config["ca_certificate_file"] == "/ca.pem"
    delta = load_bootstrap(server(server_features=["delta_ads"])).xds_servers[0]
    assert delta.protocol == "delta"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (server(server_uri="a b:1"), r"xds_servers\[0\]\.server_uri: must be host:port"),
        (server(server_uri="cp:99999"), r"xds_servers\[0\]\.server_uri: port 99999 is out of"),
        (server(server_uri="cp:http"), r"xds_servers\[0\]\.server_uri: must be host:port"),
        (
            server(channel_creds=[{"type": "tls", "config": {"ca_certificate_file": 3}}]),
            r"xds_servers\[0\]\.channel_creds\[0\]\.config\.ca_certificate_file: must be a",
        ),
        (
            server(channel_creds=[{"type": "tls", "config": {"certificate_file": "/c"}}]),
            r"channel_creds\[0\]\.config: certificate_file and private_key_file must be given",
        ),
        (
            {**BASE, "certificate_providers": {"d": {"plugin_name": "file_watcher"}}},
            r"certificate_providers\.d\.config: needs certificate_file",
        ),
        (
            {
                **BASE,
                "certificate_providers": {
                    "d": {
                        "plugin_name": "file_watcher",
                        "config": {"ca_certificate_file": "/r", "refresh_interval": "15m"},
                    }
                },
            },
            r"certificate_providers\.d\.config\.refresh_interval: must be a duration",
        ),
        (
            {**BASE, "authorities": {"a": {"client_listener_resource_name_template": "x/%s"}}},
            r"authorities\.a\.client_listener_resource_name_template: must start with 'xdstp://a/'",
        ),
        (
            {**BASE, "client_default_listener_resource_name_template": "xdstp://b/L/%s"},
            r"client_default_listener_resource_name_template: authority 'b' is not in",
        ),
        (
            {**BASE, "authorities": {"a": {"xds_servers": [{}]}}},
            r"authorities\.a\.xds_servers\[0\]\.server_uri",
        ),
    ],
)
def test_errors_name_the_json_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(BootstrapError, match=message):
        load_bootstrap(data)


def test_file_watcher_provider() -> None:
    config = {
        "certificate_file": "/var/lib/istio/data/cert-chain.pem",
        "private_key_file": "/var/lib/istio/data/key.pem",
        "ca_certificate_file": "/var/lib/istio/data/root-cert.pem",
        "refresh_interval": "900s",
    }
    data = {
        **BASE,
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": config}},
    }
    provider = parse_bootstrap(data, "<test>").certificate_providers["default"]
    assert provider.refresh_interval == 900.0
    assert provider.private_key_file.endswith("key.pem")


def test_authorities_and_listener_names() -> None:
    data = {
        **BASE,
        "authorities": {
            "td.example.com": {
                "xds_servers": [{"server_uri": "10.0.0.9:443", "channel_creds": INSECURE}]
            },
            "plain": {},
        },
    }
    boot = load_bootstrap(data)
    assert boot.servers_for("td.example.com")[0].server_uri == "10.0.0.9:443"
    assert boot.servers_for("plain") == boot.xds_servers
    assert listener_resource_name(boot, "reviews:9080") == "reviews:9080"
    assert (
        listener_resource_name(boot, "svc a:80", authority="td.example.com")
        == "xdstp://td.example.com/envoy.config.listener.v3.Listener/svc%20a:80"
    )
    with pytest.raises(ValueError, match="authority 'nope' is not in the bootstrap"):
        listener_resource_name(boot, "x:1", authority="nope")
    name = "xdstp://a/envoy.config.cluster.v3.Cluster/c1?z=1&a=2"
    assert canonical_name(name) == "xdstp://a/envoy.config.cluster.v3.Cluster/c1?a=2&z=1"
    parsed = parse_xdstp(name)
    assert parsed is not None and parsed.authority == "a" and parsed.id == "c1"
    assert parse_xdstp("outbound|80||x") is None
    with pytest.raises(ValueError, match="server_listener_resource_name_template is not set"):
        server_listener_resource_name(boot, "10.0.0.1", 8080)
    istio = load_bootstrap(
        {**BASE, "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"}
    )
    assert (
        server_listener_resource_name(istio, "::1", 8080)
        == "xds.istio.io/grpc/lds/inbound/[::1]:8080"
    )


def test_xdstp_names_go_to_their_authority(
    server: ScriptedAdsServer, make_client: Callable[..., XdsClient]
) -> None:
    name = "xdstp://auth.test/envoy.config.cluster.v3.Cluster/c1?b=2&a=1"
    canonical = canonical_name(name)
    server.set_resources(CLUSTER.type_url, {canonical: b.pack(b.cluster(canonical))})
    data = {
        "xds_servers": [{"server_uri": "127.0.0.1:1", "channel_creds": INSECURE}],  # no one
        "node": {"id": "n"},
        "authorities": {
            "auth.test": {
                "xds_servers": [{"server_uri": server.address, "channel_creds": INSECURE}]
            }
        },
    }
    client = make_client(data)
    w = Recorder()
    client.watch(CLUSTER, name, w)
    assert w.wait("changed").name == canonical
    with pytest.raises(ValueError, match="authority 'other' is not in the bootstrap"):
        client.watch(CLUSTER, "xdstp://other/envoy.config.cluster.v3.Cluster/c", w)
    with pytest.raises(ValueError, match="resource type in the name must be"):
        client.watch(LISTENER, name, w)


def test_unix_socket_and_tls_servers(tmp_path: Path, make_client: Callable[..., XdsClient]) -> None:
    import grpc
    import trustme

    sock = tmp_path / "xds.sock"
    with ScriptedAdsServer(unix_socket=str(sock)) as server:
        server.set_resources(CLUSTER.type_url, {"c1": b.pack(b.cluster("c1"))})
        client = make_client(server.bootstrap())
        assert client.bootstrap.xds_servers[0].server_uri == f"unix:{sock}"
        w = Recorder()
        client.watch(CLUSTER, "c1", w)
        w.wait("changed")

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    creds = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())]
    )
    with ScriptedAdsServer(credentials=creds) as server:
        server.set_resources(CLUSTER.type_url, {"c1": b.pack(b.cluster("c1"))})
        tls = {"type": "tls", "config": {"ca_certificate_file": str(tmp_path / "ca.pem")}}
        bootstrap = server.bootstrap(channel_creds=[tls])
        bootstrap["xds_servers"][0]["server_uri"] = f"localhost:{server.port}"
        client = make_client(bootstrap)
        w = Recorder()
        client.watch(CLUSTER, "c1", w)
        w.wait("changed")
        assert server.wait_for(lambda e: e.kind == "ACK").type_url == CLUSTER.type_url
