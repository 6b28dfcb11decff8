"""Routes the mesh answers itself: ``direct_response`` and ``redirect``, compiled once
per Snapshot into an object whose ``reply(call, path, full)`` is the call's
:class:`~meshlib.local_reply.LocalReply`.

The Location follows Envoy 1.40 (checked against the binary): ``https_redirect`` or
``scheme_redirect`` sets the scheme and, when it changes it, drops the old scheme's
default port from the request's host; ``host_redirect`` replaces host and port;
``port_redirect`` sets the port; ``path_redirect`` replaces the path (and the query,
when it holds one), ``prefix_rewrite`` and ``regex_rewrite`` rewrite the path;
``strip_query`` drops the request's query. A direct response with a 201 or 3xx status
carries the request's own URL as Location.
"""

from __future__ import annotations

from xds_client.resources.route import DirectResponse, Redirect, RouteMatch

from .._call import Call
from ..exchange._ratelimit import LocalRateLimiter
from ..local_reply import LocalReply, direct_response, redirect
from ._headers import MutationChain
from ._plan import compile_rewrite

__all__ = ["LocalAnswer", "compile_local"]

_DEFAULT_PORT = {"http": "80", "https": "443"}


def _host(call: Call) -> str:
    return call.headers.get("host") or call.authority


def _split_port(host: str) -> tuple[str, str]:
    """``(host, port)`` of an authority (``[v6]:port`` too); port empty when absent."""
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit() or (":" in name and not name.endswith("]")):
        return host, ""
    return name, port


class LocalAnswer:
    """A compiled direct response or redirect (immutable): ``reply`` builds the call's
    answer; the response headers of the route's mutation levels are fixed here. The
    local rate limit filter runs before the router, so ``ratelimit`` (when one covers
    the route) may answer instead."""

    __slots__ = ("_direct", "_headers", "_redirect", "_rewrite", "ratelimit")

    def __init__(
        self,
        match: RouteMatch,
        headers: MutationChain,
        direct: DirectResponse | None = None,
        redirect: Redirect | None = None,
        ratelimit: LocalRateLimiter | None = None,
    ) -> None:
        self.ratelimit = ratelimit
        self._direct = direct
        self._redirect = redirect
        self._headers = tuple(headers.response([]))
        self._rewrite = None
        if redirect is not None:
            self._rewrite = compile_rewrite(match, redirect.prefix_rewrite, redirect.regex_rewrite)

    def reply(self, call: Call, path: str, full: str) -> LocalReply:
        """The answer to ``call`` (``path`` without the query, ``full`` with it)."""
        if self.ratelimit is not None:
            limited = self.ratelimit.admit()
            if limited is not None:
                return limited
        direct = self._direct
        if direct is not None:
            location = f"{call.scheme}://{_host(call)}{full}"
            return direct_response(direct.status, direct.body, self._headers, location=location)
        r = self._redirect
        assert r is not None
        return redirect(r.status, self._location(r, call, path, full), self._headers)

    def _location(self, r: Redirect, call: Call, path: str, full: str) -> str:
        scheme = r.scheme or call.scheme
        if r.host:
            host = r.host
        else:
            host = _host(call)
            if scheme != call.scheme:
                name, port = _split_port(host)
                if port and port == _DEFAULT_PORT.get(call.scheme):
                    host = name
        if r.port:
            host = f"{_split_port(host)[0]}:{r.port}"
        query = "" if r.strip_query else full[len(path) :]
        if r.path is not None:
            new = r.path if "?" in r.path else r.path + query
        elif self._rewrite is not None:
            new = self._rewrite(path) + query
        else:
            new = path + query
        return f"{scheme}://{host}{new}"


def compile_local(
    match: RouteMatch,
    headers: MutationChain,
    direct: DirectResponse | None,
    redirect: Redirect | None,
    ratelimit: LocalRateLimiter | None = None,
) -> LocalAnswer | None:
    """The compiled answer of a non-forwarding route, or None (it answers no route)."""
    if direct is None and redirect is None:
        return None
    return LocalAnswer(match, headers, direct, redirect, ratelimit)
