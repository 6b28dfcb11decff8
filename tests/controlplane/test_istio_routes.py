"""VirtualService -> routes: every HTTP field istiod translates, one test each."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2 as prio_pb2,
)
from envoy.type.v3 import percent_pb2

from meshlib.controlplane import ConfigError

from .istio_support import SUBSETS, cluster_of, load, routes


def vs(http: str) -> str:
    body = "\n".join("  " + line for line in http.strip().splitlines())
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
{body}
"""


def test_no_virtual_service_is_istiods_default_route(tmp_path: Path) -> None:
    (route,) = routes(load(tmp_path))
    assert route.match.prefix == "/"
    assert route.route.cluster == cluster_of()
    assert route.route.timeout.ToTimedelta().total_seconds() == 0
    assert route.route.max_stream_duration.max_stream_duration.seconds == 0
    policy = route.route.retry_policy
    assert policy.retry_on == (
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert policy.num_retries.value == 2
    assert policy.host_selection_retry_max_attempts == 5
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]


@pytest.mark.parametrize(
    ("match", "field", "value"),
    [
        ("uri: {exact: /reviews/1}", "path", "/reviews/1"),
        ("uri: {prefix: /reviews}", "prefix", "/reviews"),
        ("uri: {regex: '/reviews/[0-9]+'}", "safe_regex", "/reviews/[0-9]+"),
    ],
)
def test_uri_match(tmp_path: Path, match: str, field: str, value: str) -> None:
    res = load(
        tmp_path, vs(f"- match: [{{{match}}}]\n  route: [{{destination: {{host: reviews}}}}]")
    )
    (route,) = routes(res)
    assert route.match.WhichOneof("path_specifier") == field
    got = route.match.safe_regex.regex if field == "safe_regex" else getattr(route.match, field)
    assert got == value


def test_ignore_uri_case(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        vs(
            "- match: [{uri: {prefix: /A}, ignoreUriCase: true}]\n"
            "  route: [{destination: {host: reviews}}]"
        ),
    )
    assert routes(res)[0].match.case_sensitive.value is False


def test_header_query_method_authority_matches(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        vs(
            """
- match:
  - headers:
      end-user: {exact: jason}
      x-canary: {prefix: "can"}
      x-trace: {regex: 'a+'}
    queryParams:
      debug: {exact: "1"}
    method: {exact: GET}
    authority: {prefix: reviews}
  route: [{destination: {host: reviews}}]
"""
        ),
    )
    (route,) = routes(res)
    headers = {h.name: h.string_match for h in route.match.headers}
    assert headers["end-user"].exact == "jason"
    assert headers["x-canary"].prefix == "can"
    assert headers["x-trace"].safe_regex.regex == "a+"
    assert headers[":method"].exact == "GET"
    assert headers[":authority"].prefix == "reviews"
    (query,) = route.match.query_parameters
    assert (query.name, query.string_match.exact) == ("debug", "1")
    assert route.match.prefix == "/"


def test_matches_are_ored_into_routes_with_one_action(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        vs(
            """
- name: two
  match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
  route: [{destination: {host: reviews, subset: v2}}]
- route: [{destination: {host: reviews, subset: v1}}]
"""
        ),
    )
    got = [(r.name, r.match.prefix, r.route.cluster) for r in routes(res)]
    assert got == [
        ("two", "/a", cluster_of("v2")),
        ("two", "/b", cluster_of("v2")),
        ("", "/", cluster_of("v1")),
    ]


def test_weighted_subsets(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        vs(
            """
- route:
  - {destination: {host: reviews, subset: v1}, weight: 75}
  - {destination: {host: reviews, subset: v3}, weight: 25}
"""
        ),
    )
    weights = routes(res)[0].route.weighted_clusters.clusters
    assert [(w.name, w.weight.value) for w in weights] == [
        (cluster_of("v1"), 75),
        (cluster_of("v3"), 25),
    ]


def test_rewrite_uri_and_authority(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        vs(
            """
- match: [{uri: {prefix: /old}}]
  rewrite: {uri: /new, authority: ratings.default.svc.cluster.local}
  route: [{destination: {host: reviews}}]
- match: [{uri: {regex: '/r/(.*)'}}]
  rewrite: {uri: /x}
  route: [{destination: {host: reviews}}]
"""
        ),
    )
    first, second = routes(res)
    assert first.route.prefix_rewrite == "/new"
    assert first.route.host_rewrite_literal == "ratings.default.svc.cluster.local"
    assert second.route.regex_rewrite.pattern.regex == "/r/(.*)"
    assert second.route.regex_rewrite.substitution == "/x"


def test_timeout_sets_route_timeout_and_max_stream_duration(tmp_path: Path) -> None:
    res = load(tmp_path, vs("- timeout: 1.5s\n  route: [{destination: {host: reviews}}]"))
    action = routes(res)[0].route
    assert action.timeout.ToMilliseconds() == 1500
    assert action.max_stream_duration.max_stream_duration.ToMilliseconds() == 1500
    assert action.max_stream_duration.grpc_timeout_header_max.ToMilliseconds() == 1500


