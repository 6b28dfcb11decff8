"""The asyncio channel's unary call: :class:`MeshUnaryCall`, driven by callbacks.

A ``grpc.aio.UnaryUnaryCall`` over the attempts of one call. No task of its own: each
attempt is a call on the endpoint's subchannel, and that call's done-callback hands the
attempt's status to the :class:`RpcExchange`, which says whether the call is over or how
long to back off (a loop timer) before the next attempt -- the asyncio twin of
``_sync_calls.RetryingFuture``, waiting with the event loop instead of threads. Awaiting
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

from ._exchange import RpcExchange, Try
from ._status import MeshRpcError, code_of

__all__ = ["MeshUnaryCall", "aio_error", "call_status", "keep", "record_when_done"]

_log = logging.getLogger(__name__)
_CANCELLED = "cancelled"  # the final state of a call cancelled between attempts
_BACKGROUND: set[asyncio.Future[Any]] = set()


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


class MeshUnaryCall(grpc.aio.UnaryUnaryCall):  # type: ignore[misc]
    """One unary-unary call through the mesh: the attempts of its exchange.

    Made by ``MeshAioChannel``'s multicallables: either with the exchange (``start``),
    or with a coroutine that resolves the target and makes the exchange
    (``start_after``). Its final state is the last attempt's grpc.aio call, or an
    error raised before any attempt (no route, overflow, fault abort, time up)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[Try], Any]) -> None:
        self._loop = loop
        self._send = send
        self._ex: RpcExchange | None = None
        self._mirror: Callable[[], None] | None = None
        self._current: Any = None  # the attempt in flight (a grpc.aio call)
        self._try: Try | None = None  # ... and what the exchange said about it
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Future[Any] | None = None  # resolving, before an exchange
        self._final: Any = None  # a grpc.aio call, an exception, or _CANCELLED
        # made on first use: the usual call has neither (fewer objects per call)
        self._waiters: list[asyncio.Future[None]] | None = None  # one per await
        self._callbacks: list[Callable[[Any], None]] | None = None
        self._cancelled = False

    # -- the driver -------------------------------------------------------------------
    def start(self, ex: RpcExchange, mirror: Callable[[], None] | None = None) -> MeshUnaryCall:
        """Drive ``ex``: its fault delay (a timer), abort, ``mirror`` (sends the call's
        mirror copies), then the attempts."""
        self._ex = ex
        if ex.fault is None:  # the usual call: no fault filter decision to wait for
            if mirror is not None:
                mirror()
            self._attempt()
            return self
        self._mirror = mirror
        if ex.delay:
            self._timer = self._loop.call_later(ex.delay, self._after_fault)
        else:
            self._after_fault()
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

    def _after_fault(self) -> None:
        assert self._ex is not None
        self._timer = None
        aborted = self._ex.abort()
        if aborted is not None:
            self._finish(aio_error(aborted))
            return
        if self._mirror is not None:
            self._mirror()
        self._attempt()

    def _attempt(self) -> None:
        self._timer = None
        if self._cancelled:
            return
        assert self._ex is not None
        try:
            t = self._ex.next_attempt()
        except MeshRpcError as exc:
            self._finish(aio_error(exc))
            return
        try:
            call = self._send(t)
        except BaseException as exc:  # grpcio refused the call (bad metadata, closed)
            self._ex.ended(t, None, None)
            self._finish(exc)
            return
        self._current, self._try = call, t
        call.add_done_callback(self._attempt_done)

    def _attempt_done(self, call: Any) -> None:
        t = self._try
        assert t is not None
        try:
            self._decide(t, call)
        except BaseException as exc:  # never into grpcio's task: finish with it
            _log.exception("meshlib: gRPC attempt bookkeeping failed")
            self._finish(exc)

    def _decide(self, t: Try, call: Any) -> None:
        ex = self._ex
        assert ex is not None
        if call.cancelled():
            ex.ended(t, grpc.StatusCode.CANCELLED, None, cancelled=True)
            self._finish(call)
            return
        status = call_status(call)
        if status is None:  # not a grpcio call we know: no retry, record when known
            record_when_done(ex, t)(call)
            self._ex = None  # the recorder closes it
            self._finish(call)
            return
        code = code_of(status.code())
        if code is grpc.StatusCode.OK:
            ex.succeeded(t)
            self._finish(call)
            return
        delay = ex.ended(t, code, status.details(), status)
        if delay is None or self._cancelled:
            self._finish(call)
        else:
            self._timer = self._loop.call_later(delay, self._attempt)

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
        self._cancelled = True
        current = self._current
        if current is not None and current.cancel():
            return True  # its done-callback finishes this call
        if self._timer is not None:
            self._timer.cancel()
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
