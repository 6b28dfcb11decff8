"""Which fields of Istio's schemas meshlib honours; every other field is refused.

Istio's schema allows far more than a proxyless mesh implements (gateways, TCP and TLS
routes, CORS, tunnels...). A field that is present and not listed here is an error that
says "not supported by meshlib" and names its path, so nothing a user writes is dropped.
Paths use ``[]`` for list items and ``{}`` for map values; a trailing ``.*`` covers a
whole subtree (metadata, status, and values such as label maps).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._fields import FieldError

__all__ = ["SUPPORTED", "unsupported_fields"]

_COMMON = ("apiVersion", "kind", "metadata.*", "status.*")
_DEST = ("host", "subset", "port", "port.number")
_HEADER_OPS = (
    *tuple(
        f"{side}.{op}"
        for side in ("request", "response")
        for op in ("", "set.*", "add.*", "remove.*")
        if op
    ),
    "request",
    "response",
)
_STRING_MATCH = ("exact", "prefix", "regex")


def _under(prefix: str, paths: tuple[str, ...]) -> tuple[str, ...]:
    return (prefix, *(f"{prefix}.{p}" for p in paths))


_HTTP_ROUTE: tuple[str, ...] = (
    "name",
    "match",
    *_under("match[].uri", _STRING_MATCH),
    *_under("match[].method", _STRING_MATCH),
    *_under("match[].authority", _STRING_MATCH),
    "match[].headers",
    *(f"match[].headers{{}}.{k}" for k in _STRING_MATCH),
    "match[].queryParams",
    *(f"match[].queryParams{{}}.{k}" for k in _STRING_MATCH),
    "match[].ignoreUriCase",
    "match[].port",
    "match[].name",
    "match[].sourceLabels.*",
    "match[].sourceNamespace",
    "match[].gateways.*",
    "route",
    *_under("route[].destination", _DEST),
    "route[].weight",
    *_under("route[].headers", _HEADER_OPS),
    *_under("redirect", ("uri", "authority", "port", "scheme", "redirectCode")),
    *_under("directResponse", ("status", "body", "body.string", "body.bytes")),
    *_under("rewrite", ("uri", "authority", "uriRegexRewrite.match", "uriRegexRewrite.rewrite")),
    "rewrite.uriRegexRewrite",
    "timeout",
    *_under(
        "retries",
        (
            "attempts",
            "perTryTimeout",
            "retryOn",
            "retryRemoteLocalities",
            "retryIgnorePreviousHosts",
            "backoff",
        ),
    ),
    "fault",
    *_under("fault.delay", ("fixedDelay", "percent", "percentage", "percentage.value")),
    *_under("fault.abort", ("httpStatus", "grpcStatus", "percentage", "percentage.value")),
    *_under("mirror", _DEST),
    "mirrorPercentage",
    "mirrorPercentage.value",
    "mirrorPercent",
    "mirror_percent",
    "mirrors",
    *_under("mirrors[].destination", _DEST),
    "mirrors[].percentage",
    "mirrors[].percentage.value",
    *_under("headers", _HEADER_OPS),
)

_POLICY_SECTIONS: tuple[str, ...] = (
    *_under(
        "loadBalancer",
        (
            "simple",
            "consistentHash",
            "consistentHash.httpHeaderName",
            "consistentHash.httpQueryParameterName",
            "consistentHash.useSourceIp",
            "consistentHash.httpCookie",
            "consistentHash.httpCookie.name",
            "consistentHash.httpCookie.path",
            "consistentHash.httpCookie.ttl",
            "consistentHash.minimumRingSize",
            "consistentHash.ringHash",
            "consistentHash.ringHash.minimumRingSize",
            "consistentHash.maglev",
            "consistentHash.maglev.tableSize",
            "localityLbSetting",
            "localityLbSetting.enabled",
            "localityLbSetting.distribute",
            "localityLbSetting.distribute[].from",
            "localityLbSetting.distribute[].to.*",
            "localityLbSetting.failover",
            "localityLbSetting.failover[].from",
            "localityLbSetting.failover[].to",
            "localityLbSetting.failoverPriority.*",
            "warmupDurationSecs",
            "warmup",
            "warmup.duration",
            "warmup.minimumPercent",
            "warmup.aggression",
        ),
    ),
    *_under(
        "connectionPool",
        (
            "tcp",
            "tcp.maxConnections",
            "tcp.connectTimeout",
            "http",
            "http.http1MaxPendingRequests",
            "http.http2MaxRequests",
            "http.maxRequestsPerConnection",
            "http.maxRetries",
            "http.idleTimeout",
        ),
    ),
    *_under(
        "outlierDetection",
        (
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
            "minHealthPercent",
        ),
    ),
    *_under(
        "tls",
        (
            "mode",
            "clientCertificate",
            "privateKey",
            "caCertificates",
            "sni",
            "subjectAltNames.*",
            "insecureSkipVerify",
        ),
    ),
)
_TRAFFIC_POLICY: tuple[str, ...] = (
    *_POLICY_SECTIONS,
    "retryBudget",
    "retryBudget.percent",
    "retryBudget.minRetryConcurrency",
    "portLevelSettings",
    "portLevelSettings[].port",
    "portLevelSettings[].port.number",
    *(f"portLevelSettings[].{p}" for p in _POLICY_SECTIONS),
)
_SOURCE = ("principals", "requestPrincipals", "namespaces", "ipBlocks", "remoteIpBlocks")
_WORKLOAD = ("address", "ports.*", "labels.*", "locality", "weight", "serviceAccount", "network")

#: Honoured paths per kind (every Istio kind the control plane reads).
SUPPORTED: Mapping[str, frozenset[str]] = {
    kind: frozenset(_COMMON + paths)
    for kind, paths in {
        "VirtualService": (
            "spec",
            "spec.hosts.*",
            "spec.gateways.*",
            *_under("spec.http", ()),
            *(f"spec.http[].{p}" for p in _HTTP_ROUTE),
        ),
        "DestinationRule": (
            "spec",
            "spec.host",
            *_under("spec.trafficPolicy", _TRAFFIC_POLICY),
            "spec.subsets",
            "spec.subsets[].name",
            "spec.subsets[].labels.*",
            *_under("spec.subsets[].trafficPolicy", _TRAFFIC_POLICY),
        ),
        "ServiceEntry": (
            "spec",
            "spec.hosts.*",
            "spec.addresses.*",
            "spec.ports",
            *(f"spec.ports[].{p}" for p in ("name", "number", "protocol", "targetPort")),
            "spec.location",
            "spec.resolution",
            "spec.endpoints",
            *(f"spec.endpoints[].{p}" for p in _WORKLOAD),
            "spec.workloadSelector",
            "spec.workloadSelector.labels.*",
        ),
        "WorkloadEntry": (
            "spec",
            *(f"spec.{p}" for p in _WORKLOAD),
        ),
        "Sidecar": (
            "spec",
            "spec.egress",
            "spec.egress[].hosts.*",
            "spec.workloadSelector",
            "spec.workloadSelector.labels.*",
        ),
        "PeerAuthentication": (
            "spec",
            "spec.mtls",
            "spec.mtls.mode",
            "spec.portLevelMtls",
            "spec.portLevelMtls{}.mode",
            "spec.selector",
            "spec.selector.matchLabels.*",
        ),
        "RequestAuthentication": (
            "spec",
            "spec.selector",
            "spec.selector.matchLabels.*",
            "spec.jwtRules",
            *(
                f"spec.jwtRules[].{p}"
                for p in (
                    "issuer",
                    "audiences.*",
                    "jwksUri",
                    "jwks_uri",
                    "jwks",
                    "fromHeaders",
                    "fromHeaders[].name",
                    "fromHeaders[].prefix",
                    "fromParams.*",
                    "fromCookies.*",
                    "outputPayloadToHeader",
                    "outputClaimToHeaders",
                    "outputClaimToHeaders[].header",
                    "outputClaimToHeaders[].claim",
                    "forwardOriginalToken",
                    "timeout",
                    "spaceDelimitedClaims.*",
                )
            ),
        ),
        "AuthorizationPolicy": (
            "spec",
            "spec.action",
            "spec.provider",
            "spec.provider.name",
            "spec.selector",
            "spec.selector.matchLabels.*",
            "spec.rules",
            "spec.rules[].from",
            "spec.rules[].from[].source",
            *(
                f"spec.rules[].from[].source.{p}.*"
                for s in _SOURCE
                for p in (s, "not" + s[0].upper() + s[1:])
            ),
            "spec.rules[].to",
            "spec.rules[].to[].operation",
            *(
                f"spec.rules[].to[].operation.{p}.*"
                for s in ("hosts", "ports", "methods", "paths")
                for p in (s, "not" + s[0].upper() + s[1:])
            ),
            "spec.rules[].when",
            "spec.rules[].when[].key",
            "spec.rules[].when[].values.*",
            "spec.rules[].when[].notValues.*",
        ),
    }.items()
}


def _covered(pattern: str, supported: frozenset[str]) -> bool:
    if pattern in supported:
        return True
    # A listed ``a.b.*`` covers ``a.b`` and everything beneath it.
    parts = pattern
    while parts:
        if f"{parts}.*" in supported:
            return True
        cut = max(parts.rfind("."), parts.rfind("["), parts.rfind("{"))
        if cut <= 0:
            break
        parts = parts[:cut]
    return False


def _walk(value: Any, schema: Any, pattern: str, path: str) -> Iterator[tuple[str, str]]:
    """(pattern, path) of every field under ``value``, told map from object by ``schema``."""
    node = schema if isinstance(schema, Mapping) else {}
    if isinstance(value, Mapping):
        props = node.get("properties")
        extra = node.get("additionalProperties")
        for key, sub in value.items():
            if props is None and isinstance(extra, Mapping):  # a map: ``{}`` for its values
                here, sub_schema = f"{pattern}{{}}", extra
            else:
                here = f"{pattern}.{key}" if pattern else str(key)
                sub_schema = (props or {}).get(key, {})
            where = f"{path}.{key}" if path else str(key)
            if here.endswith("{}"):
                yield from _walk(sub, sub_schema, here, where)
                continue
            yield here, where
            yield from _walk(sub, sub_schema, here, where)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _walk(sub, node.get("items", {}), f"{pattern}[]", f"{path}[{i}]")


def unsupported_fields(
    kind: str, doc: Mapping[str, Any], schema: Mapping[str, Any] | None
) -> list[FieldError]:
    """A "not supported by meshlib" error for each field of ``doc`` meshlib does not honour.

    Only the outermost unsupported field of a subtree is reported.
    """
    supported = SUPPORTED.get(kind)
    if supported is None:
        return []
    out: list[FieldError] = []
    refused: list[str] = []
    for pattern, path in _walk(doc, schema or {}, "", ""):
        if any(path.startswith(p) and path[len(p) : len(p) + 1] in (".", "[") for p in refused):
            continue
        if not _covered(pattern, supported):
            refused.append(path)
            out.append(FieldError(path, "not supported by meshlib"))
    return out
