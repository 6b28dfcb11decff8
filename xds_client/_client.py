"""XdsClient: one ADS stream (state of the world) on its own thread, driven by watchers."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from ._bootstrap import Bootstrap, Node
from ._transport import AdsStream, AdsTransport, GrpcAdsTransport, StreamClosed
from ._watchers import ResourceDoesNotExist, ResourceWatcher
from .resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG, ResourceError, ResourceType

__all__ = ["XdsClient"]

log = logging.getLogger("xds_client")
R = TypeVar("R")
_Notify = Callable[[], None]

USER_AGENT = "meshlib-xds-client"
DOES_NOT_EXIST_TIMEOUT = 15.0
BACKOFF_BASE, BACKOFF_MAX, BACKOFF_MULTIPLIER, BACKOFF_JITTER = 1.0, 30.0, 1.6, 0.2
INVALID_ARGUMENT = 3


@dataclass(eq=False)
class _Entry:
    """What the client knows of one subscribed resource."""

    watchers: list[ResourceWatcher[Any]] = field(default_factory=list)
    resource: Any = None
    version: str = ""
    status: str = "REQUESTED"  # REQUESTED, ACKED, NACKED, DOES_NOT_EXIST
    error: str = ""
    timer: threading.Timer | None = None


@dataclass(eq=False)
class _TypeState:
    rtype: ResourceType[Any]
    entries: dict[str, _Entry] = field(default_factory=dict)
    version: str = ""
    nonce: str = ""


class XdsClient:
    """A strict xDS client. Watch resources by type and name; get validated models.

    The client runs one ADS stream on a daemon thread, reconnects with jittered
    exponential backoff, and re-subscribes with the last accepted versions. Cached
    resources keep serving while it is disconnected.
    """

    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        transport: AdsTransport | None = None,
        resource_types: tuple[ResourceType[Any], ...] = (
            LISTENER,
            ROUTE_CONFIG,
            CLUSTER,
            ENDPOINTS,
        ),
        does_not_exist_timeout: float = DOES_NOT_EXIST_TIMEOUT,
    ) -> None:
        self.bootstrap = bootstrap
        self._transport = transport or GrpcAdsTransport()
        self._types = {t.type_url: _TypeState(t) for t in resource_types}
        self._dne_timeout = does_not_exist_timeout
        self._lock = threading.RLock()
        self._stream: AdsStream | None = None
        self._sent_node = False
        self._stopped = threading.Event()
        self._node = _node_proto(bootstrap.node)
        self._thread = threading.Thread(target=self._run, name="xds-client", daemon=True)
        self._thread.start()

    # -- public API -------------------------------------------------------------------
    def watch(
        self, rtype: ResourceType[R], name: str, watcher: ResourceWatcher[R]
    ) -> Callable[[], None]:
        """Subscribe ``watcher`` to resource ``name``; returns a function that cancels it."""
        notify: list[_Notify] = []
        with self._lock:
            state = self._state(rtype)
            entry = state.entries.get(name)
            if entry is None:
                entry = state.entries[name] = _Entry()
                self._send_request(state)
                self._start_timer(state, name, entry)
            entry.watchers.append(watcher)
            if entry.resource is not None:
                res = entry.resource
                notify.append(lambda: watcher.on_resource_changed(name, res))
            elif entry.status == "DOES_NOT_EXIST":
                notify.append(lambda: watcher.on_resource_error(name, _dne(rtype, name)))
        _run_all(notify)

        def cancel() -> None:
            with self._lock:
                current = state.entries.get(name)
                if current is None or watcher not in current.watchers:
                    return
                current.watchers.remove(watcher)
                if not current.watchers:
                    if current.timer:
                        current.timer.cancel()
                    del state.entries[name]
                    self._send_request(state)

        return cancel

    def close(self) -> None:
        """End the stream and its thread."""
        self._stopped.set()
        with self._lock:
            stream = self._stream
            for state in self._types.values():
                for entry in state.entries.values():
                    if entry.timer:
                        entry.timer.cancel()
        if stream is not None:
            stream.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._transport.close()

    def __enter__(self) -> XdsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stream -----------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        server = self.bootstrap.xds_servers[0]
        while not self._stopped.is_set():
            try:
                stream = self._transport.connect(server)
            except Exception as exc:  # a transport may fail to build its channel
                log.warning("xDS server %s: cannot connect: %s", server.server_uri, exc)
                stream = None
            if stream is not None:
                with self._lock:
                    self._stream, self._sent_node = stream, False
                    for state in self._types.values():
                        if state.entries:
                            self._send_request(state)
                            for name, entry in state.entries.items():
                                self._start_timer(state, name, entry)
                try:
                    for response in stream.responses():
                        attempt = 0
                        self._handle(response)
                    reason: Exception = StreamClosed("server closed the stream")
                except StreamClosed as exc:
                    reason = exc
                finally:
                    with self._lock:
                        self._stream = None
                    stream.close()
                if self._stopped.is_set():
                    return
                log.warning("xDS stream to %s ended: %s", server.server_uri, reason)
                self._ambient_all(reason)
            delay = min(BACKOFF_MAX, BACKOFF_BASE * BACKOFF_MULTIPLIER**attempt)
            delay *= 1 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
            attempt += 1
            self._stopped.wait(delay)

    def _handle(self, response: discovery_pb2.DiscoveryResponse) -> None:
        notify: list[_Notify] = []
        with self._lock:
            state = self._types.get(response.type_url)
            if state is None:
                self._nack_unknown(response)
                return
            rtype = state.rtype
            decoded: dict[str, Any] = {}
            errors: list[str] = []
            failed: dict[str, str] = {}
            for resource in response.resources:
                try:
                    name, model = rtype.decode(resource)
                except ResourceError as exc:
                    errors.append(str(exc))
                    if exc.name:
                        failed[exc.name] = str(exc)
                    continue
                if name in decoded:
                    err = f"{rtype.type_name} {name!r}: duplicate resource name in one response"
                    errors.append(err)
                    failed[name] = err
                    continue
                decoded[name] = model
            for name, model in decoded.items():
                entry = state.entries.get(name)
                if entry is None or name in failed:
                    continue
                self._cancel_timer(entry)
                changed = entry.resource != model
                entry.resource, entry.version, entry.status, entry.error = (
                    model,
                    response.version_info,
                    "ACKED",
                    "",
                )
                if changed:
                    notify += [_bind_changed(w, name, model) for w in entry.watchers]
            for name, err in failed.items():
                entry = state.entries.get(name)
                if entry is None:
                    continue
                self._cancel_timer(entry)
                entry.status, entry.error = "NACKED", err
                notify += self._error_notices(
                    entry, name, ResourceError(rtype.type_name, name, "", err)
                )
            if rtype.all_resources_required_in_sotw:
                server = self.bootstrap.xds_servers[0]
                for name, entry in state.entries.items():
                    if name in decoded or name in failed:
                        continue
                    if entry.resource is not None and server.ignore_resource_deletion:
                        continue
                    self._cancel_timer(entry)
                    entry.resource, entry.status = None, "DOES_NOT_EXIST"
                    notify += [_bind_error(w, name, _dne(rtype, name)) for w in entry.watchers]
            state.nonce = response.nonce
            if errors:
                detail = "; ".join(errors)
                log.warning(
                    "NACK %s version %s: %s", rtype.type_name, response.version_info, detail
                )
                self._send_request(state, error=detail)
            else:
                state.version = response.version_info
                self._send_request(state)
        _run_all(notify)

    def _nack_unknown(self, response: discovery_pb2.DiscoveryResponse) -> None:
        if self._stream is None:
            return
        self._stream.send(
            discovery_pb2.DiscoveryRequest(
                type_url=response.type_url,
                response_nonce=response.nonce,
                error_detail=status_pb2.Status(
                    code=INVALID_ARGUMENT, message=f"unsupported type_url {response.type_url}"
                ),
            )
        )

    # -- helpers (called with the lock held) -------------------------------------------
    def _state(self, rtype: ResourceType[Any]) -> _TypeState:
        state = self._types.get(rtype.type_url)
        if state is None:
            raise ValueError(f"resource type {rtype.type_url} is not registered with this client")
        return state

    def _send_request(self, state: _TypeState, error: str = "") -> None:
        if self._stream is None:
            return
        request = discovery_pb2.DiscoveryRequest(
            version_info=state.version,
            resource_names=sorted(state.entries),
            type_url=state.rtype.type_url,
            response_nonce=state.nonce,
        )
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT, message=error))
        if not self._sent_node:
            request.node.CopyFrom(self._node)
            self._sent_node = True
        self._stream.send(request)

    def _start_timer(self, state: _TypeState, name: str, entry: _Entry) -> None:
        if self._stream is None or entry.resource is not None or entry.status != "REQUESTED":
            return
        self._cancel_timer(entry)
        timer = threading.Timer(self._dne_timeout, self._on_timer, (state, name, entry))
        timer.daemon = True
        entry.timer = timer
        timer.start()

    @staticmethod
    def _cancel_timer(entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def _on_timer(self, state: _TypeState, name: str, entry: _Entry) -> None:
        with self._lock:
            if state.entries.get(name) is not entry or entry.resource is not None:
                return
            if entry.status != "REQUESTED" or self._stream is None:
                return
            entry.status, entry.timer = "DOES_NOT_EXIST", None
            notify = [_bind_error(w, name, _dne(state.rtype, name)) for w in entry.watchers]
        _run_all(notify)

    def _error_notices(self, entry: _Entry, name: str, error: Exception) -> list[_Notify]:
        if entry.resource is not None:
            return [_bind_ambient(w, name, error) for w in entry.watchers]
        return [_bind_error(w, name, error) for w in entry.watchers]

    def _ambient_all(self, error: Exception) -> None:
        with self._lock:
            notify = [
                _bind_ambient(w, name, error)
                for state in self._types.values()
                for name, entry in state.entries.items()
                for w in entry.watchers
            ]
        _run_all(notify)


def _dne(rtype: ResourceType[Any], name: str) -> ResourceDoesNotExist:
    return ResourceDoesNotExist(f"{rtype.type_name} {name!r} does not exist")


def _bind_changed(w: ResourceWatcher[Any], name: str, model: Any) -> _Notify:
    return lambda: w.on_resource_changed(name, model)


def _bind_error(w: ResourceWatcher[Any], name: str, error: Exception) -> _Notify:
    return lambda: w.on_resource_error(name, error)


def _bind_ambient(w: ResourceWatcher[Any], name: str, error: Exception) -> _Notify:
    return lambda: w.on_ambient_error(name, error)


def _run_all(notify: list[_Notify]) -> None:
    for fn in notify:
        try:
            fn()
        except Exception:  # a watcher's bug must not kill the xDS thread
            log.exception("xDS watcher raised")


def _node_proto(node: Node) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update(dict(node.metadata))
    msg = base_pb2.Node(
        id=node.id,
        cluster=node.cluster,
        metadata=metadata,
        user_agent_name=USER_AGENT,
        user_agent_version=_version(),
    )
    msg.locality.region = node.locality.region
    msg.locality.zone = node.locality.zone
    msg.locality.sub_zone = node.locality.sub_zone
    return msg


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("meshlib")
    except Exception:
        return "0"
