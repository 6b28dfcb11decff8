"""Istio YAML for the chaos suite: a ``reviews`` service with one subset per version, each
version one uvicorn backend, and a VirtualService whose default route the tests move."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["route_reviews", "write_reviews"]


def write_reviews(config: Path, ports: Mapping[str, int], *, extra: str = "") -> Path:
    """``config/reviews.yaml``: Service, Pods, EndpointSlices and a DestinationRule."""
    config.mkdir(parents=True, exist_ok=True)
    objects = [
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\n"
        "spec: {ports: [{name: http, port: 9080}]}\n"
    ]
    for v, port in ports.items():
        pod = f"reviews-{v}"
        objects.append(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, labels: {{version: {v}}}}}\n"
            f"spec: {{containers: [{{name: reviews, image: reviews-{v}}}]}}\n"
        )
        objects.append(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata: {{name: {pod}, labels: {{kubernetes.io/service-name: reviews}}}}\n"
            "addressType: IPv4\n"
            f"endpoints: [{{addresses: [127.0.0.1], targetRef: {{kind: Pod, name: {pod}}}}}]\n"
            f"ports: [{{name: http, port: {port}}}]\n"
        )
    objects.append(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\n"
        f"spec:\n  host: reviews\n{extra}  subsets:\n"
        + "".join(f"  - {{name: {v}, labels: {{version: {v}}}}}\n" for v in ports)
    )
    path = config / "reviews.yaml"
    path.write_text("---\n".join(objects))
    return path


def route_reviews(config: Path, version: str, *, http_extra: str = "") -> Path:
    """``config/vs.yaml``: every request to ``reviews`` goes to subset ``version``."""
    path = config / "vs.yaml"
    path.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: reviews}\n"
        "spec: {hosts: [reviews], http: [{route: [{destination: "
        f"{{host: reviews, subset: {version}}}}}]{http_extra}}}]}}\n"
    )
    return path
