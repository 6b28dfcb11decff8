"""A scripted ADS server for tests: a real gRPC server on 127.0.0.1 that serves state of
the world and delta streams, either automatically from resources you set, or by
sending exactly the responses you script (malformed ones included).

::

    with ScriptedAdsServer() as server:
        server.set_resources(LISTENER.type_url, {"a:80": any_listener})  # auto mode
        client = XdsClient(load_bootstrap(server.bootstrap()))
        ...
        server.auto = False                      # scripted: nothing is sent unless pushed
        server.push(DiscoveryResponse(...))      # to every open stream
        server.wait_for(lambda e: e.kind == "NACK")
        server.kill_streams()                    # a server failing mid-stream

Every request is recorded as an :class:`AdsEvent` (``REQUEST``, ``ACK`` or ``NACK``).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

__all__ = ["AdsEvent", "ScriptedAdsServer"]

_WILDCARD_TYPES = frozenset(
    {
        "type.googleapis.com/envoy.config.listener.v3.Listener",
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    }
)
_CLOSE = object()


@dataclass(frozen=True, slots=True)
class AdsEvent:
    """One request the server received. ``kind`` is REQUEST (a subscription), ACK or
    NACK (a reply to the response whose nonce it carries)."""

    stream: int
    kind: str
    type_url: str
    nonce: str
    version: str
    names: tuple[str, ...]
    error_detail: str | None
    request: Any = field(repr=False, compare=False)


class _Stream:
    def __init__(self, ident: int, delta: bool) -> None:
        self.ident = ident
        self.delta = delta
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.names: dict[str, set[str]] = {}
        self.wildcard: set[str] = set()
        self.nonces: dict[str, str] = {}
        self.versions: dict[str, str] = {}  # type -> version of the last response sent
        self.sent: dict[str, dict[str, bytes]] = {}  # type -> name -> serialized resource
        self.abort_code: grpc.StatusCode | None = None


class ScriptedAdsServer:
    """A real ADS server for tests: on ``127.0.0.1`` (``port`` 0: ephemeral), or on a
    Unix socket (``unix_socket``); TLS with ``credentials``
    (``grpc.ssl_server_credentials``)."""

    def __init__(
        self,
        *,
        port: int = 0,
        unix_socket: str = "",
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.auto = True
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._resources: dict[str, dict[str, any_pb2.Any]] = {}
        self._version = 0
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self.events: list[AdsEvent] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), self._server)
        bind = f"unix:{unix_socket}" if unix_socket else f"127.0.0.1:{port}"
        if credentials is None:
            self.port = self._server.add_insecure_port(bind)
        else:
            self.port = self._server.add_secure_port(bind, credentials)
        self._address = bind if unix_socket else f"127.0.0.1:{self.port}"
        self._server.start()

    @property
    def address(self) -> str:
        """The ``server_uri`` to put in a bootstrap."""
        return self._address

    def bootstrap(self, node_id: str = "test-node", **server: Any) -> dict[str, Any]:
        """A bootstrap dict pointing at this server; ``server`` adds xds_servers fields."""
        entry = {"server_uri": self.address, "channel_creds": [{"type": "insecure"}], **server}
        return {"xds_servers": [entry], "node": {"id": node_id}}

    # -- resources (auto mode) ---------------------------------------------------------
    def set_resources(self, type_url: str, resources: Mapping[str, any_pb2.Any]) -> str:
        """Replace every resource of ``type_url``; open streams get what changed.
        Returns the new version."""
        with self._cond:
            self._version += 1
            self._resources[type_url] = dict(resources)
            if self.auto:
                for stream in self._streams.values():
                    self._answer(stream, type_url, push=True)
            return str(self._version)

    # -- scripting ----------------------------------------------------------------------
    def push(self, response: Any, stream: int | None = None) -> None:
        """Send ``response`` as is to one stream (by id) or to every open stream."""
        with self._cond:
            targets = [self._streams[stream]] if stream else list(self._streams.values())
            for s in targets:
                s.nonces[response.type_url] = response.nonce
                s.versions[response.type_url] = getattr(
                    response, "system_version_info" if s.delta else "version_info"
                )
                s.out.put(response)

    def next_nonce(self) -> str:
        return f"n{next(self._nonces)}"

    def kill_streams(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """End every open stream with ``code``, as a failing server would."""
        with self._cond:
            for s in self._streams.values():
                s.abort_code = code
                s.out.put(_CLOSE)

    def stream_ids(self) -> list[int]:
        with self._cond:
            return sorted(self._streams)

    def wait_for(self, predicate: Callable[[AdsEvent], bool], timeout: float = 10.0) -> AdsEvent:
        """The first recorded event matching ``predicate``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching ADS event; saw {self.events!r}"[:4000])
                self._cond.wait(remaining)

    def wait_for_streams(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._streams) < count:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{len(self._streams)} streams open, wanted {count}")

    def stop(self, grace: float | None = None) -> None:
        self.kill_streams()
        self._server.stop(grace).wait()

    def __enter__(self) -> ScriptedAdsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- stream handling (gRPC threads) ----------------------------------------------------
    def _serve(self, requests: Iterator[Any], context: Any, delta: bool) -> Iterator[Any]:
        with self._cond:
            stream = _Stream(next(self._ids), delta)
            self._streams[stream.ident] = stream
            self._cond.notify_all()
        reader = threading.Thread(
            target=self._read, args=(stream, requests), name="ads-reader", daemon=True
        )
        reader.start()
        try:
            while context.is_active():
                try:
                    item = stream.out.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _CLOSE:
                    break
                yield item
        finally:
            with self._cond:
                self._streams.pop(stream.ident, None)
                self._cond.notify_all()
        if stream.abort_code is not None:
            context.abort(stream.abort_code, "killed by the test")

    def _read(self, stream: _Stream, requests: Iterator[Any]) -> None:
        try:
            for request in requests:
                with self._cond:
                    self._record(stream, request)
                    self._cond.notify_all()
        except Exception:  # the stream ended under us
            pass
        stream.out.put(_CLOSE)

    def _record(self, stream: _Stream, request: Any) -> None:
        type_url = request.type_url
        nonce = request.response_nonce
        nack = request.HasField("error_detail")
        if nonce and nonce == stream.nonces.get(type_url):
            kind = "NACK" if nack else "ACK"
        else:
            kind = "REQUEST"
        if stream.delta:
            names = tuple(request.resource_names_subscribe)
            version = stream.versions.get(type_url, "")
        else:
            names = tuple(request.resource_names)
            version = request.version_info if kind == "ACK" else stream.versions.get(type_url, "")
        detail = request.error_detail.message if nack else None
        self.events.append(
            AdsEvent(stream.ident, kind, type_url, nonce, version, names, detail, request)
        )
        if not type_url:
            return
        changed = self._subscribe(stream, request)
        stale = bool(nonce) and nonce != stream.nonces.get(type_url)
        if self.auto and not stale and (changed or not nonce):
            self._answer(stream, type_url, push=False)

    def _subscribe(self, stream: _Stream, request: Any) -> bool:
        type_url = request.type_url
        names = stream.names.setdefault(type_url, set())
        before = (set(names), type_url in stream.wildcard)
        if stream.delta:
            names |= set(request.resource_names_subscribe)
            names -= set(request.resource_names_unsubscribe)
        else:
            first = type_url not in stream.nonces and not names
            names.clear()
            names |= set(request.resource_names)
            if first and not names and type_url in _WILDCARD_TYPES:
                names.add("*")
        if "*" in names:
            stream.wildcard.add(type_url)
        else:
            stream.wildcard.discard(type_url)
        return before != (set(names), type_url in stream.wildcard)

    def _answer(self, stream: _Stream, type_url: str, *, push: bool) -> None:
        available = self._resources.get(type_url, {})
        wanted = stream.names.get(type_url)
        if wanted is None:
            return
        if type_url in stream.wildcard:
            selected = dict(available)
        else:
            selected = {n: a for n, a in available.items() if n in wanted}
        version = str(self._version)
        nonce = self.next_nonce()
        if stream.delta:
            sent = stream.sent.setdefault(type_url, {})
            response = discovery_pb2.DeltaDiscoveryResponse(
                type_url=type_url, nonce=nonce, system_version_info=version
            )
            for name, res in sorted(selected.items()):
                if sent.get(name) != res.SerializeToString():
                    response.resources.add(name=name, version=version, resource=res)
                    sent[name] = res.SerializeToString()
            for name in sorted(set(sent) - set(selected)):
                if "*" in wanted or name in wanted or push:
                    response.removed_resources.append(name)
                del sent[name]
            if not response.resources and not response.removed_resources:
                return
        else:
            all_required = type_url in _WILDCARD_TYPES
            if not selected and not all_required and not push:
                return
            response = discovery_pb2.DiscoveryResponse(
                type_url=type_url,
                nonce=nonce,
                version_info=version,
                resources=[selected[n] for n in sorted(selected)],
            )
        stream.nonces[type_url] = nonce
        stream.versions[type_url] = version
        stream.out.put(response)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, server: ScriptedAdsServer) -> None:
        self._server = server

    def StreamAggregatedResources(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        return self._server._serve(requests, context, delta=False)

    def DeltaAggregatedResources(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        return self._server._serve(requests, context, delta=True)
