"""The HttpConnectionManager of a listener (client API listener or server filter chain):
where routes come from, and the HTTP filters (fault, rbac, local_ratelimit, router, and
jwt_authn on server listeners; unknown filters only if marked optional, gRFC A39)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from ._base import ResourceError, unpack_nested
from ._jwt_authn import JWT_AUTHN_TYPE, JwtAuthnConfig, decode_jwt_authn
from ._ratelimit import LOCAL_RATELIMIT_TYPE, LocalRateLimitConfig, decode_local_ratelimit
from ._route_policy import FaultConfig, decode_fault
from .route import RouteConfigResource, decode_route_config

__all__ = [
    "FAULT_TYPE",
    "HCM_TYPE",
    "LOCAL_RATELIMIT_TYPE",
    "RBAC_TYPE",
    "ROUTER_TYPE",
    "FaultConfig",
    "HttpConnectionManager",
    "HttpFilter",
    "JwtAuthnConfig",
    "LocalRateLimitConfig",
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
    config: FaultConfig | RbacConfig | LocalRateLimitConfig | JwtAuthnConfig | None = None


@dataclass(frozen=True, slots=True)
class HttpConnectionManager:
    route_config_name: str | None
    inline_route_config: RouteConfigResource | None
    http_filters: tuple[HttpFilter, ...]
    max_stream_duration: float | None = None


def _fault(msg: Any, path: str, fail: Fail) -> FaultConfig:
    """The listener-level fault filter: the same model and decoder as a route's
    per-filter fault override (an unset percentage is 0%, as in Envoy)."""
    f = unpack_nested(msg, fault_pb2.HTTPFault, fail(path, "cannot decode HTTPFault"))
    return decode_fault(f, path, fail)


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


def _ratelimit(msg: Any, path: str, fail: Fail) -> LocalRateLimitConfig:
    m = unpack_nested(
        msg, local_rate_limit_pb2.LocalRateLimit, fail(path, "cannot decode LocalRateLimit")
    )
    return decode_local_ratelimit(m, f"{path}.typed_config", fail)


_Decoded = FaultConfig | RbacConfig | LocalRateLimitConfig | JwtAuthnConfig | None
_CONFIGS: dict[str, Callable[[Any, str, Fail], _Decoded]] = {
    FAULT_TYPE: _fault,
    RBAC_TYPE: _rbac,
    LOCAL_RATELIMIT_TYPE: _ratelimit,
    ROUTER_TYPE: lambda msg, path, fail: None,
}
assert router_pb2.Router.DESCRIPTOR.full_name in ROUTER_TYPE  # the type is registered


def decode_hcm(
    any_: Any, path: str, fail: Fail, type_name: str, name: str, *, server: bool = False
) -> HttpConnectionManager:
    """Validate an ``Any`` holding an HttpConnectionManager found at ``path``;
    ``server``: a server listener's, where ``jwt_authn`` is also understood."""
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
        if server and type_url == JWT_AUTHN_TYPE:
            decoder = decode_jwt_authn
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
