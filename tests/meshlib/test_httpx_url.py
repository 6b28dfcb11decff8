"""The fast endpoint URL equals httpx's own ``copy_with`` (guards against httpx changes)."""

from __future__ import annotations

import httpx
import pytest

from meshlib.httpx import endpoint_url


@pytest.mark.parametrize(
    "url",
    [
        "http://reviews.default.svc.cluster.local:9080/reviews/1?x=1&y=%20",
        "http://app.test/",
        "https://user:pw@app.test/a/b#frag",
        "http://app.test/%E2%82%AC?q=%2F",
    ],
)
@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 8080), ("10.0.0.7", 80), ("::1", 9)])
def test_endpoint_url_equals_copy_with(url: str, host: str, port: int) -> None:
    original = httpx.URL(url)
    fast = endpoint_url(original, host, port)
    slow = original.copy_with(host=host, port=port)
    assert fast == slow
    assert (fast.raw_scheme, fast.raw_host, fast.port, fast.raw_path) == (
        slow.raw_scheme,
        slow.raw_host,
        slow.port,
        slow.raw_path,
    )
    assert str(fast) == str(slow)
