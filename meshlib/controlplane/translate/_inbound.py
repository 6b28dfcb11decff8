"""Inbound listeners for proxyless servers: PeerAuthentication, RequestAuthentication
and AuthorizationPolicy.

Every endpoint ``ip:port`` of a service gets listener
``xds.istio.io/grpc/lds/inbound/<ip>:<port>`` (what a gRPC xDS server asks for): one
filter chain, ``inbound-mtls`` (client certificate required) when the workload's mode
is STRICT, else ``inbound-plaintext``; an inline route configuration ``inbound`` whose
route has a ``non_forwarding_action``; the ``jwt_authn`` filter of the
RequestAuthentications that select the workload (see ``_jwt``), then RBAC filters (DENY
policies, then ALLOW policies) before the router, translated from the
AuthorizationPolicies that select the workload.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import any_pb2, wrappers_pb2

from ..objects._istio_mesh import AuthzCondition, AuthzRule
from ..objects._kubernetes import MeshObjects
from ._jwt import jwt_filter, jwt_principal, selects, workload_jwt_rules
from ._registry import Instance, Registry
from ._tls import downstream_tls, peer_mode

__all__ = ["INBOUND_PREFIX", "RBAC_FILTER", "inbound_listeners", "rbac_filters"]

INBOUND_PREFIX = "xds.istio.io/grpc/lds/inbound/"
RBAC_FILTER = "envoy.filters.http.rbac"
_ROUTER = "envoy.filters.http.router"
_PRINCIPAL_KEYS = ("source.", "request.auth.")


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


def _str(value: str) -> string_pb2.StringMatcher:
    """Istio's wildcard strings: ``*`` any, ``x*`` prefix, ``*x`` suffix, else exact."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex={"regex": ".+"})
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1])
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    return string_pb2.StringMatcher(exact=value)


def _principal(key: str, value: str, issuers: Sequence[str]) -> rbac_pb2.Principal:
    jwt = jwt_principal(key, value, issuers)
    if jwt is not None:
        return jwt
    if key in ("principals", "source.principal"):
        return rbac_pb2.Principal(
            authenticated=rbac_pb2.Principal.Authenticated(
                principal_name=_str(value if value == "*" else f"spiffe://{value}")
            )
        )
    if key in ("namespaces", "source.namespace"):
        return rbac_pb2.Principal(
            authenticated=rbac_pb2.Principal.Authenticated(
                principal_name=string_pb2.StringMatcher(safe_regex={"regex": f".*/ns/{value}/.*"})
            )
        )
    block = ipaddress.ip_network(value, strict=False)  # validated when parsed
    cidr = {
        "address_prefix": value.partition("/")[0],
        "prefix_len": wrappers_pb2.UInt32Value(value=block.prefixlen),
    }
    if key in ("remoteIpBlocks", "remote.ip"):
        # The client address (X-Forwarded-For with no trusted hops: the peer itself).
        return rbac_pb2.Principal(remote_ip=cidr)
    return rbac_pb2.Principal(direct_remote_ip=cidr)


def _permission(key: str, value: str) -> rbac_pb2.Permission:
    if key in ("ports", "destination.port"):
        return rbac_pb2.Permission(destination_port=int(value))
    if key == "paths":
        return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=_str(value)))
    header = {"hosts": ":authority", "methods": ":method"}.get(key)
    if header is None:  # request.headers[name]
        header = key[len("request.headers[") : -1].lower()
    return rbac_pb2.Permission(header=rc.HeaderMatcher(name=header, string_match=_str(value)))


