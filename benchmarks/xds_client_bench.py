"""xds_client at scale: one ClusterLoadAssignment of 10,000 endpoints, and an initial
sync of 1,000 clusters with 10 endpoints each; time and memory.

- ``EDS update``: decode + validate + cache + publish (watcher called) of a changed
  10,000-endpoint ClusterLoadAssignment, through the same protocol code a stream runs
  (in process, so the figure is the client's own work); median of the rounds. Target
  <= 50 ms. Also end to end over a real gRPC stream from a scripted server, for context.
- ``initial sync``: a wildcard Cluster watch whose callback watches each cluster's
  endpoints (as a mesh does), against a scripted ADS server on 127.0.0.1, until all
  1,000 ClusterLoadAssignments have reached the watcher.
- memory: Python heap the client retains per endpoint (tracemalloc, in a separate pass),
  and resident-set growth of the process over the sync. Target <= 2 KB per endpoint.

``python -m benchmarks.xds_client_bench [--quick]``; ``run(quick)`` returns the rows.
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
import tracemalloc
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_client import Backoff, XdsClient, load_bootstrap
from xds_client import builders as b
from xds_client._cache import Entry, TypeState
from xds_client._connection import run_all
from xds_client._sotw import SotwProtocol
from xds_client.resources import CLUSTER, ENDPOINTS
from xds_client.testing import ScriptedAdsServer

__all__ = ["run"]

Row = dict[str, Any]
EDS_TARGET_MS = 50.0
MEMORY_TARGET_BYTES = 2048


def _row(name: str, value: float, unit: str, target: str | None, passed: bool | None) -> Row:
    return {"name": name, "value": round(value, 3), "unit": unit, "target": target, "pass": passed}


def _cla(name: str, count: int, port: int) -> Any:
    """``count`` endpoints in 10 localities, all on ``port`` (change it to change the CLA)."""
    cla = b.endpoints(name, [])
    del cla.endpoints[:]
    per = max(1, count // 10)
    for z in range(10):
        group = cla.endpoints.add()
        group.locality.zone = f"z{z}"
        group.load_balancing_weight.value = 1
        for i in range(min(per, count - z * per)):
            n = z * per + i
            lb = group.lb_endpoints.add()
            sa = lb.endpoint.address.socket_address
            sa.address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            sa.port_value = port
            lb.load_balancing_weight.value = 1
    return cla


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class _Counter:
    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done = threading.Event()

    def on_resource_changed(self, name: str, resource: Any) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def on_resource_error(self, name: str, error: Exception) -> None:
        raise RuntimeError(f"{name}: {error}")

    def on_ambient_error(self, name: str, error: Exception) -> None:
        pass


def eds_update(endpoints: int, rounds: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds per update: decode, validate, cache and publish one changed
    CLA. CPU time of this thread is reported too: the machine may be shared."""
    state = TypeState(ENDPOINTS)
    watcher = _Counter(rounds)
    state.entries["big"] = Entry(watchers=[watcher])
    states = {ENDPOINTS.type_url: state}
    proto = SotwProtocol(base_pb2.Node(id="bench"))
    responses = [
        discovery_pb2.DiscoveryResponse(
            type_url=ENDPOINTS.type_url,
            version_info=str(i),
            nonce=str(i),
            resources=[b.pack(_cla("big", endpoints, 8000 + i % 2))],
        )
        for i in range(rounds + 1)
    ]
    wall, cpu = [], []
    for i, response in enumerate(responses):
        t0, c0 = time.perf_counter(), time.thread_time()
        notify, _, errors = proto.on_response(states, response, ignore_deletion=False)
        run_all(notify)
        elapsed, used = time.perf_counter() - t0, time.thread_time() - c0
        assert not errors, errors
        if i:  # the first one is a warm-up
            wall.append(elapsed)
            cpu.append(used)
    return wall, cpu


def eds_memory(endpoints: int) -> float:
    """Bytes of Python heap the cache keeps per endpoint after one update."""
    response = discovery_pb2.DiscoveryResponse(
        type_url=ENDPOINTS.type_url,
        version_info="1",
        nonce="1",
        resources=[b.pack(_cla("big", endpoints, 8000))],
    )
    state = TypeState(ENDPOINTS)
    state.entries["big"] = Entry(watchers=[_Counter(1)])
    proto = SotwProtocol(base_pb2.Node(id="bench"))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    notify, _, _ = proto.on_response({ENDPOINTS.type_url: state}, response, ignore_deletion=False)
    run_all(notify)
    del notify
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    retained = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return retained / endpoints


