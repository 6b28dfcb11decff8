"""``meshlib demo --workload NAME`` (what examples/kubernetes/bookinfo.yaml's pods run):
one workload from ``GRPC_XDS_BOOTSTRAP``, serving where its endpoint says."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from meshlib.cli import main
from meshlib.controlplane import spiffe_id
from meshlib.demo import BookInfo
from meshlib.demo._bookinfo import free_ports
from meshlib.demo._serve import run_pod


@pytest.mark.timeout(60)
def test_a_workload_pod_joins_bookinfo_from_its_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "ratings-v1-extra", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "ratings",
                                "app": "ratings", "version": "v1"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(slice_))
    with BookInfo() as bookinfo:
        bookinfo.apply(tmp_path / "extra.yaml")
        bookinfo.ca.write_workload_files(spiffe_id("default", "bookinfo-ratings"),
                                         tmp_path / "certs")
        boot = bookinfo.control_plane.bootstrap(pod="ratings-v1-7d9f-abcde",
                                                cert_dir=str(tmp_path / "certs"))
        (tmp_path / "bootstrap.json").write_text(json.dumps(boot))
        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(tmp_path / "bootstrap.json"))
        stop = threading.Event()
        pod = threading.Thread(target=run_pod, args=("ratings-v1",),
                               kwargs={"port": port, "listen": "127.0.0.1", "admin_port": 0,
                                       "stop": stop})
        pod.start()
        try:
            answered: set[str] = set()
            with bookinfo.client("fortio", timeout=5) as client:
                for _ in range(40):
                    r = client.get("http://ratings:9080/ratings/0")
                    if r.status_code == 200:
                        answered.add(r.headers["x-meshlib-workload"])
                    if len(answered) == 2:
                        break
        finally:
            stop.set()
            pod.join(20)
    assert answered == {"ratings-v1", "ratings-v1-7d9f-abcde"}  # round robin over both
    assert not pod.is_alive()


def test_an_unknown_workload_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--workload", "reviews-v9"]) == 2
    assert "productpage-v1" in capsys.readouterr().err
