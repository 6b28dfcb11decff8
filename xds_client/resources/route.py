"""RouteConfiguration resources (RDS): virtual hosts, route matches, actions and policies.

Every field meshlib acts on is validated here, so an invalid RouteConfiguration is NACKed
with the path of the offending field (a regex RE2 rejects, a negative duration, a
max_interval below base_interval, ...). Matcher and policy models live in ``_matchers``
and ``_route_policy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import any_pb2

from ._base import ResourceError, unpack
from ._matchers import (
    HeaderMatch,
    Percent,
    QueryParamMatch,
    StringMatch,
    decode_header_matcher,
    decode_percent,
    decode_query_matcher,
    decode_regex,
)
from ._ratelimit import LocalRateLimitConfig, TokenBucket, decode_ratelimit_overrides
from ._route_local import (
    DEFAULT_MAX_DIRECT_RESPONSE_BODY,
    DirectResponse,
    Redirect,
    decode_direct_response,
    decode_redirect,
)
from ._route_policy import (
    FaultAbort,
    FaultConfig,
    FaultDelay,
    HashPolicy,
    HeaderMutations,
    HeaderToAdd,
    MaxStreamDuration,
    MirrorPolicy,
    RetryPolicy,
    decode_fault_overrides,
    decode_hash_policy,
    decode_max_stream_duration,
    decode_mirror_policy,
    decode_mutations,
    decode_retry_policy,
    seconds,
)

__all__ = [
    "ClusterWeight",
    "DirectResponse",
    "FaultAbort",
    "FaultConfig",
    "FaultDelay",
    "HashPolicy",
    "HeaderMatch",
    "HeaderMutations",
    "HeaderToAdd",
    "LocalRateLimitConfig",
    "MaxStreamDuration",
    "MirrorPolicy",
    "Percent",
    "QueryParamMatch",
    "Redirect",
    "RetryPolicy",
    "RouteAction",
    "RouteConfigResource",
    "RouteConfigType",
    "RouteEntry",
    "RouteMatch",
    "StringMatch",
    "TokenBucket",
    "VirtualHost",
    "decode_route_config",
]

_NO_MUTATIONS = HeaderMutations()
Fail = Callable[[str, str], ResourceError]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A route's match. ``kind`` is ``prefix``, ``path``, ``path_separated_prefix`` or
    ``safe_regex`` (full match of the path without its query); every header, query
    parameter, the runtime fraction and the gRPC flag must also match."""

    kind: str
    value: str
    case_sensitive: bool = True
    headers: tuple[HeaderMatch, ...] = ()
    query_parameters: tuple[QueryParamMatch, ...] = ()
    runtime_fraction: Percent | None = None
    grpc: bool = False


@dataclass(frozen=True, slots=True)
class ClusterWeight:
    name: str
    weight: int
    mutations: HeaderMutations = _NO_MUTATIONS
    host_rewrite_literal: str = ""
    fault: FaultConfig | None = None  # typed_per_filter_config override


@dataclass(frozen=True, slots=True)
class RouteAction:
    """Where a matched request goes (one cluster, a weighted set or a request header's
    value) and the policies that apply on the way."""

    cluster: str | None
    weighted_clusters: tuple[ClusterWeight, ...] = ()
    timeout: float | None = None  # None: unset (Envoy's 15 s); 0: no limit
    cluster_header: str = ""
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[str, str] | None = None  # (RE2 pattern, substitution)
    host_rewrite_literal: str = ""
    retry_policy: RetryPolicy | None = None
    hash_policy: tuple[HashPolicy, ...] = ()
    mirror_policies: tuple[MirrorPolicy, ...] = ()
    max_stream_duration: MaxStreamDuration | None = None
    priority: str = "DEFAULT"  # the circuit-breaker thresholds that apply: DEFAULT or HIGH

    def cluster_names(self) -> tuple[str, ...]:
        """Clusters this action can send to, mirrors included (not cluster_header)."""
        mirrors = tuple(m.cluster for m in self.mirror_policies)
        if self.cluster is not None:
            return (self.cluster, *mirrors)
        return (*(w.name for w in self.weighted_clusters), *mirrors)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    name: str
    match: RouteMatch
    action: RouteAction | None
    """None for a route that does not forward: it answers ``direct_response`` or
    ``redirect`` when one is set, else calls matching it fail (no route)."""
    mutations: HeaderMutations = _NO_MUTATIONS
    fault: FaultConfig | None = None  # typed_per_filter_config["...fault"] override
    direct_response: DirectResponse | None = None
    redirect: Redirect | None = None
    ratelimit: LocalRateLimitConfig | None = None  # typed_per_filter_config override


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[RouteEntry, ...]
    mutations: HeaderMutations = _NO_MUTATIONS
    retry_policy: RetryPolicy | None = None  # for routes that set none
    fault: FaultConfig | None = None
    mirror_policies: tuple[MirrorPolicy, ...] = ()
    ratelimit: LocalRateLimitConfig | None = None


