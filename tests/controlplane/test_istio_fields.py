"""Istio fields that meshlib now honours (issue 15): each translated as istiod does."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from meshlib.controlplane import ENDPOINT_TYPE, ROUTE_TYPE, ConfigError, NodeView

from .istio_support import REVIEWS, ROUTE, SUBSETS, cluster, cluster_of, load, routes, view

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
"""


def _routes_for(resources: object, node: NodeView) -> list[rc.Route]:
    table = view(resources, ROUTE_TYPE, node)  # type: ignore[arg-type]
    return list(table[ROUTE].virtual_hosts[0].routes)


def test_source_labels_and_namespace_route_per_caller(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        VS
        + """\
  - match: [{sourceLabels: {app: productpage, version: v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceNamespace: test}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""",
    )
    caller = NodeView(labels=(("app", "productpage"), ("version", "v2")))
    assert [r.route.cluster for r in _routes_for(res, caller)] == [
        cluster_of("v2"),
        cluster_of("v1"),
    ]
    # A caller without the labels never matches that rule (it is not a catch-all).
    other = NodeView(labels=(("app", "productpage"), ("version", "v1")))
    assert [r.route.cluster for r in _routes_for(res, other)] == [cluster_of("v1")]
    in_test = NodeView(namespace="test")
    assert [r.route.cluster for r in _routes_for(res, in_test)] == [
        cluster_of("v3"),
        cluster_of("v1"),
    ]
    envoy = NodeView(kind="envoy", listener_ports=((9080, 15001),), labels=caller.labels)
    (vhost,) = [
        vh for vh in view(res, ROUTE_TYPE, envoy)["9080"].virtual_hosts if REVIEWS in vh.name
    ]
    envoy_routes = vhost.routes
    assert [r.route.cluster for r in envoy_routes] == [cluster_of("v2"), cluster_of("v1")]


def test_match_gateways_without_mesh_do_not_apply(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        VS
        + """\
  - match: [{gateways: [istio-system/ingress], uri: {prefix: /x}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""",
    )
    assert [r.route.cluster for r in routes(res)] == [cluster_of("v1")]


def test_several_mirrors_each_with_its_percentage(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        VS
        + """\
  - route: [{destination: {host: reviews, subset: v1}}]
    mirrors:
    - {destination: {host: reviews, subset: v2}, percentage: {value: 25}}
    - {destination: {host: ratings}}
""",
    )
    (route,) = routes(res)
    mirrors = [
        (m.cluster, m.runtime_fraction.default_value.numerator)
        for m in route.route.request_mirror_policies
    ]
    assert mirrors == [
        (cluster_of("v2"), 250_000),
        (cluster_of(host="ratings.default.svc.cluster.local"), 1_000_000),
    ]


def test_mirror_with_deprecated_integer_percent(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        VS
        + """\
  - route: [{destination: {host: reviews}}]
    mirror: {host: ratings}
    mirrorPercent: 30
""",
    )
    (policy,) = routes(res)[0].route.request_mirror_policies
    assert policy.runtime_fraction.default_value.numerator == 300_000


def test_deprecated_fault_delay_percent_is_read_as_istiod_does(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        VS
        + """\
  - route: [{destination: {host: reviews}}]
    fault: {delay: {fixedDelay: 2s, percent: 10}}
""",
    )
    fault = fault_pb2.HTTPFault()
    routes(res)[0].typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    pct = fault.delay.percentage
    assert pct.numerator / 10**6 == pytest.approx(0.10)


def test_redirect_only_rule_becomes_an_envoy_redirect(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        VS
        + """\
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: ratings, redirectCode: 308}
  - route: [{destination: {host: reviews}}]
""",
    )
    first = routes(res)[0]
    assert first.WhichOneof("action") == "redirect"
    assert first.redirect.path_redirect == "/new"
    assert first.redirect.host_redirect == "ratings"
    assert first.redirect.response_code == rc.RedirectAction.PERMANENT_REDIRECT


def test_redirect_and_route_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"spec\.http\[0\]\.redirect: cannot be set together"):
        load(
            tmp_path,
            VS + "  - {route: [{destination: {host: reviews}}], redirect: {uri: /x}}\n",
        )


