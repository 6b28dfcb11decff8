"""DestinationRule ``loadBalancer.warmupDurationSecs`` / ``warmup`` -> Envoy slow start."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2

from meshlib.controlplane import ConfigError
from xds_client.resources import CLUSTER
from xds_client.resources.cluster import SlowStart

from .istio_support import cluster, cluster_of, load
from .test_istio_policy import dr


def slow_start_of(tmp_path: Path, policy: str) -> SlowStart | None:
    """The slow start meshlib decodes from the translated default cluster."""
    msg = cluster(load(tmp_path, dr(policy)), cluster_of())
    packed = any_pb2.Any()
    packed.Pack(msg)
    return CLUSTER.decode(packed)[1].lb.slow_start


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("loadBalancer: {warmupDurationSecs: 30s}", SlowStart(30.0)),
        ("loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 1m}", SlowStart(60.0)),
        ("loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 5s}", SlowStart(5.0)),
        ("loadBalancer: {simple: LEAST_CONN, warmupDurationSecs: 5s}", SlowStart(5.0)),
        (
            "loadBalancer: {simple: LEAST_REQUEST, warmup: "
            "{duration: 10s, minimumPercent: 20, aggression: 2}}",
            SlowStart(10.0, 2.0, 20.0),
        ),
        ("loadBalancer: {warmup: {duration: 2.5s}}", SlowStart(2.5)),
        ("loadBalancer: {simple: RANDOM, warmupDurationSecs: 5s}", None),  # Envoy: RR/LR only
        ("loadBalancer: {consistentHash: {useSourceIp: true}, warmupDurationSecs: 5s}", None),
        ("loadBalancer: {simple: ROUND_ROBIN}", None),
    ],
)
def test_warmup_becomes_slow_start(tmp_path: Path, policy: str, expected: SlowStart | None) -> None:
    assert slow_start_of(tmp_path, policy) == expected


def test_warmup_sets_envoys_fields(tmp_path: Path) -> None:
    policy = "loadBalancer: {warmup: {duration: 10s, minimumPercent: 5, aggression: 1.5}}"
    msg = cluster(load(tmp_path, dr(policy)), cluster_of())
    ss = msg.round_robin_lb_config.slow_start_config
    assert ss.slow_start_window.seconds == 10
    assert ss.aggression.default_value == 1.5 and ss.aggression.runtime_key
    assert ss.min_weight_percent.value == 5


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (
            "loadBalancer: {warmupDurationSecs: 5s, warmup: {duration: 5s}}",
            r"loadBalancer: set at most one of warmupDurationSecs, warmup",
        ),
        ("loadBalancer: {warmupDurationSecs: 0s}", r"loadBalancer\.warmupDurationSecs: must be"),
        ("loadBalancer: {warmupDurationSecs: soon}", r"loadBalancer\.warmupDurationSecs: "),
        ("loadBalancer: {warmup: {aggression: 2}}", r"loadBalancer\.warmup\.duration: is required"),
        (
            "loadBalancer: {warmup: {duration: 5s, aggression: 0}}",
            r"loadBalancer\.warmup\.aggression: must be above 0",
        ),
        (
            "loadBalancer: {warmup: {duration: 5s, minimumPercent: 150}}",
            r"loadBalancer\.warmup\.minimumPercent: must be between 0 and 100",
        ),
    ],
)
def test_bad_warmup_names_the_field(tmp_path: Path, policy: str, error: str) -> None:
    with pytest.raises(ConfigError, match=rf"spec\.trafficPolicy\.{error}"):
        load(tmp_path, dr(policy))
