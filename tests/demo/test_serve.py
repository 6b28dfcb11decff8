"""``meshlib demo --serve``: productpage renders BookInfo in HTML through the ingress, and
routing by user shows in the page as in Istio's tour; the admin dashboard answers."""

from __future__ import annotations

import io
import threading
from typing import Any

import httpx
import pytest
from rich.console import Console

from meshlib.demo import DEFAULT_PORTS, BookInfo, istio_file, serve
from meshlib.demo._bookinfo import free_ports


@pytest.mark.timeout(90)
def test_serve_renders_productpage_and_follows_routing_by_user() -> None:
    stop = threading.Event()
    seen: dict[str, Any] = {}
    ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
    out = io.StringIO()

    def ready(bookinfo: BookInfo, url: str) -> None:
        try:
            with httpx.Client(timeout=10) as browser:
                seen["anonymous"] = browser.get(url).text
                bookinfo.apply(istio_file("virtual-service-reviews-test-v2.yaml"))
                login = browser.post(url.replace("/productpage", "/login"),
                                     data={"username": "jason"})
                seen["login"] = (login.status_code, login.headers.get("location"))
                seen["jason"] = browser.get(url).text
                admin = bookinfo.pods["productpage-v1"].admin.url
                seen["dashboard"] = browser.get(f"{admin}/").status_code
        finally:
            stop.set()

    status = serve(ingress_port=0, admin_port=0, ports=ports, ready=ready, stop=stop,
                   console=Console(file=out, width=120))
    assert status == 0
    banner = out.getvalue()
    assert "/productpage" in banner and "admin dashboard" in banner
    anonymous, jason = seen["anonymous"], seen["jason"]
    assert "The Comedy of Errors" in anonymous and "PublisherA" in anonymous
    assert "reviews-v1" in anonymous and "★" not in anonymous  # v1: no stars
    assert seen["login"][0] == 302
    assert "signed in as <b>jason</b>" in jason
    assert "reviews-v2" in jason and 'class="stars black"' in jason and "★★★★★" in jason
    assert seen["dashboard"] == 200