def _any_of_p(items: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return items[0] if len(items) == 1 else rbac_pb2.Principal(or_ids={"ids": items})


def _any_of_perm(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return items[0] if len(items) == 1 else rbac_pb2.Permission(or_rules={"rules": items})


def _principal_condition(c: AuthzCondition, issuers: Sequence[str]) -> list[rbac_pb2.Principal]:
    out = []
    if c.values:
        out.append(_any_of_p([_principal(c.key, v, issuers) for v in c.values]))
    if c.not_values:
        out.append(
            rbac_pb2.Principal(
                not_id=_any_of_p([_principal(c.key, v, issuers) for v in c.not_values])
            )
        )
    return out


def _permission_condition(c: AuthzCondition) -> list[rbac_pb2.Permission]:
    out = []
    if c.values:
        out.append(_any_of_perm([_permission(c.key, v) for v in c.values]))
    if c.not_values:
        out.append(
            rbac_pb2.Permission(
                not_rule=_any_of_perm([_permission(c.key, v) for v in c.not_values])
            )
        )
    return out


def _rule_policy(rule: AuthzRule, issuers: Sequence[str]) -> rbac_pb2.Policy:
    when_p = [c for c in rule.when if c.key.startswith(_PRINCIPAL_KEYS)]
    when_perm = [c for c in rule.when if not c.key.startswith(_PRINCIPAL_KEYS)]
    principals = rbac_pb2.Principal(any=True)
    if rule.sources:
        groups = []
        for source in rule.sources:
            parts = [p for c in source for p in _principal_condition(c, issuers)]
            groups.append(rbac_pb2.Principal(and_ids={"ids": parts}))
        principals = _any_of_p(groups)
    if when_p:
        extra = [p for c in when_p for p in _principal_condition(c, issuers)]
        principals = rbac_pb2.Principal(and_ids={"ids": [principals, *extra]})
    permissions = rbac_pb2.Permission(any=True)
    if rule.operations:
        groups_perm = []
        for op in rule.operations:
            parts_perm = [p for c in op for p in _permission_condition(c)]
            groups_perm.append(rbac_pb2.Permission(and_rules={"rules": parts_perm}))
        permissions = _any_of_perm(groups_perm)
    if when_perm:
        extra_perm = [p for c in when_perm for p in _permission_condition(c)]
        permissions = rbac_pb2.Permission(and_rules={"rules": [permissions, *extra_perm]})
    return rbac_pb2.Policy(permissions=[permissions], principals=[principals])


def rbac_filters(
    objects: MeshObjects, namespace: str, labels: Mapping[str, str]
) -> list[hcm_pb2.HttpFilter]:
    """The RBAC filters for a workload: DENY rules first, then ALLOW (if any policy)."""
    out: list[hcm_pb2.HttpFilter] = []
    selected = [p for p in objects.authorization_policies if selects(p, namespace, labels)]
    issuers = [r.issuer for r in workload_jwt_rules(objects, namespace, labels)]
    for action, rbac_action in (("DENY", rbac_pb2.RBAC.DENY), ("ALLOW", rbac_pb2.RBAC.ALLOW)):
        # CUSTOM (an external authorizer meshlib does not call) fails closed, as istiod
        # does for a provider it cannot use: the requests the policy selects are denied.
        policies = [
            p for p in selected if p.action == action or (action, p.action) == ("DENY", "CUSTOM")
        ]
        if not policies:
            continue
        rbac = rbac_pb2.RBAC(action=rbac_action)
        for p in sorted(policies, key=lambda p: (p.namespace, p.name)):
            for i, rule in enumerate(p.rules):
                rbac.policies[f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"].CopyFrom(
                    _rule_policy(rule, issuers)
                )
        name = f"{RBAC_FILTER}.{action.lower()}"
        out.append(
            hcm_pb2.HttpFilter(name=name, typed_config=_pack(rbac_filter_pb2.RBAC(rules=rbac)))
        )
    return out


def _listener(objects: MeshObjects, namespace: str, inst: Instance) -> listener_pb2.Listener:
    mode = peer_mode(objects, namespace, inst.labels, inst.port)
    route = route_pb2.RouteConfiguration(
        name="inbound",
        virtual_hosts=[
            rc.VirtualHost(
                name=f"inbound|http|{inst.port}",
                domains=["*"],
                routes=[
                    rc.Route(
                        match=rc.RouteMatch(prefix="/"),
                        non_forwarding_action=rc.NonForwardingAction(),
                    )
                ],
            )
        ],
    )
    jwt = jwt_filter(workload_jwt_rules(objects, namespace, inst.labels))
    filters = ([jwt] if jwt is not None else []) + rbac_filters(objects, namespace, inst.labels)
    filters.append(hcm_pb2.HttpFilter(name=_ROUTER, typed_config=_pack(router_pb2.Router())))
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="inbound", route_config=route, http_filters=filters
    )
    chain = listener_components_pb2.FilterChain(
        name="inbound-mtls" if mode == "STRICT" else "inbound-plaintext",
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_pack(hcm)
            )
        ],
    )
    if mode == "STRICT":
        chain.transport_socket.CopyFrom(downstream_tls(envoy=False))
    name = f"{INBOUND_PREFIX}{inst.address}:{inst.port}"
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=inst.address, port_value=inst.port)
        ),
        filter_chains=[chain],
        traffic_direction=2,  # INBOUND
    )


def inbound_listeners(registry: Registry) -> dict[str, listener_pb2.Listener]:
    """Server listeners for every Kubernetes service endpoint."""
    out: dict[str, listener_pb2.Listener] = {}
    for svc in registry.services.values():
        if svc.short_name is None:
            continue
        for instances in svc.instances.values():
            for inst in instances:
                listener = _listener(registry.objects, svc.namespace, inst)
                out.setdefault(listener.name, listener)
    return out
