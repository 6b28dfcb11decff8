"""The sync channel's unary-request, streaming-response call: :class:`RetryingStream`.

It stands for the whole call (``grpc.Call``, ``grpc.Future`` and the response
iterator, as grpcio's own) over its attempts. Each attempt's end is recorded from
grpcio's termination callback; whether a failed attempt is retried is decided where
the application meets its error, in iteration (see ``_stream_attempts``): a retry
starts only if no message was handed over and no metadata or status was read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from ._exchange import RpcExchange, Try
from ._status import MeshRpcError
from ._stream_attempts import StreamAttempts

__all__ = ["RetryingStream"]

_DECISION_WAIT = 10.0  # grpcio runs termination callbacks right after the status arrives


class RetryingStream(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A server-streaming call through the mesh, retried until it is committed."""

    def __init__(self, ex: RpcExchange, send: Callable[[Try], Any]) -> None:
        super().__init__()
        self._state = StreamAttempts(ex)
        self._send = send
        self._lock = threading.Lock()
        self._call: Any = None  # the current attempt (a grpcio call), or a MeshRpcError
        self._decided = threading.Event()  # the current attempt's end was recorded
        self._cancel = threading.Event()  # cancelled by the application
        self._finished = False
        self._terminations: list[Callable[[], None]] = []
        self._callbacks: list[Callable[[Any], None]] = []

    def start(self) -> RetryingStream:
        """Make the first attempt; raises MeshRpcError (the exchange is then closed)."""
        self._attempt()
        return self

    # -- the driver -------------------------------------------------------------------
    def _attempt(self) -> None:
        state = self._state
        try:
            t = state.ex.next_attempt()
        except MeshRpcError:
            with self._lock:
                state.stop()
            self._finish()
            raise
        decided = threading.Event()
        try:
            call = self._send(t)
        except BaseException:
            with self._lock:
                state.ex.ended(t, None, None)
                state.stop()
            self._finish()
            raise
        with self._lock:
            self._call, self._decided = call, decided

        def ended() -> None:
            with self._lock:
                if call.cancelled():
                    over = state.attempt_ended(t, grpc.StatusCode.CANCELLED, None, cancelled=True)
                else:
                    over = state.attempt_ended(t, call.code(), call.details(), call)
            decided.set()
            if over:
                self._finish()

        if not call.add_callback(ended):
            ended()

    def _after_error(self, call: Any) -> bool:
        """At a failed attempt's error in iteration: True when the next attempt was made."""
        with self._lock:
            decided = self._decided if call is self._call else None
        if decided is None or not decided.wait(_DECISION_WAIT):
            return False
        with self._lock:
            delay = self._state.retry()
        if delay is None:
            self._finish()
            return False
        if self._cancel.wait(delay):  # cancelled during the back-off
            with self._lock:
                self._state.stop()
            self._finish()
            raise self
        try:
            self._attempt()
        except MeshRpcError as exc:
            with self._lock:
                self._call = exc
            raise
        return True

    def _finish(self) -> None:
        with self._lock:
            if self._finished or not self._state.over:
                return
            self._finished = True
            terminations, self._terminations = self._terminations, []
            callbacks, self._callbacks = self._callbacks, []
        for fn in terminations:
            fn()
        for cb in callbacks:
            cb(self)

    def _committed(self) -> Any:
        """The application looked at the call's metadata or status: the current attempt
        is the call's last."""
        with self._lock:
            self._state.commit()
            call = self._call
        self._finish()
        return call

    # -- the response iterator --------------------------------------------------------
    def __iter__(self) -> RetryingStream:
        return self

    def __next__(self) -> Any:
        while True:
            call = self._call
            try:
                item = next(call)
            except grpc.RpcError:
                if isinstance(call, MeshRpcError) or not self._after_error(call):
                    raise
                continue
            with self._lock:
                self._state.delivered()
            return item

    def next(self) -> Any:
        return self.__next__()

    # -- grpc.Call --------------------------------------------------------------------
    def initial_metadata(self) -> Any:
        return self._committed().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._committed().trailing_metadata()

    def code(self) -> grpc.StatusCode:
        if self._cancel.is_set() and self._state.over:
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode = self._committed().code()
        return code

    def details(self) -> str | None:
        if self._cancel.is_set() and self._state.over:
            return "Locally cancelled by application!"
        details: str | None = self._committed().details()
        return details

    def is_active(self) -> bool:
        return not self._state.over

    def time_remaining(self) -> float | None:
        call = self._call
        if call is None or isinstance(call, MeshRpcError):
            return None
        left: float | None = call.time_remaining()
        return left

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._finished:
                return False
            self._terminations.append(callback)
            return True

    def cancel(self) -> bool:
        with self._lock:
            if self._state.over:
                return False
            self._cancel.set()
            self._state.cancel()
            call = self._call
        if call is not None and not isinstance(call, MeshRpcError):
            call.cancel()
        self._finish()
        return True

    # -- grpc.Future ------------------------------------------------------------------
    def cancelled(self) -> bool:
        if self._cancel.is_set():
            return True
        call = self._call
        return call is not None and bool(call.cancelled())

    def running(self) -> bool:
        return not self._state.over

    def done(self) -> bool:
        return self._state.over

    def result(self, timeout: float | None = None) -> Any:
        return self._committed().result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._committed().exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._committed().traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with self._lock:
            if not self._finished:
                self._callbacks.append(fn)
                return
        fn(self)

    def __del__(self) -> None:
        # dropped with a retry still pending: release what the call holds
        state = getattr(self, "_state", None)
        if state is not None and not state.over:
            state.commit()

    def __str__(self) -> str:
        return f"<RetryingStream of {self._call!r}>"
