"""A lazily started daemon thread that runs a subclass's ``run_once`` when due or woken."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["TimerThread"]


class TimerThread:
    """Base of the per-Mesh background timers (outlier sweeps, slow-start ramps).

    Subclasses implement ``run_once() -> seconds until next due``; ``_start()`` starts
    the thread on first use, ``wake()`` makes it look again now, ``close()`` stops it.
    """

    _thread_name = "meshlib-timer"

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def run_once(self, now: float | None = None) -> float:
        raise NotImplementedError

    def _start(self) -> None:
        """Start the thread if it is not running, and wake it (call without ``_lock``)."""
        thread = None
        with self._lock:
            if self._thread is None and not self._closed:
                thread = self._thread = threading.Thread(
                    target=self._run, name=self._thread_name, daemon=True
                )
        if thread is not None:
            thread.start()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.clear()
            self._wake.wait(self.run_once())

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
