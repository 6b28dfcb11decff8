"""The messages of istiod's ``istio.v1.auth.IstioCertificateService``, built from a
descriptor so that neither side needs Istio's protos.

``IstioCertificateRequest {string csr = 1; int64 validity_duration = 3;
google.protobuf.Struct metadata = 4}``; ``IstioCertificateResponse {repeated string
cert_chain = 1}`` (the leaf first, the root last).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

__all__ = ["CA_METHOD", "CA_SERVICE", "IstioCertificateRequest", "IstioCertificateResponse"]

CA_SERVICE = "istio.v1.auth.IstioCertificateService"
CA_METHOD = f"/{CA_SERVICE}/CreateCertificate"


def _message_classes() -> tuple[type[Any], type[Any]]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(
        name="meshlib/istio_ca.proto",
        package="istio.v1.auth",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    T = descriptor_pb2.FieldDescriptorProto
    req = f.message_type.add(name="IstioCertificateRequest")
    req.field.add(name="csr", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    req.field.add(name="validity_duration", number=3, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    req.field.add(
        name="metadata",
        number=4,
        type=T.TYPE_MESSAGE,
        type_name=".google.protobuf.Struct",
        label=T.LABEL_OPTIONAL,
    )
    resp = f.message_type.add(name="IstioCertificateResponse")
    resp.field.add(name="cert_chain", number=1, type=T.TYPE_STRING, label=T.LABEL_REPEATED)
    pool.Add(f)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
        get(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")),
    )


IstioCertificateRequest, IstioCertificateResponse = _message_classes()
