"""Certificate providers: where workload certificates come from.

``file_watcher`` is gRPC's plugin (gRFC A29) and what istio-agent feeds: PEM files on
disk, re-read every ``refresh_interval``. The provider is checked lazily when a new
connection needs a context, so rotation costs nothing per request and needs no thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CertificateFiles", "FileWatcherProvider", "provider_from_config"]

DEFAULT_REFRESH = 600.0


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """One consistent generation of a workload's files; ``version`` bumps on each change."""

    certificate_file: Path | None
    private_key_file: Path | None
    ca_certificate_file: Path | None
    version: int
    fingerprint: tuple[tuple[int, int], ...]


class FileWatcherProvider:
    """Watches certificate, key and root files; ``current()`` notices rotation."""

    def __init__(
        self,
        *,
        certificate_file: str | os.PathLike[str] | None = None,
        private_key_file: str | os.PathLike[str] | None = None,
        ca_certificate_file: str | os.PathLike[str] | None = None,
        refresh_interval: float = DEFAULT_REFRESH,
    ) -> None:
        if (certificate_file is None) != (private_key_file is None):
            raise ValueError("file_watcher: certificate_file and private_key_file go together")
        if certificate_file is None and ca_certificate_file is None:
            raise ValueError(
                "file_watcher: needs certificate_file/private_key_file or ca_certificate_file"
            )
        self._cert, self._key, self._ca = (
            Path(p) if p is not None else None
            for p in (certificate_file, private_key_file, ca_certificate_file)
        )
        self.refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._current: CertificateFiles | None = None

    def _fingerprint(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self._cert, self._key, self._ca):
            if path is None:
                out.append((0, 0))
                continue
            st = path.stat()  # FileNotFoundError names the missing file
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def current(self) -> CertificateFiles:
        """The files as of the last check; re-checked at most every refresh_interval."""
        now = time.monotonic()
        current = self._current
        if current is not None and now < self._next_check:
            return current
        with self._lock:
            if self._current is not None and now < self._next_check:
                return self._current
            fingerprint = self._fingerprint()
            if self._current is None or fingerprint != self._current.fingerprint:
                version = self._current.version + 1 if self._current else 1
                self._current = CertificateFiles(
                    self._cert, self._key, self._ca, version, fingerprint
                )
            self._next_check = now + self.refresh_interval
            return self._current

    def refresh_now(self) -> CertificateFiles:
        """Check the files immediately (tests, SIGHUP handlers)."""
        with self._lock:
            self._next_check = 0.0
        return self.current()


def provider_from_config(
    plugin_name: str, config: Mapping[str, Any], *, where: str
) -> FileWatcherProvider:
    """Build a provider from a bootstrap ``certificate_providers`` entry."""
    if plugin_name != "file_watcher":
        raise ValueError(f"{where}: plugin_name {plugin_name!r} is not supported (file_watcher)")
    refresh = config.get("refresh_interval", "600s")
    try:
        seconds = float(str(refresh).rstrip("s"))
    except ValueError:
        raise ValueError(f"{where}.config.refresh_interval: not a duration: {refresh!r}") from None
    return FileWatcherProvider(
        certificate_file=config.get("certificate_file"),
        private_key_file=config.get("private_key_file"),
        ca_certificate_file=config.get("ca_certificate_file"),
        refresh_interval=seconds,
    )
