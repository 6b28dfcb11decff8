"""The async httpx transport: drives :class:`Exchange` with awaited waits."""

from __future__ import annotations

import asyncio

import httpcore
import httpx

from .._call import authority_of
from .._errors import CircuitBreakerOpen, MeshError
from .._snapshot import ClusterView, ListenerView, Snapshot
from ..cluster._endpoints import EndpointState
from ..exchange import DONE, MAX_SHADOWS_IN_FLIGHT, Send, Sleep
from ..local_reply import LocalReply
from ._base import TransportBase
from ._connections import AsyncEndpointPool, Retired
from ._exchange import Exchange, Shadow
from ._pools import Connector

__all__ = ["AsyncMeshTransport"]


class AsyncMeshTransport(
    TransportBase[httpx.AsyncBaseTransport, AsyncEndpointPool], httpx.AsyncBaseTransport
):
    """The async twin of :class:`~meshlib.MeshTransport`: the same decisions
    (:class:`Exchange`, the same pools and connectors), awaited sends and sleeps;
    mirrors are background tasks."""

    _pool_class = AsyncEndpointPool
    _connection_class = httpcore.AsyncHTTPConnection

    def _setup(self) -> None:
        self._shadows: set[asyncio.Task[None]] = set()

    @property
    def passthrough(self) -> httpx.AsyncBaseTransport:
        """Where requests for hosts the mesh does not know go."""
        if self._passthrough is None:
            self._passthrough = httpx.AsyncHTTPTransport()
        return self._passthrough

    async def _lookup(self, authority: str) -> tuple[Snapshot, ListenerView]:
        found = self._engine.lookup(authority)
        if isinstance(found, tuple):
            return found
        await asyncio.to_thread(found.wait, self._resolve_timeout)
        return self._engine.looked_up(authority)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        authority = authority_of(url.host, url.port, url.scheme)
        try:
            snapshot, view = await self._lookup(authority)
        except MeshError as exc:
            raise self._unrouted(exc, request) from exc
        if view.missing:
            if self._unknown_hosts == "passthrough":
                return await self.passthrough.handle_async_request(request)
            raise self._unresolved(view, authority, request)
        if view.routes is None:
            raise self._unresolved(view, authority, request)
        for pool in self._stale_pools(snapshot):
            await pool.aclose()
        exchange = self._exchange(snapshot, view, request, authority, self._mirror)
        try:
            return await self._carry(exchange)
        except BaseException as exc:
            exchange.close(exc)
            raise
        finally:
            exchange.close()

    async def _carry(self, ex: Exchange) -> httpx.Response:
        step = ex.start()
        while True:
            if step.__class__ is Send:
                assert isinstance(step, Send)
                prepared = ex.prepare(step)
                if isinstance(prepared, LocalReply):
                    return ex.answer(prepared)
                upstream, connector, view = prepared
                try:
                    response = await self._send(
                        view, step.attempt.endpoint, connector, upstream, ex.request
                    )
                except CircuitBreakerOpen as exc:
                    step = ex.refused(step, exc)
                except httpx.TransportError as exc:
                    step = ex.failed(step, exc)
                    if step is DONE:
                        raise
                else:
                    step = ex.answered(step, response)
                    if step is DONE:
                        return ex.finish(response)
                    await response.aclose()
            elif step.__class__ is Sleep:
                assert isinstance(step, Sleep)
                await asyncio.sleep(step.seconds)
                step = ex.resume()
            else:
                assert isinstance(step, LocalReply)
                return ex.answer(step)

    async def _send(
        self,
        view: ClusterView,
        endpoint: EndpointState,
        connector: Connector,
        request: httpcore.Request,
        app: httpx.Request,
    ) -> httpx.Response:
        while True:
            try:
                return await self._pools.get(view, endpoint, connector).send(request, app)
            except Retired:
                continue  # retired between the lookup and the send: a new pool

    def _mirror(self, shadow: Shadow) -> None:
        if len(self._shadows) >= MAX_SHADOWS_IN_FLIGHT:
            shadow.done()  # dropped: never delay the main request
            return
        task = asyncio.get_running_loop().create_task(self._send_shadow(shadow))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _send_shadow(self, shadow: Shadow) -> None:
        try:
            response = await self._send(
                shadow.cluster, shadow.endpoint, shadow.connector, shadow.request, shadow.app
            )
            await response.aread()
            await response.aclose()
            shadow.done(response)
        except httpx.TransportError as exc:
            shadow.done(error=exc)
        except asyncio.CancelledError:
            shadow.done()
            raise
        except Exception:  # a mirror's result is ignored by design
            shadow.done()

    async def aclose(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        for pool in self._pools.drain():
            await pool.aclose()
        if self._passthrough is not None:
            await self._passthrough.aclose()
