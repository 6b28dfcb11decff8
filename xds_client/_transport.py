"""The ADS transport seam: a bidirectional DiscoveryRequest/DiscoveryResponse stream.

The transport knows nothing of resource types; the client knows nothing of gRPC.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ._bootstrap import ServerConfig

__all__ = ["AdsStream", "AdsTransport", "GrpcAdsTransport", "StreamClosed"]


class StreamClosed(Exception):
    """The stream ended; ``str()`` says why."""


class AdsStream(Protocol):
    def send(self, request: discovery_pb2.DiscoveryRequest) -> None:
        """Queue a request; never blocks."""
        ...

    def responses(self) -> Iterator[discovery_pb2.DiscoveryResponse]:
        """Responses until the stream ends; raises StreamClosed on failure."""
        ...

    def close(self) -> None: ...


class AdsTransport(Protocol):
    def connect(self, server: ServerConfig) -> AdsStream:
        """Open a new ADS stream to ``server``."""
        ...

    def close(self) -> None: ...


class _GrpcStream:
    def __init__(self, channel: grpc.Channel) -> None:
        self._queue: queue.SimpleQueue[discovery_pb2.DiscoveryRequest | None] = queue.SimpleQueue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self._call = stub.StreamAggregatedResources(self._requests())

    def _requests(self) -> Iterator[discovery_pb2.DiscoveryRequest]:
        while (item := self._queue.get()) is not None:
            yield item

    def send(self, request: discovery_pb2.DiscoveryRequest) -> None:
        self._queue.put(request)

    def responses(self) -> Iterator[discovery_pb2.DiscoveryResponse]:
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
    """ADS over grpcio, one channel per management server, reused across streams."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, str], grpc.Channel] = {}

    def connect(self, server: ServerConfig) -> AdsStream:
        key = (server.server_uri, server.channel_creds_type)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _open_channel(server)
        return _GrpcStream(channel)

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
            return Path(path).read_bytes() if path else None

        creds = grpc.ssl_channel_credentials(
            read("ca_certificate_file"), read("private_key_file"), read("certificate_file")
        )
        return grpc.secure_channel(server.server_uri, creds, options)
    if server.channel_creds_type == "google_default":
        return grpc.secure_channel(server.server_uri, grpc.ssl_channel_credentials(), options)
    return grpc.insecure_channel(server.server_uri, options)
