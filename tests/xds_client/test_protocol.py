"""The ADS protocol against a scripted server on 127.0.0.1: subscriptions follow
watchers, ACK/NACK with precise error_detail, deletion, reconnects, timers, wildcard.
State of the world and delta run the same cases where both apply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from xds_client import ResourceDoesNotExist, XdsClient, XdsConnectionError
from xds_client import builders as b
from xds_client.resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG, ResourceError
from xds_client.testing import AdsEvent, ScriptedAdsServer

from .conftest import Recorder

pytestmark = pytest.mark.timeout(30)
LDS, CDS, EDS, RDS = LISTENER.type_url, CLUSTER.type_url, ENDPOINTS.type_url, ROUTE_CONFIG.type_url
BOTH = pytest.mark.parametrize("protocol", ["sotw", "delta"])
MakeClient = Callable[..., XdsClient]


def acked(type_url: str, version: str | None = None) -> Callable[[AdsEvent], bool]:
    return lambda e: (
        e.kind == "ACK" and e.type_url == type_url and (version is None or e.version == version)
    )


def nacked(type_url: str) -> Callable[[AdsEvent], bool]:
    return lambda e: e.kind == "NACK" and e.type_url == type_url


@BOTH
def test_subscriptions_follow_watchers(
    server: ScriptedAdsServer, make_client: MakeClient, protocol: str
) -> None:
    server.set_resources(CDS, {n: b.pack(b.cluster(n)) for n in ("c1", "c2")})
    client = make_client(server.bootstrap(), protocol=protocol)
    w1, w2, w3 = Recorder(), Recorder(), Recorder()
    cancel1 = client.watch(CLUSTER, "c1", w1)
    assert w1.wait("changed").name == "c1"
    cancel2 = client.watch(CLUSTER, "c2", w2)
    w2.wait("changed")
    cancel3 = client.watch(CLUSTER, "c1", w3)  # a second watcher: served from the cache
    assert w3.wait("changed").name == "c1"
    cancel1()
    cancel3()  # the last watcher of c1 goes: unsubscribed
    cancel2()

    def names(e: AdsEvent) -> set[str]:
        if protocol == "sotw":
            return set(e.request.resource_names)
        return set(e.request.resource_names_subscribe) | {
            "-" + n for n in e.request.resource_names_unsubscribe
        }

    if protocol == "sotw":
        server.wait_for(lambda e: e.type_url == CDS and e.kind == "ACK" and not e.names)
        order = [tuple(e.request.resource_names) for e in server.events if e.type_url == CDS]
        assert order[0] == ("c1",)
        assert ("c1", "c2") in order and ("c2",) in order and order[-1] == ()
    else:
        server.wait_for(lambda e: "c2" in e.request.resource_names_unsubscribe)
        seen = [names(e) for e in server.events if e.type_url == CDS and names(e)]
        assert {"c1"} in seen and {"c2"} in seen and {"-c1"} in seen and {"-c2"} in seen
    assert w1.kinds() == ["changed"] and w2.kinds() == ["changed"]


@BOTH
def test_invalid_resource_is_nacked_naming_resource_and_field(
    server: ScriptedAdsServer, make_client: MakeClient, protocol: str
) -> None:
    server.set_resources(CDS, {"c1": b.pack(b.cluster("c1"))})
    client = make_client(server.bootstrap(), protocol=protocol)
    w = Recorder()
    client.watch(CLUSTER, "c1", w)
    first = w.wait("changed")
    bad = b.cluster("c1")
    bad.connect_timeout.seconds = -1
    server.set_resources(CDS, {"c1": b.pack(bad)})
    nack = server.wait_for(nacked(CDS))
    assert nack.error_detail is not None
    assert "Cluster 'c1': connect_timeout:" in nack.error_detail
    err = w.wait("ambient")  # the last good cluster stays in use
    assert isinstance(err, ResourceError) and err.field == "connect_timeout"
    assert w.kinds() == ["changed", "ambient"]
    config = {c.name: c for c in client.dump().generic_xds_configs}
    assert config["c1"].client_status == 4  # NACKED
    assert "connect_timeout" in config["c1"].error_state.details
    assert config["c1"].version_info == "1"  # still the last good version
    if protocol == "sotw":  # the NACK re-sends the last accepted version
        assert nack.request.version_info == "1"
    server.set_resources(CDS, {"c1": b.pack(b.cluster("c1", "svc"))})
    fixed = w.wait("changed", lambda r: r is not first)
    assert fixed.eds_service_name == "svc"


@BOTH
def test_first_resource_invalid_is_a_resource_error(
    server: ScriptedAdsServer, make_client: MakeClient, protocol: str
) -> None:
    bad = b.endpoints("e1", [("10.0.0.1", 0)])
    server.set_resources(EDS, {"e1": b.pack(bad)})
    client = make_client(server.bootstrap(), protocol=protocol)
    w = Recorder()
    client.watch(ENDPOINTS, "e1", w)
    err = w.wait("error")
    assert isinstance(err, ResourceError) and "port_value" in err.field
    assert "ClusterLoadAssignment 'e1'" in (server.wait_for(nacked(EDS)).error_detail or "")


def _sotw(type_url: str, resources: list[any_pb2.Any], server: ScriptedAdsServer) -> Any:
    return discovery_pb2.DiscoveryResponse(
        type_url=type_url, version_info="9", nonce=server.next_nonce(), resources=resources
    )


def _scripted(server: ScriptedAdsServer, make_client: MakeClient) -> tuple[XdsClient, Recorder]:
    server.auto = False
    client = make_client(server.bootstrap())
    w = Recorder()
    client.watch(CLUSTER, "c1", w)
    server.wait_for(lambda e: e.type_url == CDS)
    return client, w


def test_wrong_type_url_inside_any(server: ScriptedAdsServer, make_client: MakeClient) -> None:
    _scripted(server, make_client)
    server.push(_sotw(CDS, [b.pack(b.endpoints("c1", []))], server))
    detail = server.wait_for(nacked(CDS)).error_detail or ""
    assert "type_url: expected type.googleapis.com/envoy.config.cluster.v3.Cluster" in detail
    assert "resources[0]" in detail


def test_unsubscribed_type_url_is_nacked(
    server: ScriptedAdsServer, make_client: MakeClient
) -> None:
    _scripted(server, make_client)
    odd = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
    server.push(discovery_pb2.DiscoveryResponse(type_url=odd, nonce=server.next_nonce()))
    assert "was not subscribed" in (server.wait_for(nacked(odd)).error_detail or "")


def test_undecodable_any(server: ScriptedAdsServer, make_client: MakeClient) -> None:
    _, w = _scripted(server, make_client)
    junk = any_pb2.Any(type_url=CDS, value=b"\x0a\xff\xff\xff")
    server.push(_sotw(CDS, [junk, b.pack(b.cluster("c1"))], server))
    detail = server.wait_for(nacked(CDS)).error_detail or ""
    assert "resources[0]: Cluster: cannot decode protobuf" in detail
    assert w.wait("changed").name == "c1"  # the valid one is still accepted (gRFC A46)


def test_duplicate_names(server: ScriptedAdsServer, make_client: MakeClient) -> None:
    _, w = _scripted(server, make_client)
    server.push(_sotw(CDS, [b.pack(b.cluster("c1")), b.pack(b.cluster("c1", "x"))], server))
    assert "duplicate resource name" in (server.wait_for(nacked(CDS)).error_detail or "")
    assert isinstance(w.wait("error"), ResourceError)


def test_missing_required_field(server: ScriptedAdsServer, make_client: MakeClient) -> None:
    server.auto = False
    client = make_client(server.bootstrap())
    w = Recorder()
    client.watch(LISTENER, "l1", w)
    server.wait_for(lambda e: e.type_url == LDS)
    bad = b.api_listener("l1", "")
    hcm = b.hcm("r")
    hcm.rds.route_config_name = ""
    bad.api_listener.api_listener.Pack(hcm)
    server.push(_sotw(LDS, [b.pack(bad)], server))
    detail = server.wait_for(nacked(LDS)).error_detail
    assert detail == "Listener 'l1': api_listener.rds.route_config_name: must not be empty"


def test_acks_carry_the_nonce_of_each_response(
    server: ScriptedAdsServer, make_client: MakeClient
) -> None:
    _, w = _scripted(server, make_client)
    first, second = _sotw(CDS, [b.pack(b.cluster("c1"))], server), None
    second = _sotw(CDS, [b.pack(b.cluster("c1", "v2"))], server)
    second.version_info = "10"
    server.push(first)
    server.push(second)  # the first response's nonce is stale by the time it is ACKed
    ack = server.wait_for(lambda e: e.kind == "ACK" and e.nonce == second.nonce)
    assert ack.request.version_info == "10"
    acks = [e.request.response_nonce for e in server.events if e.type_url == CDS and e.nonce]
    assert acks == [first.nonce, second.nonce]
    w.wait("changed", lambda r: r.eds_service_name == "v2")


@BOTH
def test_deleted_and_readded(
    server: ScriptedAdsServer, make_client: MakeClient, protocol: str
) -> None:
    server.set_resources(LDS, {"l1": b.pack(b.api_listener("l1", "r1"))})
    client = make_client(server.bootstrap(), protocol=protocol)
    w = Recorder()
    client.watch(LISTENER, "l1", w)
    w.wait("changed")
    server.set_resources(LDS, {})
    assert isinstance(w.wait("error"), ResourceDoesNotExist)
    server.set_resources(LDS, {"l1": b.pack(b.api_listener("l1", "r2"))})
    w.wait("changed", lambda r: r.route_config_name == "r2")
    assert w.kinds() == ["changed", "error", "changed"]
    statuses = {c.name: c.client_status for c in client.dump().generic_xds_configs}
    assert statuses == {"l1": 3}  # ACKED


@BOTH
def test_ignore_resource_deletion(
    server: ScriptedAdsServer, make_client: MakeClient, protocol: str
) -> None:
    server.set_resources(LDS, {"l1": b.pack(b.api_listener("l1", "r1"))})
    bootstrap = server.bootstrap(server_features=["xds_v3", "ignore_resource_deletion"])
    client = make_client(bootstrap, protocol=protocol)
    w = Recorder()
    client.watch(LISTENER, "l1", w)
    w.wait("changed")
    server.set_resources(LDS, {})
    assert isinstance(w.wait("ambient"), ResourceDoesNotExist)
    assert w.kinds() == ["changed", "ambient"]
    assert client.dump().generic_xds_configs[0].client_status == 3  # still ACKED, in use


@BOTH
def test_server_killed_mid_stream(
    server: ScriptedAdsServer, make_client: MakeClient, protocol: str
) -> None:
    server.set_resources(CDS, {"c1": b.pack(b.cluster("c1"))})
    client = make_client(server.bootstrap(), protocol=protocol)
    w = Recorder()
    client.watch(CLUSTER, "c1", w)
    w.wait("changed")
    server.wait_for(acked(CDS))
    server.kill_streams()
    assert isinstance(w.wait("ambient"), XdsConnectionError)  # cached cluster keeps serving
    again = server.wait_for(lambda e: e.stream == 2 and e.type_url == CDS)
    if protocol == "sotw":
        assert again.request.version_info == "1" and list(again.request.resource_names) == ["c1"]
        assert again.request.HasField("node")
    else:
        assert list(again.request.resource_names_subscribe) == ["c1"]
        assert dict(again.request.initial_resource_versions) == {"c1": "1"}
    server.wait_for(lambda e: e.stream == 2 and e.kind == "ACK")
    assert w.kinds()[:2] == ["changed", "ambient"] and "error" not in w.kinds()


@BOTH
def test_server_that_never_answers(
    server: ScriptedAdsServer, make_client: MakeClient, protocol: str
) -> None:
    server.auto = False
    client = make_client(server.bootstrap(), protocol=protocol, does_not_exist_timeout=0.2)
    w = Recorder()
    client.watch(ROUTE_CONFIG, "r1", w)
    assert isinstance(w.wait("error"), ResourceDoesNotExist)
    statuses = [c.client_status for c in client.dump().generic_xds_configs]
    assert statuses == [2]  # DOES_NOT_EXIST
    # A late answer still counts.
    server.auto = True
    server.set_resources(RDS, {"r1": b.pack(b.route_config("r1", "c1"))})
    client.watch(ROUTE_CONFIG, "r1", Recorder())
    w.wait("changed")


@BOTH
def test_wildcard_lds(server: ScriptedAdsServer, make_client: MakeClient, protocol: str) -> None:
    server.set_resources(LDS, {n: b.pack(b.api_listener(n, "r")) for n in ("a:1", "b:2")})
    client = make_client(server.bootstrap(), protocol=protocol)
    w = Recorder()
    cancel = client.watch(LISTENER, "*", w)
    w.wait("changed", lambda r: r.name == "b:2")
    w.wait("changed", lambda r: r.name == "a:1")
    server.set_resources(LDS, {"a:1": b.pack(b.api_listener("a:1", "r"))})
    assert isinstance(w.wait("error"), ResourceDoesNotExist)
    assert [c.name for c in client.dump().generic_xds_configs] == ["a:1"]
    cancel()
    assert client.dump().generic_xds_configs == []


def test_fallback_to_secondary_and_back(make_client: MakeClient) -> None:
    primary = ScriptedAdsServer()
    port = primary.port
    primary.stop()  # unreachable for now
    with ScriptedAdsServer() as secondary:
        secondary.set_resources(CDS, {"c1": b.pack(b.cluster("c1", "from-secondary"))})
        bootstrap = {
            "xds_servers": [
                {"server_uri": f"127.0.0.1:{port}", "channel_creds": [{"type": "insecure"}]},
                {"server_uri": secondary.address, "channel_creds": [{"type": "insecure"}]},
            ],
            "node": {"id": "n"},
        }
        client = make_client(bootstrap, fallback_recheck=0.3)
        w = Recorder()
        client.watch(CLUSTER, "c1", w)
        w.wait("changed", lambda r: r.eds_service_name == "from-secondary")
        assert w.kinds() == ["changed"]  # no error while a fallback server answered
        with ScriptedAdsServer(port=port) as back:
            back.set_resources(CDS, {"c1": b.pack(b.cluster("c1", "from-primary"))})
            w.wait("changed", lambda r: r.eds_service_name == "from-primary")
            assert client.servers()[0] is not None
            assert client.servers()[0].server_uri == f"127.0.0.1:{port}"  # type: ignore[union-attr]


def test_batched_and_callback_subscriptions_are_coalesced(
    server: ScriptedAdsServer, make_client: MakeClient
) -> None:
    names = [f"c{i}" for i in range(5)]
    server.set_resources(CDS, {n: b.pack(b.cluster(n)) for n in names})
    server.set_resources(EDS, {n: b.pack(b.endpoints(n, [("10.0.0.1", 80)])) for n in names})
    client = make_client(server.bootstrap())
    w = Recorder()
    with client.batch():
        for n in names:
            client.watch(CLUSTER, n, w)
    server.wait_for(acked(CDS))
    assert [e.names for e in server.events if e.type_url == CDS and e.kind == "REQUEST"] == [
        tuple(names)
    ]
    eds = Recorder()

    class Follow(Recorder):  # watches each cluster's endpoints from its callback
        def on_resource_changed(self, name: str, resource: Any) -> None:
            client.watch(ENDPOINTS, resource.eds_service_name, eds)

    client.watch(CLUSTER, "*", Follow())
    server.wait_for(acked(EDS))
    requests = [e.names for e in server.events if e.type_url == EDS and e.kind == "REQUEST"]
    assert requests == [tuple(names)]  # one request for the five, not five requests


def test_unchanged_resources_do_not_notify_again(
    server: ScriptedAdsServer, make_client: MakeClient
) -> None:
    server.set_resources(CDS, {n: b.pack(b.cluster(n)) for n in ("c1", "c2")})
    client = make_client(server.bootstrap())
    w1, w2 = Recorder(), Recorder()
    client.watch(CLUSTER, "c1", w1)
    client.watch(CLUSTER, "c2", w2)
    w2.wait("changed")
    server.set_resources(CDS, {"c1": b.pack(b.cluster("c1")), "c2": b.pack(b.cluster("c2", "x"))})
    w2.wait("changed", lambda r: r.eds_service_name == "x")
    server.wait_for(acked(CDS, "2"))
    assert w1.kinds() == ["changed"]  # c1 came again, byte for byte: no new event


class Exploding:
    """A resource type whose decoder has a bug (raises something not a ResourceError)."""

    type_url = CLUSTER.type_url
    type_name = "Cluster"
    all_resources_required_in_sotw = False

    def decode(self, resource: any_pb2.Any) -> tuple[str, Any]:
        raise RuntimeError("boom")


def test_a_decoder_bug_is_a_nack_not_a_dead_client(
    server: ScriptedAdsServer, make_client: MakeClient
) -> None:
    server.set_resources(CDS, {"c1": b.pack(b.cluster("c1"))})
    exploding = Exploding()
    client = make_client(server.bootstrap(), resource_types=(exploding,))
    client.watch(exploding, "c1", Recorder())
    first = server.wait_for(nacked(CDS))
    assert "cannot validate: RuntimeError: boom" in (first.error_detail or "")
    server.set_resources(CDS, {"c1": b.pack(b.cluster("c1", "again"))})
    server.wait_for(lambda e: nacked(CDS)(e) and e.nonce != first.nonce)  # still serving


def test_dump_shows_requested_until_an_answer(
    server: ScriptedAdsServer, make_client: MakeClient
) -> None:
    server.auto = False
    client = make_client(server.bootstrap())  # the default 15 s does-not-exist timer
    client.watch(ROUTE_CONFIG, "r1", Recorder())
    server.wait_for(lambda e: e.type_url == RDS)
    (config,) = client.dump().generic_xds_configs
    assert (config.name, config.client_status, config.version_info) == ("r1", 1, "")  # REQUESTED
