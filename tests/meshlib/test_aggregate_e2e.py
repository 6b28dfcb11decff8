"""Aggregate clusters end to end: hand-built xDS over the project's control plane, real
uvicorn backends, requests through ``mesh.httpx_client()``. The children are plaintext
HTTP/1.1 clusters (the same connection settings as the aggregate's)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format

from meshlib import Mesh
from meshlib._cli_status import config_tables, status_text
from meshlib.admin import clusters_json, config_dump, xds_json
from meshlib.admin._views import snapshot_samples
from meshlib.cluster import AggregateView
from tests.meshlib.cluster_xds import Backend, api_listener, cla, cluster, control_plane, routes
from tests.meshlib.test_cluster_e2e import port_of, wait_for
from tests.support import UvicornThread

LISTENER = "svc.test:80"
URL = "http://svc.test:80/agg"
AGGREGATE_TYPE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"

pytestmark = pytest.mark.timeout(60)


def aggregate(name: str, children: list[str], **fields: Any) -> cluster_pb2.Cluster:
    spec: dict[str, Any] = {
        "name": name,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {"@type": AGGREGATE_TYPE, "clusters": children},
        },
    }
    spec.update(fields)
    return json_format.ParseDict(spec, cluster_pb2.Cluster())


def with_health(assignment: endpoint_pb2.ClusterLoadAssignment, *health: int) -> Any:
    for lb, status in zip(assignment.endpoints[0].lb_endpoints, health, strict=True):
        lb.health_status = status
    return assignment


HEALTHY, UNHEALTHY = 1, 2


class Env:
    """Three backends: ``primary`` has the first two, ``secondary`` the third."""

    def __init__(self, tmp: Path) -> None:
        self.backends = [Backend() for _ in range(3)]
        self.servers = [UvicornThread(b).start() for b in self.backends]
        for b, s in zip(self.backends, self.servers, strict=True):
            b.port = s.port
        self.ports = [s.port for s in self.servers]
        self.cp, self.cache = control_plane(tmp)
        self.cp.start()

    def install(self, *extra: Any, primary: Any = None, top: Any = None) -> None:
        """``primary``: its ClusterLoadAssignment (default: both endpoints; False: no
        primary cluster at all)."""
        if primary is None:
            primary = cla("primary", self.ports[:2])
        self.cache.install(
            top if top is not None else aggregate("agg", ["primary", "secondary"]),
            *([cluster("primary"), primary] if primary is not False else []),
            cluster("secondary"),
            cla("secondary", self.ports[2:]),
            *extra,
            routes("r", [("/agg", "agg", {})]),
            api_listener(LISTENER, "r"),
        )

    def close(self) -> None:
        self.cp.stop()
        for s in self.servers:
            s.stop()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()


def ports(client: httpx.Client, n: int) -> collections.Counter[int]:
    return collections.Counter(port_of(client.get(URL)) for _ in range(n))


def test_failover_to_the_secondary_and_back(env: Env) -> None:
    env.install()
    primary, secondary = set(env.ports[:2]), env.ports[2]
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        assert set(ports(client, 20)) == primary
        view = mesh.snapshot.clusters["agg"]
        assert isinstance(view, AggregateView)
        assert {"primary", "secondary"} <= set(mesh.snapshot.clusters)

        # Every primary endpoint turns unhealthy: all traffic fails over.
        env.install(primary=with_health(cla("primary", env.ports[:2]), UNHEALTHY, UNHEALTHY))
        wait_for(lambda: port_of(client.get(URL)) == secondary, "failover to the secondary")
        assert ports(client, 20) == {secondary: 20}

        # The primary loses its endpoints altogether: still the secondary.
        env.install(primary=cla("primary", []))
        wait_for(lambda: not mesh.snapshot.clusters["primary"].endpoints, "empty primary")
        assert ports(client, 10) == {secondary: 10}

        # The primary cluster is removed: a child that does not exist is skipped.
        env.install()
        wait_for(lambda: port_of(client.get(URL)) != secondary, "traffic on the primary")
        env.install(primary=False)
        wait_for(lambda: port_of(client.get(URL)) == secondary, "the primary removed")
        assert ports(client, 10) == {secondary: 10}
        assert "does not exist" in mesh.snapshot.clusters["primary"].error

        # The primary comes back: traffic returns.
        env.install()
        wait_for(lambda: port_of(client.get(URL)) != secondary, "traffic back on the primary")
        assert set(ports(client, 20)) == primary


def test_half_healthy_primary_keeps_seventy_percent(env: Env) -> None:
    # 1 of 2 primary endpoints healthy: health 50% x 1.4 = 70% of requests stay.
    env.install(primary=with_health(cla("primary", env.ports[:2]), HEALTHY, UNHEALTHY))
    n = 400
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        counts = ports(client, n)
    assert set(counts) == {env.ports[0], env.ports[2]}
    assert abs(counts[env.ports[0]] - 0.7 * n) < 4 * (n * 0.7 * 0.3) ** 0.5, counts


def test_outlier_ejection_in_the_primary_fails_over(env: Env) -> None:
    od = {"consecutive_5xx": 2, "base_ejection_time": "30s", "max_ejection_percent": 100}
    env.install(cluster("primary", outlier_detection=od))
    for b in env.backends[:2]:
        b.status = 503
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        statuses = [client.get(URL).status_code]
        primary = mesh.snapshot.clusters["primary"].endpoints
        for _ in range(30):  # no request fails for lack of an endpoint meanwhile
            if all(e.ejected for e in primary):
                break
            statuses.append(client.get(URL).status_code)
        assert all(e.ejected for e in primary), statuses
        assert statuses.count(503) == 4  # two consecutive 5xx per primary endpoint
        assert ports(client, 10) == {env.ports[2]: 10}


def test_nested_aggregate_and_a_missing_child(env: Env) -> None:
    # top -> [missing, inner -> [primary], secondary]: missing is skipped (as Envoy skips a
    # cluster it does not have), inner is flattened into primary (gRFC A37).
    top = aggregate("agg", ["missing", "inner", "secondary"])
    env.install(aggregate("inner", ["primary"]), top=top)
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        assert set(ports(client, 10)) == set(env.ports[:2])
        view = mesh.snapshot.clusters["agg"]
        assert isinstance(view, AggregateView) and view.aggregate is not None
        assert [c.view.name for c in view.aggregate.children] == ["primary", "secondary"]
        assert view.error == ""


def test_loop_fails_requests_with_the_reason(env: Env) -> None:
    env.install(aggregate("inner", ["agg"]), top=aggregate("agg", ["inner", "secondary"]))
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        r = client.get(URL)  # Envoy's local reply, the loop in its reason
        assert (r.status_code, r.text) == (503, "no healthy upstream")
        assert "aggregate cluster loop: agg -> inner" in r.extensions["meshlib.local_reply"].message
        assert "loop" in mesh.snapshot.clusters["agg"].error


def test_the_aggregate_breaker_admits_the_request(env: Env) -> None:
    # Envoy's router admits against the route's cluster: the aggregate's thresholds.
    top = aggregate("agg", ["primary", "secondary"])
    env.install(top=top)
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        client.get(URL)
        view = mesh.snapshot.clusters["agg"]
        admission = view.admit_request()
        try:
            assert view.breaker is not None and view.breaker.active("requests") == 1
            assert mesh.snapshot.clusters["primary"].breaker is not None
            assert mesh.snapshot.clusters["primary"].breaker.active("requests") == 0
        finally:
            admission.release()


def test_admin_views_render_with_an_aggregate(env: Env) -> None:
    env.install()
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        ports(client, 6)
        doc = clusters_json(mesh)
        names = [c["name"] for c in doc["cluster_statuses"]]
        assert names == ["agg", "primary", "secondary"]
        text = status_text(xds_json(mesh), doc)
        assert "agg" in text and "primary" in text
        dump = config_dump(mesh)
        assert "agg" in config_tables(dump)
        samples = snapshot_samples(mesh)
        assert any(s for s in samples)
