"""Route policies: header mutations, retry, hash, mirror, max stream duration and the HTTP
fault filter's config. Validated models; meshlib compiles them into decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import any_pb2

from ._matchers import (
    Fail,
    HeaderMatch,
    Percent,
    decode_header_matcher,
    decode_percent,
    decode_regex,
)

__all__ = [
    "FAULT_FILTER_TYPE",
    "RETRY_ON_GRPC",
    "RETRY_ON_HTTP",
    "FaultAbort",
    "FaultConfig",
    "FaultDelay",
    "HashPolicy",
    "HeaderMutations",
    "HeaderToAdd",
    "MaxStreamDuration",
    "MirrorPolicy",
    "RetryPolicy",
    "decode_fault",
    "decode_fault_overrides",
    "decode_hash_policy",
    "decode_max_stream_duration",
    "decode_mirror_policy",
    "decode_mutations",
    "decode_retry_policy",
    "seconds",
]

FAULT_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
_FILTER_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
RETRY_ON_HTTP = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
    }
)
RETRY_ON_GRPC = frozenset(
    {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)
_APPEND_ACTIONS = (
    "append_if_exists_or_add",
    "add_if_absent",
    "overwrite_if_exists_or_add",
    "overwrite_if_exists",
)


def seconds(msg: Any, name: str, field: str, fail: Fail) -> float | None:
    """A Duration field in seconds (None when unset); negative durations are NACKed."""
    if not msg.HasField(name):
        return None
    d = getattr(msg, name)
    value = float(d.seconds) + float(d.nanos) / 1e9
    if value < 0:
        raise fail(f"{field}.{name}", f"must not be negative ({value}s)")
    return value


# -- header mutations --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HeaderToAdd:
    """One HeaderValueOption. ``action`` is Envoy's append_action, lower-cased."""

    name: str
    value: str
    action: str = "append_if_exists_or_add"
    keep_empty_value: bool = False


@dataclass(frozen=True, slots=True)
class HeaderMutations:
    """Headers to add/remove on the request and the response at one config level."""

    request_add: tuple[HeaderToAdd, ...] = ()
    request_remove: tuple[str, ...] = ()
    response_add: tuple[HeaderToAdd, ...] = ()
    response_remove: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.request_add or self.request_remove or self.response_add or self.response_remove
        )


def _adds(options: Any, field: str, fail: Fail) -> tuple[HeaderToAdd, ...]:
    out = []
    for i, o in enumerate(options):
        path = f"{field}[{i}]"
        name = str(o.header.key).lower()
        if not name:
            raise fail(f"{path}.header.key", "must not be empty")
        if name.startswith(":") or name == "host":
            raise fail(f"{path}.header.key", f"{name!r} cannot be set by a header mutation")
        if o.HasField("append"):
            action = _APPEND_ACTIONS[0] if o.append.value else _APPEND_ACTIONS[2]
        else:
            action = _APPEND_ACTIONS[int(o.append_action)]
        value = o.header.value if o.header.value else o.header.raw_value.decode("latin-1")
        out.append(HeaderToAdd(name, value, action, bool(o.keep_empty_value)))
    return tuple(out)


def _removes(names: Any, field: str, fail: Fail) -> tuple[str, ...]:
    out = []
    for i, n in enumerate(names):
        name = str(n).lower()
        if not name or name.startswith(":") or name == "host":
            raise fail(f"{field}[{i}]", f"{n!r} cannot be removed")
        out.append(name)
    return tuple(out)


def decode_mutations(msg: Any, field: str, fail: Fail) -> HeaderMutations:
    """The four *_headers_to_add/remove fields of a route, virtual host, route config or
    weighted cluster (``field`` is the path to ``msg``, ending in '.' or empty)."""
    return HeaderMutations(
        _adds(msg.request_headers_to_add, f"{field}request_headers_to_add", fail),
        _removes(msg.request_headers_to_remove, f"{field}request_headers_to_remove", fail),
        _adds(msg.response_headers_to_add, f"{field}response_headers_to_add", fail),
        _removes(msg.response_headers_to_remove, f"{field}response_headers_to_remove", fail),
    )


# -- retry policy ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy's RetryPolicy with its defaults applied (times in seconds)."""

    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float | None = None
    retriable_status_codes: frozenset[int] = frozenset()
    retriable_headers: tuple[HeaderMatch, ...] = ()
    retriable_request_headers: tuple[HeaderMatch, ...] = ()
    base_interval: float = 0.025
    max_interval: float = 0.25  # 10x base_interval unless set
    rate_limited_headers: tuple[tuple[str, str], ...] = ()  # (name, "seconds"|"unix_timestamp")
    rate_limited_max_interval: float = 0.0
    previous_hosts: bool = False
    host_selection_max_attempts: int = 1


