"""One log line per failing endpoint per interval, however many calls fail."""

from __future__ import annotations

import logging

import pytest

from meshlib._log_limit import LogLimiter, limited


def test_one_line_per_key_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = LogLimiter(logging.getLogger("t.limit"), 10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "t.limit")
    for _ in range(500):
        limiter.warning(("c", "10.0.0.1:80"), "connect to %s failed", "10.0.0.1:80")
        limiter.warning(("c", "10.0.0.2:80"), "connect to %s failed", "10.0.0.2:80")
    assert [r.getMessage() for r in caplog.records] == [
        "connect to 10.0.0.1:80 failed",
        "connect to 10.0.0.2:80 failed",
    ]
    now[0] = 10.5
    assert limiter.warning(("c", "10.0.0.1:80"), "connect to %s failed", "10.0.0.1:80")
    assert caplog.records[-1].getMessage() == (
        "connect to 10.0.0.1:80 failed (and 499 more in the last 10 s)"
    )
    assert not limiter.warning(("c", "10.0.0.1:80"), "again")


def test_keys_are_bounded_and_disabled_levels_cost_nothing() -> None:
    logger = logging.getLogger("t.limit.bounded")
    logger.setLevel(logging.ERROR)
    limiter = LogLimiter(logger, max_keys=3)
    assert not limiter.warning("k", "not enabled")
    logger.setLevel(logging.WARNING)
    for i in range(10):
        assert limiter.warning(i, "line %d", i)
    assert len(limiter._seen) == 3
    assert limited(logger) is limited(logger)
