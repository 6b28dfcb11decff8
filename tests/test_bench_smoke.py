"""The benchmarks keep working: each runs briefly (``--quick``) and the report is well formed.

No figure is checked against a speed: benchmarks measure, tests only check that they ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from benchmarks._harness import check, percentile, row
from benchmarks.report import NOT_AVAILABLE, ModuleResult, fmt, render_markdown, write_report
from benchmarks.run import MODULES, run_module, validate_rows

ROOT = Path(__file__).resolve().parents[1]
NAMES = [m[0] for m in MODULES]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python -m benchmarks.run --quick`` once, into a temporary report directory."""
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "MESHLIB_BENCH_INSTALL": "0"}  # never apt-get from the tests
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    report = json.loads((out / "report.json").read_text())
    return {"out": out, "rc": done.returncode, "stderr": done.stderr, "report": report}


def _module(quick_run: dict[str, Any], name: str) -> dict[str, Any]:
    modules = {m["name"]: m for m in quick_run["report"]["modules"]}
    return dict(modules[name])


@pytest.mark.timeout(300)
def test_quick_run_exits_cleanly_and_reports_every_module(quick_run: dict[str, Any]) -> None:
    assert quick_run["rc"] == 0, quick_run["stderr"][-3000:]
    assert [m["name"] for m in quick_run["report"]["modules"]] == NAMES


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_each_available_benchmark_ran(quick_run: dict[str, Any], name: str) -> None:
    module = _module(quick_run, name)
    assert module["status"] in ("ok", NOT_AVAILABLE), module["error"]
    if module["status"] == "ok":
        rows = validate_rows(name, module["rows"])
        assert rows, f"{name} returned no rows"
        assert any(r["value"] is not None for r in rows)


@pytest.mark.timeout(300)
def test_http_bench_measures_every_path(quick_run: dict[str, Any]) -> None:
    rows = _module(quick_run, "http_bench")["rows"]
    throughput = {
        (r["group"], r["variant"]): r["value"] for r in rows if r.get("metric") == "throughput"
    }
    variants = {v for _, v in throughput}
    assert variants == {
        "plain httpx",
        "meshlib",
        "httpx + Envoy sidecar",
        "sidecar mesh, mTLS (2 Envoys)",
        "meshlib, mTLS",
    }
    for (group, variant), value in throughput.items():
        assert value is not None and value > 0, (group, variant)
    # per sync mode: meshlib/plain, its p99, meshlib/sidecar, mTLS/full mesh; async: 2
    checked = [r for r in rows if r["target"] is not None and r["value"] is not None]
    assert len(checked) == 10 and all(isinstance(r["pass"], bool) for r in checked)
    backend = next(r for r in rows if r["name"] == "HTTP backend")
    assert backend["note"].startswith(("nginx", "uvicorn"))


@pytest.mark.timeout(300)
def test_convergence_bench_reports_p99_against_its_target(quick_run: dict[str, Any]) -> None:
    rows = _module(quick_run, "convergence_bench")["rows"]
    targeted = [r for r in rows if r["target"] is not None]
    assert [r["target"] for r in targeted] == ["<= 250 ms"]
    assert isinstance(targeted[0]["pass"], bool)
    modes: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("variant"):
            modes.setdefault(r["variant"], {})[r["metric"]] = r["value"]
    assert modes
    for figures in modes.values():
        assert 0 < figures["p50"] <= figures["p99"] <= figures["max"]


