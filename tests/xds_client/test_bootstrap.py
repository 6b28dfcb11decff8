"""Bootstrap loading: the gRPC format, lookup order, and errors that name file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlib import BootstrapError, Mesh
from xds_client import load_bootstrap, parse_bootstrap

GOOD = {
    "xds_servers": [
        {
            "server_uri": "127.0.0.1:15010",
            "channel_creds": [{"type": "made_up"}, {"type": "insecure"}],
            "server_features": ["xds_v3", "ignore_resource_deletion"],
        }
    ],
    "node": {
        "id": "sidecar~10.0.0.1~app.default~default.svc.cluster.local",
        "locality": {"zone": "z1"},
        "metadata": {"GENERATOR": "grpc"},
    },
}
PROVIDERS = {
    "default": {
        "plugin_name": "file_watcher",
        "config": {"certificate_file": "/c.pem", "private_key_file": "/k.pem"},
    }
}


def test_reads_the_grpc_format() -> None:
    b = parse_bootstrap({**GOOD, "certificate_providers": PROVIDERS}, "<test>")
    assert b.xds_servers[0].server_uri == "127.0.0.1:15010"
    assert b.xds_servers[0].channel_creds_type == "insecure"  # first supported type wins
    assert b.xds_servers[0].ignore_resource_deletion
    assert b.node.locality.zone == "z1"
    assert b.node.metadata["GENERATOR"] == "grpc"
    assert b.certificate_providers["default"].plugin_name == "file_watcher"
    assert b.client_default_listener_resource_name_template == "%s"


def test_env_path_wins_over_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(GOOD))
    inline = dict(
        GOOD, xds_servers=[{"server_uri": "other:1", "channel_creds": [{"type": "insecure"}]}]
    )
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(inline))
    assert load_bootstrap().xds_servers[0].server_uri == "other:1"
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(path))
    b = load_bootstrap()
    assert b.xds_servers[0].server_uri == "127.0.0.1:15010"
    assert b.source == str(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(BootstrapError, match=rf"{missing}: bootstrap file does not exist"):
        Mesh(bootstrap=missing)


def test_invalid_json_names_file_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"xds_servers": [\n  {"server_uri": }\n]}')
    with pytest.raises(BootstrapError, match=rf"{bad}: invalid JSON at line 2 column"):
        Mesh(bootstrap=bad)


def test_no_xds_servers_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"node": {"id": "x"}}))
    with pytest.raises(BootstrapError, match=rf"{path}: xds_servers: is required"):
        Mesh(bootstrap=path)
    path.write_text(json.dumps({"xds_servers": []}))
    with pytest.raises(BootstrapError, match=rf"{path}: xds_servers: must list at least one"):
        Mesh(bootstrap=path)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"xds_servers": [{}]}, r"xds_servers\[0\]\.server_uri: is required"),
        (
            {"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "weird"}]}]},
            r"xds_servers\[0\]\.channel_creds: no supported type",
        ),
        ({"node": {"id": 7}}, r"node\.id: must be a non-empty string, got number"),
        ({"node": {"locality": []}}, r"node\.locality: must be a JSON object, got array"),
    ],
)
def test_field_errors_carry_the_json_path(patch: dict[str, object], message: str) -> None:
    with pytest.raises(BootstrapError, match=message):
        load_bootstrap({**GOOD, **patch})


def test_no_bootstrap_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP_CONFIG", raising=False)
    with pytest.raises(BootstrapError, match="GRPC_XDS_BOOTSTRAP"):
        Mesh()
