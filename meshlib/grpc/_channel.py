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

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from .._engine import Engine
from .._snapshot import ListenerView
from ._exchange import Metadata, RpcExchange, Shadow, Try
from ._multi import MultiBase, Serializer, ShadowSlots
from ._router import Router
from ._status import MeshRpcError
from ._subchannels import SubchannelPool
from ._sync_calls import RetryingFuture, start_stream

if TYPE_CHECKING:
    from ..telemetry import Telemetry
    from ._tls_bridge import TlsBridge

__all__ = ["MeshChannel"]


class _Multi(MultiBase):
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
        super().__init__(
            channel._router, channel._pool, channel._shadows, kind, method, ser, deser, registered
        )
        self._channel = channel

    def _exchange(self, timeout: float | None, metadata: Metadata | None) -> RpcExchange | None:
        """The call's exchange (None: passthrough); raises MeshRpcError."""
        router = self._router
        found = router.listener()
        view = found if isinstance(found, ListenerView) else self._channel._wait(found)
        return router.exchange(view, self._method, timeout, metadata, replayable=self._retriable)

    def _blocking(
        self,
        request: Any,
        with_call: bool,
        timeout: float | None,
        metadata: Metadata | None,
        options: tuple[Any, Any, Any],
    ) -> Any:
        """``__call__`` / ``with_call``: the attempts, waiting in this thread.
        ``options``: credentials, wait_for_ready, compression."""
        ex = self._exchange(timeout, metadata)
        if ex is None:
            fn = self._passthrough()
            return (fn.with_call if with_call else fn)(request, timeout, metadata, *options)
        try:
            if ex.fault is not None:
                if ex.delay:
                    time.sleep(ex.delay)
                aborted = ex.abort()
                if aborted is not None:
                    raise aborted
            if ex.plan.mirrors:
                self._mirror(ex, request, options)
            while True:
                t = ex.next_attempt()
                fn = self._attempt_fn(t)
                try:
                    if with_call:
                        result = fn.with_call(request, t.timeout, t.metadata, *options)
                    else:
                        result = fn(request, t.timeout, t.metadata, *options)
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

    def _future(
        self,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: tuple[Any, Any, Any],
    ) -> Any:
        try:
            ex = self._exchange(timeout, metadata)
        except MeshRpcError as exc:
            return exc
        if ex is None:
            return self._passthrough().future(request, timeout, metadata, *options)

        def send(t: Try) -> Any:
            return self._attempt_fn(t).future(request, t.timeout, t.metadata, *options)

        mirror = None
        if ex.plan.mirrors:

            def mirror() -> None:
                self._mirror(ex, request, options)

        return RetryingFuture(ex, send, mirror).start()

    def _send_shadow(self, fn: Any, request: Any, shadow: Shadow, options: Any) -> None:
        future = fn.future(request, shadow.timeout, shadow.metadata, *options)

        def done(f: Any) -> None:
            if f.cancelled():
                self._shadow_ended(shadow, grpc.StatusCode.CANCELLED, None)
            else:
                self._shadow_ended(shadow, f.code(), f.details())

        future.add_done_callback(done)

    def _stream(
        self,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        options: tuple[Any, Any, Any],
    ) -> Any:
        try:
            ex = self._exchange(timeout, metadata)
        except MeshRpcError as exc:
            return exc
        if ex is None:
            return self._passthrough()(request, timeout, metadata, *options)

        def send(t: Try) -> Any:
            return self._attempt_fn(t)(request, t.timeout, t.metadata, *options)

        return start_stream(ex, send, time.sleep, retrying=self._retriable)


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
        options = (credentials, wait_for_ready, compression)
        return self._blocking(request, False, timeout, metadata, options)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        options = (credentials, wait_for_ready, compression)
        return self._blocking(request, True, timeout, metadata, options)

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        options = (credentials, wait_for_ready, compression)
        return self._future(request, timeout, metadata, options)


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
        options = (credentials, wait_for_ready, compression)
        return self._stream(request, timeout, metadata, options)


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
        self._shadows = ShadowSlots()
        with contextlib.suppress(MeshRpcError):  # a closed mesh: each call says so
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
