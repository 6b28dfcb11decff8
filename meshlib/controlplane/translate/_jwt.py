"""RequestAuthentication to Envoy's ``jwt_authn`` filter, and the RBAC principals that
match what it verified (``requestPrincipals``, ``request.auth.*`` conditions).

As istiod does for a workload's inbound listener: one provider per issuer (``origins-N``),
the payload written to dynamic metadata under the issuer's name (``payload_in_metadata``),
one rule for every path requiring any provider or no token at all (``allow_missing``), so
an invalid token is 401 and a missing one passes to authorization; CORS preflights bypass.
RBAC then matches metadata ``envoy.filters.http.jwt_authn`` at ``[issuer, claim...]``:
``iss/sub`` is split at a known issuer, so the principal needs no concatenated field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from envoy.config.core.v3 import http_uri_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf import any_pb2, duration_pb2

from ..objects._istio_authn import JwtRuleSpec, RequestAuthentication
from ..objects._istio_mesh import AuthorizationPolicy, claim_path
from ..objects._kubernetes import MeshObjects
from ._tls import ROOT_NAMESPACE

__all__ = ["JWT_FILTER", "jwt_filter", "jwt_principal", "selects", "workload_jwt_rules"]

JWT_FILTER = "envoy.filters.http.jwt_authn"
_DEFAULT_SPACE_DELIMITED = ("permission", "scope")
_CACHE = duration_pb2.Duration(seconds=300)  # Istio's JWKS cache duration


def selects(
    policy: AuthorizationPolicy | RequestAuthentication, namespace: str, labels: Mapping[str, str]
) -> bool:
    """Whether a security policy applies to a workload: its ``selector`` in its namespace,
    else its whole namespace (the mesh, from the root namespace)."""
    if policy.selector is None:
        return policy.namespace in (namespace, ROOT_NAMESPACE)
    return policy.namespace == namespace and all(
        labels.get(k) == v for k, v in policy.selector.items()
    )


def workload_jwt_rules(
    objects: MeshObjects, namespace: str, labels: Mapping[str, str]
) -> tuple[JwtRuleSpec, ...]:
    """The JWT rules of every RequestAuthentication selecting the workload (one per
    issuer, the first by namespace/name winning)."""
    out: dict[str, JwtRuleSpec] = {}
    for ra in sorted(objects.request_authentications, key=lambda r: (r.namespace, r.name)):
        if selects(ra, namespace, labels):
            for rule in ra.rules:
                out.setdefault(rule.issuer, rule)
    return tuple(out.values())


def _cluster(uri: str) -> str:
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"outbound|{port}||{parts.hostname}"


def _provider(rule: JwtRuleSpec) -> jwt_pb2.JwtProvider:
    p = jwt_pb2.JwtProvider(
        issuer=rule.issuer,
        audiences=list(rule.audiences),
        forward=rule.forward_original_token,
        from_headers=[jwt_pb2.JwtHeader(name=n, value_prefix=v) for n, v in rule.from_headers],
        from_params=list(rule.from_params),
        from_cookies=list(rule.from_cookies),
        forward_payload_header=rule.output_payload_to_header,
        claim_to_headers=[
            jwt_pb2.JwtClaimToHeader(header_name=h, claim_name=c)
            for h, c in rule.output_claim_to_headers
        ],
        payload_in_metadata=rule.issuer,
        normalize_payload_in_metadata=jwt_pb2.JwtProvider.NormalizePayload(
            space_delimited_claims=sorted({*_DEFAULT_SPACE_DELIMITED, *rule.space_delimited_claims})
        ),
        clock_skew_seconds=60,
    )
    if rule.jwks:
        p.local_jwks.inline_string = rule.jwks
    else:
        timeout = duration_pb2.Duration()
        timeout.FromNanoseconds(int(rule.timeout * 1e9))
        p.remote_jwks.CopyFrom(
            jwt_pb2.RemoteJwks(
                http_uri=http_uri_pb2.HttpUri(
                    uri=rule.jwks_uri, cluster=_cluster(rule.jwks_uri), timeout=timeout
                ),
                cache_duration=_CACHE,
            )
        )
    return p


def jwt_filter(rules: Sequence[JwtRuleSpec]) -> hcm_pb2.HttpFilter | None:
    """The ``jwt_authn`` filter for a workload's rules (None without any)."""
    if not rules:
        return None
    config = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True)
    requirements = []
    for i, rule in enumerate(rules):
        name = f"origins-{i}"
        config.providers[name].CopyFrom(_provider(rule))
        requirements.append(jwt_pb2.JwtRequirement(provider_name=name))
    requirements.append(jwt_pb2.JwtRequirement(allow_missing={}))
    config.rules.append(
        jwt_pb2.RequirementRule(
            match={"prefix": "/"},
            requires=jwt_pb2.JwtRequirement(
                requires_any=jwt_pb2.JwtRequirementOrList(requirements=requirements)
            ),
        )
    )
    out = any_pb2.Any()
    out.Pack(config, deterministic=True)
    return hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=out)


