"""Listener resources (LDS): client API listeners with an HttpConnectionManager."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from ._base import ResourceError, unpack
from .route import RouteConfigResource, decode_route_config

__all__ = ["HttpFilter", "ListenerResource", "ListenerType"]

ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
# HTTP filters the client accepts (istiod sends fault then router on every listener);
# any other filter must be marked is_optional, as gRPC requires (gRFC A39).
KNOWN_FILTER_TYPES = frozenset({ROUTER_TYPE, FAULT_TYPE, RBAC_TYPE})


@dataclass(frozen=True, slots=True)
class HttpFilter:
    name: str
    type_url: str


@dataclass(frozen=True, slots=True)
class ListenerResource:
    """A client-side listener: where its routes come from and which filters run."""

    name: str
    route_config_name: str | None
    inline_route_config: RouteConfigResource | None
    http_filters: tuple[HttpFilter, ...]
    max_stream_duration: float | None = None


class ListenerType:
    type_url = "type.googleapis.com/envoy.config.listener.v3.Listener"
    type_name = "Listener"
    all_resources_required_in_sotw = True

    def decode(self, resource: any_pb2.Any) -> tuple[str, ListenerResource]:
        msg = unpack(resource, listener_pb2.Listener, self.type_name)
        name = msg.name
        if not name:
            raise ResourceError(self.type_name, "", "name", "must not be empty")

        def fail(field: str, problem: str) -> ResourceError:
            return ResourceError(self.type_name, name, field, problem)

        if not msg.HasField("api_listener"):
            raise fail("api_listener", "is required for a client listener")
        wrapped = msg.api_listener.api_listener
        if wrapped.type_url != HCM_TYPE:
            raise fail("api_listener.api_listener", f"unsupported type {wrapped.type_url!r}")
        hcm = hcm_pb2.HttpConnectionManager()
        if not wrapped.Unpack(hcm):
            raise fail("api_listener.api_listener", "cannot decode HttpConnectionManager")
        route_name: str | None = None
        inline: RouteConfigResource | None = None
        which = hcm.WhichOneof("route_specifier")
        if which == "rds":
            cs = hcm.rds.config_source
            if not (cs.HasField("ads") or cs.HasField("self")):
                raise fail("api_listener.rds.config_source", "must be ads or self")
            if not hcm.rds.route_config_name:
                raise fail("api_listener.rds.route_config_name", "must not be empty")
            route_name = hcm.rds.route_config_name
        elif which == "route_config":
            inline = decode_route_config(
                hcm.route_config, self.type_name, name, "api_listener.route_config."
            )
        else:
            raise fail("api_listener.route_specifier", "one of rds or route_config is required")
        filters = []
        seen: set[str] = set()
        for i, f in enumerate(hcm.http_filters):
            field = f"api_listener.http_filters[{i}]"
            if not f.name:
                raise fail(f"{field}.name", "must not be empty")
            if f.name in seen:
                raise fail(f"{field}.name", f"duplicate filter name {f.name!r}")
            seen.add(f.name)
            type_url = f.typed_config.type_url if f.HasField("typed_config") else ""
            if type_url not in KNOWN_FILTER_TYPES:
                if f.is_optional:
                    continue
                raise fail(f"{field}.typed_config", f"unsupported filter type {type_url!r}")
            filters.append(HttpFilter(f.name, type_url))
        if not filters or filters[-1].type_url != ROUTER_TYPE:
            raise fail("api_listener.http_filters", "the last filter must be the router")
        mds = None
        if hcm.common_http_protocol_options.HasField("max_stream_duration"):
            d = hcm.common_http_protocol_options.max_stream_duration
            mds = d.seconds + d.nanos / 1e9
        return name, ListenerResource(name, route_name, inline, tuple(filters), mds)
