"""Node views: which nodes get proxyless or Envoy resources, and the metadata read."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from meshlib.controlplane import NodeView, node_view


def _node(user_agent: str = "", **metadata: object) -> base_pb2.Node:
    node = base_pb2.Node(id="sidecar~10.0.0.1~web-0.shop~shop.svc.cluster.local")
    node.user_agent_name = user_agent
    meta = struct_pb2.Struct()
    meta.update(metadata)
    node.metadata.CopyFrom(meta)
    return node


def test_generator_grpc_is_proxyless_and_meshlib_is_told_apart() -> None:
    assert node_view(_node(GENERATOR="grpc")).kind == "grpc"
    assert node_view(_node("meshlib-xds-client", GENERATOR="grpc")).kind == "meshlib"
    assert node_view(_node("envoy")).kind == "envoy"
    assert node_view(_node()).kind == "envoy"  # as istiod: no GENERATOR=grpc, Envoy config


def test_envoy_metadata() -> None:
    node = _node(
        "envoy",
        LABELS={"app": "web", "version": "v1"},
        SERVICE_ACCOUNT="web",
        MESHLIB_LISTENER_PORTS={"9080": 15080, "8080": "15081"},
        MESHLIB_LISTENER_ADDRESS="127.0.0.2",
    )
    node.locality.zone = "z1"
    assert node_view(node) == NodeView(
        kind="envoy",
        namespace="shop",  # from the istio-style node id
        labels=(("app", "web"), ("version", "v1")),
        locality=("", "z1", ""),
        listener_ports=((8080, 15081), (9080, 15080)),
        listener_address="127.0.0.2",
        service_account="web",
    )
