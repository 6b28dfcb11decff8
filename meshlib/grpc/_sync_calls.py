"""The sync channel's non-blocking drivers: futures and streaming calls.

:class:`RetryingFuture` drives an :class:`RpcExchange` from grpcio's done-callbacks
(the one callback driver, ``_callback_driver.CallbackAttempts``, waiting for back-off and
fault delays on a ``threading.Timer``) and stands for the whole call:
its result, status and metadata are those of the last attempt. ``start_stream``
starts a streaming call: a unary-request one is a ``RetryingStream`` (retried until
the application saw part of its response, see ``_stream_attempts``); a request-streaming
one makes one attempt (its request iterator cannot be replayed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from ._callback_driver import CallbackAttempts, Cancellable, Status
from ._exchange import RpcExchange, Try
from ._status import MeshRpcError
from ._sync_stream import RetryingStream

__all__ = ["RetryingFuture", "start_stream"]

_CANCELLED = object()


def _timer(delay: float, fn: Callable[[], None]) -> Cancellable:
    """How the sync driver waits: a daemon ``threading.Timer``."""
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


class RetryingFuture(CallbackAttempts, grpc.Future, grpc.Call):  # type: ignore[misc]
    """A ``grpc.Future`` (and ``grpc.Call``) over the attempts of one unary-response
    call: the callback driver on ``threading.Timer``."""

    def __init__(
        self,
        ex: RpcExchange,
        send: Callable[[Try], Any],
        mirror: Callable[[], None] | None = None,
    ) -> None:
        self._setup(send, _timer)
        self._ex = ex
        self._mirror = mirror  # sends the call's mirror copies, once past the fault filter
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._final: Any = None  # what the caller sees: a grpcio future, an error
        self._callbacks: list[Callable[[Any], None]] = []
        self._terminations: list[Callable[[], None]] = []

    def start(self) -> RetryingFuture:
        self._drive()
        return self

    # -- the driver's hooks -----------------------------------------------------------
    def _status(self, call: Any) -> Status:
        return call.code(), call.details(), call

    def _refused(self, error: BaseException) -> Any:
        return _Failed(error)

    def _finish(self, final: Any) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._final = final
            callbacks, self._callbacks = self._callbacks, []
            terminations, self._terminations = self._terminations, []
            self._done.set()
        assert self._ex is not None
        self._ex.close()
        for fn in terminations:
            fn()
        for cb in callbacks:
            cb(self)

    def _wait(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise grpc.FutureTimeoutError()
        return self._final

    # -- grpc.Future ------------------------------------------------------------------
    def cancel(self) -> bool:
        if self._done.is_set():
            return False
        if self._cancel_attempts():
            return True  # its done-callback finishes this future
        self._finish(_CANCELLED)
        return True

    def cancelled(self) -> bool:
        if not self._done.is_set():
            return False
        final = self._final
        return final is _CANCELLED or (isinstance(final, grpc.Future) and final.cancelled())

    def running(self) -> bool:
        return not self._done.is_set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Any:
        final = self._wait(timeout)
        if final is _CANCELLED:
            raise grpc.FutureCancelledError()
        return final.result()

    def exception(self, timeout: float | None = None) -> Any:
        final = self._wait(timeout)
        if final is _CANCELLED:
            raise grpc.FutureCancelledError()
        return final.exception()

    def traceback(self, timeout: float | None = None) -> Any:
        final = self._wait(timeout)
        if final is _CANCELLED:
            raise grpc.FutureCancelledError()
        return final.traceback()

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    # -- grpc.Call --------------------------------------------------------------------
    def code(self) -> grpc.StatusCode:
        final = self._wait()
        return grpc.StatusCode.CANCELLED if final is _CANCELLED else final.code()

    def details(self) -> str | None:
        final = self._wait()
        return "Cancelled" if final is _CANCELLED else final.details()

    def initial_metadata(self) -> Any:
        final = self._wait()
        return () if final is _CANCELLED else final.initial_metadata()

    def trailing_metadata(self) -> Any:
        final = self._wait()
        return () if final is _CANCELLED else final.trailing_metadata()

    def is_active(self) -> bool:
        return not self._done.is_set()

    def time_remaining(self) -> float | None:
        current = self._current
        return current.time_remaining() if current is not None else None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._done.is_set():
                return False
            self._terminations.append(callback)
            return True


class _Failed:
    """A local failure that is not an RpcError, as the final state of a future."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error

    def exception(self) -> BaseException:
        return self.error

    def traceback(self) -> Any:
        return self.error.__traceback__

    def cancelled(self) -> bool:
        return False

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return str(self.error)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()


def start_stream(
    ex: RpcExchange,
    send: Callable[[Try], Any],
    sleep: Callable[[float], None],
    *,
    retrying: bool = False,
) -> Any:
    """Start a streaming call: a :class:`RetryingStream` (``retrying``: a unary request)
    or its one attempt, whose outcome is recorded when it ends. A fault delay holds the
    caller for that long before the call is made."""
    try:
        if ex.delay:
            sleep(ex.delay)
        aborted = ex.abort()
        if aborted is not None:
            ex.close()
            return aborted
    except BaseException:
        ex.close()
        raise
    if retrying:  # it closes the exchange when the call is over
        try:
            return RetryingStream(ex, send).start()
        except MeshRpcError as exc:
            return exc
    try:
        t = ex.next_attempt()
    except MeshRpcError as exc:
        ex.close()
        return exc
    try:
        call = send(t)
    except BaseException:
        ex.ended(t, None, None)
        ex.close()
        raise

    def ended() -> None:
        if call.cancelled():
            ex.ended(t, grpc.StatusCode.CANCELLED, None, cancelled=True)
        else:
            ex.ended(t, call.code(), call.details(), call, committed=True)
        ex.close()

    if not call.add_callback(ended):
        ended()
    return call
