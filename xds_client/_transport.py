"""The ADS transport seam: bidirectional request/response streams to a management server.

The transport knows nothing of resource types; the client knows nothing of gRPC. A
stream carries ``DiscoveryRequest``/``DiscoveryResponse`` (state of the world) or
``DeltaDiscoveryRequest``/``DeltaDiscoveryResponse`` (incremental).
"""

from __future__ import annotations

import queue
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
    ``unix:///path`` or ``unix:path``, ``dns:///host:port``.
    """

    def __init__(self) -> None:
        self._channels: dict[tuple[str, str], grpc.Channel] = {}

    def _stub(self, server: ServerConfig) -> Any:
        key = (server.server_uri, server.channel_creds_type)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _open_channel(server)
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)

    def connect(self, server: ServerConfig) -> AdsStream:
        return _GrpcStream(self._stub(server).StreamAggregatedResources)

    def connect_delta(self, server: ServerConfig) -> AdsStream:
        return _GrpcStream(self._stub(server).DeltaAggregatedResources)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


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
