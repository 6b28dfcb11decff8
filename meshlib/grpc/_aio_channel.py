"""``MeshAioChannel``: a grpc.aio.Channel whose calls go through the mesh engine.

A call is made through a grpc.aio client interceptor on a channel that never connects:
the interceptor awaits the target's resolution (off the event loop), then drives the
call's :class:`RpcExchange` -- fault delay, attempts on the endpoints' subchannels,
back-off with ``asyncio.sleep`` -- and hands grpc.aio the last attempt's call, so the
caller gets a complete grpc.aio call object either way. Streaming responses make one
attempt (see ``_sync_calls`` for why), recorded when the stream ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from .._engine import Engine
from .._snapshot import ListenerView
from ._exchange import RpcExchange, Try
from ._router import Router
from ._status import MeshRpcError, code_of
from ._subchannels import SubchannelPool

if TYPE_CHECKING:
    from ..telemetry import Telemetry
    from ._tls_bridge import TlsBridge

__all__ = ["MeshAioChannel"]

Serializer = Callable[[Any], bytes] | None
_NOWHERE = "unix-abstract:meshlib-deferred-never-connected"  # calls never reach it
_UNARY_RESPONSE = ("unary_unary", "stream_unary")

_BACKGROUND: set[asyncio.Future[Any]] = set()
_MULTI: contextvars.ContextVar[_AioMulti | None] = contextvars.ContextVar(
    "meshlib_grpc_multi", default=None
)


def _keep(task: asyncio.Future[Any]) -> None:
    """Hold a background task until it is done (the loop keeps only weak references)."""
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _record_when_done(ex: RpcExchange, t: Try) -> Callable[[Any], None]:
    """A done-callback recording a streaming call's one attempt, then closing its exchange."""

    def done(call: Any) -> None:
        if call.cancelled():
            ex.ended(t, grpc.StatusCode.CANCELLED, None, cancelled=True)
            ex.close()
            return
        status = getattr(getattr(call, "_cython_call", None), "_status", None)
        if status is not None:  # grpcio keeps the final status on its cython call
            ex.ended(t, code_of(status.code()), status.details(), call, committed=True)
            ex.close()
        else:
            _keep(asyncio.ensure_future(_record_later(ex, t, call)))

    return done


async def _record_later(ex: RpcExchange, t: Try, call: Any) -> None:
    try:
        ex.ended(t, await call.code(), await call.details(), call, committed=True)
    finally:
        ex.close()


class _AioMulti:
    """What every aio multicallable shares."""

    def __init__(
        self,
        channel: MeshAioChannel,
        kind: str,
        method: str,
        ser: Serializer,
        deser: Serializer,
        registered: bool,
    ) -> None:
        self._channel = channel
        self.kind = kind
        self._method = method
        self._ser, self._deser, self._registered = ser, deser, registered
        self._key = (kind, method, ser, deser, registered)
        self._replayable = kind == "unary_unary"
        self._deferred: Any = None

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
        router = self._channel._router
        found = router.listener()
        if isinstance(found, ListenerView) and found.missing and router.passthrough:
            return self._passthrough()(
                request,
                timeout=timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        if self._deferred is None:
            self._deferred = getattr(self._channel._deferral_channel(self.kind), self.kind)(
                self._method, self._ser, self._deser
            )
        token = _MULTI.set(self)  # the interceptor's task copies this context
        try:
            return self._deferred(
                request,
                timeout=timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        finally:
            _MULTI.reset(token)

    def _fn(
        self,
        address: str,
        authority: str,
        method: str,
        pinned: bool = False,
        via: str | None = None,
    ) -> Any:
        key = self._key
        if method != self._method:  # a route rewrote the path
            key = (self.kind, method, self._ser, self._deser, self._registered)
        return self._channel._pool.get(address, authority, pinned=pinned, via=via).callable(key)

    def _passthrough(self) -> Any:
        authority = self._channel._router.authority
        return self._fn(authority, authority, self._method, pinned=True)

    async def drive(self, details: Any, request: Any) -> Any:
        """The interceptor's body: resolve, then the call's attempts."""
        ch = self._channel
        timeout = details.timeout
        found = ch._router.listener()
        if isinstance(found, ListenerView):  # resolved: no coroutine, no clock read
            view = found
        else:
            began = time.monotonic()
            view = await ch._resolve()
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - began))
        metadata = tuple(details.metadata) if details.metadata is not None else None
        options = {"credentials": details.credentials, "wait_for_ready": details.wait_for_ready}
        try:
            ex = ch._router.exchange(
                view, self._method, timeout, metadata, replayable=self._replayable
            )
        except MeshRpcError as exc:
            raise _aio_error(exc) from exc
        if ex is None:
            return self._passthrough()(request, timeout=timeout, metadata=metadata, **options)
        owned = True
        try:
            if ex.delay:
                await asyncio.sleep(ex.delay)
            aborted = ex.abort()
            if aborted is not None:
                raise _aio_error(aborted)
            while True:
                try:
                    t = ex.next_attempt()
                except MeshRpcError as exc:
                    raise _aio_error(exc) from exc
                fn = self._fn(t.address, t.authority, t.method, via=ch._router.via(t))
                call = fn(request, timeout=t.timeout, metadata=t.metadata, **options)
                if self.kind not in _UNARY_RESPONSE:
                    call.add_done_callback(_record_when_done(ex, t))
                    owned = False
                    return call
                try:
                    await call
                except grpc.aio.AioRpcError as exc:
                    delay = ex.failed(t, exc)
                    if delay is None:
                        raise
                    await asyncio.sleep(delay)
                    continue
                except asyncio.CancelledError:
                    call.cancel()
                    ex.ended(t, grpc.StatusCode.CANCELLED, None, cancelled=True)
                    raise
                ex.succeeded(t)
                return call
        finally:
            if owned:
                ex.close()


def _aio_error(exc: MeshRpcError) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        exc.code(),
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*exc.trailing_metadata()),
        details=exc.details(),
    )


class _ResolveFirst:
    """Never continues to its own channel: returns the mesh's call instead. (grpc.aio
    files an interceptor under its first matching kind, hence one subclass per kind.)"""

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        multi = _MULTI.get()
        assert multi is not None, "a meshlib deferral channel used directly"
        return await multi.drive(details, request)


class _UnaryUnaryFirst(_ResolveFirst, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    intercept_unary_unary = _ResolveFirst._intercept


class _UnaryStreamFirst(_ResolveFirst, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    intercept_unary_stream = _ResolveFirst._intercept


class _StreamUnaryFirst(_ResolveFirst, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    intercept_stream_unary = _ResolveFirst._intercept


class _StreamStreamFirst(_ResolveFirst, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    intercept_stream_stream = _ResolveFirst._intercept


_INTERCEPTORS: dict[str, type[_ResolveFirst]] = {
    "unary_unary": _UnaryUnaryFirst,
    "unary_stream": _UnaryStreamFirst,
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
        self._deferral: dict[str, grpc.aio.Channel] = {}
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
        _keep(asyncio.ensure_future(channel.close()))

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
            raise _aio_error(view)
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
        """READY once the target resolved; IDLE before."""
        found = self._router.listener()
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
