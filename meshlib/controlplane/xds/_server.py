"""The ADS gRPC server: ``grpc.aio`` on its own thread and event loop.

:class:`AdsServicer` runs one :class:`StreamState` (or :class:`DeltaStreamState`) per
stream, merging the client's requests and the cache's new snapshots into one queue so
responses leave in order.
:class:`XdsServer` owns the thread, the loop and the ``grpc.aio`` server, so it can be
started and stopped from synchronous code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ._cache import Snapshot, SnapshotCache
from ._delta import DeltaStreamState
from ._events import EventLog
from ._stream import StreamState

__all__ = ["AdsServicer", "XdsServer"]

log = logging.getLogger(__name__)

_EOF = object()
_Item = object  # a (Delta)DiscoveryRequest, a Snapshot, an exception or _EOF
_State = StreamState | DeltaStreamState


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """ADS, state of the world and delta, over a :class:`SnapshotCache`."""

    def __init__(self, cache: SnapshotCache, events: EventLog) -> None:
        self._cache = cache
        self._events = events
        self._queues: set[asyncio.Queue[_Item]] = set()
        self._states: set[_State] = set()

    def streams(self) -> list[_State]:
        """The state of every open stream (read from the server's loop)."""
        return list(self._states)

    def close_streams(self) -> None:
        """End every open stream with status OK (call on the server's loop)."""
        for queue in self._queues:
            queue.put_nowait(_EOF)

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Serve one state-of-the-world ADS stream until the client or the server ends it."""
        state = StreamState(snapshot=self._cache.snapshot(), events=self._events)
        async for response in self._serve(state, request_iterator):
            yield response

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """Serve one incremental (delta) ADS stream until the client or the server ends it."""
        state = DeltaStreamState(snapshot=self._cache.snapshot(), events=self._events)
        async for response in self._serve(state, request_iterator):
            yield response

    async def _serve(
        self, state: _State, request_iterator: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        reader = asyncio.create_task(self._read(request_iterator, queue))
        watcher = asyncio.create_task(self._watch(state.snapshot.version, queue))
        self._queues.add(queue)
        self._states.add(state)
        try:
            while True:
                item = await queue.get()
                if item is _EOF:
                    break
                if isinstance(item, Snapshot):
                    responses: list[Any] = state.on_snapshot(item)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    responses = state.on_request(item)
                for response in responses:
                    log.debug(
                        "node %s <- %s v%s nonce %s (%d resources)",
                        state.node_id,
                        response.type_url,
                        state.snapshot.version,
                        response.nonce,
                        len(response.resources),
                    )
                    yield response
        finally:
            self._queues.discard(queue)
            self._states.discard(state)
            for task in (reader, watcher):
                task.cancel()
            for task in (reader, watcher):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            log.debug("node %s: stream closed", state.node_id)

    async def _read(
        self,
        requests: AsyncIterator[Any],
        queue: asyncio.Queue[_Item],
    ) -> None:
        try:
            async for request in requests:
                queue.put_nowait(request)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the client went away
            log.debug("ADS stream read ended: %r", err)
        queue.put_nowait(_EOF)

    async def _watch(self, version: str, queue: asyncio.Queue[_Item]) -> None:
        while True:
            snapshot = await self._cache.wait_for_change(version)
            version = snapshot.version
            queue.put_nowait(snapshot)


class XdsServer:
    """Runs an :class:`AdsServicer` on ``host:port`` in a background thread."""

    def __init__(
        self, cache: SnapshotCache, events: EventLog, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.servicer = AdsServicer(cache, events)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._grace = 1.0

    @property
    def address(self) -> str:
        """``host:port`` as a gRPC target (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("xDS server already started")
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="meshlib-xds-server", daemon=True
        )
        self._thread.start()
        try:
            self.port = ready.result(timeout)
        except BaseException:
            self._thread.join(timeout)
            self._thread = None
            raise

    def stop(self, grace: float = 1.0) -> None:
        """End every stream, stop the server and join its thread."""
        loop, thread, stop = self._loop, self._thread, self._stop
        if loop is None or thread is None:
            return
        self._grace = grace
        if stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(grace + 10.0)
        self._thread = None

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as err:
            if not ready.done():
                ready.set_exception(err)
            else:
                log.exception("xDS server failed")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        self._stop = asyncio.Event()
        # No SO_REUSEPORT: a second control plane on the same port must fail, not share it.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, server)
        try:
            port = server.add_insecure_port(self.address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {self.address} (address in use?)")
        await server.start()
        self.port = port
        ready.set_result(port)
        log.info("xDS server listening on %s", self.address)
        try:
            await self._stop.wait()
        finally:
            self.servicer.close_streams()
            await server.stop(self._grace)
