"""Server-streaming calls are retried until committed (gRFC A6): an attempt that fails
before any response message reached the application, and before it read the call's
metadata, is followed by the next one; afterwards the error goes to the application.
Backends count the Stream calls they receive."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import grpc
import grpc.aio
import pytest

from meshlib import Mesh

from .conftest import CLUSTER, TARGET, MeshFactory
from .support import AioBackend, Backend, grpc_fault, retry_policy, route, service

STREAM = "/test.Echo/Stream"
UNAVAILABLE = [("x-code", "14")]


def streams(backends: Sequence[Backend | AioBackend]) -> int:
    return sum(b.logic.streams for b in backends)


def aborted(backends: Sequence[Backend | AioBackend]) -> int:
    return sum(b.logic.aborted for b in backends)


def make(
    mesh_factory: MeshFactory, backends: Sequence[Backend | AioBackend], retry_on: str
) -> Mesh:
    routes = [route(CLUSTER, timeout=5.0, retry=retry_policy(retry_on, 3))]
    return mesh_factory(service(TARGET, routes, {CLUSTER: [b.address for b in backends]}))[0]


def settled(mesh: Mesh, total: int) -> None:
    states = mesh.snapshot.clusters[CLUSTER].endpoints
    assert sum(s.total_requests for s in states) == total
    assert all(s.active_requests == 0 for s in states)


def test_a_stream_failing_before_any_message_is_retried(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    mesh = make(mesh_factory, backends, "unavailable")
    for b in backends:
        b.logic.fail_streams = 1  # the first three attempts fail, one per backend
    ended: list[str] = []
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        stream = channel.unary_stream(STREAM)(b"3", timeout=5)
        assert stream.add_callback(lambda: ended.append("x"))
        items = list(stream)
        assert [i.split(b"#")[1] for i in items] == [b"0", b"1", b"2"]
        assert stream.code() is grpc.StatusCode.OK and not stream.is_active()
        assert stream.done() and not stream.add_callback(lambda: None)
    assert ended == ["x"]  # the call's termination callback ran once, at its end
    assert streams(backends) == 4 and aborted(backends) == 3
    settled(mesh, 4)


def test_a_stream_that_delivered_messages_is_not_retried(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    mesh = make(mesh_factory, backends, "unavailable")
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        stream = channel.unary_stream(STREAM)(b"2", timeout=5, metadata=UNAVAILABLE)
        got = []
        with pytest.raises(grpc.RpcError) as info:
            for item in stream:
                got.append(item)
        assert len(got) == 2 and info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert stream.code() is grpc.StatusCode.UNAVAILABLE
    assert streams(backends) == 1 and aborted(backends) == 1
    settled(mesh, 1)


def test_retry_on_without_the_status_is_not_retried(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    mesh = make(mesh_factory, backends, "internal,cancelled")
    backends[0].logic.fail_streams = backends[1].logic.fail_streams = 1
    backends[2].logic.fail_streams = 1
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        stream = channel.unary_stream(STREAM)(b"3", timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert streams(backends) == 1 and aborted(backends) == 1
    settled(mesh, 1)


def test_reading_the_metadata_commits_the_call(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    mesh = make(mesh_factory, backends, "unavailable")
    for b in backends:
        b.logic.fail_streams = 1
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        stream = channel.unary_stream(STREAM)(b"3", timeout=5)
        stream.initial_metadata()
        with pytest.raises(grpc.RpcError) as info:
            list(stream)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert stream.code() is grpc.StatusCode.UNAVAILABLE
    assert streams(backends) == 1
    settled(mesh, 1)


def test_cancel_ends_the_call(backends: list[Backend], mesh_factory: MeshFactory) -> None:
    mesh = make(mesh_factory, backends, "unavailable")
    with mesh.grpc_channel(f"xds:///{TARGET}") as channel:
        stream = channel.unary_stream(STREAM)(b"3", timeout=5, metadata=[("x-sleep", "0")])
        assert next(stream).endswith(b"#0")
        assert stream.time_remaining() is not None
        assert stream.cancel()
        with pytest.raises(grpc.RpcError):
            list(stream)
        assert stream.cancelled() and stream.code() is grpc.StatusCode.CANCELLED
        assert not stream.cancel()
    assert streams(backends) == 1
    settled(mesh, 1)


@pytest.fixture
def aio_backends() -> Iterator[list[AioBackend]]:
    started = [AioBackend(f"a{i}") for i in range(3)]
    yield started
    for b in started:
        b.stop()


async def test_aio_a_stream_failing_before_any_message_is_retried(
    aio_backends: list[AioBackend], mesh_factory: MeshFactory
) -> None:
    mesh = make(mesh_factory, aio_backends, "unavailable")
    for b in aio_backends:
        b.logic.fail_streams = 1
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        call = channel.unary_stream(STREAM)(b"3", timeout=5)
        items = [m async for m in call]
        assert [i.split(b"#")[1] for i in items] == [b"0", b"1", b"2"]
        assert await call.code() is grpc.StatusCode.OK and call.done()
        # read() drives the retries the same way
        for b in aio_backends:
            b.logic.fail_streams = 1
        call = channel.unary_stream(STREAM)(b"1", timeout=5)
        assert (await call.read()).endswith(b"#0")
        assert await call.read() is grpc.aio.EOF
    assert streams(aio_backends) == 8 and aborted(aio_backends) == 6
    settled(mesh, 8)


async def test_aio_committed_or_not_retriable_streams_fail(
    aio_backends: list[AioBackend], mesh_factory: MeshFactory
) -> None:
    mesh = make(mesh_factory, aio_backends, "unavailable")
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        call = channel.unary_stream(STREAM)(b"2", timeout=5, metadata=UNAVAILABLE)
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for item in call:
                got.append(item)
        assert len(got) == 2 and info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        assert streams(aio_backends) == 1 and aborted(aio_backends) == 1
        # metadata read first: committed to the failing attempt
        for b in aio_backends:
            b.logic.fail_streams = 1
        call = channel.unary_stream(STREAM)(b"3", timeout=5)
        await call.initial_metadata()
        with pytest.raises(grpc.aio.AioRpcError):
            await call.read()
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        assert streams(aio_backends) == 2
    settled(mesh, 2)


async def test_aio_retry_on_without_the_status(
    aio_backends: list[AioBackend], mesh_factory: MeshFactory
) -> None:
    mesh = make(mesh_factory, aio_backends, "internal")
    for b in aio_backends:
        b.logic.fail_streams = 1
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        call = channel.unary_stream(STREAM)(b"3", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [m async for m in call]
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert streams(aio_backends) == 1 and aborted(aio_backends) == 1
    settled(mesh, 1)


async def test_aio_cancel_and_held_calls(
    aio_backends: list[AioBackend], mesh_factory: MeshFactory
) -> None:
    policy = retry_policy("unavailable", 3)
    routes = [
        route(CLUSTER, headers={"x-held": "1"}, retry=policy, fault=grpc_fault(delay=0.01)),
        route(CLUSTER, timeout=5.0, retry=policy),
    ]
    addresses = [b.address for b in aio_backends]
    mesh = mesh_factory(service(TARGET, routes, {CLUSTER: addresses}))[0]
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        call = channel.unary_stream(STREAM)(b"3", timeout=5)
        assert (await call.read()).endswith(b"#0")
        assert call.time_remaining() is not None and not call.done()
        ended: list[object] = []
        call.add_done_callback(ended.append)
        assert call.cancel() and call.cancelled()
        for _ in range(200):  # bounded: the attempt's done-callback runs on the loop
            if call.done():
                break
            await asyncio.sleep(0.005)
        assert ended == [call] and not call.cancel()
        # held by the fault delay on a task, then retried
        for b in aio_backends:
            b.logic.fail_streams = 1
        held = channel.unary_stream(STREAM)(b"2", timeout=5, metadata=[("x-held", "1")])
        assert len([m async for m in held]) == 2
        assert await held.code() is grpc.StatusCode.OK
    assert streams(aio_backends) == 5 and aborted(aio_backends) == 3
    settled(mesh, 5)
