"""When a unary-request, streaming-response call may still be retried (no I/O).

gRFC A6 / Envoy retry a call until it is committed. grpcio's Python API cannot say
whether a failed stream had received response headers, but meshlib controls what the
application sees: a stream is committed once one response message was handed to the
application, or the application read its metadata or status. Until then an attempt
that fails with a status the route's ``retry_on`` allows is followed by the next
attempt, as for a unary call. :class:`StreamAttempts` holds that state for the sync and
asyncio drivers, which only wait differently.
"""

from __future__ import annotations

from typing import Any

import grpc

from ._exchange import RpcExchange, Try

__all__ = ["StreamAttempts"]


class StreamAttempts:
    """One streaming call's retry state over its :class:`RpcExchange`. Not
    thread-safe: the sync driver calls it under its lock, the asyncio one on its loop.

    Each attempt's end is recorded once (:meth:`attempt_ended`); a retry the policy
    allows stays *pending* until the driver, at the failed attempt's error, takes it
    (:meth:`retry`) or drops it (:meth:`commit`, :meth:`cancel`). Methods returning
    True mean: the call is now over (the exchange is closed; run termination callbacks).
    """

    __slots__ = ("_failed", "cancelled", "committed", "delay", "ex", "over")

    def __init__(self, ex: RpcExchange) -> None:
        self.ex = ex
        self.committed = False
        self.cancelled = False
        self.over = False
        self.delay: float | None = None  # the pending retry's back-off
        self._failed = grpc.StatusCode.UNKNOWN  # ... and the status it would replace

    def attempt_ended(
        self,
        t: Try,
        code: grpc.StatusCode | None,
        details: str | None,
        source: Any = None,
        *,
        cancelled: bool = False,
    ) -> bool:
        """How attempt ``t`` ended; True: no retry can follow, the call is over."""
        delay = self.ex.ended(
            t,
            code,
            details,
            source,
            committed=self.committed or self.cancelled,
            cancelled=cancelled,
        )
        if delay is None:
            return self.stop()
        self.delay, self._failed = delay, code or grpc.StatusCode.UNKNOWN
        return False

    def delivered(self) -> None:
        """A response message went to the application: no retry from now on."""
        self.committed = True

    def commit(self) -> bool:
        """The application read the call's metadata or status: no retry from now on (a
        pending one is dropped and the failed attempt's status is the call's)."""
        self.committed = True
        return self._give_up(None)

    def cancel(self) -> bool:
        """The application cancelled the call."""
        self.cancelled = True
        return self._give_up(grpc.StatusCode.CANCELLED)

    def retry(self) -> float | None:
        """At the failed attempt's error: seconds to back off before the next attempt
        (the driver then makes it), or None: the error goes to the application (the
        call is then over)."""
        if self.delay is None or self.over:
            return None
        if self.committed or self.cancelled:
            self._give_up(None)
            return None
        delay, self.delay = self.delay, None
        return delay

    def stop(self) -> bool:
        """The call is over (its exchange ended): close it, once."""
        if self.over:
            return False
        self.over = True
        self.delay = None
        self.ex.close(cancelled=self.cancelled)
        return True

    def _give_up(self, code: grpc.StatusCode | None) -> bool:
        if self.delay is None or self.over:
            return False
        self.ex.commit(code or self._failed)
        return self.stop()
