"""Invalid configuration pushed under load: nothing fails, the last good config serves.

Object level: invalid xDS resources (a Cluster with a negative connect_timeout, a route
with a broken regex) are NACKed by the client; an invalid Istio object is rejected by the
control plane. File level: a YAML file that no longer parses keeps its objects' last good
versions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshlib import Mesh
from meshlib.controlplane import ControlPlane
from tests.httpx.mesh_xds import Upstream, mesh_resources
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

from .istio import route_reviews, write_reviews
from .load import Figures, Load, echo_ok, mesh_client

pytestmark = pytest.mark.chaos
HOST = "bad-push.test"


def test_invalid_xds_pushed_under_load(tmp_path: Path) -> None:
    with UvicornThread(EchoApp("good")) as server:
        good = mesh_resources(HOST, {"c": Upstream([server.port])}, [("/", "c", {})])
        bad_cluster = mesh_resources(
            HOST, {"c": Upstream([server.port], extra={"connect_timeout": "-1s"})}, [("/", "c", {})]
        )
        bad_route = mesh_resources(HOST, {"c": Upstream([server.port])}, [("/", "c", {})])
        rc = bad_route.shared[next(t for t in bad_route.shared if t.endswith("RouteConfiguration"))]
        rc["test-routes"].virtual_hosts[0].routes[0].match.ClearField("prefix")
        rc["test-routes"].virtual_hosts[0].routes[0].match.safe_regex.regex = "(unclosed"
        with mesh_client(tmp_path, good) as (served, client):
            send = echo_ok(client, HOST)

            with Load("invalid xDS pushed (cluster, route)", send, max_requests=100_000) as load:
                for bad in (bad_cluster, good, bad_route, good):
                    load.wait_sent(load.sent + 400)
                    before = len(served.cp.nacks())
                    served.push(bad)
                    if bad is not good:
                        deadline = time.monotonic() + 10
                        while len(served.cp.nacks()) == before and time.monotonic() < deadline:
                            time.sleep(0.01)
                load.wait_sent(load.sent + 400)
                figures = load.stop()
            nacks = [n.error_detail for n in served.cp.nacks()]
            figures.extra["nacks"] = len(nacks)
            assert figures.failed == 0, figures
            assert any("connect_timeout" in (n or "") for n in nacks), (figures, nacks)
            assert any("regex" in (n or "") for n in nacks), (figures, nacks)


def _istio_world(
    tmp_path: Path, name: str, break_it: Callable[[Path], None], fix_it: Callable[[Path], None]
) -> tuple[Figures, tuple[str, ...]]:
    apps = {v: EchoApp(v) for v in ("v1", "v2")}
    servers = {v: UvicornThread(app).start() for v, app in apps.items()}
    config = tmp_path / "config"
    write_reviews(config, {v: s.port for v, s in servers.items()})
    route_reviews(config, "v1")
    problems: tuple[str, ...] = ()
    try:
        with (
            ControlPlane(config, watch=True, poll_interval=0.02, debounce=0.05) as cp,
            Mesh(cp.bootstrap()) as mesh,
            mesh.httpx_client(timeout=10) as client,
        ):

            def send(i: int) -> bool:
                r = client.get("http://reviews:9080/echo")
                return r.status_code == 200 and r.headers.get("x-backend") == "v1"

            with Load(name, send, max_requests=100_000, max_seconds=12) as load:
                load.wait_sent(400)
                break_it(config)
                deadline = time.monotonic() + 10
                while not cp.problems and time.monotonic() < deadline:
                    time.sleep(0.01)
                problems = cp.problems
                load.wait_sent(load.sent + 600)  # served while broken
                fix_it(config)
                deadline = time.monotonic() + 10
                while cp.problems and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert not cp.problems, cp.problems
                load.wait_sent(load.sent + 400)
                figures = load.stop()
    finally:
        for s in servers.values():
            s.stop()
    figures.extra["problems"] = len(problems)
    return figures, problems


def test_invalid_istio_object_pushed_under_load(tmp_path: Path) -> None:
    def break_it(config: Path) -> None:
        route_reviews(config, "v2", http_extra=", timeout: soon")  # v2, if it applied

    figures, problems = _istio_world(
        tmp_path, "invalid VirtualService pushed", break_it, lambda c: route_reviews(c, "v1")
    )
    assert figures.failed == 0, figures
    assert any("spec.http[0].timeout" in p for p in problems), (figures, problems)


def test_unparsable_file_pushed_under_load(tmp_path: Path) -> None:
    original: list[str] = []

    def break_it(config: Path) -> None:
        path = config / "reviews.yaml"
        original.append(path.read_text())
        path.write_text(original[0] + "  extra: [unclosed\n")

    def fix_it(config: Path) -> None:
        (config / "reviews.yaml").write_text(original[0])

    figures, problems = _istio_world(tmp_path, "unparsable YAML file pushed", break_it, fix_it)
    assert problems, figures
    assert figures.failed == 0, figures
