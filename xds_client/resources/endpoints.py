"""ClusterLoadAssignment resources (EDS): localities, priorities and endpoints."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import any_pb2

from ._base import ResourceError, unpack

__all__ = ["Endpoint", "EndpointsResource", "EndpointsType", "LocalityEndpoints"]

_HEALTH = health_check_pb2.HealthStatus


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    weight: int = 1
    health: str = "HEALTHY"

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def usable(self) -> bool:
        """Envoy and gRPC route only to HEALTHY and UNKNOWN endpoints."""
        return self.health in ("HEALTHY", "UNKNOWN")


@dataclass(frozen=True, slots=True)
class LocalityEndpoints:
    region: str
    zone: str
    sub_zone: str
    weight: int
    priority: int
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class EndpointsResource:
    cluster_name: str
    localities: tuple[LocalityEndpoints, ...]

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for loc in self.localities for e in loc.endpoints)


class EndpointsType:
    type_url = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    type_name = "ClusterLoadAssignment"
    all_resources_required_in_sotw = False

    def decode(self, resource: any_pb2.Any) -> tuple[str, EndpointsResource]:
        msg = unpack(resource, endpoint_pb2.ClusterLoadAssignment, self.type_name)
        name = msg.cluster_name
        if not name:
            raise ResourceError(self.type_name, "", "cluster_name", "must not be empty")

        def fail(field: str, problem: str) -> ResourceError:
            return ResourceError(self.type_name, name, field, problem)

        localities = []
        for i, loc in enumerate(msg.endpoints):
            path = f"endpoints[{i}]"
            if not loc.HasField("locality"):
                raise fail(f"{path}.locality", "is required")
            weight = loc.load_balancing_weight.value if loc.HasField("load_balancing_weight") else 0
            if weight == 0:
                continue  # gRFC A27: a locality without weight is ignored
            eps = []
            for j, lb in enumerate(loc.lb_endpoints):
                epath = f"{path}.lb_endpoints[{j}]"
                sa = lb.endpoint.address.socket_address
                if not lb.endpoint.address.HasField("socket_address") or not sa.address:
                    raise fail(f"{epath}.endpoint.address.socket_address", "is required")
                if not 0 < sa.port_value < 65536:
                    raise fail(
                        f"{epath}.endpoint.address.socket_address.port_value",
                        f"must be 1-65535, got {sa.port_value}",
                    )
                ew = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
                if ew == 0:
                    raise fail(f"{epath}.load_balancing_weight", "must be at least 1")
                eps.append(Endpoint(sa.address, sa.port_value, ew, _HEALTH.Name(lb.health_status)))
            lo = loc.locality
            localities.append(
                LocalityEndpoints(lo.region, lo.zone, lo.sub_zone, weight, loc.priority, tuple(eps))
            )
        return name, EndpointsResource(name, tuple(localities))
