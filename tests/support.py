"""Real servers on loopback for tests: uvicorn apps on ephemeral ports, config writers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import uvicorn
import yaml


class UvicornThread:
    """Serve an ASGI app with a real uvicorn server on 127.0.0.1, in a thread."""

    def __init__(self, app: Any, port: int = 0, **config: Any) -> None:
        # uvicorn binds port 0 itself: handing it a pre-bound socket made every request
        # on loopback take ~40 ms (seen here), a Nagle/delayed-ACK pattern.
        settings = {"log_level": "warning", "lifespan": "off", **config}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **settings))
        self.port = port
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service_objects(
    name: str, port: int, endpoints: Iterable[tuple[str, int]], namespace: str = "default"
) -> list[dict[str, Any]]:
    """A Service and one EndpointSlice per endpoint (replicas may share an IP on loopback)."""
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": port}]},
        }
    ]
    for i, (host, ep_port) in enumerate(endpoints):
        objs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-{i}",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": ep_port, "protocol": "TCP"}],
            }
        )
    return objs


def write_config(
    directory: Path, objects: list[dict[str, Any]], filename: str = "mesh.yaml"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


def workload_yaml(
    ports: dict[str, int], service_port: Callable[[str], int] = lambda s: 9080
) -> list[str]:
    """YAML documents for loopback workloads named ``<service>-<version>``: one Service
    per service (on ``service_port(service)``) and one EndpointSlice per workload,
    labelled ``version: <version>`` (for DestinationRule subsets)."""
    docs = []
    for svc in sorted({w.split("-")[0] for w in ports}):
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}}}\n"
            f"spec: {{ports: [{{name: http, port: {service_port(svc)}}}]}}\n"
        )
    for workload, port in sorted(ports.items()):
        svc, version = workload.split("-", 1)
        docs.append(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata:\n  name: {workload}\n"
            f'  labels: {{kubernetes.io/service-name: {svc}, version: "{version}"}}\n'
            "addressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\n"
            f"ports: [{{name: http, port: {port}}}]\n"
        )
    return docs
