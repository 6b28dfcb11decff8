"""Bounded load for the chaos suite: threads send requests until a count or a time limit
(never unbounded), and the figures (sent, failed, elapsed, the first errors) are printed
and put in assertion messages.

    with Load("route move", send, threads=4, max_requests=4000) as load:
        ...break something...
    figures = load.figures
    assert figures.failed == 0, figures
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Figures", "Load", "echo_ok", "mesh_client", "soak_seconds"]


def soak_seconds(default: float) -> float:
    """``MESHLIB_SOAK_SECONDS`` (``make soak`` sets it) or ``default``."""
    return float(os.environ.get("MESHLIB_SOAK_SECONDS", default))


@dataclass(repr=False)
class Figures:
    """What one load run did."""

    name: str
    sent: int = 0
    failed: int = 0
    elapsed: float = 0.0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    extra: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        rate = self.sent / self.elapsed if self.elapsed else 0.0
        text = (
            f"[chaos] {self.name}: {self.sent} sent, {self.failed} failed, "
            f"{self.elapsed:.2f} s ({rate:.0f}/s)"
        )
        if self.extra:
            text += ", " + ", ".join(f"{k}={v}" for k, v in self.extra.items())
        if self.errors:
            text += f"; errors: {self.errors.most_common(3)}"
        return text

    __repr__ = __str__


class Load:
    """``threads`` threads call ``send(i)`` until ``max_requests`` calls or ``max_seconds``
    (or :meth:`stop`). ``send`` raises (or returns False) for a failed request."""

    def __init__(
        self,
        name: str,
        send: Callable[[int], object],
        *,
        threads: int = 4,
        max_requests: int = 2000,
        max_seconds: float = 30.0,
    ) -> None:
        self.figures = Figures(name)
        self._send = send
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self._counter = iter(range(max_requests))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._max_seconds = max_seconds
        self._started = 0.0
        self._done = threading.Event()
        self._running = threads

    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or time.monotonic() - self._started > self._max_seconds:
                return None
            return next(self._counter, None)

    def _run(self) -> None:
        try:
            while (i := self._next()) is not None:
                try:
                    ok = self._send(i) is not False
                    error = "" if ok else "returned False"
                except Exception as exc:  # every failure is counted, none escapes
                    ok, error = False, f"{type(exc).__name__}: {str(exc)[:120]}"
                with self._lock:
                    self.figures.sent += 1
                    if not ok:
                        self.figures.failed += 1
                        self.figures.errors[error] += 1
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    self._done.set()

    @property
    def sent(self) -> int:
        with self._lock:
            return self.figures.sent

    def wait_sent(self, n: int, timeout: float = 30.0) -> None:
        """Block until ``n`` requests were sent (or the load ended, or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.sent < n and not self._done.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)

    def start(self) -> Load:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def wait(self, timeout: float | None = None) -> Figures:
        """Wait for the load to end by itself (its count or time limit)."""
        self._done.wait(timeout if timeout is not None else self._max_seconds + 30)
        return self.stop()

    def stop(self) -> Figures:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self.figures.elapsed = time.monotonic() - self._started
        print(self.figures, flush=True)
        return self.figures

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.wait()


def echo_ok(client: Any, host: str) -> Callable[[int], bool]:
    """A ``send`` for :class:`Load`: ``GET http://host/echo/i`` answers 200."""
    return lambda i: bool(client.get(f"http://{host}/echo/{i}").status_code == 200)


@contextmanager
def mesh_client(tmp_path: Path, res: Any, **kwargs: Any) -> Iterator[tuple[Any, httpx.Client]]:
    """The project's control plane serving ``res`` and a mesh httpx client (timeout 10 s)."""
    from tests.httpx.mesh_xds import serving

    with (
        serving(tmp_path, res) as served,
        served.mesh() as mesh,
        mesh.httpx_client(timeout=10, **kwargs) as client,
    ):
        yield served, client
