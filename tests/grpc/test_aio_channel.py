"""MeshAioChannel: the same engine path on grpc.aio, including calls made before the
target resolved (they wait off the event loop) and an asyncio server backend."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio
import pytest

from meshlib import Mesh

from .conftest import CLUSTER, TARGET, MeshFactory
from .support import AioBackend, route, service

ECHO = "/test.Echo/Echo"


@pytest.fixture
def aio_backends() -> Iterator[list[AioBackend]]:
    started = [AioBackend(f"a{i}") for i in range(2)]
    yield started
    for b in started:
        b.stop()


@pytest.fixture
def aio_mesh(aio_backends: list[AioBackend], mesh_factory: MeshFactory) -> Mesh:
    resources = service(TARGET, [route(CLUSTER)], {CLUSTER: [b.address for b in aio_backends]})
    return mesh_factory(resources)[0]


async def test_first_calls_wait_for_resolution_then_round_robin(aio_mesh: Mesh) -> None:
    async with aio_mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        assert isinstance(channel, grpc.aio.Channel)
        echo = channel.unary_unary(ECHO)
        # issued at once, before the listener resolved: they wait, off the loop
        first = await asyncio.gather(*(echo(b"x", timeout=5) for _ in range(4)))
        assert len(first) == 4
        assert channel.get_state() is grpc.ChannelConnectivity.READY
        replies = await asyncio.gather(*(echo(b"x", timeout=5) for _ in range(20)))
        counts = collections.Counter(r.decode().split("|")[0] for r in replies)
        assert counts == {"a0": 10, "a1": 10}
        call = echo(b"x", timeout=5)
        assert await call == (await call)  # a real grpc.aio call object
        assert await call.code() is grpc.StatusCode.OK
    states = aio_mesh.snapshot.clusters[CLUSTER].endpoints
    assert sum(s.total_requests for s in states) == 25
    assert all(s.active_requests == 0 for s in states)


async def test_streaming_shapes(aio_mesh: Mesh) -> None:
    async with aio_mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        items = [m async for m in channel.unary_stream("/test.Echo/Stream")(b"3", timeout=5)]
        assert len(items) == 3

        async def requests() -> AsyncIterator[bytes]:
            for r in (b"a", b"b"):
                yield r

        collected = await channel.stream_unary("/test.Echo/Collect")(requests(), timeout=5)
        assert collected.startswith(b"a+b@")
        chat = channel.stream_stream("/test.Echo/Chat")(timeout=5)
        await chat.write(b"1")
        assert (await chat.read()).startswith(b"1@a")
        await chat.write(b"2")
        await chat.done_writing()
        assert (await chat.read()).startswith(b"2@a")
        assert await chat.code() is grpc.StatusCode.OK
    states = aio_mesh.snapshot.clusters[CLUSTER].endpoints
    assert sum(s.total_requests for s in states) == 3
    assert all(s.active_requests == 0 for s in states)


async def test_deferred_streaming_call_before_resolution(aio_mesh: Mesh) -> None:
    async with aio_mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        chat = channel.stream_stream("/test.Echo/Chat")(timeout=5)
        await chat.write(b"early")
        await chat.done_writing()
        replies = [m async for m in chat]
        assert len(replies) == 1 and replies[0].startswith(b"early@a")
        assert await chat.code() is grpc.StatusCode.OK


async def test_status_outcomes_and_deadline(
    aio_backends: list[AioBackend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, timeout=1.0)]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [aio_backends[0].address]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        echo = channel.unary_unary(ECHO)
        left = float((await echo(b"x")).decode().split("|")[2])
        assert 0 < left <= 1.1  # the route timeout became the deadline the server sees
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(b"x", metadata=(("x-code", "14"),))
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await echo(b"x", metadata=(("x-sleep", "2"),))
        assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0)  # let done-callbacks run
    state = mesh.snapshot.clusters[CLUSTER].endpoints[0]
    assert (state.total_requests, state.failures, state.active_requests) == (3, 2, 0)


async def test_unresolvable_target_fails_unavailable(aio_mesh: Mesh) -> None:
    aio_mesh.resolve_timeout = 0.5
    async with aio_mesh.grpc_aio_channel("xds:///nothing:1") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(ECHO)(b"x", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