def test_direct_response_rule_becomes_an_envoy_direct_response(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        VS
        + """\
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - match: [{uri: {prefix: /b}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - match: [{uri: {prefix: /empty}}]
    directResponse: {status: 204}
  - route: [{destination: {host: reviews}}]
""",
    )
    teapot, raw, empty = routes(res)[:3]
    assert teapot.WhichOneof("action") == "direct_response"
    assert (teapot.direct_response.status, teapot.direct_response.body.inline_bytes) == (
        418,
        b"short and stout",
    )
    assert raw.direct_response.body.inline_bytes == b"hello"
    assert empty.direct_response.status == 204 and not empty.direct_response.HasField("body")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "{route: [{destination: {host: reviews}}], directResponse: {status: 200}}",
            r"spec\.http\[0\]\.directResponse: cannot be set together",
        ),
        ("{directResponse: {status: 700}}", r"spec\.http\[0\]\.directResponse\.status"),
        (
            "{directResponse: {status: 200, body: {bytes: '!!'}}}",
            r"spec\.http\[0\]\.directResponse\.body\.bytes: not base64",
        ),
        (
            "{directResponse: {status: 200, body: {string: " + "x" * 5000 + "}}}",
            r"spec\.http\[0\]\.directResponse\.body: 5000 bytes",
        ),
    ],
)
def test_bad_direct_responses_are_refused(tmp_path: Path, rule: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, VS + f"  - {rule}\n")


def test_uri_regex_rewrite_retry_backoff_and_previous_hosts(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        VS
        + """\
  - route: [{destination: {host: reviews}}]
    rewrite: {uriRegexRewrite: {match: "^/v1/(.*)", rewrite: '/\\1'}}
    retries: {attempts: 3, backoff: 250ms, retryIgnorePreviousHosts: false}
""",
    )
    (route,) = routes(res)
    assert route.route.regex_rewrite.pattern.regex == "^/v1/(.*)"
    assert route.route.regex_rewrite.substitution == "/\\1"
    policy = route.route.retry_policy
    assert policy.retry_back_off.base_interval.ToMilliseconds() == 250
    assert list(policy.retry_host_predicate) == []


DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
"""


def test_retry_budget_becomes_envoy_thresholds(tmp_path: Path) -> None:
    res = load(tmp_path, DR + "    retryBudget: {percent: 30, minRetryConcurrency: 5}\n")
    (t,) = cluster(res, cluster_of()).circuit_breakers.thresholds
    assert t.retry_budget.budget_percent.value == 30
    assert t.retry_budget.min_retry_concurrency.value == 5


def test_failover_priority_orders_endpoints_by_the_callers_labels(tmp_path: Path) -> None:
    # reviews v1/v2/v3 endpoints carry version labels; the caller is a v2.
    res = load(
        tmp_path,
        DR
        + """\
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer:
      localityLbSetting: {failoverPriority: [version, "app=reviews"]}
""",
    )
    node = NodeView(labels=(("app", "web"), ("version", "v2")))
    cla: endpoint_pb2.ClusterLoadAssignment = view(res, ENDPOINT_TYPE, node)[cluster_of()]
    prio = {
        loc.lb_endpoints[0].endpoint.address.socket_address.port_value: loc.priority
        for loc in cla.endpoints
    }
    assert prio == {19002: 0, 19001: 1, 19003: 1}


def test_authorization_policy_custom_fails_closed_and_is_reported(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz}
spec:
  action: CUSTOM
  provider: {name: my-authz}
  rules: [{to: [{operation: {paths: [/admin]}}]}]
""",
    )
    assert any(
        "AuthorizationPolicy default/ext-authz: spec.action: CUSTOM" in p
        and "not supported by meshlib" in p
        and "denied" in p
        for p in res.problems
    )


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "300.1.1.1", "abc", "10.0.0.0/x"])
@pytest.mark.parametrize("field", ["ipBlocks", "notIpBlocks", "remoteIpBlocks"])
def test_bad_ip_blocks_are_refused_with_the_path(tmp_path: Path, bad: str, field: str) -> None:
    doc = f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ips}}
spec:
  rules: [{{from: [{{source: {{{field}: [10.1.0.0/16, "{bad}"]}}}}]}}]
"""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, doc)
    assert (
        f"AuthorizationPolicy default/ips: spec.rules[0].from[0].source.{field}[1]: "
        f"{bad!r} is not an IP address or CIDR block"
    ) in str(info.value)


def test_service_entry_without_ports_and_unreachable_workload_entries(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: noports}
spec: {hosts: [api.example.com], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: remote}
spec: {network: net-2, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sock}
spec: {address: unix:///var/run/app.sock, labels: {app: reviews}}
""",
    )
    assert not any("api.example.com" in name for name in res.shared[ROUTE_TYPE])
    problems = "\n".join(res.problems)
    assert "WorkloadEntry default/remote: spec.address: no address" in problems
    assert "WorkloadEntry default/sock: spec.address: a Unix domain socket" in problems
