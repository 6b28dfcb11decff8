"""Every translated Istio field, end to end through a real Envoy.

One control plane and one Envoy serve a config where each VirtualService rule is
reached by its own path (``/exact``, ``/rewrite``, ...); each test sends requests
through Envoy's 9080 listener and checks what the backends saw. Envoy must NACK
nothing (the control plane records no NACKs and Envoy's update_rejected stats are 0).
"""

from __future__ import annotations

import json
import ssl
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib.controlplane import ControlPlane
from meshlib.controlplane.ca._authority import CertificateAuthority

from .peer_support import EnvoyProcess, Seen, TlsUvicornThread, backend_app, http_backends

pytestmark = pytest.mark.timeout(90)

WORKLOADS = ["echo-v1", "echo-v2", "echo-v3", "flaky-1", "sticky-1", "sticky-2", "sticky-3"]
WORKLOADS += ["od-good", "od-bad"]

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{uri: {exact: /exact}}]
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {regex: "/regex/[0-9]+"}}]
    route: [{destination: {host: echo, subset: v2}}]
  - match: [{uri: {prefix: /m}, headers: {x-route: {exact: h}}}]
    route: [{destination: {host: echo, subset: v3}}]
  - match: [{uri: {prefix: /m}, queryParams: {q: {exact: "1"}}}]
    route: [{destination: {host: echo, subset: v2}}]
  - match: [{uri: {prefix: /m}, method: {exact: POST}}]
    route: [{destination: {host: echo, subset: v3}}]
  - match: [{uri: {prefix: /m}, authority: {prefix: "echo.default"}}]
    route: [{destination: {host: echo, subset: v2}}]
  - match: [{uri: {prefix: /CASE}, ignoreUriCase: true}]
    route: [{destination: {host: echo, subset: v3}}]
  - match: [{uri: {prefix: /rewrite}}]
    rewrite: {uri: /rewritten, authority: rewritten.example}
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-set: s}, add: {x-add: a}, remove: [x-remove]}
      response: {set: {x-resp: r}, remove: [x-backend]}
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {prefix: /timeout}}]
    timeout: 0.2s
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 0.05s, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {prefix: /mirror}}]
    mirror: {host: echo, subset: v2}
    mirrorPercentage: {value: 100}
    route: [{destination: {host: echo, subset: v1}}]
  - match: [{uri: {prefix: /weighted}}]
    route:
    - {destination: {host: echo, subset: v1}, weight: 70}
    - {destination: {host: echo, subset: v3}, weight: 30}
  - route: [{destination: {host: echo, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky}
spec:
  hosts: [flaky]
  http:
  - match: [{uri: {prefix: /no-retry}}]
    retries: {attempts: 0}
    route: [{destination: {host: flaky}}]
  - retries: {attempts: 3, retryOn: "5xx", perTryTimeout: 2s}
    route: [{destination: {host: flaky}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sticky}
spec:
  host: sticky
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}}
    connectionPool:
      tcp: {maxConnections: 50}
      http: {http1MaxPendingRequests: 20, http2MaxRequests: 30, maxRetries: 5}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: od}
spec:
  host: od
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 1, interval: 30s, baseEjectionTime: 60s,
                       maxEjectionPercent: 100}
