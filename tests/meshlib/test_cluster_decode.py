"""Cluster and ClusterLoadAssignment decoding: Envoy's defaults per field, precise NACKs."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from google.protobuf import any_pb2, json_format, struct_pb2
from xds.type.v3 import typed_struct_pb2

from xds_client.resources import (
    CLUSTER,
    ENDPOINTS,
    PEAK_EWMA_TYPE_URL,
    CircuitThresholds,
    OutlierDetection,
    ResourceError,
    RetryBudget,
)


def cluster(**fields: Any) -> any_pb2.Any:
    base: dict[str, Any] = {
        "name": "c1",
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}}},
    }
    base.update(fields)
    msg = json_format.ParseDict(base, cluster_pb2.Cluster(), ignore_unknown_fields=False)
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def typed(msg: Any) -> dict[str, Any]:
    a = any_pb2.Any()
    a.Pack(msg)
    return {"typed_extension_config": {"name": "x", "typed_config": json_format.MessageToDict(a)}}


def lbp(*policies: Any) -> dict[str, Any]:
    return {"policies": [typed(p) for p in policies]}


def test_defaults_are_envoys() -> None:
    _, c = CLUSTER.decode(cluster())
    assert c.lb.policy == "ROUND_ROBIN" and c.healthy_panic_threshold == 50.0
    assert c.thresholds() == CircuitThresholds("DEFAULT", 1024, 1024, 1024, 3, None)
    assert c.thresholds("HIGH").max_requests == 1024
    assert c.outlier_detection is None
    assert c.eds_service_name == "c1" and c.discovery_type == "EDS"


@pytest.mark.parametrize(
    ("fields", "attr", "value"),
    [
        ({"lb_policy": "LEAST_REQUEST"}, "policy", "LEAST_REQUEST"),
        (
            {"lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"choice_count": 4}},
            "choice_count",
            4,
        ),
        (
            {
                "lb_policy": "LEAST_REQUEST",
                "least_request_lb_config": {
                    "active_request_bias": {"default_value": 0.5, "runtime_key": "k"}
                },
            },
            "active_request_bias",
            0.5,
        ),
        ({"lb_policy": "RING_HASH"}, "min_ring_size", 1024),
        ({"lb_policy": "RING_HASH"}, "max_ring_size", 8_388_608),
        (
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": "64"}},
            "min_ring_size",
            64,
        ),
        (
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"hash_function": "MURMUR_HASH_2"}},
            "hash_function",
            "MURMUR_HASH_2",
        ),
        ({"lb_policy": "MAGLEV"}, "table_size", 65_537),
        ({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": "5011"}}, "table_size", 5011),
        ({"lb_policy": "RANDOM"}, "policy", "RANDOM"),
        (
            {"common_lb_config": {"locality_weighted_lb_config": {}}},
            "locality_weighted",
            True,
        ),
    ],
)
def test_lb_fields(fields: dict[str, Any], attr: str, value: object) -> None:
    _, c = CLUSTER.decode(cluster(**fields))
    assert getattr(c.lb, attr) == value


def test_load_balancing_policy_wins_and_skips_unsupported() -> None:
    ring = ring_hash_pb2.RingHash(minimum_ring_size={"value": 2048})
    _, c = CLUSTER.decode(
        cluster(
            lb_policy="ROUND_ROBIN",
            load_balancing_policy=lbp(cswrr_pb2.ClientSideWeightedRoundRobin(), ring),
        )
    )
    assert (c.lb.policy, c.lb.min_ring_size, c.lb_policy) == ("RING_HASH", 2048, "RING_HASH")


def test_wrr_locality_turns_locality_weights_on() -> None:
    child = cluster_pb2.LoadBalancingPolicy()
    json_format.ParseDict(lbp(least_request_pb2.LeastRequest(choice_count={"value": 3})), child)
    _, c = CLUSTER.decode(
        cluster(
            load_balancing_policy=lbp(wrr_locality_pb2.WrrLocality(endpoint_picking_policy=child))
        )
    )
    assert (c.lb.policy, c.lb.choice_count, c.lb.locality_weighted) == ("LEAST_REQUEST", 3, True)


def test_peak_ewma_typed_struct() -> None:
    value = struct_pb2.Struct()
    value.update({"decay_time": 5, "default_rtt": 0.2})
    ts = typed_struct_pb2.TypedStruct(type_url=PEAK_EWMA_TYPE_URL, value=value)
    _, c = CLUSTER.decode(cluster(load_balancing_policy=lbp(ts)))
    assert (c.lb.policy, c.lb.decay_time, c.lb.default_rtt) == ("PEAK_EWMA", 5.0, 0.2)


def test_circuit_breakers_per_priority_and_retry_budget() -> None:
    cb = {
        "thresholds": [
            {"priority": "HIGH", "max_requests": 7},
            {
                "max_connections": 1,
                "max_pending_requests": 2,
                "max_requests": 3,
                "max_retries": 4,
                "retry_budget": {},
            },
        ]
    }
    _, c = CLUSTER.decode(cluster(circuit_breakers=cb))
    assert c.thresholds() == CircuitThresholds("DEFAULT", 1, 2, 3, 4, RetryBudget(20.0, 3))
    assert c.thresholds("HIGH") == CircuitThresholds("HIGH", 1024, 1024, 7, 3, None)
    _, c = CLUSTER.decode(
        cluster(
            circuit_breakers={
                "thresholds": [
                    {"retry_budget": {"budget_percent": {"value": 50}, "min_retry_concurrency": 1}}
                ]
            }
        )
    )
    assert c.thresholds().retry_budget == RetryBudget(50.0, 1)


def test_outlier_detection_defaults_and_fields() -> None:
    _, c = CLUSTER.decode(cluster(outlier_detection={}))
    assert c.outlier_detection == OutlierDetection()
    od = c.outlier_detection
    assert (od.consecutive_5xx, od.interval, od.base_ejection_time) == (5, 10.0, 30.0)
    assert (od.max_ejection_percent, od.max_ejection_time) == (10, 300.0)
    assert (od.consecutive_gateway_failure, od.enforcing_consecutive_gateway_failure) == (5, 0)
    assert (od.success_rate_minimum_hosts, od.success_rate_request_volume) == (5, 100)
    assert od.success_rate_stdev_factor == 1900
    assert (od.failure_percentage_threshold, od.failure_percentage_minimum_hosts) == (85, 5)
    assert (od.failure_percentage_request_volume, od.enforcing_failure_percentage) == (50, 0)
    _, c = CLUSTER.decode(
        cluster(
            outlier_detection={
                "consecutive_5xx": 3,
                "interval": "0.5s",
                "base_ejection_time": "400s",
                "split_external_local_origin_errors": True,
                "always_eject_one_host": True,
            }
        )
    )
    od2 = c.outlier_detection
    assert od2 is not None
    assert (od2.consecutive_5xx, od2.interval, od2.split_external_local_origin_errors) == (
        3,
        0.5,
        True,
    )
    assert od2.max_ejection_time == 400.0  # unset: 300 s or base_ejection_time if larger
    assert od2.always_eject_one_host


def test_static_cluster_with_load_assignment() -> None:
    la = {
        "cluster_name": "c1",
        "endpoints": [
            {
                "locality": {"zone": "a"},
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}
                        }
                    }
                ],
            }
        ],
    }
    any_ = cluster(type="STATIC", load_assignment=la)
    msg = cluster_pb2.Cluster()
    any_.Unpack(msg)
    msg.ClearField("eds_cluster_config")
    any_.Pack(msg)
    _, c = CLUSTER.decode(any_)
    assert c.discovery_type == "STATIC" and c.load_assignment is not None
    assert [e.address for e in c.load_assignment.endpoints()] == ["10.0.0.1:80"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "ORIGINAL_DST"}, "type"),
        ({"type": "STATIC"}, "load_assignment"),
        ({"lb_policy": "CLUSTER_PROVIDED"}, "lb_policy"),
        (
            {"lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"choice_count": 1}},
            "least_request_lb_config.choice_count",
        ),
        (
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": "9000000"}},
            "ring_hash_lb_config.minimum_ring_size",
        ),
        (
            {
                "lb_policy": "RING_HASH",
                "ring_hash_lb_config": {"minimum_ring_size": "2048", "maximum_ring_size": "1024"},
            },
            "ring_hash_lb_config.minimum_ring_size",
        ),
        (
            {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": "1000"}},
            "maglev_lb_config.table_size",
        ),
        ({"load_balancing_policy": {"policies": []}}, "load_balancing_policy.policies"),
        (
            {"common_lb_config": {"healthy_panic_threshold": {"value": 150}}},
            "common_lb_config.healthy_panic_threshold",
        ),
        (
            {"outlier_detection": {"max_ejection_percent": 101}},
            "outlier_detection.max_ejection_percent",
        ),
        (
            {"outlier_detection": {"base_ejection_time": "60s", "max_ejection_time": "30s"}},
            "outlier_detection.max_ejection_time",
        ),
        ({"circuit_breakers": {"thresholds": [{}, {}]}}, "circuit_breakers.thresholds[1].priority"),
    ],
)
def test_invalid_fields_are_nacked_with_their_path(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ResourceError) as err:
        CLUSTER.decode(cluster(**fields))
    assert err.value.field == field
    assert "Cluster 'c1'" in str(err.value)


def cla(**policy: Any) -> any_pb2.Any:
    def ep(port: int, health: str = "HEALTHY") -> dict[str, Any]:
        return {
            "endpoint": {
                "address": {"socket_address": {"address": "10.0.0.1", "port_value": port}}
            },
            "health_status": health,
        }

    msg = json_format.ParseDict(
        {
            "cluster_name": "c1",
            "endpoints": [
                {"locality": {"zone": "a"}, "load_balancing_weight": 3, "lb_endpoints": [ep(1)]},
                {"locality": {"zone": "b"}, "priority": 1, "lb_endpoints": [ep(2, "DRAINING")]},
            ],
            "policy": policy,
        },
        endpoint_pb2.ClusterLoadAssignment(),
    )
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def test_endpoints_priorities_weights_health_and_policy() -> None:
    _, r = ENDPOINTS.decode(cla())
    assert r.priorities() == (0, 1)
    assert [(loc.zone, loc.weight, loc.priority) for loc in r.localities] == [
        ("a", 3, 0),
        ("b", 0, 1),
    ]
    assert [e.health for e in r.endpoints()] == ["HEALTHY", "DRAINING"]
    assert r.overprovisioning_factor == 1.4 and r.drop_overloads == ()
    _, r = ENDPOINTS.decode(
        cla(
            overprovisioning_factor=200,
            drop_overloads=[{"category": "lb", "drop_percentage": {"numerator": 5}}],
        )
    )
    assert r.overprovisioning_factor == 2.0
    assert [(d.category, d.fraction) for d in r.drop_overloads] == [("lb", 0.05)]


def test_endpoints_zero_overprovisioning_is_nacked() -> None:
    with pytest.raises(ResourceError, match=r"policy\.overprovisioning_factor"):
        ENDPOINTS.decode(cla(overprovisioning_factor=0))


def test_unused_imports_are_real_messages() -> None:
    # the fixtures above build real Envoy messages, not dicts the decoder never sees
    assert circuit_breaker_pb2.CircuitBreakers.Thresholds().priority == base_pb2.DEFAULT
    assert outlier_detection_pb2.OutlierDetection().consecutive_5xx.value == 0


def test_unknown_enum_values_are_nacked_not_crashed() -> None:
    msg = cluster_pb2.Cluster()
    cluster().Unpack(msg)
    msg.type = 99  # type: ignore[assignment]
    a = any_pb2.Any()
    a.Pack(msg)
    with pytest.raises(ResourceError, match="unsupported discovery type 99"):
        CLUSTER.decode(a)
    with pytest.raises(ResourceError, match=r"thresholds\[0\]\.priority"):
        CLUSTER.decode(cluster(circuit_breakers={"thresholds": [{"priority": 7}]}))
    bad = endpoint_pb2.ClusterLoadAssignment()
    cla().Unpack(bad)
    bad.endpoints[0].lb_endpoints[0].health_status = 42  # type: ignore[assignment]
    a.Pack(bad)
    with pytest.raises(ResourceError, match=r"lb_endpoints\[0\]\.health_status"):
        ENDPOINTS.decode(a)


# -- aggregate clusters (cluster_type envoy.clusters.aggregate) --------------------------
AGGREGATE_TYPE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"


def aggregate(children: list[str], **fields: Any) -> any_pb2.Any:
    spec: dict[str, Any] = {
        "name": "agg",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {"@type": AGGREGATE_TYPE, "clusters": children},
        },
    }
    spec.update(fields)
    a = any_pb2.Any()
    a.Pack(json_format.ParseDict(spec, cluster_pb2.Cluster()))
    return a


@pytest.mark.parametrize("policy", ["CLUSTER_PROVIDED", "ROUND_ROBIN"])
def test_aggregate_keeps_its_children_in_fallback_order(policy: str) -> None:
    # CLUSTER_PROVIDED is Envoy's dialect; ROUND_ROBIN (the default) is gRPC's.
    _, c = CLUSTER.decode(aggregate(["primary", "secondary", "primary"], lb_policy=policy))
    assert c.discovery_type == "AGGREGATE"
    assert c.aggregate_clusters == ("primary", "secondary", "primary")
    assert c.eds_service_name == "" and c.load_assignment is None


def test_aggregate_is_chosen_by_typed_config_type_not_name() -> None:
    spec = {"name": "x.custom", "typed_config": {"@type": AGGREGATE_TYPE, "clusters": ["a"]}}
    _, c = CLUSTER.decode(aggregate([], cluster_type=spec))
    assert c.aggregate_clusters == ("a",)


def test_non_aggregate_keeps_no_children() -> None:
    _, c = CLUSTER.decode(cluster())
    assert c.aggregate_clusters == ()


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"cluster_type": {"typed_config": {"@type": AGGREGATE_TYPE}}}, "", "at least one"),
        ({"lb_policy": "RING_HASH"}, "lb_policy", "RING_HASH is not valid"),
        ({"lb_policy": "LEAST_REQUEST"}, "lb_policy", "LEAST_REQUEST is not valid"),
        (
            {
                "load_balancing_policy": {
                    "policies": [
                        {
                            "typed_extension_config": {
                                "name": "rr",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions."
                                    "load_balancing_policies.round_robin.v3.RoundRobin"
                                },
                            }
                        }
                    ]
                }
            },
            "load_balancing_policy",
            "must not be set",
        ),
        (
            {"cluster_type": {"name": "envoy.clusters.aggregate"}},
            "cluster_type.typed_config",
            "unsupported cluster type",
        ),
        (
            {
                "cluster_type": {
                    "name": "envoy.clusters.dynamic_forward_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/google.protobuf.Struct",
                        "value": {},
                    },
                }
            },
            "cluster_type.typed_config",
            "google.protobuf.Struct",
        ),
    ],
)
def test_bad_aggregate_is_nacked_with_its_path(
    fields: dict[str, Any], field: str, problem: str
) -> None:
    field = field or "cluster_type.typed_config.clusters"
    with pytest.raises(ResourceError) as err:
        CLUSTER.decode(aggregate(["a"], **fields))
    assert err.value.field == field and err.value.name == "agg"
    assert problem in str(err.value)


def test_undecodable_aggregate_config_is_nacked() -> None:
    msg = cluster_pb2.Cluster(name="agg", lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    msg.cluster_type.name = "envoy.clusters.aggregate"
    msg.cluster_type.typed_config.type_url = AGGREGATE_TYPE
    msg.cluster_type.typed_config.value = b"\x0a\xff\xff\x01"
    a = any_pb2.Any()
    a.Pack(msg)
    with pytest.raises(ResourceError, match=r"cluster_type\.typed_config: cannot decode"):
        CLUSTER.decode(a)


def test_cluster_provided_outside_an_aggregate_is_nacked() -> None:
    # Envoy: "cluster provided LB specified but cluster 'a' did not provide one".
    with pytest.raises(ResourceError) as err:
        CLUSTER.decode(cluster(lb_policy="CLUSTER_PROVIDED"))
    assert err.value.field == "lb_policy"
