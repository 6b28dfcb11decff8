"""Quieter failure logs: one line per key (a failing endpoint, a refused caller) per
interval, however many calls fail in between.

The first failure for a key is logged at once; later ones inside ``interval`` seconds are
only counted, and the next line logged for that key says how many were left out::

    _refusals = LogLimiter(log, interval=10.0)
    _refusals.warning(("cluster-a", "10.0.0.1:80"), "upstream TLS to %s failed: %s", addr, why)
    # ... upstream TLS to 10.0.0.1:80 failed: refused (and 212 more in the last 10 s)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["DEFAULT_INTERVAL", "LogLimiter", "limited"]

DEFAULT_INTERVAL = 10.0


class LogLimiter:
    """Rate-limits ``logger`` lines per key (thread-safe; at most ``max_keys`` remembered)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = DEFAULT_INTERVAL,
        *,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (time of the last line logged, occurrences left out since)
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Log ``msg % args`` for ``key`` unless one was logged less than ``interval`` ago.

        Returns whether a line was written.
        """
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            skipped = last[1] if last is not None else 0
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if skipped:
            msg = f"{msg} (and %d more in the last %g s)"
            args = (*args, skipped, self.interval)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        """:meth:`log` at INFO."""
        return self.log(logging.INFO, key, msg, *args)


_shared: dict[str, LogLimiter] = {}
_shared_lock = threading.Lock()


def limited(logger: logging.Logger) -> LogLimiter:
    """The process-wide :class:`LogLimiter` of ``logger`` (made on first use)."""
    with _shared_lock:
        found = _shared.get(logger.name)
        if found is None or found.logger is not logger:
            found = _shared[logger.name] = LogLimiter(logger)
        return found
