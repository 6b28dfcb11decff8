"""``meshlib validate/analyze/apply/delete`` and the README's control-plane command."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from fastapi import FastAPI

from meshlib import Mesh
from meshlib.cli import main
from meshlib.controlplane import CLUSTER_TYPE, ControlPlane
from tests.support import UvicornThread

from .conftest import AdsClient

SAMPLES = Path(__file__).parent / "data" / "istio-samples"
ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _sample(name: str) -> Path:
    return SAMPLES / f"bookinfo_networking_{name}.yaml"


def test_validate_lists_every_error_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(_sample("virtual-service-all-v1"), good)
    assert main(["validate", "-f", str(good)]) == 0
    assert "4 objects are valid" in capsys.readouterr().out
    bad = write(
        tmp_path / "bad" / "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec: {hosts: [r], htp: [], http: [{route: [{destination: {host: r, subet: v1}}]}]}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: s}\n",
    )
    assert main(["validate", "-f", str(bad.parent)]) == 1
    err = capsys.readouterr().err
    assert (
        f'Error: {bad}: VirtualService default/r: spec.htp: unknown field; did you mean "http"?'
        in err
    )
    assert "spec.http[0].route[0].destination.subet: unknown field" in err
    assert 'did you mean "VirtualService"?' in err
    assert "3 errors" in err


def test_analyze_reports_references_to_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(SAMPLES / "bookinfo_platform_kube_bookinfo.yaml", config)
    write(
        config / "eps.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: reviews-1, labels: {kubernetes.io/service-name: reviews, version: v1}}\n"
        "addressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\n"
        "ports: [{name: http, port: 1}]\n",
    )
    shutil.copy(_sample("destination-rule-reviews"), config)
    write(
        config / "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: nosuch}\n"
        "spec: {hosts: [nosuch], http: [{route: [{destination: {host: nosuch}}]}]}\n",
    )
    assert main(["analyze", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert (
        "VirtualService default/nosuch: spec.hosts[0]: no Service or ServiceEntry 'nosuch'" in out
    )
    assert (
        "DestinationRule default/reviews: spec.subsets[1]: no endpoint of "
        "reviews.default.svc.cluster.local carries the labels of subset 'v2' (version=v2)"
    ) in out
    assert "subsets[0]" not in out  # v1 has an endpoint


def test_apply_and_delete_report_per_object_and_persist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    shutil.copy(SAMPLES / "bookinfo_platform_kube_bookinfo.yaml", config.mkdir() or config)
    user = shutil.copy(_sample("virtual-service-all-v1"), config / "user-vs.yaml")
    v3 = _sample("virtual-service-reviews-v3")
    assert main(["apply", "-f", str(v3), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "virtualservice.networking.istio.io/reviews configured" in out
    assert "no control plane is serving" in out
    assert main(["apply", "-f", str(v3), "--config", str(config)]) == 0
    assert "virtualservice.networking.istio.io/reviews unchanged" in capsys.readouterr().out
    assert (
        main(
            [
                "apply",
                "-f",
                str(SAMPLES / "bookinfo_platform_kube_bookinfo.yaml"),
                "--config",
                str(config),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "service/reviews unchanged" in out and "deployment.apps/reviews-v1 skipped" in out
    cp = ControlPlane(config)
    cp.reload()
    reviews = next(v for v in cp.objects.virtual_services if v.name == "reviews")
    assert reviews.http[0].route[0].destination.subset == "v3"
    # Delete an object that also lives in the user's file: the record is honoured.
    assert main(["delete", "-f", str(v3), "--config", str(config)]) == 0
    assert "virtualservice.networking.istio.io/reviews deleted" in capsys.readouterr().out
    cp.reload()
    assert "reviews" not in {v.name for v in cp.objects.virtual_services}
    assert main(["delete", "-f", str(v3), "--config", str(config)]) == 1
    assert (
        "(NotFound): virtualservice.networking.istio.io/reviews not found"
        in capsys.readouterr().err
    )
    # Editing the user's file later applies it again (the newest wins).
    later = time.time() + 5
    os.utime(user, (later, later))
    cp.reload()
    assert "reviews" in {v.name for v in cp.objects.virtual_services}


def test_apply_of_an_invalid_file_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    both = write(
        tmp_path / "both.yaml",
        _sample("virtual-service-reviews-v3").read_text()
        + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: r}\nspec: {host: r, subsets: [{name: v1, lables: {}}]}\n",
    )
    assert main(["apply", "-f", str(both), "--config", str(config)]) == 2
    assert (
        'spec.subsets[0].lables: unknown field; did you mean "labels"?' in capsys.readouterr().err
    )
    assert not (config / ".meshlib").exists()


def test_readme_control_plane_command_loads_bookinfo(tmp_path: Path) -> None:
    # run where a new user would, with the repo's examples/ but nothing the run writes (ca/)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^meshlib control-plane --config examples/bookinfo/[^\n]*", readme, re.M)
    assert command is not None
    args = command.group(0).split()[1:]
    # Verbatim but for the port (0: helpers share this machine) and the optional flag.
    args = [a for a in args if not a.startswith("[") and not a.endswith("]")]
    args[args.index("--port") + 1] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        seen = []  # --init-ca reports the CA it created before "listening on"
        for _ in range(5):
            line = proc.stdout.readline()
            seen.append(line)
            if "listening on" in line or not line:
                break
        assert "listening on" in line, proc.stderr.read() if proc.stderr and not line else seen
        client = AdsClient(line.rsplit(" ", 1)[1].strip(), "readme-node")
        try:
            client.send(CLUSTER_TYPE)
            response: Any = client.recv()
            names = set()
            for res in response.resources:
                cluster = cluster_pb2.Cluster()
                res.Unpack(cluster)
                names.add(cluster.name)
        finally:
            client.close()
        hosts = {n.split("|")[3].split(".")[0] for n in names}
        assert {"productpage", "details", "ratings", "reviews"} <= hosts
        subsets = {n.split("|")[2] for n in names if "|reviews." in n}
        assert {"", "v1", "v2", "v3"} <= subsets
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    # Serving a folder writes nothing into it (only apply/delete do).
    assert not (ROOT / "examples" / "bookinfo" / ".meshlib").exists()


# -- Istio's tour, file by file, against a running control plane and real backends -----


def _version_app(version: str) -> FastAPI:
    app = FastAPI()

    @app.get("/{path:path}")
    def answer(path: str) -> dict[str, str]:
        return {"version": version}

    return app


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[tuple[Path, ControlPlane, dict[str, UvicornThread]]]:
    servers = {v: UvicornThread(_version_app(v)).start() for v in ("v1", "v2", "v3")}
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(SAMPLES / "bookinfo_platform_kube_bookinfo.yaml", config / "bookinfo.yaml")
    slices = [
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"reviews-{v}",
                "labels": {"kubernetes.io/service-name": "reviews", "version": v},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"]}],
            "ports": [{"name": "http", "port": server.port}],
        }
        for v, server in servers.items()
    ]
    (config / "endpoints.yaml").write_text(yaml.safe_dump_all(slices))
    try:
        with ControlPlane(config, watch=True, poll_interval=0.05, debounce=0.05) as cp:
            yield config, cp, servers
    finally:
        for server in servers.values():
            server.stop()


#: Calls that failed while a route moved to a cluster the client had not yet subscribed to
#: (issue 17 item 3, the data path's; counted, reported, not asserted here).
TRANSIENT: list[str] = []


def _eventually(check: Callable[[], bool], what: str, attempts: int = 200) -> None:
    for _ in range(attempts):  # bounded: the push reaches the client in a few rounds
        try:
            if check():
                return
        except Exception as err:
            TRANSIENT.append(f"{what}: {type(err).__name__}")
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_istio_tour_applied_file_by_file_changes_live_traffic(
    tour: tuple[Path, ControlPlane, dict[str, UvicornThread]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, cp, _ = tour

    def apply(name: str, verb: str = "apply") -> None:
        assert main([verb, "-f", str(_sample(name)), "--config", str(config)]) == 0
        out = capsys.readouterr()
        assert "no control plane" not in out.out, out

    def versions(client: Any, n: int = 60, **headers: str) -> collections.Counter[str]:
        got: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            got[client.get("http://reviews:9080/reviews/0", headers=headers).json()["version"]] += 1
        return got

    with (
        Mesh(bootstrap=cp.bootstrap(pod="productpage-0")) as mesh,
        mesh.httpx_client(timeout=5) as c,
    ):
        apply("destination-rule-all")
        apply("virtual-service-all-v1")
        _eventually(lambda: set(versions(c, 20)) == {"v1"}, "all traffic on v1")
        assert set(versions(c)) == {"v1"}
        apply("virtual-service-reviews-test-v2")
        _eventually(lambda: set(versions(c, 5, **{"end-user": "jason"})) == {"v2"}, "jason on v2")
        assert set(versions(c)) == {"v1"}
        apply("virtual-service-reviews-50-v3")
        _eventually(lambda: set(versions(c, 40)) == {"v1", "v3"}, "reviews split v1/v3")
        split = versions(c, 200)
        assert set(split) == {"v1", "v3"} and min(split.values()) > 40, split
        apply("virtual-service-reviews-v3")
        _eventually(lambda: set(versions(c, 20)) == {"v3"}, "all traffic on v3")
        apply("virtual-service-all-v1", "delete")
        _eventually(lambda: set(versions(c, 60)) == {"v1", "v2", "v3"}, "no rule: every version")
    assert cp.nacks() == []
    print(f"tour: {len(TRANSIENT)} transient failures while routes moved: {TRANSIENT}")


def test_validate_refuses_what_meshlib_cannot_enforce(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(
        tmp_path / "authz.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext}\n"
        "spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}\n",
    )
    assert main(["validate", "-f", str(f)]) == 1
    assert "spec.action: CUSTOM (provider 'opa') is not supported by meshlib" in (
        capsys.readouterr().err
    )
