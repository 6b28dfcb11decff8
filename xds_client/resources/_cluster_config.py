"""Cluster sub-configurations: load-balancing policy, circuit breakers, outlier detection.

Each model carries Envoy's documented defaults, so an unset field means what it means to
Envoy. Decoders raise ResourceError through the ``fail(field, problem)`` callback they are
given, with the field path relative to the Cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from google.protobuf import json_format
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from ._base import ResourceError

__all__ = [
    "PEAK_EWMA_TYPE_URL",
    "CircuitThresholds",
    "LbConfig",
    "OutlierDetection",
    "RetryBudget",
    "decode_circuit_breakers",
    "decode_lb_config",
    "decode_outlier_detection",
]

Fail = Callable[[str, str], ResourceError]

#: meshlib's own policy: peak-EWMA latency-aware power of two choices (Finagle, Linkerd).
#: Select it with a ``load_balancing_policy`` entry whose typed_config is an
#: ``xds.type.v3.TypedStruct`` (or ``udpa.type.v1.TypedStruct``) with this ``type_url``;
#: its optional ``value`` fields: ``decay_time`` (seconds, default 10), ``default_rtt``
#: (seconds, cost of an endpoint with no latency seen yet, default 0.05).
PEAK_EWMA_TYPE_URL = "type.googleapis.com/meshlib.balancing.PeakEwma"

MIN_RING, MAX_RING = 1024, 8_388_608


@dataclass(frozen=True, slots=True)
class LbConfig:
    """The cluster's load-balancing policy and its parameters (Envoy defaults)."""

    policy: str = (
        "ROUND_ROBIN"  # ROUND_ROBIN LEAST_REQUEST RANDOM RING_HASH MAGLEV PICK_FIRST PEAK_EWMA
    )
    choice_count: int = 2
    active_request_bias: float = 1.0
    min_ring_size: int = MIN_RING
    max_ring_size: int = MAX_RING
    hash_function: str = "XX_HASH"
    table_size: int = 65_537
    shuffle_address_list: bool = False
    decay_time: float = 10.0
    default_rtt: float = 0.05
    locality_weighted: bool = (
        False  # use locality weights (wrr_locality, locality_weighted_lb_config)
    )


@dataclass(frozen=True, slots=True)
class RetryBudget:
    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class CircuitThresholds:
    """One ``circuit_breakers.thresholds`` entry (per routing priority)."""

    priority: str = "DEFAULT"
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    retry_budget: RetryBudget | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Envoy's outlier detection; durations in seconds, percentages 0-100."""

    consecutive_5xx: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    enforcing_consecutive_5xx: int = 100
    enforcing_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900  # divided by 1000
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_local_origin_success_rate: int = 100
    failure_percentage_threshold: int = 85
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    max_ejection_time: float = 300.0
    max_ejection_time_jitter: float = 0.0
    always_eject_one_host: bool = False


def _u(msg: Any, field: str, default: int) -> int:
    return int(getattr(msg, field).value) if msg.HasField(field) else default


def _dur(msg: Any, field: str, default: float) -> float:
    if not msg.HasField(field):
        return default
    d = getattr(msg, field)
    return float(d.seconds) + float(d.nanos) / 1e9


# -- load balancing ---------------------------------------------------------------------
_LEGACY = {
    cluster_pb2.Cluster.ROUND_ROBIN: "ROUND_ROBIN",
    cluster_pb2.Cluster.LEAST_REQUEST: "LEAST_REQUEST",
    cluster_pb2.Cluster.RING_HASH: "RING_HASH",
    cluster_pb2.Cluster.RANDOM: "RANDOM",
    cluster_pb2.Cluster.MAGLEV: "MAGLEV",
}
_HASH_FUNCTIONS = {0: "XX_HASH", 1: "MURMUR_HASH_2"}


def _ring(policy_msg: Any, path: str, fail: Fail) -> dict[str, Any]:
    lo = _u(policy_msg, "minimum_ring_size", MIN_RING)
    hi = _u(policy_msg, "maximum_ring_size", MAX_RING)
    if not 0 < lo <= MAX_RING:
        raise fail(f"{path}.minimum_ring_size", f"must be 1-{MAX_RING}, got {lo}")
    if not 0 < hi <= MAX_RING:
        raise fail(f"{path}.maximum_ring_size", f"must be 1-{MAX_RING}, got {hi}")
    if lo > hi:
        raise fail(f"{path}.minimum_ring_size", f"{lo} exceeds maximum_ring_size {hi}")
    fn = _HASH_FUNCTIONS.get(policy_msg.hash_function)
    if fn is None:
        raise fail(f"{path}.hash_function", f"unsupported value {policy_msg.hash_function}")
    return {"policy": "RING_HASH", "min_ring_size": lo, "max_ring_size": hi, "hash_function": fn}


