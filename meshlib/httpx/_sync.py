"""The sync httpx transport: drives :class:`Exchange` with blocking waits."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpcore
import httpx

from .._call import authority_of
from .._errors import CircuitBreakerOpen, MeshError
from .._snapshot import ClusterView, ListenerView, Snapshot
from ..cluster._endpoints import EndpointState
from ..exchange import DONE, MAX_SHADOWS_IN_FLIGHT, Send, ShadowSlots, Sleep
from ..local_reply import LocalReply
from ._base import TransportBase, UnknownHostPolicy, check_policy
from ._connections import EndpointPool, Retired
from ._exchange import Exchange, Shadow
from ._pools import Connector, EndpointPools

__all__ = ["MAX_SHADOWS_IN_FLIGHT", "MeshTransport", "UnknownHostPolicy", "check_policy"]


class _Shadows:
    """Sends mirror copies on a small thread pool; drops them when too many are pending."""

    def __init__(self, pools: EndpointPools[EndpointPool]) -> None:
        self._pools = pools
        self._slots = ShadowSlots()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, shadow: Shadow) -> None:
        if not self._slots.acquire():
            shadow.done()  # dropped: never delay the main request
            return
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="meshlib-mirror")
            self._executor.submit(self._send, shadow)

    def _send(self, shadow: Shadow) -> None:
        try:
            response = _send(
                self._pools,
                shadow.cluster,
                shadow.endpoint,
                shadow.connector,
                shadow.request,
                shadow.app,
            )
            response.read()
            response.close()
            shadow.done(response)
        except httpx.TransportError as exc:
            shadow.done(error=exc)
        except Exception:  # a mirror's result is ignored by design
            shadow.done()
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _send(
    pools: EndpointPools[EndpointPool],
    view: ClusterView,
    endpoint: EndpointState,
    connector: Connector,
    request: httpcore.Request,
    app: httpx.Request,
) -> httpx.Response:
    while True:
        try:
            return pools.get(view, endpoint, connector).send(request, app)
        except Retired:
            continue  # retired between the lookup and the send: a new pool


class MeshTransport(TransportBase[httpx.BaseTransport, EndpointPool], httpx.BaseTransport):
    """A sync httpx transport: route, fault, mirror, then attempts with retries on
    per-endpoint connection pools (HTTP/1.1 or HTTP/2, mTLS per the cluster).

    The request keeps the URL and Host header the application used (unless a route
    rewrites them); only the connection goes to the chosen endpoint. Hosts the mesh does
    not know go to ``passthrough`` unchanged (or fail, with ``unknown_hosts="fail"``).
    ``limits`` apply to each endpoint's pool; a streaming request body is kept for
    retries up to ``retry_buffer`` bytes.
    """

    _pool_class = EndpointPool
    _connection_class = httpcore.HTTPConnection

    def _setup(self) -> None:
        self._shadows = _Shadows(self._pools)

    @property
    def passthrough(self) -> httpx.BaseTransport:
        """Where requests for hosts the mesh does not know go."""
        if self._passthrough is None:
            self._passthrough = httpx.HTTPTransport()
        return self._passthrough

    def _lookup(self, authority: str) -> tuple[Snapshot, ListenerView]:
        found = self._engine.lookup(authority)
        if isinstance(found, tuple):
            return found
        found.wait(self._resolve_timeout)
        return self._engine.looked_up(authority)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        authority = authority_of(url.host, url.port, url.scheme)
        try:
            snapshot, view = self._lookup(authority)
        except MeshError as exc:
            raise self._unrouted(exc, request) from exc
        if view.missing:
            if self._unknown_hosts == "passthrough":
                return self.passthrough.handle_request(request)
            raise self._unresolved(view, authority, request)
        if view.routes is None:
            raise self._unresolved(view, authority, request)
        for pool in self._stale_pools(snapshot):
            pool.close()
        exchange = self._exchange(snapshot, view, request, authority, self._shadows.submit)
        try:
            return self._carry(exchange)
        except BaseException as exc:
            exchange.close(exc)
            raise
        finally:
            exchange.close()

    def _carry(self, ex: Exchange) -> httpx.Response:
        step = ex.start()
        while True:
            if step.__class__ is Send:
                assert isinstance(step, Send)
                prepared = ex.prepare(step)
                if isinstance(prepared, LocalReply):
                    return ex.answer(prepared)
                upstream, connector, view = prepared
                try:
                    response = _send(
                        self._pools, view, step.attempt.endpoint, connector, upstream, ex.request
                    )
                except CircuitBreakerOpen as exc:
                    step = ex.refused(step, exc)
                except httpx.TransportError as exc:
                    step = ex.failed(step, exc)
                    if step is DONE:
                        raise
                else:
                    step = ex.answered(step, response)
                    if step is DONE:
                        return ex.finish(response)
                    response.close()
            elif step.__class__ is Sleep:
                assert isinstance(step, Sleep)
                time.sleep(step.seconds)
                step = ex.resume()
            else:
                assert isinstance(step, LocalReply)
                return ex.answer(step)

    def close(self) -> None:
        self._shadows.close()
        for pool in self._pools.drain():
            pool.close()
        if self._passthrough is not None:
            self._passthrough.close()
