"""Connections to one endpoint of one cluster: httpcore connections, pooled and queued.

httpcore does the protocol work (HTTP/1.1, HTTP/2, TLS); :class:`~._pool_core.PoolCore`
decides which connection a request goes on or that it waits; :class:`EndpointPool`
(sync) and :class:`AsyncEndpointPool` only send and wait (a pending request gives up at
the attempt's pool timeout with ``httpx.PoolTimeout``). Responses stream from httpcore;
closing one frees its connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import httpcore
import httpx

from ._pool_core import PoolCore, Retired, TaskWaiter, ThreadWaiter

__all__ = ["AsyncEndpointPool", "EndpointPool", "PoolCore", "Retired", "map_error"]

_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


def map_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    """The httpx exception for an httpcore one (the most specific), else None."""
    for cls in type(exc).__mro__:
        target = _ERRORS.get(cls)
        if target is not None:
            return target(str(exc), request=request)
    return None


def _pool_timeout(request: httpcore.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    value = timeout.get("pool") if isinstance(timeout, dict) else None
    return None if value is None else float(value)


def _is_http2(response: httpcore.Response) -> bool:
    return response.extensions.get("http_version") == b"HTTP/2"


class EndpointPool:
    """Sync sends on a :class:`PoolCore` of ``httpcore.HTTPConnection``."""

    def __init__(self, core: PoolCore[httpcore.HTTPConnection]) -> None:
        self.core = core

    def send(self, request: httpcore.Request, app: httpx.Request) -> httpx.Response:
        """Send ``request`` (built for this endpoint); errors as httpx exceptions about
        ``app``, the application's request. Raises Retired, CircuitBreakerOpen."""
        core = self.core
        deadline: float | None = None
        while True:
            got = core.checkout(ThreadWaiter)
            self._close_trash()
            if isinstance(got, ThreadWaiter):
                limit = _pool_timeout(request)
                if limit is not None and deadline is None:
                    deadline = time.monotonic() + limit
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not got.event.wait(left):
                    conn = core.cancel(got)
                    if conn is None:
                        raise httpx.PoolTimeout("timed out waiting for a connection", request=app)
                else:
                    conn = got.conn
                if conn is None:
                    if core.retired:
                        raise Retired()
                    continue
            else:
                conn = got
            try:
                response = conn.handle_request(request)
            except httpcore.ConnectionNotAvailable:
                core.checkin(conn)
                continue
            except BaseException as exc:
                core.checkin(conn)
                self._close_trash()
                mapped = map_error(exc, app)
                if mapped is None:
                    raise
                raise mapped from exc
            if _is_http2(response):
                core.multiplexed(conn)
            assert isinstance(response.stream, Iterable)
            body = _Body(response.stream, self, conn, app)
            return httpx.Response(
                response.status,
                headers=response.headers,
                stream=body,
                extensions=response.extensions,
            )

    def release(self, conn: httpcore.HTTPConnection) -> None:
        self.core.checkin(conn)
        self._close_trash()

    def _close_trash(self) -> None:
        if self.core.has_trash:
            for conn in self.core.trash():
                conn.close()

    def retire(self) -> bool:
        return self.core.retire()

    def close(self) -> None:
        self.core.close()
        self._close_trash()


class _Body(httpx.SyncByteStream):
    """The response body: httpcore's stream, errors mapped; closing frees the connection."""

    def __init__(
        self,
        stream: Iterable[bytes],
        pool: EndpointPool,
        conn: httpcore.HTTPConnection,
        request: httpx.Request,
    ) -> None:
        self._stream = stream
        self._pool: EndpointPool | None = pool
        self._conn = conn
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except Exception as exc:
            mapped = map_error(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        finally:
            pool.release(self._conn)


class AsyncEndpointPool:
    """Async sends on a :class:`PoolCore` of ``httpcore.AsyncHTTPConnection``."""

    def __init__(self, core: PoolCore[httpcore.AsyncHTTPConnection]) -> None:
        self.core = core

    async def send(self, request: httpcore.Request, app: httpx.Request) -> httpx.Response:
        """As :meth:`EndpointPool.send`, awaited."""
        core = self.core
        deadline: float | None = None
        while True:
            got = core.checkout(TaskWaiter)
            await self._close_trash()
            if isinstance(got, TaskWaiter):
                limit = _pool_timeout(request)
                if limit is not None and deadline is None:
                    deadline = time.monotonic() + limit
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    await asyncio.wait_for(asyncio.shield(got.future), left)
                    conn = got.conn
                except (TimeoutError, asyncio.CancelledError) as exc:
                    conn = core.cancel(got)
                    if isinstance(exc, asyncio.CancelledError):
                        if conn is not None:
                            core.checkin(conn)
                        raise
                    if conn is None:
                        raise httpx.PoolTimeout(
                            "timed out waiting for a connection", request=app
                        ) from None
                if conn is None:
                    if core.retired:
                        raise Retired()
                    continue
            else:
                conn = got
            try:
                response = await conn.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                core.checkin(conn)
                continue
            except BaseException as exc:
                core.checkin(conn)
                await self._close_trash()
                mapped = map_error(exc, app)
                if mapped is None:
                    raise
                raise mapped from exc
            if _is_http2(response):
                core.multiplexed(conn)
            assert isinstance(response.stream, AsyncIterable)
            body = _AsyncBody(response.stream, self, conn, app)
            return httpx.Response(
                response.status,
                headers=response.headers,
                stream=body,
                extensions=response.extensions,
            )

    async def release(self, conn: httpcore.AsyncHTTPConnection) -> None:
        self.core.checkin(conn)
        await self._close_trash()

    async def _close_trash(self) -> None:
        if self.core.has_trash:
            for conn in self.core.trash():
                await conn.aclose()

    def retire(self) -> bool:
        return self.core.retire()

    async def aclose(self) -> None:
        self.core.close()
        await self._close_trash()


class _AsyncBody(httpx.AsyncByteStream):
    """The async response body (see :class:`_Body`)."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        pool: AsyncEndpointPool,
        conn: httpcore.AsyncHTTPConnection,
        request: httpx.Request,
    ) -> None:
        self._stream = stream
        self._pool: AsyncEndpointPool | None = pool
        self._conn = conn
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            mapped = map_error(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await pool.release(self._conn)
