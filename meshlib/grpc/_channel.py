"""``MeshChannel``: a grpc.Channel whose calls go through the mesh engine.

Each call is routed on its method path and metadata, passes the fault filter, and runs
the engine's attempt loop (admission, LB pick, per-try timeout, retries by gRPC status
with back-off) on the chosen endpoints' own subchannels; each attempt's outcome is
recorded for outlier detection and load feedback. Calls keep grpcio's own return types
(responses, ``grpc.Call``/``grpc.Future`` objects, response iterators). The blocking
driver here, the future driver and the stream starter (``_sync_calls``) differ only in
how they wait; every decision is the call's :class:`RpcExchange`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from .._engine import Engine
from .._snapshot import ListenerView
from ._exchange import Metadata, RpcExchange, Try
from ._router import Router
from ._status import MeshRpcError
from ._subchannels import SubchannelPool
from ._sync_calls import RetryingFuture, start_stream

if TYPE_CHECKING:
    from ..telemetry import Telemetry
    from ._tls_bridge import TlsBridge

__all__ = ["MeshChannel"]

Serializer = Callable[[Any], bytes] | None


class _Multi:
    """What every sync multicallable shares: start the exchange, send one attempt."""

    def __init__(
        self,
        channel: MeshChannel,
        kind: str,
        method: str,
        ser: Serializer,
        deser: Serializer,
        registered: bool,
    ) -> None:
        self._channel = channel
        self._kind = kind
        self._method = method
        self._ser, self._deser, self._registered = ser, deser, registered
        self._key = (kind, method, ser, deser, registered)
        # a request iterator cannot be sent twice: no retries for client streaming
        # (streaming responses are never retried either: see ``_sync_calls``)
        self._replayable = kind == "unary_unary"

    def _fn(
        self,
        address: str,
        authority: str,
        method: str,
        pinned: bool = False,
        via: str | None = None,
    ) -> Any:
        """The subchannel multicallable for one attempt."""
        key = self._key
        if method != self._method:  # a route rewrote the path
            key = (self._kind, method, self._ser, self._deser, self._registered)
        return self._channel._pool.get(address, authority, pinned=pinned, via=via).callable(key)

    def _attempt_fn(self, t: Try) -> Any:
        return self._fn(t.address, t.authority, t.method, via=self._channel._router.via(t))

    def _exchange(self, kw: dict[str, Any]) -> RpcExchange | None:
        """The call's exchange (None: passthrough); raises MeshRpcError."""
        ch = self._channel
        router = ch._router
        found = router.listener()
        view = found if isinstance(found, ListenerView) else ch._wait(found)
        return router.exchange(
            view, self._method, kw["timeout"], kw["metadata"], replayable=self._replayable
        )

    def _passthrough(self) -> Any:
        authority = self._channel._router.authority
        return self._fn(authority, authority, self._method, pinned=True)

    def _blocking(self, request: Any, with_call: bool, kw: dict[str, Any]) -> Any:
        ex = self._exchange(kw)
        if ex is None:
            fn = self._passthrough()
            return fn.with_call(request, **kw) if with_call else fn(request, **kw)
        del kw["timeout"], kw["metadata"]
        try:
            if ex.delay:
                time.sleep(ex.delay)
            aborted = ex.abort()
            if aborted is not None:
                raise aborted
            while True:
                t = ex.next_attempt()
                fn = self._attempt_fn(t)
                try:
                    if with_call:
                        result = fn.with_call(request, timeout=t.timeout, metadata=t.metadata, **kw)
                    else:
                        result = fn(request, timeout=t.timeout, metadata=t.metadata, **kw)
                except grpc.RpcError as exc:
                    delay = ex.failed(t, exc)
                    if delay is None:
                        raise
                    time.sleep(delay)
                    continue
                ex.succeeded(t)
                return result
        finally:
            ex.close()

    def _future(self, request: Any, kw: dict[str, Any]) -> Any:
        try:
            ex = self._exchange(kw)
        except MeshRpcError as exc:
            return exc
        if ex is None:
            return self._passthrough().future(request, **kw)
        del kw["timeout"], kw["metadata"]

        def send(t: Try) -> Any:
            return self._attempt_fn(t).future(request, timeout=t.timeout, metadata=t.metadata, **kw)

        return RetryingFuture(ex, send).start()

    def _stream(self, request: Any, kw: dict[str, Any]) -> Any:
        try:
            ex = self._exchange(kw)
        except MeshRpcError as exc:
            return exc
        if ex is None:
            return self._passthrough()(request, **kw)
        del kw["timeout"], kw["metadata"]

        def send(t: Try) -> Any:
            return self._attempt_fn(t)(request, timeout=t.timeout, metadata=t.metadata, **kw)

        return start_stream(ex, send, time.sleep)


