"""The ADS transport seam: bidirectional request/response streams to a management server.

The transport knows nothing of resource types; the client knows nothing of gRPC. A
stream carries ``DiscoveryRequest``/``DiscoveryResponse`` (state of the world) or
``DeltaDiscoveryRequest``/``DeltaDiscoveryResponse`` (incremental).
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from ._bootstrap import ServerConfig

__all__ = ["AdsStream", "AdsTransport", "GrpcAdsTransport", "StreamClosed"]


class StreamClosed(Exception):
    """The stream ended; ``str()`` says why."""


class AdsStream(Protocol):
    def send(self, request: Any) -> None:
        """Queue a request; never blocks."""
        ...

    def responses(self) -> Iterator[Any]:
        """Responses until the stream ends; raises StreamClosed on failure."""
        ...

    def close(self) -> None: ...


class AdsTransport(Protocol):
    def connect(self, server: ServerConfig) -> AdsStream:
        """Open a new state-of-the-world ADS stream to ``server``."""
        ...

    def connect_delta(self, server: ServerConfig) -> AdsStream:
        """Open a new incremental (delta) ADS stream to ``server``."""
        ...

    def close(self) -> None: ...


class _GrpcStream:
    def __init__(self, method: Any) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call = method(self._requests())

    def _requests(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not None:
            yield item

    def send(self, request: Any) -> None:
        self._queue.put(request)

    def responses(self) -> Iterator[Any]:
        try:
            yield from self._call
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise StreamClosed(f"{code}: {details}") from None

    def close(self) -> None:
        self._queue.put(None)
        self._call.cancel()


class GrpcAdsTransport:
    """ADS over grpcio, one channel per management server, reused across streams.

    ``server_uri`` is anything grpcio accepts as a target: ``host:port``,
    ``unix:///path`` or ``unix:path``, ``dns:///host:port``. With ``tls`` channel
    credentials the files are re-checked every ``refresh_interval`` (default 600 s) when
    a stream opens; changed files get a new channel for that and later streams (streams
    already open keep theirs until they end, as TLS handshakes once per connection).
    """

    def __init__(self) -> None:
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._retired: list[grpc.Channel] = []

    def _stub(self, server: ServerConfig) -> Any:
        key = (server.server_uri, server.channel_creds_type)
        entry = self._channels.get(key)
        if entry is not None and entry.stale(server):
            self._retired.append(entry.channel)
            entry = None
        if entry is None:
            entry = self._channels[key] = _Channel(server)
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(entry.channel)

    def connect(self, server: ServerConfig) -> AdsStream:
        return _GrpcStream(self._stub(server).StreamAggregatedResources)

    def connect_delta(self, server: ServerConfig) -> AdsStream:
        return _GrpcStream(self._stub(server).DeltaAggregatedResources)

    def close(self) -> None:
        for entry in self._channels.values():
            entry.channel.close()
        for channel in self._retired:
            channel.close()
        self._channels.clear()
        self._retired.clear()


_TLS_FILES = ("ca_certificate_file", "certificate_file", "private_key_file")


class _Channel:
    """A channel and, for ``tls``, the state of the files it was built from."""

    def __init__(self, server: ServerConfig) -> None:
        self.tls = server.channel_creds_type == "tls"
        self.fingerprint = _fingerprint(server) if self.tls else ()
        self.refresh = _seconds(server.channel_creds_config.get("refresh_interval"))
        self.next_check = time.monotonic() + self.refresh
        self.channel = _open_channel(server)

    def stale(self, server: ServerConfig) -> bool:
        """Whether the tls files changed (checked at most every refresh_interval)."""
        if not self.tls or time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + self.refresh
        return _fingerprint(server) != self.fingerprint


def _fingerprint(server: ServerConfig) -> tuple[tuple[int, int], ...]:
    out = []
    for key in _TLS_FILES:
        path = server.channel_creds_config.get(key)
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        out.append((st.st_mtime_ns, st.st_size) if st else (0, 0))
    return tuple(out)


def _seconds(duration: Any) -> float:
    """A validated protobuf JSON duration (``"600s"``) in seconds; 600 if unset."""
    return float(str(duration)[:-1]) if duration else 600.0


def _open_channel(server: ServerConfig) -> grpc.Channel:
    options = [("grpc.keepalive_time_ms", 30_000), ("grpc.max_receive_message_length", -1)]
    if server.channel_creds_type == "tls":
        cfg = server.channel_creds_config

        def read(key: str) -> bytes | None:
            path = cfg.get(key)
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise StreamClosed(
                    f"{server.server_uri}: channel_creds tls {key} {path}: {exc.strerror}"
                ) from None

        creds = grpc.ssl_channel_credentials(
            read("ca_certificate_file"), read("private_key_file"), read("certificate_file")
        )
        return grpc.secure_channel(server.server_uri, creds, options)
    if server.channel_creds_type == "google_default":
        return grpc.secure_channel(server.server_uri, grpc.ssl_channel_credentials(), options)
    return grpc.insecure_channel(server.server_uri, options)
