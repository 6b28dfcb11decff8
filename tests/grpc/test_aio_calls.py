"""MeshAioChannel's unary call (``MeshUnaryCall``): attempts driven by done-callbacks.

Retries and back-off without a task of the call's own, the grpc.aio call surface
(``code()``, ``details()``, metadata, done-callbacks) before and after the call ends,
cancellation during an attempt and during a back-off, fault delays, calls that fail
before any attempt, and hosts outside the mesh."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
import pytest

from meshlib import Mesh

from .conftest import CLUSTER, TARGET, MeshFactory
from .support import Backend, grpc_fault, retry_policy, route, service

ECHO = "/test.Echo/Echo"
UNAVAILABLE = (("x-code", "14"),)


def hits(backends: Sequence[Backend]) -> int:
    return sum(b.logic.calls + b.logic.aborted for b in backends)


def settled(mesh: Mesh) -> bool:
    return all(s.active_requests == 0 for s in mesh.snapshot.clusters[CLUSTER].endpoints)


async def test_retries_then_the_calls_surface(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, timeout=5.0, retry=retry_policy("unavailable", 2))]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [b.address for b in backends]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        echo = channel.unary_unary(ECHO)
        call = echo(b"x", timeout=5, metadata=UNAVAILABLE)
        assert isinstance(call, grpc.aio.UnaryUnaryCall)
        seen: list[Any] = []
        call.add_done_callback(seen.append)
        # code() waits for the last attempt without awaiting the call itself
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        assert hits(backends) == 3 and call.done() and seen == [call]
        assert (await call.details()).endswith("says UNAVAILABLE")  # the last attempt's
        assert isinstance(await call.trailing_metadata(), grpc.aio.Metadata)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        late: list[Any] = []
        call.add_done_callback(late.append)  # already done: called at once
        assert late == [call]
        # a successful call: grpcio's own answer and metadata
        ok = echo(b"x", timeout=5)
        await ok.wait_for_connection()
        assert (await ok).startswith(b"b")
        assert await ok.code() is grpc.StatusCode.OK
        assert isinstance(await ok.initial_metadata(), grpc.aio.Metadata)
        assert not ok.cancelled() and ok.time_remaining() is not None
    assert hits(backends) == 4 and settled(mesh)


async def test_cancelled_during_back_off(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    policy = retry_policy("unavailable", 2)
    policy.retry_back_off.base_interval.FromSeconds(5)  # the first back-off is long
    routes = [route(CLUSTER, timeout=30.0, retry=policy)]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        call = channel.unary_unary(ECHO)(b"x", metadata=UNAVAILABLE)
        for _ in range(2000):  # bounded: until the first attempt has failed
            if backends[0].logic.aborted == 1 and settled(mesh):
                break
            await asyncio.sleep(0.005)
        assert backends[0].logic.aborted == 1 and not call.done()
        assert call.cancel() and call.cancelled() and call.done()
        assert not call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await call.code() is grpc.StatusCode.CANCELLED
    assert hits(backends) == 1 and settled(mesh)


async def test_cancelling_the_awaiting_task_cancels_the_attempt(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, timeout=30.0, retry=retry_policy("unavailable,cancelled", 2))]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        call = channel.unary_unary(ECHO)(b"x", metadata=(("x-sleep", "3"),))
        task = asyncio.ensure_future(_await(call))
        for _ in range(2000):  # bounded: until the attempt reached the backend
            if backends[0].logic.started == 1:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await call.code() is grpc.StatusCode.CANCELLED
        assert call.cancelled()
        for _ in range(200):  # the attempt's done-callback runs on the loop
            if settled(mesh):
                break
            await asyncio.sleep(0.005)
    assert backends[0].logic.started == 1  # a cancelled call is not retried
    assert settled(mesh)


async def _await(call: Any) -> Any:
    return await call


async def test_fault_delay_holds_the_call_on_a_timer(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, timeout=5.0, fault=grpc_fault(delay=0.3))]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        call = channel.unary_unary(ECHO)(b"x", timeout=5)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not call.done() and backends[0].logic.started == 0  # held, not sent
        assert (await call).startswith(b"b0")
        # cancelled while held: nothing is sent
        held = channel.unary_unary(ECHO)(b"x", timeout=5)
        assert held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
    assert backends[0].logic.started == 1 and settled(mesh)


async def test_failures_before_any_attempt(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [route(CLUSTER, path="/test.Echo/Other", timeout=5.0)]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        call = channel.unary_unary(ECHO)(b"x", timeout=5)  # no route matches Echo
        assert call.done() and not call.cancelled()
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        trailing = await call.trailing_metadata()
        assert ("x-meshlib-reason", "no_route") in list(trailing)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert "no route" in (info.value.details() or "")
        assert not call.cancel()
    assert backends[0].logic.started == 0


async def test_a_host_outside_the_mesh_passes_through(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    mesh, _ = mesh_factory(service(TARGET, [route(CLUSTER)], {CLUSTER: [backends[0].address]}))
    mesh.resolve_timeout = 2
    # resolved for the first call (it waits), known missing for the second
    async with mesh.grpc_aio_channel(backends[1].address) as channel:
        echo = channel.unary_unary(ECHO)
        first = await echo(b"x", timeout=5)
        second = await echo(b"x", timeout=5)
    assert first.startswith(b"b1") and second.startswith(b"b1")
    assert backends[1].logic.calls == 2 and backends[0].logic.calls == 0


async def test_streaming_calls_held_or_aborted_by_the_fault_filter(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    routes = [
        route(CLUSTER, path="/test.Echo/Stream", fault=grpc_fault(abort=8)),
        route(CLUSTER, timeout=5.0, fault=grpc_fault(delay=0.2)),
    ]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        aborted = channel.unary_stream("/test.Echo/Stream")(b"2", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [m async for m in aborted]
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await aborted.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert backends[0].logic.started == 0
        # held by the delay, then one attempt; writes made meanwhile are kept
        chat = channel.stream_stream("/test.Echo/Chat")(timeout=5)
        await chat.write(b"held")
        await chat.done_writing()
        replies = [m async for m in chat]
        assert len(replies) == 1 and replies[0].startswith(b"held@")
        assert await chat.code() is grpc.StatusCode.OK
    states = mesh.snapshot.clusters[CLUSTER].endpoints
    assert states[0].total_requests == 1 and settled(mesh)


async def test_awaiting_the_call_directly_follows_its_retries(
    backends: list[Backend], mesh_factory: MeshFactory
) -> None:
    backends[0].logic.fail_with = grpc.StatusCode.UNAVAILABLE
    routes = [route(CLUSTER, timeout=5.0, retry=retry_policy("unavailable", 2))]
    addresses = [b.address for b in backends[:2]]
    mesh, _ = mesh_factory(service(TARGET, routes, {CLUSTER: addresses}))
    async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as channel:
        await channel.channel_ready()
        echo = channel.unary_unary(ECHO)
        # awaited at once (no code() first): the awaiting task waits on each attempt;
        # one at a time, so round robin sends a retry of b0's failure to b1
        answers = [await echo(b"x", timeout=5) for _ in range(6)]
        assert all(a.startswith(b"b1|") for a in answers)
        retried = backends[0].logic.aborted
        assert retried >= 1  # some went to b0 first and were retried
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await echo(b"x", timeout=5, metadata=UNAVAILABLE)  # every attempt fails
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    aborted = backends[0].logic.aborted + backends[1].logic.aborted
    assert aborted == retried + 3 and hits(backends[:2]) == 6 + aborted and settled(mesh)
