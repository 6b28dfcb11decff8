"""Real gRPC backends on 127.0.0.1 and hand-built xDS resources for the gRPC tests.

Backends serve ``test.Echo`` with bytes (de)serializers (no codegen). Request metadata
steers them: ``x-code: N`` aborts with status N, ``x-sleep: S`` sleeps S seconds first.
``Echo`` answers ``<ident>|<authority>|<time remaining or ->``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Resources,
    VersionedSnapshotCache,
)
from xds_client import builders as b

SERVICE = "test.Echo"


def _meta(context: Any) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}


def _authority(context: Any) -> str:
    # grpcio hides :authority from handlers; its call details keep it (as "host").
    event = getattr(context, "_rpc_event", None)
    host = getattr(getattr(event, "call_details", None), "host", b"")
    return host.decode() if isinstance(host, bytes) else str(host or "")


def _remaining(context: Any) -> str:
    left = context.time_remaining()
    return "-" if left is None or left > 1e6 else f"{left:.3f}"


class EchoLogic:
    """The handlers' behaviour, shared by the sync and asyncio servers."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.calls = 0  # replies sent (one per streamed message)
        self.started = 0  # Echo calls that reached the handler
        self.aborted = 0  # calls the handler failed with a status
        self.fail_with: grpc.StatusCode | None = None  # fail every Echo call
        self.fail_streams = 0  # fail this many Stream calls UNAVAILABLE before any message
        self.streams = 0  # Stream calls that reached the handler
        self.metadata: list[dict[str, str]] = []  # what each Echo call carried
        self.authorities: list[str] = []  # the :authority of each Echo call
        self.lock = threading.Lock()

    def start(self, context: Any) -> None:
        with self.lock:
            self.started += 1
            self.metadata.append(_meta(context))
            self.authorities.append(_authority(context))

    def reply(self, context: Any) -> bytes:
        with self.lock:
            self.calls += 1
        authority = _authority(context)
        return f"{self.ident}|{authority}|{_remaining(context)}".encode()

    def abort_code(self, context: Any) -> grpc.StatusCode | None:
        """The status to fail with (``x-code`` metadata or ``fail_with``), counted."""
        code = _meta(context).get("x-code")
        found = self.fail_with
        if code is not None:
            found = next(c for c in grpc.StatusCode if c.value[0] == int(code))
        if found is not None:
            with self.lock:
                self.aborted += 1
        return found

    def early_failure(self) -> grpc.StatusCode | None:
        """A Stream call started: UNAVAILABLE while ``fail_streams`` lasts (counted)."""
        with self.lock:
            self.streams += 1
            if self.fail_streams <= 0:
                return None
            self.fail_streams -= 1
            self.aborted += 1
        return grpc.StatusCode.UNAVAILABLE

    def delay(self, context: Any) -> float:
        return float(_meta(context).get("x-sleep", "0"))


def sync_handlers(logic: EchoLogic) -> grpc.GenericRpcHandler:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        logic.start(context)
        time.sleep(logic.delay(context))
        code = logic.abort_code(context)
        if code is not None:
            context.abort(code, f"{logic.ident} says {code.name}")
        return logic.reply(context)

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        early = logic.early_failure()
        if early is not None:
            context.abort(early, f"{logic.ident} says {early.name} first")
        for i in range(int(request or b"3")):
            yield logic.reply(context) + f"#{i}".encode()
        code = logic.abort_code(context)  # after the messages: a committed stream fails
        if code is not None:
            context.abort(code, f"{logic.ident} says {code.name}")

    def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return b"+".join(requests) + b"@" + logic.reply(context)

    def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for r in requests:
            yield r + b"@" + logic.ident.encode()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Other": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )


