"""The state machine of one incremental (delta) ADS stream, without any I/O.

:class:`DeltaStreamState` keeps, per type, the client's subscription and the version of
every resource the client holds (a digest of the resource, so identical content is
never resent, including after a reconnect with ``initial_resource_versions``). Each
request or new snapshot yields the ``DeltaDiscoveryResponse`` messages to send: changed
resources, and names in ``removed_resources`` when a resource the client holds (or
asked for) does not exist. Pushes follow the same order as state of the world, with
cluster removals last so no route names a cluster the client has dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from ._cache import CLUSTER_TYPE, PUSH_ORDER, Snapshot
from ._events import EventLog
from ._stream import WILDCARD_TYPES, next_nonce, record_verdict
from ._views import NodeView, node_namespace, node_view

__all__ = ["DeltaStreamState", "resource_version"]


def resource_version(resource: any_pb2.Any) -> str:
    """A short digest of a packed resource: equal content, equal version."""
    return hashlib.sha256(resource.value).hexdigest()[:16]


@dataclass
class _DeltaSubscription:
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    known: dict[str, str] = field(default_factory=dict)  # name -> version the client has
    nonce: str = ""
    version: str = ""


@dataclass(eq=False)
class DeltaStreamState:
    """Subscriptions and client-held versions of one delta ADS stream."""

    snapshot: Snapshot
    events: EventLog
    node_id: str = ""
    namespace: str = "default"
    view: NodeView = field(default_factory=NodeView)
    _node_seen: bool = False
    _subs: dict[str, _DeltaSubscription] = field(default_factory=dict)

    def on_request(
        self, request: discovery_pb2.DeltaDiscoveryRequest
    ) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        """Handle one request; returns the responses to send (zero or one)."""
        if not self._node_seen and request.HasField("node"):
            self._node_seen = True
            self.node_id = request.node.id
            self.namespace = node_namespace(request.node)
            self.view = node_view(request.node)
        type_url = request.type_url
        if not type_url:
            return []
        sub = self._subs.get(type_url)
        first = sub is None
        if sub is None:
            sub = self._subs[type_url] = _DeltaSubscription()
            sub.known.update(request.initial_resource_versions)
            names = set(request.resource_names_subscribe)
            sub.wildcard = "*" in names or (not names and type_url in WILDCARD_TYPES)
        if request.response_nonce:
            if request.response_nonce == sub.nonce:
                detail = request.error_detail.message if request.HasField("error_detail") else None
                record_verdict(self.events, self.node_id, type_url, sub.version, sub.nonce, detail)
            elif not request.resource_names_subscribe and not request.resource_names_unsubscribe:
                return []  # a stale ACK
        subscribe = set(request.resource_names_subscribe)
        unsubscribe = set(request.resource_names_unsubscribe)
        if "*" in subscribe:
            sub.wildcard = True
        if "*" in unsubscribe:
            sub.wildcard = False
        sub.names |= subscribe - {"*"}
        sub.names -= unsubscribe
        for name in unsubscribe:
            sub.known.pop(name, None)
        if not (first or subscribe or unsubscribe):
            return []
        response = self._respond(type_url, sub, asked=subscribe - {"*"}, initial=first)
        return [response] if response is not None else []

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        """Adopt a new snapshot; returns the changes for this stream, removals of
        clusters last."""
        self.snapshot = snapshot
        order = [t for t in PUSH_ORDER if t in self._subs]
        order += sorted(t for t in self._subs if t not in PUSH_ORDER)
        out: list[discovery_pb2.DeltaDiscoveryResponse] = []
        for type_url in order:
            keep = type_url == CLUSTER_TYPE
            response = self._respond(type_url, self._subs[type_url], keep_removed=keep)
            if response is not None:
                out.append(response)
        clusters = self._subs.get(CLUSTER_TYPE)
        if clusters is not None:
            response = self._respond(CLUSTER_TYPE, clusters)
            if response is not None:
                out.append(response)
        return out

    def _respond(
        self,
        type_url: str,
        sub: _DeltaSubscription,
        *,
        asked: set[str] | None = None,
        initial: bool = False,
        keep_removed: bool = False,
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        available = self.snapshot.resources_for(self.view, type_url)
        wanted = set(available) if sub.wildcard else set(sub.names) & set(available)
        if sub.wildcard:
            wanted |= set(sub.names) & set(available)
        changed = []
        for name in sorted(wanted):
            version = resource_version(available[name])
            if sub.known.get(name) != version:
                changed.append(
                    discovery_pb2.Resource(name=name, version=version, resource=available[name])
                )
                sub.known[name] = version
        removed: list[str] = []
        if not keep_removed:
            removed = sorted(n for n in sub.known if n not in wanted)
            removed += sorted(n for n in (asked or set()) if n not in available)
            for name in removed:
                sub.known.pop(name, None)
        # Pushes only carry news; an initial wildcard request is always answered.
        answer = asked is not None and bool(asked or (initial and sub.wildcard))
        if not changed and not removed and not answer:
            return None
        sub.nonce = next_nonce()
        sub.version = self.snapshot.version
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=sub.version,
            type_url=type_url,
            resources=changed,
            removed_resources=sorted(set(removed)),
            nonce=sub.nonce,
        )
