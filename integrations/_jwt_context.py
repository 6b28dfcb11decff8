"""The JWT result of the request being handled, and how it changes the request the
application sees (no PyJWT needed here: the mesh middlewares import it always)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._jwt import JwtResult

__all__ = ["SCOPE_KEY", "asgi_headers", "current", "current_jwt", "wsgi_apply"]

SCOPE_KEY = "meshlib.jwt"
_CURRENT: contextvars.ContextVar[JwtResult | None] = contextvars.ContextVar(
    "meshlib_jwt", default=None
)


def current_jwt() -> JwtResult | None:
    """The JWT result of the request being handled (None outside one)."""
    return _CURRENT.get()


@contextlib.contextmanager
def current(result: JwtResult | None) -> Iterator[None]:
    """``current_jwt()`` is ``result`` inside (unchanged when None)."""
    if result is None:
        yield
        return
    token = _CURRENT.set(result)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def asgi_headers(
    headers: list[tuple[bytes, bytes]], result: JwtResult
) -> list[tuple[bytes, bytes]]:
    """ASGI headers with the token's header removed and the output headers set."""
    drop = result.remove_headers | set(result.set_headers)
    return [(k, v) for k, v in headers if k.decode("latin-1").lower() not in drop] + [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in result.set_headers.items()
    ]


def wsgi_apply(environ: dict[str, Any], result: JwtResult) -> None:
    """The same change to a WSGI environ, and the result under ``SCOPE_KEY``."""
    for name in (*result.remove_headers, *result.set_headers):
        environ.pop("HTTP_" + name.upper().replace("-", "_"), None)
    for name, value in result.set_headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ[SCOPE_KEY] = result
