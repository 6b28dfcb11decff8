"""Incremental (delta) ADS, without I/O: subscribe/unsubscribe diffs, per-resource
versions, removals, and ACK/NACK by nonce.

One ``DeltaProtocol`` lives for one stream; on a new stream every subscription is sent
again with ``initial_resource_versions`` of the resources the client still holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from ._cache import WILDCARD, Notify, TypeState, decode_all
from ._sotw import error_status

__all__ = ["DeltaProtocol"]


class DeltaProtocol:
    """DeltaDiscoveryRequest/DeltaDiscoveryResponse bookkeeping for one ADS stream."""

    delta = True

    def __init__(self, node: base_pb2.Node) -> None:
        self._node = node
        self._sent_node = False
        self._sent: dict[str, set[str]] = {}  # type_url -> names subscribed on this stream

    def _new(self, type_url: str) -> Any:
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
        if not self._sent_node:
            request.node.CopyFrom(self._node)
            self._sent_node = True
        return request

    def start(self, states: Mapping[str, TypeState]) -> list[Any]:
        out = []
        for state in states.values():
            names = state.subscribed()
            if not names:
                continue
            request = self._new(state.rtype.type_url)
            request.resource_names_subscribe.extend(names)
            for name, entry in state.entries.items():
                if name != WILDCARD and entry.resource is not None and entry.version:
                    request.initial_resource_versions[name] = entry.version
            self._sent[state.rtype.type_url] = set(names)
            out.append(request)
        return out

    def subscription_changed(self, state: TypeState) -> Any | None:
        type_url = state.rtype.type_url
        sent = self._sent.setdefault(type_url, set())
        wanted = set(state.subscribed())
        add, drop = sorted(wanted - sent), sorted(sent - wanted)
        if not add and not drop:
            return None
        request = self._new(type_url)
        request.resource_names_subscribe.extend(add)
        request.resource_names_unsubscribe.extend(drop)
        self._sent[type_url] = wanted
        return request

    def on_response(
        self, states: Mapping[str, TypeState], response: Any, *, ignore_deletion: bool
    ) -> tuple[list[Notify], Any | None, list[str]]:
        type_url = response.type_url
        state = states.get(type_url)
        reply = self._new(type_url)
        reply.response_nonce = response.nonce
        if state is None:
            errors = [f"type_url {type_url!r} was not subscribed on this stream"]
            reply.error_detail.CopyFrom(error_status(errors))
            return [], reply, errors
        items: list[tuple[any_pb2.Any, str, str]] = []
        missing: list[str] = []
        for i, r in enumerate(response.resources):
            if not r.HasField("resource"):
                missing.append(
                    f"{state.rtype.type_name} {r.name!r}: resources[{i}].resource: is required"
                )
                continue
            items.append((r.resource, r.version, r.name))
        decoded, failed, errors = decode_all(state.rtype, items, state.reuse)
        errors = missing + errors
        notify: list[Notify] = []
        for d in decoded:
            notify += state.accept(d)
        versions = {r.name: r.version for r in response.resources}
        for name, err in failed.items():
            notify += state.reject(name, err, versions.get(name, response.system_version_info))
        for name in response.removed_resources:
            notify += state.remove(name, ignore_deletion=ignore_deletion)
        if errors:
            reply.error_detail.CopyFrom(error_status(errors))
        return notify, reply, errors
