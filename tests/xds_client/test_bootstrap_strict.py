"""Strict bootstrap validation end to end: istio-agent's exact bootstrap runs a mesh; one
typo on purpose per top-level field is refused by ``Mesh(bootstrap=path)`` and through
``GRPC_XDS_BOOTSTRAP`` with the file, the JSON path and the near miss named; certificate
files istio-agent writes late are waited for (bounded), missing ones are an error."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from meshlib import BootstrapError, Mesh
from meshlib.cli import main
from meshlib.controlplane import ControlPlane
from tests.support import UvicornThread, service_objects, write_config
from xds_client import load_bootstrap

from .bootstrap_samples import CertFiles, every_field, istio_agent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return CertFiles(tmp_path / "certs")


@pytest.fixture
def backend() -> Iterator[UvicornThread]:
    app = FastAPI()

    @app.get("/")
    def root() -> dict[str, str]:
        return {"ok": "yes"}

    server = UvicornThread(app).start()
    yield server
    server.stop()


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def test_istio_agents_bootstrap_runs_a_mesh(
    tmp_path: Path, certs: CertFiles, backend: UvicornThread
) -> None:
    write_config(tmp_path / "config", service_objects("echo", 8080, [("127.0.0.1", backend.port)]))
    with ControlPlane(tmp_path / "config") as cp:
        for name, make in (("istio", istio_agent), ("every", every_field)):
            path = write(tmp_path / f"{name}.json", make(cp.address, certs))
            with Mesh(bootstrap=path) as mesh, mesh.httpx_client(timeout=5) as client:
                assert mesh.bootstrap.node.metadata["PILOT_SAN"] == ["istiod.istio-system.svc"]
                r = client.get("http://echo.default.svc.cluster.local:8080/")
                assert r.json() == {"ok": "yes"}
        node = istio_agent(cp.address, certs)["node"]["id"]
        assert cp.acks(node) and not cp.nacks(node)


# One typo per top-level field (and the issue's own examples), with what the error says.
TYPOS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "xds_servers",
        lambda b: b.update(xds_server=b.pop("xds_servers")),
        r"xds_server: unknown field \(did you mean 'xds_servers'\?\)",
    ),
    (
        "xds_servers.channel_creds",
        lambda b: b["xds_servers"][0].update(channel_cred=b["xds_servers"][0].pop("channel_creds")),
        r"xds_servers\[0\]\.channel_cred: unknown field \(did you mean 'channel_creds'\?\)",
    ),
    (
        "node",
        lambda b: b["node"].update(Id=b["node"].pop("id")),
        r"node\.Id: unknown field \(did you mean 'id'\?\)",
    ),
    (
        "certificate_providers",
        lambda b: b["certificate_providers"]["default"].update(plugin_name="file_watchr"),
        r"certificate_providers\.default\.plugin_name: unknown plugin 'file_watchr' "
        r"\(did you mean 'file_watcher'\?\)",
    ),
    (
        "certificate_providers.config",
        lambda b: b["certificate_providers"]["default"]["config"].update(
            certificate_file="/nonexistent/cert-chain.pem"
        ),
        r"certificate_providers\.default\.config\.certificate_file: "
        r"/nonexistent/cert-chain\.pem does not exist",
    ),
    (
        "server_listener_resource_name_template",
        lambda b: b.update(
            server_listener_resource_name_templat=b.pop("server_listener_resource_name_template")
        ),
        r"server_listener_resource_name_templat: unknown field "
        r"\(did you mean 'server_listener_resource_name_template'\?\)",
    ),
    (
        "client_default_listener_resource_name_template",
        lambda b: b.update(client_default_listener_resource_name_tempalte="%s"),
        r"client_default_listener_resource_name_tempalte: unknown field "
        r"\(did you mean 'client_default_listener_resource_name_template'\?\)",
    ),
    (
        "authorities",
        lambda b: b.update(authority=b.pop("authorities")),
        r"authority: unknown field \(did you mean 'authorities'\?\)",
    ),
    (
        "cluster_manager",
        lambda b: b["cluster_manager"].update(
            local_cluster=b["cluster_manager"].pop("local_cluster_name")
        ),
        r"cluster_manager\.local_cluster: unknown field \(did you mean 'local_cluster_name'\?\)",
    ),
]


@pytest.mark.parametrize(("field", "typo", "message"), TYPOS, ids=[t[0] for t in TYPOS])
def test_one_typo_per_top_level_field_is_refused(
    tmp_path: Path,
    certs: CertFiles,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    typo: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    boot = every_field("127.0.0.1:1", certs)
    typo(boot)
    path = write(tmp_path / "bootstrap.json", boot)
    with pytest.raises(BootstrapError, match=rf"^{path}: {message}") as info:
        Mesh(bootstrap=path)
    assert info.value.source == str(path) and info.value.path
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(path))
    with pytest.raises(BootstrapError, match=rf"^{path}: {message}"):
        Mesh()
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP")
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(boot))
    with pytest.raises(BootstrapError, match=rf"^GRPC_XDS_BOOTSTRAP_CONFIG: {message}"):
        Mesh()


def test_a_cli_written_bootstrap_with_a_typo_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"
    argv = ["bootstrap", "--xds", "127.0.0.1:1", "--pod", "web-0", "--cert-dir", str(certs)]
    assert main([*argv, "--ca-dir", str(tmp_path / "ca"), "--init-ca"]) == 0
    boot = json.loads(capsys.readouterr().out)
    path = write(tmp_path / "ok.json", boot)
    assert load_bootstrap(path).node.id == boot["node"]["id"]
    boot["node"]["metadta"] = boot["node"].pop("metadata")
    path = write(tmp_path / "typo.json", boot)
    with pytest.raises(BootstrapError, match=r"node\.metadta: unknown field \(did you mean"):
        Mesh(bootstrap=path)


def test_unknown_fields_can_be_logged_instead(
    tmp_path: Path,
    certs: CertFiles,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    boot = istio_agent("127.0.0.1:1", certs)
    boot["future_field"] = {"x": 1}
    path = write(tmp_path / "b.json", boot)
    with pytest.raises(BootstrapError, match="future_field: unknown field"):
        load_bootstrap(path)
    monkeypatch.setenv("MESHLIB_BOOTSTRAP_UNKNOWN_FIELDS", "warn")
    assert load_bootstrap(path).node.id == boot["node"]["id"]
    assert "future_field: unknown field (ignored)" in caplog.text
    monkeypatch.setenv("MESHLIB_BOOTSTRAP_UNKNOWN_FIELDS", "loud")
    with pytest.raises(BootstrapError, match="MESHLIB_BOOTSTRAP_UNKNOWN_FIELDS='loud'"):
        load_bootstrap(path)
    monkeypatch.delenv("MESHLIB_BOOTSTRAP_UNKNOWN_FIELDS")
    assert load_bootstrap(path, unknown_fields="warn").node.id == boot["node"]["id"]


def test_certificates_written_after_the_bootstrap_are_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """istio-agent writes the bootstrap at once and the certificates once istiod signed."""
    staging = CertFiles(tmp_path / "staging")
    certs = tmp_path / "certs"
    late = CertFiles(certs, write=False)
    path = write(tmp_path / "b.json", istio_agent("127.0.0.1:1", late))

    def agent() -> None:
        time.sleep(0.3)
        staging.directory.rename(certs)

    writer = threading.Thread(target=agent)
    writer.start()
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(path))
    try:
        boot = load_bootstrap()  # GRPC_XDS_BOOTSTRAP: waits up to DEFAULT_ENV_FILE_WAIT
    finally:
        writer.join()
    assert boot.certificate_providers["default"].certificate_file == str(late.cert)
    certs.rename(staging.directory)
    # An explicit path does not wait by default; with wait_for_file it waits that long.
    with pytest.raises(
        BootstrapError, match=r"config\.certificate_file: .* does not exist; 2 more"
    ):
        load_bootstrap(path)
    with pytest.raises(BootstrapError, match=r"does not exist \(waited 0\.2s\)"):
        load_bootstrap(path, wait_for_file=0.2)


def test_tls_channel_credentials_files_must_exist(tmp_path: Path, certs: CertFiles) -> None:
    boot = every_field("127.0.0.1:1", certs)
    boot["xds_servers"][1]["channel_creds"][1]["config"]["ca_certificate_file"] = "/nope/ca.pem"
    with pytest.raises(
        BootstrapError,
        match=r"xds_servers\[1\]\.channel_creds\[1\]\.config\.ca_certificate_file: "
        r"/nope/ca\.pem does not exist",
    ):
        load_bootstrap(boot)
    boot["xds_servers"][1]["channel_creds"][1]["config"]["ca_certificate_file"] = str(tmp_path)
    with pytest.raises(BootstrapError, match=r"is not a regular file"):
        load_bootstrap(boot)


def test_not_utf8_names_the_file(tmp_path: Path, certs: CertFiles) -> None:
    text = json.dumps(istio_agent("127.0.0.1:1", certs)).encode()
    path = tmp_path / "latin1.json"
    path.write_bytes(text.replace(b'"GENERATOR"', b'"G\xe9NERATOR"'))
    with pytest.raises(BootstrapError, match=rf"^{path}: not UTF-8: byte 0xe9 at offset \d+"):
        Mesh(bootstrap=path)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def test_deep_metadata_is_refused_at_load_not_in_mesh(tmp_path: Path, certs: CertFiles) -> None:
    boot = istio_agent("127.0.0.1:1", certs)
    boot["node"]["metadata"]["DEEP"] = nested(120)
    path = write(tmp_path / "deep.json", boot)
    with pytest.raises(
        BootstrapError, match=rf"^{path}: node\.metadata\.DEEP(\.k)+: nested too deeply"
    ) as info:
        Mesh(bootstrap=path)
    assert info.value.path.startswith("node.metadata.DEEP.k")
    # The deepest metadata protobuf carries (33 objects: 99 levels) still starts a mesh.
    boot["node"]["metadata"] = nested(33)
    with Mesh(bootstrap=write(tmp_path / "ok.json", boot)) as mesh:
        assert mesh.bootstrap.node.metadata == nested(33)
    boot["node"]["metadata"] = nested(34)
    with pytest.raises(BootstrapError, match=r"more than 99 protobuf levels"):
        Mesh(bootstrap=write(tmp_path / "34.json", boot))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"xds_servers": [], "xds_servers": []}', r"invalid JSON: duplicate key 'xds_servers'"),
        ('{"xds_servers": NaN}', r"invalid JSON: NaN is not JSON"),
        ("[" * 50_000, r"invalid JSON: nested too deeply"),
        ('{"node": {"id": "\\ud800"}}', r"node\.id: string holds an unpaired surrogate U\+D800"),
        ('{"node": {"metadata": {"n": 1e400}}}', r"node\.metadata\.n: number inf is not a finite"),
    ],
)
def test_what_grpcs_json_reader_refuses(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(BootstrapError, match=rf"^{path}: {message}"):
        load_bootstrap(path)


def test_fields_grpc_defines_but_meshlib_does_not_implement(certs: CertFiles) -> None:
    boot = istio_agent("127.0.0.1:1", certs)
    boot["xds_servers"][0]["call_creds"] = [{"type": "jwt_token_file", "config": {}}]
    with pytest.raises(
        BootstrapError, match=r"xds_servers\[0\]\.call_creds: not supported by meshlib"
    ):
        load_bootstrap(boot)
    boot = istio_agent("127.0.0.1:1", certs)
    config = boot["certificate_providers"]["default"]["config"]
    config["spiffe_bundle_map_file"] = str(certs.root)
    with pytest.raises(BootstrapError, match=r"config\.spiffe_bundle_map_file: not supported"):
        load_bootstrap(boot)


def test_required_fields_and_types(certs: CertFiles) -> None:
    base = istio_agent("127.0.0.1:1", certs)
    cases: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (lambda b: b["xds_servers"][0].pop("channel_creds"), r"channel_creds: is required"),
        (lambda b: b["xds_servers"][0].update(channel_creds=[]), r"must list at least one"),
        (
            lambda b: b["xds_servers"][0]["channel_creds"][0].pop("type"),
            r"\[0\]\.type: is required",
        ),
        (
            lambda b: b["certificate_providers"]["default"].pop("plugin_name"),
            r"plugin_name: is req",
        ),
        (lambda b: b["node"].update(cluster=["x"]), r"node\.cluster: must be a non-empty string"),
        (lambda b: b["node"]["locality"].update(zone=1), r"locality\.zone: must be a non-empty"),
        (lambda b: b["node"].update(metadata="x"), r"node\.metadata: must be a JSON object"),
        (
            lambda b: b.update(server_listener_resource_name_template="xdstp://nope/%s"),
            r"server_listener_resource_name_template: authority 'nope' is not in authorities",
        ),
        (
            lambda b: b["certificate_providers"]["default"]["config"].update(refresh_interval="0s"),
            r"refresh_interval: must be positive",
        ),
    ]
    for mutate, message in cases:
        boot = copy.deepcopy(base)
        mutate(boot)
        with pytest.raises(BootstrapError, match=message):
            load_bootstrap(boot)
