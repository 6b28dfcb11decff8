"""The async httpx transport: drives :class:`Exchange` with awaited waits."""

from __future__ import annotations

import asyncio

import httpcore
import httpx

from .._call import authority_of
from .._errors import CircuitBreakerOpen, MeshError
from .._snapshot import ClusterView, ListenerView
from ..cluster._endpoints import EndpointState
from ._base import TransportBase
from ._connections import AsyncEndpointPool, Retired
from ._exchange import Exchange, Shadow, mesh_error
from ._pools import Connector
from ._sync import MAX_SHADOWS_IN_FLIGHT

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

    async def _listener(self, authority: str) -> ListenerView:
        found = self._engine.listener(authority)
        if isinstance(found, ListenerView):
            return found
        await asyncio.to_thread(found.wait, self._resolve_timeout)
        return self._engine.resolved(authority)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        authority = authority_of(url.host, url.port, url.scheme)
        try:
            view = await self._listener(authority)
        except MeshError as exc:
            raise mesh_error(exc, request) from exc
        if view.missing and self._unknown_hosts == "passthrough":
            return await self.passthrough.handle_async_request(request)
        for pool in self._stale_pools():
            await pool.aclose()
        exchange = self._exchange(view, request, authority)
        try:
            return await self._carry(exchange)
        except BaseException as exc:
            exchange.close(exc)
            raise
        finally:
            exchange.close()

    async def _carry(self, ex: Exchange) -> httpx.Response:
        if ex.delay:
            await asyncio.sleep(ex.delay)
        aborted = ex.abort_response()
        if aborted is not None:
            return aborted
        for shadow in ex.mirror_requests(self._engine):
            self._mirror(shadow)
        while True:
            attempt, upstream, connector = ex.next_attempt()
            assert ex.view is not None
            try:
                response = await self._send(
                    ex.view, attempt.endpoint, connector, upstream, ex.request
                )
            except CircuitBreakerOpen as exc:
                raise ex.refused(attempt, exc) from exc
            except httpx.TransportError as exc:
                delay = ex.failed(attempt, exc)
                if delay is None:
                    raise
            else:
                delay = ex.answered(attempt, response)
                if delay is None:
                    return ex.finish(response)
                await response.aclose()
            await asyncio.sleep(delay)

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