def _kw(
    timeout: float | None,
    metadata: Metadata | None,
    credentials: grpc.CallCredentials | None,
    wait_for_ready: bool | None,
    compression: grpc.Compression | None,
) -> dict[str, Any]:
    return {
        "timeout": timeout,
        "metadata": metadata,
        "credentials": credentials,
        "wait_for_ready": wait_for_ready,
        "compression": compression,
    }


class _UnaryUnary(_Multi, grpc.UnaryUnaryMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._blocking(request, False, kw)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        kw = _kw(timeout, metadata, credentials, wait_for_ready, compression)
        return self._blocking(request, True, kw)

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._future(
            request, _kw(timeout, metadata, credentials, wait_for_ready, compression)
        )


class _StreamUnary(_UnaryUnary, grpc.StreamUnaryMultiCallable):  # type: ignore[misc]
    """Same shapes as unary-unary; the request is an iterator."""


class _UnaryStream(_Multi, grpc.UnaryStreamMultiCallable):  # type: ignore[misc]
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        return self._stream(
            request, _kw(timeout, metadata, credentials, wait_for_ready, compression)
        )


class _StreamStream(_UnaryStream, grpc.StreamStreamMultiCallable):  # type: ignore[misc]
    """Same shape as unary-stream; the request is an iterator."""


class MeshChannel(grpc.Channel):  # type: ignore[misc]
    """A drop-in ``grpc.Channel`` for ``xds:///host:port`` (or ``host:port``) targets.

    Made by :meth:`meshlib.Mesh.grpc_channel`. ``credentials`` (optional channel
    credentials) and ``options`` apply to every per-endpoint subchannel; the subchannels
    send ``:authority`` = the target's ``host:port`` (or the route's host rewrite).
    ``telemetry`` (optional) records a span and metrics per call and per attempt.
    """

    def __init__(
        self,
        engine: Engine,
        target: str,
        *,
        options: Sequence[tuple[str, Any]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        resolve_timeout: float = 10.0,
        unknown_hosts: str = "passthrough",
        telemetry: Telemetry | None = None,
        tls_bridge: TlsBridge | None = None,
    ) -> None:
        self._router = Router(
            engine,
            target,
            resolve_timeout=resolve_timeout,
            unknown_hosts=unknown_hosts,
            telemetry=telemetry,
            tls_bridge=tls_bridge,
        )
        self._options = list(options)
        self._credentials = credentials
        self._pool: SubchannelPool[grpc.Channel] = SubchannelPool(
            engine, self._subchannel, lambda ch: ch.close()
        )
        self._router.listener()  # start resolving now

    @property
    def target(self) -> str:
        return self._router.target

    def _subchannel(self, address: str, authority: str) -> grpc.Channel:
        options = [*self._options, ("grpc.default_authority", authority)]
        if self._credentials is not None:
            return grpc.secure_channel(address, self._credentials, options)
        return grpc.insecure_channel(address, options)

    def _wait(self, event: threading.Event) -> ListenerView:
        event.wait(self._router.resolve_timeout)
        view = self._router.resolved()
        if isinstance(view, MeshRpcError):
            raise view
        return view

    def subchannel_addresses(self) -> set[str]:
        """Endpoints this channel holds a connection (subchannel) to."""
        return self._pool.addresses()

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Serializer = None,
        _registered_method: bool = False,
    ) -> _UnaryUnary:
        return _UnaryUnary(
            self,
            "unary_unary",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Serializer = None,
        _registered_method: bool = False,
    ) -> _UnaryStream:
        return _UnaryStream(
            self,
            "unary_stream",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Serializer = None,
        _registered_method: bool = False,
    ) -> _StreamUnary:
        return _StreamUnary(
            self,
            "stream_unary",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Serializer = None,
        _registered_method: bool = False,
    ) -> _StreamStream:
        return _StreamStream(
            self,
            "stream_stream",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Reports READY once the target resolves, TRANSIENT_FAILURE if it does not."""

        def report() -> None:
            found = self._router.listener()
            if not isinstance(found, ListenerView):
                found.wait(self._router.resolve_timeout)
            ok = isinstance(self._router.resolved(), ListenerView)
            state = (
                grpc.ChannelConnectivity.READY
                if ok
                else (grpc.ChannelConnectivity.TRANSIENT_FAILURE)
            )
            callback(state)

        threading.Thread(target=report, daemon=True, name="meshlib-grpc-subscribe").start()

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        pass  # the one report per subscribe() is already scheduled

    def close(self) -> None:
        for channel in self._pool.close():
            channel.close()
        self._router.close()

    def __enter__(self) -> MeshChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
