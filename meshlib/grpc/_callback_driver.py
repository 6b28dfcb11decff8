"""The one callback driver of a unary-response call: attempts driven from grpcio's
done-callbacks, parametrised by how it waits.

:class:`CallbackAttempts` runs an :class:`RpcExchange` without blocking anyone: the fault
delay and each back-off wait on ``schedule`` (``threading.Timer`` for the sync channel's
``RetryingFuture``, ``loop.call_later`` for the asyncio channel's ``MeshUnaryCall``), each
attempt is a non-blocking grpcio call whose done-callback hands its status to the
exchange. The subclasses only say what a final state is (``_finish``), how a failed
grpcio call reads (``_status``) and how a mesh error looks to their callers (``_local``,
``_refused``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from ._exchange import RpcExchange, Try
from ._status import MeshRpcError

__all__ = ["CallbackAttempts", "Cancellable", "Schedule"]

_log = logging.getLogger(__name__)


class Cancellable(Protocol):
    """A scheduled wait (``threading.Timer``, ``asyncio.TimerHandle``)."""

    def cancel(self) -> Any: ...


#: Run ``fn`` after ``delay`` seconds; returns the handle that cancels it.
Schedule = Callable[[float, Callable[[], None]], Cancellable]
Status = tuple[grpc.StatusCode, str | None, Any]


class CallbackAttempts:
    """The attempt sequence of one call on callbacks (see the module docstring).
    ``_current`` is the attempt in flight (a grpcio call), ``_timer`` the wait pending."""

    _ex: RpcExchange | None
    _lock: contextlib.AbstractContextManager[Any]

    def _setup(self, send: Callable[[Try], Any], schedule: Schedule) -> None:
        self._send = send
        self._schedule = schedule
        self._mirror: Callable[[], None] | None = None
        self._current: Any = None
        self._try: Try | None = None
        self._timer: Cancellable | None = None
        self._cancelled = False

    # -- what a subclass says -----------------------------------------------------------
    def _finish(self, final: Any) -> None:
        raise NotImplementedError

    def _status(self, call: Any) -> Status | None:
        """The finished attempt's code, details and trailing-metadata source; None: not
        known yet (recorded when it is, no retry)."""
        raise NotImplementedError

    def _local(self, error: MeshRpcError) -> Any:
        """The final state for a call the mesh ended (no route, overflow, abort...)."""
        return error

    def _refused(self, error: BaseException) -> Any:
        """The final state for an attempt grpcio refused to start."""
        return error

    def _unknown(self, t: Try, call: Any) -> None:
        """An attempt whose status cannot be read yet ended: record it when it can."""
        raise NotImplementedError

    # -- the driver ---------------------------------------------------------------------
    def _drive(self) -> None:
        """The fault delay (a wait), the abort, the mirror copies, then the attempts."""
        ex = self._ex
        assert ex is not None
        if ex.fault is None:  # the usual call: no fault filter decision to wait for
            if self._mirror is not None:
                self._mirror()
            self._attempt()
            return
        delay = ex.delay
        if delay:
            self._later(delay, self._after_fault)
        else:
            self._after_fault()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._lock:
            self._timer = self._schedule(delay, fn)

    def _after_fault(self) -> None:
        ex = self._ex
        assert ex is not None
        self._timer = None
        aborted = ex.abort()
        if aborted is not None:
            self._finish(self._local(aborted))
            return
        if self._mirror is not None:
            self._mirror()
        self._attempt()

    def _attempt(self) -> None:
        self._timer = None
        ex = self._ex
        if self._cancelled or ex is None:
            return
        try:
            t = ex.next_attempt()
        except MeshRpcError as exc:
            self._finish(self._local(exc))
            return
        try:
            call = self._send(t)
        except BaseException as exc:  # grpcio refused the call (bad metadata, closed)
            ex.ended(t, None, None)
            self._finish(self._refused(exc))
            return
        with self._lock:
            self._current, self._try = call, t
        call.add_done_callback(self._attempt_done)

    def _attempt_done(self, call: Any) -> None:
        t = self._try
        assert t is not None
        try:
            self._decide(t, call)
        except BaseException as exc:  # never into grpcio's thread or task: finish with it
            _log.exception("meshlib: gRPC attempt bookkeeping failed")
            self._finish(self._refused(exc))

    def _decide(self, t: Try, call: Any) -> None:
        ex = self._ex
        assert ex is not None
        if call.cancelled():
            ex.ended(t, grpc.StatusCode.CANCELLED, None, cancelled=True)
            self._finish(call)
            return
        status = self._status(call)
        if status is None:
            self._unknown(t, call)
            return
        code, details, source = status
        if code is grpc.StatusCode.OK:
            ex.succeeded(t)
            self._finish(call)
            return
        delay = ex.ended(t, code, details, source)
        if delay is None or self._cancelled:
            self._finish(call)
        else:
            self._later(delay, self._attempt)

    def _cancel_attempts(self) -> bool:
        """Stop the attempts: True when the attempt in flight was cancelled (its
        done-callback then finishes the call); else the pending wait is cancelled and
        the caller finishes the call."""
        with self._lock:
            self._cancelled = True
            current, timer = self._current, self._timer
        if current is not None and current.cancel():
            return True
        if timer is not None:
            timer.cancel()
        return False
