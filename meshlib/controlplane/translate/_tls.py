"""mTLS: PeerAuthentication modes, upstream TLS contexts (DestinationRule ``tls`` and
auto-mTLS), the inbound DownstreamTlsContext, and SDS secrets for Envoy nodes.

Certificates reach the two kinds of client differently, as with istiod: a proxyless
client names certificate-provider instance ``default`` (identity ``default``, roots
``ROOTCA``) from its bootstrap; an Envoy gets SDS secrets ``default`` and ``ROOTCA``
over the same ADS stream, issued by the control plane's certificate authority.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

from ..objects._istio_mesh import PeerAuthentication
from ..objects._istio_policy import Subset, TlsSettings, TrafficPolicy
from ..objects._kubernetes import MeshObjects
from ._rules import RuleIndex, subset_instances

if TYPE_CHECKING:
    from ._registry import MeshService

__all__ = [
    "IDENTITY_SECRET",
    "ROOT_NAMESPACE",
    "ROOT_SECRET",
    "SECRET_TYPE",
    "TLS_SOCKET",
    "downstream_tls",
    "peer_mode",
    "secrets_for",
    "upstream_tls",
]

TLS_SOCKET = "envoy.transport_sockets.tls"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
IDENTITY_SECRET = "default"
ROOT_SECRET = "ROOTCA"
ROOT_NAMESPACE = "istio-system"  # where a mesh-wide PeerAuthentication lives


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


def _selects(pa: PeerAuthentication, labels: Mapping[str, str]) -> bool:
    return pa.selector is not None and all(labels.get(k) == v for k, v in pa.selector.items())


def peer_mode(objects: MeshObjects, namespace: str, labels: Mapping[str, str], port: int) -> str:
    """The inbound mTLS mode of a workload: STRICT, PERMISSIVE or DISABLE.

    The most specific PeerAuthentication wins: one selecting the workload (its port
    level setting first), then the namespace's, then the mesh's in ``istio-system``;
    UNSET defers to the next, and the default is PERMISSIVE.
    """
    chain: list[str] = []
    pas = objects.peer_authentications
    for pa in sorted(pas, key=lambda p: p.name):
        if pa.namespace == namespace and _selects(pa, labels):
            chain += [pa.port_modes.get(port, "UNSET"), pa.mode]
            break
    for scope in (namespace, ROOT_NAMESPACE):
        chain += [pa.mode for pa in pas if pa.namespace == scope and pa.selector is None]
    return next((m for m in chain if m not in ("UNSET", "")), "PERMISSIVE")


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _sans(values: list[str]) -> list[string_pb2.StringMatcher]:
    return [string_pb2.StringMatcher(exact=v) for v in values]


def _istio_common(sans: list[str], *, envoy: bool) -> tls_pb2.CommonTlsContext:
    ctx = tls_pb2.CommonTlsContext()
    combined = ctx.combined_validation_context
    combined.default_validation_context.match_subject_alt_names.extend(_sans(sans))
    if envoy:
        ctx.tls_certificate_sds_secret_configs.add(name=IDENTITY_SECRET, sds_config=_ads())
        combined.validation_context_sds_secret_config.name = ROOT_SECRET
        combined.validation_context_sds_secret_config.sds_config.CopyFrom(_ads())
        return ctx
    # Both the current and the deprecated fields, as istiod fills them for gRPC.
    ctx.tls_certificate_provider_instance.instance_name = "default"
    ctx.tls_certificate_provider_instance.certificate_name = IDENTITY_SECRET
    ctx.tls_certificate_certificate_provider_instance.instance_name = "default"
    ctx.tls_certificate_certificate_provider_instance.certificate_name = IDENTITY_SECRET
    default = combined.default_validation_context
    default.ca_certificate_provider_instance.instance_name = "default"
    default.ca_certificate_provider_instance.certificate_name = ROOT_SECRET
    combined.validation_context_certificate_provider_instance.instance_name = "default"
    combined.validation_context_certificate_provider_instance.certificate_name = ROOT_SECRET
    return ctx


def _file_context(tls: TlsSettings, sans: list[str]) -> tls_pb2.CommonTlsContext:
    ctx = tls_pb2.CommonTlsContext()
    if tls.mode == "MUTUAL":
        cert = ctx.tls_certificates.add()
        cert.certificate_chain.filename = tls.client_certificate or ""
        cert.private_key.filename = tls.private_key or ""
    if not tls.insecure_skip_verify:
        vc = ctx.validation_context
        if tls.ca_certificates:
            vc.trusted_ca.filename = tls.ca_certificates
        vc.match_subject_alt_names.extend(_sans(list(tls.subject_alt_names) or sans))
    return ctx


def _socket(ctx: tls_pb2.UpstreamTlsContext) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=_pack(ctx))


def upstream_tls(
    cluster: cluster_pb2.Cluster,
    index: RuleIndex,
    service: MeshService,
    port: int,
    subset: Subset | None,
    policy: TrafficPolicy,
    *,
    envoy: bool,
) -> None:
    """Set the cluster's transport socket from the DestinationRule, or by auto-mTLS.

    Without a ``tls`` setting: STRICT destinations get ISTIO_MUTUAL; otherwise an Envoy
    gets transport-socket matches (mTLS to endpoints labelled ``tlsMode: istio``), and a
    proxyless client mTLS only if every endpoint is so labelled.
    """
    instances = subset_instances(service, port, subset)
    sans = sorted({i.service_account for i in instances if i.service_account})
    sni = f"outbound_.{port}_.{subset.name if subset else ''}_.{service.hostname}"
    tls = policy.tls
    if tls is not None:
        if tls.mode == "DISABLE":
            return
        if tls.mode == "ISTIO_MUTUAL":
            ctx = tls_pb2.UpstreamTlsContext(common_tls_context=_istio_common(sans, envoy=envoy))
            ctx.sni = tls.sni or sni
        else:
            ctx = tls_pb2.UpstreamTlsContext(common_tls_context=_file_context(tls, sans))
            ctx.sni = tls.sni or (service.hostname if envoy else "")
        cluster.transport_socket.CopyFrom(_socket(ctx))
        return
    modes = {
        peer_mode(index.registry.objects, service.namespace, i.labels, i.port) for i in instances
    }
    mtls = tls_pb2.UpstreamTlsContext(common_tls_context=_istio_common(sans, envoy=envoy), sni=sni)
    if modes == {"STRICT"}:
        cluster.transport_socket.CopyFrom(_socket(mtls))
    elif envoy and any(i.tls_mode == "istio" for i in instances):
        match = cluster.transport_socket_matches.add(name="tlsMode-istio")
        match.match.fields["tlsMode"].string_value = "istio"
        match.transport_socket.CopyFrom(_socket(mtls))
        plain = cluster.transport_socket_matches.add(name="tlsMode-disabled")
        plain.match.CopyFrom(struct_pb2.Struct())
        plain.transport_socket.name = "envoy.transport_sockets.raw_buffer"
        plain.transport_socket.typed_config.CopyFrom(_pack(raw_buffer_pb2.RawBuffer()))
    elif not envoy and instances and all(i.tls_mode == "istio" for i in instances):
        cluster.transport_socket.CopyFrom(_socket(mtls))


def downstream_tls(*, envoy: bool, require_client_cert: bool = True) -> base_pb2.TransportSocket:
    """The inbound side of Istio mTLS: the workload's identity, client certs required."""
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=_istio_common([], envoy=envoy))
    ctx.require_client_certificate.CopyFrom(wrappers_pb2.BoolValue(value=require_client_cert))
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=_pack(ctx))


def secrets_for(ca: Any, identity: str, ttl: float = 3600.0) -> dict[str, secret_pb2.Secret]:
    """SDS secrets ``default`` (a certificate for ``identity``) and ``ROOTCA``.

    ``ca`` is a :class:`~meshlib.controlplane.ca._authority.CertificateAuthority` (``issue`` and
    ``root_pem``).
    """
    cert = ca.issue(identity, ttl)
    identity_secret = secret_pb2.Secret(name=IDENTITY_SECRET)
    identity_secret.tls_certificate.certificate_chain.inline_bytes = cert.cert_pem
    identity_secret.tls_certificate.private_key.inline_bytes = cert.key_pem
    root = secret_pb2.Secret(name=ROOT_SECRET)
    root.validation_context.trusted_ca.inline_bytes = ca.root_pem
    return {IDENTITY_SECRET: identity_secret, ROOT_SECRET: root}
