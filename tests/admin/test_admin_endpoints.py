"""Envoy's admin endpoints beyond stats: ``/config_dump?resource=&mask=``, rendering in
a process that is only a client, ``/server_info``, ``/listeners``, ``/certs``, and the
xDS and server-side series in ``/stats/prometheus``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from meshlib import Mesh
from meshlib.admin import AdminServer
from meshlib.admin._config_dump import render_errors
from meshlib.controlplane import CertificateAuthority, ControlPlane
from tests.admin.conftest import CLUSTER, Live

SPIFFE = "spiffe://cluster.local/ns/default/sa/productpage"


def get(live: Live, path: str) -> httpx.Response:
    return httpx.get(live.admin.url + path, timeout=10)


def test_config_dump_resource_is_the_elements_of_that_field(live: Live) -> None:
    doc = get(live, "/config_dump?resource=dynamic_active_clusters").json()
    types = {c["@type"] for c in doc["configs"]}
    assert types == {"type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"}
    assert CLUSTER in [c["cluster"]["name"] for c in doc["configs"]]


def test_config_dump_mask_goes_into_typed_configs(live: Live) -> None:
    doc = get(live, "/config_dump?resource=dynamic_active_clusters&mask=cluster.name").json()
    assert doc["configs"] and all(
        set(c) == {"@type", "cluster"} and set(c["cluster"]) == {"@type", "name"}
        for c in doc["configs"]
    )
    sections = get(live, "/config_dump?mask=version_info").json()["configs"]
    assert all(set(s) <= {"@type", "version_info"} for s in sections)
    assert get(live, "/config_dump?resource=version_info").status_code == 400  # not repeated
    assert (
        get(live, "/config_dump?mask=cluster.nope&resource=dynamic_active_clusters").status_code
        == 400
    )


def test_a_client_only_process_renders_every_route(live: Live, tmp_path: Path) -> None:
    """The descriptors a client process has never imported (the retry policy's
    PreviousHostsPredicate) are loaded for rendering: nothing in the dump fails."""
    node = "sidecar~127.0.0.1~c-1.default~default.svc.cluster.local"
    with ControlPlane(live.config) as cp:
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(json.dumps(cp.bootstrap(node_id=node)))
        script = textwrap.dedent(
            f"""
            import json, sys
            from meshlib import Mesh
            from meshlib.admin import config_dump
            from meshlib.admin._config_dump import render_errors
            with Mesh(bootstrap={str(bootstrap)!r}) as mesh:
                with mesh.httpx_client(timeout=5) as client:
                    client.get("http://reviews.default.svc.cluster.local:9080/")
                assert not [m for m in sys.modules if "previous_hosts" in m]
                doc = config_dump(mesh)
                print(json.dumps({{"errors": render_errors(doc), "doc": doc}}))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["errors"] == []
    text = json.dumps(result["doc"])
    assert "PreviousHostsPredicate" in text and "virtual_hosts" in text


def test_server_info_has_envoys_shape(live: Live) -> None:
    info = get(live, "/server_info").json()
    assert info["state"] == "LIVE"
    assert info["version"].startswith("meshlib/")
    assert info["node"]["id"].startswith("sidecar~")
    assert info["command_line_options"]["service_node"] == info["node"]["id"]
    assert info["uptime_current_epoch"].endswith("s")


def test_listeners(live: Live) -> None:
    doc = get(live, "/listeners?format=json").json()
    (entry,) = [e for e in doc["listener_statuses"] if "reviews" in e["name"]]
    assert entry["route_config_name"] == "outbound|9080||reviews.default.svc.cluster.local"
    assert f"{entry['name']}::{entry['route_config_name']}\n" in get(live, "/listeners").text


def test_certs_show_identity_issuer_and_expiry(tmp_path: Path, live: Live) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    ca.write_workload_files(SPIFFE, tmp_path / "certs", ttl=3 * 86400)
    with (
        ControlPlane(live.config) as cp,
        Mesh(bootstrap=cp.bootstrap(cert_dir=str(tmp_path / "certs"))) as mesh,
        AdminServer(mesh) as admin,
    ):
        doc = httpx.get(admin.url + "/certs", timeout=10).json()
    (entry,) = doc["certificates"]
    leaf = entry["cert_chain"][0]
    assert leaf["subject_alt_names"] == [{"uri": SPIFFE}]
    assert leaf["days_until_expiration"] in ("2", "3")
    assert leaf["serial_number"] and leaf["expiration_time"] and not leaf["expired"]
    assert leaf["issuer"] == entry["ca_cert"][0]["subject"]


def test_prometheus_has_xds_and_is_well_formed(live: Live) -> None:
    text = get(live, "/stats/prometheus").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (connected,) = families["meshlib_xds_connected"].samples
    assert connected.value == 1
    updates = {
        (s.labels["type"], s.labels["accepted"]): s.value
        for s in families["meshlib_xds_updates"].samples
    }
    assert updates[("Listener", "true")] >= 1 and updates[("Cluster", "true")] >= 1
    assert render_errors(get(live, "/config_dump").json()) == []


def test_server_side_metrics_are_in_the_same_scrape(live: Live) -> None:
    from fastapi import FastAPI
    from meshlib.integrations import Inbound
    from meshlib.integrations.asgi import MeshMiddleware

    from tests.support import UvicornThread

    app = FastAPI()

    @app.get("/ratings/{n}")
    def ratings(n: int) -> dict[str, int]:
        return {"n": n}

    app.add_middleware(
        MeshMiddleware,
        inbound=Inbound(
            workload="ratings-v1", service="ratings.default.svc", telemetry=live.telemetry
        ),
    )
    with UvicornThread(app) as server:
        for i in range(3):
            assert httpx.get(f"http://127.0.0.1:{server.port}/ratings/{i}").status_code == 200
    text = get(live, "/stats/prometheus").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = [
        s
        for s in families["istio_requests"].samples
        if s.labels.get("reporter") == "destination"
        and s.labels.get("destination_workload") == "ratings-v1"
    ]
    assert [s.value for s in served] == [3]
    assert served[0].labels["response_code"] == "200"
    assert text.count("# TYPE istio_requests_total counter") == 1  # both sides, one family
