"""The dashboard in headless Chromium, against a live mesh: it shows the live clusters.

The screenshot is kept as a test artifact: tests/artifacts/dashboard.png (git-ignored).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.admin.conftest import CLUSTER, Live

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
