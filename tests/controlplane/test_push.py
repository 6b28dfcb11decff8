"""Live pushes: watched files, debouncing, rejected objects, consistent pushes to 50 clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlib.controlplane import CLUSTER_TYPE, ROUTE_TYPE, ControlPlane
from xds_client import CallbackWatcher, XdsClient, load_bootstrap
from xds_client.resources import CLUSTER, LISTENER, ROUTE_CONFIG

from .istio_support import BASE, SUBSETS, cluster_of

pytestmark = pytest.mark.timeout(60)

ROUTE_TO = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]
"""
ONLY_V2 = SUBSETS.replace("  - {name: v1, labels: {version: v1}}\n", "").replace(
    "  - {name: v3, labels: {version: v3}}\n", ""
)


def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "base.yaml").write_text(BASE)
    (d / "rules.yaml").write_text(SUBSETS + "---\n" + ROUTE_TO.format(subset="v1"))
    return d


def test_edits_are_watched_and_a_burst_is_one_push(config: Path) -> None:
    with ControlPlane(config, watch=True, poll_interval=0.05, debounce=0.2) as cp:
        assert cp.snapshot().version == "1"
        for subset in ("v2", "v3", "v2", "v3"):  # a burst of writes
            (config / "rules.yaml").write_text(SUBSETS + "---\n" + ROUTE_TO.format(subset=subset))
        cp.wait_for_version(2)
        route = cp.snapshot().resources(ROUTE_TYPE)[cluster_of()]
        assert cluster_of("v3").encode() in route.value
        time.sleep(0.5)  # nothing else is pending: the burst was one reload
        assert cp.snapshot().version == "2"


def test_bad_edit_is_rejected_and_the_rest_keeps_serving(config: Path) -> None:
    with ControlPlane(config, watch=True, poll_interval=0.05, debounce=0.05) as cp:
        bad_dr = SUBSETS.replace("host: reviews", "host: reviews\n  trafficPolicy: {tls: 7}")
        (config / "rules.yaml").write_text(bad_dr + "---\n" + ROUTE_TO.format(subset="v2"))
        wait_until(lambda: cp.problems, "the bad object to be reported")
        (problem,) = cp.problems
        assert problem == (
            f"{config / 'rules.yaml'}: DestinationRule default/reviews: "
            "spec.trafficPolicy.tls: must be a mapping"
        )
        # The VirtualService edit applied; the DestinationRule's last good version serves.
        route = cp.snapshot().resources(ROUTE_TYPE)[cluster_of()]
        assert cluster_of("v2").encode() in route.value
        assert cluster_of("v2") in cp.snapshot().resources(CLUSTER_TYPE)
        (config / "rules.yaml").write_text(ONLY_V2 + "---\n" + ROUTE_TO.format(subset="v2"))
        wait_until(lambda: not cp.problems, "the problem to clear")
        assert cluster_of("v1") not in cp.snapshot().resources(CLUSTER_TYPE)


class ConsistencyChecker:
    """Follows listener -> route -> clusters like a client; records any moment when the
    current route names a cluster the server says does not exist."""

    def __init__(self, client: XdsClient) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.current: frozenset[str] = frozenset()
        self.resolved: set[str] = set()
        self.cancels: dict[str, Any] = {}
        self.inconsistent: list[str] = []
        client.watch(LISTENER, "reviews:9080", CallbackWatcher(self._listener))

    def _listener(self, name: str, listener: Any) -> None:
        self.client.watch(ROUTE_CONFIG, listener.route_config_name, CallbackWatcher(self._route))

    def _route(self, name: str, route: Any) -> None:
        clusters = route.cluster_names()
        with self.lock:
            self.current = clusters
            stale = [c for c in self.cancels if c not in clusters]
        for c in clusters:  # subscribe to the new clusters before dropping old ones
            if c not in self.cancels:
                self.cancels[c] = self.client.watch(
                    CLUSTER,
                    c,
                    CallbackWatcher(
                        lambda n, _r: self.resolved.add(n), lambda n, e: self._error(n, e)
                    ),
                )
        for c in stale:
            self.cancels.pop(c)()
            self.resolved.discard(c)

    def _error(self, name: str, error: Exception) -> None:
        with self.lock:
            if name in self.current:
                self.inconsistent.append(f"{name}: {error!r}")

    def sees(self, cluster: str) -> bool:
        with self.lock:
            return self.current == {cluster} and cluster in self.resolved


@pytest.fixture
def clients(config: Path) -> Iterator[tuple[ControlPlane, list[ConsistencyChecker]]]:
    with ControlPlane(config, watch=True, poll_interval=0.05, debounce=0.05) as cp:
        made: list[XdsClient] = []
        try:
            checkers = []
            for i in range(50):
                boot = cp.bootstrap(namespace="default", pod=f"client-{i}")
                client = XdsClient(load_bootstrap(boot))
                made.append(client)
                checkers.append(ConsistencyChecker(client))
            yield cp, checkers
        finally:
            for client in made:
                client.close()


def test_edit_reaches_50_clients_and_none_sees_an_inconsistent_snapshot(
    clients: tuple[ControlPlane, list[ConsistencyChecker]], config: Path
) -> None:
    cp, checkers = clients
    wait_until(lambda: all(c.sees(cluster_of("v1")) for c in checkers), "v1 everywhere", 30)
    # Move traffic to v2 and delete the v1 subset (and so its cluster) in the same edit.
    (config / "rules.yaml").write_text(ONLY_V2 + "---\n" + ROUTE_TO.format(subset="v2"))
    wait_until(lambda: all(c.sees(cluster_of("v2")) for c in checkers), "v2 everywhere", 30)
    assert [c.inconsistent for c in checkers if c.inconsistent] == []
    assert cp.nacks() == []
    # and back: v1 reappears while v2 goes
    (config / "rules.yaml").write_text(SUBSETS + "---\n" + ROUTE_TO.format(subset="v1"))
    wait_until(lambda: all(c.sees(cluster_of("v1")) for c in checkers), "v1 again", 30)
    assert [c.inconsistent for c in checkers if c.inconsistent] == []