def _meta(issuer: str, path: Sequence[str], value: value_pb2.ValueMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        metadata=metadata_pb2.MetadataMatcher(
            filter=JWT_FILTER,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (issuer, *path)],
            value=value,
        )
    )


_PRESENT = value_pb2.ValueMatcher(present_match=True)
_NEVER = rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))


def _string(m: string_pb2.StringMatcher) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(string_match=m)


def _or(items: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not items:
        return _NEVER
    return items[0] if len(items) == 1 else rbac_pb2.Principal(or_ids={"ids": items})


def _subjects(issuer: str, value: str) -> list[value_pb2.ValueMatcher]:
    """Matchers on ``sub`` under ``issuer`` for which ``issuer/sub`` matches Istio's
    wildcard string ``value`` (``*``, ``x*``, ``*x`` or exact)."""
    head = issuer + "/"
    if value == "*":
        return [_PRESENT]
    if value.endswith("*"):
        prefix = value[:-1]
        if prefix.startswith(head):
            rest = prefix[len(head) :]
            return [_string(string_pb2.StringMatcher(prefix=rest)) if rest else _PRESENT]
        return [_PRESENT] if head.startswith(prefix) else []
    if value.startswith("*"):
        suffix = value[1:]
        out = [_string(string_pb2.StringMatcher(suffix=suffix))]
        for k in range(1, len(suffix)):  # the suffix reaching back into the issuer
            if head.endswith(suffix[:k]):
                out.append(_string(string_pb2.StringMatcher(exact=suffix[k:])))
        if head.endswith(suffix):
            out = [_PRESENT]
        return out
    if value.startswith(head) and len(value) > len(head):
        return [_string(string_pb2.StringMatcher(exact=value[len(head) :]))]
    return []


def _claim_value(value: str) -> value_pb2.ValueMatcher:
    """A claim equal to ``value``, or a list holding it (Istio's wildcards apply)."""
    if value == "*":
        return _PRESENT
    if value.endswith("*"):
        m = string_pb2.StringMatcher(prefix=value[:-1])
    elif value.startswith("*"):
        m = string_pb2.StringMatcher(suffix=value[1:])
    else:
        m = string_pb2.StringMatcher(exact=value)
    return value_pb2.ValueMatcher(
        or_match=value_pb2.OrMatcher(
            value_matchers=[
                _string(m),
                value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=_string(m))),
            ]
        )
    )


def jwt_principal(key: str, value: str, issuers: Sequence[str]) -> rbac_pb2.Principal | None:
    """The principal for a request-auth key (None for another key). With no issuer
    configured for the workload nothing can match, as with Envoy."""
    if key in ("requestPrincipals", "request.auth.principal"):
        return _or([_meta(i, ("sub",), m) for i in issuers for m in _subjects(i, value)])
    path: tuple[str, ...] | None = {
        "request.auth.audiences": ("aud",),
        "request.auth.presenter": ("azp",),
    }.get(key) or claim_path(key)
    if path is None:
        return None
    return _or([_meta(i, path, _claim_value(value)) for i in issuers])
