"""One httpx request through the exchange core: type translation, no decisions.

:class:`Exchange` turns the application's ``httpx.Request`` into a :class:`~meshlib.Call`,
opens the call's :class:`~meshlib.exchange.ExchangeCore` and translates each of its
actions: a :class:`~meshlib.exchange.Send` into the httpcore request for the endpoint
(Host, path rewrite, header mutations, trace context, the attempt's timeouts, the
cluster's TLS), each result back into an :class:`~meshlib._outcome.Outcome`, a
:class:`~meshlib.local_reply.LocalReply` into Envoy's response (or, with
``local_replies="raise"``, a typed httpx exception). The sync and async transports only
send and wait (their ``_carry`` loops).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import httpcore
import httpx

from .._call import Call, authority_of
from .._errors import MeshError
from .._outcome import Outcome, OutcomeKind, refused_stream
from .._snapshot import ClusterView, ListenerView, Snapshot
from ..cluster._endpoints import EndpointState
from ..context import inject_outbound
from ..exchange import DONE, Done, ExchangeCore, Send, Sleep, open_exchange
from ..local_reply import LocalReply
from ..telemetry import Telemetry
from ._body import RecordingStream, replayable_body
from ._errors import MeshConnectError, MeshTimeoutError, mesh_error, reply_error, reply_response
from ._pools import Connector, Connectors
from ._upstream import core_request, core_url, endpoint_url, extensions_for, grpc_status

__all__ = [
    "Exchange",
    "MeshConnectError",
    "MeshTimeoutError",
    "Shadow",
    "endpoint_url",
    "mesh_error",
    "outcome_of",
]

Step = Send | Sleep | LocalReply | Done


def outcome_of(exc: httpx.TransportError, latency: float) -> Outcome:
    """An httpx failure in the engine's terms."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Outcome(OutcomeKind.CONNECT_FAILURE, latency=latency)
    if isinstance(exc, httpx.PoolTimeout):
        return Outcome(OutcomeKind.LOCAL, latency=latency)
    if isinstance(exc, httpx.TimeoutException):
        return Outcome(OutcomeKind.TIMEOUT, latency=latency)
    return Outcome(OutcomeKind.RESET, latency=latency, refused=refused_stream(exc))


class Shadow:
    """A mirror copy on its way: the endpoint records it like any attempt. ``request``
    is built for the endpoint; ``app`` is the application's request (errors name it)."""

    __slots__ = ("_start", "app", "cluster", "connector", "endpoint", "request")

    def __init__(
        self,
        cluster: ClusterView,
        endpoint: EndpointState,
        request: httpcore.Request,
        connector: Connector,
        app: httpx.Request,
    ):
        self.cluster = cluster
        self.endpoint = endpoint
        self.request = request
        self.connector = connector
        self.app = app
        self._start = time.monotonic()

    def done(
        self, response: httpx.Response | None = None, error: httpx.TransportError | None = None
    ) -> None:
        """Record how it ended: a response, a transport error, or neither (dropped)."""
        latency = time.monotonic() - self._start
        if response is not None:
            outcome = Outcome(OutcomeKind.RESPONSE, response.status_code, latency=latency)
        elif error is not None:
            outcome = outcome_of(error, latency)
        else:
            outcome = Outcome(OutcomeKind.LOCAL, latency=latency)
        self.endpoint.finished(outcome)


def _own_timeout(request: httpx.Request) -> float | None:
    """The smallest of the application's own httpx timeouts, None: none."""
    timeouts = request.extensions.get("timeout")
    if not isinstance(timeouts, dict):
        return None
    values = [float(v) for v in timeouts.values() if v is not None]
    return min(values) if values else None


