"""Which SDS secrets a stream may see: the workload identity only to its owner.

An Envoy node names its identity in its node metadata (``NAMESPACE``,
``SERVICE_ACCOUNT``), but metadata is whatever the caller writes. A stream is served
Secret ``default`` (a certificate and its private key) only if the stream itself was
authenticated as that identity (mTLS with a certificate the CA issued, or a bootstrap
token, see :mod:`meshlib.controlplane.ca`); ``ROOTCA`` holds only the public root and is
served to every stream. A withheld secret is not an error for the client (it gets no
resource, as for a name that does not exist); the control plane logs it once per stream.
"""

from __future__ import annotations

import logging

from google.protobuf import any_pb2

from ._views import NodeView

__all__ = ["SECRET_TYPE", "authorized_secrets", "view_identity"]

log = logging.getLogger(__name__)

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_PUBLIC = frozenset({"ROOTCA"})


def view_identity(view: NodeView, trust_domain: str = "cluster.local") -> str:
    """The SPIFFE ID a node's metadata claims."""
    return f"spiffe://{trust_domain}/ns/{view.namespace}/sa/{view.service_account}"


def authorized_secrets(
    available: dict[str, any_pb2.Any],
    view: NodeView,
    identity: str | None,
    node_id: str,
    *,
    warned: set[str],
) -> dict[str, any_pb2.Any]:
    """``available`` less the secrets this stream's ``identity`` may not have.

    ``warned`` (per stream) holds the reasons already logged, so each is logged once.
    """
    claimed = view_identity(view)
    if identity == claimed:
        return available
    kept = {name: res for name, res in available.items() if name in _PUBLIC}
    if len(kept) != len(available):
        reason = (
            f"an unauthenticated stream claims {claimed}"
            if identity is None
            else f"the stream is authenticated as {identity}, its node claims {claimed}"
        )
        if reason not in warned:
            warned.add(reason)
            log.warning("node %s: SDS secrets withheld: %s", node_id, reason)
    return kept
