"""httpx transports that carry each request through the mesh engine."""

from __future__ import annotations

import time

import httpx

from ._call import Call, authority_of
from ._engine import Engine, Pick
from ._errors import MeshError, NoHealthyUpstream, RouteNotFound
from ._outcome import Outcome, OutcomeKind
from ._snapshot import ListenerView

__all__ = ["MeshConnectError", "MeshTransport", "UnknownHostPolicy"]

UnknownHostPolicy = str  # "passthrough" or "fail"


class MeshConnectError(httpx.ConnectError):
    """The mesh could not carry the request; ``except httpx.TransportError`` catches it.

    ``cluster`` and ``reason`` (e.g. ``no_healthy_upstream``, ``no_route``,
    ``resolve_timeout``) say where and why.
    """

    def __init__(self, error: MeshError, request: httpx.Request) -> None:
        super().__init__(str(error), request=request)
        self.mesh_error = error
        self.cluster = error.cluster
        self.reason = error.reason


class MeshTransport(httpx.BaseTransport):
    """A sync httpx transport: route, pick an endpoint, send on a pooled connection.

    The request keeps the URL and Host header the application used; only the
    connection goes to the chosen endpoint. Hosts the mesh does not know go to
    ``passthrough`` unchanged (or fail, with ``unknown_hosts="fail"``).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        resolve_timeout: float = 10.0,
        unknown_hosts: UnknownHostPolicy = "passthrough",
        pool: httpx.BaseTransport | None = None,
    ) -> None:
        if unknown_hosts not in ("passthrough", "fail"):
            raise ValueError("unknown_hosts must be 'passthrough' or 'fail'")
        self._engine = engine
        self._resolve_timeout = resolve_timeout
        self._unknown_hosts = unknown_hosts
        self._pool = pool or httpx.HTTPTransport()

    def _listener(self, authority: str) -> ListenerView:
        found = self._engine.listener(authority)
        if isinstance(found, ListenerView):
            return found
        found.wait(self._resolve_timeout)
        return self._engine.resolved(authority)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        authority = authority_of(url.host, url.port, url.scheme)
        try:
            view = self._listener(authority)
            if view.missing and self._unknown_hosts == "passthrough":
                return self._pool.handle_request(request)
            call = Call(authority, request.method, url.raw_path.decode("ascii"), request.headers)
            pick = self._engine.pick(self._engine.route(view, call), call)
        except (NoHealthyUpstream, RouteNotFound, MeshError) as exc:
            raise MeshConnectError(exc, request) from exc
        return self._attempt(request, pick)

    def _attempt(self, request: httpx.Request, pick: Pick) -> httpx.Response:
        ep = pick.endpoint
        upstream = httpx.Request(
            request.method,
            request.url.copy_with(host=ep.endpoint.host, port=ep.endpoint.port),
            headers=request.headers,
            stream=request.stream,
            extensions=_cap_timeouts(request.extensions, pick.plan.timeout),
        )
        ep.started()
        start = time.monotonic()
        outcome = Outcome(OutcomeKind.LOCAL)
        try:
            response = self._pool.handle_request(upstream)
            outcome = Outcome(
                OutcomeKind.RESPONSE, response.status_code, latency=time.monotonic() - start
            )
            return response
        except httpx.ConnectError:
            outcome = Outcome(OutcomeKind.CONNECT_FAILURE, latency=time.monotonic() - start)
            raise
        except httpx.TimeoutException:
            outcome = Outcome(OutcomeKind.TIMEOUT, latency=time.monotonic() - start)
            raise
        except httpx.TransportError:
            outcome = Outcome(OutcomeKind.RESET, latency=time.monotonic() - start)
            raise
        finally:
            ep.finished(outcome)

    def close(self) -> None:
        self._pool.close()


def _cap_timeouts(extensions: dict[str, object], limit: float | None) -> dict[str, object]:
    """Bound httpx's per-operation timeouts by the route timeout."""
    if limit is None:
        return extensions
    current = extensions.get("timeout")
    capped = {}
    for key in ("connect", "read", "write", "pool"):
        value = current.get(key) if isinstance(current, dict) else None
        capped[key] = limit if value is None else min(float(value), limit)
    return {**extensions, "timeout": capped}
