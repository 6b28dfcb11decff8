"""Envoy's aggregate cluster: ``cluster_type`` ``envoy.clusters.aggregate``.

The typed config (``envoy.extensions.clusters.aggregate.v3.ClusterConfig``) lists the
child clusters in fallback order. The extension is chosen by the typed config's type,
as Envoy chooses it (the ``name`` is free-form).

Accepted lb_policy values: ``CLUSTER_PROVIDED`` (Envoy requires it) and the default
``ROUND_ROBIN`` (what gRPC's xDS client requires: grpcio 1.85 NACKs CLUSTER_PROVIDED). In
both cases each child's own policy picks the host, as in Envoy. Any other ``lb_policy``
and any ``load_balancing_policy`` are NACKed: they would be ignored silently.
"""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from google.protobuf.message import DecodeError

from ._base import ResourceError

__all__ = ["AGGREGATE_TYPE_URL", "decode_aggregate"]

AGGREGATE_TYPE_URL = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"
_ACCEPTED_POLICIES = (cluster_pb2.Cluster.CLUSTER_PROVIDED, cluster_pb2.Cluster.ROUND_ROBIN)

Fail = Callable[[str, str], ResourceError]


def decode_aggregate(msg: cluster_pb2.Cluster, fail: Fail) -> tuple[str, ...]:
    """The child cluster names of an aggregate cluster, in fallback order; NACKs an
    unknown cluster type, an empty list and a policy the aggregate would ignore.

    Like Envoy and grpcio, it accepts an empty, repeated or self-naming child: those are
    properties of the cluster tree, resolved (and reported) when the tree is followed."""
    typed = msg.cluster_type.typed_config
    if typed.type_url != AGGREGATE_TYPE_URL:
        what = typed.type_url or "<empty>"
        raise fail(
            "cluster_type.typed_config",
            f"unsupported cluster type {msg.cluster_type.name!r} ({what}); supported: "
            f"envoy.clusters.aggregate ({AGGREGATE_TYPE_URL})",
        )
    config = aggregate_pb2.ClusterConfig()
    try:
        config.ParseFromString(typed.value)
    except DecodeError as exc:
        raise fail("cluster_type.typed_config", f"cannot decode ClusterConfig: {exc}") from None
    path = "cluster_type.typed_config.clusters"
    if not config.clusters:
        raise fail(path, "must list at least one cluster")
    if msg.lb_policy not in _ACCEPTED_POLICIES:
        kinds = cluster_pb2.Cluster.LbPolicy
        name = kinds.Name(msg.lb_policy) if msg.lb_policy in kinds.values() else msg.lb_policy
        raise fail(
            "lb_policy",
            f"{name} is not valid for an aggregate cluster (CLUSTER_PROVIDED: each child "
            "cluster's own policy picks the host)",
        )
    if msg.HasField("load_balancing_policy"):
        raise fail(
            "load_balancing_policy",
            "must not be set on an aggregate cluster (each child cluster's own policy "
            "picks the host)",
        )
    return tuple(config.clusters)
