"""The state machine of one state-of-the-world ADS stream, without any I/O.

:class:`StreamState` turns each ``DiscoveryRequest`` and each new cache
:class:`Snapshot` into the ``DiscoveryResponse`` messages to send, following the xDS
protocol: the first request carries the node; a request whose ``response_nonce``
matches the last response of its type is an ACK (or a NACK if ``error_detail`` is set),
recorded once per response;
a request with an older nonce is stale and ignored; a changed ``resource_names`` list is
a subscription change and is answered.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from ._cache import CLUSTER_TYPE, LISTENER_TYPE, PUSH_ORDER, ROUTE_TYPE, Snapshot
from ._events import AckEvent, EventLog
from ._views import NodeView, node_namespace, node_view

__all__ = [
    "WILDCARD_TYPES",
    "StreamState",
    "next_nonce",
    "node_namespace",
    "record_verdict",
]

log = logging.getLogger(__name__)

#: Types where an empty first subscription (or ``*``) means "everything".
WILDCARD_TYPES = frozenset({LISTENER_TYPE, CLUSTER_TYPE})

_NONCE_PREFIX = secrets.token_hex(4)
_nonces = itertools.count(1)


def next_nonce() -> str:
    """A nonce unique to this process."""
    return f"{_NONCE_PREFIX}-{next(_nonces)}"


@dataclass
class _Subscription:
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    nonce: str = ""
    version: str = ""
    sent: dict[str, any_pb2.Any] | None = None  # None: nothing sent yet
    judged: str = ""  # the nonce of the last response already ACKed or NACKed


@dataclass(eq=False)
class StreamState:
    """Subscriptions and last responses of one ADS stream; feed it requests and snapshots."""

    snapshot: Snapshot
    events: EventLog
    node_id: str = ""
    namespace: str = "default"
    view: NodeView = field(default_factory=NodeView)
    _node_seen: bool = False
    _subs: dict[str, _Subscription] = field(default_factory=dict)

    def subscriptions(self) -> dict[str, frozenset[str] | None]:
        """type_url -> subscribed names, or ``None`` for a wildcard subscription."""
        return {t: (None if s.wildcard else s.names) for t, s in self._subs.items()}

    def on_request(
        self, request: discovery_pb2.DiscoveryRequest
    ) -> list[discovery_pb2.DiscoveryResponse]:
        """Handle one request; returns the responses to send (zero or one)."""
        if not self._node_seen and request.HasField("node"):
            self._node_seen = True
            self.node_id = request.node.id
            self.namespace = node_namespace(request.node)
            self.view = node_view(request.node)
        type_url = request.type_url
        if not type_url:
            log.warning("node %s: request without type_url ignored", self.node_id)
            return []
        sub = self._subs.get(type_url)
        nonce = request.response_nonce
        if sub is not None and nonce and nonce != sub.nonce:
            log.debug("node %s: stale nonce %s for %s", self.node_id, nonce, type_url)
            return []
        if sub is not None and nonce and nonce != sub.judged:
            sub.judged = nonce
            self._record(request, sub)
        names = frozenset(request.resource_names)
        if sub is None:
            wildcard = "*" in names or (not names and type_url in WILDCARD_TYPES)
            sub = self._subs[type_url] = _Subscription()
        else:
            wildcard = "*" in names or (sub.wildcard and not names)
        names -= {"*"}
        initial = not nonce
        changed = names != sub.names or wildcard != sub.wildcard
        sub.names, sub.wildcard = names, wildcard
        if not (initial or changed):
            return []
        response = self._respond(type_url, sub, subscribed=True)
        return [response] if response is not None else []

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        """Adopt a new snapshot; returns what changed for this stream, in push order.

        The push is consistent: clusters are sent first, still holding the clusters
        that are going away, then endpoints, listeners and routes, and only then the
        final cluster list; so a client never holds a route naming a cluster it
        does not have.
        """
        self.snapshot = snapshot
        order = [t for t in PUSH_ORDER if t in self._subs]
        order += sorted(t for t in self._subs if t not in PUSH_ORDER)
        out: list[discovery_pb2.DiscoveryResponse] = []
        clusters = self._subs.get(CLUSTER_TYPE)
        removing = False
        if clusters is not None and clusters.sent is not None:
            new = self._select(CLUSTER_TYPE, clusters)
            removing = bool(set(clusters.sent) - set(new))
            if removing:
                merged = {**clusters.sent, **new}
                if merged != clusters.sent:
                    out.append(self._response(CLUSTER_TYPE, clusters, merged))
                order.remove(CLUSTER_TYPE)
        for type_url in order:
            response = self._respond(type_url, self._subs[type_url], subscribed=False)
            if response is not None:
                out.append(response)
        if removing and clusters is not None:
            response = self._respond(CLUSTER_TYPE, clusters, subscribed=False)
            if response is not None:
                out.append(response)
        return out

    def _select(self, type_url: str, sub: _Subscription) -> dict[str, any_pb2.Any]:
        available = self.snapshot.resources_for(self.view, type_url)
        if sub.wildcard:
            return available
        names = sub.names
        routes = self._subs.get(ROUTE_TYPE)
        if type_url == CLUSTER_TYPE and routes is not None:
            # Also send the clusters this stream's routes name, before the client asks:
            # a response to an older subscription must not look like their deletion.
            names = names | self.snapshot.route_clusters(self.view, routes.names)
        return {name: available[name] for name in sorted(names) if name in available}

    def _respond(
        self, type_url: str, sub: _Subscription, *, subscribed: bool
    ) -> discovery_pb2.DiscoveryResponse | None:
        selected = self._select(type_url, sub)
        state_of_world = type_url in WILDCARD_TYPES  # absence means deletion
        if subscribed:
            if not state_of_world and not selected:
                return None
        elif selected == sub.sent or (not state_of_world and not selected):
            return None
        return self._response(type_url, sub, selected)

    def _response(
        self, type_url: str, sub: _Subscription, selected: dict[str, any_pb2.Any]
    ) -> discovery_pb2.DiscoveryResponse:
        sub.sent = selected
        sub.nonce = next_nonce()
        sub.version = self.snapshot.version
        return discovery_pb2.DiscoveryResponse(
            version_info=sub.version,
            nonce=sub.nonce,
            type_url=type_url,
            resources=list(selected.values()),
        )

    def _record(self, request: discovery_pb2.DiscoveryRequest, sub: _Subscription) -> None:
        detail = request.error_detail.message if request.HasField("error_detail") else None
        record_verdict(self.events, self.node_id, request.type_url, sub.version, sub.nonce, detail)


def record_verdict(
    events: EventLog,
    node_id: str,
    type_url: str,
    version: str,
    nonce: str,
    error_detail: str | None,
) -> None:
    """Record a client's ACK (``error_detail`` None) or NACK of one response."""
    if error_detail is not None:
        log.warning("node %s NACKed %s version %s: %s", node_id, type_url, version, error_detail)
    events.record(
        AckEvent(
            kind="NACK" if error_detail is not None else "ACK",
            node_id=node_id,
            type_url=type_url,
            version=version,
            nonce=nonce,
            error_detail=error_detail,
        )
    )
