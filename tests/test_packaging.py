"""The distribution: three import packages, from the editable install and from a wheel."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT_CHECK = (
    "import meshlib, xds_client, meshlib.integrations, meshlib.controlplane, pathlib;"
    "print(pathlib.Path(meshlib.integrations.__file__).parent)"
)


def test_editable_install_maps_integrations() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, check=True, cwd="/"
    )
    assert Path(out.stdout.strip()) == ROOT / "integrations"


def test_public_names() -> None:
    import meshlib
    import xds_client

    assert set(meshlib.__all__) == {
        "AsyncMeshTransport",
        "BootstrapError",
        "Call",
        "CircuitBreakerOpen",
        "CircuitBreakerOverflowError",
        "LocalReply",
        "Mesh",
        "MeshClosed",
        "MeshClosedError",
        "MeshConnectError",
        "MeshError",
        "MeshTimeoutError",
        "MeshTransport",
        "NoHealthyUpstream",
        "NoHealthyUpstreamError",
        "Overloaded",
        "RequestDropped",
        "RouteNotFound",
        "RouteNotFoundError",
        "Snapshot",
        "TargetNotResolved",
        "UpstreamConnectError",
        "UpstreamResetError",
        "UpstreamTimeout",
        "UpstreamTlsConfigError",
    }
    assert {"XdsClient", "load_bootstrap", "ResourceWatcher", "Bootstrap"} <= set(
        xds_client.__all__
    )
    import meshlib.integrations as integrations

    assert set(integrations.__all__) == {
        "Authorizer",
        "AuthzDecision",
        "Inbound",
        "InboundCall",
        "InboundRequest",
        "MeshInbound",
        "RbacAuthorizer",
        "ServingState",
        "compile_rbac",
    }
    for module in (meshlib, xds_client, integrations):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_subpackage_public_names() -> None:
    """What integrations, benchmarks and users import lives behind these ``__all__``."""
    import meshlib.cluster
    import meshlib.context
    import meshlib.resilience
    import meshlib.routing
    import xds_client.resources

    assert set(meshlib.cluster.__all__) == {
        "MAX_DEPTH",
        "AggregateBalancer",
        "AggregateView",
        "Child",
        "ClusterTree",
        "ClusterViews",
        "EndpointRegistry",
        "EndpointState",
        "HostStats",
        "Outcome",
        "OutcomeKind",
        "OutcomeSink",
        "ProbeGate",
        "cluster_tree",
    }
    assert set(meshlib.resilience.__all__) == {"EndpointBreaker", "EndpointBreakers"}
    assert {"RoutePlan", "RouteTable", "compile_header", "compile_string"} <= set(
        meshlib.routing.__all__
    )
    assert {"RequestContext", "current_request", "request_scope", "extract_trace"} <= set(
        meshlib.context.__all__
    )
    assert {"FAULT_TYPE", "decode_header_matcher", "decode_string_matcher"} <= set(
        xds_client.resources.__all__
    )
    modules = (
        meshlib.cluster,
        meshlib.context,
        meshlib.resilience,
        meshlib.routing,
        xds_client.resources,
    )
    for module in modules:
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


@pytest.mark.timeout(300)
def test_wheel_installs_and_imports_in_a_fresh_venv(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("meshlib_proxyless-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    # Dependencies come from this venv's site-packages (a plain path entry: its .pth files,
    # including the editable finder, are not processed), so only the wheel provides meshlib.
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig;print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "zz_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    out = subprocess.run(
        [str(py), "-c", IMPORT_CHECK], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert Path(out.stdout.strip()) == site / "meshlib" / "integrations"
    entry = subprocess.run(
        [str(env_dir / "bin" / "meshlib"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert entry.returncode == 0 and "control-plane" in entry.stdout
    assert "demo" in entry.stdout
    # the demo's Istio files and page ship in the wheel, for `meshlib demo` after pip install
    data = subprocess.run(
        [str(py), "-c", "import meshlib.demo as d, importlib.resources as r;"
         "print(d.istio_file('virtual-service-reviews-test-v2.yaml'));"
         "print(len((r.files('meshlib.demo') / 'productpage.html').read_text()))"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    path, size = data.stdout.split()
    assert Path(path).is_relative_to(site) and int(size) > 1000
