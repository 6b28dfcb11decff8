"""The HTTP fault filter's decisions: percentages, header control, max_active_faults,
upstream_cluster and header matchers (Envoy's documented meaning)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshlib import Call
from meshlib.resilience.fault import FaultInjector
from tests.meshlib.xds_builders import table

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def injector(fault: dict[str, Any]) -> FaultInjector:
    t = table(
        {
            "match": {"prefix": "/"},
            "route": {"cluster": "c"},
            "typed_per_filter_config": {"envoy.filters.http.fault": {"@type": FAULT, **fault}},
        }
    )
    plan = t.route(Call("h:80", "GET", "/"))
    assert plan is not None and plan.fault is not None
    return plan.fault


def call(**headers: str) -> Call:
    return Call("h:80", "GET", "/", {k.replace("_", "-"): v for k, v in headers.items()})


def share(inj: FaultInjector, c: Call, n: int = 4000) -> int:
    hits = 0
    for _ in range(n):
        d = inj.decide(c, "c")
        if d is not None:
            hits += 1
            d.release()
    return hits


def chi2(hits: int, n: int, p: float) -> float:
    e = n * p
    return (hits - e) ** 2 / e + (hits - e) ** 2 / (n - e)


def test_abort_percentage() -> None:
    random.seed(8)
    inj = injector({"abort": {"http_status": 503, "percentage": {"numerator": 25}}})
    assert chi2(share(inj, call()), 4000, 0.25) < 10.83
    d = inj.decide(call(), "c")
    while d is None:
        d = inj.decide(call(), "c")
    assert (d.http_status, d.grpc_status, d.delay, d.aborts) == (503, None, 0.0, True)


def test_unset_percentage_means_never() -> None:
    assert share(injector({"abort": {"http_status": 503}}), call(), 200) == 0


def test_fixed_delay_with_denominator() -> None:
    random.seed(9)
    inj = injector(
        {
            "delay": {
                "fixed_delay": "0.2s",
                "percentage": {"numerator": 5000, "denominator": "TEN_THOUSAND"},
            }
        }
    )
    assert chi2(share(inj, call()), 4000, 0.5) < 10.83
    d = next(d for _ in range(50) if (d := inj.decide(call(), "c")) is not None)
    assert (d.delay, d.aborts) == (0.2, False)


def test_grpc_abort() -> None:
    d = injector({"abort": {"grpc_status": 14, "percentage": {"numerator": 100}}}).decide(
        call(), "c"
    )
    assert d is not None and (d.http_status, d.grpc_status) == (None, 14)


@pytest.mark.parametrize(
    ("headers", "status", "grpc"),
    [
        ({"x_envoy_fault_abort_request": "429"}, 429, None),
        ({"x_envoy_fault_abort_request": "700"}, None, None),  # outside [200, 600): ignored
        ({"x_envoy_fault_abort_grpc_request": "4"}, None, 4),
        ({}, None, None),
    ],
)
def test_header_controlled_abort(
    headers: dict[str, str], status: int | None, grpc: int | None
) -> None:
    inj = injector({"abort": {"header_abort": {}, "percentage": {"numerator": 100}}})
    d = inj.decide(call(**headers), "c")
    assert (d.http_status if d else None, d.grpc_status if d else None) == (status, grpc)


def test_header_controlled_delay_and_percentage_header() -> None:
    random.seed(10)
    inj = injector({"delay": {"header_delay": {}, "percentage": {"numerator": 100}}})
    d = inj.decide(call(x_envoy_fault_delay_request="250"), "c")
    assert d is not None and d.delay == 0.25
    assert inj.decide(call(), "c") is None
    # the percentage header lowers the share, capped by the configured numerator
    half = call(x_envoy_fault_delay_request="10", x_envoy_fault_delay_request_percentage="50")
    assert chi2(share(inj, half), 4000, 0.5) < 10.83
    capped = injector({"delay": {"header_delay": {}, "percentage": {"numerator": 10}}})
    above = call(x_envoy_fault_delay_request="10", x_envoy_fault_delay_request_percentage="90")
    assert chi2(share(capped, above), 4000, 0.1) < 10.83


def test_max_active_faults() -> None:
    inj = injector(
        {"abort": {"http_status": 500, "percentage": {"numerator": 100}}, "max_active_faults": 2}
    )
    first, second = inj.decide(call(), "c"), inj.decide(call(), "c")
    assert first is not None and second is not None
    assert inj.decide(call(), "c") is None  # two faults active
    first.release()
    first.release()  # idempotent
    third = inj.decide(call(), "c")
    assert third is not None and inj.active == 2


def test_upstream_cluster_and_headers_restrict_the_fault() -> None:
    inj = injector(
        {
            "abort": {"http_status": 500, "percentage": {"numerator": 100}},
            "upstream_cluster": "c",
            "headers": [{"name": "x-chaos", "exact_match": "on"}],
        }
    )
    assert inj.decide(call(x_chaos="on"), "c") is not None
    assert inj.decide(call(x_chaos="off"), "c") is None
    assert inj.decide(call(x_chaos="on"), "other") is None


def test_most_specific_fault_override_wins() -> None:
    def fault(status: int) -> dict[str, Any]:
        return {
            "envoy.filters.http.fault": {
                "@type": FAULT,
                "abort": {"http_status": status, "percentage": {"numerator": 100}},
            }
        }

    t = table(
        {
            "match": {"prefix": "/r"},
            "route": {"cluster": "c"},
            "typed_per_filter_config": fault(501),
        },
        {"match": {"prefix": "/"}, "route": {"cluster": "c"}},
        typed_per_filter_config=fault(502),
    )
    statuses = []
    for path in ("/r", "/v"):
        plan = t.route(Call("h:80", "GET", path))
        assert plan is not None and plan.fault is not None
        d = plan.fault.decide(Call("h:80", "GET", path), "c")
        assert d is not None
        statuses.append(d.http_status)
    assert statuses == [501, 502]


def test_listener_level_fault_applies_unless_overridden() -> None:
    from meshlib.routing import RouteTable
    from tests.meshlib.xds_builders import decoded
    from xds_client.resources.route import FaultAbort, FaultConfig, Percent

    override = {
        "envoy.filters.http.fault": {
            "@type": FAULT,
            "abort": {"http_status": 501, "percentage": {"numerator": 100}},
        }
    }
    config = decoded(
        [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/r"},
                        "route": {"cluster": "c"},
                        "typed_per_filter_config": override,
                    },
                    {"match": {"prefix": "/"}, "route": {"cluster": "c"}},
                ],
            }
        ]
    )
    base = FaultConfig(abort=FaultAbort(http_status=500, percent=Percent(100)))
    t = RouteTable(config, base_fault=base)
    statuses = []
    for path in ("/r", "/other"):
        plan = t.route(Call("h:80", "GET", path))
        assert plan is not None and plan.fault is not None
        d = plan.fault.decide(Call("h:80", "GET", path), "c")
        assert d is not None
        statuses.append(d.http_status)
    assert statuses == [501, 500]
    plain = RouteTable(config).route(Call("h:80", "GET", "/other"))
    assert plain is not None and plain.fault is None


def test_listener_fault_filter_config_reaches_the_request_path(tmp_path: Any) -> None:
    """The HCM's own fault filter config (not a route override) aborts calls end to end."""
    from envoy.extensions.filters.http.fault.v3 import fault_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    from tests.meshlib import xds_builders as xb
    from tests.support import UvicornThread

    backend = xb.Backend("b")
    with UvicornThread(backend) as server:
        listener = xb.api_listener("svc:80")
        hcm = hcm_pb2.HttpConnectionManager()
        listener.api_listener.api_listener.Unpack(hcm)
        fault = fault_pb2.HTTPFault()
        fault.abort.http_status = 418
        fault.abort.percentage.numerator = 100
        hcm.http_filters[0].typed_config.Pack(fault)
        listener.api_listener.api_listener.Pack(hcm)
        routes = xb.route_config(
            [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}],
                }
            ]
        )
        res = xb.resources([listener], [routes], {"c": [server.port]})
        with xb.serving(tmp_path, res) as cp, xb.mesh_for(cp) as mesh:
            with mesh.httpx_client(timeout=5) as client:
                r = client.get("http://svc/anything")
            assert r.status_code == 418
            assert sum(backend.hits.values()) == 0  # aborted before any upstream attempt
            assert cp.nacks() == []
