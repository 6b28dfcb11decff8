"""The exchange core: one call's decisions in the order every driver takes them.

:class:`ExchangeCore` is sans-I/O, as h11's connection and tenacity's ``iter()`` are: it
reads the Snapshot once (when the call starts), walks the route table once, asks the
fault filter, runs the attempt loop (admission, one LB pick per attempt, per-try and
route timeouts, retries, back-off), records every attempt and the call in telemetry, and
decides the call's response flag and local reply (:mod:`meshlib.local_reply`). It
never waits. A driver asks it what to do next and does only that:

- :class:`Send`: send this attempt (``attempt.endpoint`` in ``cluster``, within
  ``attempt.timeout`` seconds, with ``trace`` headers added), then report how it ended
  with :meth:`ExchangeCore.ended`;
- :class:`Sleep`: wait ``seconds`` (the fault delay, a retry back-off), then call
  :meth:`ExchangeCore.resume`;
- :class:`~meshlib.local_reply.LocalReply`: the mesh answers the call itself;
- :data:`DONE`: the last attempt's result is the call's result (then
  :meth:`ExchangeCore.end` with what the application got).

:meth:`ExchangeCore.close` runs once, in a ``finally``. Blocking, asyncio and callback
drivers differ only in how they send and wait.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

from .._errors import MeshError, RouteNotFound, TargetNotResolved
from .._outcome import Outcome, OutcomeKind
from ..local_reply import LocalReply, fault_abort, for_error, for_failure
from ..resilience.retry import Attempt, AttemptLoop
from ..telemetry._semconv import retry_reason

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._call import Call
    from .._snapshot import ClusterView, ListenerView, Snapshot
    from ..cluster._endpoints import EndpointState
    from ..resilience.fault import FaultDecision
    from ..resilience.mirror import MirrorTarget
    from ..routing import RoutePlan
    from ..telemetry import AttemptRecord, CallRecord

__all__ = [
    "DONE",
    "MAX_SHADOWS_IN_FLIGHT",
    "Action",
    "Done",
    "ExchangeCore",
    "Send",
    "ShadowSlots",
    "Sleep",
    "open_exchange",
]

#: Mirror copies one client (transport or channel) keeps in flight; past it they drop.
MAX_SHADOWS_IN_FLIGHT: Final = 64


class Send:
    """Send this attempt: ``attempt.endpoint`` (of ``cluster``: an aggregate's child
    when the pick came from one) within ``attempt.timeout``; ``trace`` holds the headers
    the attempt adds (trace context), ``record`` its telemetry."""

    __slots__ = ("attempt", "cluster", "record", "trace")

    def __init__(
        self,
        attempt: Attempt,
        cluster: ClusterView | None,
        record: AttemptRecord | None,
        trace: dict[str, str] | None,
    ) -> None:
        self.attempt = attempt
        self.cluster = cluster
        self.record = record
        self.trace = trace


class Sleep:
    """Wait ``seconds`` (fault delay or retry back-off), then ``resume()``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Done:
    """The last attempt's result is the call's result."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


DONE: Final = Done()
Action = Send | Sleep | LocalReply | Done


def open_exchange(
    snapshot: Snapshot,
    view: ListenerView,
    call: Call,
    rec: CallRecord | None,
    *,
    replayable: bool,
    deadline: float | None = None,
) -> ExchangeCore | LocalReply:
    """Route ``call`` on ``view`` (one route walk): its exchange, or the local reply when
    nothing routes it (NR), the route answers itself (a direct response or redirect) or
    the local rate limit refuses it (RL); the call is then over and recorded."""
    routes = view.routes
    plan = routes.route_or_reply(call) if routes is not None else None
    if isinstance(plan, LocalReply):
        if rec is not None:
            grpc = plan.grpc_status if rec.protocol == "grpc" else None
            rec.end(status=plan.status, grpc_status=grpc, flags=plan.flag)
        return plan
    if plan is None:
        error: MeshError
        if routes is None:
            error = TargetNotResolved(
                f"{call.authority}: {view.error}", target=call.authority, reason="listener_error"
            )
        else:
            error = RouteNotFound(
                f"{call.authority}: no route for {call.method} {call.path}",
                target=call.authority,
                reason="no_route",
            )
        reply = for_error(error)
        if rec is not None:
            rec.end(status=reply.status, error=error, flags=reply.flag)
        return reply
    limiter = plan.ratelimit
    if limiter is not None:  # the local rate limit filter, before anything is sent
        limited = limiter.admit()
        if limited is not None:
            if rec is not None:
                rec.route(plan.route_name, plan.cluster)
                grpc = limited.grpc_status if rec.protocol == "grpc" else None
                rec.end(status=limited.status, grpc_status=grpc, flags=limited.flag)
            return limited
    return ExchangeCore(snapshot, plan, call, rec, replayable=replayable, deadline=deadline)


class ExchangeCore:
    """The decisions of one routed call (see the module docstring). Not thread-safe:
    one driver runs one exchange. ``deadline`` (monotonic seconds) caps the route
    timeout: the caller's own, or an inbound caller's."""

    __slots__ = (
        "_delayed",
        "_flag",
        "_inflight",
        "_loop",
        "call",
        "clusters",
        "deadline",
        "fault",
        "plan",
        "rec",
        "replayable",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        plan: RoutePlan,
        call: Call,
        rec: CallRecord | None,
        *,
        replayable: bool,
        deadline: float | None = None,
    ) -> None:
        self.call = call
        self.plan = plan
        self.rec = rec
        self.clusters = snapshot.clusters  # the one Snapshot read of this call
        self.deadline = deadline
        self.replayable = replayable
        self._loop: AttemptLoop | None = None
        self._inflight: Attempt | None = None
        self._flag: str | None = None
        if rec is not None:
            rec.route(plan.route_name, plan.cluster)
        fault = None if plan.fault is None else plan.fault.decide(call, plan.cluster)
        self.fault: FaultDecision | None = fault
        self._delayed = fault is not None and fault.delay > 0  # drivers always honour it

    # -- the steps ---------------------------------------------------------------------
    @property
    def delay(self) -> float:
        """Seconds the fault filter holds the call before anything is sent."""
        fault = self.fault
        return fault.delay if fault is not None else 0.0

    def start(self) -> Send | Sleep | LocalReply:
        """The first action: the fault delay, the fault's abort, or the first attempt."""
        fault = self.fault
        if fault is not None:
            if fault.delay:
                return Sleep(fault.delay)
            if fault.aborts:
                return self._abort(fault)
        return self.next()

    def resume(self) -> Send | LocalReply:
        """After a Sleep: the fault's abort (after its delay) or the next attempt."""
        if self._loop is None:
            reply = self.abort()
            if reply is not None:
                return reply
        return self.next()

    def abort(self) -> LocalReply | None:
        """The fault filter's abort, when it aborts this call (then the call is over)."""
        fault = self.fault
        if fault is None or not fault.aborts:
            return None
        return self._abort(fault)

    def _abort(self, fault: FaultDecision) -> LocalReply:
        reply = fault_abort(
            self.plan.cluster, fault.http_status, fault.grpc_status, delayed=self._delayed
        )
        return self._local(reply)

    def next(self) -> Send | LocalReply:
        """The next attempt (admission, LB pick, its timeout), or the local reply that
        ends the call (no healthy upstream, overflow, drop_overload, time up)."""
        loop = self._loop
        if loop is None:  # the route timeout starts once the fault filter let the call go
            loop = self._loop = AttemptLoop(
                self.plan, self.call, self.clusters, self.replayable, deadline=self.deadline
            )
        try:
            attempt = loop.next_attempt()
        except MeshError as exc:
            return self._local(for_error(exc))
        self._inflight = attempt
        endpoint = attempt.endpoint
        cluster = self.clusters.get(endpoint.cluster)
        rec = self.rec
        if rec is None:
            return Send(attempt, cluster, None, None)
        last = rec.last
        reason = ""
        if attempt.number > 1 and last is not None:
            reason = retry_reason(last)
        record = rec.attempt(
            endpoint, self.plan.cluster, attempt_number=attempt.number, retry_reason=reason
        )
        trace: dict[str, str] | None = None
        if record.span is not None:  # tracing: the attempt's context goes upstream
            trace = {}
            record.inject(trace)
        return Send(attempt, cluster, record, trace)

    def ended(
        self,
        send: Send,
        outcome: Outcome,
        headers: Mapping[str, str] | None = None,
        *,
        retry: bool = True,
        answer: bool = True,
    ) -> Sleep | LocalReply | Done:
        """How ``send`` ended. Sleep: back off, then ``resume()``; DONE: the call's result
        is this attempt's (a response, or the error when ``answer`` is False: the
        driver's own failure stands, its flag is recorded); a LocalReply for a failure
        that ended the call (connect failure, reset, timeout: UF/UC/UT, URX after
        retries). ``retry`` False: the attempt may not be repeated (a body already gone)."""
        self._inflight = None
        attempt = send.attempt
        if send.record is not None:
            send.record.end(outcome)
        assert self._loop is not None
        delay = self._loop.record(attempt, outcome, headers)
        if delay is not None and retry:
            return Sleep(delay)
        if outcome.kind is OutcomeKind.RESPONSE:
            return DONE
        reply = for_failure(outcome, self.plan.cluster, retried=attempt.number > 1)
        if reply is None:
            return DONE
        if not answer:
            self._flag = reply.flag
            return DONE
        return self._local(reply)

    def refused(self, send: Send, error: MeshError) -> LocalReply:
        """The connection pool refused ``send`` (max_pending_requests overflow): never
        retried, as Envoy never retries an overflow."""
        send.attempt.endpoint.not_sent()
        self.ended(send, Outcome(OutcomeKind.LOCAL), retry=False)
        return self._local(for_error(error))

    def _local(self, reply: LocalReply) -> LocalReply:
        if self._delayed and not reply.flag.startswith("DI"):
            reply = _with_flag(reply, f"DI,{reply.flag}")
        self._flag = reply.flag
        rec = self.rec
        if rec is not None:
            rec.end(
                status=reply.status,
                grpc_status=reply.grpc_status if rec.protocol == "grpc" else None,
                error=reply.error,
                flags=reply.flag,
            )
        return reply

    @property
    def flag(self) -> str:
        """The call's response flag so far (``-``: none)."""
        return self._flag or ("DI" if self._delayed else "-")

    def end(
        self,
        status: int | None = None,
        grpc_status: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """The call is over with what the application got (after DONE)."""
        rec = self.rec
        if rec is not None and not rec.ended:
            flag = self._flag or ("DI" if self._delayed else None)
            rec.end(status=status, grpc_status=grpc_status, error=error, flags=flag)

    # -- mirrors -----------------------------------------------------------------------
    def mirrors(self) -> list[tuple[MirrorTarget, ClusterView, EndpointState]]:
        """For each of the route's mirror policies (already sampled): the mirror cluster
        (an aggregate's child when the pick came from one) and an endpoint, counted as
        started there (the driver ends each with ``endpoint.finished``). Mirrors never
        fail the call: a cluster without an endpoint is skipped."""
        out = []
        clusters = self.clusters
        for target in self.plan.mirrors:
            view = clusters.get(target.cluster)
            if view is None:
                continue
            try:
                endpoint = view.pick(self.call)
            except MeshError:
                continue
            if endpoint.cluster != view.name:
                child = clusters.get(endpoint.cluster)
                if child is None:
                    continue
                view = child
            endpoint.started()
            out.append((target, view, endpoint))
        return out

    def close(self, error: BaseException | None = None, grpc_status: int | None = None) -> None:
        """Release what the call holds (retry admission, fault slot, an attempt in
        flight: not the endpoint's fault); a call nothing ended is recorded as ended by
        ``error`` or ``grpc_status`` (cancelled, an unexpected exception)."""
        attempt = self._inflight
        if attempt is not None and self._loop is not None:
            self._inflight = None
            self._loop.record(attempt, Outcome(OutcomeKind.LOCAL))
        if self._loop is not None:
            self._loop.close()
        if self.fault is not None:
            self.fault.release()
        rec = self.rec
        if rec is not None and not rec.ended:
            if error is None and grpc_status is None:
                error = _Abandoned("request abandoned")
            rec.end(grpc_status=grpc_status, error=error)


class _Abandoned(Exception):
    """The call ended without a result (cancelled, or an unexpected error)."""


def _with_flag(reply: LocalReply, flag: str) -> LocalReply:
    return LocalReply(
        reply.status,
        reply.body,
        flag,
        reply.reason,
        cluster=reply.cluster,
        headers=reply.headers,
        grpc_status=reply.grpc_status,
        error=reply.error,
    )


class ShadowSlots:
    """A client's count of mirror copies in flight (thread-safe), at most ``limit``."""

    __slots__ = ("_lock", "in_flight", "limit")

    def __init__(self, limit: int = MAX_SHADOWS_IN_FLIGHT) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Take a slot; False: too many copies in flight (drop this one)."""
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1
