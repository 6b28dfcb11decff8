"""TLS material as Envoy's v3 API describes it: data sources, certificates, validation
contexts and the DownstreamTlsContext of a server listener's filter chain.

Shared by the Listener (server side) and Secret (SDS) decoders. Nothing is read from
disk while decoding: a :class:`DataSource` says where the bytes are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from ._base import ResourceError, unpack_nested

__all__ = [
    "CertificateProviderInstance",
    "DataSource",
    "DownstreamTls",
    "SanMatcher",
    "TlsCertificate",
    "ValidationContext",
    "decode_data_source",
    "decode_downstream_tls",
    "decode_tls_certificate",
    "decode_validation_context",
]

Fail = Callable[[str, str], ResourceError]
_SAN_TYPES = {
    v.number: v.name
    for v in common_pb2.SubjectAltNameMatcher.SanType.DESCRIPTOR.values
    if v.number != 0
}
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)


@dataclass(frozen=True, slots=True)
class DataSource:
    """Where bytes come from: ``kind`` is filename, inline or environment_variable."""

    kind: str
    value: str = ""
    inline: bytes = b""

    def read(self) -> bytes:
        if self.kind == "filename":
            return Path(self.value).read_bytes()
        if self.kind == "environment_variable":
            return os.environ[self.value].encode()
        return self.inline


@dataclass(frozen=True, slots=True)
class CertificateProviderInstance:
    """A bootstrap ``certificate_providers`` instance and which certificate of it."""

    instance_name: str
    certificate_name: str = ""


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    certificate_chain: DataSource
    private_key: DataSource


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """A subject-alt-name matcher: ``kind`` exact/prefix/suffix/contains/safe_regex;
    ``san_type`` DNS/URI/EMAIL/IP_ADDRESS/OTHER_NAME, or "" for any type."""

    kind: str
    value: str
    san_type: str = ""
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """How to verify the peer: roots (inline/file, a provider instance or an SDS
    secret name) and the subject alt names to accept (empty: any)."""

    trusted_ca: DataSource | None = None
    ca_provider: CertificateProviderInstance | None = None
    sds_secret: str = ""
    subject_alt_names: tuple[SanMatcher, ...] = ()
    system_root_certs: bool = False


@dataclass(frozen=True, slots=True)
class DownstreamTls:
    """A server filter chain's TLS: identity (provider, SDS secret or inline) and how
    clients are verified."""

    identity_provider: CertificateProviderInstance | None
    identity_sds_secret: str
    certificates: tuple[TlsCertificate, ...]
    validation: ValidationContext | None
    require_client_certificate: bool
    alpn_protocols: tuple[str, ...] = ()


def decode_data_source(ds: Any, path: str, fail: Fail, *, required: bool = True) -> DataSource:
    which = ds.WhichOneof("specifier")
    if which is None:
        if required:
            raise fail(path, "a data source (filename, inline_bytes, ...) is required")
        return DataSource("inline")
    if which == "filename":
        if not ds.filename:
            raise fail(f"{path}.filename", "must not be empty")
        return DataSource("filename", ds.filename)
    if which == "inline_bytes":
        return DataSource("inline", inline=bytes(ds.inline_bytes))
    if which == "inline_string":
        return DataSource("inline", inline=ds.inline_string.encode())
    if which == "environment_variable":
        return DataSource("environment_variable", ds.environment_variable)
    raise fail(f"{path}.{which}", "unsupported data source")


def decode_tls_certificate(c: Any, path: str, fail: Fail) -> TlsCertificate:
    for unsupported in ("pkcs12", "private_key_provider", "watched_directory"):
        if c.HasField(unsupported):
            raise fail(f"{path}.{unsupported}", "is not supported")
    if not c.HasField("certificate_chain"):
        raise fail(f"{path}.certificate_chain", "is required")
    if not c.HasField("private_key"):
        raise fail(f"{path}.private_key", "is required")
    return TlsCertificate(
        decode_data_source(c.certificate_chain, f"{path}.certificate_chain", fail),
        decode_data_source(c.private_key, f"{path}.private_key", fail),
    )


def _provider(p: Any) -> CertificateProviderInstance:
    return CertificateProviderInstance(p.instance_name, p.certificate_name)


def decode_validation_context(v: Any, path: str, fail: Fail) -> ValidationContext:
    trusted = None
    if v.HasField("trusted_ca"):
        trusted = decode_data_source(v.trusted_ca, f"{path}.trusted_ca", fail)
    provider = None
    if v.HasField("ca_certificate_provider_instance"):
        provider = _provider(v.ca_certificate_provider_instance)
        if not provider.instance_name:
            raise fail(f"{path}.ca_certificate_provider_instance.instance_name", "is required")
    for unsupported in ("verify_certificate_spki", "verify_certificate_hash"):
        if getattr(v, unsupported):
            raise fail(f"{path}.{unsupported}", "is not supported")
    if v.require_signed_certificate_timestamp.value:
        raise fail(f"{path}.require_signed_certificate_timestamp", "is not supported")
    if v.HasField("crl"):
        raise fail(f"{path}.crl", "is not supported")
    if v.HasField("custom_validator_config"):
        raise fail(f"{path}.custom_validator_config", "is not supported")
    sans: list[SanMatcher] = []
    for i, typed in enumerate(v.match_typed_subject_alt_names):
        san_type = _SAN_TYPES.get(typed.san_type)
        if san_type is None:
            raise fail(
                f"{path}.match_typed_subject_alt_names[{i}].san_type",
                f"must be one of {', '.join(_SAN_TYPES.values())}, got {typed.san_type}",
            )
        sans.append(
            _string_matcher(
                typed.matcher, f"{path}.match_typed_subject_alt_names[{i}].matcher", fail, san_type
            )
        )
    for i, m in enumerate(v.match_subject_alt_names):
        sans.append(_string_matcher(m, f"{path}.match_subject_alt_names[{i}]", fail, ""))
    return ValidationContext(trusted, provider, "", tuple(sans), v.HasField("system_root_certs"))


def _string_matcher(m: Any, path: str, fail: Fail, san_type: str) -> SanMatcher:
    which = m.WhichOneof("match_pattern")
    if which is None:
        raise fail(path, "a match pattern (exact, prefix, ...) is required")
    if which == "safe_regex":
        value = m.safe_regex.regex
        if not value:
            raise fail(f"{path}.safe_regex.regex", "must not be empty")
    elif which == "custom":
        raise fail(f"{path}.custom", "is not supported")
    else:
        value = getattr(m, which)
        if not value and which != "exact":
            raise fail(f"{path}.{which}", "must not be empty")
    return SanMatcher(which, value, san_type, m.ignore_case)


def _common_validation(ctx: Any, path: str, fail: Fail) -> ValidationContext | None:
    which = ctx.WhichOneof("validation_context_type")
    if which is None:
        return None
    if which == "validation_context":
        return decode_validation_context(ctx.validation_context, f"{path}.{which}", fail)
    if which == "validation_context_sds_secret_config":
        name = ctx.validation_context_sds_secret_config.name
        if not name:
            raise fail(f"{path}.{which}.name", "is required")
        return ValidationContext(sds_secret=name)
    if which == "combined_validation_context":
        combined = ctx.combined_validation_context
        base = decode_validation_context(
            combined.default_validation_context, f"{path}.{which}.default_validation_context", fail
        )
        provider = base.ca_provider
        if combined.HasField("validation_context_certificate_provider_instance"):
            provider = _provider(combined.validation_context_certificate_provider_instance)
        sds = combined.validation_context_sds_secret_config.name
        return ValidationContext(
            base.trusted_ca, provider, sds, base.subject_alt_names, base.system_root_certs
        )
    if which == "validation_context_certificate_provider_instance":
        return ValidationContext(ca_provider=_provider(getattr(ctx, which)))
    raise fail(f"{path}.{which}", "is not supported")


def decode_downstream_tls(any_: Any, path: str, fail: Fail) -> DownstreamTls:
    """Validate a server filter chain's ``transport_socket.typed_config``."""
    if any_.type_url != DOWNSTREAM_TLS_TYPE:
        raise fail(f"{path}.type_url", f"expected {DOWNSTREAM_TLS_TYPE}, got {any_.type_url}")
    msg = unpack_nested(
        any_, tls_pb2.DownstreamTlsContext, fail(path, "cannot decode DownstreamTlsContext")
    )
    if msg.require_sni.value:
        raise fail(f"{path}.require_sni", "is not supported")
    if msg.ocsp_staple_policy != tls_pb2.DownstreamTlsContext.LENIENT_STAPLING:
        raise fail(f"{path}.ocsp_staple_policy", "only LENIENT_STAPLING is supported")
    ctx = msg.common_tls_context
    cpath = f"{path}.common_tls_context"
    provider = None
    if ctx.HasField("tls_certificate_provider_instance"):
        provider = _provider(ctx.tls_certificate_provider_instance)
    elif ctx.HasField("tls_certificate_certificate_provider_instance"):
        old = ctx.tls_certificate_certificate_provider_instance
        provider = CertificateProviderInstance(old.instance_name, old.certificate_name)
    if provider is not None and not provider.instance_name:
        raise fail(f"{cpath}.tls_certificate_provider_instance.instance_name", "is required")
    certs = tuple(
        decode_tls_certificate(c, f"{cpath}.tls_certificates[{i}]", fail)
        for i, c in enumerate(ctx.tls_certificates)
    )
    sds = ""
    if ctx.tls_certificate_sds_secret_configs:
        sds = ctx.tls_certificate_sds_secret_configs[0].name
        if not sds:
            raise fail(f"{cpath}.tls_certificate_sds_secret_configs[0].name", "is required")
    if provider is None and not certs and not sds:
        raise fail(cpath, "a server needs an identity certificate (provider, SDS or inline)")
    validation = _common_validation(ctx, cpath, fail)
    require_client = msg.require_client_certificate.value
    if require_client and validation is None:
        raise fail(f"{path}.require_client_certificate", "needs a validation context")
    return DownstreamTls(
        provider, sds, certs, validation, require_client, tuple(ctx.alpn_protocols)
    )
