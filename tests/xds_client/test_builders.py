"""xds_client.builders: every builder's resource decodes, and its knobs reach the model."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2

from xds_client import builders as b
from xds_client.resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG


def test_socket_listener_serves_the_api_listeners_routes() -> None:
    msg = b.socket_listener("in", "r1", port=8080, fault=True, stat_prefix="ingress")
    _, lis = LISTENER.decode(b.pack(msg))
    assert (lis.address, lis.port) == ("127.0.0.1", 8080)
    (chain,) = lis.filter_chains
    assert chain.http.route_config_name == "r1"
    assert [f.name for f in chain.http.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    hcm_any = msg.filter_chains[0].filters[0].typed_config
    assert b"ingress" in hcm_any.value


def test_api_listener_without_fault_and_config_sources_are_v3_ads() -> None:
    msg = b.api_listener("svc:80", "r1", fault=False, stat_prefix="diff")
    _, lis = LISTENER.decode(b.pack(msg))
    assert lis.route_config_name == "r1"
    assert [f.name for f in lis.http_filters] == ["envoy.filters.http.router"]
    c = b.cluster("c")
    assert c.eds_cluster_config.eds_config.resource_api_version == config_source_pb2.V3
    assert c.eds_cluster_config.eds_config.HasField("ads")


def test_cluster_fields_in_envoy_json_merge_over_the_defaults() -> None:
    msg = b.cluster(
        "c", lb_policy="RING_HASH", circuit_breakers={"thresholds": [{"max_requests": 2}]}
    )
    _, c = CLUSTER.decode(b.pack(msg))
    assert (c.name, c.eds_service_name, c.lb_policy) == ("c", "c", "RING_HASH")
    assert msg.connect_timeout.seconds == 1
    assert msg.circuit_breakers.thresholds[0].max_requests.value == 2


def test_endpoints_weight_none_leaves_the_weights_unset() -> None:
    weighted = b.endpoints("c", [("127.0.0.1", 1)], zone="z", region="r")
    _, e = ENDPOINTS.decode(b.pack(weighted))
    (loc,) = e.localities
    assert (loc.region, loc.zone, loc.weight) == ("r", "z", 1)
    bare = b.endpoints(
        "c", [("127.0.0.1", 1)], weight=None, policy={"overprovisioning_factor": 200}
    )
    assert not bare.endpoints[0].HasField("load_balancing_weight")
    assert not bare.endpoints[0].lb_endpoints[0].HasField("load_balancing_weight")
    _, e = ENDPOINTS.decode(b.pack(bare))
    assert e.localities[0].weight == 0 and e.overprovisioning_factor == 2.0


def test_virtual_hosts_from_envoy_json() -> None:
    routes = [{"match": {"prefix": "/a"}, "route": {"cluster": "a", "timeout": "2.5s"}}]
    msg = b.virtual_hosts("r1", [{"name": "vh", "domains": ["*"], "routes": routes}])
    _, rc = ROUTE_CONFIG.decode(b.pack(msg))
    (vh,) = rc.virtual_hosts
    assert vh.name == "vh" and vh.domains == ("*",)
    assert b.duration(2.5).nanos == 500_000_000 and b.duration(2.5).seconds == 2
