"""What the sync and asyncio multicallables share: which subchannel call an attempt uses,
and how a call's mirror copies leave.

An attempt goes to its endpoint's subchannel (``SubchannelPool``), through the TLS bridge
when the endpoint's cluster has an UpstreamTlsContext, with the route's method path and
authority. The multicallable for an endpoint is looked up once per Snapshot and then
reused: the pool, the bridge and the cluster's TLS settings change only with a Snapshot.

Mirror copies (``request_mirror_policies``) are fire and forget: each is a non-blocking
grpcio call whose done-callback records it on its endpoint; nothing waits for it, its
result is ignored, and beyond :data:`MAX_SHADOWS_IN_FLIGHT` per channel copies are
dropped -- a mirror can neither delay nor fail the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exchange import MAX_SHADOWS_IN_FLIGHT, ShadowSlots
from ._exchange import RpcExchange, Shadow, Try

if TYPE_CHECKING:
    from ..cluster._endpoints import EndpointState
    from ._router import Router
    from ._subchannels import SubchannelPool

__all__ = ["MAX_SHADOWS_IN_FLIGHT", "MultiBase", "Serializer", "ShadowSlots"]

Serializer = Callable[[Any], bytes] | None
_log = logging.getLogger(__name__)


class MultiBase:
    """One method of one mesh channel: its grpcio multicallable key and the per-endpoint
    multicallables of the current Snapshot."""

    def __init__(
        self,
        router: Router,
        pool: SubchannelPool[Any],
        shadows: ShadowSlots,
        kind: str,
        method: str,
        ser: Serializer,
        deser: Serializer,
        registered: bool,
    ) -> None:
        self._router = router
        self._pool = pool
        self._shadows = shadows
        self.kind = kind
        self._method = method
        self._ser, self._deser, self._registered = ser, deser, registered
        self._key = (kind, method, ser, deser, registered)
        # a request iterator cannot be sent twice: only unary-unary calls are retried
        self._replayable = kind == "unary_unary"
        # ... and unary-stream calls, until a response message or metadata was delivered
        self._retriable = kind in ("unary_unary", "unary_stream")
        self._fns: dict[EndpointState, Any] = {}
        self._fns_of: object = None  # the Snapshot they were looked up in

    def _fn(
        self,
        address: str,
        authority: str,
        method: str,
        pinned: bool = False,
        via: str | None = None,
    ) -> Any:
        """The multicallable of the subchannel for ``address`` (as ``authority``)."""
        key = self._key
        if method != self._method:  # a route rewrote the path
            key = (self.kind, method, self._ser, self._deser, self._registered)
        return self._pool.get(address, authority, pinned=pinned, via=via).callable(key)

    def _passthrough(self) -> Any:
        """The multicallable straight to the target (a host the mesh does not know)."""
        authority = self._router.authority
        return self._fn(authority, authority, self._method, pinned=True)

    def _attempt_fn(self, t: Try) -> Any:
        """The multicallable for attempt ``t``: its endpoint's subchannel, via the TLS
        bridge for a TLS cluster; cached per endpoint until the Snapshot changes."""
        router = self._router
        snapshot = router.engine.snapshot
        if snapshot is not self._fns_of:
            self._fns, self._fns_of = {}, snapshot
        endpoint = t.attempt.endpoint
        usual = t.method == self._method and t.authority == router.authority
        if usual:
            fn = self._fns.get(endpoint)
            if fn is not None:
                return fn
        fn = self._fn(t.address, t.authority, t.method, via=router.via(t))
        if usual:
            self._fns[endpoint] = fn
        return fn

    def _mirror(self, ex: RpcExchange, request: Any, options: Any) -> None:
        """Send the call's mirror copies in the background (see the module docstring)."""
        slots = self._shadows
        for shadow in ex.shadows():
            if not slots.acquire():
                shadow.ended(None)  # dropped: never delay the call
                continue
            try:
                via = self._router.via_for(shadow.endpoint.cluster, shadow.endpoint.address)
                fn = self._fn(shadow.endpoint.address, shadow.authority, shadow.method, via=via)
                self._send_shadow(fn, request, shadow, options)
            except Exception:  # refused by grpcio (a closed channel): ignored by design
                _log.debug("meshlib: mirror copy not sent", exc_info=True)
                slots.release()
                shadow.ended(None)

    def _shadow_ended(self, shadow: Shadow, code: Any, details: str | None) -> None:
        try:
            shadow.ended(code, details)
        finally:
            self._shadows.release()

    def _send_shadow(self, fn: Any, request: Any, shadow: Shadow, options: Any) -> None:
        """Start one mirror copy on ``fn`` without waiting; when it ends, call
        ``_shadow_ended``. (Each driver's own non-blocking call.)"""
        raise NotImplementedError
