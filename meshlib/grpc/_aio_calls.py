"""The asyncio channel's unary call: :class:`MeshUnaryCall`, driven by callbacks.

A ``grpc.aio.UnaryUnaryCall`` over the attempts of one call. No task of its own: each
attempt is a call on the endpoint's subchannel, and that call's done-callback hands the
attempt's status to the :class:`RpcExchange`, which says whether the call is over or how
long to back off (a loop timer) before the next attempt: the one callback driver
(``_callback_driver.CallbackAttempts``) that ``_sync_calls.RetryingFuture`` also runs,
waiting with the event loop instead of threads. Awaiting
the call awaits the last attempt's own call, so responses and ``AioRpcError`` are
grpcio's. Only a call made before its target resolved runs one short task first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import grpc
import grpc.aio

from ._callback_driver import CallbackAttempts, Status
from ._exchange import RpcExchange, Try
from ._status import MeshRpcError, code_of

__all__ = ["MeshUnaryCall", "aio_error", "call_status", "keep", "record_when_done"]

_log = logging.getLogger(__name__)
_CANCELLED = "cancelled"  # the final state of a call cancelled between attempts
_BACKGROUND: set[asyncio.Future[Any]] = set()
_NO_LOCK = contextlib.nullcontext()


def keep(task: asyncio.Future[Any]) -> None:
    """Hold a background task until it is done (the loop keeps only weak references)."""
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def aio_error(exc: MeshRpcError) -> grpc.aio.AioRpcError:
    """The ``AioRpcError`` an asyncio caller gets for a call the mesh could not make."""
    return grpc.aio.AioRpcError(
        exc.code(),
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*exc.trailing_metadata()),
        details=exc.details(),
    )


def call_status(call: Any) -> Any:
    """The final status of a finished grpc.aio call, read without awaiting (grpcio keeps
    it on the call's cython object once done-callbacks run); None if it is not there."""
    return getattr(getattr(call, "_cython_call", None), "_status", None)


def record_when_done(ex: RpcExchange, t: Try) -> Callable[[Any], None]:
    """A done-callback recording a single-attempt call's outcome, then closing its
    exchange (streaming calls: their response may have been partly consumed)."""

    def done(call: Any) -> None:
        if call.cancelled():
            ex.ended(t, grpc.StatusCode.CANCELLED, None, cancelled=True)
            ex.close()
            return
        status = call_status(call)
        if status is not None:
            ex.ended(t, code_of(status.code()), status.details(), status, committed=True)
            ex.close()
        else:
            keep(asyncio.ensure_future(_record_later(ex, t, call)))

    return done


async def _record_later(ex: RpcExchange, t: Try, call: Any) -> None:
    try:
        ex.ended(t, await call.code(), await call.details(), call, committed=True)
    finally:
        ex.close()


class MeshUnaryCall(CallbackAttempts, grpc.aio.UnaryUnaryCall):  # type: ignore[misc]
    """One unary-unary call through the mesh: the callback driver on ``loop.call_later``.

    Made by ``MeshAioChannel``'s multicallables: either with the exchange (``start``),
    or with a coroutine that resolves the target and makes the exchange
    (``start_after``). Its final state is the last attempt's grpc.aio call, or an
    error raised before any attempt (no route, overflow, fault abort, time up)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[Try], Any]) -> None:
        self._setup(send, loop.call_later)
        self._loop = loop
        self._ex = None
        self._lock = _NO_LOCK  # one event loop: nothing to lock
        self._pending: asyncio.Future[Any] | None = None  # resolving, before an exchange
        self._final: Any = None  # a grpc.aio call, an exception, or _CANCELLED
        # made on first use: the usual call has neither (fewer objects per call)
        self._waiters: list[asyncio.Future[None]] | None = None  # one per await
        self._callbacks: list[Callable[[Any], None]] | None = None

    # -- the driver -------------------------------------------------------------------
    def start(self, ex: RpcExchange, mirror: Callable[[], None] | None = None) -> MeshUnaryCall:
        """Drive ``ex``: its fault delay (a timer), abort, ``mirror`` (sends the call's
        mirror copies), then the attempts."""
        self._ex = ex
        self._mirror = mirror
        self._drive()
        return self

    def start_after(
        self,
        prepare: Callable[[], Awaitable[RpcExchange | Any]],
        mirror: Callable[[RpcExchange], None] | None = None,
    ) -> MeshUnaryCall:
        """Drive the exchange ``prepare`` makes once the target resolved (``mirror``
        sends its mirror copies). ``prepare`` raises AioRpcError when there is none, or
        returns a grpc.aio call made outside the mesh (a passthrough host), which is
        then this call's only attempt."""

        async def run() -> None:
            try:
                made = await prepare()
            except BaseException as exc:
                self._finish(exc)
                return
            if isinstance(made, RpcExchange):
                ex = made
                self.start(ex, None if mirror is None else (lambda: mirror(ex)))
            else:
                self._current = made
                made.add_done_callback(self._finish)

        self._pending = task = asyncio.ensure_future(run())
        keep(task)
        return self

    def fail(self, error: BaseException) -> MeshUnaryCall:
        """A call over before it started (the exchange could not be made)."""
        self._finish(error)
        return self

    # -- the driver's hooks -----------------------------------------------------------
    def _local(self, error: MeshRpcError) -> Any:
        return aio_error(error)

    def _status(self, call: Any) -> Status | None:
        status = call_status(call)
        if status is None:
            return None
        return code_of(status.code()), status.details(), status

    def _unknown(self, t: Try, call: Any) -> None:
        """Not a grpcio call we know: no retry, record when known."""
        assert self._ex is not None
        record_when_done(self._ex, t)(call)
        self._ex = None  # the recorder closes it
        self._finish(call)

    def _finish(self, final: Any) -> None:
        if self._final is not None:
            return
        self._final = final
        if self._ex is not None:
            self._ex.close(cancelled=final is _CANCELLED)
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        callbacks, self._callbacks = self._callbacks, None
        for cb in callbacks or ():
            cb(self)

    def _waiter(self) -> asyncio.Future[None]:
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return waiter

    async def _done(self) -> Any:
        """The final state, once there is one (a caller cancelled here cancels only
        its own wait)."""
        if self._final is None:
            await self._waiter()
        return self._final

    # -- grpc.aio.UnaryUnaryCall ------------------------------------------------------
    def __await__(self) -> Generator[Any, None, Any]:
        try:
            while self._final is None:
                current = self._current
                if current is not None and self._timer is None and not current.done():
                    # Wait on the attempt itself: grpcio runs its done-callbacks (our
                    # decision) before its task ends, so the usual call needs no waiter
                    # of its own. If it did not decide (a retry), wait for the end.
                    with contextlib.suppress(grpc.RpcError):  # the exchange judges it
                        yield from current.__await__()
                else:
                    yield from self._waiter()
        except asyncio.CancelledError:
            self.cancel()  # as grpc.aio: cancelling the awaiting task cancels the RPC
            raise
        final = self._final
        if final is _CANCELLED:
            raise asyncio.CancelledError()
        if isinstance(final, BaseException):
            raise final
        return (yield from final.__await__())

    def cancel(self) -> bool:
        if self._final is not None:
            return False
        if self._cancel_attempts():
            return True  # its done-callback finishes this call
        if self._pending is not None:
            self._pending.cancel()
        self._finish(_CANCELLED)
        return True

    def cancelled(self) -> bool:
        final = self._final
        if final is _CANCELLED:
            return True
        return final is not None and not isinstance(final, BaseException) and final.cancelled()

    def done(self) -> bool:
        return self._final is not None

    def time_remaining(self) -> float | None:
        current = self._current
        return current.time_remaining() if current is not None else None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._final is None:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(callback)
        else:
            callback(self)

    async def initial_metadata(self) -> Any:
        final = await self._done()
        if final is _CANCELLED:
            return grpc.aio.Metadata()
        if isinstance(final, grpc.aio.AioRpcError):
            return final.initial_metadata()
        if isinstance(final, BaseException):
            return grpc.aio.Metadata()
        return await final.initial_metadata()

    async def trailing_metadata(self) -> Any:
        final = await self._done()
        if final is _CANCELLED:
            return grpc.aio.Metadata()
        if isinstance(final, grpc.aio.AioRpcError):
            return final.trailing_metadata()
        if isinstance(final, BaseException):
            return grpc.aio.Metadata()
        return await final.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        final = await self._done()
        if final is _CANCELLED:
            return grpc.StatusCode.CANCELLED
        if isinstance(final, grpc.aio.AioRpcError):
            return final.code()
        if isinstance(final, BaseException):
            return grpc.StatusCode.UNKNOWN
        code: grpc.StatusCode = await final.code()
        return code

    async def details(self) -> str:
        final = await self._done()
        if final is _CANCELLED:
            return "Locally cancelled by application!"
        if isinstance(final, grpc.aio.AioRpcError):
            return str(final.details())
        if isinstance(final, BaseException):
            return str(final)
        return str(await final.details())

    async def wait_for_connection(self) -> None:
        final = await self._done()
        if isinstance(final, BaseException):
            raise final
        if final is not _CANCELLED:
            await final.wait_for_connection()
