"""``MeshAioChannel``: a grpc.aio.Channel whose calls go through the mesh engine.

A call made once the target has resolved goes straight to the endpoint's subchannel:
the multicallable routes it, makes its :class:`RpcExchange` and sends the first attempt
at once. A unary-unary call is a :class:`~meshlib.grpc._aio_calls.MeshUnaryCall`, driven
by its attempts' done-callbacks (retries, back-off on a loop timer); a unary-stream call
is a :class:`~meshlib.grpc._aio_stream.MeshStreamCall`, retried until the application
saw part of its response. A request-streaming call makes one attempt (a request
iterator cannot be replayed) and is grpcio's own call, its outcome recorded when it
ends. Only such a call made before its target resolved, or held by a fault delay,
goes through a grpc.aio client interceptor on a channel that never connects:
grpc.aio then buffers the caller's writes until the interceptor -- awaiting the
resolution off the event loop, then the delay -- hands it the real call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from .._engine import Engine
from .._snapshot import ListenerView
from ._aio_calls import MeshUnaryCall, aio_error, call_status, keep, record_when_done
from ._aio_stream import MeshStreamCall
from ._exchange import RpcExchange, Shadow, Try
from ._multi import MultiBase, Serializer, ShadowSlots
from ._router import Router
from ._status import MeshRpcError, code_of
from ._subchannels import SubchannelPool

if TYPE_CHECKING:
    from ..telemetry import Telemetry
    from ._tls_bridge import TlsBridge

__all__ = ["MeshAioChannel"]

_NOWHERE = "unix-abstract:meshlib-deferred-never-connected"  # calls never reach it
# what a deferred streaming call starts from: nothing yet (resolve first), its
# exchange (held by a fault delay), or the error it fails with
Prepared = RpcExchange | MeshRpcError | None
_SHADOW_CALLS: set[Any] = set()  # mirror copies in flight
_DEFERRED: contextvars.ContextVar[tuple[_AioMulti, Prepared] | None] = contextvars.ContextVar(
    "meshlib_grpc_deferred", default=None
)


_NO_OPTIONS: dict[str, Any] = {}  # a call with grpcio's defaults (never mutated)


class _Sender:
    """Sends one attempt of a call: its request on the attempt's subchannel. (One
    object per call, where a closure would make four.)"""

    __slots__ = ("multi", "options", "request")

    def __init__(self, multi: _AioMulti, request: Any, options: dict[str, Any]) -> None:
        self.multi = multi
        self.request = request
        self.options = options

    def __call__(self, t: Try) -> Any:
        fn = self.multi._attempt_fn(t)
        return fn(self.request, timeout=t.timeout, metadata=t.metadata, **self.options)


def _one_attempt(ex: RpcExchange, send: Callable[[Try], Any]) -> Any:
    """After the fault delay: the abort check, then the call's only attempt, recorded
    when it ends. Raises MeshRpcError (the exchange is then closed)."""
    try:
        aborted = ex.abort()
        if aborted is not None:
            raise aborted
        t = ex.next_attempt()
    except BaseException:
        ex.close()
        raise
    try:
        call = send(t)
    except BaseException:
        ex.ended(t, None, None)
        ex.close()
        raise
    call.add_done_callback(record_when_done(ex, t))
    return call


class _AioMulti(MultiBase):
    """What every aio multicallable shares: routing, the attempt's subchannel call."""

    def __init__(
        self,
        channel: MeshAioChannel,
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
        self._deferred: Any = None

    def _sender(self, request: Any, options: dict[str, Any]) -> Callable[[Try], Any]:
        """Sends one attempt of a call: ``request`` on the attempt's subchannel."""
        return _Sender(self, request, options)

    def _exchange(self, view: ListenerView, timeout: float | None, metadata: Any) -> Any:
        """The call's exchange; None: a passthrough host. Raises MeshRpcError."""
        if metadata is not None and not isinstance(metadata, tuple):
            metadata = tuple(metadata)
        return self._router.exchange(
            view, self._method, timeout, metadata, replayable=self._retriable
        )

    async def _prepare(
        self, request: Any, timeout: float | None, metadata: Any, options: dict[str, Any]
    ) -> RpcExchange | Any:
        """Off the fast path: wait for the target, then the exchange (or a passthrough
        call). Raises AioRpcError."""
        began = time.monotonic()
        view = await self._channel._resolve()
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - began))
        try:
            ex = self._exchange(view, timeout, metadata)
        except MeshRpcError as exc:
            raise aio_error(exc) from exc
        if ex is None:
            return self._passthrough()(request, timeout=timeout, metadata=metadata, **options)
        return ex

    def __call__(
        self,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> Any:
        if credentials is None and wait_for_ready is None and compression is None:
            options = _NO_OPTIONS
        else:
            options = {
                "credentials": credentials,
                "wait_for_ready": wait_for_ready,
                "compression": compression,
            }
        try:
            found = self._router.listener()
        except MeshRpcError as exc:  # the mesh is closed
            raise aio_error(exc) from exc
        if self._retriable and not self._replayable:
            return self._unary_stream(found, request, timeout, metadata, options)
        if not isinstance(found, ListenerView):
            if self._replayable:
                call = MeshUnaryCall(asyncio.get_running_loop(), self._sender(request, options))
                return call.start_after(
                    lambda: self._prepare(request, timeout, metadata, options),
                    lambda ex: self._mirror(ex, request, options),
                )
            return self._defer(None, request, timeout, metadata, options)
        if found.missing and self._router.passthrough:
            return self._passthrough()(request, timeout=timeout, metadata=metadata, **options)
        send = self._sender(request, options)
        try:
            ex = self._exchange(found, timeout, metadata)
        except MeshRpcError as exc:
            if self._replayable:
                return MeshUnaryCall(asyncio.get_running_loop(), send).fail(aio_error(exc))
            return self._defer(exc, request, timeout, metadata, options)
        if self._replayable:
            mirror = None
            if ex.plan.mirrors:

                def mirror() -> None:
                    self._mirror(ex, request, options)

            return MeshUnaryCall(asyncio.get_running_loop(), send).start(ex, mirror)
        if ex.delay:
            return self._defer(ex, request, timeout, metadata, options)
        try:
            return _one_attempt(ex, send)
        except MeshRpcError as exc:
            return self._defer(exc, request, timeout, metadata, options)

    def _unary_stream(
        self,
        found: ListenerView | Any,
        request: Any,
        timeout: float | None,
        metadata: Any,
        options: dict[str, Any],
    ) -> Any:
        """A unary-request stream: a :class:`MeshStreamCall` (it waits for the target
        and a fault delay itself: there are no request writes to buffer)."""
        call = MeshStreamCall(self._sender(request, options))
        if not isinstance(found, ListenerView):
            return call.start_after(lambda: self._prepare(request, timeout, metadata, options))
        if found.missing and self._router.passthrough:
            return self._passthrough()(request, timeout=timeout, metadata=metadata, **options)
        try:
            ex = self._exchange(found, timeout, metadata)
        except MeshRpcError as exc:
            return call.fail(aio_error(exc))
        return call.start(ex)

    def _send_shadow(self, fn: Any, request: Any, shadow: Shadow, options: Any) -> None:
        call = fn(request, timeout=shadow.timeout, metadata=shadow.metadata, **options)
        _SHADOW_CALLS.add(call)  # grpc.aio cancels a call that is garbage collected

        def done(c: Any) -> None:
            _SHADOW_CALLS.discard(c)
            status = None if c.cancelled() else call_status(c)
            if status is None:
                self._shadow_ended(shadow, grpc.StatusCode.CANCELLED, None)
            else:
                self._shadow_ended(shadow, code_of(status.code()), status.details())

        call.add_done_callback(done)

    def _defer(
        self,
        prepared: Prepared,
        request: Any,
        timeout: float | None,
        metadata: Any,
        options: dict[str, Any],
    ) -> Any:
        """A streaming call through the deferral channel's interceptor (``drive``)."""
        if self._deferred is None:
            self._deferred = getattr(self._channel._deferral_channel(self.kind), self.kind)(
                self._method, self._ser, self._deser
            )
        token = _DEFERRED.set((self, prepared))  # the interceptor's task copies this context
        try:
            return self._deferred(request, timeout=timeout, metadata=metadata, **options)
        finally:
            _DEFERRED.reset(token)

    async def drive(self, prepared: Prepared, details: Any, request: Any) -> Any:
        """The interceptor's body for a streaming call: resolve, fault delay, then the
        call's only attempt."""
        if isinstance(prepared, MeshRpcError):
            raise aio_error(prepared) from prepared
        metadata = tuple(details.metadata) if details.metadata is not None else None
        options = {"credentials": details.credentials, "wait_for_ready": details.wait_for_ready}
        ex = prepared
        if ex is None:
            made = await self._prepare(request, details.timeout, metadata, options)
            if not isinstance(made, RpcExchange):
                return made  # a passthrough call
            ex = made
        if ex.delay:
            try:
                await asyncio.sleep(ex.delay)
            except BaseException:
                ex.close(cancelled=True)
                raise
        try:
            return _one_attempt(ex, self._sender(request, options))
        except MeshRpcError as exc:
            raise aio_error(exc) from exc


class _ResolveFirst:
    """Never continues to its own channel: returns the mesh's call instead. (grpc.aio
    files an interceptor under its first matching kind, hence one subclass per kind.)"""

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        deferred = _DEFERRED.get()
        assert deferred is not None, "a meshlib deferral channel used directly"
        multi, prepared = deferred
        return await multi.drive(prepared, details, request)


class _StreamUnaryFirst(_ResolveFirst, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    intercept_stream_unary = _ResolveFirst._intercept


class _StreamStreamFirst(_ResolveFirst, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    intercept_stream_stream = _ResolveFirst._intercept


_INTERCEPTORS: dict[str, type[_ResolveFirst]] = {
    "stream_unary": _StreamUnaryFirst,
    "stream_stream": _StreamStreamFirst,
}


class MeshAioChannel(grpc.aio.Channel):  # type: ignore[misc]
    """A drop-in ``grpc.aio.Channel`` for ``xds:///host:port`` (or ``host:port``).

    Made by :meth:`meshlib.Mesh.grpc_aio_channel`; use it on one event loop.
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
        self._pool: SubchannelPool[grpc.aio.Channel] = SubchannelPool(
            engine, self._subchannel, self._close_later
        )
        self._shadows = ShadowSlots()
        self._deferral: dict[str, grpc.aio.Channel] = {}
        with contextlib.suppress(MeshRpcError):  # a closed mesh: each call says so
            self._router.listener()  # start resolving now

    @property
    def target(self) -> str:
        return self._router.target

    def _subchannel(self, address: str, authority: str) -> grpc.aio.Channel:
        options = [*self._options, ("grpc.default_authority", authority)]
        if self._credentials is not None:
            return grpc.aio.secure_channel(address, self._credentials, options)
        return grpc.aio.insecure_channel(address, options)

    @staticmethod
    def _close_later(channel: grpc.aio.Channel) -> None:
        keep(asyncio.ensure_future(channel.close()))

    def _deferral_channel(self, kind: str) -> grpc.aio.Channel:
        """The never-connected channel whose interceptor drives calls of ``kind``."""
        channel = self._deferral.get(kind)
        if channel is None:
            interceptor = _INTERCEPTORS[kind]()
            channel = grpc.aio.insecure_channel(_NOWHERE, interceptors=[interceptor])
            self._deferral[kind] = channel
        return channel

    async def _resolve(self) -> ListenerView:
        found = self._router.listener()
        if not isinstance(found, ListenerView):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, found.wait, self._router.resolve_timeout)
        view = self._router.resolved()
        if isinstance(view, MeshRpcError):
            raise aio_error(view)
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
    ) -> Any:
        return _AioMulti(
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
    ) -> Any:
        return _AioMulti(
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
    ) -> Any:
        return _AioMulti(
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
    ) -> Any:
        return _AioMulti(
            self,
            "stream_stream",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY once the target resolved; IDLE before; SHUTDOWN once the mesh closed."""
        try:
            found = self._router.listener()
        except MeshRpcError:
            return grpc.ChannelConnectivity.SHUTDOWN
        if isinstance(found, ListenerView):
            return grpc.ChannelConnectivity.READY
        return grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Returns when the state differs from ``last_observed_state``: IDLE becomes READY
        when the target resolves; READY does not change afterwards."""
        if self.get_state() != last_observed_state:
            return
        if last_observed_state is grpc.ChannelConnectivity.IDLE:
            await self._resolve()
            return
        await asyncio.Event().wait()

    async def channel_ready(self) -> None:
        """Wait until the target resolves (raises AioRpcError if it does not in time)."""
        await self._resolve()

    async def close(self, grace: float | None = None) -> None:
        channels = self._pool.close() + list(self._deferral.values())
        self._deferral = {}
        await asyncio.gather(*(c.close(grace) for c in channels))
        self._router.close()

    async def __aenter__(self) -> MeshAioChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