@dataclass(frozen=True, slots=True)
class RouteConfigResource:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    mutations: HeaderMutations = _NO_MUTATIONS
    most_specific_header_mutations_wins: bool = False
    fault: FaultConfig | None = None
    ratelimit: LocalRateLimitConfig | None = None

    def cluster_names(self) -> frozenset[str]:
        """Every cluster any route of this config can send (or mirror) to."""
        names = {
            c
            for vh in self.virtual_hosts
            for r in vh.routes
            if r.action is not None
            for c in r.action.cluster_names()
        }
        names.update(m.cluster for vh in self.virtual_hosts for m in vh.mirror_policies)
        return frozenset(names)


class RouteConfigType:
    type_url = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    type_name = "RouteConfiguration"
    all_resources_required_in_sotw = False

    def decode(self, resource: any_pb2.Any) -> tuple[str, RouteConfigResource]:
        msg = unpack(resource, route_pb2.RouteConfiguration, self.type_name)
        if not msg.name:
            raise ResourceError(self.type_name, "", "name", "must not be empty")
        return msg.name, decode_route_config(msg, self.type_name, msg.name)


def decode_route_config(
    msg: route_pb2.RouteConfiguration, type_name: str, name: str, field_prefix: str = ""
) -> RouteConfigResource:
    """Validate a RouteConfiguration message (from RDS, or inline in a Listener where
    ``type_name``/``name`` name the Listener and ``field_prefix`` the path to it)."""

    def fail(field: str, problem: str) -> ResourceError:
        return ResourceError(type_name, name, field_prefix + field, problem)

    body_limit = DEFAULT_MAX_DIRECT_RESPONSE_BODY
    if msg.HasField("max_direct_response_body_size_bytes"):
        body_limit = msg.max_direct_response_body_size_bytes.value
    vhosts = []
    for i, vh in enumerate(msg.virtual_hosts):
        vpath = f"virtual_hosts[{i}]"
        if not vh.domains:
            raise fail(f"{vpath}.domains", "must list at least one domain")
        for j, d in enumerate(vh.domains):
            if not d:
                raise fail(f"{vpath}.domains[{j}]", "must not be empty")
            if d != "*" and d.count("*") and not (d.startswith("*") or d.endswith("*")):
                raise fail(f"{vpath}.domains[{j}]", f"wildcard only at start or end: {d!r}")
        routes = tuple(
            _route(r, f"{vpath}.routes[{k}]", fail, body_limit) for k, r in enumerate(vh.routes)
        )
        retry = None
        if vh.HasField("retry_policy"):
            retry = decode_retry_policy(vh.retry_policy, f"{vpath}.retry_policy", fail)
        vhosts.append(
            VirtualHost(
                vh.name,
                tuple(vh.domains),
                routes,
                decode_mutations(vh, f"{vpath}.", fail),
                retry,
                decode_fault_overrides(
                    vh.typed_per_filter_config, f"{vpath}.typed_per_filter_config", fail
                ),
                tuple(
                    decode_mirror_policy(m, f"{vpath}.request_mirror_policies[{k}]", fail)
                    for k, m in enumerate(vh.request_mirror_policies)
                ),
                decode_ratelimit_overrides(
                    vh.typed_per_filter_config, f"{vpath}.typed_per_filter_config", fail
                ),
            )
        )
    return RouteConfigResource(
        msg.name,
        tuple(vhosts),
        decode_mutations(msg, "", fail),
        bool(msg.most_specific_header_mutations_wins),
        decode_fault_overrides(msg.typed_per_filter_config, "typed_per_filter_config", fail),
        decode_ratelimit_overrides(msg.typed_per_filter_config, "typed_per_filter_config", fail),
    )


def _match(m: route_components_pb2.RouteMatch, path: str, fail: Fail) -> RouteMatch:
    which = m.WhichOneof("path_specifier")
    if which in ("prefix", "path", "path_separated_prefix"):
        value = getattr(m, which)
        if which == "path_separated_prefix" and (value.endswith("/") or "?" in value):
            raise fail(f"{path}.path_separated_prefix", "must not end in '/' or hold '?'")
    elif which == "safe_regex":
        value = decode_regex(m.safe_regex, f"{path}.safe_regex", fail)
    elif which is None:
        raise fail(path, "a path specifier (prefix, path, ...) is required")
    else:
        raise fail(f"{path}.{which}", "unsupported path specifier")
    fraction = None
    if m.HasField("runtime_fraction"):
        fraction = decode_percent(
            m.runtime_fraction.default_value, f"{path}.runtime_fraction.default_value", fail
        )
    for unsupported in ("tls_context", "dynamic_metadata", "filter_state"):
        if m.HasField(unsupported) if unsupported == "tls_context" else getattr(m, unsupported):
            raise fail(f"{path}.{unsupported}", "not supported by a client-side route")
    return RouteMatch(
        which,
        value,
        m.case_sensitive.value if m.HasField("case_sensitive") else True,
        tuple(
            decode_header_matcher(h, f"{path}.headers[{i}]", fail) for i, h in enumerate(m.headers)
        ),
        tuple(
            decode_query_matcher(q, f"{path}.query_parameters[{i}]", fail)
            for i, q in enumerate(m.query_parameters)
        ),
        fraction,
        m.HasField("grpc"),
    )


