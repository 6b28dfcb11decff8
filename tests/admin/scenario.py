"""A small mesh with something to show: Istio YAML as an operator would write it, real
backends on 127.0.0.1, and traffic through ``mesh.httpx_client()``:

- ``reviews``: v1/v2 subsets, jason's calls to v2, the rest split 80/20;
- ``ratings``: every call aborted with 500 by a fault (FI);
- ``details``: every call delayed 20 ms by a fault (DI);
- ``httpbin``: Istio's circuit-breaking DestinationRule, concurrent callers (UO);
- ``flaky``: one of two replicas answers 503, outlier detection ejects it;
- the workload has a certificate from the project's CA (3 days left).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from meshlib import Mesh
from meshlib.admin import AdminServer
from meshlib.controlplane import CertificateAuthority, ControlPlane
from tests.admin.test_circuit_breaking_task import DESTINATION_RULE, Httpbin
from tests.support import UvicornThread, workload_yaml
from tests.test_walking_skeleton import replica_app

SPIFFE = "spiffe://cluster.local/ns/default/sa/productpage"
NODE = "sidecar~127.0.0.1~productpage-1.default~default.svc.cluster.local"


async def unavailable(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b"down"})


ISTIO = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: reviews-jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: reviews-split
    route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - name: ratings-abort
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  http:
  - name: details-delay
    fault: {delay: {fixedDelay: 0.02s, percentage: {value: 100}}}
    route: [{destination: {host: details}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky}
spec:
  host: flaky
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 30s, baseEjectionTime: 60s,
                       maxEjectionPercent: 100}
"""


def _objects(ports: dict[str, int]) -> str:
    docs = workload_yaml(ports, lambda svc: 8000 if svc == "httpbin" else 9080)
    return "---\n".join([*docs, ISTIO.strip() + "\n", DESTINATION_RULE.strip() + "\n"])


@dataclass
class Scenario:
    mesh: Mesh
    admin: AdminServer
    outcomes: dict[str, list[int | str]]


def _get(client: httpx.Client, url: str, **headers: str) -> int | str:
    try:
        return client.get(url, headers=headers).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


@contextmanager
def scenario(tmp: Path) -> Iterator[Scenario]:
    httpbin = Httpbin()
    apps: dict[str, Any] = {
        "reviews-v1": replica_app("reviews-v1"),
        "reviews-v2": replica_app("reviews-v2"),
        "ratings-v1": replica_app("ratings-v1"),
        "details-v1": replica_app("details-v1"),
        "flaky-v1": replica_app("flaky-v1"),
        "flaky-v2": unavailable,
        "httpbin-v1": httpbin,
    }
    ca = CertificateAuthority(tmp / "ca")
    ca.write_workload_files(SPIFFE, tmp / "certs", ttl=3 * 86400)
    with ExitStack() as stack:
        ports = {name: stack.enter_context(UvicornThread(app)).port for name, app in apps.items()}
        (tmp / "config").mkdir(exist_ok=True)
        (tmp / "config" / "mesh.yaml").write_text(_objects(ports))
        cp = stack.enter_context(ControlPlane(tmp / "config"))
        mesh = stack.enter_context(
            Mesh(bootstrap=cp.bootstrap(node_id=NODE, cert_dir=str(tmp / "certs")))
        )
        admin = stack.enter_context(AdminServer(mesh))
        client = stack.enter_context(mesh.httpx_client(timeout=30))
        out: dict[str, list[int | str]] = {}
        base = "http://{}.default.svc.cluster.local:{}/"
        out["reviews"] = [_get(client, base.format("reviews", 9080)) for _ in range(40)]
        out["reviews-jason"] = [
            _get(client, base.format("reviews", 9080), **{"end-user": "jason"}) for _ in range(5)
        ]
        out["ratings"] = [_get(client, base.format("ratings", 9080)) for _ in range(12)]
        out["details"] = [_get(client, base.format("details", 9080)) for _ in range(6)]
        out["flaky"] = [_get(client, base.format("flaky", 9080)) for _ in range(10)]

        def trip(_: int) -> int | str:
            result = _get(client, base.format("httpbin", 8000) + "get")
            if result != 200:
                httpbin.release.set()
            return result

        with ThreadPoolExecutor(3) as pool:
            out["httpbin"] = list(pool.map(trip, range(30)))
        httpbin.release.set()
        with suppress(Exception):
            admin.telemetry.stats.flush()  # type: ignore[union-attr]
        yield Scenario(mesh, admin, out)
