"""Secret resources (SDS): TLS certificates, validation contexts and generic secrets."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2

from ._base import ResourceError, unpack
from ._tls import (
    DataSource,
    TlsCertificate,
    ValidationContext,
    decode_data_source,
    decode_tls_certificate,
    decode_validation_context,
)

__all__ = ["SecretResource", "SecretType"]


@dataclass(frozen=True, slots=True)
class SecretResource:
    """One secret; exactly one of the three payloads is set."""

    name: str
    tls_certificate: TlsCertificate | None = None
    validation_context: ValidationContext | None = None
    generic_secret: DataSource | None = None


class SecretType:
    type_url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    type_name = "Secret"
    all_resources_required_in_sotw = False

    def decode(self, resource: any_pb2.Any) -> tuple[str, SecretResource]:
        msg = unpack(resource, secret_pb2.Secret, self.type_name)
        name = msg.name
        if not name:
            raise ResourceError(self.type_name, "", "name", "must not be empty")

        def fail(field: str, problem: str) -> ResourceError:
            return ResourceError(self.type_name, name, field, problem)

        which = msg.WhichOneof("type")
        if which == "tls_certificate":
            cert = decode_tls_certificate(msg.tls_certificate, which, fail)
            return name, SecretResource(name, tls_certificate=cert)
        if which == "validation_context":
            ctx = decode_validation_context(msg.validation_context, which, fail)
            if ctx.trusted_ca is None and ctx.ca_provider is None and not ctx.system_root_certs:
                raise fail(f"{which}.trusted_ca", "is required")
            return name, SecretResource(name, validation_context=ctx)
        if which == "generic_secret":
            data = decode_data_source(msg.generic_secret.secret, f"{which}.secret", fail)
            return name, SecretResource(name, generic_secret=data)
        if which is None:
            raise fail("type", "one of tls_certificate, validation_context, generic_secret")
        raise fail(which, "is not supported")
