"""VirtualService HTTP rules -> Envoy ``Route`` messages, as istiod translates them.

One VirtualService rule becomes one route per ``match`` entry (matches are ORed), each
with the same action: a cluster or weighted clusters (subset clusters
``outbound|port|subset|host``), rewrites, timeout (also as ``max_stream_duration`` for
gRPC clients), retry policy (istiod's default when unset), fault injection as
per-route config of ``envoy.filters.http.fault``, mirroring, header edits, and the
consistent-hash policy of the destination's DestinationRule.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2 as prio_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from ..objects._istio_networking import (
    GRPC_CODES,
    Destination,
    HeaderOps,
    HttpMatch,
    HttpRoute,
    Redirect,
    StringMatch,
    VirtualService,
)
from ._registry import MeshService
from ._rules import RuleIndex, cluster_name

__all__ = [
    "DEFAULT_RETRY_ON",
    "FAULT_FILTER",
    "ROUTER_FILTER",
    "default_route",
    "duration",
    "http_filters",
    "per_caller",
    "route_clusters",
    "routes_for",
    "vhost_domains",
]

FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_GRPC_CODES = {name: i for i, name in enumerate(GRPC_CODES)}


def duration(seconds: float) -> duration_pb2.Duration:
    """A protobuf Duration of ``seconds``."""
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


def _fraction(percent: float) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def _string_matcher(m: StringMatch, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if m.kind == "regex":
        return string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(
                google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=m.value
            )
        )
    out = string_pb2.StringMatcher(ignore_case=ignore_case)
    setattr(out, m.kind, m.value)
    return out


def _route_match(m: HttpMatch) -> rc.RouteMatch:
    out = rc.RouteMatch()
    uri = m.uri
    if uri is None:
        out.prefix = "/"
    elif uri.kind == "exact":
        out.path = uri.value
    elif uri.kind == "prefix":
        out.prefix = uri.value
    else:
        out.safe_regex.google_re2.SetInParent()
        out.safe_regex.regex = uri.value
    if m.ignore_uri_case:
        out.case_sensitive.value = False
    headers = dict(m.headers)
    if m.method is not None:
        headers[":method"] = m.method
    if m.authority is not None:
        headers[":authority"] = m.authority
    for name in sorted(headers):
        out.headers.append(rc.HeaderMatcher(name=name, string_match=_string_matcher(headers[name])))
    for name in sorted(m.query_params):
        out.query_parameters.append(
            rc.QueryParameterMatcher(name=name, string_match=_string_matcher(m.query_params[name]))
        )
    return out


def _header_options(ops: HeaderOps) -> list[base_pb2.HeaderValueOption]:
    out = []
    for values, action in (
        (ops.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        (ops.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    ):
        for key in sorted(values):
            out.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=key, value=values[key]), append_action=action
                )
            )
    return out


def _merge_ops(*ops: HeaderOps) -> HeaderOps:
    return HeaderOps(
        set={k: v for o in ops for k, v in o.set.items()},
        add={k: v for o in ops for k, v in o.add.items()},
        remove=tuple(dict.fromkeys(h for o in ops for h in o.remove)),
    )


def _retry_policy(rule: HttpRoute | None) -> rc.RetryPolicy | None:
    retries = rule.retries if rule is not None else None
    if retries is not None and retries.attempts == 0:
        return None
    policy = rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=2),
        host_selection_retry_max_attempts=5,
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=_pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
    )
    if retries is None:
        return policy
    policy.num_retries.value = retries.attempts
    if not retries.retry_ignore_previous_hosts:
        del policy.retry_host_predicate[:]
        policy.ClearField("host_selection_retry_max_attempts")
    if retries.backoff is not None:
        policy.retry_back_off.base_interval.CopyFrom(duration(retries.backoff))
    if retries.retry_on:
        parts = [p.strip() for p in retries.retry_on.split(",") if p.strip()]
        codes = [int(p) for p in parts if p.isdigit()]
        names = [p for p in parts if not p.isdigit()]
        if codes and "retriable-status-codes" not in names:
            names.append("retriable-status-codes")
        policy.retry_on = ",".join(names)
        policy.retriable_status_codes.extend(codes)
    if retries.per_try_timeout is not None:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    if retries.retry_remote_localities:
        policy.retry_priority.name = "envoy.retry_priorities.previous_priorities"
        policy.retry_priority.typed_config.CopyFrom(
            _pack(prio_pb2.PreviousPrioritiesConfig(update_frequency=2))
        )
    return policy


def _fault(rule: HttpRoute) -> fault_pb2.HTTPFault | None:
    f = rule.fault
    if f is None:
        return None
    out = fault_pb2.HTTPFault()
    if f.delay is not None:
        out.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(f.delay), percentage=_fraction(f.delay_percent)
            )
        )
    if f.abort_http_status is not None:
        out.abort.http_status = f.abort_http_status
        out.abort.percentage.CopyFrom(_fraction(f.abort_percent))
    elif f.abort_grpc_status is not None:
        out.abort.grpc_status = _GRPC_CODES[f.abort_grpc_status]
        out.abort.percentage.CopyFrom(_fraction(f.abort_percent))
    return out


def _hash_policies(
    index: RuleIndex, service: MeshService, port: int
) -> list[rc.RouteAction.HashPolicy]:
    lb = index.policy(service, port).load_balancer
    chash = lb.consistent_hash if lb is not None else None
    if chash is None:
        return []
    hp = rc.RouteAction.HashPolicy()
    if chash.key == "header":
        hp.header.header_name = chash.name
    elif chash.key == "cookie":
        hp.cookie.name = chash.name
        hp.cookie.path = chash.cookie_path
        if chash.cookie_ttl is not None:
            hp.cookie.ttl.CopyFrom(duration(chash.cookie_ttl))
    elif chash.key == "source_ip":
        hp.connection_properties.source_ip = True
    else:
        hp.query_parameter.name = chash.name
    return [hp]


def _timeouts(action: rc.RouteAction, timeout: float | None) -> None:
    limit = duration(timeout or 0.0)
    action.timeout.CopyFrom(limit)
    action.max_stream_duration.max_stream_duration.CopyFrom(limit)
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(limit)


def default_route(index: RuleIndex, service: MeshService, port: int) -> rc.Route:
    """istiod's route for a service without VirtualService: ``/`` to its cluster."""
    action = rc.RouteAction(cluster=cluster_name(port, service.hostname))
    _timeouts(action, None)
    action.hash_policy.extend(_hash_policies(index, service, port))
    retry = _retry_policy(None)
    assert retry is not None
    action.retry_policy.CopyFrom(retry)
    return rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action)


