"""Listener (client API and server side) and Secret decoding: valid shapes become typed
models; each invalid shape is rejected with the resource and the field named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import struct_pb2

from xds_client import builders as b
from xds_client.resources import (
    LISTENER,
    SECRET,
    CertificateProviderInstance,
    FaultConfig,
    RbacConfig,
    ResourceError,
)
from xds_client.resources.route import FaultAbort, FaultDelay, Percent


def decode_listener(msg: listener_pb2.Listener) -> Any:
    return LISTENER.decode(b.pack(msg))[1]


def with_filters(*filters: tuple[str, Any, bool]) -> listener_pb2.Listener:
    hcm = b.hcm("r")
    del hcm.http_filters[:]
    for name, config, optional in filters:
        f = hcm.http_filters.add(name=name, is_optional=optional)
        f.typed_config.Pack(config)
    listener = listener_pb2.Listener(name="l")
    listener.api_listener.api_listener.Pack(hcm)
    return listener


def test_api_listener_filters_are_decoded() -> None:
    fault = fault_pb2.HTTPFault()
    fault.delay.fixed_delay.FromMilliseconds(250)
    fault.delay.percentage.numerator = 50
    fault.abort.http_status = 503
    fault.abort.percentage.numerator = 10
    fault.abort.percentage.denominator = 1  # TEN_THOUSAND
    rbac = rbac_pb2.RBAC()
    rbac.rules.action = rbac_config_pb2.RBAC.DENY
    rbac.rules.policies["deny-all"].permissions.add(any=True)
    rbac.rules.policies["deny-all"].principals.add(any=True)
    listener = with_filters(
        ("fault", fault, False),
        ("rbac", rbac, False),
        ("x", struct_pb2.Struct(), True),  # unknown but optional: skipped
        ("router", _router(), False),
    )
    model = decode_listener(listener)
    assert [f.name for f in model.http_filters] == ["fault", "rbac", "router"]
    # The listener-level fault filter decodes to the same model as a route's override.
    assert model.http_filters[0].config == FaultConfig(
        delay=FaultDelay(0.25, percent=Percent(50, 100)),
        abort=FaultAbort(http_status=503, percent=Percent(10, 10_000)),
    )
    rbac_model = model.http_filters[1].config
    assert isinstance(rbac_model, RbacConfig)
    assert rbac_model.action == "DENY" and rbac_model.policy_names == ("deny-all",)
    assert model.route_config_name == "r" and not model.is_server


def _router() -> Any:
    from envoy.extensions.filters.http.router.v3 import router_pb2

    return router_pb2.Router()


@pytest.mark.parametrize(
    ("filters", "field", "problem"),
    [
        ([], "api_listener.http_filters", "the last filter must be the router"),
        (
            [("x", struct_pb2.Struct(), False), ("router", _router(), False)],
            "api_listener.http_filters[0].typed_config",
            "unsupported filter type",
        ),
        (
            [("router", _router(), False), ("router", _router(), False)],
            "api_listener.http_filters[1].name",
            "duplicate filter name",
        ),
        (
            [("r1", _router(), False), ("r2", _router(), False)],
            "api_listener.http_filters",
            "the router must be the last filter only",
        ),
    ],
)
def test_http_filter_errors(filters: list[Any], field: str, problem: str) -> None:
    with pytest.raises(ResourceError) as info:
        decode_listener(with_filters(*filters))
    assert info.value.name == "l" and info.value.field == field
    assert problem in info.value.problem


def test_fault_abort_status_out_of_range() -> None:
    fault = fault_pb2.HTTPFault()
    fault.abort.http_status = 42
    with pytest.raises(ResourceError, match=r"http_filters\[0\]\.abort\.http_status: must be"):
        decode_listener(with_filters(("fault", fault, False), ("router", _router(), False)))


def mtls_listener() -> listener_pb2.Listener:
    listener = b.server_listener("xds.istio.io/grpc/lds/inbound/0.0.0.0:8080")
    chain = listener.filter_chains[0]
    chain.name = "inbound-mtls"
    chain.filter_chain_match.transport_protocol = "tls"
    ctx = tls_pb2.DownstreamTlsContext()
    common = ctx.common_tls_context
    common.tls_certificate_provider_instance.instance_name = "default"
    common.validation_context.ca_certificate_provider_instance.instance_name = "default"
    common.validation_context.ca_certificate_provider_instance.certificate_name = "ROOTCA"
    ctx.require_client_certificate.value = True
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.Pack(ctx)
    plain = listener.filter_chains.add(name="inbound-plaintext")
    plain.CopyFrom(b.server_listener("x").filter_chains[0])
    r = plain.filter_chain_match.prefix_ranges.add(address_prefix="10.0.0.0")
    r.prefix_len.value = 8
    return listener


def test_server_listener_with_mtls_and_plaintext_chains() -> None:
    model = decode_listener(mtls_listener())
    assert model.is_server and (model.address, model.port) == ("0.0.0.0", 8080)
    mtls, plain = model.filter_chains
    assert mtls.tls is not None and mtls.tls.require_client_certificate
    assert mtls.tls.identity_provider == CertificateProviderInstance("default")
    assert mtls.tls.validation is not None
    assert mtls.tls.validation.ca_provider == CertificateProviderInstance("default", "ROOTCA")
    assert mtls.match.transport_protocol == "tls"
    assert plain.tls is None and str(plain.match.prefix_ranges[0].network()) == "10.0.0.0/8"
    assert plain.http.inline_route_config is not None


def _tls(listener: listener_pb2.Listener) -> tls_pb2.DownstreamTlsContext:
    ctx = tls_pb2.DownstreamTlsContext()
    listener.filter_chains[0].transport_socket.typed_config.Unpack(ctx)
    return ctx


def _set_tls(listener: listener_pb2.Listener, ctx: tls_pb2.DownstreamTlsContext) -> None:
    listener.filter_chains[0].transport_socket.typed_config.Pack(ctx)


def _require_sni(m: listener_pb2.Listener) -> None:
    ctx = _tls(m)
    ctx.require_sni.value = True
    _set_tls(m, ctx)


def _no_identity(m: listener_pb2.Listener) -> None:
    ctx = _tls(m)
    ctx.common_tls_context.ClearField("tls_certificate_provider_instance")
    _set_tls(m, ctx)


def _no_validation(m: listener_pb2.Listener) -> None:
    ctx = _tls(m)
    ctx.common_tls_context.ClearField("validation_context")
    _set_tls(m, ctx)


def _same_match(m: listener_pb2.Listener) -> None:
    m.filter_chains[1].filter_chain_match.CopyFrom(m.filter_chains[0].filter_chain_match)


def _bad_cidr(m: listener_pb2.Listener) -> None:
    m.filter_chains[1].filter_chain_match.prefix_ranges[0].prefix_len.value = 33


def _no_address(m: listener_pb2.Listener) -> None:
    m.ClearField("address")


def _two_filters(m: listener_pb2.Listener) -> None:
    m.filter_chains[0].filters.add().CopyFrom(m.filter_chains[0].filters[0])


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_require_sni, "filter_chains[0].transport_socket.typed_config.require_sni"),
        (_no_identity, "filter_chains[0].transport_socket.typed_config.common_tls_context"),
        (
            _no_validation,
            "filter_chains[0].transport_socket.typed_config.require_client_certificate",
        ),
        (_same_match, "filter_chains[1].filter_chain_match"),
        (_bad_cidr, "filter_chains[1].filter_chain_match.prefix_ranges[0].prefix_len"),
        (_no_address, "address.socket_address"),
        (_two_filters, "filter_chains[0].filters"),
    ],
)
def test_server_listener_errors(
    mutate: Callable[[listener_pb2.Listener], None], field: str
) -> None:
    listener = mtls_listener()
    mutate(listener)
    with pytest.raises(ResourceError) as info:
        decode_listener(listener)
    assert info.value.field == field


def test_secrets() -> None:
    _, model = SECRET.decode(b.pack(b.secret("default", b"C", b"K")))
    assert model.tls_certificate is not None
    assert model.tls_certificate.certificate_chain.read() == b"C"
    roots = b.secret("ROOTCA")
    roots.ClearField("tls_certificate")
    roots.validation_context.trusted_ca.filename = "/etc/roots.pem"
    _, model = SECRET.decode(b.pack(roots))
    assert model.validation_context is not None
    assert model.validation_context.trusted_ca is not None
    assert model.validation_context.trusted_ca.value == "/etc/roots.pem"
    no_key = b.secret("k")
    no_key.tls_certificate.ClearField("private_key")
    with pytest.raises(
        ResourceError, match=r"Secret 'k': tls_certificate\.private_key: is required"
    ):
        SECRET.decode(b.pack(no_key))
    empty = b.secret("e")
    empty.ClearField("tls_certificate")
    with pytest.raises(ResourceError, match=r"Secret 'e': type: one of"):
        SECRET.decode(b.pack(empty))