@pytest.mark.timeout(300)
def test_report_files_are_well_formed(quick_run: dict[str, Any]) -> None:
    out: Path = quick_run["out"]
    md = (out / "report.md").read_text()
    assert md.startswith("# meshlib benchmarks\n")
    assert "## Targets" in md and "![benchmark chart](report.png)" in md
    for name in NAMES:
        assert f"(`benchmarks/{name}.py`)" in md
    _assert_tables_well_formed(md)
    image = imread(out / "report.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def _assert_tables_well_formed(md: str) -> None:
    """Every Markdown table has a separator line and the header's number of cells."""
    tables: list[list[str]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    assert tables
    for table in tables:
        cells = [line.count("|") for line in table]
        assert len(table) >= 3 and set(table[1].strip("|").split("|")) == {"---"}, table
        assert len(set(cells)) == 1, table


# The pieces, without running anything.


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_check_states_target_and_result() -> None:
    assert check(0.96, ">=", 0.95, "x") == (">= 0.95x", True)
    assert check(300.0, "<=", 250, " ms") == ("<= 250 ms", False)
    assert check(None, ">=", 1.5, "x") == (">= 1.5x", None)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"name": "a", "value": 1, "unit": "", "target": None}, "missing key 'pass'"),
        ({"name": "a", "value": "1", "unit": "", "target": None, "pass": None}, "value:"),
        ({"name": "a", "value": float("nan"), "unit": "", "target": None, "pass": None}, "finite"),
        ({"name": "a", "value": 1, "unit": "", "target": None, "pass": "yes"}, "pass:"),
        ({"name": "a", "value": 1, "unit": "", "target": 2, "pass": None}, "target:"),
    ],
)
def test_malformed_rows_are_named(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        validate_rows("some_bench", [row("ok", 1.0, "ms"), bad])
    assert "some_bench row 1 ('a')" in str(info.value)


@pytest.fixture
def fake_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("benchmarks.fake_bench")
    sys.modules["benchmarks.fake_bench"] = module
    yield module
    del sys.modules["benchmarks.fake_bench"]


def test_run_module_reports_missing_broken_and_working_modules(
    fake_module: types.ModuleType,
) -> None:
    missing = run_module("no_such_bench", "Nothing", ("a claim",), quick=True)
    assert missing.status == NOT_AVAILABLE and missing.claims == ("a claim",)
    fake_module.run = lambda quick: [{"name": "x", "value": 1}]  # type: ignore[attr-defined]
    broken = run_module("fake_bench", "Fake", (), quick=True)
    assert broken.status == "error" and "missing key 'unit'" in broken.error
    fake_module.run = lambda quick: [row("x", 2, "ms", target="<= 3 ms", passed=True)]  # type: ignore[attr-defined]
    ok = run_module("fake_bench", "Fake", (), quick=True)
    assert ok.status == "ok" and ok.rows[0]["value"] == 2.0


def test_report_renders_pivots_errors_and_missing_modules(tmp_path: Path) -> None:
    rows = [
        row("g a t", 100.0, "req/s", group="g", variant="a", metric="t", chart=True),
        row("g b t", 50.0, "req/s", group="g", variant="b", metric="t", chart=True),
        row("g b r", 0.5, "x", group="g", variant="b", metric="r"),
        row("b / a", 0.5, "x", target=">= 0.95x", passed=False),
    ]
    results = [
        ModuleResult("one_bench", "One", "ok", 1.0, rows),
        ModuleResult("two_bench", "Two", "error", 0.1, error="Traceback: boom"),
        ModuleResult("three_bench", "Three", NOT_AVAILABLE, claims=("x <= 1 ms",)),
    ]
    md = render_markdown(results, {"mode": "test"}, "report.png")
    assert "| b / a | 0.50x | >= 0.95x | **FAIL** |" in md
    assert "| a | 100 |  |" in md and "| b | 50 | 0.50x |" in md
    assert "boom" in md and "will measure x <= 1 ms" in md
    assert "| x <= 1 ms | — | see claim | not yet available |" in md
    _assert_tables_well_formed(md)
    md_path, png, raw = write_report(results, {"mode": "test"}, tmp_path)
    assert md_path.read_text() == md
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads(raw.read_text())["modules"][2]["status"] == NOT_AVAILABLE
    assert fmt(None) == "—" and fmt(1234.5, "ms") == "1,234 ms" and fmt(3.0, "") == "3"