def aio_handlers(logic: EchoLogic) -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        logic.start(context)
        await asyncio.sleep(logic.delay(context))
        code = logic.abort_code(context)
        if code is not None:
            await context.abort(code, f"{logic.ident} says {code.name}")
        return logic.reply(context)

    async def stream(
        request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        early = logic.early_failure()
        if early is not None:
            await context.abort(early, f"{logic.ident} says {early.name} first")
        for i in range(int(request or b"3")):
            yield logic.reply(context) + f"#{i}".encode()
        code = logic.abort_code(context)  # after the messages: a committed stream fails
        if code is not None:
            await context.abort(code, f"{logic.ident} says {code.name}")

    async def collect(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        got = [r async for r in requests]
        return b"+".join(got) + b"@" + logic.reply(context)

    async def chat(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        async for r in requests:
            yield r + b"@" + logic.ident.encode()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )


class Backend:
    """A grpc.server on 127.0.0.1 (thread pool) serving test.Echo."""

    def __init__(self, ident: str, interceptors: Sequence[Any] = ()) -> None:
        self.logic = EchoLogic(ident)
        self.ident = ident
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8), interceptors=list(interceptors)
        )
        self.server.add_generic_rpc_handlers((sync_handlers(self.logic),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0).wait()


class AioBackend:
    """A grpc.aio.server on 127.0.0.1, on its own event loop thread."""

    def __init__(self, ident: str, interceptors: Sequence[Any] = ()) -> None:
        self.logic = EchoLogic(ident)
        self.ident = ident
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(interceptors), self.loop).result(
            10
        )

    async def _start(self, interceptors: Sequence[Any]) -> int:
        self.server = grpc.aio.server(interceptors=list(interceptors))
        self.server.add_generic_rpc_handlers((aio_handlers(self.logic),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- hand-built xDS --------------------------------------------------------------------


def listener(name: str, route_config: str) -> listener_pb2.Listener:
    """A client API listener over RDS ``route_config``: fault, then router."""
    return b.api_listener(name, route_config)


seconds = b.duration


def route(
    cluster: str | dict[str, int],
    *,
    prefix: str = "/",
    path: str | None = None,
    timeout: float | None = 0.0,
    headers: dict[str, str] | None = None,
    retry: rc.RetryPolicy | None = None,
    fault: fault_pb2.HTTPFault | None = None,
    grpc_timeout_max: float | None = None,
    mirrors: Sequence[str] = (),
) -> rc.Route:
    """A route to one cluster or a weighted set; ``timeout`` None leaves it unset;
    ``grpc_timeout_max`` sets max_stream_duration.grpc_timeout_header_max; ``mirrors``
    are clusters that get a copy of every call (request_mirror_policies)."""
    match = rc.RouteMatch(path=path) if path is not None else rc.RouteMatch(prefix=prefix)
    for name, value in (headers or {}).items():
        match.headers.add(name=name, string_match=string_pb2.StringMatcher(exact=value))
    action = rc.RouteAction()
    if isinstance(cluster, str):
        action.cluster = cluster
    else:
        for name, weight in cluster.items():
            action.weighted_clusters.clusters.add(
                name=name, weight=wrappers_pb2.UInt32Value(value=weight)
            )
    if timeout is not None:
        action.timeout.CopyFrom(seconds(timeout))
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    if grpc_timeout_max is not None:
        action.max_stream_duration.grpc_timeout_header_max.CopyFrom(seconds(grpc_timeout_max))
    for name in mirrors:
        action.request_mirror_policies.add(cluster=name)
    out = rc.Route(match=match, route=action)
    if fault is not None:
        out.typed_per_filter_config["envoy.filters.http.fault"].CopyFrom(b.pack(fault))
    return out


def retry_policy(retry_on: str, num_retries: int, per_try: float | None = None) -> rc.RetryPolicy:
    """A retry policy with a 1 ms back-off (tests stay fast)."""
    policy = rc.RetryPolicy(
        retry_on=retry_on, num_retries=wrappers_pb2.UInt32Value(value=num_retries)
    )
    policy.retry_back_off.base_interval.CopyFrom(seconds(0.001))
    if per_try is not None:
        policy.per_try_timeout.CopyFrom(seconds(per_try))
    return policy


def grpc_fault(
    abort: int | None = None, delay: float | None = None, percent: int = 100
) -> fault_pb2.HTTPFault:
    """A fault filter config aborting with gRPC status ``abort`` and/or delaying."""
    fault = fault_pb2.HTTPFault()
    if abort is not None:
        fault.abort.grpc_status = abort
        fault.abort.percentage.numerator = percent
    if delay is not None:
        fault.delay.fixed_delay.CopyFrom(seconds(delay))
        fault.delay.percentage.numerator = percent
    return fault


def route_config(name: str, domains: Iterable[str], routes: Iterable[rc.Route]) -> Any:
    vhost = rc.VirtualHost(name="vh", domains=list(domains), routes=list(routes))
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost])


def cluster(
    name: str, lb_policy: str = "ROUND_ROBIN", max_requests: int | None = None
) -> cluster_pb2.Cluster:
    fields: dict[str, Any] = {"lb_policy": lb_policy, "connect_timeout": "5s"}
    if max_requests is not None:
        fields["circuit_breakers"] = {"thresholds": [{"max_requests": max_requests}]}
    return b.cluster(name, **fields)


def endpoints(name: str, addresses: Iterable[str]) -> endpoint_pb2.ClusterLoadAssignment:
    hosts = [(host, int(port)) for host, _, port in (a.rpartition(":") for a in addresses)]
    return b.endpoints(name, hosts, zone="z", region="r")


def service(
    target: str,
    routes: Sequence[rc.Route],
    clusters: dict[str, Sequence[str]],
    lb_policy: str = "ROUND_ROBIN",
    max_requests: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Listener ``target`` (host:port), its route config and EDS clusters, by type URL."""
    host = target.rsplit(":", 1)[0]
    rc_name = f"route-{target}"
    return {
        LISTENER_TYPE: {target: listener(target, rc_name)},
        ROUTE_TYPE: {rc_name: route_config(rc_name, [target, host], routes)},
        CLUSTER_TYPE: {c: cluster(c, lb_policy, max_requests) for c in clusters},
        ENDPOINT_TYPE: {c: endpoints(c, addrs) for c, addrs in clusters.items()},
    }


class StaticCache(VersionedSnapshotCache):
    """Serves hand-built resources instead of the translated config (``put`` replaces them)."""

    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.fixed = resources

    def set_resources(self, resources: Resources) -> Any:
        return super().set_resources(Resources(shared=self.fixed))

    def put(self, resources: dict[str, dict[str, Any]]) -> Any:
        self.fixed = resources
        return super().set_resources(Resources(shared=resources))
