"""Per-call routing work: plans shared by the calls of a route that nothing per call
changes, the gRPC deadline taken from ``Call.timeout`` rather than re-parsed from the
``grpc-timeout`` header, and fault configs that inject nothing compiled away."""

from __future__ import annotations

from typing import Any

import pytest

from meshlib import Call
from meshlib.resilience.timeouts import route_timeout
from meshlib.routing import RoutePlan, RouteTable
from tests.meshlib.xds_builders import table

GRPC = {"content-type": "application/grpc"}
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def plan_of(t: RouteTable, call: Call) -> RoutePlan:
    plan = t.route(call)
    assert plan is not None
    return plan


def grpc_call(timeout: float | None, header: str | None = None) -> Call:
    headers = dict(GRPC)
    if header is not None:
        headers["grpc-timeout"] = header
    return Call("h:80", "POST", "/pkg.Svc/M", headers, timeout=timeout)


def test_a_fixed_route_hands_every_call_the_same_plan() -> None:
    t = table({"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "3s"}})
    first = plan_of(t, Call("h:80", "GET", "/a"))
    again = plan_of(t, Call("other:80", "GET", "/b?x=1", {"x-user": "u"}))
    assert first is again
    assert (first.cluster, first.timeout, first.path, first.authority) == ("c", 3.0, None, None)


@pytest.mark.parametrize(
    "action",
    [
        {
            "weighted_clusters": {
                "clusters": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]
            }
        },
        {"cluster": "c", "prefix_rewrite": "/v2/"},
        {"cluster": "c", "hash_policy": [{"header": {"header_name": "x-user"}}]},
        {"cluster_header": "x-cluster"},
    ],
    ids=["weighted", "rewrite", "hash", "cluster_header"],
)
def test_routes_that_depend_on_the_call_get_a_plan_per_call(action: dict[str, Any]) -> None:
    t = table({"match": {"prefix": "/"}, "route": action})
    calls = [
        Call("h:80", "GET", f"/p{i}", {"x-user": f"u{i}", "x-cluster": f"k{i}"}) for i in range(40)
    ]
    plans = [plan_of(t, c) for c in calls]
    assert len({id(p) for p in plans}) == len(plans)
    if "weighted_clusters" in action:
        assert {p.cluster for p in plans} == {"a", "b"}
    elif "prefix_rewrite" in action:
        assert plans[3].path == "/v2/p3"
    elif "hash_policy" in action:
        assert len({p.hash_key for p in plans}) == len(plans)
    else:
        assert plans[7].cluster == "k7"


@pytest.mark.parametrize(
    ("mds", "call", "expected"),
    [
        ({"grpc_timeout_header_max": "0s"}, grpc_call(2.5, "5S"), 2.5),  # the number wins
        ({"grpc_timeout_header_max": "0s"}, grpc_call(None, "5S"), 5.0),  # else the header
        ({"grpc_timeout_header_max": "1s"}, grpc_call(2.5), 1.0),  # capped at the max
        ({"grpc_timeout_header_max": "1s"}, grpc_call(0.0), 1.0),  # 0: as if no deadline
        ({"grpc_timeout_header_max": "0s"}, grpc_call(0.0), None),
        ({"grpc_timeout_header_max": "0s"}, grpc_call(-1.0), None),  # already past
        (
            {"grpc_timeout_header_max": "0s", "grpc_timeout_header_offset": "0.1s"},
            grpc_call(1.0),
            0.9,
        ),
        (
            {"grpc_timeout_header_max": "0s", "max_stream_duration": "0.5s"},
            grpc_call(2.0),
            0.5,
        ),
    ],
)
def test_call_timeout_is_the_grpc_deadline(
    mds: dict[str, str], call: Call, expected: float | None
) -> None:
    t = table({"match": {"prefix": "/"}, "route": {"cluster": "c", "max_stream_duration": mds}})
    assert plan_of(t, call).timeout == pytest.approx(expected)


def test_call_timeout_of_a_non_grpc_call_is_ignored() -> None:
    route = {
        "cluster": "c",
        "timeout": "2s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    }
    t = table({"match": {"prefix": "/"}, "route": route})
    assert plan_of(t, Call("h:80", "GET", "/", {}, timeout=1.0)).timeout == 2.0


def test_grpc_deadline_plans_are_shared_per_timeout_value() -> None:
    route = {"cluster": "c", "max_stream_duration": {"grpc_timeout_header_max": "0s"}}
    t = table({"match": {"prefix": "/"}, "route": route})
    five = plan_of(t, grpc_call(5.0))
    assert plan_of(t, grpc_call(5.0)) is five
    other = plan_of(t, grpc_call(7.0))
    assert (five.timeout, other.timeout) == (5.0, 7.0)
    # many distinct deadlines (an inbound deadline shrinking): each plan is still right
    for i in range(3000):
        assert plan_of(t, grpc_call(1 + i / 1000)).timeout == pytest.approx(1 + i / 1000)
    assert plan_of(t, grpc_call(5.0)).timeout == 5.0


def test_route_timeout_function_reads_call_timeout() -> None:
    from xds_client.resources.route import MaxStreamDuration

    mds = MaxStreamDuration(grpc_timeout_header_max=0.0)
    assert route_timeout(None, mds, grpc_call(3.0, "9S")) == 3.0
    assert route_timeout(None, mds, grpc_call(None, "9S")) == 9.0
    assert route_timeout(None, None, grpc_call(3.0)) == 15.0  # no grpc_timeout_header_max


def _fault(**fault: Any) -> dict[str, Any]:
    return {"envoy.filters.http.fault": {"@type": FAULT, **fault}}


def test_a_fault_config_without_delay_or_abort_injects_nothing_and_overrides() -> None:
    abort = _fault(abort={"http_status": 503, "percentage": {"numerator": 100}})
    t = table(
        {
            "match": {"prefix": "/quiet"},
            "route": {"cluster": "c"},
            "typed_per_filter_config": _fault(),
        },
        {"match": {"prefix": "/"}, "route": {"cluster": "c"}},
        typed_per_filter_config=abort,
    )
    quiet = plan_of(t, Call("h:80", "GET", "/quiet"))
    assert quiet.fault is None  # the most specific config wins, and it has no fault
    loud = plan_of(t, Call("h:80", "GET", "/loud"))
    assert loud.fault is not None
    decision = loud.fault.decide(Call("h:80", "GET", "/loud"), "c")
    assert decision is not None and decision.http_status == 503
    decision.release()


def test_plans_compare_by_value() -> None:
    t = table({"match": {"prefix": "/"}, "route": {"cluster": "c"}})
    plan = plan_of(t, Call("h:80", "GET", "/"))
    assert plan == plan.with_timeout(plan.timeout)
    assert plan != plan.with_timeout(1.0)
    assert "cluster='c'" in repr(plan)
