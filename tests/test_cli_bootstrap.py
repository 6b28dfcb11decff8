"""``meshlib bootstrap`` and the control plane's ``--kubernetes`` / ``--ca-dir`` flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from meshlib.cli import build_bootstrap, main
from meshlib.controlplane import CLUSTER_TYPE, CertificateAuthority, ControlPlane
from meshlib.controlplane.testing import FakeKubernetesAPI
from tests.controlplane.conftest import AdsClient
from tests.support import service_objects, write_config
from xds_client import BootstrapError, load_bootstrap, parse_bootstrap

pytestmark = pytest.mark.timeout(60)


def bootstrap_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["bootstrap", *args]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_bootstrap_is_what_istio_agent_writes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = bootstrap_json(
        capsys,
        "--xds", "127.0.0.1:15010",
        "--pod", "reviews-v1-0",
        "--namespace", "shop",
        "--ip", "10.1.2.3",
        "--label", "app=reviews",
        "--label", "version=v1",
        "--cert-dir", str(tmp_path / "certs"),
    )  # fmt: skip
    assert out["xds_servers"] == [
        {
            "server_uri": "127.0.0.1:15010",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ]
    assert out["node"]["id"] == "sidecar~10.1.2.3~reviews-v1-0.shop~shop.svc.cluster.local"
    assert out["node"]["metadata"] == {
        "GENERATOR": "grpc",
        "NAMESPACE": "shop",
        "INSTANCE_IPS": "10.1.2.3",
        "SERVICE_ACCOUNT": "default",
        "LABELS": {"app": "reviews", "version": "v1"},
    }
    certs = tmp_path / "certs"
    assert out["certificate_providers"] == {
        "default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": str(certs / "cert-chain.pem"),
                "private_key_file": str(certs / "key.pem"),
                "ca_certificate_file": str(certs / "root-cert.pem"),
                "refresh_interval": "900s",
            },
        }
    }
    assert out["server_listener_resource_name_template"] == "xds.istio.io/grpc/lds/inbound/%s"
    # meshlib's own client reads it, and refuses it while the certificates are missing.
    parsed = parse_bootstrap(out, "<cli>")
    assert parsed.certificate_providers["default"].plugin_name == "file_watcher"
    assert parsed.node.id == out["node"]["id"]
    assert not certs.exists()  # no --ca-dir: nothing written
    with pytest.raises(BootstrapError, match=r"config\.certificate_file: .*cert-chain\.pem does"):
        load_bootstrap(out)


def test_node_id_fills_in_namespace_and_ip(capsys: pytest.CaptureFixture[str]) -> None:
    node_id = "sidecar~10.0.0.5~web-0.prod~prod.svc.cluster.local"
    out = bootstrap_json(capsys, "--xds", "cp:15010", "--node-id", node_id)
    assert out["node"]["id"] == node_id
    assert out["node"]["metadata"]["NAMESPACE"] == "prod"
    assert out["node"]["metadata"]["INSTANCE_IPS"] == "10.0.0.5"
    assert out["certificate_providers"]["default"]["config"]["certificate_file"] == (
        "/var/lib/istio/data/cert-chain.pem"
    )
    other = bootstrap_json(capsys, "--xds", "cp:1", "--node-id", "plain-node")
    assert other["node"]["metadata"]["NAMESPACE"] == "default"


def test_ca_dir_writes_the_workload_certificate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    bootstrap_json(
        capsys,
        "--xds", "127.0.0.1:15010",
        "--pod", "web-0",
        "--namespace", "shop",
        "--service-account", "web",
        "--cert-dir", str(certs),
        "--ca-dir", str(tmp_path / "ca"), "--init-ca",
        "--cert-ttl", "600",
    )  # fmt: skip
    ca = CertificateAuthority(tmp_path / "ca")
    assert ca.verify((certs / "cert-chain.pem").read_bytes()) == (
        "spiffe://cluster.local/ns/shop/sa/web"
    )
    assert (certs / "root-cert.pem").read_bytes() == ca.root_pem


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pod", "p"], "--xds"),
        (["--xds", "a:1"], "one of the arguments --node-id --pod is required"),
        (["--xds", "a:1", "--pod", "p", "--node-id", "n"], "not allowed with argument"),
        (
            ["--xds", "a:1", "--pod", "p", "--label", "novalue"],
            "--label: 'novalue' is not KEY=VALUE",
        ),
    ],
)
def test_bootstrap_usage_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bootstrap", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_ca_dir_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "root-cert.pem").write_text("garbage")
    (tmp_path / "root-key.pem").write_text("garbage")
    with pytest.raises(SystemExit) as info:
        main(["bootstrap", "--xds", "a:1", "--pod", "p", "--ca-dir", str(tmp_path)])
    assert info.value.code == 2
    assert "--ca-dir: " in capsys.readouterr().err


def test_control_plane_needs_config_or_kubernetes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["control-plane", "--config", str(tmp_path), "--kubernetes"])
    assert info.value.code == 2
    assert "give one of --config DIR or --kubernetes" in capsys.readouterr().err


GRPC_CLIENT = textwrap.dedent(
    """
    import json, sys, grpc
    with grpc.insecure_channel(sys.argv[1]) as channel:
        echo = channel.unary_unary("/test.Echo/Echo")
        try:
            print(json.dumps({"ok": echo(b"ping", timeout=10).decode()}))
        except grpc.RpcError as err:
            print(json.dumps({"error": f"{err.code()}: {err.details()}"}))
    """
)


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"echo")}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def test_grpcio_xds_client_runs_on_the_written_bootstrap(tmp_path: Path, echo_server: int) -> None:
    config = write_config(
        tmp_path / "config", service_objects("echo", 7070, [("127.0.0.1", echo_server)])
    )
    with ControlPlane(config) as cp:
        path = tmp_path / "bootstrap.json"
        with path.open("w") as out:
            subprocess.run(
                [
                    sys.executable, "-m", "meshlib.cli", "bootstrap",
                    "--xds", cp.address,
                    "--pod", "client-0",
                    "--cert-dir", str(tmp_path / "certs"),
                    "--ca-dir", str(tmp_path / "ca"), "--init-ca",
                ],
                stdout=out,
                check=True,
                timeout=30,
            )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
        env.update(GRPC_XDS_BOOTSTRAP=str(path), GRPC_VERBOSITY="ERROR")
        proc = subprocess.run(
            [sys.executable, "-c", GRPC_CLIENT, "xds:///echo.default.svc.cluster.local:7070"],
            capture_output=True,
            text=True,
            env=env,
            timeout=40,
        )
        assert json.loads(proc.stdout) == {"ok": "echo"}, proc.stderr[-2000:]
        node = json.loads(path.read_text())["node"]["id"]
        assert cp.acks(node) and not cp.nacks(node)


def test_control_plane_serves_a_kubernetes_api_with_a_ca(tmp_path: Path) -> None:
    with FakeKubernetesAPI() as api:
        for obj in service_objects("reviews", 9080, [("127.0.0.1", 19081)]):
            api.apply(obj)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "meshlib.cli", "control-plane",
                "--kubernetes", "--kubeconfig", str(kubeconfig),
                "--port", "0",
                "--ca-dir", str(tmp_path / "ca"), "--init-ca",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("meshlib certificate authority in ")
            line = proc.stdout.readline()
            assert line.startswith("meshlib control plane listening on "), line
            client = AdsClient(line.rsplit(" ", 1)[1].strip(), "cli-k8s-node")
            try:
                client.send(CLUSTER_TYPE)
                resources = client.recv(timeout=15).resources
                names = {cluster_pb2.Cluster.FromString(r.value).name for r in resources}
                assert "outbound|9080||reviews.default.svc.cluster.local" in names
                assert api.count("watch", "Service") >= 1
            finally:
                client.close()
            assert (tmp_path / "ca" / "root-cert.pem").exists()
            proc.terminate()
            _, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_build_bootstrap_needs_an_identity() -> None:
    with pytest.raises(ValueError, match="give node_id or pod"):
        build_bootstrap("a:1")
