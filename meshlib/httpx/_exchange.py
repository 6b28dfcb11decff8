"""One request's trip through the mesh for httpx, minus the I/O.

:class:`Exchange` holds every decision the sync and async transports share (route, fault,
mirrors, attempts, telemetry, request and response translation); the transports only
send and wait.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpcore
import httpx

from .._call import Call, authority_of
from .._engine import Engine
from .._errors import MeshError
from .._outcome import Outcome, OutcomeKind, refused_stream
from .._snapshot import ClusterView, ListenerView
from ..cluster._endpoints import EndpointState
from ..context import inject_outbound
from ..resilience.fault import FaultDecision
from ..resilience.retry import Attempt, AttemptLoop
from ..routing import RoutePlan
from ..telemetry import AttemptRecord, CallRecord, Telemetry, retry_reason
from ._body import RecordingStream, replayable_body
from ._errors import MeshConnectError, MeshTimeoutError, mesh_error
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
        endpoint.started()
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


class _Abandoned(Exception):
    """The call ended without a result (cancelled, or an unexpected error)."""


class Exchange:
    """The decisions for one request (see the adapter contract in :mod:`meshlib._engine`).

    Mesh failures leave it as httpx exceptions (:func:`mesh_error`); every step is
    reported to ``telemetry`` (a call record, one attempt record per try).
    """

    __slots__ = (
        "_arec",
        "_connector",
        "_connectors",
        "_engine",
        "_inbound",
        "_inflight",
        "_last",
        "_loop",
        "_remaining",
        "_route_view",
        "body",
        "call",
        "fault",
        "plan",
        "rec",
        "request",
        "view",
    )

    def __init__(
        self,
        engine: Engine,
        view: ListenerView,
        request: httpx.Request,
        connectors: Connectors,
        *,
        telemetry: Telemetry | None = None,
        retry_buffer: int = 0,
        authority: str | None = None,
    ) -> None:
        url = request.url
        self.request = request
        scheme = url.scheme
        self.call = Call(
            authority or authority_of(url.host, url.port, scheme),
            request.method,
            url.raw_path.decode("ascii"),
            request.headers,
            scheme,
        )
        self._engine = engine
        self._connectors = connectors
        self._loop: AttemptLoop | None = None
        self._connector: Connector | None = None
        self.view: ClusterView | None = None  # the cluster of the attempt in flight
        self._route_view: ClusterView | None = None
        self._arec: AttemptRecord | None = None
        self._inflight: Attempt | None = None
        self._last: Outcome | None = None
        self.fault: FaultDecision | None = None
        self.rec: CallRecord | None = (
            telemetry.start_call(self.call, "http") if telemetry is not None else None
        )
        inbound: dict[str, str] = {}
        self._remaining = inject_outbound(inbound)
        present = request.headers
        self._inbound = [(k, v) for k, v in inbound.items() if k not in present] if inbound else []
        try:
            self.plan: RoutePlan = engine.route(view, self.call)
            if self.rec is not None:
                self.rec.route(self.plan.route_name, self.plan.cluster)
            self.fault = engine.fault(self.plan, self.call)
        except MeshError as exc:
            raise self._mesh_failure(exc) from exc
        self.body = replayable_body(request, retry_buffer)

    def _mesh_failure(self, exc: MeshError) -> httpx.TransportError:
        if self.rec is not None:
            self.rec.end(error=exc)
        return mesh_error(exc, self.request)

    def _replayable(self) -> bool:
        body = self.body
        if isinstance(body, RecordingStream):
            return body.replayable
        return isinstance(body, httpx.ByteStream)

    @property
    def loop(self) -> AttemptLoop:
        """The attempt loop, started on first use: after the fault delay, as Envoy's router
        starts the route timeout only once the fault filter lets the request through.
        The inbound caller's remaining deadline caps the route timeout."""
        loop = self._loop
        if loop is None:
            remaining = self._remaining
            loop = self._loop = self._engine.attempts(
                self.plan,
                self.call,
                replayable=self._replayable(),
                deadline=None if remaining is None else time.monotonic() + remaining,
            )
        return loop

    # -- fault filter -----------------------------------------------------------------
    @property
    def delay(self) -> float:
        return self.fault.delay if self.fault is not None else 0.0

    def abort_response(self) -> httpx.Response | None:
        """The fault filter's local answer, when it aborts this call."""
        f = self.fault
        if f is None or not f.aborts:
            return None
        if f.http_status is not None:
            if self.rec is not None:
                self.rec.end(status=f.http_status)
            return httpx.Response(
                f.http_status,
                headers={"content-type": "text/plain"},
                content=b"fault filter abort",
                request=self.request,
            )
        if self.rec is not None:
            self.rec.end(status=200, grpc_status=f.grpc_status)
        headers = {
            "content-type": "application/grpc",
            "grpc-status": str(f.grpc_status),
            "grpc-message": "fault filter abort",
        }
        return httpx.Response(200, headers=headers, request=self.request)

    # -- attempts ---------------------------------------------------------------------
    def headers(
        self, authority: str | None = None, extra: Mapping[str, str] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The upstream request's headers: mutations, host rewrite, inbound context
        (trace, x-request-id) and this attempt's headers (trace context, expected
        timeout), as httpcore takes them."""
        plan = self.plan
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
        ep = endpoint.endpoint
        path = self.plan.path
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

    def _cluster_connector(self) -> Connector:
        connector = self._connector
        if connector is None:
            view = self._engine.snapshot.clusters.get(self.plan.cluster)
            if view is None:  # the attempt loop reports the unknown cluster
                return self._connectors.plaintext
            self.view = self._route_view = view
            connector = self._connector = self._connectors.for_cluster(view)
        if connector.error is not None:
            raise self._mesh_failure(connector.error)
        return connector

    def _child_connector(self, cluster: str) -> Connector:
        """An aggregate cluster's pick: connect with the child cluster's settings (TLS,
        HTTP/2) from the child's pools, as Envoy does."""
        view = self._engine.snapshot.clusters.get(cluster)
        if view is None:
            return self._connector or self._connectors.plaintext
        self.view = view
        connector = self._connectors.for_cluster(view)
        if connector.error is not None:
            raise self._mesh_failure(connector.error)
        return connector

    def next_attempt(self) -> tuple[Attempt, httpcore.Request, Connector]:
        """The next try, the request to send for it and how to connect (the cluster is
        ``view``); mesh failures become httpx errors."""
        connector = self._cluster_connector()
        try:
            attempt = self.loop.next_attempt()
        except MeshError as exc:
            raise self._mesh_failure(exc) from exc
        self._inflight = attempt
        if attempt.endpoint.cluster != self.plan.cluster:
            connector = self._child_connector(attempt.endpoint.cluster)
        else:
            self.view = self._route_view
        trace: dict[str, str] | None = None
        rec = self.rec
        if rec is not None:
            last = self._last
            reason = retry_reason(last) if last is not None and attempt.number > 1 else ""
            arec = self._arec = rec.attempt(
                attempt.endpoint,
                self.plan.cluster,
                attempt_number=attempt.number,
                retry_reason=reason,
            )
            if rec.span is not None:  # tracing: the attempt's context goes upstream
                trace = {}
                arec.inject(trace)
        if attempt.timeout is not None:
            # Envoy's router tells the upstream how long this try may take
            trace = trace if trace is not None else {}
            trace["x-envoy-expected-rq-timeout-ms"] = str(max(1, int(attempt.timeout * 1000)))
        upstream = self.upstream(attempt.endpoint, attempt.timeout, connector, trace)
        return attempt, upstream, connector

    def _record(
        self, attempt: Attempt, outcome: Outcome, headers: Mapping[str, str] | None
    ) -> float | None:
        self._last = outcome
        self._inflight = None
        if self._arec is not None:
            self._arec.end(outcome)
            self._arec = None
        delay = self.loop.record(attempt, outcome, headers)
        if delay is not None and not self._replayable():
            return None  # the body went out past the retry buffer: this result stands
        return delay

    def answered(self, attempt: Attempt, response: httpx.Response) -> float | None:
        """Record a response (its headers: the attempt ends here, the body may still
        stream); None: return it, else back off that long and retry."""
        outcome = Outcome(
            OutcomeKind.RESPONSE,
            response.status_code,
            grpc_status(response.headers),
            time.monotonic() - attempt.started,
        )
        return self._record(attempt, outcome, response.headers)

    def refused(self, attempt: Attempt, exc: MeshError) -> httpx.TransportError:
        """The pool refused the attempt (max_pending_requests overflow): never retried,
        as Envoy never retries an overflow; the error for the application."""
        self._record(attempt, Outcome(OutcomeKind.LOCAL, latency=0.0), None)
        return self._mesh_failure(exc)

    def failed(self, attempt: Attempt, exc: httpx.TransportError) -> float | None:
        """Record a failure; None: raise it, else back off that long and retry."""
        delay = self._record(attempt, outcome_of(exc, time.monotonic() - attempt.started), None)
        if delay is None and self.rec is not None:
            self.rec.end(error=exc)
        return delay

    def finish(self, response: httpx.Response) -> httpx.Response:
        """Response header mutations, then the response for the application."""
        chain = self.plan.headers
        if not chain.response_empty:
            response.headers = httpx.Headers(chain.response(list(response.headers.multi_items())))
        if self.rec is not None:
            self.rec.end(status=response.status_code)
        return response

    # -- mirrors ----------------------------------------------------------------------
    def mirror_requests(self, engine: Engine) -> list[Shadow]:
        """Shadow copies of the request for the plan's mirror clusters (replayable
        bodies only), already counted as started on their endpoints; the transport sends
        them in the background (or drops them) and always calls ``Shadow.done``."""
        if not self.plan.mirrors or not isinstance(self.request.stream, httpx.ByteStream):
            return []
        out = []
        host = self.plan.authority or self.request.headers.get("host") or self.call.authority
        clusters = engine.snapshot.clusters
        for target in self.plan.mirrors:
            view = clusters.get(target.cluster)
            if view is None:
                continue
            connector = self._connectors.for_cluster(view)
            if connector.error is not None:
                continue
            state = engine.mirror_endpoint(target, self.call)
            if state is None:
                continue
            if state.cluster != view.name:  # an aggregate mirror cluster: the child's settings
                child = clusters.get(state.cluster)
                if child is None or self._connectors.for_cluster(child).error is not None:
                    continue
                view, connector = child, self._connectors.for_cluster(child)
            request = self.upstream(
                state, self.plan.timeout, connector, None, target.authority(host)
            )
            out.append(Shadow(view, state, request, connector, self.request))
        return out

    def close(self, error: BaseException | None = None) -> None:
        """End the call: release what it holds; a call without a result is recorded as
        ended by ``error`` (cancellation, an unexpected exception)."""
        if self._inflight is not None:  # cancelled while sending: not the endpoint's fault
            self._record(self._inflight, Outcome(OutcomeKind.LOCAL), None)
        rec = self.rec
        if rec is not None and not rec.ended:
            rec.end(error=error or _Abandoned("request abandoned"))
        if self._loop is not None:
            self._loop.close()
        if self.fault is not None:
            self.fault.release()