def _resolve(
    index: RuleIndex, vs: VirtualService, dest: Destination, port: int, path: str
) -> tuple[MeshService, int] | None:
    svc = index.registry.lookup(dest.host, vs.namespace)
    if svc is None:
        index.problem(vs, f"{path}.host", f"no Service or ServiceEntry {dest.host!r}")
        return None
    if dest.port is not None:
        dport = dest.port
    elif len(svc.ports) == 1:
        dport = svc.ports[0].number
    else:
        dport = port
    if not index.has_cluster(svc, dport, dest.subset):
        what = f"subset {dest.subset!r}" if svc.port(dport) else f"port {dport}"
        index.problem(vs, path, f"{svc.hostname} has no {what}")
        return None
    return svc, dport


def _action(
    index: RuleIndex, vs: VirtualService, rule: HttpRoute, rpath: str, port: int
) -> tuple[rc.RouteAction, HeaderOps, HeaderOps] | None:
    targets = []
    for i, rd in enumerate(rule.route):
        found = _resolve(index, vs, rd.destination, port, f"{rpath}.route[{i}].destination")
        if found is not None:
            targets.append((rd, found[0], found[1]))
    if not targets:
        return None
    action = rc.RouteAction()
    req, resp = rule.request_headers, rule.response_headers
    if len(targets) == 1:
        rd, svc, dport = targets[0]
        action.cluster = cluster_name(dport, svc.hostname, rd.destination.subset)
        req, resp = _merge_ops(req, rd.request_headers), _merge_ops(resp, rd.response_headers)
    else:
        for rd, svc, dport in targets:
            cw = action.weighted_clusters.clusters.add(
                name=cluster_name(dport, svc.hostname, rd.destination.subset)
            )
            cw.weight.value = rd.weight or 0
            cw.request_headers_to_add.extend(_header_options(rd.request_headers))
            cw.request_headers_to_remove.extend(rd.request_headers.remove)
            cw.response_headers_to_add.extend(_header_options(rd.response_headers))
            cw.response_headers_to_remove.extend(rd.response_headers.remove)
    _timeouts(action, rule.timeout)
    retry = _retry_policy(rule)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    if rule.rewrite_authority:
        action.host_rewrite_literal = rule.rewrite_authority
    _, first_svc, first_port = targets[0]
    action.hash_policy.extend(_hash_policies(index, first_svc, first_port))
    for mirror in rule.mirrors:
        found = _resolve(index, vs, mirror.destination, port, f"{rpath}.{mirror.path}")
        if found is not None:
            action.request_mirror_policies.add(
                cluster=cluster_name(found[1], found[0].hostname, mirror.destination.subset),
                runtime_fraction=base_pb2.RuntimeFractionalPercent(
                    default_value=_fraction(mirror.percent)
                ),
            )
    return action, req, resp


