"""MeshChannel (sync): routing, per-endpoint subchannels, every call shape, outcomes."""

from __future__ import annotations

import collections

import grpc
import pytest

from meshlib import Mesh
from meshlib.grpc import MeshRpcError, parse_target

from .conftest import CLUSTER, TARGET, MeshFactory
from .support import Backend, route, service

ECHO = "/test.Echo/Echo"
SLACK = 0.1  # grpc rounds the deadline it sends up (and clocks differ by a tick)


def ident(reply: bytes) -> str:
    return reply.decode().split("|")[0]


def test_parse_target() -> None:
    assert parse_target("xds:///echo:7070") == "echo:7070"
    assert parse_target("xds:echo:7070") == "echo:7070"
    assert parse_target("echo.default.svc.cluster.local:7070") == (
        "echo.default.svc.cluster.local:7070"
    )
    with pytest.raises(ValueError, match="xds://auth/x:1"):
        parse_target("xds://auth/x:1")
    with pytest.raises(ValueError, match="'xds:///'"):
        parse_target("xds:///")


def test_unary_calls_round_robin_over_one_subchannel_per_endpoint(
    mesh: Mesh, backends: list[Backend]
) -> None:
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        assert isinstance(channel, grpc.Channel)
        echo = channel.unary_unary(ECHO)
        replies = [echo(b"x", timeout=5).decode().split("|") for _ in range(30)]
        counts = collections.Counter(r[0] for r in replies)
        assert counts == {"b0": 10, "b1": 10, "b2": 10}
        # the server sees the logical target as :authority, not the endpoint address
        assert {r[1] for r in replies} == {TARGET}
        assert channel.subchannel_addresses() == {b.address for b in backends}
        states = mesh.snapshot.clusters[CLUSTER].endpoints
        assert sum(s.total_requests for s in states) == 30
        assert all(s.active_requests == 0 for s in states)


def test_with_call_future_and_streaming_shapes(mesh: Mesh, backends: list[Backend]) -> None:
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        response, call = channel.unary_unary(ECHO).with_call(b"x", timeout=5)
        assert call.code() is grpc.StatusCode.OK and ident(response).startswith("b")
        future = channel.unary_unary(ECHO).future(b"x", timeout=5)
        assert ident(future.result(timeout=5)).startswith("b")

        items = list(channel.unary_stream("/test.Echo/Stream")(b"4", timeout=5))
        assert len(items) == 4 and items[-1].endswith(b"#3")
        assert len({ident(i) for i in items}) == 1  # one stream, one endpoint

        collected = channel.stream_unary("/test.Echo/Collect")(iter([b"a", b"b"]), timeout=5)
        assert collected.startswith(b"a+b@")
        chat = channel.stream_stream("/test.Echo/Chat")(iter([b"1", b"2", b"3"]), timeout=5)
        replies = list(chat)
        assert [r.split(b"@")[0] for r in replies] == [b"1", b"2", b"3"]
        assert chat.code() is grpc.StatusCode.OK
    states = mesh.snapshot.clusters[CLUSTER].endpoints
    assert sum(s.total_requests for s in states) == 5
    assert all(s.active_requests == 0 for s in states)  # streams recorded when they end


def test_route_timeout_caps_the_deadline_and_reaches_the_server(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, path=ECHO, timeout=1.5), route(CLUSTER, timeout=None)]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        # no caller deadline: the route's 1.5 s becomes the call's deadline
        left = float(channel.unary_unary(ECHO)(b"x").decode().split("|")[2])
        assert 0 < left <= 1.5 + SLACK
        # a shorter caller deadline is kept
        left = float(channel.unary_unary(ECHO)(b"x", timeout=0.8).decode().split("|")[2])
        assert 0 < left <= 0.8 + SLACK
        # other methods: the route sets no timeout, so Envoy's default of 15 s applies
        items = list(channel.unary_stream("/test.Echo/Stream")(b"1"))
        assert 1.5 < float(items[0].decode().split("|")[2].split("#")[0]) <= 15.5
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(ECHO)(b"x", metadata=[("x-sleep", "3")])
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    state = mesh.snapshot.clusters[CLUSTER].endpoints[0]
    assert state.failures == 1  # a timeout is a locally originated failure


