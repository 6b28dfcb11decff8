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

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from ._cache import CLUSTER_TYPE, LISTENER_TYPE, PUSH_ORDER, Snapshot
from ._events import AckEvent, EventLog

__all__ = ["WILDCARD_TYPES", "StreamState", "node_namespace"]

log = logging.getLogger(__name__)

#: Types where an empty first subscription (or ``*``) means "everything".
WILDCARD_TYPES = frozenset({LISTENER_TYPE, CLUSTER_TYPE})

_NONCE_PREFIX = secrets.token_hex(4)
_nonces = itertools.count(1)


def _next_nonce() -> str:
    return f"{_NONCE_PREFIX}-{next(_nonces)}"


def node_namespace(node: base_pb2.Node) -> str:
    """The node's namespace: metadata ``NAMESPACE``, else from an istio-style node id."""
    field_ = node.metadata.fields.get("NAMESPACE")
    if field_ is not None and field_.string_value:
        return str(field_.string_value)
    parts = node.id.split("~")
    if len(parts) == 4 and "." in parts[2]:
        return str(parts[2].rsplit(".", 1)[1])
    return "default"


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
        """Adopt a new snapshot; returns what changed for this stream, in push order."""
        self.snapshot = snapshot
        order = [t for t in PUSH_ORDER if t in self._subs]
        order += sorted(t for t in self._subs if t not in PUSH_ORDER)
        out: list[discovery_pb2.DiscoveryResponse] = []
        for type_url in order:
            response = self._respond(type_url, self._subs[type_url], subscribed=False)
            if response is not None:
                out.append(response)
        return out

    def _select(self, type_url: str, sub: _Subscription) -> dict[str, any_pb2.Any]:
        available = self.snapshot.resources(type_url, self.namespace)
        if sub.wildcard:
            return available
        return {name: available[name] for name in sorted(sub.names) if name in available}

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
        sub.sent = selected
        sub.nonce = _next_nonce()
        sub.version = self.snapshot.version
        return discovery_pb2.DiscoveryResponse(
            version_info=sub.version,
            nonce=sub.nonce,
            type_url=type_url,
            resources=list(selected.values()),
        )

    def _record(self, request: discovery_pb2.DiscoveryRequest, sub: _Subscription) -> None:
        nack = request.HasField("error_detail")
        detail = request.error_detail.message if nack else None
        if nack:
            log.warning(
                "node %s NACKed %s version %s: %s",
                self.node_id,
                request.type_url,
                sub.version,
                detail,
            )
        self.events.record(
            AckEvent(
                kind="NACK" if nack else "ACK",
                node_id=self.node_id,
                type_url=request.type_url,
                version=sub.version,
                nonce=sub.nonce,
                error_detail=detail,
            )
        )