def decode_retry_policy(
    rp: route_components_pb2.RetryPolicy, field: str, fail: Fail
) -> RetryPolicy:
    tokens = frozenset(t.strip() for t in rp.retry_on.split(",") if t.strip())
    retry_on = tokens & (RETRY_ON_HTTP | RETRY_ON_GRPC)  # unknown tokens are ignored
    num = rp.num_retries.value if rp.HasField("num_retries") else 1
    base, top = 0.025, None
    if rp.HasField("retry_back_off"):
        bo = rp.retry_back_off
        base = seconds(bo, "base_interval", f"{field}.retry_back_off", fail) or 0.0
        if base <= 0:
            raise fail(f"{field}.retry_back_off.base_interval", "must be greater than zero")
        top = seconds(bo, "max_interval", f"{field}.retry_back_off", fail)
        if top is not None and top < base:
            raise fail(
                f"{field}.retry_back_off.max_interval", "must be >= retry_back_off.base_interval"
            )
    rl_headers: tuple[tuple[str, str], ...] = ()
    rl_max = 0.0
    if rp.HasField("rate_limited_retry_back_off"):
        rl = rp.rate_limited_retry_back_off
        rl_path = f"{field}.rate_limited_retry_back_off"
        if not rl.reset_headers:
            raise fail(f"{rl_path}.reset_headers", "must list at least one header")
        for i, h in enumerate(rl.reset_headers):
            if not h.name:
                raise fail(f"{rl_path}.reset_headers[{i}].name", "must not be empty")
        rl_headers = tuple(
            (h.name.lower(), "unix_timestamp" if h.format == 1 else "seconds")
            for h in rl.reset_headers
        )
        rl_max = seconds(rl, "max_interval", rl_path, fail) or 300.0  # Envoy: 300 s default
        if rl_max <= 0:
            raise fail(f"{rl_path}.max_interval", "must be greater than zero")
    for i, code in enumerate(rp.retriable_status_codes):
        if not 100 <= code < 600:
            raise fail(f"{field}.retriable_status_codes[{i}]", f"not an HTTP status: {code}")
    previous = False
    for i, pred in enumerate(rp.retry_host_predicate):
        if not pred.name:
            raise fail(f"{field}.retry_host_predicate[{i}].name", "must not be empty")
        url = pred.typed_config.type_url if pred.HasField("typed_config") else ""
        previous |= pred.name.endswith("previous_hosts") or url.endswith("PreviousHostsPredicate")
    return RetryPolicy(
        retry_on=retry_on,
        num_retries=num,
        per_try_timeout=seconds(rp, "per_try_timeout", field, fail) or None,
        retriable_status_codes=frozenset(rp.retriable_status_codes),
        retriable_headers=tuple(
            decode_header_matcher(m, f"{field}.retriable_headers[{i}]", fail)
            for i, m in enumerate(rp.retriable_headers)
        ),
        retriable_request_headers=tuple(
            decode_header_matcher(m, f"{field}.retriable_request_headers[{i}]", fail)
            for i, m in enumerate(rp.retriable_request_headers)
        ),
        base_interval=base,
        max_interval=top if top is not None else 10 * base,
        rate_limited_headers=rl_headers,
        rate_limited_max_interval=rl_max,
        previous_hosts=previous,
        host_selection_max_attempts=max(1, int(rp.host_selection_retry_max_attempts)),
    )


# -- hash, mirror, max stream duration ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class HashPolicy:
    """One hash_policy entry: ``kind`` is header, cookie, source_ip, query_parameter or
    filter_state; ``name`` the header/cookie/parameter/key."""

    kind: str
    name: str = ""
    terminal: bool = False
    regex_rewrite: tuple[str, str] | None = None  # header only: (pattern, substitution)


def decode_hash_policy(hp: Any, field: str, fail: Fail) -> HashPolicy:
    which = hp.WhichOneof("policy_specifier")
    terminal = bool(hp.terminal)
    if which == "header":
        if not hp.header.header_name:
            raise fail(f"{field}.header.header_name", "must not be empty")
        rewrite = None
        if hp.header.HasField("regex_rewrite"):
            rr = hp.header.regex_rewrite
            pattern = decode_regex(rr.pattern, f"{field}.header.regex_rewrite.pattern", fail)
            rewrite = (pattern, rr.substitution)
        return HashPolicy("header", hp.header.header_name.lower(), terminal, rewrite)
    if which == "cookie":
        if not hp.cookie.name:
            raise fail(f"{field}.cookie.name", "must not be empty")
        return HashPolicy("cookie", hp.cookie.name, terminal)
    if which == "connection_properties":
        return HashPolicy("source_ip" if hp.connection_properties.source_ip else "none")
    if which == "query_parameter":
        if not hp.query_parameter.name:
            raise fail(f"{field}.query_parameter.name", "must not be empty")
        return HashPolicy("query_parameter", hp.query_parameter.name, terminal)
    if which == "filter_state":
        return HashPolicy("filter_state", hp.filter_state.key, terminal)
    raise fail(field, "a policy specifier (header, cookie, ...) is required")


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """Shadow a share of requests to ``cluster`` (fire and forget)."""

    cluster: str
    percent: Percent | None = None  # None: every request
    shadow_suffix: bool = True  # append "-shadow" to the host
    host_rewrite_literal: str = ""


