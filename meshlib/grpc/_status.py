"""gRPC status codes in the engine's terms: Outcome classification and mesh errors.

A gRPC answer is a RESPONSE whose HTTP-equivalent status is Envoy's grpc-to-HTTP
mapping (UNAVAILABLE -> 503, INTERNAL -> 500, ...), so outlier detection counts gRPC
failures as Envoy does. Failures raised by the channel itself (no connection, reset,
local deadline) are classified from the call's details, as grpcio reports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import grpc

from .._errors import MeshError, UpstreamTimeout
from .._outcome import Outcome, OutcomeKind
from ..local_reply import GRPC_FOR_HTTP

__all__ = [
    "HTTP_EQUIVALENT",
    "MeshRpcError",
    "code_of",
    "grpc_code_for_http",
    "mesh_rpc_error",
    "outcome_of",
]

#: Envoy's Grpc::Utility::grpcToHttpStatus.
HTTP_EQUIVALENT: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_OK = Outcome(OutcomeKind.RESPONSE, 200, 0)

# grpcio's wording for failures that never produced a response.
_CONNECT_MARKERS = ("failed to connect", "connection refused", "handshake", "no route to host")
_RESET_MARKERS = ("socket closed", "connection reset", "stream removed", "goaway", "broken pipe")


def grpc_code_for_http(status: int) -> grpc.StatusCode:
    """The gRPC status Envoy gives a gRPC caller for a local HTTP ``status``."""
    return code_of(GRPC_FOR_HTTP.get(status, 2))


def code_of(number: int) -> grpc.StatusCode:
    """The StatusCode for a numeric gRPC status (UNKNOWN for numbers outside 0-16)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def outcome_of(
    code: grpc.StatusCode | None, details: str | None, latency: float, *, cancelled: bool = False
) -> Outcome:
    """Classify how one attempt ended. ``cancelled``: the caller cancelled it locally."""
    if code is grpc.StatusCode.OK:
        return Outcome(OutcomeKind.RESPONSE, 200, 0, latency) if latency else _OK
    if code is None or cancelled:
        return Outcome(OutcomeKind.LOCAL, None, 1, latency)
    number = code.value[0]
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return Outcome(OutcomeKind.TIMEOUT, None, number, latency)
    if code is grpc.StatusCode.UNAVAILABLE:
        text = (details or "").lower()
        if any(m in text for m in _CONNECT_MARKERS):
            return Outcome(OutcomeKind.CONNECT_FAILURE, None, number, latency)
        if any(m in text for m in _RESET_MARKERS):
            return Outcome(OutcomeKind.RESET, None, number, latency)
    return Outcome(OutcomeKind.RESPONSE, HTTP_EQUIVALENT[code], number, latency)


class MeshRpcError(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A call the mesh could not make (no route, no healthy upstream, unresolved target).

    It stands in for every shape a grpcio call returns, already failed: raise it, iterate
    it, ask it for ``result()`` -- each raises it; ``code()`` is UNAVAILABLE unless the
    mesh answered otherwise (a fault abort, DEADLINE_EXCEEDED when the route timeout or the
    caller's deadline passed before an attempt could start). ``mesh_error`` holds the
    engine's error.
    """

    def __init__(
        self,
        error: MeshError,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        super().__init__(str(error))
        self.mesh_error = error
        self.cluster = error.cluster
        self.reason = error.reason
        self._code = code

    # grpc.Call / grpc.RpcError
    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return str(self.mesh_error)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-meshlib-reason", self.reason),)

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Any) -> bool:
        return False  # terminated: grpcio's contract is to not call it

    # grpc.Future
    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> NoReturn:
        raise self

    def exception(self, timeout: float | None = None) -> MeshRpcError:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__

    def add_done_callback(self, fn: Any) -> None:
        fn(self)

    # response iterators
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> NoReturn:
        raise self

    def __str__(self) -> str:
        return f"<MeshRpcError {self._code} {self.reason}: {self.mesh_error}>"


def mesh_rpc_error(error: MeshError) -> MeshRpcError:
    """The RpcError a gRPC caller sees for an engine error: DEADLINE_EXCEEDED when the
    call's time ran out, UNAVAILABLE otherwise (no route, no healthy upstream, overflow:
    what a proxyless gRPC client reports for them)."""
    code = (
        grpc.StatusCode.DEADLINE_EXCEEDED
        if isinstance(error, UpstreamTimeout)
        else grpc.StatusCode.UNAVAILABLE
    )
    return MeshRpcError(error, code)
