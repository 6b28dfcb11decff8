"""The upstream request of one attempt, built straight from the application's httpx
request for httpcore: request target, header list, body stream, per-attempt extensions
(timeouts bounded by the attempt's time, the cluster's SNI); and what the engine reads
back from a response (its gRPC status)."""

from __future__ import annotations

from collections.abc import Mapping

import httpcore
import httpx

from ._pools import Connector

__all__ = ["core_request", "core_url", "endpoint_url", "extensions_for", "grpc_status"]


def grpc_status(headers: httpx.Headers) -> int | None:
    for key, value in headers.raw:  # a scan: cheaper than Headers.get's copies
        if len(key) == 11 and key.lower() == b"grpc-status":
            return int(value) if value.isdigit() else None
    return None


def extensions_for(
    extensions: Mapping[str, object], limit: float | None, connector: Connector
) -> dict[str, object]:
    """httpx's per-operation timeouts bounded by this attempt's time (and the connect
    timeout by the cluster's), plus the cluster's SNI."""
    out = dict(extensions)
    if connector.sni:
        out["sni_hostname"] = connector.sni
    connect = connector.connect_timeout
    if limit is None and connect is None:
        return out
    current = extensions.get("timeout")
    timeouts: dict[str, float | None] = dict(current) if isinstance(current, dict) else {}
    if limit is not None:
        for key in ("read", "write", "pool"):
            timeouts[key] = _capped(timeouts.get(key), limit)
    if connect is None:
        assert limit is not None
        connect = limit
    elif limit is not None:
        connect = min(limit, connect)
    timeouts["connect"] = _capped(timeouts.get("connect"), connect)
    out["timeout"] = timeouts
    return out


def _capped(value: float | None, bound: float) -> float:
    return bound if value is None else min(float(value), bound)


def core_url(scheme: str, host: str, port: int, target: bytes) -> httpcore.URL:
    """``httpcore.URL(scheme, host, port, target)`` without re-validating what the
    Snapshot and httpx already validated."""
    url = httpcore.URL.__new__(httpcore.URL)
    url.scheme = b"https" if scheme == "https" else b"http"
    url.host = host.encode("ascii")
    url.port = port
    url.target = target
    return url


def core_request(
    method: bytes,
    url: httpcore.URL,
    headers: list[tuple[bytes, bytes]],
    stream: object,
    extensions: dict[str, object],
) -> httpcore.Request:
    """``httpcore.Request(...)`` without re-validating httpx's already-validated bytes
    (its per-header checks were the largest cost of building the upstream request)."""
    request = httpcore.Request.__new__(httpcore.Request)
    request.method = method
    request.url = url
    request.headers = headers
    request.stream = stream  # type: ignore[assignment]
    request.extensions = extensions
    return request


_DEFAULT_PORTS = {"http": 80, "https": 443}
_FAST_URL = hasattr(httpx.URL("http://a/"), "_uri_reference")


def endpoint_url(url: httpx.URL, host: str, port: int, scheme: str | None = None) -> httpx.URL:
    """``url`` with its connection target moved to ``host:port`` (and ``scheme``).

    ``URL.copy_with`` re-parses the URL (tens of microseconds, the largest cost of a
    mesh request); for the common case (IPv4 or name, non-default port) the parsed form
    is copied with the fields replaced, equal to what copy_with gives (tested).
    """
    scheme = scheme or url.scheme
    if _FAST_URL and ":" not in host and _DEFAULT_PORTS.get(scheme) != port:
        new = httpx.URL.__new__(httpx.URL)
        new._uri_reference = url._uri_reference._replace(scheme=scheme, host=host, port=port)
        return new
    if scheme != url.scheme:
        return url.copy_with(scheme=scheme, host=host, port=port)
    return url.copy_with(host=host, port=port)