def eds_end_to_end(endpoints: int, rounds: int) -> list[float]:
    """Seconds from set_resources on the scripted server to the watcher, over gRPC."""
    with ScriptedAdsServer() as server:
        server.set_resources(ENDPOINTS.type_url, {"big": b.pack(_cla("big", endpoints, 7999))})
        client = XdsClient(load_bootstrap(server.bootstrap()), backoff=Backoff(0.05, 0.2))
        try:
            seen = threading.Semaphore(0)

            class W(_Counter):
                def on_resource_changed(self, name: str, resource: Any) -> None:
                    seen.release()

            client.watch(ENDPOINTS, "big", W(0))
            seen.acquire(timeout=30)
            packed = [b.pack(_cla("big", endpoints, 8000 + i % 2)) for i in range(rounds)]
            times = []
            for any_ in packed:
                t0 = time.perf_counter()
                server.set_resources(ENDPOINTS.type_url, {"big": any_})
                if not seen.acquire(timeout=30):
                    raise TimeoutError("EDS update did not arrive")
                times.append(time.perf_counter() - t0)
            return times
        finally:
            client.close()


def initial_sync(clusters: int, per_cluster: int, *, trace: bool) -> tuple[float, int, float]:
    """(seconds, RSS growth in bytes, traced heap growth in bytes) for a full sync."""
    with ScriptedAdsServer() as server:
        names = [f"outbound|80||svc-{i}.default.svc.cluster.local" for i in range(clusters)]
        server.set_resources(CLUSTER.type_url, {n: b.pack(b.cluster(n)) for n in names})
        server.set_resources(
            ENDPOINTS.type_url,
            {n: b.pack(_cla(n, per_cluster, 9000)) for n in names},
        )
        gc.collect()
        if trace:
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
        rss0 = _rss()
        done = _Counter(clusters)
        client = XdsClient(load_bootstrap(server.bootstrap()), backoff=Backoff(0.05, 0.2))

        class Clusters(_Counter):
            def on_resource_changed(self, name: str, resource: Any) -> None:
                client.watch(ENDPOINTS, resource.eds_service_name, done)

        try:
            t0 = time.perf_counter()
            client.watch(CLUSTER, "*", Clusters(0))
            if not done.done.wait(120):
                raise TimeoutError(f"sync incomplete: {done.count}/{clusters}")
            elapsed = time.perf_counter() - t0
            gc.collect()
            rss = _rss() - rss0
            heap = 0.0
            if trace:
                after = tracemalloc.take_snapshot()
                tracemalloc.stop()
                heap = sum(s.size_diff for s in after.compare_to(before, "filename"))
            return elapsed, rss, heap
        finally:
            client.close()


def run(quick: bool = False) -> list[Row]:
    rounds = 5 if quick else 15
    wall, cpu = eds_update(10_000, rounds)
    eds, eds_cpu = statistics.median(wall) * 1000, statistics.median(cpu) * 1000
    eds_mem = eds_memory(10_000)
    e2e = statistics.median(eds_end_to_end(10_000, 3 if quick else 7)) * 1000
    sync_s, sync_rss, _ = initial_sync(1000, 10, trace=False)
    _, _, sync_heap = initial_sync(1000, 10, trace=True)
    endpoints = 1000 * 10
    target_mem = f"<= {MEMORY_TARGET_BYTES} B"
    return [
        _row(
            "EDS update, 10,000 endpoints (decode+validate+publish)",
            eds,
            "ms",
            f"<= {EDS_TARGET_MS:g} ms",
            eds <= EDS_TARGET_MS,
        ),
        _row("EDS update, 10,000 endpoints: CPU time", eds_cpu, "ms", None, None),
        _row("EDS update, 10,000 endpoints, end to end over gRPC", e2e, "ms", None, None),
        _row(
            "EDS 10,000 endpoints: retained heap per endpoint",
            eds_mem,
            "B",
            target_mem,
            eds_mem <= MEMORY_TARGET_BYTES,
        ),
        _row("initial sync, 1,000 clusters x 10 endpoints", sync_s * 1000, "ms", None, None),
        _row(
            "initial sync: retained heap per endpoint",
            sync_heap / endpoints,
            "B",
            target_mem,
            sync_heap / endpoints <= MEMORY_TARGET_BYTES,
        ),
        _row(
            "initial sync: RSS growth per endpoint",
            sync_rss / endpoints,
            "B",
            target_mem,
            sync_rss / endpoints <= MEMORY_TARGET_BYTES,
        ),
    ]


def main() -> None:
    for r in run(quick="--quick" in sys.argv[1:]):
        verdict = {True: "PASS", False: "FAIL", None: ""}[r["pass"]]
        print(f"{r['name']:58} {r['value']:>10.3f} {r['unit']:3} {r['target'] or '':>12} {verdict}")


if __name__ == "__main__":
    main()
