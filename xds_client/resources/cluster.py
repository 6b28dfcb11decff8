"""Cluster resources (CDS)."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import any_pb2

from ._base import ResourceError, duration_seconds, unpack

__all__ = ["ClusterResource", "ClusterType"]

_LB_POLICIES = {
    cluster_pb2.Cluster.ROUND_ROBIN: "ROUND_ROBIN",
    cluster_pb2.Cluster.LEAST_REQUEST: "LEAST_REQUEST",
    cluster_pb2.Cluster.RING_HASH: "RING_HASH",
    cluster_pb2.Cluster.RANDOM: "RANDOM",
    cluster_pb2.Cluster.MAGLEV: "MAGLEV",
}


@dataclass(frozen=True, slots=True)
class ClusterResource:
    """An upstream cluster. ``eds_service_name`` is the EDS resource to watch."""

    name: str
    eds_service_name: str
    lb_policy: str = "ROUND_ROBIN"
    connect_timeout: float = 5.0


class ClusterType:
    type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    type_name = "Cluster"
    all_resources_required_in_sotw = True

    def decode(self, resource: any_pb2.Any) -> tuple[str, ClusterResource]:
        msg = unpack(resource, cluster_pb2.Cluster, self.type_name)
        name = msg.name
        if not name:
            raise ResourceError(self.type_name, "", "name", "must not be empty")

        def fail(field: str, problem: str) -> ResourceError:
            return ResourceError(self.type_name, name, field, problem)

        discovery = msg.WhichOneof("cluster_discovery_type")
        if discovery != "type" or msg.type != cluster_pb2.Cluster.EDS:
            kind = (
                cluster_pb2.Cluster.DiscoveryType.Name(msg.type)
                if discovery == "type"
                else discovery
            )
            raise fail("type", f"unsupported discovery type {kind} (supported: EDS)")
        eds = msg.eds_cluster_config
        cs = eds.eds_config
        if not (cs.HasField("ads") or cs.HasField("self")):
            raise fail("eds_cluster_config.eds_config", "must be ads or self")
        policy = _LB_POLICIES.get(msg.lb_policy)
        if policy is None:
            raise fail("lb_policy", f"unsupported value {msg.lb_policy}")
        timeout = duration_seconds(msg, "connect_timeout")
        if timeout is not None and timeout <= 0:
            raise fail("connect_timeout", "must be positive")
        return name, ClusterResource(
            name=name,
            eds_service_name=eds.service_name or name,
            lb_policy=policy,
            connect_timeout=timeout if timeout is not None else 5.0,
        )
