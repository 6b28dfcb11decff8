"""The HttpConnectionManager of a listener (client API listener or server filter chain):
where routes come from, and the HTTP filters (fault, rbac, router; unknown filters only
if marked optional, gRFC A39)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2

from ._base import ResourceError, unpack_nested
from .route import RouteConfigResource, decode_route_config

__all__ = [
    "FAULT_TYPE",
    "HCM_TYPE",
    "RBAC_TYPE",
    "ROUTER_TYPE",
    "FaultConfig",
    "HttpConnectionManager",
    "HttpFilter",
    "RbacConfig",
    "decode_hcm",
]

Fail = Callable[[str, str], ResourceError]
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
_RBAC_ACTIONS = {v.number: v.name for v in rbac_config_pb2.RBAC.Action.DESCRIPTOR.values}
_DENOMINATOR = {
    percent_pb2.FractionalPercent.HUNDRED: 100,
    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
    percent_pb2.FractionalPercent.MILLION: 1_000_000,
}


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """``envoy.filters.http.fault``: fractions are 0.0-1.0 of requests."""

    delay: float | None = None
    delay_from_header: bool = False
    delay_fraction: float = 0.0
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_from_header: bool = False
    abort_fraction: float = 0.0
    max_active_faults: int | None = None


@dataclass(frozen=True, slots=True)
class RbacConfig:
    """``envoy.filters.http.rbac``: ``action`` ALLOW/DENY/LOG, or None when there are no
    rules (nothing enforced); ``rules`` is the serialized ``envoy.config.rbac.v3.RBAC``."""

    action: str | None
    policy_names: tuple[str, ...]
    rules: bytes = b""


@dataclass(frozen=True, slots=True)
class HttpFilter:
    name: str
    type_url: str
    config: FaultConfig | RbacConfig | None = None


@dataclass(frozen=True, slots=True)
class HttpConnectionManager:
    route_config_name: str | None
    inline_route_config: RouteConfigResource | None
    http_filters: tuple[HttpFilter, ...]
    max_stream_duration: float | None = None


def _fraction(msg: Any, path: str, fail: Fail) -> float:
    if not msg.HasField("percentage"):
        return 1.0  # Envoy: an unset percentage means 100%
    p = msg.percentage
    denominator = _DENOMINATOR.get(p.denominator)
    if denominator is None:
        raise fail(f"{path}.percentage.denominator", f"unknown value {p.denominator}")
    return min(1.0, float(p.numerator) / denominator)


def _fault(msg: Any, path: str, fail: Fail) -> FaultConfig:
    f = unpack_nested(msg, fault_pb2.HTTPFault, fail(path, "cannot decode HTTPFault"))
    delay, from_header, delay_fraction = None, False, 0.0
    if f.HasField("delay"):
        kind = f.delay.WhichOneof("fault_delay_secifier")
        if kind == "fixed_delay":
            d = f.delay.fixed_delay
            delay = d.seconds + d.nanos / 1e9
            if delay < 0:
                raise fail(f"{path}.delay.fixed_delay", "must not be negative")
        elif kind == "header_delay":
            from_header = True
        else:
            raise fail(f"{path}.delay", "fixed_delay or header_delay is required")
        delay_fraction = _fraction(f.delay, f"{path}.delay", fail)
    http, grpc_status, abort_header, abort_fraction = None, None, False, 0.0
    if f.HasField("abort"):
        kind = f.abort.WhichOneof("error_type")
        if kind == "http_status":
            http = f.abort.http_status
            if not 200 <= http < 600:
                raise fail(f"{path}.abort.http_status", f"must be 200-599, got {http}")
        elif kind == "grpc_status":
            grpc_status = f.abort.grpc_status
        elif kind == "header_abort":
            abort_header = True
        else:
            raise fail(f"{path}.abort", "http_status, grpc_status or header_abort is required")
        abort_fraction = _fraction(f.abort, f"{path}.abort", fail)
    max_active = f.max_active_faults.value if f.HasField("max_active_faults") else None
    return FaultConfig(
        delay,
        from_header,
        delay_fraction,
        http,
        grpc_status,
        abort_header,
        abort_fraction,
        max_active,
    )


def _rbac(msg: Any, path: str, fail: Fail) -> RbacConfig:
    r = unpack_nested(msg, rbac_pb2.RBAC, fail(path, "cannot decode RBAC"))
    if r.HasField("matcher") or r.HasField("shadow_matcher"):
        raise fail(f"{path}.matcher", "is not supported (use rules)")
    if not r.HasField("rules"):
        return RbacConfig(None, ())
    action = _RBAC_ACTIONS.get(r.rules.action)
    if action is None:
        raise fail(f"{path}.rules.action", f"unknown value {r.rules.action}")
    return RbacConfig(action, tuple(sorted(r.rules.policies)), r.rules.SerializeToString())


_CONFIGS: dict[str, Callable[[Any, str, Fail], FaultConfig | RbacConfig | None]] = {
    FAULT_TYPE: _fault,
    RBAC_TYPE: _rbac,
    ROUTER_TYPE: lambda msg, path, fail: None,
}
assert router_pb2.Router.DESCRIPTOR.full_name in ROUTER_TYPE  # the type is registered


def decode_hcm(
    any_: Any, path: str, fail: Fail, type_name: str, name: str
) -> HttpConnectionManager:
    """Validate an ``Any`` holding an HttpConnectionManager found at ``path``."""
    if any_.type_url != HCM_TYPE:
        raise fail(path, f"unsupported type {any_.type_url!r} (expected HttpConnectionManager)")
    hcm = unpack_nested(
        any_, hcm_pb2.HttpConnectionManager, fail(path, "cannot decode HttpConnectionManager")
    )
    route_name: str | None = None
    inline: RouteConfigResource | None = None
    which = hcm.WhichOneof("route_specifier")
    if which == "rds":
        cs = hcm.rds.config_source
        if not (cs.HasField("ads") or cs.HasField("self")):
            raise fail(f"{path}.rds.config_source", "must be ads or self")
        if not hcm.rds.route_config_name:
            raise fail(f"{path}.rds.route_config_name", "must not be empty")
        route_name = hcm.rds.route_config_name
    elif which == "route_config":
        inline = decode_route_config(hcm.route_config, type_name, name, f"{path}.route_config.")
    else:
        raise fail(f"{path}.route_specifier", "one of rds or route_config is required")
    filters: list[HttpFilter] = []
    seen: set[str] = set()
    for i, f in enumerate(hcm.http_filters):
        field = f"{path}.http_filters[{i}]"
        if not f.name:
            raise fail(f"{field}.name", "must not be empty")
        if f.name in seen:
            raise fail(f"{field}.name", f"duplicate filter name {f.name!r}")
        seen.add(f.name)
        type_url = f.typed_config.type_url if f.HasField("typed_config") else ""
        decoder = _CONFIGS.get(type_url)
        if decoder is None:
            if f.is_optional:
                continue
            raise fail(f"{field}.typed_config", f"unsupported filter type {type_url!r}")
        filters.append(HttpFilter(f.name, type_url, decoder(f.typed_config, field, fail)))
    if not filters or filters[-1].type_url != ROUTER_TYPE:
        raise fail(f"{path}.http_filters", "the last filter must be the router")
    if any(f.type_url == ROUTER_TYPE for f in filters[:-1]):
        raise fail(f"{path}.http_filters", "the router must be the last filter only")
    mds = None
    if hcm.common_http_protocol_options.HasField("max_stream_duration"):
        d = hcm.common_http_protocol_options.max_stream_duration
        mds = d.seconds + d.nanos / 1e9
    return HttpConnectionManager(route_name, inline, tuple(filters), mds)
