"""The transport-neutral view of one outbound call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Call", "authority_of"]


@dataclass(frozen=True, slots=True)
class Call:
    """What routing needs to know of a request, whichever client library made it.

    ``authority`` is ``host:port`` as the application dialled it (the listener name);
    ``path`` includes the query; ``headers`` keys are lower-case (a case-insensitive
    mapping such as ``httpx.Headers`` also does); ``source_ip`` feeds the
    ``connection_properties`` hash policy and may be empty.
    """

    authority: str
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "http"
    source_ip: str = ""

    @property
    def host(self) -> str:
        return self.authority.rsplit(":", 1)[0] if ":" in self.authority else self.authority


def authority_of(host: str, port: int | None, scheme: str) -> str:
    """``host:port`` with the scheme's default port when the URL has none."""
    if port is None:
        port = 443 if scheme in ("https", "grpcs") else 80
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
