"""gRPC-format xDS bootstrap: the file istio-agent and Traffic Director write.

Lookup order (gRFC A27): an explicit path or mapping from code, then the
``GRPC_XDS_BOOTSTRAP`` environment variable (a path), then
``GRPC_XDS_BOOTSTRAP_CONFIG`` (inline JSON).

Validation is strict (see ``_bootstrap_parse``): every error is a :class:`BootstrapError`
naming the source and the JSON path. Unknown keys are errors; set
``MESHLIB_BOOTSTRAP_UNKNOWN_FIELDS=warn`` (or pass ``unknown_fields="warn"``) to log them
instead, e.g. when a newer istio-agent writes a field this meshlib does not know yet.

Files the bootstrap names (``file_watcher`` certificates, ``tls`` channel credentials)
must exist when it is loaded. istio-agent writes the bootstrap, then the certificates once
istiod signed them, while the application starts: so a bootstrap read from
``GRPC_XDS_BOOTSTRAP`` waits up to ``DEFAULT_ENV_FILE_WAIT`` seconds for the bootstrap file,
then as long again for those files; an explicit path or mapping waits ``wait_for_file``
(default 0: a missing file is an error at once).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._bootstrap_parse import SUPPORTED_CHANNEL_CREDS, parse_bootstrap, parse_with_files
from ._bootstrap_reader import BootstrapError, UnknownFields, decode_json
from ._bootstrap_types import (
    DELTA_FEATURE,
    Authority,
    Bootstrap,
    CertificateProviderConfig,
    Locality,
    Node,
    ServerConfig,
)

__all__ = [
    "DELTA_FEATURE",
    "ENV_UNKNOWN_FIELDS",
    "SUPPORTED_CHANNEL_CREDS",
    "Authority",
    "Bootstrap",
    "BootstrapError",
    "CertificateProviderConfig",
    "Locality",
    "Node",
    "ServerConfig",
    "load_bootstrap",
    "parse_bootstrap",
]

ENV_PATH = "GRPC_XDS_BOOTSTRAP"
ENV_CONFIG = "GRPC_XDS_BOOTSTRAP_CONFIG"
#: ``error`` (default) or ``warn``: what an unknown bootstrap key does.
ENV_UNKNOWN_FIELDS = "MESHLIB_BOOTSTRAP_UNKNOWN_FIELDS"
#: How long a bootstrap file named by GRPC_XDS_BOOTSTRAP (then its certificates) may
#: take to appear.
DEFAULT_ENV_FILE_WAIT = 10.0
_POLL = 0.05


def load_bootstrap(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    wait_for_file: float | None = None,
    unknown_fields: UnknownFields | None = None,
) -> Bootstrap:
    """Load and validate a bootstrap from a path, a mapping, or the environment.

    ``wait_for_file``: seconds to wait for a missing bootstrap file, and then for missing
    certificate files, to appear; by default 0 for an explicit path or mapping and
    ``DEFAULT_ENV_FILE_WAIT`` for the ``GRPC_XDS_BOOTSTRAP`` path. ``unknown_fields``:
    ``"error"`` or ``"warn"`` (default from ``MESHLIB_BOOTSTRAP_UNKNOWN_FIELDS``, else
    ``"error"``).
    """
    mode = _unknown_fields_mode(unknown_fields)
    wait = wait_for_file or 0.0
    if isinstance(source, Mapping):
        bootstrap, files = parse_with_files(source, "<bootstrap dict>", unknown_fields=mode)
    elif source is not None:
        bootstrap, files = _load_file(Path(source), wait, mode)
    elif path := os.environ.get(ENV_PATH):
        wait = DEFAULT_ENV_FILE_WAIT if wait_for_file is None else wait_for_file
        bootstrap, files = _load_file(Path(path), wait, mode)
    elif inline := os.environ.get(ENV_CONFIG):
        data = decode_json(os.fsencode(inline), ENV_CONFIG)
        bootstrap, files = parse_with_files(data, ENV_CONFIG, unknown_fields=mode)
    else:
        raise BootstrapError(
            f"no xDS bootstrap: pass one to Mesh(bootstrap=...) or set {ENV_PATH} (a path) "
            f"or {ENV_CONFIG} (inline JSON)"
        )
    _check_files(bootstrap.source, files, wait)
    return bootstrap


def _unknown_fields_mode(value: UnknownFields | None) -> UnknownFields:
    if value is None:
        raw = os.environ.get(ENV_UNKNOWN_FIELDS, "error").strip().lower() or "error"
        if raw not in ("error", "warn"):
            raise BootstrapError(f"{ENV_UNKNOWN_FIELDS}={raw!r}: must be 'error' or 'warn'")
        return "warn" if raw == "warn" else "error"
    if value not in ("error", "warn"):
        raise ValueError(f"unknown_fields must be 'error' or 'warn', got {value!r}")
    return value


def _load_file(
    path: Path, wait: float, mode: UnknownFields
) -> tuple[Bootstrap, list[tuple[str, str]]]:
    deadline = time.monotonic() + wait
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        waited = f" (waited {wait:g}s)" if wait else ""
        raise BootstrapError(
            f"{path}: bootstrap file does not exist{waited}", source=str(path)
        ) from None
    except OSError as exc:
        raise BootstrapError(
            f"{path}: cannot read bootstrap file: {exc.strerror}", source=str(path)
        ) from None
    return parse_with_files(decode_json(data, str(path)), str(path), unknown_fields=mode)


def _check_files(source: str, files: list[tuple[str, str]], wait: float) -> None:
    """Every named file exists (waiting up to ``wait`` s for them), else BootstrapError."""
    pending = dict(files)
    deadline = time.monotonic() + wait
    while True:
        pending = {p: f for p, f in pending.items() if not os.path.isfile(f)}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
    if pending:
        path, file = next(iter(pending.items()))
        state = "is not a regular file" if os.path.exists(file) else "does not exist"
        waited = f" (waited {wait:g}s)" if wait else ""
        more = f"; {len(pending) - 1} more missing" if len(pending) > 1 else ""
        raise BootstrapError(
            f"{source}: {path}: {file} {state}{waited}{more}",
            source=source,
            path=path,
        )
