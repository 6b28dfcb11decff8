"""State-of-the-world ADS, without I/O: the requests to send and what a response means.

One ``SotwProtocol`` lives for one stream. It remembers the last nonce per type; the
last accepted version lives in the connection's :class:`TypeState` so that a new stream
re-sends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from ._cache import Notify, TypeState, decode_all

__all__ = ["INVALID_ARGUMENT", "SotwProtocol", "error_status"]

INVALID_ARGUMENT = 3
RESOURCE_WRAPPER = "type.googleapis.com/envoy.service.discovery.v3.Resource"
MAX_DETAIL = 4096


def error_status(errors: list[str]) -> status_pb2.Status:
    """The NACK error_detail: every problem, each naming the resource and the field."""
    message = "; ".join(errors)
    if len(message) > MAX_DETAIL:
        message = message[: MAX_DETAIL - 20] + f" ... ({len(errors)} errors)"
    return status_pb2.Status(code=INVALID_ARGUMENT, message=message)


class SotwProtocol:
    """DiscoveryRequest/DiscoveryResponse bookkeeping for one ADS stream."""

    delta = False

    def __init__(self, node: base_pb2.Node) -> None:
        self._node = node
        self._sent_node = False
        self._nonces: dict[str, str] = {}

    def _request(self, state: TypeState, error: list[str] | None = None) -> Any:
        type_url = state.rtype.type_url
        request = discovery_pb2.DiscoveryRequest(
            version_info=state.version,
            resource_names=state.subscribed(),
            type_url=type_url,
            response_nonce=self._nonces.get(type_url, ""),
        )
        if error:
            request.error_detail.CopyFrom(error_status(error))
        if not self._sent_node:
            request.node.CopyFrom(self._node)
            self._sent_node = True
        return request

    def start(self, states: Mapping[str, TypeState]) -> list[Any]:
        """The requests that open a stream: every type with subscriptions."""
        return [self._request(s) for s in states.values() if s.subscribed()]

    def subscription_changed(self, state: TypeState) -> Any | None:
        return self._request(state)

    def on_response(
        self, states: Mapping[str, TypeState], response: Any, *, ignore_deletion: bool
    ) -> tuple[list[Notify], Any | None, list[str]]:
        """Apply one DiscoveryResponse; returns notifications, the ACK/NACK, and errors."""
        type_url = response.type_url
        state = states.get(type_url)
        if state is None:
            errors = [f"type_url {type_url!r} was not subscribed on this stream"]
            nack = discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                response_nonce=response.nonce,
                error_detail=error_status(errors),
            )
            return [], nack, errors
        self._nonces[type_url] = response.nonce
        version = response.version_info
        decoded, failed, errors = decode_all(
            state.rtype, (_unwrap(a, version) for a in response.resources), state.reuse
        )
        notify: list[Notify] = []
        for d in decoded:
            notify += state.accept(d)
        for name, err in failed.items():
            notify += state.reject(name, err, version)
        if state.rtype.all_resources_required_in_sotw:
            present = {d.name for d in decoded} | failed.keys()
            for name in [n for n in state.entries if n not in present]:
                notify += state.remove(name, ignore_deletion=ignore_deletion)
        if not errors:
            state.version = version
        return notify, self._request(state, errors), errors


def _unwrap(resource: any_pb2.Any, version: str) -> tuple[any_pb2.Any, str, str]:
    """A SotW resource, possibly in an ``envoy.service.discovery.v3.Resource`` wrapper."""
    if resource.type_url != RESOURCE_WRAPPER:
        return resource, version, ""
    wrapper = discovery_pb2.Resource()
    try:
        wrapper.ParseFromString(resource.value)
    except DecodeError:
        return resource, version, ""  # decode_all reports the type mismatch
    return wrapper.resource, version, wrapper.name
