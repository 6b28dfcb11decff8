"""ClusterLoadAssignment resources (EDS): localities, priorities and endpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2

from ._base import ResourceError, unpack

__all__ = [
    "DropOverload",
    "Endpoint",
    "EndpointsResource",
    "EndpointsType",
    "LocalityEndpoints",
    "decode_load_assignment",
]

_HEALTH = health_check_pb2.HealthStatus
_DENOMINATORS = {
    percent_pb2.FractionalPercent.HUNDRED: 100,
    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
    percent_pb2.FractionalPercent.MILLION: 1_000_000,
}


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
        """HEALTHY or UNKNOWN: the endpoints that take load first. DEGRADED endpoints take
        only the load healthy ones cannot (meshlib.balancing.priority); UNHEALTHY, DRAINING
        and TIMEOUT are excluded."""
        return self.health in ("HEALTHY", "UNKNOWN")


@dataclass(frozen=True, slots=True)
class LocalityEndpoints:
    region: str
    zone: str
    sub_zone: str
    weight: int  # 0: no load_balancing_weight (no traffic under locality-weighted balancing)
    priority: int
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class DropOverload:
    """Drop ``fraction`` (0-1) of requests, reported under ``category``."""

    category: str
    fraction: float


@dataclass(frozen=True, slots=True)
class EndpointsResource:
    cluster_name: str
    localities: tuple[LocalityEndpoints, ...]
    overprovisioning_factor: float = 1.4  # policy.overprovisioning_factor / 100
    drop_overloads: tuple[DropOverload, ...] = ()

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for loc in self.localities for e in loc.endpoints)

    def priorities(self) -> tuple[int, ...]:
        """The priorities present, ascending."""
        return tuple(sorted({loc.priority for loc in self.localities}))


def decode_load_assignment(
    msg: endpoint_pb2.ClusterLoadAssignment,
    fail: Callable[[str, str], ResourceError],
    prefix: str = "",
) -> EndpointsResource:
    """Validate a ClusterLoadAssignment (from EDS, or a Cluster's ``load_assignment``)."""
    localities = []
    for i, loc in enumerate(msg.endpoints):
        path = f"{prefix}endpoints[{i}]"
        if not loc.HasField("locality"):
            raise fail(f"{path}.locality", "is required")
        weight = loc.load_balancing_weight.value if loc.HasField("load_balancing_weight") else 0
        if loc.HasField("load_balancing_weight") and weight == 0:
            raise fail(f"{path}.load_balancing_weight", "must be at least 1 when set")
        if loc.priority > 128:
            raise fail(f"{path}.priority", f"must be at most 128, got {loc.priority}")
        eps = []
        for j, lb in enumerate(loc.lb_endpoints):
            # The hot loop of a large EDS update: field paths are built only on failure.
            address = lb.endpoint.address
            sa = address.socket_address
            host, port = sa.address, sa.port_value
            ew = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
            health = _HEALTH_NAMES.get(lb.health_status)
            if not host or not 0 < port < 65536 or ew == 0 or health is None:
                _endpoint_problem(lb, f"{path}.lb_endpoints[{j}]", fail)
            eps.append(Endpoint(host, port, ew, health))
        lo = loc.locality
        localities.append(
            LocalityEndpoints(lo.region, lo.zone, lo.sub_zone, weight, loc.priority, tuple(eps))
        )
    policy = msg.policy
    factor = 1.4
    if policy.HasField("overprovisioning_factor"):
        if policy.overprovisioning_factor.value == 0:
            raise fail(f"{prefix}policy.overprovisioning_factor", "must be positive")
        factor = policy.overprovisioning_factor.value / 100.0
    drops = []
    for i, d in enumerate(policy.drop_overloads):
        pct = d.drop_percentage
        denominator = _DENOMINATORS.get(pct.denominator)
        if denominator is None:
            raise fail(f"{prefix}policy.drop_overloads[{i}].drop_percentage.denominator", "unknown")
        drops.append(DropOverload(d.category, min(1.0, pct.numerator / denominator)))
    return EndpointsResource(msg.cluster_name, tuple(localities), factor, tuple(drops))


_HEALTH_NAMES: dict[int, str] = {v: _HEALTH.Name(v) for v in _HEALTH.values()}


def _endpoint_problem(lb: Any, epath: str, fail: Callable[[str, str], ResourceError]) -> NoReturn:
    """Raise the precise error for an lb_endpoint the fast path found invalid."""
    sa = lb.endpoint.address.socket_address
    if not lb.endpoint.address.HasField("socket_address") or not sa.address:
        raise fail(f"{epath}.endpoint.address.socket_address", "is required")
    if not 0 < sa.port_value < 65536:
        raise fail(
            f"{epath}.endpoint.address.socket_address.port_value",
            f"must be 1-65535, got {sa.port_value}",
        )
    if lb.HasField("load_balancing_weight") and lb.load_balancing_weight.value == 0:
        raise fail(f"{epath}.load_balancing_weight", "must be at least 1")
    raise fail(f"{epath}.health_status", f"unknown value {lb.health_status}")


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

        return name, decode_load_assignment(msg, fail)
