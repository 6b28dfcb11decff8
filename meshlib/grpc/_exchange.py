"""One gRPC call's trip through the mesh, minus the I/O.

:class:`RpcExchange` is the adapter contract of :mod:`meshlib._engine` for grpcio: the
call becomes a :class:`~meshlib.Call` (``:path`` = ``/package.Service/Method``, the
metadata as headers, ``content-type: application/grpc`` and ``grpc-timeout`` from the
caller's deadline), is routed, passes the fault filter, then runs the engine's attempt
loop: admission (circuit breaker), LB pick, per-try timeout, retry by gRPC status and
back-off. Every driver (sync blocking, sync future, sync stream, asyncio) asks it where
to send each attempt and hands back how the attempt ended; only the drivers wait.

Deadlines (gRFC A31 in Envoy's terms): each attempt's grpcio deadline is the smallest of
the per-try timeout, what is left of the route timeout (``max_stream_duration`` and
``grpc_timeout_header_max`` applied by the route table), what is left of the caller's
own deadline and what is left of an inbound caller's deadline. A deadline that is the
call's own is never retried.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from opentelemetry import context as otel_context

from .._call import Call
from .._engine import Engine
from .._errors import MeshError
from .._outcome import Outcome, OutcomeKind
from .._snapshot import ListenerView
from ..context import current_request, inject_outbound
from ..exchange import ExchangeCore, Send, Sleep, open_exchange
from ..local_reply import LocalReply
from ..resilience.retry import Attempt
from ..resilience.timeouts import format_grpc_timeout
from ._status import MeshRpcError, code_of, mesh_rpc_error, outcome_of

if TYPE_CHECKING:
    from ..cluster._endpoints import EndpointState
    from ..telemetry import AttemptRecord, Telemetry

__all__ = ["Metadata", "RpcExchange", "Shadow", "Try"]

Metadata = Sequence[tuple[str, str | bytes]]
# Metadata a route's header mutations may not touch: grpcio owns these.
_RESERVED = frozenset({"content-type", "grpc-timeout", "te", "host", "user-agent"})


class FaultAbort(MeshError):
    """The fault filter answered the call locally (reason ``fault_abort``)."""


class Try:
    """One attempt's where and how: the subchannel (address, authority), the method path,
    the grpcio timeout and metadata to send (``send``: the core's action)."""

    __slots__ = ("attempt", "authority", "metadata", "method", "record", "send", "timeout")

    def __init__(
        self,
        send: Send,
        authority: str,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
        record: AttemptRecord | None,
    ) -> None:
        self.send = send
        self.attempt: Attempt = send.attempt
        self.authority = authority
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.record = record

    @property
    def address(self) -> str:
        """The endpoint's ``host:port``."""
        return self.attempt.endpoint.address


_TIMEOUT_TEXT: dict[float, str] = {}  # the caller's usual timeouts, formatted once


def _grpc_timeout(seconds: float) -> str:
    """The ``grpc-timeout`` header value for ``seconds`` (a bounded memo)."""
    text = _TIMEOUT_TEXT.get(seconds)
    if text is None:
        if len(_TIMEOUT_TEXT) >= 256:
            _TIMEOUT_TEXT.clear()
        text = _TIMEOUT_TEXT[seconds] = format_grpc_timeout(seconds)
    return text


class Shadow:
    """A mirror copy of a call on its way to one endpoint of a mirror cluster: counted
    as started there, and recorded there by :meth:`ended` (its result is ignored)."""

    __slots__ = ("_start", "authority", "endpoint", "metadata", "method", "timeout")

    def __init__(
        self,
        endpoint: EndpointState,
        authority: str,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        self.endpoint = endpoint
        self.authority = authority
        self.method = method
        self.timeout = timeout
        self.metadata = metadata  # counted as started there by the core
        self._start = time.monotonic()

    def ended(self, code: grpc.StatusCode | None, details: str | None = None) -> None:
        """How the copy ended; ``code`` None: it was dropped or never sent."""
        latency = time.monotonic() - self._start
        self.endpoint.finished(outcome_of(code, details, latency))


def _metadata_of(error: Any) -> dict[str, str]:
    """Trailing metadata of a failed call as response headers (retriable-headers, reset
    headers); empty when there is none."""
    try:
        items = error.trailing_metadata() or ()
    except Exception:  # an RpcError that is not a Call
        return {}
    return {k: v for k, v in items if isinstance(v, str)}


class RpcExchange:
    """One gRPC call's translation to and from the exchange core
    (:class:`~meshlib.exchange.ExchangeCore`): the driver-facing steps below; not
    thread-safe (one driver runs one exchange).

    Raises MeshError (no route) when it cannot be built; the Router turns that into a
    :class:`MeshRpcError`.
    """

    __slots__ = ("_metadata", "authority", "call", "core", "method")

    def __init__(
        self,
        engine: Engine,
        view: ListenerView,
        authority: str,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
        telemetry: Telemetry | None,
        *,
        replayable: bool,
    ) -> None:
        extra: dict[str, str] | None = None
        if otel_context.get_current() or current_request() is not None:  # to propagate
            extra = {}
            inbound = inject_outbound(extra)
            if inbound is not None and (timeout is None or inbound < timeout):
                timeout = inbound
        headers = {k: v for k, v in metadata if isinstance(v, str)} if metadata else {}
        headers["content-type"] = "application/grpc"
        deadline: float | None = None
        if timeout is not None:
            deadline = time.monotonic() + timeout
            headers["grpc-timeout"] = _grpc_timeout(timeout)
        self.call = call = Call(authority, "POST", method, headers, "http", "", timeout)
        rec = None if telemetry is None else telemetry.start_call(call, protocol="grpc")
        opened = open_exchange(
            engine.snapshot, view, call, rec, replayable=replayable, deadline=deadline
        )
        if isinstance(opened, LocalReply):
            assert opened.error is not None
            raise opened.error
        self.core: ExchangeCore = opened
        plan = opened.plan
        self.method = method if plan.path is None else plan.path
        self.authority = plan.authority or authority
        if extra:
            metadata = (*(metadata or ()), *((k, v) for k, v in extra.items() if k not in headers))
        if not plan.headers.empty:
            metadata = self._mutate(metadata)
        self._metadata = metadata

    @property
    def plan(self) -> Any:
        """The call's RoutePlan."""
        return self.core.plan

    @property
    def fault(self) -> Any:
        """The fault filter's decision, or None."""
        return self.core.fault

    def _mutate(self, metadata: Metadata | None) -> Metadata:
        """The route's request header mutations, on the string-valued metadata."""
        items = list(metadata or ())
        text = [(k, v) for k, v in items if isinstance(v, str)]
        binary = [(k, v) for k, v in items if not isinstance(v, str)]
        mutated = self.core.plan.headers.request(text)
        kept = [(k, v) for k, v in mutated if not k.startswith(":") and k not in _RESERVED]
        return (*kept, *binary)

    # -- fault filter -----------------------------------------------------------------
    @property
    def delay(self) -> float:
        """Seconds the fault filter holds the call before anything is sent."""
        return self.core.delay

    def abort(self) -> MeshRpcError | None:
        """The fault filter's local answer (gRPC status, or Envoy's mapping of the HTTP
        status), when it aborts this call; the call is then over (flag FI)."""
        reply = self.core.abort()
        if reply is None:
            return None
        error = FaultAbort(
            f"{self.core.plan.cluster}: fault filter abort",
            target=self.call.authority,
            cluster=self.core.plan.cluster,
            reason="fault_abort",
        )
        return MeshRpcError(error, code_of(reply.grpc_status))

    # -- mirrors ----------------------------------------------------------------------
    def shadows(self) -> list[Shadow]:
        """Copies of this call for the route's ``request_mirror_policies`` (each policy
        samples its fraction), once the fault filter let the call through; replayable
        calls only. Each goes to one endpoint of its mirror cluster with Envoy's shadow
        authority (``host-shadow:port``), the call's method and metadata, within what is
        left of the call's deadline (or the route timeout)."""
        core = self.core
        if not core.plan.mirrors or not core.replayable:
            return []
        timeout = core.plan.timeout
        if core.deadline is not None:
            left = max(0.0, core.deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        return [
            Shadow(endpoint, target.authority(self.authority), self.method, timeout, self._metadata)
            for target, _, endpoint in core.mirrors()
        ]

    # -- attempts ---------------------------------------------------------------------
    def next_attempt(self) -> Try:
        """Where and within what time the next attempt goes; raises MeshRpcError
        (overflow, no healthy upstream, time up) and the call is then over."""
        step = self.core.next()
        if isinstance(step, LocalReply):
            assert step.error is not None
            raise mesh_rpc_error(step.error) from step.error
        metadata = self._metadata
        if step.trace:
            kept = [(k, v) for k, v in metadata or () if k not in step.trace]
            metadata = (*kept, *step.trace.items())
        attempt = step.attempt
        return Try(step, self.authority, self.method, attempt.timeout, metadata, step.record)

    def succeeded(self, t: Try) -> None:
        """The attempt answered OK: the call is over."""
        outcome = Outcome(OutcomeKind.RESPONSE, 200, 0, time.monotonic() - t.attempt.started)
        self.core.ended(t.send, outcome)
        self.core.end(grpc_status=0)

    def failed(self, t: Try, error: BaseException, *, committed: bool = False) -> float | None:
        """The attempt failed with ``error`` (an RpcError or AioRpcError). None: give the
        caller this error; else back off that many seconds and make the next attempt.
        ``committed``: the caller already received part of the response (no retry)."""
        if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
            code, details = error.code(), error.details()
        else:
            code, details = grpc.StatusCode.UNKNOWN, str(error)
        return self.ended(t, code, details, error, committed=committed)

    def ended(
        self,
        t: Try,
        code: grpc.StatusCode | None,
        details: str | None,
        source: Any = None,
        *,
        committed: bool = False,
        cancelled: bool = False,
    ) -> float | None:
        """How an attempt ended (any status); returns as :meth:`failed` does.
        ``source`` is the grpcio call or error its trailing metadata is read from."""
        latency = time.monotonic() - t.attempt.started
        outcome = outcome_of(code, details, latency, cancelled=cancelled)
        headers: Mapping[str, str] | None = None
        if code is not grpc.StatusCode.OK and source is not None and not cancelled:
            headers = _metadata_of(source)
        step = self.core.ended(
            t.send, outcome, headers, retry=not (committed or cancelled), answer=False
        )
        if isinstance(step, Sleep):
            return step.seconds
        number = 1 if cancelled else (code.value[0] if code is not None else 2)
        self.core.end(grpc_status=number)
        return None

    def commit(self, code: grpc.StatusCode) -> None:
        """The driver did not make the retry :meth:`ended` allowed (the caller already saw
        part of the response, or cancelled): the call ends with ``code``."""
        self.core.end(grpc_status=code.value[0])

    def close(self, *, cancelled: bool = False) -> None:
        """Release what the call holds (fault slot, retry admission); once, at the end.
        ``cancelled``: the caller cancelled the call between attempts."""
        self.core.close(grpc_status=1 if cancelled else 2)
