"""``Mesh.close()``: no thread or file descriptor outlives it, over many open/use/close
cycles; a client used after close fails with one documented error (an
``httpx.TransportError``), for known and new hosts alike."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from meshlib import Mesh
from tests.httpx.mesh_xds import Upstream, mesh_resources, serving
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

pytestmark = pytest.mark.chaos
HOST = "close.test"
CYCLES = 12


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settle(baseline_threads: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def _use(mesh: Mesh, i: int) -> None:
    with mesh.httpx_client(timeout=10) as client:
        for j in range(20):
            assert client.get(f"http://{HOST}/echo/{i}-{j}").status_code == 200

    async def go() -> None:
        async with mesh.httpx_async_client(timeout=10) as client:
            rs = await asyncio.gather(*(client.get(f"http://{HOST}/a/{i}-{j}") for j in range(10)))
            assert {r.status_code for r in rs} == {200}

    asyncio.run(go())


def test_close_leaks_no_threads_or_fds(tmp_path: Path) -> None:
    with UvicornThread(EchoApp()) as server:
        res = mesh_resources(HOST, {"c": Upstream([server.port])}, [("/", "c", {})])
        with serving(tmp_path, res) as served:
            boot = served.bootstrap()
            for i in range(2):  # warm-up cycles: process-wide lazy state starts here
                with Mesh(boot) as warm:
                    _use(warm, -1 - i)
            gc.collect()
            time.sleep(0.5)  # the warm-up meshes' threads end
            threads0, fds0 = threading.active_count(), _fds()
            names0 = {t.name for t in threading.enumerate()}
            started = time.monotonic()
            for i in range(CYCLES):
                mesh = Mesh(boot)
                _use(mesh, i)
                mesh.close()
            threads1 = _settle(threads0)
            gc.collect()
            fds1 = _fds()
            extra = sorted(t.name for t in threading.enumerate() if t.name not in names0)
    line = (
        f"[chaos] close(): {CYCLES} meshes x 30 requests, threads {threads0} -> {threads1}, "
        f"fds {fds0} -> {fds1}, {time.monotonic() - started:.2f} s"
    )
    print(line)
    assert threads1 <= threads0 + 1, (line, extra)  # a leak grows with CYCLES
    assert fds1 <= fds0 + 4, (line, sorted(os.listdir("/proc/self/fd")))


def test_use_after_close_is_one_documented_error(tmp_path: Path) -> None:
    with UvicornThread(EchoApp()) as server:
        res = mesh_resources(HOST, {"c": Upstream([server.port])}, [("/", "c", {})])
        with serving(tmp_path, res) as served:
            mesh = served.mesh(unknown_hosts="fail")
            client = mesh.httpx_client(timeout=5)
            assert client.get(f"http://{HOST}/echo/1").status_code == 200
            mesh.close()
            errors = []
            for url in (f"http://{HOST}/echo/2", "http://never-seen.test/"):
                with pytest.raises(httpx.TransportError) as info:
                    client.get(url)
                errors.append(type(info.value))
            client.close()
    print(f"[chaos] use after close: 2 sent, 2 refused with {errors}")
    assert errors[0] is errors[1], errors
