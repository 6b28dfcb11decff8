"""Node views: what kind of client a node is, and what it should be served.

istiod serves a node by its generator: ``GENERATOR=grpc`` in the node metadata gets API
listeners (proxyless), any other node gets Envoy sidecar configuration. meshlib does the
same, and tells meshlib's own client (user agent ``meshlib-xds-client``) from grpcio's,
which NACKs load-balancing policies other than ROUND_ROBIN and RING_HASH.

Envoy node metadata (all optional):

``NAMESPACE``                 the node's namespace (else parsed from an istio node id)
``LABELS``                    the workload's labels (Sidecar selection, VirtualService
                              ``sourceLabels``, DestinationRule ``failoverPriority``)
``SERVICE_ACCOUNT``           identity for SDS: ``spiffe://cluster.local/ns/<ns>/sa/<sa>``
``MESHLIB_LISTENER_PORTS``    ``{"<service port>": <local port>}``: one outbound socket
                              listener per service port, on the local port
``MESHLIB_LISTENER_ADDRESS``  the address those listeners bind (default ``127.0.0.1``)
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2

__all__ = ["ENVOY", "GRPC", "MESHLIB", "NodeView", "node_namespace", "node_view"]

GRPC = "grpc"
MESHLIB = "meshlib"
ENVOY = "envoy"
MESHLIB_USER_AGENT = "meshlib-xds-client"


@dataclass(frozen=True)
class NodeView:
    """The parts of a node that change what it is served; equal views share resources."""

    kind: str = MESHLIB
    namespace: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    locality: tuple[str, str, str] = ("", "", "")
    listener_ports: tuple[tuple[int, int], ...] = ()
    listener_address: str = "127.0.0.1"
    service_account: str = "default"

    @property
    def proxyless(self) -> bool:
        """True for gRPC and meshlib clients (API listeners)."""
        return self.kind != ENVOY


def node_namespace(node: base_pb2.Node) -> str:
    """The node's namespace: metadata ``NAMESPACE``, else from an istio-style node id."""
    field_ = node.metadata.fields.get("NAMESPACE")
    if field_ is not None and field_.string_value:
        return str(field_.string_value)
    parts = node.id.split("~")
    if len(parts) == 4 and "." in parts[2]:
        return str(parts[2].rsplit(".", 1)[1])
    return "default"


def _string(node: base_pb2.Node, key: str) -> str:
    value = node.metadata.fields.get(key)
    return str(value.string_value) if value is not None else ""


def _struct(node: base_pb2.Node, key: str) -> dict[str, str]:
    value = node.metadata.fields.get(key)
    if value is None or not value.HasField("struct_value"):
        return {}
    out = {}
    for k, v in value.struct_value.fields.items():
        kind = v.WhichOneof("kind")
        if kind == "string_value":
            out[str(k)] = str(v.string_value)
        elif kind == "number_value":
            out[str(k)] = str(int(v.number_value))
    return out


def node_view(node: base_pb2.Node) -> NodeView:
    """The view of ``node`` (see the module docstring for the metadata read)."""
    generator = _string(node, "GENERATOR")
    if node.user_agent_name == MESHLIB_USER_AGENT:
        kind = MESHLIB
    elif generator == "grpc":
        kind = GRPC
    else:
        kind = ENVOY
    ports: list[tuple[int, int]] = []
    for service_port, local in _struct(node, "MESHLIB_LISTENER_PORTS").items():
        if service_port.isdigit() and local.isdigit():
            ports.append((int(service_port), int(local)))
    return NodeView(
        kind=kind,
        namespace=node_namespace(node),
        labels=tuple(sorted(_struct(node, "LABELS").items())),
        locality=(node.locality.region, node.locality.zone, node.locality.sub_zone),
        listener_ports=tuple(sorted(ports)),
        listener_address=_string(node, "MESHLIB_LISTENER_ADDRESS") or "127.0.0.1",
        service_account=_string(node, "SERVICE_ACCOUNT") or "default",
    )
