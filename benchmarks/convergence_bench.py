"""Convergence: from a YAML edit at the control plane to the first request that follows it.

The embedded control plane serves one Service whose EndpointSlice names backend 0. Each
edit rewrites the EndpointSlice file to name the other backend, has the control plane
re-read its files (it does not watch them yet: ``ControlPlane.reload()`` is the
trigger), and then sends requests through ``Mesh.httpx_client()`` back to back until one
is answered by the new backend. The time from just before the file is written to the end
of that request is one sample.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from meshlib import Mesh
from meshlib.controlplane import ControlPlane

from ._harness import Row, check, percentile, row, start_backends

__all__ = ["measure", "run"]

_SERVICE = "conv.default.svc.cluster.local"
_PORT = 8080
_EDIT_TIMEOUT = 5.0
_MAX_PAUSE = 0.25  # more than the watcher's default poll interval (0.2 s)


def _objects(backend_port: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "conv", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": _PORT}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "conv-0",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "conv"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": backend_port, "protocol": "TCP"}],
        },
    ]


def _write(path: Path, backend_port: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(_objects(backend_port), sort_keys=False))
    tmp.replace(path)


def _wait_for(client: httpx.Client, url: str, body: str, started: float) -> None:
    """Send requests until one is answered with ``body``; bounded by _EDIT_TIMEOUT."""
    while True:
        response = client.get(url)
        if response.status_code == 200 and response.text.strip() == body:
            return
        if time.perf_counter() - started > _EDIT_TIMEOUT:
            raise RuntimeError(
                f"convergence: no answer from {body} within {_EDIT_TIMEOUT:g}s of the edit "
                f"(last: {response.status_code} {response.text.strip()[:80]!r})"
            )


def watch_supported() -> bool:
    """Whether this control plane can watch its files (``ControlPlane(watch=True)``)."""
    return "watch" in inspect.signature(ControlPlane).parameters


def measure(edits: int, work: Path, *, watch: bool) -> tuple[list[float], list[float]]:
    """(seconds from edit to first request on the new route, seconds spent in reload()).

    ``watch``: the control plane notices the edit itself, with its default poll interval
    and debounce; otherwise the edit is followed by a ``reload()`` call.
    """
    with contextlib.ExitStack() as stack:
        backends = start_backends(stack, 2, work / "backend")
        config = work / "config"
        config.mkdir()
        path = config / "conv.yaml"
        _write(path, backends.ports[0])
        options: dict[str, Any] = {"watch": True} if watch else {}
        cp = stack.enter_context(ControlPlane(config, **options))
        node = "sidecar~127.0.0.1~conv-client.default~default.svc.cluster.local"
        mesh = stack.enter_context(Mesh(bootstrap=cp.bootstrap(node_id=node)))
        client = stack.enter_context(mesh.httpx_client(timeout=5))
        url = f"http://{_SERVICE}:{_PORT}/"
        _wait_for(client, url, "backend-0", time.perf_counter())
        samples: list[float] = []
        reloads: list[float] = []
        pause = random.Random(edits)
        for i in range(edits):
            target = (i + 1) % 2
            started = time.perf_counter()
            _write(path, backends.ports[target])
            if not watch:
                cp.reload()
                reloads.append(time.perf_counter() - started)
            _wait_for(client, url, f"backend-{target}", started)
            samples.append(time.perf_counter() - started)
            # A random pause, so edits do not fall in step with a polling watcher's ticks.
            time.sleep(pause.uniform(0.01, _MAX_PAUSE))
        if cp.nacks():
            raise RuntimeError(f"convergence: the client NACKed: {cp.nacks()[0]}")
    return samples, reloads


def run(quick: bool) -> list[Row]:
    """Convergence p50/p99 over 50 edits (fewer with ``quick``); target p99 <= 250 ms.

    Measured through the file watch when the control plane has one (the target applies
    to it), and through an explicit ``reload()`` (the push path alone).
    """
    group = "Convergence: EndpointSlice YAML edit -> first request on the new endpoint"
    modes = [("reload() after the edit", False)]
    if watch_supported():
        modes.insert(0, ("file watch (default poll + debounce)", True))
    rows: list[Row] = []
    for index, (mode, watch) in enumerate(modes):
        edits = (5 if watch else 10) if quick else 50
        with tempfile.TemporaryDirectory(prefix="meshlib-conv-bench-") as work:
            samples, reloads = measure(edits, Path(work), watch=watch)
        ms = [s * 1000 for s in samples]
        for metric, value, unit in [
            ("p50", percentile(ms, 50), "ms"),
            ("p99", percentile(ms, 99), "ms"),
            ("max", max(ms), "ms"),
            (
                "reload() p50",
                percentile([r * 1000 for r in reloads], 50) if reloads else None,
                "ms",
            ),
            ("edits", float(edits), ""),
        ]:
            rows.append(
                row(
                    f"convergence {mode} {metric}",
                    value,
                    unit,
                    group=group,
                    variant=mode,
                    metric=metric,
                )
            )
        p99 = percentile(ms, 99)
        target, ok = check(p99, "<=", 250, " ms") if index == 0 else (None, None)
        note = None if watch_supported() else "the control plane does not watch its files yet"
        rows.append(row(f"convergence p99, {mode}", p99, "ms", target=target, passed=ok, note=note))
    return rows