"""


def _objects(ports: dict[str, int]) -> str:
    docs = []
    services = {w.split("-")[0] for w in ports}
    for svc in sorted(services):
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}}}\n"
            f"spec: {{ports: [{{name: http, port: 9080}}]}}\n"
        )
    for workload, port in sorted(ports.items()):
        svc, version = workload.split("-", 1)
        docs.append(
            textwrap.dedent(
                f"""\
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata:
                  name: {workload}
                  labels: {{kubernetes.io/service-name: {svc}, version: "{version}"}}
                addressType: IPv4
                endpoints: [{{addresses: [127.0.0.1]}}]
                ports: [{{name: http, port: {port}}}]
                """
            )
        )
    return "---\n".join([*docs, VS])


class Mesh:
    def __init__(self, cp: ControlPlane, envoy: EnvoyProcess, seen: Seen) -> None:
        self.cp, self.envoy, self.seen = cp, envoy, seen
        self.client = httpx.Client(timeout=5)

    def get(self, host: str, path: str, method: str = "GET", **headers: str) -> httpx.Response:
        url = f"http://127.0.0.1:{self.envoy.port()}{path}"
        return self.client.request(method, url, headers={"host": f"{host}:9080", **headers})

    def workload(self, path: str, host: str = "echo", **kw: Any) -> str:
        r = self.get(host, path, **kw)
        assert r.status_code == 200, (r.status_code, r.text)
        return str(r.json()["workload"])

    def stat(self, name: str) -> int:
        text = httpx.get(f"http://{self.envoy.admin}/stats?filter={name}").text
        return sum(int(line.rsplit(": ", 1)[1]) for line in text.splitlines() if ": " in line)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("envoy-features")
    with http_backends(WORKLOADS, fail_first={"flaky-1": 2, "od-bad": 10**6}) as (ports, seen):
        (tmp / "config.yaml").write_text(_objects(ports))
        with ControlPlane(tmp / "config.yaml") as cp:
            envoy = EnvoyProcess(cp, tmp)
            try:
                envoy.wait_ready()
                m = Mesh(cp, envoy, seen)
                yield m
                m.client.close()
                assert cp.nacks() == []
                assert envoy.rejected() == []
                assert cp.problems == ()
            finally:
                envoy.stop()


def test_uri_header_query_method_authority_matches(mesh: Mesh) -> None:
    assert mesh.workload("/exact") == "echo-v1"
    assert mesh.workload("/exact/no") == "echo-v1"  # falls to the catch-all
    assert mesh.workload("/regex/42") == "echo-v2"
    assert mesh.workload("/m", **{"x-route": "h"}) == "echo-v3"
    assert mesh.workload("/m?q=1") == "echo-v2"
    assert mesh.workload("/m", method="POST") == "echo-v3"
    assert mesh.workload("/m", host="echo.default") == "echo-v2"
    assert mesh.workload("/m") == "echo-v1"
    assert mesh.workload("/case/x") == "echo-v3"


def test_rewrite_uri_and_authority(mesh: Mesh) -> None:
    body = mesh.get("echo", "/rewrite/a").json()
    assert body["path"] == "/rewritten/a"
    assert body["headers"]["host"] == "rewritten.example"


def test_header_operations(mesh: Mesh) -> None:
    r = mesh.get("echo", "/headers", **{"x-remove": "1", "x-add": "z"})
    seen = r.json()["headers"]
    assert seen["x-set"] == "s"
    assert "x-remove" not in seen
    assert seen["x-add"] == "z,a"  # appended to the client's value
    assert r.headers["x-resp"] == "r"
    assert "x-backend" not in r.headers


def test_timeout_and_fault_delay_and_abort(mesh: Mesh) -> None:
    assert mesh.get("echo", "/timeout/slow").status_code == 504
    before = mesh.stat("fault.delays_injected")
    assert mesh.workload("/delay") == "echo-v1"
    assert mesh.stat("fault.delays_injected") == before + 1
    assert mesh.get("echo", "/abort").status_code == 418


def test_retries(mesh: Mesh) -> None:
    # flaky-1 fails its first two requests: three attempts make the call succeed.
    assert mesh.workload("/", host="flaky") == "flaky-1"
    assert mesh.seen.count("flaky-1") == 3
    assert mesh.get("flaky", "/no-retry").status_code == 200


def test_mirror(mesh: Mesh) -> None:
    assert mesh.workload("/mirror/1") == "echo-v1"
    for _ in range(50):  # the mirrored copy is sent asynchronously
        if any(w == "echo-v2" and p == "/mirror/1" for w, p, _ in mesh.seen.requests):
            break
        httpx.get(f"http://{mesh.envoy.admin}/ready")
    mirrored = [h for w, p, h in mesh.seen.requests if w == "echo-v2" and p == "/mirror/1"]
    assert mirrored and mirrored[0]["host"].endswith("-shadow:9080")


def test_weighted_split(mesh: Mesh) -> None:
    counts = Counter(mesh.workload("/weighted") for _ in range(100))
    # n=100, p=0.7: 3.5 sigma is +-16
    assert set(counts) == {"echo-v1", "echo-v3"}
    assert 54 <= counts["echo-v1"] <= 86, counts


def test_consistent_hash_and_connection_pool(mesh: Mesh) -> None:
    users = [f"user-{i}" for i in range(12)]
    first = {u: mesh.workload("/", host="sticky", **{"x-user": u}) for u in users}
    again = {u: mesh.workload("/", host="sticky", **{"x-user": u}) for u in users}
    assert first == again
    assert len(set(first.values())) > 1
    dump = json.dumps(mesh.envoy.config_dump())
    assert '"max_pending_requests": 20' in dump
    assert '"max_requests": 30' in dump


def test_outlier_detection_ejects_failing_endpoint(mesh: Mesh) -> None:
    statuses = [mesh.get("od", "/").status_code for _ in range(20)]
    # od-bad always fails; once ejected (after one 5xx, applied by Envoy's main thread)
    # every request goes to od-good.
    assert 503 in statuses[:5] and statuses[-10:] == [200] * 10, statuses
    assert mesh.stat("outlier_detection.ejections_enforced_consecutive_5xx") >= 1


def test_istio_mutual_with_sds_certificates(tmp_path: Path) -> None:
    """ISTIO_MUTUAL: Envoy gets SDS secrets from the control plane's CA, the backend
    requires a client certificate from the same CA."""
    ca = CertificateAuthority(tmp_path / "ca")
    identity = "spiffe://cluster.local/ns/default/sa/secure"
    files = ca.write_workload_files(identity, tmp_path / "backend")
    server = TlsUvicornThread(
        backend_app("secure-1", Seen(), {}),
        ssl_certfile=str(files.cert_chain),
        ssl_keyfile=str(files.key),
        ssl_ca_certs=str(files.root_cert),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    ).start()
    try:
        (tmp_path / "c.yaml").write_text(
            textwrap.dedent(
                f"""\
                apiVersion: v1
                kind: Service
                metadata: {{name: secure}}
                spec: {{ports: [{{name: http, port: 9080}}]}}
                ---
                apiVersion: v1
                kind: Pod
                metadata: {{name: secure-1}}
                spec: {{serviceAccountName: secure}}
                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {{name: secure-1, labels: {{kubernetes.io/service-name: secure}}}}
                addressType: IPv4
                endpoints: [{{addresses: [127.0.0.1], targetRef: {{kind: Pod, name: secure-1}}}}]
                ports: [{{name: http, port: {server.port}}}]
                ---
                apiVersion: networking.istio.io/v1
                kind: DestinationRule
                metadata: {{name: secure}}
                spec: {{host: secure, trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}}}
                """
            )
        )
        with ControlPlane(tmp_path / "c.yaml", ca=ca) as cp:
            envoy = EnvoyProcess(cp, tmp_path)
            try:
                envoy.wait_ready()
                r = httpx.get(
                    f"http://127.0.0.1:{envoy.port()}/", headers={"host": "secure:9080"}, timeout=5
                )
                assert r.status_code == 200, r.text
                assert r.json()["workload"] == "secure-1"
                assert cp.nacks() == [] and envoy.rejected() == []
            finally:
                envoy.stop()
    finally:
        server.stop()
