"""The transport-neutral view of one outbound call."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["Call", "authority_of"]

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Call:
    """What routing needs to know of a request, whichever client library made it.

    ``authority`` is ``host:port`` as the application dialled it (the listener name);
    ``path`` includes the query; ``headers`` keys are lower-case (a case-insensitive
    mapping such as ``httpx.Headers`` also does); ``source_ip`` feeds the
    ``connection_properties`` hash policy and may be empty. ``timeout`` is the caller's
    deadline in seconds when the adapter knows it as a number (gRPC): routing uses it
    instead of parsing the ``grpc-timeout`` header it was formatted into (None: read the
    header, if any).

    A plain slotted class (built on every call, so cheaper than a frozen dataclass);
    treat it as immutable: routing results may be computed from it once.
    """

    __slots__ = ("authority", "headers", "method", "path", "scheme", "source_ip", "timeout")

    def __init__(
        self,
        authority: str,
        method: str,
        path: str,
        headers: Mapping[str, str] = _NO_HEADERS,
        scheme: str = "http",
        source_ip: str = "",
        timeout: float | None = None,
    ) -> None:
        self.authority = authority
        self.method = method
        self.path = path
        self.headers = headers
        self.scheme = scheme
        self.source_ip = source_ip
        self.timeout = timeout

    @property
    def host(self) -> str:
        return self.authority.rsplit(":", 1)[0] if ":" in self.authority else self.authority

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.authority,
            self.method,
            self.path,
            self.headers,
            self.scheme,
            self.source_ip,
            self.timeout,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Call)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Call(authority={self.authority!r}, method={self.method!r}, path={self.path!r}, "
            f"headers={self.headers!r}, scheme={self.scheme!r}, source_ip={self.source_ip!r}, "
            f"timeout={self.timeout!r})"
        )


def authority_of(host: str, port: int | None, scheme: str) -> str:
    """``host:port`` with the scheme's default port when the URL has none."""
    if port is None:
        port = 443 if scheme in ("https", "grpcs") else 80
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