def test_retries(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        vs(
            """
- retries: {attempts: 4, perTryTimeout: 250ms, retryOn: "5xx,503,reset",
            retryRemoteLocalities: true}
  route: [{destination: {host: reviews}}]
"""
        ),
    )
    policy = routes(res)[0].route.retry_policy
    assert policy.num_retries.value == 4
    assert policy.per_try_timeout.ToMilliseconds() == 250
    assert policy.retry_on == "5xx,reset,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [503]
    assert policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    prio = prio_pb2.PreviousPrioritiesConfig()
    assert policy.retry_priority.typed_config.Unpack(prio)
    assert prio.update_frequency == 2


def test_zero_attempts_disables_retries(tmp_path: Path) -> None:
    res = load(tmp_path, vs("- retries: {attempts: 0}\n  route: [{destination: {host: reviews}}]"))
    assert not routes(res)[0].route.HasField("retry_policy")


def test_fault_delay_and_abort_percentages(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        vs(
            """
- fault:
    delay: {fixedDelay: 2s, percentage: {value: 12.5}}
    abort: {httpStatus: 503, percentage: {value: 0.1}}
  route: [{destination: {host: reviews}}]
- fault:
    abort: {grpcStatus: UNAVAILABLE}
  route: [{destination: {host: reviews}}]
"""
        ),
    )
    first, second = routes(res)
    fault = fault_pb2.HTTPFault()
    assert first.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    million = percent_pb2.FractionalPercent.MILLION
    assert fault.delay.fixed_delay.seconds == 2
    assert (fault.delay.percentage.numerator, fault.delay.percentage.denominator) == (
        125_000,
        million,
    )
    assert fault.abort.http_status == 503
    assert fault.abort.percentage.numerator == 1_000
    assert second.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.abort.grpc_status == 14
    assert fault.abort.percentage.numerator == 1_000_000


def test_mirror_with_percentage(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        vs(
            """
- route: [{destination: {host: reviews, subset: v1}}]
  mirror: {host: reviews, subset: v2}
  mirrorPercentage: {value: 25}
- route: [{destination: {host: reviews}}]
  mirror: {host: ratings}
"""
        ),
    )
    first, second = routes(res)
    (mirror,) = first.route.request_mirror_policies
    assert mirror.cluster == cluster_of("v2")
    assert mirror.runtime_fraction.default_value.numerator == 250_000
    (mirror,) = second.route.request_mirror_policies
    assert mirror.cluster == cluster_of(host="ratings.default.svc.cluster.local")
    assert mirror.runtime_fraction.default_value.numerator == 1_000_000


def test_header_operations(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        vs(
            """
- headers:
    request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
    response: {set: {x-d: "4"}, remove: [server]}
  route: [{destination: {host: reviews}}]
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
    headers: {request: {set: {x-version: v1}}}
  - destination: {host: reviews, subset: v2}
    weight: 50
"""
        ),
    )
    first, second = routes(res)
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    got = [(h.header.key, h.header.value, h.append_action) for h in first.request_headers_to_add]
    assert got == [("x-a", "1", overwrite), ("x-b", "2", append)]
    assert list(first.request_headers_to_remove) == ["x-c"]
    assert [h.header.key for h in first.response_headers_to_add] == ["x-d"]
    assert list(first.response_headers_to_remove) == ["server"]
    v1 = second.route.weighted_clusters.clusters[0]
    assert [(h.header.key, h.header.value) for h in v1.request_headers_to_add] == [
        ("x-version", "v1")
    ]


def test_unknown_subset_or_host_is_reported_and_left_out(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        SUBSETS,
        vs(
            """
- route:
  - {destination: {host: reviews, subset: v9}, weight: 50}
  - {destination: {host: reviews, subset: v1}, weight: 50}
- route: [{destination: {host: nowhere}}]
"""
        ),
    )
    (route,) = routes(res)
    assert route.route.cluster == cluster_of("v1")
    assert res.problems == (
        "VirtualService default/reviews: spec.http[0].route[0].destination: "
        "reviews.default.svc.cluster.local has no subset 'v9'",
        "VirtualService default/reviews: spec.http[1].route[0].destination.host: "
        "no Service or ServiceEntry 'nowhere'",
    )


@pytest.mark.parametrize(
    ("http", "error"),
    [
        ("- route: []", r"spec\.http\[0\]\.route: must list at least one destination"),
        (
            "- match: [{uri: {regex: '('}}]\n  route: [{destination: {host: reviews}}]",
            r"spec\.http\[0\]\.match\[0\]\.uri\.regex: invalid RE2 regex",
        ),
        (
            "- fault: {abort: {httpStatus: 700}}\n  route: [{destination: {host: reviews}}]",
            r"spec\.http\[0\]\.fault\.abort\.httpStatus: must be an HTTP status",
        ),
        (
            "- timeout: soon\n  route: [{destination: {host: reviews}}]",
            r"spec\.http\[0\]\.timeout: 'soon' is not a duration",
        ),
        (
            "- retries: {attempts: 2, retryOn: sometimes}\n"
            "  route: [{destination: {host: reviews}}]",
            r"spec\.http\[0\]\.retries\.retryOn: unknown retry condition 'sometimes'",
        ),
        (
            "- route: [{destination: {host: reviews}, weight: 101}]",
            r"spec\.http\[0\]\.route\[0\]\.weight: must be an integer 0-100",
        ),
    ],
)
def test_bad_virtual_service_names_file_kind_object_and_field(
    tmp_path: Path, http: str, error: str
) -> None:
    with pytest.raises(
        ConfigError, match=rf"config\.yaml: VirtualService default/reviews: {error}"
    ):
        load(tmp_path, vs(http))