def _route(r: route_components_pb2.Route, path: str, fail: Fail, body_limit: int) -> RouteEntry:
    match = _match(r.match, f"{path}.match", fail)
    mutations = decode_mutations(r, f"{path}.", fail)
    fault = decode_fault_overrides(
        r.typed_per_filter_config, f"{path}.typed_per_filter_config", fail
    )
    limit = decode_ratelimit_overrides(
        r.typed_per_filter_config, f"{path}.typed_per_filter_config", fail
    )
    which = r.WhichOneof("action")
    if which == "direct_response":
        direct = decode_direct_response(
            r.direct_response, f"{path}.direct_response", body_limit, fail
        )
        return RouteEntry(r.name, match, None, mutations, fault, direct, ratelimit=limit)
    if which == "redirect":
        regex = match.kind == "safe_regex"
        redirect = decode_redirect(r.redirect, f"{path}.redirect", regex, fail)
        return RouteEntry(r.name, match, None, mutations, fault, redirect=redirect, ratelimit=limit)
    if which != "route":
        return RouteEntry(r.name, match, None, mutations, fault, ratelimit=limit)
    return RouteEntry(r.name, match, _action(r, path, fail), mutations, fault, ratelimit=limit)


def _action(r: route_components_pb2.Route, path: str, fail: Fail) -> RouteAction:
    a, apath = r.route, f"{path}.route"
    spec = a.WhichOneof("cluster_specifier")
    cluster: str | None = None
    weights: list[ClusterWeight] = []
    header = ""
    if spec == "cluster":
        if not a.cluster:
            raise fail(f"{apath}.cluster", "must not be empty")
        cluster = a.cluster
    elif spec == "cluster_header":
        header = a.cluster_header.lower()
        if not header or header.startswith(":"):
            raise fail(f"{apath}.cluster_header", f"not a usable header name: {a.cluster_header!r}")
    elif spec == "weighted_clusters":
        for i, cw in enumerate(a.weighted_clusters.clusters):
            wpath = f"{apath}.weighted_clusters.clusters[{i}]"
            if cw.cluster_header:
                raise fail(f"{wpath}.cluster_header", "not supported")
            if not cw.name:
                raise fail(f"{wpath}.name", "must not be empty")
            weights.append(
                ClusterWeight(
                    cw.name,
                    cw.weight.value,
                    decode_mutations(cw, f"{wpath}.", fail),
                    cw.host_rewrite_literal,
                    decode_fault_overrides(
                        cw.typed_per_filter_config, f"{wpath}.typed_per_filter_config", fail
                    ),
                )
            )
        if sum(w.weight for w in weights) <= 0:
            raise fail(f"{apath}.weighted_clusters", "total weight must be positive")
    else:
        raise fail(f"{apath}.cluster_specifier", f"unsupported: {spec}")
    prefix_rewrite: str | None = None
    if a.prefix_rewrite:
        if r.match.WhichOneof("path_specifier") == "safe_regex":
            raise fail(f"{apath}.prefix_rewrite", "cannot be used with a safe_regex match")
        prefix_rewrite = a.prefix_rewrite
    regex_rewrite = None
    if a.HasField("regex_rewrite"):
        if prefix_rewrite is not None:
            raise fail(f"{apath}.regex_rewrite", "cannot be combined with prefix_rewrite")
        pattern = decode_regex(a.regex_rewrite.pattern, f"{apath}.regex_rewrite.pattern", fail)
        regex_rewrite = (pattern, a.regex_rewrite.substitution)
    retry = None
    if a.HasField("retry_policy"):
        retry = decode_retry_policy(a.retry_policy, f"{apath}.retry_policy", fail)
    return RouteAction(
        cluster,
        tuple(weights),
        seconds(a, "timeout", apath, fail),
        header,
        prefix_rewrite,
        regex_rewrite,
        a.host_rewrite_literal,
        retry,
        tuple(
            decode_hash_policy(h, f"{apath}.hash_policy[{i}]", fail)
            for i, h in enumerate(a.hash_policy)
        ),
        tuple(
            decode_mirror_policy(m, f"{apath}.request_mirror_policies[{i}]", fail)
            for i, m in enumerate(a.request_mirror_policies)
        ),
        decode_max_stream_duration(a, apath, fail),
        _priority(a.priority, f"{apath}.priority", fail),
    )


def _priority(value: int, path: str, fail: Fail) -> str:
    """RoutingPriority: DEFAULT (0) or HIGH (1)."""
    if value == 0:
        return "DEFAULT"
    if value == 1:
        return "HIGH"
    raise fail(path, f"unknown RoutingPriority {value}")
