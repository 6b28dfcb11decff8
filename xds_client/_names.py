"""Resource names: old-style names and ``xdstp://`` names (gRFC A47).

``xdstp://{authority}/{resource type}/{id}?{context params}`` names a resource held
by an authority of the bootstrap. Context parameters are compared in canonical (sorted)
order, so the client canonicalizes names it watches and names it receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

from ._bootstrap import Bootstrap

__all__ = [
    "XdstpName",
    "canonical_name",
    "listener_resource_name",
    "parse_xdstp",
    "server_listener_resource_name",
]

SCHEME = "xdstp://"


@dataclass(frozen=True, slots=True)
class XdstpName:
    authority: str
    resource_type: str
    id: str
    params: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"{SCHEME}{self.authority}/{self.resource_type}/{self.id}{query}"


def parse_xdstp(name: str) -> XdstpName | None:
    """Parse an ``xdstp://`` name; None for an old-style name; ValueError if malformed."""
    if not name.startswith(SCHEME):
        return None
    rest = name[len(SCHEME) :]
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    authority, _, path = rest.partition("/")
    rtype, _, ident = path.partition("/")
    if not rtype:
        raise ValueError(f"{name!r}: xdstp name needs a resource type after the authority")
    params = tuple(sorted(parse_qsl(query, keep_blank_values=True)))
    return XdstpName(authority, rtype, ident, params)


def canonical_name(name: str) -> str:
    """``name`` with xdstp context parameters sorted; old-style names unchanged."""
    if not name.startswith(SCHEME):
        return name
    try:
        parsed = parse_xdstp(name)
    except ValueError:
        return name
    return str(parsed) if parsed is not None else name


def listener_resource_name(bootstrap: Bootstrap, target: str, authority: str = "") -> str:
    """The Listener to watch for a client target ``host:port`` (gRFC A47).

    With ``authority`` (the authority of an ``xds://authority/host:port`` URI), that
    bootstrap authority's ``client_listener_resource_name_template`` applies; otherwise
    ``client_default_listener_resource_name_template``. In an ``xdstp://`` template the
    target is percent-encoded (``/`` and ``:`` kept) before it replaces ``%s``.
    """
    if authority:
        entry = bootstrap.authorities.get(authority)
        if entry is None:
            raise ValueError(
                f"authority {authority!r} is not in the bootstrap ({bootstrap.source})"
            )
        template = entry.client_listener_resource_name_template
    else:
        template = bootstrap.client_default_listener_resource_name_template
    if template.startswith(SCHEME):
        return canonical_name(template.replace("%s", quote(target, safe="/:")))
    return template.replace("%s", target)


def server_listener_resource_name(bootstrap: Bootstrap, host: str, port: int) -> str:
    """The Listener a server listening on ``host:port`` watches (gRFC A36):
    ``server_listener_resource_name_template`` with ``%s`` = ``host:port``
    (``[v6]:port``), percent-encoded when the template is ``xdstp://``."""
    template = bootstrap.server_listener_resource_name_template
    if not template:
        raise ValueError(
            f"{bootstrap.source}: server_listener_resource_name_template is not set; "
            "an xDS server needs it"
        )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if template.startswith(SCHEME):
        return canonical_name(template.replace("%s", quote(address, safe="/:[]")))
    return template.replace("%s", address)
