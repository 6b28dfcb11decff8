"""BookInfo's platform objects: Services, ServiceAccounts, Pods and EndpointSlices.

Istio's ``samples/bookinfo/platform/kube/bookinfo.yaml`` has Deployments; a control plane
outside Kubernetes needs the Pods and EndpointSlices Kubernetes would make of them, so
:func:`platform_objects` writes those for the loopback ports the workloads listen on.
Every workload shares 127.0.0.1; its port tells it apart.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLIENTS",
    "DEFAULT_PORTS",
    "NAMESPACE",
    "SERVICES",
    "WORKLOADS",
    "Workload",
    "istio_file",
    "istio_files",
    "platform_objects",
    "read_ports",
    "write_platform",
]

NAMESPACE = "default"
SERVICE_PORT = 9080
SERVICES = ("productpage", "details", "reviews", "ratings")


@dataclass(frozen=True)
class Workload:
    """One pod of BookInfo: its service, version and service account."""

    pod: str
    service: str
    version: str

    @property
    def service_account(self) -> str:
        return f"bookinfo-{self.service}"

    @property
    def labels(self) -> dict[str, str]:
        return {"app": self.service, "version": self.version}


#: Istio's six BookInfo deployments, details with two replicas (for outlier detection).
WORKLOADS: tuple[Workload, ...] = (
    Workload("productpage-v1", "productpage", "v1"),
    Workload("details-v1-0", "details", "v1"),
    Workload("details-v1-1", "details", "v1"),
    Workload("reviews-v1", "reviews", "v1"),
    Workload("reviews-v2", "reviews", "v2"),
    Workload("reviews-v3", "reviews", "v3"),
    Workload("ratings-v1", "ratings", "v1"),
)
#: Mesh clients with no service of their own: pod name -> service account.
CLIENTS = {"istio-ingressgateway": "istio-ingressgateway", "fortio": "fortio"}
#: The ports examples/bookinfo/bookinfo.yaml names (``meshlib demo --serve`` listens on them).
DEFAULT_PORTS: dict[str, int] = {w.pod: 19080 + i for i, w in enumerate(WORKLOADS)}


def platform_objects(ports: Mapping[str, int], address: str = "127.0.0.1") -> list[dict[str, Any]]:
    """The Kubernetes objects of BookInfo with each pod at ``address:ports[pod]``."""
    out: list[dict[str, Any]] = []
    for service in SERVICES:
        labels = {"app": service, "service": service}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "ports": [{"port": SERVICE_PORT, "name": "http"}],
                    "selector": {"app": service},
                },
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": f"bookinfo-{service}", "namespace": NAMESPACE},
            }
        )
    for w in WORKLOADS:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": w.pod, "namespace": NAMESPACE, "labels": w.labels},
                "spec": {
                    "serviceAccountName": w.service_account,
                    "containers": [{"name": w.service, "image": f"meshlib-demo/{w.service}"}],
                },
            }
        )
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": w.pod,
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": w.service, **w.labels},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [address],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": w.pod, "namespace": NAMESPACE},
                    }
                ],
                "ports": [{"name": "http", "port": ports[w.pod], "protocol": "TCP"}],
            }
        )
    return out


HEADER = """\
# BookInfo's Services and ServiceAccounts (as Istio's platform/kube/bookinfo.yaml), and the
# Pods and EndpointSlices Kubernetes would make of its Deployments, every pod on loopback.
# Written by meshlib.demo.write_platform for the ports `meshlib demo --serve` listens on.
"""


def write_platform(
    directory: Path, ports: Mapping[str, int] | None = None, *, with_routing: bool = True
) -> Path:
    """Write ``bookinfo.yaml`` for ``ports`` (default :data:`DEFAULT_PORTS`) into
    ``directory`` and, with ``with_routing``, Istio's first tour files
    (destination-rule-all.yaml, virtual-service-all-v1.yaml)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump_all(platform_objects(ports or DEFAULT_PORTS), sort_keys=False)
    (directory / "bookinfo.yaml").write_text(HEADER + body)
    if with_routing:
        for name in ("destination-rule-all.yaml", "virtual-service-all-v1.yaml"):
            shutil.copyfile(istio_file(name), directory / name)
    return directory


def read_ports(config: Path) -> dict[str, int]:
    """Pod name -> port, from the EndpointSlices of BookInfo's pods under ``config`` (a
    file or folder, as the control plane reads it)."""
    files = sorted(config.rglob("*.y*ml")) if config.is_dir() else [config]
    pods = {w.pod for w in WORKLOADS}
    ports: dict[str, int] = {}
    for file in files:
        for doc in yaml.safe_load_all(file.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "EndpointSlice":
                name = doc.get("metadata", {}).get("name")
                if name in pods and doc.get("ports"):
                    ports[name] = int(doc["ports"][0]["port"])
    missing = sorted(pods - set(ports))
    if missing:
        raise ValueError(f"{config}: no EndpointSlice for BookInfo pods {', '.join(missing)}")
    return ports


def istio_files() -> Path:
    """The folder of the tour's Istio YAML (package data)."""
    return Path(str(resources.files("meshlib.demo") / "bookinfo"))


def istio_file(name: str) -> Path:
    """One of the tour's files, by Istio's file name."""
    path = istio_files() / name
    if not path.is_file():
        raise FileNotFoundError(f"meshlib.demo: no tour file {name!r} in {istio_files()}")
    return path
