"""Helpers for the Istio translation tests: a base config and resource lookups."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    ROUTE_TYPE,
    FileSource,
    NodeView,
    Resources,
    translate,
)

#: reviews (v1, v2, v3 on 127.0.0.1:19001-19003) and ratings (127.0.0.1:19010).
BASE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  ports: [{name: http, port: 9080}]
"""
for _i, _v in enumerate(("v1", "v2", "v3"), start=1):
    BASE += f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-{_v}
  labels: {{kubernetes.io/service-name: reviews, version: {_v}}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  zone: zone-{_i}
ports: [{{name: http, port: {19000 + _i}}}]
"""
BASE += """---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-1
  labels: {kubernetes.io/service-name: ratings}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
ports: [{name: http, port: 19010}]
"""

SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""

REVIEWS = "reviews.default.svc.cluster.local"
ROUTE = f"outbound|9080||{REVIEWS}"


def cluster_of(subset: str = "", host: str = REVIEWS, port: int = 9080) -> str:
    return f"outbound|{port}|{subset}|{host}"


def load(tmp_path: Path, *docs: str, base: str = BASE) -> Resources:
    """Translate BASE plus ``docs`` (each one YAML document or several)."""
    text = "---\n".join([base, *(textwrap.dedent(d) for d in docs)])
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return translate(FileSource(path).load())


def view(resources: Resources, type_url: str, node: NodeView | None = None) -> dict[str, Any]:
    """The unpacked resources of ``type_url`` for ``node`` (default: a meshlib client)."""
    assert resources.render is not None
    return resources.render(node or NodeView())[type_url]


def routes(resources: Resources, name: str = ROUTE) -> list[route_components_pb2.Route]:
    rc: route_pb2.RouteConfiguration = resources.shared[ROUTE_TYPE][name]
    assert len(rc.virtual_hosts) == 1
    return list(rc.virtual_hosts[0].routes)


def cluster(resources: Resources, name: str) -> cluster_pb2.Cluster:
    found: cluster_pb2.Cluster = resources.shared[CLUSTER_TYPE][name]
    return found


def endpoints(resources: Resources, name: str) -> list[tuple[str, int]]:
    cla: endpoint_pb2.ClusterLoadAssignment = resources.shared[ENDPOINT_TYPE][name]
    return sorted(
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for loc in cla.endpoints
        for e in loc.lb_endpoints
    )
