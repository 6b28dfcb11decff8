"""The asyncio channel's unary-request, streaming-response call: :class:`MeshStreamCall`.

A ``grpc.aio.UnaryStreamCall`` over its attempts, the asyncio twin of
``_sync_stream.RetryingStream``: each attempt's end is recorded from its done-callback,
and a failed attempt is retried where the application meets its error (``read()`` or
``async for``) if nothing was delivered and no metadata or status was read yet (see
``_stream_attempts``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ._aio_calls import aio_error, call_status, keep
from ._exchange import RpcExchange, Try
from ._status import MeshRpcError, code_of
from ._stream_attempts import StreamAttempts

__all__ = ["MeshStreamCall"]


class MeshStreamCall(grpc.aio.UnaryStreamCall):  # type: ignore[misc]
    """A server-streaming call through the mesh, retried until it is committed.

    Made by ``MeshAioChannel``'s multicallable: with the exchange (``start``), or with a
    coroutine that resolves the target and makes it (``start_after``); a fault delay
    holds the first attempt on a task. Reading waits for the first attempt."""

    def __init__(self, send: Callable[[Try], Any]) -> None:
        self._send = send
        self._state: StreamAttempts | None = None
        self._call: Any = None  # the current attempt (a grpc.aio call) or an AioRpcError
        self._pending: asyncio.Future[None] | None = None  # before the first attempt
        self._decided = asyncio.Event()  # the current attempt's end was recorded
        self._cancelled = False
        self._finished = False
        self._callbacks: list[Callable[[Any], None]] = []

    def start(self, ex: RpcExchange) -> MeshStreamCall:
        """Drive ``ex``: its fault delay and abort (on a task), then the attempts."""
        if ex.fault is None:
            self._begin(ex)
        else:
            self._pending = task = asyncio.ensure_future(self._held(ex))
            keep(task)
        return self

    def start_after(self, prepare: Callable[[], Awaitable[RpcExchange | Any]]) -> MeshStreamCall:
        """Drive the exchange ``prepare`` makes once the target resolved. ``prepare``
        raises AioRpcError when there is none, or returns a grpc.aio call made outside
        the mesh (a passthrough host), then this call's only attempt."""

        async def run() -> None:
            try:
                made = await prepare()
            except asyncio.CancelledError:
                self.fail(_cancelled_error())
                raise
            except BaseException as exc:
                self.fail(exc)
                return
            if isinstance(made, RpcExchange):
                await self._held(made)
            else:
                self._call = made
                made.add_done_callback(lambda _: self._finish())

        self._pending = task = asyncio.ensure_future(run())
        keep(task)
        return self

    def fail(self, error: BaseException) -> MeshStreamCall:
        """A call over before its first attempt."""
        self._call = error
        self._finish()
        return self

    # -- the driver -------------------------------------------------------------------
    async def _held(self, ex: RpcExchange) -> None:
        try:
            if ex.delay:
                await asyncio.sleep(ex.delay)
            aborted = ex.abort()
        except BaseException:
            ex.close(cancelled=True)
            self.fail(_cancelled_error())
            raise
        if aborted is not None:
            ex.close()
            self.fail(aio_error(aborted))
        else:
            self._begin(ex)

    def _begin(self, ex: RpcExchange) -> None:
        self._state = StreamAttempts(ex)
        try:
            self._attempt()
        except MeshRpcError as exc:
            self._call = aio_error(exc)
        except BaseException as exc:  # grpcio refused the call (bad metadata, closed)
            self._call = exc

    def _attempt(self) -> None:
        state = self._state
        assert state is not None
        try:
            t = state.ex.next_attempt()
        except MeshRpcError:
            state.stop()
            self._finish()
            raise
        try:
            call = self._send(t)
        except BaseException:
            state.ex.ended(t, None, None)
            state.stop()
            self._finish()
            raise
        decided = self._decided = asyncio.Event()
        self._call = call

        def done(c: Any) -> None:
            if c.cancelled():
                self._ended(t, decided, grpc.StatusCode.CANCELLED, None, None, cancelled=True)
                return
            status = call_status(c)
            if status is not None:
                self._ended(t, decided, code_of(status.code()), status.details(), status)
            else:
                keep(asyncio.ensure_future(self._ended_later(t, decided, c)))

        call.add_done_callback(done)

    async def _ended_later(self, t: Try, decided: asyncio.Event, call: Any) -> None:
        self._ended(t, decided, await call.code(), await call.details(), call)

    def _ended(
        self,
        t: Try,
        decided: asyncio.Event,
        code: grpc.StatusCode | None,
        details: str | None,
        source: Any,
        *,
        cancelled: bool = False,
    ) -> None:
        assert self._state is not None
        over = self._state.attempt_ended(t, code, details, source, cancelled=cancelled)
        decided.set()
        if over:
            self._finish()

    async def _after_error(self, call: Any) -> bool:
        """At a failed attempt's error: True when the next attempt was made."""
        state = self._state
        if state is None or call is not self._call:
            return False
        await self._decided.wait()
        delay = state.retry()
        if delay is None:
            self._finish()
            return False
        await asyncio.sleep(delay)
        if self._cancelled:  # cancelled during the back-off
            state.stop()
            self._finish()
            raise asyncio.CancelledError()
        try:
            self._attempt()
        except MeshRpcError as exc:
            self._call = aio_error(exc)
            raise self._call from exc
        return True

    def _finish(self) -> None:
        state = self._state
        if self._finished or (state is not None and not state.over):
            return
        self._finished = True
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    async def _started(self) -> Any:
        """The current attempt (or the error), once the first attempt was made."""
        pending = self._pending
        if pending is not None and not pending.done():
            try:
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                self.cancel()  # as grpc.aio: cancelling the reading task cancels the RPC
                raise
        return self._call

    async def _committed(self) -> Any:
        """The application looked at the metadata or status: this attempt is the last."""
        call = await self._started()
        if self._state is not None and self._state.commit():
            self._finish()
        return call

    # -- reading ----------------------------------------------------------------------
    async def read(self) -> Any:
        await self._started()
        while True:
            call = self._call
            if isinstance(call, BaseException):
                raise call
            try:
                item = await call.read()
            except grpc.RpcError:
                if not await self._after_error(call):
                    raise
                continue
            if item is not grpc.aio.EOF and self._state is not None:
                self._state.delivered()
            return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        while True:
            item = await self.read()
            if item is grpc.aio.EOF:
                return
            yield item

    # -- grpc.aio.Call ----------------------------------------------------------------
    async def initial_metadata(self) -> Any:
        call = await self._committed()
        if isinstance(call, grpc.aio.AioRpcError):
            return call.initial_metadata()
        return await call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        call = await self._committed()
        if isinstance(call, grpc.aio.AioRpcError):
            return call.trailing_metadata()
        return await call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        call = await self._committed()
        if isinstance(call, grpc.aio.AioRpcError):
            return call.code()
        code: grpc.StatusCode = await call.code()
        return code

    async def details(self) -> str:
        call = await self._committed()
        if isinstance(call, grpc.aio.AioRpcError):
            return str(call.details())
        return str(await call.details())

    async def wait_for_connection(self) -> None:
        call = await self._started()
        if not isinstance(call, BaseException):
            await call.wait_for_connection()

    def cancel(self) -> bool:
        if self._finished:
            return False
        self._cancelled = True
        state, call = self._state, self._call
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()  # it fails this call
            return True
        if state is not None and state.cancel():
            self._finish()
        if call is not None and not isinstance(call, BaseException):
            call.cancel()
        return True

    def cancelled(self) -> bool:
        call = self._call
        return self._cancelled or (
            call is not None and not isinstance(call, BaseException) and call.cancelled()
        )

    def done(self) -> bool:
        return self._finished

    def time_remaining(self) -> float | None:
        call = self._call
        if call is None or isinstance(call, BaseException):
            return None
        left: float | None = call.time_remaining()
        return left

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._finished:
            callback(self)
        else:
            self._callbacks.append(callback)

    def __del__(self) -> None:
        # dropped with a retry still pending: release what the call holds
        state = getattr(self, "_state", None)
        if state is not None and not state.over:
            state.commit()


def _cancelled_error() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.CANCELLED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="Locally cancelled by application!",
    )
