"""Route actions answered without an upstream: ``direct_response`` and ``redirect``.

Validated as Envoy does (a status in [200, 600), a body no larger than the route
configuration's ``max_direct_response_body_size_bytes``, a known redirect response code,
header-safe host and path values, a port in range); what meshlib cannot serve (a body
read from a file or an environment variable, ``body_format``) is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2

from ._base import ResourceError
from ._matchers import decode_regex

__all__ = [
    "DEFAULT_MAX_DIRECT_RESPONSE_BODY",
    "DirectResponse",
    "Redirect",
    "decode_direct_response",
    "decode_redirect",
]

Fail = Callable[[str, str], ResourceError]
#: Envoy's default ``max_direct_response_body_size_bytes``.
DEFAULT_MAX_DIRECT_RESPONSE_BODY = 4096
#: RedirectAction.RedirectResponseCode → HTTP status.
_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """Answer with ``status`` and ``body`` (inline)."""

    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer with a redirect: ``scheme`` (``https_redirect`` gives ``https``; empty:
    the request's), ``host`` (replaces host and port; empty: the request's), ``port``
    (0: unchanged), the path (``path`` replaces it — with its own query when it holds
    ``?`` —, or ``prefix_rewrite`` / ``regex_rewrite`` rewrite it), ``status`` and
    ``strip_query``."""

    status: int = 301
    scheme: str = ""
    host: str = ""
    port: int = 0
    path: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[str, str] | None = None
    strip_query: bool = False


def _header_safe(value: str, path: str, fail: Fail) -> str:
    if any(c in value for c in "\r\n\0"):
        raise fail(path, f"not a valid header value: {value!r}")
    return value


def decode_direct_response(
    d: route_components_pb2.DirectResponseAction, path: str, limit: int, fail: Fail
) -> DirectResponse:
    """A DirectResponseAction; ``limit`` is the largest body the route config allows."""
    if not 200 <= d.status < 600:
        raise fail(f"{path}.status", f"{d.status} is not in [200, 600)")
    if d.HasField("body_format"):
        raise fail(f"{path}.body_format", "not supported")
    body = b""
    if d.HasField("body"):
        which = d.body.WhichOneof("specifier")
        if which == "inline_string":
            body = d.body.inline_string.encode()
        elif which == "inline_bytes":
            body = d.body.inline_bytes
        elif which is not None:
            raise fail(f"{path}.body.{which}", "not supported: only an inline body")
        if d.body.HasField("watched_directory"):
            raise fail(f"{path}.body.watched_directory", "not supported")
    if len(body) > limit:
        raise fail(f"{path}.body", f"the body is {len(body)} bytes; the maximum is {limit}")
    return DirectResponse(d.status, body)


def decode_redirect(
    r: route_components_pb2.RedirectAction, path: str, regex_match: bool, fail: Fail
) -> Redirect:
    """A RedirectAction; ``regex_match``: the route matches by safe_regex (no
    prefix_rewrite then, as for a forwarding route)."""
    status = _CODES.get(r.response_code)
    if status is None:
        raise fail(f"{path}.response_code", f"unknown RedirectResponseCode {r.response_code}")
    scheme = ""
    which = r.WhichOneof("scheme_rewrite_specifier")
    if which == "https_redirect":
        scheme = "https" if r.https_redirect else ""
    elif which == "scheme_redirect":
        scheme = _header_safe(r.scheme_redirect, f"{path}.scheme_redirect", fail)
    if r.port_redirect > 65535:
        raise fail(f"{path}.port_redirect", f"{r.port_redirect} is not a port")
    out_path = prefix = None
    regex = None
    spec = r.WhichOneof("path_rewrite_specifier")
    if spec == "path_redirect":
        out_path = _header_safe(r.path_redirect, f"{path}.path_redirect", fail)
    elif spec == "prefix_rewrite":
        if regex_match:
            raise fail(f"{path}.prefix_rewrite", "cannot be used with a safe_regex match")
        prefix = _header_safe(r.prefix_rewrite, f"{path}.prefix_rewrite", fail)
    elif spec == "regex_rewrite":
        pattern = decode_regex(r.regex_rewrite.pattern, f"{path}.regex_rewrite.pattern", fail)
        regex = (pattern, r.regex_rewrite.substitution)
    return Redirect(
        status,
        scheme,
        _header_safe(r.host_redirect, f"{path}.host_redirect", fail),
        r.port_redirect,
        out_path,
        prefix,
        regex,
        r.strip_query,
    )
