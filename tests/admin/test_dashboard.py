"""The dashboard in headless Chromium, against a live mesh: it shows the live clusters,
and, with a breaker tripping and faults injected, what an operator needs to see.

Screenshots are kept as test artifacts: tests/artifacts/dashboard*.png (git-ignored) and
the pytest tmp path printed; ``MESHLIB_UPDATE_DOCS_SCREENSHOT=1`` refreshes the one in
docs/images/ for the operators' guide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.conftest import CLUSTER, Live
from tests.admin.scenario import Scenario, scenario

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=4000",  # let the page's first polls complete before the dump
]


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed on first use (the test setup runs as root, as CI does)."""
    if not Path(CHROMIUM).exists():
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    assert shutil.which(CHROMIUM), "chromium is not installed"
    return CHROMIUM


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.timeout(240)
def test_dashboard_shows_the_live_clusters(live: Live, chromium: str, tmp_path: Path) -> None:
    url = live.admin.url + "/"
    dom = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-ready="true"' in html, html[-3000:]
    assert f'data-cluster="{CLUSTER}"' in html
    assert html.count('class="endpoint"') == 3
    for address in live.addresses:
        assert f"<td>{address}</td>" in html
    assert "xDS: SYNCED" in html
    assert "ROUND_ROBIN" in html
    assert "reviews.default.svc.cluster.local:9080" in html  # the xDS resource table

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    done = run_chromium(
        chromium,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,900",
        "--hide-scrollbars",
        url,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with scenario(tmp_path_factory.mktemp("dashboard")) as s:
        yield s


@pytest.mark.timeout(300)
def test_dashboard_shows_breakers_faults_routes_and_certs(
    busy: Scenario, chromium: str, tmp_path: Path
) -> None:
    url = busy.admin.url + "/"
    dom = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-ready="true"' in html, html[-3000:]
    httpbin = 'data-cluster="outbound|8000||httpbin.default.svc.cluster.local"'
    row = html[html.index(f'<tr class="summary" {httpbin}') :]
    row = row[: row.index("</tr>")]
    refused = sum(1 for o in busy.outcomes["httpbin"] if o != 200)
    assert 'data-flag="UO"' in row and f">UO {refused} · overflow<" in row  # counted
    assert "max 1 connection, max 1 pending" in row  # thresholds in words
    assert f"{refused} refused" in row
    assert "unlimited requests" in row and "4294967295" not in html
    # faults, weights and the header match on the route view
    assert "abort 500 to 100%" in html and "delay 20 ms to 100%" in html
    assert "reviews v1 80% · reviews v2 20%" in html
    assert "header end-user=jason" in html
    ratings = html[html.index('data-route="ratings-abort"') :]
    ratings = ratings[: ratings.index("</tr>")]
    assert ">12<" in ratings and "0%" in ratings  # every call failed, and is shown
    # outlier ejection, and the certificate's expiry
    assert "1 ejected now · 1 in all" in html
    assert "spiffe://cluster.local/ns/default/sa/productpage" in html
    assert "cert expires in 2 days" in html

    shot = tmp_path / "dashboard.png"
    done = run_chromium(
        chromium,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1400,1900",
        "--hide-scrollbars",
        url,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 30_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "dashboard-busy.png")
    print(f"dashboard screenshot: {shot} (and {ARTIFACTS / 'dashboard-busy.png'})")
    if os.environ.get("MESHLIB_UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(shot, DOCS_SHOT)


def test_dashboard_names_the_fault_flags(busy: Scenario, chromium: str, tmp_path: Path) -> None:
    html = run_chromium(chromium, tmp_path / "p", "--dump-dom", busy.admin.url + "/").stdout
    assert 'data-flag="FI"' in html and ">FI 12 · fault injected<" in html
    assert 'data-flag="DI"' in html and ">DI 6 · fault injected<" in html
