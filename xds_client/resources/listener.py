"""Listener resources (LDS): client API listeners with an HttpConnectionManager, and
server (inbound) listeners with filter chains, their matches and downstream TLS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from google.protobuf import any_pb2

from ._base import ResourceError, unpack
from ._hcm import (
    FAULT_TYPE,
    HCM_TYPE,
    RBAC_TYPE,
    ROUTER_TYPE,
    FaultConfig,
    HttpConnectionManager,
    HttpFilter,
    RbacConfig,
    decode_hcm,
)
from ._tls import DownstreamTls, decode_downstream_tls
from .route import RouteConfigResource

__all__ = [
    "FAULT_TYPE",
    "HCM_TYPE",
    "RBAC_TYPE",
    "ROUTER_TYPE",
    "CidrRange",
    "FaultConfig",
    "FilterChain",
    "FilterChainMatch",
    "HttpConnectionManager",
    "HttpFilter",
    "ListenerResource",
    "ListenerType",
    "RbacConfig",
]

_SOURCE_TYPES = {0: "ANY", 1: "SAME_IP_OR_LOOPBACK", 2: "EXTERNAL"}


@dataclass(frozen=True, slots=True)
class CidrRange:
    address: str
    prefix_len: int

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(f"{self.address}/{self.prefix_len}", strict=False)


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    """Envoy's FilterChainMatch; empty tuples and None mean "any"."""

    destination_port: int | None = None
    prefix_ranges: tuple[CidrRange, ...] = ()
    source_type: str = "ANY"
    source_prefix_ranges: tuple[CidrRange, ...] = ()
    source_ports: tuple[int, ...] = ()
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FilterChain:
    name: str
    match: FilterChainMatch
    http: HttpConnectionManager
    tls: DownstreamTls | None = None


@dataclass(frozen=True, slots=True)
class ListenerResource:
    """A listener. A client (API) listener sets the route fields and ``http_filters``;
    a server listener sets ``address``, ``port`` and ``filter_chains``."""

    name: str
    route_config_name: str | None
    inline_route_config: RouteConfigResource | None
    http_filters: tuple[HttpFilter, ...]
    max_stream_duration: float | None = None
    address: str = ""
    port: int = 0
    filter_chains: tuple[FilterChain, ...] = ()
    default_filter_chain: FilterChain | None = None

    @property
    def is_server(self) -> bool:
        return not self.route_config_name and self.inline_route_config is None


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

        if msg.HasField("api_listener"):
            hcm = decode_hcm(
                msg.api_listener.api_listener, "api_listener", fail, self.type_name, name
            )
            return name, ListenerResource(
                name,
                hcm.route_config_name,
                hcm.inline_route_config,
                hcm.http_filters,
                hcm.max_stream_duration,
            )
        return name, self._server(msg, name, fail)

    def _server(self, msg: Any, name: str, fail: Any) -> ListenerResource:
        if not msg.address.HasField("socket_address"):
            raise fail("address.socket_address", "is required for a server listener")
        sa = msg.address.socket_address
        _ip(sa.address, "address.socket_address.address", fail)
        if not 0 <= sa.port_value < 65536:
            raise fail("address.socket_address.port_value", f"must be 0-65535, got {sa.port_value}")
        if msg.use_original_dst.value:
            raise fail("use_original_dst", "is not supported")
        if msg.HasField("filter_chain_matcher"):
            raise fail("filter_chain_matcher", "is not supported (use filter_chains)")
        chains = tuple(
            self._chain(c, f"filter_chains[{i}]", name, fail)
            for i, c in enumerate(msg.filter_chains)
        )
        seen: dict[FilterChainMatch, int] = {}
        for i, chain in enumerate(chains):
            if chain.match in seen:
                raise fail(
                    f"filter_chains[{i}].filter_chain_match",
                    f"the same match as filter_chains[{seen[chain.match]}]",
                )
            seen[chain.match] = i
        default = None
        if msg.HasField("default_filter_chain"):
            default = self._chain(msg.default_filter_chain, "default_filter_chain", name, fail)
        if not chains and default is None:
            raise fail("filter_chains", "a server listener needs a filter chain")
        return ListenerResource(
            name, None, None, (), None, sa.address, sa.port_value, chains, default
        )

    def _chain(self, c: Any, path: str, name: str, fail: Any) -> FilterChain:
        match = _match(c.filter_chain_match, f"{path}.filter_chain_match", fail)
        if len(c.filters) != 1:
            raise fail(f"{path}.filters", "exactly one filter (the HttpConnectionManager)")
        f = c.filters[0]
        if not f.HasField("typed_config"):
            raise fail(f"{path}.filters[0].typed_config", "is required")
        http = decode_hcm(
            f.typed_config, f"{path}.filters[0].typed_config", fail, "Listener", name, server=True
        )
        tls = None
        if c.HasField("transport_socket"):
            ts = c.transport_socket
            tpath = f"{path}.transport_socket"
            if not ts.HasField("typed_config"):
                raise fail(f"{tpath}.typed_config", "is required")
            tls = decode_downstream_tls(ts.typed_config, f"{tpath}.typed_config", fail)
        return FilterChain(c.name, match, http, tls)


def _ip(value: str, path: str, fail: Any) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise fail(path, f"must be an IP address, got {value!r}") from None


def _cidrs(ranges: Any, path: str, fail: Any) -> tuple[CidrRange, ...]:
    out = []
    for i, r in enumerate(ranges):
        _ip(r.address_prefix, f"{path}[{i}].address_prefix", fail)
        bits = 32 if ipaddress.ip_address(r.address_prefix).version == 4 else 128
        length = r.prefix_len.value if r.HasField("prefix_len") else bits
        if length > bits:
            raise fail(f"{path}[{i}].prefix_len", f"must be at most {bits}, got {length}")
        out.append(CidrRange(r.address_prefix, length))
    return tuple(out)


def _match(m: listener_components_pb2.FilterChainMatch, path: str, fail: Any) -> FilterChainMatch:
    port = m.destination_port.value if m.HasField("destination_port") else None
    if port is not None and not 1 <= port < 65536:
        raise fail(f"{path}.destination_port", f"must be 1-65535, got {port}")
    for i, p in enumerate(m.source_ports):
        if not 1 <= p < 65536:
            raise fail(f"{path}.source_ports[{i}]", f"must be 1-65535, got {p}")
    source_type = _SOURCE_TYPES.get(m.source_type)
    if source_type is None:
        raise fail(f"{path}.source_type", f"unknown value {m.source_type}")
    return FilterChainMatch(
        port,
        _cidrs(m.prefix_ranges, f"{path}.prefix_ranges", fail),
        source_type,
        _cidrs(m.source_prefix_ranges, f"{path}.source_prefix_ranges", fail),
        tuple(sorted(set(m.source_ports))),
        tuple(m.server_names),
        m.transport_protocol,
        tuple(m.application_protocols),
    )
