"""A cluster's load-balancing policy: ``lb_policy`` + ``*_lb_config``, or the typed
``load_balancing_policy`` extensions, with slow start and zone-aware settings.

Each model carries Envoy's documented defaults, so an unset field means what it means to
Envoy. Decoders raise ResourceError through the ``fail(field, problem)`` callback they are
given, with the field path relative to the Cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
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

__all__ = ["PEAK_EWMA_TYPE_URL", "LbConfig", "SlowStart", "ZoneAware", "decode_lb_config"]

Fail = Callable[[str, str], ResourceError]

#: meshlib's own policy: peak-EWMA latency-aware power of two choices (Finagle, Linkerd).
#: Select it with a ``load_balancing_policy`` entry whose typed_config is an
#: ``xds.type.v3.TypedStruct`` (or ``udpa.type.v1.TypedStruct``) with this ``type_url``;
#: its optional ``value`` fields: ``decay_time`` (seconds, default 10), ``default_rtt``
#: (seconds, cost of an endpoint with no latency seen yet, default 0.05).
PEAK_EWMA_TYPE_URL = "type.googleapis.com/meshlib.balancing.PeakEwma"

MIN_RING, MAX_RING = 1024, 8_388_608


@dataclass(frozen=True, slots=True)
class SlowStart:
    """``slow_start_config`` (ROUND_ROBIN, LEAST_REQUEST): an endpoint that joined the
    cluster less than ``window`` seconds ago gets ``weight x max(min_weight_percent/100,
    (age / window) ** (1 / aggression))``."""

    window: float
    aggression: float = 1.0
    min_weight_percent: float = 10.0


@dataclass(frozen=True, slots=True)
class ZoneAware:
    """Zone-aware routing settings (``common_lb_config.zone_aware_lb_config`` or a typed
    policy's ``locality_lb_config.zone_aware_lb_config``). Envoy routes zone-aware with
    these defaults whenever it knows its local cluster, unless locality weighting is on."""

    routing_enabled: float = 100.0  # percent of requests considered
    min_cluster_size: int = 6  # healthy upstream hosts at priority 0
    fail_traffic_on_panic: bool = False
    by_weight: bool = False  # locality_basis HEALTHY_HOSTS_WEIGHT (else host counts)
    force_local_zone_min_size: int | None = None  # force_local_zone.min_size


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
    slow_start: SlowStart | None = None  # None: off (no config, or a zero window)
    zone_aware: ZoneAware = field(default_factory=ZoneAware)


def _u(msg: Any, field: str, default: int) -> int:
    return int(getattr(msg, field).value) if msg.HasField(field) else default


def _percent(msg: Any, field: str, default: float, path: str, fail: Fail) -> float:
    value = float(getattr(msg, field).value) if msg.HasField(field) else default
    if not 0.0 <= value <= 100.0:  # also rejects NaN
        raise fail(f"{path}.{field}.value", f"must be 0-100, got {value}")
    return value


def _slow_start(msg: Any, path: str, fail: Fail) -> SlowStart | None:
    """A SlowStartConfig (both proto packages have the same fields)."""
    w = msg.slow_start_window
    window = float(w.seconds) + float(w.nanos) / 1e9
    if window < 0 or w.nanos < 0 or w.nanos >= 1_000_000_000:
        raise fail(f"{path}.slow_start_window", f"must be a non-negative duration, got {w}")
    aggression = msg.aggression.default_value if msg.HasField("aggression") else 1.0
    if not math.isfinite(aggression) or aggression <= 0:
        aggression = 1.0  # Envoy accepts the config and falls back to 1.0 at run time
    minimum = _percent(msg, "min_weight_percent", 10.0, path, fail)
    if window == 0:
        return None  # Envoy: slow start is on only for a positive window
    return SlowStart(window, aggression, minimum)


def _zone_aware(msg: Any, path: str, fail: Fail) -> ZoneAware:
    basis = getattr(msg, "locality_basis", 0)
    if basis not in (0, 1):
        raise fail(f"{path}.locality_basis", f"unsupported value {basis}")
    force: int | None = None
    if getattr(msg, "force_local_zone", None) is not None and msg.HasField("force_local_zone"):
        force = _u(msg.force_local_zone, "min_size", 1)
        if force < 1:
            raise fail(f"{path}.force_local_zone.min_size", f"must be at least 1, got {force}")
    return ZoneAware(
        routing_enabled=_percent(msg, "routing_enabled", 100.0, path, fail),
        min_cluster_size=_u(msg, "min_cluster_size", 6),
        fail_traffic_on_panic=msg.fail_traffic_on_panic,
        by_weight=basis == 1,
        force_local_zone_min_size=force,
    )


def _with_slow_start(out: dict[str, Any], msg: Any, path: str, fail: Fail) -> dict[str, Any]:
    if msg.HasField("slow_start_config"):
        out["slow_start"] = _slow_start(msg.slow_start_config, f"{path}.slow_start_config", fail)
    return out


# -- policies -----------------------------------------------------------------------------
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


def _round_robin(msg: Any, path: str, fail: Fail) -> dict[str, Any]:
    return _with_slow_start({"policy": "ROUND_ROBIN"}, msg, path, fail)


def _least_request(msg: Any, path: str, fail: Fail) -> dict[str, Any]:
    choices = _u(msg, "choice_count", 2)
    if choices < 2:
        raise fail(f"{path}.choice_count", f"must be at least 2, got {choices}")
    bias = msg.active_request_bias.default_value if msg.HasField("active_request_bias") else 1.0
    if not math.isfinite(bias) or bias < 0:
        raise fail(f"{path}.active_request_bias", f"must not be negative, got {bias}")
    out = {"policy": "LEAST_REQUEST", "choice_count": choices, "active_request_bias": bias}
    return _with_slow_start(out, msg, path, fail)


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


def _locality(msg: Any, path: str, fail: Fail, out: dict[str, Any]) -> None:
    """A typed policy's ``locality_lb_config``: weighted localities or zone-aware."""
    if getattr(msg, "locality_lb_config", None) is None or not msg.HasField("locality_lb_config"):
        return
    loc = msg.locality_lb_config
    out["locality_weighted"] = loc.HasField("locality_weighted_lb_config")
    if loc.HasField("zone_aware_lb_config"):
        out["zone_aware"] = _zone_aware(
            loc.zone_aware_lb_config, f"{path}.locality_lb_config.zone_aware_lb_config", fail
        )


def _typed_policy(any_msg: Any, path: str, fail: Fail, depth: int = 0) -> dict[str, Any] | None:
    """Decode one typed LB policy; None when the type is not supported (try the next)."""
    type_url = any_msg.type_url
    simple: dict[str, tuple[type[Any], Callable[[Any, str, Fail], dict[str, Any]]]] = {
        "round_robin.v3.RoundRobin": (round_robin_pb2.RoundRobin, _round_robin),
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
        _locality(msg, path, fail, out)
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
    common = msg.common_lb_config
    base: dict[str, Any] = {
        "locality_weighted": common.HasField("locality_weighted_lb_config"),
    }
    if common.HasField("zone_aware_lb_config"):
        path = "common_lb_config.zone_aware_lb_config"
        base["zone_aware"] = _zone_aware(common.zone_aware_lb_config, path, fail)
    if msg.HasField("load_balancing_policy"):
        fields = _policy_list(msg.load_balancing_policy, "load_balancing_policy", fail)
        return LbConfig(**{**base, **fields})
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
    elif policy == "ROUND_ROBIN" and which == "round_robin_lb_config":
        fields = _round_robin(msg.round_robin_lb_config, "round_robin_lb_config", fail)
    elif policy == "RING_HASH" and which == "ring_hash_lb_config":
        fields = _ring(msg.ring_hash_lb_config, "ring_hash_lb_config", fail)
    elif policy == "MAGLEV" and which == "maglev_lb_config":
        fields = _maglev(msg.maglev_lb_config, "maglev_lb_config", fail)
    return LbConfig(**{**base, **fields})
