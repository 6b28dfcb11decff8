"""The attempt loop through the gRPC channels: retries by gRPC status (never after a
committed stream), per-try timeouts, the caller's deadline under the route's limits,
fault aborts and delays, circuit breaking. Backends count the calls they receive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
import grpc.aio
import pytest

from meshlib import Mesh
from meshlib.grpc import MeshRpcError

from .conftest import CLUSTER, TARGET, MeshFactory
from .support import Backend, grpc_fault, retry_policy, route, service

ECHO = "/test.Echo/Echo"
UNAVAILABLE = [("x-code", "14")]


def hits(backends: Sequence[Backend]) -> int:
    return sum(b.logic.calls + b.logic.aborted for b in backends)


@pytest.fixture
def retrying(backends: list[Backend], mesh_factory: MeshFactory) -> Mesh:
    """retry_on unavailable,cancelled with 2 retries, per-try timeout 0.3 s on Echo."""
    policy = retry_policy("unavailable,cancelled,reset", 2, per_try=0.3)
    routes = [route(CLUSTER, timeout=5.0, retry=policy)]
    return mesh_factory(service(TARGET, routes, {CLUSTER: [b.address for b in backends]}))[0]


def test_retries_by_grpc_status(retrying: Mesh, backends: list[Backend]) -> None:
    with retrying.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        with pytest.raises(grpc.RpcError) as info:
            echo(b"x", metadata=UNAVAILABLE)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert hits(backends) == 3  # one try and num_retries = 2 retries
        # a status not in retry_on is answered at once
        with pytest.raises(grpc.RpcError) as invalid:
            echo(b"x", metadata=[("x-code", "3")])
        assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert hits(backends) == 4
        # the future shape retries the same way
        future = echo.future(b"x", metadata=UNAVAILABLE)
        assert future.exception(timeout=10).code() is grpc.StatusCode.UNAVAILABLE
        assert future.code() is grpc.StatusCode.UNAVAILABLE and future.done()
        assert hits(backends) == 7
    states = retrying.snapshot.clusters[CLUSTER].endpoints
    assert sum(s.total_requests for s in states) == 7
    assert all(s.active_requests == 0 for s in states)


def test_a_retry_that_succeeds_returns_the_answer(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    # b0 fails every call with UNAVAILABLE
    policy = retry_policy("unavailable", 3)
    routes = [route(CLUSTER, timeout=5.0, retry=policy)]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [b.address for b in backends]}))
    backends[0].logic.fail_with = grpc.StatusCode.UNAVAILABLE
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        replies = [echo(b"x", timeout=5).decode().split("|")[0] for _ in range(6)]
    assert "b0" not in replies and len(replies) == 6
    assert backends[0].logic.aborted >= 1  # it was tried, and the call went on elsewhere


def test_no_retry_once_a_stream_has_answered(retrying: Mesh, backends: list[Backend]) -> None:
    with retrying.grpc_channel(f"xds:///{TARGET}") as channel:
        stream = channel.unary_stream("/test.Echo/Stream")(b"2", metadata=UNAVAILABLE)
        got = []
        with pytest.raises(grpc.RpcError) as info:
            for item in stream:
                got.append(item)
        assert len(got) == 2 and info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sum(b.logic.calls for b in backends) == 2  # the two replies of one stream
    assert sum(b.logic.aborted for b in backends) == 1  # one attempt, not retried
    states = retrying.snapshot.clusters[CLUSTER].endpoints
    assert sum(s.total_requests for s in states) == 1
    assert all(s.active_requests == 0 for s in states)


def test_per_try_timeout_retries_then_gives_up(retrying: Mesh, backends: list[Backend]) -> None:
    with (
        retrying.grpc_channel(f"xds:///{TARGET}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(ECHO)(b"x", metadata=[("x-sleep", "1")])
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert sum(b.logic.started for b in backends) == 3  # every try timed out and was retried
    states = retrying.snapshot.clusters[CLUSTER].endpoints
    assert sum(s.failures for s in states) == 3


def test_the_callers_deadline_is_never_retried(retrying: Mesh, backends: list[Backend]) -> None:
    with (
        retrying.grpc_channel(f"xds:///{TARGET}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(ECHO)(b"x", timeout=0.2, metadata=[("x-sleep", "1")])
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert sum(b.logic.started for b in backends) == 1


def test_grpc_timeout_header_max_caps_the_callers_deadline(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, timeout=None, grpc_timeout_max=1.0)]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        assert 0 < float(echo(b"x", timeout=30).decode().split("|")[2]) <= 1.1
        # a shorter caller deadline stays (grpc-timeout replaces the route timeout)
        assert 0 < float(echo(b"x", timeout=0.5).decode().split("|")[2]) <= 0.6
        # no deadline at all: the max applies
        assert 0 < float(echo(b"x").decode().split("|")[2]) <= 1.1


def test_fault_abort_answers_locally(backends: list[Backend], mesh_factory: MeshFactory) -> None:
    routes = [
        route(CLUSTER, path=ECHO, fault=grpc_fault(abort=8)),
        route(CLUSTER, fault=grpc_fault(delay=0.5)),
    ]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [b.address for b in backends]}))
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        with pytest.raises(MeshRpcError) as info:
            channel.unary_unary(ECHO)(b"x", timeout=5)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.reason == "fault_abort"
        future = channel.unary_unary(ECHO).future(b"x", timeout=5)
        assert future.exception(timeout=5).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert hits(backends) == 0
        # a delay longer than the caller's deadline: the call never leaves
        with pytest.raises(grpc.RpcError) as late:
            channel.unary_unary("/test.Echo/Other")(b"x", timeout=0.2)
        assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert hits(backends) == 0
        # and with time to spare the delayed call goes through
        assert channel.unary_unary("/test.Echo/Other")(b"x", timeout=5).startswith(b"b")
        assert hits(backends) == 1


def test_overflow_is_unavailable(backends: list[Backend], mesh_factory: MeshFactory) -> None:
    routes = [route(CLUSTER, timeout=5.0)]
    resources = service(TARGET, routes, {CLUSTER: [backends[0].address]}, max_requests=1)
    mesh, _ = mesh_factory(resources)
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        echo(b"x", timeout=5)  # resolved and connected
        busy = echo.future(b"x", timeout=5, metadata=[("x-sleep", "1")])
        for _ in range(500):  # bounded: until the slow call holds the only slot
            if backends[0].logic.started == 2:
                break
            time.sleep(0.005)
        with pytest.raises(MeshRpcError) as info:
            echo(b"x", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert info.value.reason == "overflow"
        assert busy.result(timeout=5).startswith(b"b0")
        assert echo(b"x", timeout=5).startswith(b"b0")  # the slot is free again
    assert backends[0].logic.started == 3


async def test_aio_retries_and_fault(backends: list[Backend], mesh_factory: MeshFactory) -> None:
    policy = retry_policy("unavailable", 2)
    routes = [
        route(CLUSTER, path="/test.Echo/Other", fault=grpc_fault(abort=14)),
        route(CLUSTER, timeout=5.0, retry=policy),
    ]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [b.address for b in backends]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(b"x", metadata=UNAVAILABLE)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert hits(backends) == 3
        replies = await asyncio.gather(*(echo(b"x") for _ in range(4)))
        assert all(r.startswith(b"b") for r in replies)
        call = echo(b"x")
        assert await call.code() is grpc.StatusCode.OK
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await channel.unary_unary("/test.Echo/Other")(b"x")
        assert aborted.value.code() is grpc.StatusCode.UNAVAILABLE
        assert aborted.value.details() is not None and "fault" in aborted.value.details()
    assert hits(backends) == 8
    states = mesh.snapshot.clusters[CLUSTER].endpoints
    assert all(s.active_requests == 0 for s in states)


MIRROR = "outbound|7070||echo-mirror"


@pytest.fixture
def mirrored(backends: list[Backend], mesh_factory: MeshFactory) -> Mesh:
    """Echo to b0, a copy of each call to b1 (the mirror cluster); /test.Echo/Other is
    aborted by the fault filter before it could be mirrored."""
    routes = [
        route(CLUSTER, path="/test.Echo/Other", fault=grpc_fault(abort=14), mirrors=[MIRROR]),
        route(CLUSTER, timeout=5.0, mirrors=[MIRROR]),
    ]
    clusters = {CLUSTER: [backends[0].address], MIRROR: [backends[1].address]}
    return mesh_factory(service(TARGET, routes, clusters))[0]


def settle(mesh: Mesh, cluster: str, total: int) -> None:
    """Wait (bounded) until ``cluster``'s endpoints saw ``total`` calls and none is active."""
    for _ in range(1000):
        states = mesh.snapshot.clusters[cluster].endpoints
        if sum(s.total_requests for s in states) == total and not any(
            s.active_requests for s in states
        ):
            return
        time.sleep(0.005)
    raise AssertionError(f"{cluster}: not settled at {total} calls")


