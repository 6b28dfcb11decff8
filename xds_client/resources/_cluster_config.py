"""Cluster sub-configurations: circuit breakers and outlier detection.

Each model carries Envoy's documented defaults, so an unset field means what it means to
Envoy. Decoders raise ResourceError through the ``fail(field, problem)`` callback they are
given, with the field path relative to the Cluster. The load-balancing policy is decoded
in ``_lb_config`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2

from ._base import ResourceError
from ._lb_config import PEAK_EWMA_TYPE_URL, LbConfig, SlowStart, ZoneAware, decode_lb_config

__all__ = [
    "PEAK_EWMA_TYPE_URL",
    "CircuitThresholds",
    "LbConfig",
    "OutlierDetection",
    "RetryBudget",
    "SlowStart",
    "ZoneAware",
    "decode_circuit_breakers",
    "decode_lb_config",
    "decode_outlier_detection",
]

Fail = Callable[[str, str], ResourceError]


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
