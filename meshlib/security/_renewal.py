"""The renewal thread shared by certificate rotators (the CA's own and the CSR agent)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Self

__all__ = ["RenewalLoop"]

log = logging.getLogger(__name__)


class RenewalLoop:
    """Mixin: :meth:`start` calls ``rotate_now()`` once (its errors propagate), then renews
    on a daemon thread whenever ``seconds_until_renewal()`` says; a renewal that raises one
    of ``renew_errors`` is logged and retried every ``retry_interval`` seconds.

    The class sets ``spiffe_id``, ``retry_interval`` and calls :meth:`_init_loop`.
    """

    spiffe_id: str
    retry_interval: float
    renew_errors: tuple[type[BaseException], ...] = (OSError,)
    thread_prefix = "cert-renewal"

    def _init_loop(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rotate_now(self) -> Any:
        raise NotImplementedError

    def seconds_until_renewal(self) -> float:
        raise NotImplementedError

    def start(self) -> Self:
        """Write the first certificate, then keep renewing it on a thread; returns ``self``."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self.rotate_now()
        self._thread = threading.Thread(
            target=self._run, name=f"{self.thread_prefix} {self.spiffe_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop renewing; the files written stay in place."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        delay = self.seconds_until_renewal()
        while not self._stop.wait(delay):
            try:
                self.rotate_now()
            except self.renew_errors as err:
                log.warning("cannot renew the certificate for %s: %s", self.spiffe_id, err)
                delay = self.retry_interval
            else:
                delay = self.seconds_until_renewal()