class Exchange:
    """One request's translation to and from the exchange core (see the module
    docstring). ``reply`` is set when the request was answered before any action (no
    route); ``mirror`` receives the mirror copies to send in the background."""

    __slots__ = (
        "_cause",
        "_connectors",
        "_inbound",
        "_mirror",
        "_raise",
        "body",
        "call",
        "core",
        "reply",
        "request",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        view: ListenerView,
        request: httpx.Request,
        connectors: Connectors,
        *,
        telemetry: Telemetry | None = None,
        retry_buffer: int = 0,
        authority: str | None = None,
        local_replies: str = "envoy",
        mirror: Callable[[Shadow], None] | None = None,
    ) -> None:
        url = request.url
        self.request = request
        scheme = url.scheme
        self.call = call = Call(
            authority or authority_of(url.host, url.port, scheme),
            request.method,
            url.raw_path.decode("ascii"),
            request.headers,
            scheme,
        )
        self._connectors = connectors
        self._cause: httpx.TransportError | None = None
        self._raise = local_replies == "raise"
        self._mirror = mirror
        inbound: dict[str, str] = {}
        remaining = inject_outbound(inbound)
        present = request.headers
        self._inbound = [(k, v) for k, v in inbound.items() if k not in present] if inbound else []
        self.body = replayable_body(request, retry_buffer)
        rec = telemetry.start_call(call, "http") if telemetry is not None else None
        opened = open_exchange(
            snapshot,
            view,
            call,
            rec,
            replayable=self._replayable(),
            deadline=None if remaining is None else time.monotonic() + remaining,
        )
        self.core: ExchangeCore | None = None
        self.reply: LocalReply | None = None
        if isinstance(opened, LocalReply):
            self.reply = opened
        else:
            self.core = opened

    def _replayable(self) -> bool:
        body = self.body
        if isinstance(body, RecordingStream):
            return body.replayable
        return isinstance(body, httpx.ByteStream)

    # -- the steps (each returns the core's next action) -------------------------------
    def start(self) -> Step:
        if self.core is None:
            assert self.reply is not None
            return self.reply
        return self._sending(self.core.start())

    def resume(self) -> Step:
        assert self.core is not None
        return self._sending(self.core.resume())

    def _sending(self, step: Send | Sleep | LocalReply) -> Step:
        if (
            self._mirror is not None
            and isinstance(step, Send)
            and step.attempt.number == 1
            and self.core is not None
            and self.core.plan.mirrors
        ):
            for shadow in self._shadows():
                self._mirror(shadow)
        return step

    def prepare(self, send: Send) -> tuple[httpcore.Request, Connector, ClusterView] | LocalReply:
        """The httpcore request for ``send``, how to connect and the pool's cluster;
        a LocalReply when the cluster's TLS settings cannot be met."""
        core = self.core
        assert core is not None
        view = send.cluster or core.clusters.get(core.plan.cluster)
        if view is None:  # cannot happen: the pick came from this Snapshot
            return core.refused(send, MeshError("cluster vanished", reason="no_healthy_upstream"))
        connector = self._connectors.for_cluster(view)
        if connector.error is not None:
            return core.refused(send, connector.error)
        attempt = send.attempt
        extra = send.trace
        if attempt.timeout is not None:
            # Envoy's router tells the upstream how long this try may take
            extra = dict(extra) if extra else {}
            extra["x-envoy-expected-rq-timeout-ms"] = str(max(1, int(attempt.timeout * 1000)))
        return self.upstream(attempt.endpoint, attempt.timeout, connector, extra), connector, view

    def answered(self, send: Send, response: httpx.Response) -> Step:
        """A response (its headers: the attempt ends here, the body may still stream).
        DONE: hand it to :meth:`finish`; Sleep: close it, back off and resume."""
        assert self.core is not None
        outcome = Outcome(
            OutcomeKind.RESPONSE,
            response.status_code,
            grpc_status(response.headers),
            time.monotonic() - send.attempt.started,
        )
        return self.core.ended(send, outcome, response.headers, retry=self._replayable())

    def failed(self, send: Send, exc: httpx.TransportError) -> Step:
        """A transport failure. DONE: the application's own timeout fired, raise ``exc``."""
        assert self.core is not None
        attempt = send.attempt
        outcome = outcome_of(exc, time.monotonic() - attempt.started)
        answer = True
        if outcome.kind is OutcomeKind.TIMEOUT:
            own = _own_timeout(self.request)
            answer = own is None or (attempt.timeout is not None and attempt.timeout <= own)
        self._cause = exc
        step = self.core.ended(send, outcome, None, retry=self._replayable(), answer=answer)
        if step is DONE:
            self.core.end(error=exc)
        return step

    def refused(self, send: Send, exc: MeshError) -> LocalReply:
        """The pool refused the attempt (max_pending_requests overflow)."""
        assert self.core is not None
        return self.core.refused(send, exc)

    def answer(self, reply: LocalReply) -> httpx.Response:
        """The mesh's own answer: Envoy's response, or (raise mode) its exception; a
        configured answer (fault abort, direct response, redirect) is a response in
        either mode."""
        if self._raise and not reply.configured:
            raise reply_error(reply, self.request, self._cause)
        return reply_response(reply, self.request)

    def finish(self, response: httpx.Response) -> httpx.Response:
        """Response header mutations, then the response for the application."""
        core = self.core
        assert core is not None
        chain = core.plan.headers
        if not chain.response_empty:
            response.headers = httpx.Headers(chain.response(list(response.headers.multi_items())))
        core.end(status=response.status_code)
        return response

    # -- the upstream request ----------------------------------------------------------
    def headers(
        self, authority: str | None = None, extra: Mapping[str, str] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The upstream request's headers: mutations, host rewrite, inbound context
        (trace, x-request-id) and this attempt's headers (trace context, expected
        timeout), as httpcore takes them."""
        assert self.core is not None
        plan = self.core.plan
        headers = self.request.headers
        if not plan.headers.empty:
            headers = httpx.Headers(plan.headers.request(list(headers.multi_items())))
        host = authority or plan.authority
        if host is None and not self._inbound:
            if not extra:
                return headers.raw
            if not any(name in headers for name in extra):  # only added: no copy
                added = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
                return headers.raw + added
        headers = httpx.Headers(headers)
        for k, v in self._inbound:
            headers[k] = v
        if extra:
            headers.update(extra)
        if host is not None:
            headers["host"] = host
        return headers.raw

    def upstream(
        self,
        endpoint: EndpointState,
        timeout: float | None,
        connector: Connector,
        extra: Mapping[str, str] | None = None,
        authority: str | None = None,
    ) -> httpcore.Request:
        """The request to send to ``endpoint``: the application's request target and
        Host, the connection to the endpoint (over TLS when the cluster says so)."""
        assert self.core is not None
        ep = endpoint.endpoint
        path = self.core.plan.path
        request = self.request
        target = request.url.raw_path if path is None else path.encode("ascii")
        url = core_url(connector.scheme, ep.host, ep.port, target)
        return core_request(
            request.method.encode(),
            url,
            self.headers(authority, extra),
            self.body,
            extensions_for(request.extensions, timeout, connector),
        )

    def _shadows(self) -> list[Shadow]:
        """Shadow copies for the route's mirror clusters (replayable bodies only), each
        counted as started on its endpoint; the transport sends them in the background
        (or drops them) and always calls ``Shadow.done``."""
        core = self.core
        assert core is not None
        if not isinstance(self.request.stream, httpx.ByteStream):
            return []
        plan = core.plan
        host = plan.authority or self.request.headers.get("host") or self.call.authority
        out = []
        for target, view, endpoint in core.mirrors():
            connector = self._connectors.for_cluster(view)
            if connector.error is not None:
                endpoint.finished(Outcome(OutcomeKind.LOCAL))
                continue
            request = self.upstream(endpoint, plan.timeout, connector, None, target.authority(host))
            out.append(Shadow(view, endpoint, request, connector, self.request))
        return out

    def close(self, error: BaseException | None = None) -> None:
        """End the call: release what it holds; a call without a result is recorded as
        ended by ``error`` (cancellation, an unexpected exception)."""
        if self.core is not None:
            self.core.close(error)
