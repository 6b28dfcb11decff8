"""examples/kubernetes/: the manifests are valid Kubernetes objects, the bootstrap
istio-agent's grpc-agent template writes works with ``Mesh()``, and ``meshlib
control-plane --kubernetes`` serves BookInfo from the same manifests on an API server."""

from __future__ import annotations

import copy
import json
import queue
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from meshlib import Mesh
from meshlib.controlplane import CertificateAuthority, spiffe_id
from meshlib.controlplane.testing import FakeKubernetesAPI
from meshlib.demo import BookInfo, istio_file
from meshlib.demo._bookinfo import free_ports
from xds_client import XdsClient, load_bootstrap
from xds_client.resources import CLUSTER, ENDPOINTS, LISTENER

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "examples" / "kubernetes"
VERSION = "1.30"
SERVICES = ("details", "ratings", "reviews", "productpage")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove, as kustomize applies bootstrap-patch.yaml."""
    out = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")]
        *parents, last = parts
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last.isdigit() else last
        if op["op"] == "remove":
            del node[key]
        elif op["op"] == "replace":
            assert key in node if isinstance(node, dict) else True, op["path"]
            node[key] = op["value"]
        else:
            assert op["op"] == "add", op
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else key, op["value"])
            else:
                node[key] = op["value"]
    return out


def overlay() -> list[dict[str, Any]]:
    """``kubectl apply -k examples/kubernetes/meshlib-bootstrap/``'s objects."""
    kustomization = yaml.safe_load((K8S / "meshlib-bootstrap" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../bookinfo.yaml"]
    (patch,) = kustomization["patches"]
    assert patch["target"] == {"kind": "Deployment"}
    ops = yaml.safe_load((K8S / "meshlib-bootstrap" / patch["path"]).read_text())
    base = docs(K8S / "bookinfo.yaml")
    return [json_patch(d, ops) if d["kind"] == "Deployment" else d for d in base]


@pytest.mark.parametrize("name", ["bookinfo.yaml", "meshlib-control-plane.yaml", "overlay"])
def test_manifests_validate_against_kubernetes_schemas(name: str) -> None:
    objects = overlay() if name == "overlay" else docs(K8S / name)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, VERSION, strict=True)  # raises on any error


def test_the_validator_refuses_a_misspelled_field() -> None:
    service = copy.deepcopy(docs(K8S / "bookinfo.yaml")[0])
    service["spec"]["prots"] = service["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError, match="prots"):
        kubernetes_validate.validate(service, VERSION, strict=True)


def test_bookinfo_pods_are_proxyless_and_run_the_demo_workloads() -> None:
    deployments = [d for d in docs(K8S / "bookinfo.yaml") if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"}
    for d in deployments:
        template = d["spec"]["template"]
        assert template["metadata"]["annotations"]["inject.istio.io/templates"] == "grpc-agent"
        (container,) = template["spec"]["containers"]
        assert container["args"] == [d["metadata"]["name"]]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["GRPC_XDS_BOOTSTRAP"] == "/etc/istio/proxy/grpc-bootstrap.json"
    for d in overlay():
        if d["kind"] == "Deployment":
            spec = d["spec"]["template"]["spec"]
            assert "annotations" not in d["spec"]["template"]["metadata"]
            assert "meshlib bootstrap --xds meshlib-control-plane.meshlib-system.svc:15010" in (
                spec["initContainers"][0]["command"][2])


def grpc_agent_bootstrap(
    cert_dir: Path, server_uri: str = "unix:///etc/istio/proxy/XDS"
) -> dict[str, Any]:
    """The bootstrap istio-agent writes for ``inject.istio.io/templates: grpc-agent``
    (istio's pkg/istio-agent/grpcxds): its shape and metadata keys."""
    return {
        "xds_servers": [
            {"server_uri": server_uri, "channel_creds": [{"type": "insecure"}],
             "server_features": ["xds_v3"]}
        ],
        "node": {
            "id": "sidecar~127.0.0.1~reviews-v2-6f8d9c-x2kqp.default~default.svc.cluster.local",
            "metadata": {
                "GENERATOR": "grpc",
                "INSTANCE_IPS": "127.0.0.1",
                "ISTIO_VERSION": "1.28.0",
                "METADATA_DISCOVERY": "false",
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
                    "certificate_file": str(cert_dir / "cert-chain.pem"),
                    "private_key_file": str(cert_dir / "key.pem"),
                    "ca_certificate_file": str(cert_dir / "root-cert.pem"),
                    "refresh_interval": "900s",
                },
            }
        },
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    }


def test_mesh_reads_the_grpc_agent_bootstrap(tmp_path: Path) -> None:
    # istio-agent writes the certificates before the app starts: so does this test
    ca = CertificateAuthority(tmp_path / "ca")
    ca.write_workload_files(spiffe_id("default", "bookinfo-reviews"), tmp_path / "certs")
    path = tmp_path / "grpc-bootstrap.json"
    path.write_text(json.dumps(grpc_agent_bootstrap(tmp_path / "certs")))
    boot = load_bootstrap(path)
    assert boot.xds_servers[0].server_uri == "unix:///etc/istio/proxy/XDS"
    assert boot.certificate_providers["default"].plugin_name == "file_watcher"
    assert boot.server_listener_resource_name_template == "xds.istio.io/grpc/lds/inbound/%s"
    with Mesh(bootstrap=path) as mesh:
        assert mesh.telemetry.workload == "reviews-v2" and mesh.telemetry.namespace == "default"


@pytest.mark.timeout(60)
def test_a_grpc_agent_bootstrap_serves_bookinfo_calls_under_strict_mtls(tmp_path: Path) -> None:
    """The same bootstrap, its server_uri pointed at a control plane on loopback and its
    certificate files issued by that control plane's CA: a call through the mesh to
    BookInfo's reviews under STRICT mTLS works."""
    with BookInfo() as bookinfo:
        for name in ("destination-rule-all-mtls.yaml", "virtual-service-all-v1.yaml",
                     "peer-authentication-mesh-strict.yaml"):
            bookinfo.apply(istio_file(name))
        bookinfo.ca.write_workload_files(spiffe_id("default", "bookinfo-reviews"),
                                         tmp_path / "certs")
        boot = grpc_agent_bootstrap(tmp_path / "certs", server_uri=bookinfo.xds or "")
        with Mesh(bootstrap=boot) as mesh, mesh.httpx_client(timeout=10) as client:
            r = client.get("http://ratings:9080/ratings/0")
    assert r.status_code == 200 and r.json()["pod"] == "ratings-v1"


def controllers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Kubernetes' Deployment and EndpointSlice controllers would add: a Pod per
    replica (its IP in 10.1.0.0/24) and an EndpointSlice per Service."""
    out: list[dict[str, Any]] = []
    ips = (f"10.1.0.{i}" for i in range(2, 250))
    ready: dict[str, list[tuple[str, str]]] = {svc: [] for svc in SERVICES}
    for d in objects:
        if d["kind"] != "Deployment":
            continue
        template = d["spec"]["template"]
        for i in range(d["spec"].get("replicas", 1)):
            name, ip = f"{d['metadata']['name']}-{i}", next(ips)
            out.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default",
                             "labels": template["metadata"]["labels"]},
                "spec": {"serviceAccountName": template["spec"]["serviceAccountName"],
                         "containers": template["spec"]["containers"]},
                "status": {"podIP": ip, "phase": "Running"},
            })
            ready[template["metadata"]["labels"]["app"]].append((name, ip))
    for svc, pods in ready.items():
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc}-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [ip], "conditions": {"ready": True},
                 "targetRef": {"kind": "Pod", "name": name, "namespace": "default"}}
                for name, ip in pods
            ],
            "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
        })
    return out


class _Collect:
    def __init__(self) -> None:
        self.seen: queue.Queue[tuple[str, Any]] = queue.Queue()

    def on_resource_changed(self, name: str, resource: Any) -> None:
        self.seen.put((name, resource))

    def on_resource_error(self, name: str, error: Exception) -> None:
        self.seen.put((name, error))

    def on_ambient_error(self, name: str, error: Exception) -> None:
        pass


@pytest.fixture
def api() -> Iterator[FakeKubernetesAPI]:
    with FakeKubernetesAPI() as server:
        yield server


@pytest.mark.timeout(60)
def test_control_plane_kubernetes_serves_the_manifests(
    api: FakeKubernetesAPI, tmp_path: Path
) -> None:
    objects = docs(K8S / "bookinfo.yaml")
    # kubectl apply: what the API server stores (the fake one keeps only the kinds a
    # control plane reads), then the controllers' Pods and EndpointSlices
    kinds = {"Service", "Pod", "EndpointSlice"}
    for obj in objects + controllers(objects):
        if obj["kind"] in kinds:
            api.apply(obj)
    for obj in docs(istio_file("destination-rule-all.yaml")):
        api.apply(obj)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    (port,) = free_ports(1)
    deployment = docs(K8S / "meshlib-control-plane.yaml")[-2]
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "meshlib" and "--kubernetes" in command
    args = [a if a != "0.0.0.0" else "127.0.0.1" for a in command[1:]]
    args[args.index("--port") + 1] = str(port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib", *args, "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []  # INFO lines (what was loaded) may come before "listening on"
        for _ in range(50):
            seen.append(proc.stdout.readline())
            if "listening on" in seen[-1] or not seen[-1]:
                break
        assert "listening on" in seen[-1], "".join(seen)
        boot = load_bootstrap({
            "xds_servers": [{"server_uri": f"127.0.0.1:{port}",
                             "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": "sidecar~10.1.0.99~sleep-0.default~default.svc.cluster.local",
                     "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}},
        })
        client = XdsClient(boot)
        watcher = _Collect()
        details = "outbound|9080|v1|details.default.svc.cluster.local"
        inbound = "xds.istio.io/grpc/lds/inbound/10.1.0.2:9080"
        cancels = [client.watch(CLUSTER, details, watcher),
                   client.watch(ENDPOINTS, details, watcher),
                   client.watch(LISTENER, inbound, watcher)]
        got: dict[str, list[Any]] = {}
        while len(got) < 2 or len(got.get(details, [])) < 2:
            name, resource = watcher.seen.get(timeout=20)
            assert not isinstance(resource, Exception), (name, resource)
            got.setdefault(name, []).append(resource)
        endpoints = next(r for r in got[details] if hasattr(r, "localities"))
        addresses = sorted(e.address for e in endpoints.endpoints())
        assert addresses == ["10.1.0.2:9080", "10.1.0.3:9080"]  # details-v1's two replicas
        assert got[inbound][0].filter_chains
        for cancel in cancels:
            cancel()
        client.close()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert not re.search(r"\bERROR\b", out), out