def decode_mirror_policy(mp: Any, field: str, fail: Fail) -> MirrorPolicy:
    if mp.cluster_header:
        raise fail(f"{field}.cluster_header", "mirroring by cluster_header is not supported")
    if not mp.cluster:
        raise fail(f"{field}.cluster", "must not be empty")
    percent = None
    if mp.HasField("runtime_fraction"):
        percent = decode_percent(
            mp.runtime_fraction.default_value, f"{field}.runtime_fraction.default_value", fail
        )
    return MirrorPolicy(
        mp.cluster, percent, not mp.disable_shadow_host_suffix_append, mp.host_rewrite_literal
    )


@dataclass(frozen=True, slots=True)
class MaxStreamDuration:
    max_stream_duration: float | None = None  # 0 or None: no limit
    grpc_timeout_header_max: float | None = None  # set: honour grpc-timeout (0 = uncapped)
    grpc_timeout_header_offset: float | None = None


def decode_max_stream_duration(a: Any, field: str, fail: Fail) -> MaxStreamDuration | None:
    """RouteAction.max_stream_duration, or the deprecated max_grpc_timeout/offset pair."""
    if a.HasField("max_stream_duration"):
        m, path = a.max_stream_duration, f"{field}.max_stream_duration"
        return MaxStreamDuration(
            seconds(m, "max_stream_duration", path, fail),
            seconds(m, "grpc_timeout_header_max", path, fail),
            seconds(m, "grpc_timeout_header_offset", path, fail),
        )
    if a.HasField("max_grpc_timeout"):
        return MaxStreamDuration(
            None,
            seconds(a, "max_grpc_timeout", field, fail),
            seconds(a, "grpc_timeout_offset", field, fail),
        )
    return None


# -- the HTTP fault filter ---------------------------------------------------------------
_NEVER = Percent(0)


@dataclass(frozen=True, slots=True)
class FaultDelay:
    fixed: float | None  # seconds; None with ``header``: x-envoy-fault-delay-request
    header: bool = False
    percent: Percent = _NEVER


@dataclass(frozen=True, slots=True)
class FaultAbort:
    http_status: int | None = None
    grpc_status: int | None = None
    header: bool = False  # x-envoy-fault-abort-request / -abort-grpc-request
    percent: Percent = _NEVER


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """envoy.extensions.filters.http.fault.v3.HTTPFault."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    upstream_cluster: str = ""
    headers: tuple[HeaderMatch, ...] = ()
    max_active_faults: int | None = None


def decode_fault(msg: fault_pb2.HTTPFault, field: str, fail: Fail) -> FaultConfig:
    delay = abort = None
    if msg.HasField("delay"):
        d, path = msg.delay, f"{field}.delay"
        which = d.WhichOneof("fault_delay_secifier")
        if which is None:
            raise fail(path, "fixed_delay or header_delay is required")
        fixed = seconds(d, "fixed_delay", path, fail) if which == "fixed_delay" else None
        percent = decode_percent(d.percentage, f"{path}.percentage", fail)
        delay = FaultDelay(fixed, which == "header_delay", percent)
    if msg.HasField("abort"):
        a, path = msg.abort, f"{field}.abort"
        which = a.WhichOneof("error_type")
        if which is None:
            raise fail(path, "http_status, grpc_status or header_abort is required")
        if which == "http_status" and not 200 <= a.http_status < 600:
            raise fail(f"{path}.http_status", f"must be in [200, 600): {a.http_status}")
        abort = FaultAbort(
            a.http_status if which == "http_status" else None,
            a.grpc_status if which == "grpc_status" else None,
            which == "header_abort",
            decode_percent(a.percentage, f"{path}.percentage", fail),
        )
    return FaultConfig(
        delay,
        abort,
        msg.upstream_cluster,
        tuple(
            decode_header_matcher(h, f"{field}.headers[{i}]", fail)
            for i, h in enumerate(msg.headers)
        ),
        msg.max_active_faults.value if msg.HasField("max_active_faults") else None,
    )


def per_filter_config(
    configs: Mapping[str, any_pb2.Any], type_url: str
) -> tuple[str, any_pb2.Any] | None:
    """``(key, config)`` of the first (by key) typed_per_filter_config entry of
    ``type_url``, plain or in a FilterConfig; None when there is none."""
    for key in sorted(configs):
        cfg = configs[key]
        if cfg.type_url == _FILTER_CONFIG_TYPE:
            wrapper = route_components_pb2.FilterConfig()
            cfg.Unpack(wrapper)
            cfg = wrapper.config
        if cfg.type_url == type_url:
            return key, cfg
    return None


def decode_fault_overrides(
    configs: Mapping[str, any_pb2.Any], field: str, fail: Fail
) -> FaultConfig | None:
    """The HTTPFault among a typed_per_filter_config map (plain or in a FilterConfig)."""
    found = per_filter_config(configs, FAULT_FILTER_TYPE)
    if found is None:
        return None
    key, cfg = found
    msg = fault_pb2.HTTPFault()
    if not cfg.Unpack(msg):
        raise fail(f"{field}[{key!r}]", "cannot decode HTTPFault")
    return decode_fault(msg, f"{field}[{key!r}]", fail)
