"""The per-endpoint pybreaker breaker: in memory, and shared between replicas via Redis.

The Redis tests run a real redis-server (Debian's package: installed with apt-get when it
is not on PATH) on a unix socket in the test's temporary directory.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from meshlib._outcome import Outcome, OutcomeKind
from meshlib.cluster import EndpointState
from meshlib.resilience.endpoint_breaker import EndpointBreakers
from xds_client.resources import Endpoint

FAIL = Outcome(OutcomeKind.RESPONSE, 503)
RESET = Outcome(OutcomeKind.RESET)
OK = Outcome(OutcomeKind.RESPONSE, 200)
LOCAL = Outcome(OutcomeKind.LOCAL)


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "redis-server"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        found = shutil.which("redis-server")
    assert found is not None, "redis-server not installed"
    return found


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("redis")
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"unix://{sock}"

        def up() -> bool:
            try:
                return bool(redis.Redis.from_url(url).ping())
            except redis.ConnectionError:
                return False

        wait_for(up, "redis-server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_opens_after_fail_max_consecutive_failures_and_ignores_local() -> None:
    b = EndpointBreakers(fail_max=3, reset_timeout=60).create("c", "10.0.0.1:80")
    for outcome in (FAIL, RESET, OK, FAIL, FAIL, LOCAL, LOCAL):
        b.record(outcome)
    assert b.state == "closed" and b.allows()  # the success reset the count
    b.record(FAIL)
    assert b.state == "open" and not b.allows() and not b.try_acquire()


def test_half_open_lets_a_single_probe_through() -> None:
    breakers = EndpointBreakers(fail_max=1, reset_timeout=0.2)
    b = breakers.create("c", "10.0.0.1:80")
    b.record(FAIL)
    assert not b.try_acquire()
    wait_for(b.allows, "reset_timeout")
    assert b.try_acquire()  # the probe
    assert not b.try_acquire() and not b.allows()  # one at a time
    b.record(FAIL)  # probe failed: open again
    assert b.state == "open" and not b.allows()
    wait_for(b.allows, "reset_timeout again")
    assert b.try_acquire()
    b.record(OK)
    assert b.state == "closed" and b.try_acquire() and b.try_acquire()
    assert breakers.metrics["state.open"] == 2
    assert breakers.metrics["state.half-open"] == 2
    assert breakers.metrics["state.closed"] == 1


def test_picker_skips_an_open_endpoint() -> None:
    from meshlib import Call
    from meshlib._snapshot import ClusterView, LiveBalancer
    from meshlib.balancing import LocalityGroup
    from xds_client.resources import LbConfig

    breakers = EndpointBreakers(fail_max=1, reset_timeout=60)
    eps = tuple(EndpointState("c", Endpoint("127.0.0.1", 9000 + i)) for i in range(3))
    for e in eps:
        e.breaker = breakers.create("c", e.address)
    view = ClusterView("c", None, eps, LiveBalancer([LocalityGroup(1, 0, eps)], LbConfig()))
    call = Call("svc:80", "GET", "/")
    eps[0].started()
    eps[0].finished(FAIL)
    assert all(view.pick(call) is not eps[0] for _ in range(30))


def test_state_change_hook() -> None:
    seen: list[tuple[str, str, str, str]] = []
    breakers = EndpointBreakers(fail_max=1, on_state_change=lambda *a: seen.append(a))
    breakers.create("c", "a:1").record(FAIL)
    assert seen == [("c", "a:1", "closed", "open")]


def test_replicas_share_breaker_state_through_redis(redis_url: str) -> None:
    def replica() -> EndpointBreakers:
        return EndpointBreakers(
            fail_max=2,
            reset_timeout=1.5,  # Redis keeps opened_at in whole seconds
            redis=redis.Redis.from_url(redis_url),
            namespace="meshlib-test",
            refresh=0.0,
        )

    a, b = replica(), replica()
    on_a, on_b = a.create("c", "10.0.0.7:80"), b.create("c", "10.0.0.7:80")
    other = b.create("c", "10.0.0.8:80")
    on_a.record(FAIL)
    on_b.record(FAIL)  # failures from both replicas add up
    assert on_a.state == "open" and on_b.state == "open"
    assert not on_b.allows()  # replica B skips the endpoint replica A saw failing
    assert other.allows()  # keyed per endpoint
    wait_for(on_b.allows, "reset_timeout")
    assert on_b.try_acquire() and not on_b.try_acquire()  # B's single probe
    on_b.record(OK)
    assert on_a.state == "closed" and on_a.allows()  # A follows B's recovery


def test_redis_state_is_reread_at_most_every_refresh(redis_url: str) -> None:
    now = [0.0]

    def replica() -> EndpointBreakers:
        return EndpointBreakers(
            fail_max=1,
            reset_timeout=60,
            refresh=5.0,
            clock=lambda: now[0],
            redis=redis.Redis.from_url(redis_url),
            namespace="meshlib-refresh",
        )

    a, b = replica(), replica()
    on_a, on_b = a.create("c", "x:1"), b.create("c", "x:1")
    assert on_b.allows()
    on_a.record(FAIL)
    assert on_b.allows()  # cached for ``refresh`` seconds
    now[0] += 5.0
    assert not on_b.allows()
