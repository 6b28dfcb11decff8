"""Serving with mesh mTLS: server contexts from the certificate provider, peer identity.

``mesh_server_context(identity, roots, mode)`` returns an ``ssl.SSLContext`` for any
server (uvicorn's ``ssl_context_factory``, werkzeug's ``ssl_context``, ``asyncio``):
STRICT requires a client certificate chained to the mesh roots, PERMISSIVE accepts
callers without one. Rotation: every handshake switches to the context of the current
certificate files, so new files take effect without a restart and connections in flight
keep theirs.
"""

from __future__ import annotations

import ssl
from typing import Any

from cryptography import x509

from meshlib.security import FileWatcherProvider, server_context

__all__ = ["MODES", "mesh_server_context", "spiffe_id_from_pem"]

MODES = ("STRICT", "PERMISSIVE")


def mesh_server_context(
    identity: FileWatcherProvider,
    roots: FileWatcherProvider | None = None,
    *,
    mode: str = "STRICT",
    alpn: tuple[str, ...] = (),
) -> ssl.SSLContext:
    """A rotating server context for PeerAuthentication ``mode`` (STRICT or PERMISSIVE)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    roots = roots or identity
    strict = mode == "STRICT"

    def current() -> ssl.SSLContext:
        return server_context(identity, roots, require_client_cert=strict, alpn=alpn)

    listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    first = current()
    listener.minimum_version = first.minimum_version
    listener.verify_mode = first.verify_mode
    files = identity.current()
    if files.certificate_file and files.private_key_file:
        listener.load_cert_chain(files.certificate_file, files.private_key_file)
    root_files = roots.current()
    if root_files.ca_certificate_file:
        listener.load_verify_locations(cafile=str(root_files.ca_certificate_file))
    if alpn:
        listener.set_alpn_protocols(list(alpn))

    def switch(sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        sslobj.context = current()

    listener.sni_callback = switch
    return listener


def spiffe_id_from_pem(pem: str | bytes) -> str | None:
    """The ``spiffe://`` URI SAN of a PEM certificate (e.g. werkzeug's SSL_CLIENT_CERT)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        cert = x509.load_pem_x509_certificate(data)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return str(uri)
    return None
