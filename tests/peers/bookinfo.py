"""BookInfo, Istio's sample application, as a meshlib control-plane config.

``bookinfo_config/`` holds the Services, DestinationRules and VirtualServices; the endpoints
depend on where the workloads listen, so :func:`write_config` copies the config and
adds one EndpointSlice per workload (labelled ``app`` and ``version``, as the
subsets select) on the ports given::

    write_config(tmp / "bookinfo", {"reviews-v1": 40001, "reviews-v2": 40002, ...})
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = ["CONFIG", "WORKLOADS", "endpoint_slices", "write_config"]

CONFIG = Path(__file__).parent / "bookinfo_config"
#: workload name -> (service, version)
WORKLOADS: dict[str, tuple[str, str]] = {
    "productpage-v1": ("productpage", "v1"),
    "details-v1": ("details", "v1"),
    "reviews-v1": ("reviews", "v1"),
    "reviews-v2": ("reviews", "v2"),
    "reviews-v3": ("reviews", "v3"),
    "ratings-v1": ("ratings", "v1"),
}


def endpoint_slices(
    ports: Mapping[str, int], address: str = "127.0.0.1"
) -> list[dict[str, object]]:
    """One EndpointSlice per workload in ``ports`` (workload name -> port)."""
    out: list[dict[str, object]] = []
    for workload, port in sorted(ports.items()):
        service, version = WORKLOADS[workload]
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": workload,
                    "namespace": "default",
                    "labels": {
                        "kubernetes.io/service-name": service,
                        "app": service,
                        "version": version,
                    },
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [address],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": workload, "namespace": "default"},
                    }
                ],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            }
        )
    return out


def write_config(directory: Path, ports: Mapping[str, int], address: str = "127.0.0.1") -> Path:
    """Copy ``bookinfo_config/`` to ``directory`` and add ``endpoints.yaml`` for ``ports``."""
    directory.mkdir(parents=True, exist_ok=True)
    for file in sorted(CONFIG.glob("*.yaml")):
        shutil.copy(file, directory / file.name)
    (directory / "endpoints.yaml").write_text(
        yaml.safe_dump_all(endpoint_slices(ports, address), sort_keys=False)
    )
    return directory
