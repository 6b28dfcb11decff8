"""ACK/NACK events the xDS server records, and a thread-safe log to wait on them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["AckEvent", "EventLog"]


@dataclass(frozen=True)
class AckEvent:
    """A client's verdict on one response: ``kind`` is ``"ACK"`` or ``"NACK"``.

    ``version`` and ``nonce`` are those of the response the verdict is about;
    ``error_detail`` is the client's message for a NACK, else ``None``.
    """

    kind: Literal["ACK", "NACK"]
    node_id: str
    type_url: str
    version: str
    nonce: str
    error_detail: str | None = None
    time: float = 0.0


class EventLog:
    """Recorded ACK/NACK events, in arrival order, safe to read from any thread."""

    def __init__(self, limit: int = 10_000) -> None:
        self._cond = threading.Condition()
        self._events: list[AckEvent] = []
        self._limit = limit

    def record(self, event: AckEvent) -> None:
        """Append ``event`` and wake waiters; the oldest events fall off past ``limit``."""
        if not event.time:
            event = replace(event, time=time.time())
        with self._cond:
            self._events.append(event)
            if len(self._events) > self._limit:
                del self._events[: len(self._events) - self._limit]
            self._cond.notify_all()

    def events(
        self, node_id: str | None = None, kind: Literal["ACK", "NACK"] | None = None
    ) -> list[AckEvent]:
        """Events, optionally only for ``node_id`` and/or of one ``kind``."""
        with self._cond:
            return [
                e
                for e in self._events
                if (node_id is None or e.node_id == node_id) and (kind is None or e.kind == kind)
            ]

    def wait_for(self, predicate: Callable[[AckEvent], bool], timeout: float) -> AckEvent:
        """The first event (past or future) matching ``predicate``; ``TimeoutError`` if none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching xDS ACK/NACK within {timeout:.1f}s")
                self._cond.wait(remaining)
