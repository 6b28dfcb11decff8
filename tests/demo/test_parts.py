"""The demo's parts: Istio's files as shipped, the platform objects, durations, outcomes."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from meshlib.demo import DEFAULT_PORTS, istio_file, istio_files, platform_objects, scale_durations
from meshlib.demo._outcomes import Outcome, classify
from meshlib.demo._tour import STEPS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "bookinfo"


def test_examples_bookinfo_is_the_platform_for_the_default_ports_and_istios_first_files() -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "bookinfo.yaml").read_text()))
    assert docs == platform_objects(DEFAULT_PORTS)
    for name in ("destination-rule-all.yaml", "virtual-service-all-v1.yaml"):
        assert (EXAMPLES / name).read_bytes() == istio_file(name).read_bytes()


def test_every_file_the_tour_applies_is_shipped_and_parses() -> None:
    tour = (ROOT / "meshlib" / "demo" / "_tour.py").read_text()  # it names its files
    shipped = sorted(p.name for p in istio_files().glob("*.yaml"))
    for name in shipped:
        docs = [d for d in yaml.safe_load_all(istio_file(name).read_text()) if d]
        assert docs and all(doc["kind"] for doc in docs)
    named = {name for name in shipped if f'"{name}"' in tour}
    assert {"virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml",
            "virtual-service-reviews-50-v3.yaml", "virtual-service-ratings-test-delay.yaml",
            "virtual-service-ratings-test-abort.yaml", "destination-rule-all-mtls.yaml"} <= named
    assert len(STEPS) >= 12


def test_durations_scale_only_delays_and_timeouts() -> None:
    doc = {"fault": {"delay": {"fixedDelay": "7s", "percentage": {"value": 100}}},
           "timeout": "0.5s", "retries": {"perTryTimeout": "250ms", "attempts": 3},
           "baseEjectionTime": "3m", "name": "7s"}
    assert scale_durations(doc, 0.2) == {
        "fault": {"delay": {"fixedDelay": "1.4s", "percentage": {"value": 100}}},
        "timeout": "0.1s", "retries": {"perTryTimeout": "0.05s", "attempts": 3},
        "baseEjectionTime": "3m", "name": "7s"}


def _response(status: int, body: str = "", **headers: str) -> httpx.Response:
    return httpx.Response(status, text=body, headers=headers)


def test_outcomes_carry_envoys_flags() -> None:
    assert classify(_response(200)).label == "200"
    assert classify(_response(503, "", **{"x-envoy-overloaded": "true"})).label == "503 UO"
    assert classify(_response(504, "upstream request timeout")).label == "504 UT"
    assert classify(_response(500, "fault filter abort")).label == "500 FI"
    assert classify(_response(503, "no healthy upstream")).label == "503 UH"
    # an application's own 500 is not the mesh's
    assert classify(_response(500, "fault filter abort", **{"x-meshlib-workload": "x"})).flag == "-"
    assert classify(httpx.ReadTimeout("slow")).label == "ReadTimeout UT"
    assert classify(httpx.ConnectError("refused")).label == "ConnectError UF"
    out = Outcome(504, "UT", "", 0.5)
    assert Outcome.from_json(out.to_json()) == out and not out.ok
