"""``meshlib status`` and ``meshlib config-dump`` against a live mesh's admin server."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.admin.conftest import CLUSTER, REQUESTS, Live


def meshlib(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshlib", *args], capture_output=True, text=True, timeout=60
    )


def test_status_reports_sync_clusters_and_endpoints(live: Live) -> None:
    done = meshlib("status", "--admin", live.admin.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("xDS: SYNCED   server: 127.0.0.1:")
    assert "node: sidecar~127.0.0.1~productpage-1.default~default.svc.cluster.local" in lines[0]
    header = next(ln for ln in lines if ln.startswith("RESOURCE"))
    assert header.split() == ["RESOURCE", "TYPE", "VERSION", "STATUS", "ERROR"]
    listener = next(ln for ln in lines if ln.startswith("reviews.default.svc.cluster.local:9080"))
    assert listener.split()[1:] == ["Listener", "1", "ACKED"]
    clusters_at = next(i for i, ln in enumerate(lines) if ln.startswith("CLUSTER "))
    cluster = lines[clusters_at + 1]
    # CLUSTER LB ENDPOINTS HEALTHY ACTIVE REQUESTS SUCCESS BREAKER
    assert cluster.split()[1:7] == ["ROUND_ROBIN", "3", "3", "0", str(REQUESTS), "100.0%"]
    for address in live.addresses:
        row = next(ln for ln in lines if ln.startswith(address + " "))
        assert row.split()[:5] == [address, "HEALTHY", "OK", CLUSTER, str(REQUESTS // 3)]


def test_config_dump_tables(live: Live) -> None:
    done = meshlib("config-dump", "--admin", live.admin.url, "--type", "clusters")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[1:3]
    assert header.split()[:3] == ["SERVICE", "FQDN", "PORT"]
    assert row.split() == [
        "reviews.default.svc.cluster.local", "9080", "-", "OUTBOUND", "EDS", "ROUND_ROBIN", "ACKED",
    ]  # fmt: skip
    everything = meshlib("config-dump", "--admin", live.admin.url).stdout
    sections = [ln for ln in everything.splitlines() if ln.isupper() and " " not in ln]
    assert sections == ["CLUSTERS", "LISTENERS", "ROUTES", "ENDPOINTS"]
    assert "Route: " + CLUSTER in everything
    assert "prefix=/" in everything
    for address in live.addresses:
        assert f"{address}   " in everything
    raw = meshlib("config-dump", "--admin", live.admin.url, "--type", "routes", "-o", "json")
    configs = json.loads(raw.stdout)["configs"]
    assert [c["@type"].rpartition(".")[2] for c in configs] == ["RoutesConfigDump"]


def test_unreachable_admin_is_a_clear_error() -> None:
    done = meshlib("status", "--admin", "http://127.0.0.1:1")
    assert done.returncode == 1
    assert "cannot reach the admin server at http://127.0.0.1:1/xds" in done.stderr
