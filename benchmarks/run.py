"""Run the benchmarks and write the report: ``python -m benchmarks.run [--quick] [--only NAME]``.

Every module in :data:`MODULES` that exists is imported and run; one that does not exist
yet is listed as "not yet available" with the claims it will check. A module that fails
(import error, exception, malformed rows) is reported with its error and makes the exit
status 1; the other modules still run. Targets that are missed do not change the status.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ._harness import ROOT, Row
from .report import NOT_AVAILABLE, ModuleResult, write_report

__all__ = ["DEFAULT_OUT", "MODULES", "machine_info", "main", "run_module", "validate_rows"]

# (module, title, the claims it checks) in the order they run and are reported.
MODULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "http_bench",
        "HTTP: plain httpx, meshlib, Envoy sidecar, sidecar mesh",
        (
            "meshlib HTTP throughput >= 0.95x plain httpx",
            "meshlib HTTP throughput >= 1.5x httpx + Envoy client sidecar",
            "meshlib with mTLS >= 1.75x the full sidecar mesh with mTLS",
        ),
    ),
    ("convergence_bench", "Convergence", ("convergence p99 <= 250 ms over 50 edits",)),
    ("engine_bench", "Engine: routing, retries, async httpx transport", ()),
    (
        "grpc_bench",
        "gRPC unary: plain grpcio, meshlib channel, grpcio xds:///, Envoy",
        ("gRPC >= 0.9x plain grpcio", "gRPC >= 0.9x grpcio's own xDS"),
    ),
    (
        "xds_client_bench",
        "xDS client: EDS 10k endpoints, 1,000 clusters, memory",
        ("EDS update of 10,000 endpoints <= 50 ms", "initial sync of 1,000 clusters"),
    ),
    (
        "controlplane_bench",
        "Control plane: 100 services to 200 clients",
        ("100-service config pushed to 200 clients: time to all-ACKed",),
    ),
    (
        "telemetry_bench",
        "Telemetry seam overhead",
        ("telemetry overhead <= 10 µs per call with no SDK",),
    ),
)
DEFAULT_OUT = ROOT / "benchmarks" / "results"
_OPTIONAL = ("group", "variant", "metric", "note")


def validate_rows(module: str, rows: object) -> list[Row]:
    """Check the row contract; raise ValueError naming the module, row and key."""
    if not isinstance(rows, list):
        raise ValueError(f"{module}.run() returned {type(rows).__name__}, not a list of rows")
    out: list[Row] = []
    for i, r in enumerate(rows):
        where = f"{module} row {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: not a dict")
        where += f" ({r.get('name')!r})"
        for key in ("name", "value", "unit", "target", "pass"):
            if key not in r:
                raise ValueError(f"{where}: missing key {key!r}")
        if not isinstance(r["name"], str) or not r["name"]:
            raise ValueError(f"{where}: name: must be a non-empty str")
        value = r["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where}: value: must be a number or None, not {value!r}")
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{where}: value: must be finite, not {value!r}")
        if not isinstance(r["unit"], str):
            raise ValueError(f"{where}: unit: must be a str")
        if r["target"] is not None and not isinstance(r["target"], str):
            raise ValueError(f"{where}: target: must be a str or None")
        if r["pass"] is not None and not isinstance(r["pass"], bool):
            raise ValueError(f"{where}: pass: must be a bool or None")
        for key in _OPTIONAL:
            if key in r and not isinstance(r[key], str):
                raise ValueError(f"{where}: {key}: must be a str")
        if "chart" in r and not isinstance(r["chart"], bool):
            raise ValueError(f"{where}: chart: must be a bool")
        out.append({**r, "value": None if value is None else float(value)})
    return out


def run_module(name: str, title: str, claims: tuple[str, ...], quick: bool) -> ModuleResult:
    """Import ``benchmarks.<name>`` and run it; never raises for the module's own faults."""
    started = time.perf_counter()
    qualified = f"{__package__}.{name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            return ModuleResult(name, title, NOT_AVAILABLE, claims=claims)
        return _failed(name, title, claims, started)
    except Exception:
        return _failed(name, title, claims, started)
    try:
        rows = validate_rows(name, module.run(quick))
    except Exception:
        return _failed(name, title, claims, started)
    return ModuleResult(name, title, "ok", time.perf_counter() - started, rows, claims=claims)


def _failed(name: str, title: str, claims: tuple[str, ...], started: float) -> ModuleResult:
    error = traceback.format_exc(limit=-8).strip()
    return ModuleResult(
        name, title, "error", time.perf_counter() - started, error=error, claims=claims
    )


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _command(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if done.returncode != 0:
        return "?"
    return (done.stdout or done.stderr).strip()


def machine_info(quick: bool) -> dict[str, str]:
    """What the figures depend on: when, where, which versions."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    envoy = _command(str(Path(sys.executable).parent / "envoy"), "--version")
    commit = _command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = _command("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    return {
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "mode": "quick (smoke: figures are noise)" if quick else "full",
        "commit": commit + (" (with uncommitted changes)" if dirty not in ("", "?") else ""),
        "machine": f"{os.cpu_count()} CPUs, {cpu}, {platform.system()} {platform.release()}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "versions": ", ".join(
            f"{d} {_version(d)}" for d in ("meshlib", "httpx", "httpcore", "grpcio", "protobuf")
        ),
        "envoy": envoy.split("version:")[-1].strip() or "?",
    }


def _select(only: Sequence[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    known = {m[0]: m for m in MODULES}
    chosen = []
    for name in only:
        key = name if name in known else f"{name}_bench"
        if key not in known:
            raise SystemExit(f"--only {name}: unknown benchmark; known: {', '.join(known)}")
        chosen.append(known[key])
    return chosen or list(MODULES)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks, write the report; 1 if any module failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a second per benchmark")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="e.g. http or http_bench"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory")
    args = parser.parse_args(argv)
    info = machine_info(args.quick)
    started = time.perf_counter()
    results = []
    for name, title, claims in _select(args.only):
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        result = run_module(name, title, claims, args.quick)
        print(f"bench {name}: {result.status} ({result.seconds:.1f} s)", file=sys.stderr)
        if result.error:
            print(result.error, file=sys.stderr)
        results.append(result)
    info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["duration"] = f"{time.perf_counter() - started:.0f} s"
    for path in write_report(results, info, args.out):
        print(f"wrote {path}", file=sys.stderr)
    failed = [r for r in results if r.status == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