_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def _redirect(redirect: Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(response_code=_REDIRECT_CODES[redirect.code])
    if redirect.uri is not None:
        out.path_redirect = redirect.uri
    if redirect.authority is not None:
        out.host_redirect = redirect.authority
    if redirect.port is not None:
        out.port_redirect = redirect.port
    if redirect.scheme is not None:
        out.scheme_redirect = redirect.scheme
    return out


def _route_name(rule: HttpRoute, match: HttpMatch) -> str:
    """istiod's route name: the rule's name, then ``.<match name>`` when the match has one."""
    if rule.name and match.name:
        return f"{rule.name}.{match.name}"
    return rule.name or match.name


def per_caller(index: RuleIndex, service: MeshService) -> bool:
    """True when the service's routes depend on the caller (sourceLabels, sourceNamespace)."""
    return any(
        m.per_caller
        for vs in index.virtual_services(service)
        for rule in vs.http
        for m in rule.match
    )


def routes_for(
    index: RuleIndex,
    service: MeshService,
    port: int,
    caller: tuple[str, Mapping[str, str]] | None = None,
) -> list[rc.Route]:
    """The routes of route configuration ``outbound|port||host``, for ``caller``
    (namespace, labels): a match whose sourceLabels or sourceNamespace the caller does not
    carry is left out, as istiod builds each proxy's routes. Without a caller, such
    matches are left out too (see :func:`per_caller`)."""
    vss = index.virtual_services(service)
    if not vss:
        return [default_route(index, service, port)]
    namespace, labels = caller if caller is not None else ("", {})
    out: list[rc.Route] = []
    for vs in vss:
        for i, rule in enumerate(vs.http):
            rpath = f"spec.http[{i}]"
            matches = [
                m
                for m in rule.match
                if m.port in (None, port)
                and (caller is not None or not m.per_caller)
                and m.applies_to(namespace, labels)
            ]
            if rule.match and not matches:
                continue  # no match applies here: the rule is not a catch-all
            matches = matches or [HttpMatch()]
            if rule.redirect is not None:
                for m in matches:
                    route = rc.Route(name=_route_name(rule, m), match=_route_match(m))
                    route.redirect.CopyFrom(_redirect(rule.redirect))
                    out.append(route)
                continue
            if rule.direct_response is not None:
                for m in matches:
                    route = rc.Route(name=rule.name, match=_route_match(m))
                    route.direct_response.status = rule.direct_response.status
                    if rule.direct_response.body:
                        route.direct_response.body.inline_bytes = rule.direct_response.body
                    out.append(route)
                continue
            built = _action(index, vs, rule, rpath, port)
            if built is None:
                continue
            action, req, resp = built
            fault = _fault(rule)
            for m in matches:
                route = rc.Route(name=_route_name(rule, m), match=_route_match(m))
                route.route.CopyFrom(action)
                if rule.regex_rewrite is not None:
                    route.route.regex_rewrite.pattern.google_re2.SetInParent()
                    route.route.regex_rewrite.pattern.regex = rule.regex_rewrite[0]
                    route.route.regex_rewrite.substitution = rule.regex_rewrite[1]
                elif rule.rewrite_uri is not None:
                    if m.uri is not None and m.uri.kind == "regex":
                        route.route.regex_rewrite.pattern.google_re2.SetInParent()
                        route.route.regex_rewrite.pattern.regex = m.uri.value
                        route.route.regex_rewrite.substitution = rule.rewrite_uri
                    else:
                        route.route.prefix_rewrite = rule.rewrite_uri
                route.request_headers_to_add.extend(_header_options(req))
                route.request_headers_to_remove.extend(req.remove)
                route.response_headers_to_add.extend(_header_options(resp))
                route.response_headers_to_remove.extend(resp.remove)
                if fault is not None:
                    route.typed_per_filter_config[FAULT_FILTER].CopyFrom(_pack(fault))
                out.append(route)
    return out


def vhost_domains(service: MeshService, port: int) -> list[str]:
    """Every host a client may dial for this port, with and without ``:<port>``."""
    hosts = service.aliases()
    for ip in service.addresses:
        hosts.append(f"[{ip}]" if ":" in ip else ip)
    out: list[str] = []
    for host in hosts:
        out += [host, f"{host}:{port}"]
    return out


def http_filters() -> list[hcm_pb2.HttpFilter]:
    """istiod's outbound HTTP filters: fault injection, then the router."""
    return [
        hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=_pack(fault_pb2.HTTPFault())),
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=_pack(router_pb2.Router())),
    ]


def route_clusters(rc: route_pb2.RouteConfiguration) -> set[str]:
    """Every cluster a route configuration can send (or mirror) traffic to."""
    names: set[str] = set()
    for vh in rc.virtual_hosts:
        for route in vh.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                names.add(action.cluster)
            names.update(cw.name for cw in action.weighted_clusters.clusters)
            names.update(m.cluster for m in action.request_mirror_policies)
    return names