def test_method_routes_pick_the_cluster(backends: list[Backend], mesh_factory: MeshFactory) -> None:
    routes = [route("chat", prefix="/test.Echo/Chat"), route(CLUSTER)]
    clusters = {CLUSTER: [backends[0].address], "chat": [backends[1].address]}
    mesh, _ = mesh_factory(service(TARGET, routes, clusters))
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        assert ident(channel.unary_unary(ECHO)(b"x", timeout=5)) == "b0"
        chat = list(channel.stream_stream("/test.Echo/Chat")(iter([b"q"]), timeout=5))
        assert chat == [b"q@b1"]


def test_grpc_status_outcomes_feed_the_endpoint(mesh: Mesh) -> None:
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        for code in (14, 13, 5, 3):  # UNAVAILABLE, INTERNAL, NOT_FOUND, INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as info:
                echo(b"x", timeout=5, metadata=[("x-code", str(code))])
            assert info.value.code().value[0] == code
    states = mesh.snapshot.clusters[CLUSTER].endpoints
    # Envoy's mapping: UNAVAILABLE -> 503 and INTERNAL -> 500 are upstream failures;
    # NOT_FOUND (404) and INVALID_ARGUMENT (400) are answers, not failures.
    assert sum(s.failures for s in states) == 2
    assert sum(s.total_requests for s in states) == 4


def test_stopped_endpoint_is_a_connect_failure(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    down = backends[2]
    down.stop()
    mesh, _ = mesh_factory(service(TARGET, [route(CLUSTER)], {CLUSTER: [down.address]}))
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(ECHO)(b"x", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert mesh.snapshot.clusters[CLUSTER].endpoints[0].failures == 1


def test_mesh_errors_are_unavailable_rpc_errors(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, prefix="/test.Echo/Echo")]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: []}))
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        with pytest.raises(MeshRpcError) as info:
            channel.unary_unary(ECHO)(b"x", timeout=5)
        assert isinstance(info.value, grpc.RpcError)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert info.value.reason == "no_healthy_upstream"
        # a streaming call fails the way grpcio's do: on iteration
        stream = channel.unary_stream("/test.Echo/Stream")(b"1")
        with pytest.raises(grpc.RpcError) as sinfo:
            next(iter(stream))
        assert sinfo.value.code() is grpc.StatusCode.UNAVAILABLE
        assert stream.code() is grpc.StatusCode.UNAVAILABLE
        assert sinfo.value.reason == "no_route"  # only /test.Echo/Echo is routed
        future = channel.unary_unary(ECHO).future(b"x")
        assert isinstance(future.exception(), MeshRpcError)
    with mesh.grpc_channel("xds:///nothing:1") as channel, pytest.raises(MeshRpcError) as missing:
        channel.unary_unary(ECHO)(b"x")
    assert missing.value.code() is grpc.StatusCode.UNAVAILABLE


def test_unknown_plain_targets_pass_through(mesh: Mesh, backends: list[Backend]) -> None:
    with mesh.grpc_channel(backends[1].address) as channel:
        assert ident(channel.unary_unary(ECHO)(b"x", timeout=5)) == "b1"


def test_subchannels_follow_endpoint_changes(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    addrs = [b.address for b in backends]
    mesh, cache = mesh_factory(service(TARGET, [route(CLUSTER)], {CLUSTER: addrs[:2]}))
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        assert {ident(echo(b"x", timeout=5)) for _ in range(4)} == {"b0", "b1"}
        kept = channel._pool._live[(addrs[1], TARGET)]
        cache.put(service(TARGET, [route(CLUSTER)], {CLUSTER: addrs[1:]}))
        seen: set[str] = set()
        for _ in range(200):  # bounded: until the new assignment is applied
            seen = {ident(echo(b"x", timeout=5)) for _ in range(4)}
            if seen == {"b1", "b2"}:
                break
        assert seen == {"b1", "b2"}
        assert channel.subchannel_addresses() == set(addrs[1:])
        assert channel._pool._live[(addrs[1], TARGET)] is kept  # connection kept across pushes


def test_channel_ready_future(mesh: Mesh) -> None:
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)


def test_public_names() -> None:
    import meshlib.grpc

    assert set(meshlib.grpc.__all__) == {
        "HTTP_EQUIVALENT",
        "MeshAioChannel",
        "MeshChannel",
        "MeshRpcError",
        "outcome_of",
        "parse_target",
    }
    for name in meshlib.grpc.__all__:
        assert hasattr(meshlib.grpc, name), name
