"""The inbound side driven by the control plane: the server listener for ``ip:port``.

istiod (and meshlib's control plane) serve each workload a server Listener named from
the bootstrap's ``server_listener_resource_name_template``
(``xds.istio.io/grpc/lds/inbound/%s``): filter chains that say whether the port speaks
mTLS (PeerAuthentication) and which RBAC filters guard it (AuthorizationPolicy).
:class:`MeshInbound` watches it and enforces it on every request, as gRPC's xDS server
does: until the listener is known, or when it does not exist, the workload is not
serving (503); a request no filter chain accepts (plaintext under STRICT) is refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2

from meshlib import Mesh
from meshlib.exchange._ratelimit import LocalRateLimiter
from meshlib.security import provider_from_config
from xds_client import Bootstrap, XdsClient
from xds_client.resources import LISTENER, ListenerResource, RbacConfig, ResourceError
from xds_client.resources._jwt_authn import JwtAuthnConfig
from xds_client.resources.listener import FilterChain
from xds_client.resources.route import LocalRateLimitConfig

from ._inbound import AuthzDecision, Inbound, InboundRequest
from ._inbound_jwt import JwtCheck
from ._rbac import RbacAuthorizer, RbacFilter, compile_rbac
from .tls import mesh_server_context

__all__ = ["MeshInbound", "ServingState"]

log = logging.getLogger("meshlib.inbound")
DEFAULT_TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"


@dataclass(frozen=True, slots=True)
class _Chain:
    chain: FilterChain
    authorizer: RbacAuthorizer | None
    error: str = ""  # an RBAC config we cannot evaluate: the chain denies everything
    limiter: LocalRateLimiter | None = None  # the chain's local rate limit filter
    jwt: JwtCheck | None = None  # the chain's jwt_authn filter (before RBAC)

    @property
    def tls(self) -> bool:
        return self.chain.tls is not None


@dataclass(frozen=True, slots=True)
class ServingState:
    """What the workload enforces now; replaced whole on every listener update."""

    serving: bool
    chains: tuple[_Chain, ...] = ()
    reason: str = "waiting for the server listener"

    @property
    def mode(self) -> str:
        """STRICT when only mTLS chains exist, PERMISSIVE when both, else DISABLE."""
        kinds = {c.tls for c in self.chains}
        if kinds == {True}:
            return "STRICT"
        return "PERMISSIVE" if True in kinds else "DISABLE"


def _compile_chain(chain: FilterChain) -> _Chain:
    filters: list[RbacFilter] = []
    limiter = None
    jwt = None
    for f in chain.http.http_filters:
        if isinstance(f.config, LocalRateLimitConfig) and f.config.bucket is not None:
            limiter = LocalRateLimiter(f.config)
    try:
        for f in chain.http.http_filters:
            if isinstance(f.config, JwtAuthnConfig):
                jwt = JwtCheck(f.config)
            if isinstance(f.config, RbacConfig) and f.config.action is not None:
                config = rbac_filter_pb2.RBAC(rules=rbac_pb2.RBAC.FromString(f.config.rules))
                compiled = compile_rbac(f.name, config)
                if compiled is not None:
                    filters.append(compiled)
    except (ResourceError, ValueError, ImportError) as exc:
        # ImportError: jwt_authn without PyJWT installed (meshlib[jwt])
        log.error("inbound filter chain %s: cannot enforce RBAC, denying all: %s", chain.name, exc)
        return _Chain(chain, None, str(exc))
    return _Chain(chain, RbacAuthorizer(filters) if filters else None, limiter=limiter, jwt=jwt)


def _matches(chain: FilterChain, request: InboundRequest) -> bool:
    m = chain.match
    if m.destination_port is not None and m.destination_port != request.port:
        return False
    wants_tls = request.scheme in ("https", "grpcs")
    if m.transport_protocol and (m.transport_protocol == "tls") != wants_tls:
        return False
    if (chain.tls is not None) != wants_tls and not m.transport_protocol:
        return False
    if m.source_prefix_ranges:
        if request.remote_ip is None:
            return False
        ip = ipaddress.ip_address(request.remote_ip)
        if not any(ip in r.network() for r in m.source_prefix_ranges):
            return False
    return True


class _Watcher:
    def __init__(self, owner: MeshInbound) -> None:
        self._owner = owner

    def on_resource_changed(self, name: str, resource: ListenerResource) -> None:
        chains = tuple(_compile_chain(c) for c in resource.filter_chains)
        if resource.default_filter_chain is not None:
            chains += (_compile_chain(resource.default_filter_chain),)
        self._owner._set(ServingState(True, chains, ""))

    def on_resource_error(self, name: str, error: Exception) -> None:
        self._owner._set(ServingState(False, (), f"not serving: {error}"))

    def on_ambient_error(self, name: str, error: Exception) -> None:
        log.info("inbound listener %s: keeping last good config: %s", name, error)


class MeshInbound(Inbound):
    """:class:`Inbound` whose authorization and TLS mode follow the control plane.

    ``host``/``port`` are the address the workload serves on, as its Service's
    endpoints name it. Pass it to ``MeshMiddleware``, ``MeshWSGIMiddleware`` or the gRPC
    server interceptors; ``wait_until_serving()`` blocks until the listener arrives.
    """

    def __init__(
        self,
        client: XdsClient,
        bootstrap: Bootstrap,
        port: int,
        host: str = "127.0.0.1",
        **kwargs: Any,
    ) -> None:
        super().__init__(authorizer=self, **kwargs)
        template = bootstrap.server_listener_resource_name_template or DEFAULT_TEMPLATE
        self.listener_name = template.replace("%s", f"{host}:{port}")
        self.bootstrap = bootstrap
        self.state = ServingState(False)
        self._event = threading.Event()
        self._cancel = client.watch(LISTENER, self.listener_name, _Watcher(self))

    @classmethod
    def for_mesh(cls, mesh: Mesh, port: int, host: str = "127.0.0.1", **kwargs: Any) -> MeshInbound:
        """The inbound side of ``mesh``'s workload serving on ``host:port``, labelled with the
        mesh's workload and namespace for Istio's metrics."""
        kwargs.setdefault("workload", mesh.telemetry.workload)
        kwargs.setdefault("namespace", mesh.telemetry.namespace)
        return cls(mesh.xds_client, mesh.bootstrap, port, host, **kwargs)

    def _set(self, state: ServingState) -> None:
        self.state = state
        self._event.set()

    def wait_until_serving(self, timeout: float = 10.0) -> ServingState:
        """Block until the control plane has answered for this listener."""
        self._event.wait(timeout)
        return self.state

    def check(self, request: InboundRequest) -> AuthzDecision:
        """Pick the filter chain for this connection, then apply its ``jwt_authn`` filter
        (an invalid token: 401), its RBAC filters (matching the verified token's claims),
        then its local rate limit (one token bucket per chain, as the outbound path's)."""
        state = self.state
        if not state.serving:
            return AuthzDecision(False, policy="not-serving", reason=state.reason, status=503)
        for chain in state.chains:
            if _matches(chain.chain, request):
                if chain.error:
                    return AuthzDecision(False, policy=chain.chain.name, reason=chain.error)
                metadata = None
                jwt_result = None
                if chain.jwt is not None:
                    outcome = chain.jwt.check(request)
                    if outcome.reply is not None:
                        refused = outcome.reply
                        return AuthzDecision(
                            False, chain.chain.name, refused.reason, refused.status, refused
                        )
                    metadata, jwt_result = outcome.metadata, outcome.result
                decision = AuthzDecision(True)
                if chain.authorizer is not None:
                    decision = chain.authorizer.check(request, metadata)
                if jwt_result is not None:
                    decision = dataclasses.replace(decision, jwt=jwt_result)
                if decision.allowed and chain.limiter is not None:
                    reply = chain.limiter.admit()
                    if reply is not None:
                        return AuthzDecision(
                            False, chain.chain.name, reply.reason, reply.status, reply
                        )
                return decision
        return AuthzDecision(
            False,
            policy="no-filter-chain",
            reason=f"no filter chain of {self.listener_name} accepts "
            f"{request.scheme} (mode {state.mode})",
        )

    def server_ssl_context(self) -> ssl.SSLContext:
        """The TLS context the listener's mTLS chain asks for (identity, roots, whether
        client certificates are required), rotating with the certificate files."""
        state = self.wait_until_serving()
        tls = next((c.chain.tls for c in state.chains if c.chain.tls is not None), None)
        if tls is None:
            raise ValueError(f"{self.listener_name}: no mTLS filter chain (mode {state.mode})")
        providers = self.bootstrap.certificate_providers
        identity_name = tls.identity_provider.instance_name if tls.identity_provider else ""
        roots_name = (
            tls.validation.ca_provider.instance_name
            if tls.validation and tls.validation.ca_provider
            else identity_name
        )

        def provider(name: str) -> Any:
            if name not in providers:
                raise ValueError(
                    f"{self.listener_name}: certificate provider instance {name!r} "
                    f"is not in the bootstrap ({self.bootstrap.source})"
                )
            cfg = providers[name]
            return provider_from_config(
                cfg.plugin_name, cfg.config, where=f"certificate_providers.{name}"
            )

        return mesh_server_context(
            provider(identity_name),
            provider(roots_name),
            mode="STRICT" if tls.require_client_certificate else "PERMISSIVE",
        )

    def close(self) -> None:
        self._cancel()
