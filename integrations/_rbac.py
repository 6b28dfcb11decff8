"""Envoy's RBAC HTTP filter, evaluated in-process on inbound requests.

Istio translates AuthorizationPolicy into RBAC filters on the inbound listener: a DENY
filter, then an ALLOW filter (AUDIT becomes LOG). A request passes only if every filter
lets it through. Within one filter a policy matches when any of its permissions and any
of its principals match; ALLOW lets through requests some policy matches (none: deny
all), DENY refuses them, LOG only records. Policies are compiled to closures once, when
the listener config arrives; string and header matching reuse the routing matchers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2

from meshlib import Call
from meshlib.routing import compile_header, compile_string
from xds_client.resources import ResourceError, decode_header_matcher, decode_string_matcher

from ._inbound import AuthzDecision, InboundRequest

__all__ = ["RbacAuthorizer", "RbacFilter", "compile_rbac"]

log = logging.getLogger("meshlib.rbac")


@dataclass(frozen=True, slots=True)
class _Request:
    """What RBAC rules look at."""

    call: Call
    path: str  # without the query string
    principal: str | None  # verified SPIFFE ID
    port: int
    remote_ip: str | None
    metadata: Mapping[str, Any]  # dynamic metadata by filter (jwt_authn's payload)


_Rule = Callable[[_Request], bool]


def _fail(where: str) -> Callable[[str, str], ResourceError]:
    return lambda field, problem: ResourceError("RBAC", where, field, problem)


def _cidr(msg: Any) -> Callable[[str | None], bool]:
    network = ipaddress.ip_network(f"{msg.address_prefix}/{msg.prefix_len.value}", strict=False)
    return lambda ip: ip is not None and ipaddress.ip_address(ip) in network


def _permission(msg: rbac_pb2.Permission, field: str, where: str) -> _Rule:
    which = msg.WhichOneof("rule")
    fail = _fail(where)
    if which == "any":
        return lambda r: bool(msg.any)
    if which in ("and_rules", "or_rules"):
        parts = [
            _permission(p, f"{field}.{which}.rules[{i}]", where)
            for i, p in enumerate(getattr(msg, which).rules)
        ]
        combine = all if which == "and_rules" else any
        return lambda r: combine(p(r) for p in parts)
    if which == "not_rule":
        inner = _permission(msg.not_rule, f"{field}.not_rule", where)
        return lambda r: not inner(r)
    if which == "header":
        header = compile_header(decode_header_matcher(msg.header, f"{field}.header", fail))
        return lambda r: header(r.call)
    if which == "url_path":
        path = compile_string(decode_string_matcher(msg.url_path.path, f"{field}.url_path", fail))
        return lambda r: path(r.path)
    if which == "destination_port":
        port = msg.destination_port
        return lambda r: r.port == port
    if which == "destination_port_range":
        lo, hi = msg.destination_port_range.start, msg.destination_port_range.end
        return lambda r: lo <= r.port < hi
    if which == "requested_server_name":
        sni = compile_string(
            decode_string_matcher(msg.requested_server_name, f"{field}.requested_server_name", fail)
        )
        return lambda r: sni(r.call.host)
    raise fail(f"{field}.{which}", "unsupported permission rule")


def _principal(msg: rbac_pb2.Principal, field: str, where: str) -> _Rule:
    which = msg.WhichOneof("identifier")
    fail = _fail(where)
    if which == "any":
        return lambda r: bool(msg.any)
    if which in ("and_ids", "or_ids"):
        parts = [
            _principal(p, f"{field}.{which}.ids[{i}]", where)
            for i, p in enumerate(getattr(msg, which).ids)
        ]
        combine = all if which == "and_ids" else any
        return lambda r: combine(p(r) for p in parts)
    if which == "not_id":
        inner = _principal(msg.not_id, f"{field}.not_id", where)
        return lambda r: not inner(r)
    if which == "authenticated":
        if not msg.authenticated.HasField("principal_name"):
            return lambda r: r.principal is not None  # any authenticated peer
        name = compile_string(
            decode_string_matcher(
                msg.authenticated.principal_name, f"{field}.authenticated.principal_name", fail
            )
        )
        return lambda r: r.principal is not None and name(r.principal)
    if which == "header":
        header = compile_header(decode_header_matcher(msg.header, f"{field}.header", fail))
        return lambda r: header(r.call)
    if which == "url_path":
        path = compile_string(decode_string_matcher(msg.url_path.path, f"{field}.url_path", fail))
        return lambda r: path(r.path)
    if which in ("direct_remote_ip", "remote_ip", "source_ip"):
        inside = _cidr(getattr(msg, which))
        return lambda r: inside(r.remote_ip)
    if which == "metadata":
        return _metadata(msg.metadata, f"{field}.metadata", where)
    raise fail(f"{field}.{which}", "unsupported principal")


_MISSING = object()


def _metadata(msg: Any, field: str, where: str) -> _Rule:
    """Envoy's MetadataMatcher over the request's dynamic metadata."""
    fail = _fail(where)
    keys = []
    for i, seg in enumerate(msg.path):
        if not seg.key:
            raise fail(f"{field}.path[{i}].key", "must not be empty")
        keys.append(seg.key)
    if not keys:
        raise fail(f"{field}.path", "must not be empty")
    value = _value(msg.value, f"{field}.value", fail)
    filter_name, invert = msg.filter, bool(msg.invert)

    def rule(r: _Request) -> bool:
        node: Any = r.metadata.get(filter_name, _MISSING)
        for key in keys:
            node = node.get(key, _MISSING) if isinstance(node, Mapping) else _MISSING
        return value(node) != invert

    return rule


def _value(
    msg: Any, field: str, fail: Callable[[str, str], ResourceError]
) -> Callable[[Any], bool]:
    """Envoy's ValueMatcher (string, bool, present, list one_of, or); a missing value never
    matches, a non-primitive one is not present."""
    which = msg.WhichOneof("match_pattern")
    if which == "string_match":
        s = compile_string(decode_string_matcher(msg.string_match, f"{field}.string_match", fail))
        return lambda v: isinstance(v, str) and s(v)
    if which == "bool_match":
        want = msg.bool_match
        return lambda v: isinstance(v, bool) and v == want
    if which == "present_match":
        present = msg.present_match
        return lambda v: (v is not _MISSING and not isinstance(v, Mapping | list)) == present
    if which == "list_match":
        if msg.list_match.WhichOneof("match_pattern") != "one_of":
            raise fail(f"{field}.list_match", "one_of is required")
        inner = _value(msg.list_match.one_of, f"{field}.list_match.one_of", fail)
        return lambda v: isinstance(v, list) and any(inner(x) for x in v)
    if which == "or_match":
        parts = [
            _value(m, f"{field}.or_match.value_matchers[{i}]", fail)
            for i, m in enumerate(msg.or_match.value_matchers)
        ]
        return lambda v: any(p(v) for p in parts)
    raise fail(f"{field}.{which}", "unsupported value matcher")


@dataclass(frozen=True, slots=True)
class _Policy:
    name: str
    permissions: tuple[_Rule, ...]
    principals: tuple[_Rule, ...]

    def matches(self, r: _Request) -> bool:
        return any(p(r) for p in self.permissions) and any(p(r) for p in self.principals)


@dataclass(frozen=True, slots=True)
class RbacFilter:
    """One compiled RBAC filter: its action and policies (sorted by name, as Envoy)."""

    name: str
    action: str  # ALLOW, DENY or LOG
    policies: tuple[_Policy, ...]

    def first_match(self, r: _Request) -> str | None:
        for policy in self.policies:
            if policy.matches(r):
                return policy.name
        return None


def compile_rbac(name: str, config: rbac_filter_pb2.RBAC) -> RbacFilter | None:
    """Compile an RBAC filter config; None when it has no ``rules`` (a no-op filter).

    Raises ResourceError naming the policy and field for what cannot be evaluated.
    """
    if not config.HasField("rules"):
        return None
    rules = config.rules
    action = rbac_pb2.RBAC.Action.Name(rules.action)
    policies = []
    for policy_name in sorted(rules.policies):
        policy = rules.policies[policy_name]
        where = f"{name}/{policy_name}"
        if policy.HasField("condition") or policy.HasField("checked_condition"):
            raise ResourceError("RBAC", where, "condition", "CEL conditions are not supported")
        policies.append(
            _Policy(
                policy_name,
                tuple(
                    _permission(p, f"permissions[{i}]", where)
                    for i, p in enumerate(policy.permissions)
                ),
                tuple(
                    _principal(p, f"principals[{i}]", where)
                    for i, p in enumerate(policy.principals)
                ),
            )
        )
    return RbacFilter(name, action, tuple(policies))


class RbacAuthorizer:
    """An :class:`~meshlib.integrations._inbound.Authorizer` over a chain of RBAC filters."""

    def __init__(self, filters: Sequence[RbacFilter]) -> None:
        self.filters = tuple(filters)

    def check(
        self, request: InboundRequest, metadata: Mapping[str, Any] | None = None
    ) -> AuthzDecision:
        """The decision for ``request``; ``metadata``: dynamic metadata the filters
        before RBAC set (the verified JWT payload)."""
        path = request.path.split("?", 1)[0]
        call = Call(
            request.host or request.headers.get("host", ""),
            request.method,
            request.path,
            request.headers,
        )
        r = _Request(
            call, path, request.peer_identity, request.port, request.remote_ip, metadata or {}
        )
        for f in self.filters:
            matched = f.first_match(r)
            if f.action == "LOG":
                if matched:
                    log.info("RBAC audit: %s matched %s %s", matched, request.method, path)
                continue
            if f.action == "DENY" and matched is not None:
                return AuthzDecision(False, policy=matched, reason=f"denied by {f.name}")
            if f.action == "ALLOW" and matched is None:
                return AuthzDecision(False, policy=f.name, reason="no ALLOW policy matched")
        return AuthzDecision(True)
