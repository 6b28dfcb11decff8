"""Client Status Discovery Service: what this client holds, per resource.

``client_config`` builds an ``envoy.service.status.v3.ClientConfig``; ``CsdsServicer``
serves it to ``ClientStatusDiscoveryService`` callers (e.g. ``grpcdebug``)::

    from envoy.service.status.v3 import csds_pb2_grpc
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
        CsdsServicer(client), server)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import timestamp_pb2

from ._cache import ACKED, NACKED, WILDCARD

if TYPE_CHECKING:
    from ._client import XdsClient
    from ._connection import Connection

__all__ = ["CsdsServicer", "client_config"]

_CLIENT_STATUS = {
    "REQUESTED": dump_pb2.REQUESTED,
    "DOES_NOT_EXIST": dump_pb2.DOES_NOT_EXIST,
    "ACKED": dump_pb2.ACKED,
    "NACKED": dump_pb2.NACKED,
}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def client_config(node: Any, connections: Iterable[Connection]) -> Any:
    """Every resource of every connection, sorted by type URL and name."""
    configs = []
    for connection in connections:
        with connection.lock:
            for type_url, state in connection.states.items():
                for name, entry in state.entries.items():
                    if name == WILDCARD:
                        continue
                    config = csds_pb2.ClientConfig.GenericXdsConfig(
                        type_url=type_url,
                        name=name,
                        version_info=entry.version,
                        client_status=_CLIENT_STATUS[entry.status],
                    )
                    if entry.raw is not None:
                        config.xds_config.CopyFrom(entry.raw)
                        config.last_updated.CopyFrom(_timestamp(entry.updated))
                    if entry.status == ACKED:
                        config.config_status = csds_pb2.SYNCED
                    elif entry.status == NACKED:
                        config.config_status = csds_pb2.ERROR
                        state_ = config.error_state
                        state_.details = entry.error
                        state_.version_info = entry.error_version
                        state_.last_update_attempt.CopyFrom(_timestamp(entry.error_time))
                    configs.append(config)
    configs.sort(key=lambda c: (c.type_url, c.name))
    return csds_pb2.ClientConfig(node=node, generic_xds_configs=configs)


class CsdsServicer(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    """``ClientStatusDiscoveryService`` for one or more :class:`XdsClient` objects."""

    def __init__(self, *clients: XdsClient) -> None:
        self._clients = clients

    def _response(self) -> Any:
        return csds_pb2.ClientStatusResponse(config=[c.dump() for c in self._clients])

    def FetchClientStatus(self, request: Any, context: Any) -> Any:
        return self._response()

    def StreamClientStatus(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        for _ in requests:
            yield self._response()
