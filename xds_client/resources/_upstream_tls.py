"""A cluster's connection settings: its UpstreamTlsContext and its HTTP protocol.

``transport_socket`` (``envoy.transport_sockets.tls`` with an UpstreamTlsContext, or
``raw_buffer``) says whether connections to the cluster's endpoints use TLS and how the
server is verified; ``typed_extension_protocol_options`` (HttpProtocolOptions) says
whether they speak HTTP/1.1, HTTP/2, or negotiate. Nothing is read from disk here: a
certificate provider instance is only named; the client resolves it in its bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from ._base import unpack_nested
from ._tls import (
    CertificateProviderInstance,
    Fail,
    TlsCertificate,
    ValidationContext,
    _common_validation,
    _provider,
    decode_tls_certificate,
)

__all__ = [
    "HTTP_PROTOCOL_OPTIONS",
    "UPSTREAM_TLS_TYPE",
    "UpstreamTls",
    "decode_transport_socket",
    "decode_transport_socket_matches",
    "decode_upstream_protocol",
    "decode_upstream_tls",
]

UPSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_SOCKET = "envoy.transport_sockets.tls"
_RAW_SOCKET = "envoy.transport_sockets.raw_buffer"
_RAW_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How a client connects to a cluster's endpoints over TLS.

    ``identity_provider`` (a bootstrap certificate provider instance), SDS secret or
    inline ``certificates`` is the client's own certificate (mTLS; none: server-auth TLS
    only); ``validation`` verifies the server (roots and SAN matchers: the identity is
    the SAN, not the name dialled); ``sni`` is sent when set.
    """

    identity_provider: CertificateProviderInstance | None = None
    identity_sds_secret: str = ""
    certificates: tuple[TlsCertificate, ...] = ()
    validation: ValidationContext | None = None
    sni: str = ""
    alpn_protocols: tuple[str, ...] = ()


def decode_upstream_tls(any_: Any, path: str, fail: Fail) -> UpstreamTls:
    """Validate a cluster's ``transport_socket.typed_config`` (an UpstreamTlsContext)."""
    if any_.type_url != UPSTREAM_TLS_TYPE:
        raise fail(f"{path}.type_url", f"expected {UPSTREAM_TLS_TYPE}, got {any_.type_url}")
    msg = unpack_nested(
        any_, tls_pb2.UpstreamTlsContext, fail(path, "cannot decode UpstreamTlsContext")
    )
    if msg.allow_renegotiation:
        raise fail(f"{path}.allow_renegotiation", "is not supported")
    ctx = msg.common_tls_context
    cpath = f"{path}.common_tls_context"
    provider = None
    if ctx.HasField("tls_certificate_provider_instance"):
        provider = _provider(ctx.tls_certificate_provider_instance)
        field = "tls_certificate_provider_instance"
    elif ctx.HasField("tls_certificate_certificate_provider_instance"):
        old = ctx.tls_certificate_certificate_provider_instance
        provider = CertificateProviderInstance(old.instance_name, old.certificate_name)
        field = "tls_certificate_certificate_provider_instance"
    if provider is not None and not provider.instance_name:
        raise fail(f"{cpath}.{field}.instance_name", "is required")
    certs = tuple(
        decode_tls_certificate(c, f"{cpath}.tls_certificates[{i}]", fail)
        for i, c in enumerate(ctx.tls_certificates)
    )
    sds = ""
    if ctx.tls_certificate_sds_secret_configs:
        sds = ctx.tls_certificate_sds_secret_configs[0].name
        if not sds:
            raise fail(f"{cpath}.tls_certificate_sds_secret_configs[0].name", "is required")
    validation = _common_validation(ctx, cpath, fail)
    return UpstreamTls(provider, sds, certs, validation, msg.sni, tuple(ctx.alpn_protocols))


def decode_transport_socket(socket: Any, path: str, fail: Fail) -> UpstreamTls | None:
    """A TransportSocket: TLS settings, or None for plaintext (raw_buffer)."""
    type_url = socket.typed_config.type_url if socket.HasField("typed_config") else ""
    if type_url == UPSTREAM_TLS_TYPE or (not type_url and socket.name == _TLS_SOCKET):
        if not type_url:
            raise fail(f"{path}.typed_config", "an UpstreamTlsContext is required")
        return decode_upstream_tls(socket.typed_config, f"{path}.typed_config", fail)
    if type_url == _RAW_TYPE or (not type_url and socket.name in (_RAW_SOCKET, "")):
        return None
    what = type_url or socket.name
    raise fail(path, f"unsupported transport socket {what} (supported: tls, raw_buffer)")


def decode_transport_socket_matches(matches: Any, path: str, fail: Fail) -> UpstreamTls | None:
    """``transport_socket_matches`` when simple: the first entry with an empty ``match``
    applies to every endpoint; entries that all decode to the same socket are one socket.
    Per-endpoint selection (by endpoint metadata) is not supported: that is a NACK."""
    decoded = [
        (bool(m.match.fields), decode_transport_socket(m.transport_socket, f"{path}[{i}]", fail))
        for i, m in enumerate(matches)
    ]
    if not decoded:
        return None
    criteria, first = decoded[0]
    if not criteria or all(tls == first for _, tls in decoded):
        return first
    raise fail(
        path,
        "per-endpoint transport socket matching is not supported: the first entry must "
        "have an empty match, or every entry must name the same socket",
    )


def decode_upstream_protocol(options: Any, fail: Fail) -> str:
    """``http1``, ``http2`` or ``auto`` (ALPN over TLS, else HTTP/1.1) from a cluster's
    ``typed_extension_protocol_options`` (HttpProtocolOptions)."""
    if HTTP_PROTOCOL_OPTIONS not in options:
        return "http1"
    path = f"typed_extension_protocol_options[{HTTP_PROTOCOL_OPTIONS!r}]"
    msg = unpack_nested(
        options[HTTP_PROTOCOL_OPTIONS],
        http_protocol_options_pb2.HttpProtocolOptions,
        fail(path, "cannot decode HttpProtocolOptions"),
    )
    which = msg.WhichOneof("upstream_protocol_options")
    if which == "explicit_http_config":
        kind = msg.explicit_http_config.WhichOneof("protocol_config")
        if kind == "http3_protocol_options":
            raise fail(f"{path}.explicit_http_config.http3_protocol_options", "is not supported")
        return "http2" if kind == "http2_protocol_options" else "http1"
    if which == "auto_config":
        if msg.auto_config.HasField("http3_protocol_options"):
            raise fail(f"{path}.auto_config.http3_protocol_options", "is not supported")
        return "auto"
    if which == "use_downstream_protocol_config":
        return "auto"
    return "http1"
