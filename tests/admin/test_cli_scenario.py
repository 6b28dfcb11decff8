"""``meshlib status`` and ``meshlib config-dump`` on a mesh with a breaker tripped,
faults, weights and header matches (tests/admin/scenario.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from meshlib.cli import main
from tests.admin.scenario import Scenario, scenario


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with scenario(tmp_path_factory.mktemp("cli")) as s:
        yield s


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_routes_table_shows_matches_weights_and_faults(
    busy: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "config-dump", "--admin", busy.admin.url, "--type", "routes")
    assert code == 0, err
    print(out)
    header = out.splitlines()[1]
    assert header.split() == ["NAME", "VHOST", "NAME", "DOMAINS", "MATCH", "CLUSTER", "FAULT"]
    jason = next(ln for ln in out.splitlines() if "header end-user=jason" in ln)
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in jason
    split = next(ln for ln in out.splitlines() if " 80%" in ln)
    assert "|v1|reviews.default.svc.cluster.local 80%" in split and "|v2|" in split
    assert " 20%" in split
    assert any("abort 500 to 100%" in ln and "ratings" in ln for ln in out.splitlines())
    assert any("delay 20 ms to 100%" in ln and "details" in ln for ln in out.splitlines())


def test_status_prints_limits_in_words_and_errors_by_flag(
    busy: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", "--admin", busy.admin.url)
    assert code == 0, err
    print(out)
    lines = out.splitlines()
    clusters = lines[next(i for i, ln in enumerate(lines) if ln.startswith("CLUSTER ")) :]
    httpbin = next(ln for ln in clusters if ln.startswith("outbound|8000||httpbin"))
    refused = sum(1 for o in busy.outcomes["httpbin"] if o != 200)
    assert f"UO {refused}" in httpbin
    assert "max 1 connection, max 1 pending, unlimited requests" in httpbin
    assert f"{refused} refused" in httpbin
    assert "4294967295" not in out and "0/" not in httpbin
    ratings = next(ln for ln in clusters if ln.startswith("outbound|9080||ratings"))
    assert "0.0%" in ratings and "no limits" in ratings


class _CannedAdmin(BaseHTTPRequestHandler):
    doc: dict[str, Any] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_config_dump_exits_non_zero_when_the_admin_cannot_render(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An admin server of another version answered with an entry it could not render:
    the tables are printed and the command says so and fails."""
    doc = {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "error": "cannot render as JSON: Can not find message descriptor by type_url: "
                "type.googleapis.com/acme.v1.Unknown",
            }
        ]
    }
    handler = type("_H", (_CannedAdmin,), {"doc": doc})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = run(capsys, "config-dump", "--admin", url, "--type", "routes")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert "ROUTES" in out
    assert "acme.v1.Unknown" in err