def test_mirrors_get_a_copy_and_never_fail_the_call(
    mirrored: Mesh, backends: list[Backend]
) -> None:
    with mirrored.grpc_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        assert echo(b"x", timeout=5).startswith(b"b0")
        assert echo.future(b"x", timeout=5).result(timeout=5).startswith(b"b0")
        settle(mirrored, MIRROR, 2)  # copies are not waited for: let them land first
        # the copy fails at the mirror; the call does not notice
        backends[1].logic.fail_with = grpc.StatusCode.INTERNAL
        reply, call = echo.with_call(b"x", timeout=5)
        assert reply.startswith(b"b0") and call.code() is grpc.StatusCode.OK
        with pytest.raises(MeshRpcError):  # aborted by the fault filter: no copy
            channel.unary_unary("/test.Echo/Other")(b"x", timeout=5)
        settle(mirrored, MIRROR, 3)
    assert backends[0].logic.calls == 3
    assert backends[1].logic.started == 3 and backends[1].logic.aborted == 1
    assert backends[1].logic.calls == 2
    # the copies carried Envoy's shadow authority
    assert backends[0].logic.authorities == [TARGET] * 3
    assert backends[1].logic.authorities == ["echo-shadow:7070"] * 3
    state = mirrored.snapshot.clusters[MIRROR].endpoints[0]
    assert state.failures == 1  # the mirror endpoint's own outcomes are recorded


async def test_aio_mirrors(mirrored: Mesh, backends: list[Backend]) -> None:
    async with mirrored.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        echo = channel.unary_unary(ECHO)
        replies = await asyncio.gather(*(echo(b"x", timeout=5) for _ in range(4)))
        assert all(r.startswith(b"b0") for r in replies)
        for _ in range(1000):  # bounded: the copies end on their own
            states = mirrored.snapshot.clusters[MIRROR].endpoints
            if sum(s.total_requests for s in states) == 4 and not states[0].active_requests:
                break
            await asyncio.sleep(0.005)
    assert backends[0].logic.calls == 4 and backends[1].logic.calls == 4