def _least_request(msg: Any, path: str, fail: Fail) -> dict[str, Any]:
    choices = _u(msg, "choice_count", 2)
    if choices < 2:
        raise fail(f"{path}.choice_count", f"must be at least 2, got {choices}")
    bias = msg.active_request_bias.default_value if msg.HasField("active_request_bias") else 1.0
    if not math.isfinite(bias) or bias < 0:
        raise fail(f"{path}.active_request_bias", f"must not be negative, got {bias}")
    return {"policy": "LEAST_REQUEST", "choice_count": choices, "active_request_bias": bias}


def _maglev(msg: Any, path: str, fail: Fail) -> dict[str, Any]:
    size = _u(msg, "table_size", 65_537)
    if size > 5_000_011:
        raise fail(f"{path}.table_size", f"must be at most 5000011, got {size}")
    if size < 2 or any(size % p == 0 for p in range(2, math.isqrt(size) + 1)):
        raise fail(f"{path}.table_size", f"must be a prime number, got {size}")
    return {"policy": "MAGLEV", "table_size": size}


def _peak_ewma(value: Any, path: str, fail: Fail) -> dict[str, Any]:
    fields = json_format.MessageToDict(value)
    out: dict[str, Any] = {"policy": "PEAK_EWMA"}
    for key in ("decay_time", "default_rtt"):
        if key in fields:
            v = fields.pop(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1e6:
                raise fail(f"{path}.value.{key}", f"must be a positive number of seconds: {v!r}")
            out[key] = float(v)
    if fields:
        raise fail(f"{path}.value", f"unknown field(s) {sorted(fields)}")
    return out


def _typed_policy(any_msg: Any, path: str, fail: Fail, depth: int = 0) -> dict[str, Any] | None:
    """Decode one typed LB policy; None when the type is not supported (try the next)."""
    type_url = any_msg.type_url
    simple: dict[str, tuple[type[Any], Callable[[Any, str, Fail], dict[str, Any]]]] = {
        "round_robin.v3.RoundRobin": (round_robin_pb2.RoundRobin, lambda m, p, f: {}),
        "random.v3.Random": (random_pb2.Random, lambda m, p, f: {"policy": "RANDOM"}),
        "least_request.v3.LeastRequest": (least_request_pb2.LeastRequest, _least_request),
        "ring_hash.v3.RingHash": (ring_hash_pb2.RingHash, _ring),
        "maglev.v3.Maglev": (maglev_pb2.Maglev, _maglev),
        "pick_first.v3.PickFirst": (
            pick_first_pb2.PickFirst,
            lambda m, p, f: {
                "policy": "PICK_FIRST",
                "shuffle_address_list": m.shuffle_address_list,
            },
        ),
    }
    prefix = "type.googleapis.com/envoy.extensions.load_balancing_policies."
    if type_url.startswith(prefix) and type_url[len(prefix) :] in simple:
        cls, decode = simple[type_url[len(prefix) :]]
        msg = cls()
        if not any_msg.Unpack(msg):
            raise fail(path, f"cannot decode {type_url}")
        out = decode(msg, path, fail)
        locality = getattr(msg, "locality_lb_config", None)
        if locality is not None and msg.HasField("locality_lb_config"):
            out["locality_weighted"] = locality.HasField("locality_weighted_lb_config")
        if getattr(msg, "locality_weighted_lb_config", None) is not None and msg.HasField(
            "locality_weighted_lb_config"
        ):
            out["locality_weighted"] = True
        return out
    if type_url == prefix + "wrr_locality.v3.WrrLocality":
        if depth > 0:
            raise fail(path, "wrr_locality cannot nest")
        msg = wrr_locality_pb2.WrrLocality()
        if not any_msg.Unpack(msg):
            raise fail(path, f"cannot decode {type_url}")
        child = _policy_list(
            msg.endpoint_picking_policy, f"{path}.endpoint_picking_policy", fail, depth + 1
        )
        return {**child, "locality_weighted": True}
    for cls in (typed_struct_pb2.TypedStruct, udpa_typed_struct_pb2.TypedStruct):
        if type_url == f"type.googleapis.com/{cls.DESCRIPTOR.full_name}":
            ts = cls()
            if not any_msg.Unpack(ts):
                raise fail(path, f"cannot decode {type_url}")
            if ts.type_url == PEAK_EWMA_TYPE_URL:
                return _peak_ewma(ts.value, path, fail)
            return None
    return None


def _policy_list(lbp: Any, path: str, fail: Fail, depth: int = 0) -> dict[str, Any]:
    seen = []
    for i, p in enumerate(lbp.policies):
        tec = p.typed_extension_config
        found = _typed_policy(
            tec.typed_config,
            f"{path}.policies[{i}].typed_extension_config.typed_config",
            fail,
            depth,
        )
        if found is not None:
            return found
        seen.append(tec.typed_config.type_url or "<empty>")
    raise fail(f"{path}.policies", f"no supported policy among {seen}")


def decode_lb_config(msg: cluster_pb2.Cluster, fail: Fail) -> LbConfig:
    """The policy from ``load_balancing_policy`` if set (it wins), else ``lb_policy``."""
    locality_weighted = msg.common_lb_config.HasField("locality_weighted_lb_config")
    if msg.HasField("load_balancing_policy"):
        fields = _policy_list(msg.load_balancing_policy, "load_balancing_policy", fail)
        return LbConfig(**{"locality_weighted": locality_weighted, **fields})
    policy = _LEGACY.get(msg.lb_policy)
    if policy is None:
        name = (
            cluster_pb2.Cluster.LbPolicy.Name(msg.lb_policy)
            if msg.lb_policy in (cluster_pb2.Cluster.LbPolicy.values())
            else str(msg.lb_policy)
        )
        raise fail("lb_policy", f"unsupported value {name}")
    fields = {"policy": policy}
    which = msg.WhichOneof("lb_config")
    if policy == "LEAST_REQUEST" and which == "least_request_lb_config":
        fields = _least_request(msg.least_request_lb_config, "least_request_lb_config", fail)
    elif policy == "RING_HASH" and which == "ring_hash_lb_config":
        fields = _ring(msg.ring_hash_lb_config, "ring_hash_lb_config", fail)
    elif policy == "MAGLEV" and which == "maglev_lb_config":
        fields = _maglev(msg.maglev_lb_config, "maglev_lb_config", fail)
    return LbConfig(locality_weighted=locality_weighted, **fields)


# -- circuit breakers -------------------------------------------------------------------
def decode_circuit_breakers(msg: cluster_pb2.Cluster, fail: Fail) -> tuple[CircuitThresholds, ...]:
    """One entry per routing priority present (DEFAULT first); defaults when absent."""
    out: dict[str, CircuitThresholds] = {}
    for i, t in enumerate(msg.circuit_breakers.thresholds):
        path = f"circuit_breakers.thresholds[{i}]"
        if t.priority not in base_pb2.RoutingPriority.values():
            raise fail(f"{path}.priority", f"unknown routing priority {t.priority}")
        prio = base_pb2.RoutingPriority.Name(t.priority)
        if prio in out:
            raise fail(f"{path}.priority", f"duplicate thresholds for priority {prio}")
        budget = None
        if t.HasField("retry_budget"):
            rb = t.retry_budget
            pct = rb.budget_percent.value if rb.HasField("budget_percent") else 20.0
            if not 0.0 <= pct <= 100.0:
                raise fail(f"{path}.retry_budget.budget_percent", f"must be 0-100, got {pct}")
            budget = RetryBudget(pct, _u(rb, "min_retry_concurrency", 3))
        out[prio] = CircuitThresholds(
            prio,
            _u(t, "max_connections", 1024),
            _u(t, "max_pending_requests", 1024),
            _u(t, "max_requests", 1024),
            _u(t, "max_retries", 3),
            budget,
        )
    out.setdefault("DEFAULT", CircuitThresholds())
    out.setdefault("HIGH", CircuitThresholds("HIGH"))
    return tuple(sorted(out.values(), key=lambda t: t.priority != "DEFAULT"))


# -- outlier detection ------------------------------------------------------------------
_PERCENTS = (
    "max_ejection_percent",
    "enforcing_consecutive_5xx",
    "enforcing_success_rate",
    "enforcing_consecutive_gateway_failure",
    "enforcing_consecutive_local_origin_failure",
    "enforcing_local_origin_success_rate",
    "failure_percentage_threshold",
    "enforcing_failure_percentage",
    "enforcing_failure_percentage_local_origin",
)
_DURATIONS = ("interval", "base_ejection_time", "max_ejection_time", "max_ejection_time_jitter")


def decode_outlier_detection(msg: cluster_pb2.Cluster, fail: Fail) -> OutlierDetection | None:
    """None when the cluster has no ``outlier_detection`` (then nothing is ejected)."""
    if not msg.HasField("outlier_detection"):
        return None
    od: outlier_detection_pb2.OutlierDetection = msg.outlier_detection
    defaults = OutlierDetection()
    values: dict[str, Any] = {}
    for f in OutlierDetection.__dataclass_fields__:
        default = getattr(defaults, f)
        if f in _DURATIONS:
            values[f] = _dur(od, f, default)
            if values[f] < 0 or (f == "interval" and od.HasField(f) and values[f] == 0):
                raise fail(f"outlier_detection.{f}", f"must be positive, got {values[f]}s")
        elif isinstance(default, bool):
            attr = getattr(od, f)
            values[f] = bool(attr.value if hasattr(attr, "value") else attr)
        else:
            values[f] = _u(od, f, default)
            if f in _PERCENTS and values[f] > 100:
                raise fail(f"outlier_detection.{f}", f"must be 0-100, got {values[f]}")
    if not od.HasField("max_ejection_time"):
        # Envoy: 300 s, or base_ejection_time if that is larger.
        values["max_ejection_time"] = max(300.0, values["base_ejection_time"])
    elif values["max_ejection_time"] < values["base_ejection_time"]:
        raise fail(
            "outlier_detection.max_ejection_time",
            f"{values['max_ejection_time']}s is below base_ejection_time "
            f"{values['base_ejection_time']}s",
        )
    return OutlierDetection(**values)
