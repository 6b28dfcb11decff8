"""KubernetesSource against a fake API server speaking the real list/watch JSON on loopback.

The fake (meshlib.controlplane.testing.FakeKubernetesAPI) is a real HTTP server; the
source talks to it through the ``kubernetes`` client. Changes made on the fake must reach
a running ControlPlane and a connected meshlib.Mesh; watch failures must heal.
"""

from __future__ import annotations

import copy
import http.client
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from meshlib import Mesh
from meshlib.controlplane import (
    CLUSTER_TYPE,
    Backoff,
    ConfigError,
    ControlPlane,
    FileSource,
    KubernetesError,
    KubernetesSource,
    LiveSource,
)
from meshlib.controlplane.testing import RESOURCE_KINDS, FakeKubernetesAPI
from tests.support import UvicornThread, service_objects, write_config

pytestmark = pytest.mark.timeout(60)

FAST = Backoff(initial=0.02, maximum=0.2)

VIRTUAL_SERVICE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "default"},
    "spec": {
        "hosts": ["reviews"],
        "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}],
    },
}
DESTINATION_RULE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": "default"},
    "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
}
PEER_AUTHENTICATION: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "default", "namespace": "default"},
    "spec": {"mtls": {"mode": "STRICT"}},
}


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def ports(source: KubernetesSource, name: str) -> list[int]:
    return [p.port for s in source.load().services if s.name == name for p in s.ports]


@pytest.fixture
def api() -> Iterator[FakeKubernetesAPI]:
    with FakeKubernetesAPI() as server:
        for obj in service_objects("reviews", 9080, [("127.0.0.1", 19081)]):
            server.apply(obj)
        yield server


@pytest.fixture
def source(api: FakeKubernetesAPI) -> Iterator[KubernetesSource]:
    with KubernetesSource(host=api.url, backoff=FAST) as src:
        yield src


def test_same_objects_parse_the_same_as_from_files(
    api: FakeKubernetesAPI, source: KubernetesSource, tmp_path: Path
) -> None:
    extra = [
        VIRTUAL_SERVICE,
        DESTINATION_RULE,
        PEER_AUTHENTICATION,
        *service_objects("ratings", 9090, [("127.0.0.2", 29090)], namespace="shop"),
    ]
    for obj in extra:
        api.apply(obj)
    objects = service_objects("reviews", 9080, [("127.0.0.1", 19081)]) + extra
    from_files = FileSource(write_config(tmp_path, copy.deepcopy(objects))).load()
    assert len(from_files.endpoint_slices) == 2
    assert from_files.virtual_services and from_files.destination_rules
    wait_until(lambda: source.load() == from_files, "the same objects as from the files")
    assert source.problems == ()
    # One list per kind, then watches only; Endpoints (mirrored from slices) are not read.
    for kind in RESOURCE_KINDS:
        assert api.count("list", kind.kind) == (kind.kind != "Endpoints"), kind.kind
    assert isinstance(source, LiveSource)


def test_changes_reach_a_running_control_plane_and_mesh(api: FakeKubernetesAPI) -> None:
    def app(name: str) -> FastAPI:
        fastapi = FastAPI()
        fastapi.get("/")(lambda: {"replica": name})
        return fastapi

    with (
        UvicornThread(app("a")) as a,
        UvicornThread(app("b")) as b,
        UvicornThread(app("c")) as c,
    ):
        api.apply(service_objects("reviews", 9080, [("127.0.0.1", a.port)])[1])
        source = KubernetesSource(host=api.url, backoff=FAST)
        with (
            ControlPlane(source) as cp,
            Mesh(cp.bootstrap(), unknown_hosts="fail") as mesh,
            mesh.httpx_client(timeout=5) as client,
        ):

            def replica(url: str) -> str | None:
                try:
                    return str(client.get(url).json()["replica"])
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    return type(err).__name__

            reviews = "http://reviews.default.svc.cluster.local:9080/"
            assert replica(reviews) == "a"
            # Modified: the endpoint moves to another replica.
            api.apply(service_objects("reviews", 9080, [("127.0.0.1", b.port)])[1])
            wait_until(lambda: replica(reviews) == "b", "the modified EndpointSlice")
            # Added: a new service in another namespace.
            for obj in service_objects("ratings", 9090, [("127.0.0.1", c.port)], "shop"):
                api.apply(obj)
            ratings = "http://ratings.shop.svc.cluster.local:9090/"
            wait_until(lambda: replica(ratings) == "c", "the added Service")
            # Deleted: its cluster leaves the served snapshot.
            api.delete("Service", "shop", "ratings")
            gone = "outbound|9090||ratings.shop.svc.cluster.local"
            wait_until(
                lambda: gone not in cp.snapshot().resources(CLUSTER_TYPE), "the deleted Service"
            )
            assert replica(reviews) == "b"
            assert cp.nacks() == []
        assert source.closed  # the control plane closed its source


def test_410_gone_relists(api: FakeKubernetesAPI, source: KubernetesSource) -> None:
    assert ports(source, "reviews") == [9080]
    with api.partition():  # the source loses the API server while things change
        changed = api.get("Service", "default", "reviews")
        changed["spec"]["ports"][0]["port"] = 9081
        api.apply(changed)
        api.delete("EndpointSlice", "default", "reviews-0")
        api.compact()  # ... and the history it missed is compacted away
        stale = api.resource_version
    wait_until(lambda: ports(source, "reviews") == [9081], "the relisted Service")
    wait_until(lambda: not source.load().endpoint_slices, "the relisted EndpointSlices")
    assert api.count("list", "Service") >= 2
    assert api.count("list", "EndpointSlice") >= 2
    too_old = [
        q
        for verb, path, q in api.requests
        if verb == "watch" and path == "/api/v1/services" and int(q["resourceVersion"]) < stale
    ]
    assert too_old, "the source should have resumed with its old resourceVersion first"


def test_410_error_event_on_an_open_watch_relists(
    api: FakeKubernetesAPI, source: KubernetesSource
) -> None:
    lists = api.count("list", "Service")
    api.expire_watches()
    wait_until(lambda: api.count("list", "Service") > lists, "a relist after 410")
    api.apply({**VIRTUAL_SERVICE, "metadata": {"name": "after", "namespace": "default"}})
    wait_until(lambda: source.load().virtual_services, "watching again after the relist")


def test_dropped_watch_resumes_from_its_resource_version(
    api: FakeKubernetesAPI, source: KubernetesSource
) -> None:
    seen = api.resource_version
    watches = api.count("watch", "Service")
    api.drop_watches()
    changed = api.get("Service", "default", "reviews")
    changed["spec"]["ports"][0]["port"] = 9999
    api.apply(changed)
    wait_until(lambda: ports(source, "reviews") == [9999], "the change after reconnecting")
    assert api.count("watch", "Service") > watches
    assert api.count("list", "Service") == 1  # resumed, not relisted
    resumed = [
        q for verb, path, q in api.requests if verb == "watch" and path == "/api/v1/services"
    ]
    assert int(resumed[-1]["resourceVersion"]) >= seen


def test_bookmarks_advance_the_resume_version(
    api: FakeKubernetesAPI, source: KubernetesSource
) -> None:
    calls: list[int] = []
    source.watch(lambda: calls.append(1))
    api.apply({**VIRTUAL_SERVICE, "metadata": {"name": "x", "namespace": "default"}})
    wait_until(lambda: calls, "a change notification")
    changed = api.get("Service", "default", "reviews")
    changed["metadata"]["labels"] = {"edited": "yes"}
    api.apply(changed)  # a newer version the VirtualService watch never sees an event for
    wait_until(lambda: len(calls) >= 2, "the Service change")
    before, bookmarked = len(calls), api.resource_version
    watches = api.count("watch", "VirtualService")
    path = "/apis/networking.istio.io/v1/virtualservices"
    assert source.resource_versions()[path] != str(bookmarked)
    api.bookmark()
    wait_until(lambda: source.resource_versions()[path] == str(bookmarked), "the bookmark")
    api.drop_watches()
    wait_until(lambda: api.count("watch", "VirtualService") > watches, "the re-watch")
    resumed = [q for v, p, q in api.requests if v == "watch" and p.endswith("/virtualservices")]
    assert int(resumed[-1]["resourceVersion"]) == bookmarked
    assert api.count("list", "VirtualService") == 1
    assert len(calls) == before  # resuming replays nothing


def test_bad_object_is_reported_and_the_rest_keeps_serving(
    api: FakeKubernetesAPI, source: KubernetesSource
) -> None:
    cluster = "outbound|{}||reviews.default.svc.cluster.local".format
    with ControlPlane(source) as cp:
        api.apply(
            {
                "kind": "Service",
                "metadata": {"name": "bad", "namespace": "default"},
                "spec": {"ports": [{"port": 0}]},
            }
        )
        expected = "Service default/bad: spec.ports[0].port: must be an integer 1-65535"
        wait_until(lambda: expected in cp.problems, "the bad Service to be reported")
        assert source.problems == (expected,)
        with pytest.raises(ConfigError, match=re.escape(expected)):
            source.load()  # the strict load refuses what the lenient one reports
        assert [s.name for s in cp.objects.services] == ["reviews"]
        # A bad edit of a good object: its last good version keeps serving.
        broken = api.get("Service", "default", "reviews")
        broken["spec"]["ports"][0]["protocol"] = "QUIC"
        api.apply(broken)
        bad_edit = "Service default/reviews: spec.ports[0].protocol: must be one of TCP, UDP, SCTP"
        wait_until(lambda: bad_edit in cp.problems, "the bad edit to be reported")
        assert [p.port for s in cp.objects.services for p in s.ports] == [9080]
        assert cluster(9080) in cp.snapshot().resources(CLUSTER_TYPE)
        # Fixed: the problems clear and the new good version is served.
        api.delete("Service", "default", "bad")
        broken["spec"]["ports"][0]["protocol"] = "TCP"
        broken["spec"]["ports"][0]["port"] = 9082
        api.apply(broken)
        wait_until(lambda: cluster(9082) in cp.snapshot().resources(CLUSTER_TYPE), "the fix")
        wait_until(lambda: source.problems == (), "the problems to clear")
        assert cluster(9080) not in cp.snapshot().resources(CLUSTER_TYPE)


def test_namespaces_limit_what_is_listed_and_watched(api: FakeKubernetesAPI) -> None:
    for obj in service_objects("ratings", 9090, [("127.0.0.2", 29090)], namespace="shop"):
        api.apply(obj)
    with KubernetesSource(host=api.url, namespaces=["shop"], backoff=FAST) as source:
        assert [s.name for s in source.load().services] == ["ratings"]
        api.apply(service_objects("other", 80, [], namespace="default")[0])
        api.apply(service_objects("web", 80, [], namespace="shop")[0])
        wait_until(lambda: len(source.load().services) == 2, "web in shop")
        assert sorted(s.name for s in source.load().services) == ["ratings", "web"]
    paths = {path for _, path, _ in api.requests if "/services" in path}
    assert paths == {"/api/v1/namespaces/shop/services"}


def test_endpoints_are_read_when_asked_for(api: FakeKubernetesAPI) -> None:
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "legacy", "namespace": "default"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.9"}], "ports": [{"name": "http", "port": 80}]}
            ],
        }
    )
    with KubernetesSource(host=api.url, kinds=RESOURCE_KINDS, backoff=FAST) as source:
        slices = {s.name: s for s in source.load().endpoint_slices}
    assert slices["legacy"].service_name == "legacy"
    assert slices["legacy"].endpoints[0].addresses == ("10.0.0.9",)


def test_kinds_the_server_does_not_serve_are_empty() -> None:
    core = tuple(k for k in RESOURCE_KINDS if k.group in ("", "discovery.k8s.io"))
    with FakeKubernetesAPI(kinds=core) as api:
        api.apply(service_objects("reviews", 9080, [])[0])
        with KubernetesSource(host=api.url, backoff=FAST) as source:
            assert [s.name for s in source.load().services] == ["reviews"]
            assert source.load().virtual_services == ()


def test_unreachable_api_server_fails_fast() -> None:
    with FakeKubernetesAPI() as api:
        url = api.url
    with pytest.raises(KubernetesError, match=r"/api/v1/services: cannot reach the API server"):
        KubernetesSource(host=url, kinds=RESOURCE_KINDS[:1]).start()


def test_fake_speaks_list_and_watch_json(api: FakeKubernetesAPI) -> None:
    def get(path: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        conn.request("GET", path)
        return conn.getresponse()

    listing = json.loads(get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices").read())
    assert listing["kind"] == "EndpointSliceList"
    assert listing["metadata"]["resourceVersion"] == str(api.resource_version)
    [item] = listing["items"]
    assert "kind" not in item  # as a real API server: list items carry no kind
    version = int(listing["metadata"]["resourceVersion"])

    api.delete("EndpointSlice", "default", "reviews-0")
    query = f"watch=true&resourceVersion={version}&timeoutSeconds=1"
    response = get(f"/apis/discovery.k8s.io/v1/endpointslices?{query}")
    assert response.getheader("Transfer-Encoding") == "chunked"
    events = [json.loads(line) for line in response.read().splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "reviews-0")
    ]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) == version + 1

    api.compact()
    [gone] = [
        json.loads(line)
        for line in get(f"/api/v1/services?watch=1&resourceVersion={version}").read().splitlines()
    ]
    assert gone["type"] == "ERROR"
    assert gone["object"]["kind"] == "Status"
    assert gone["object"]["code"] == 410

    missing = get("/apis/networking.istio.io/v1/gateways")
    assert missing.status == 404
    assert json.loads(missing.read())["reason"] == "NotFound"


def test_a_bad_object_already_in_the_cluster_does_not_stop_start_up(
    api: FakeKubernetesAPI,
) -> None:
    api.apply(
        {
            "kind": "Service",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"ports": [{"port": 0}]},
        }
    )
    # A file config fails fast; a live cluster is served minus the bad object, reported.
    with KubernetesSource(host=api.url, backoff=FAST) as source, ControlPlane(source) as cp:
        assert any("Service default/bad" in p for p in cp.problems)
        assert [s.name for s in cp.objects.services] == ["reviews"]
        assert "outbound|9080||reviews.default.svc.cluster.local" in cp.snapshot().resources(
            CLUSTER_TYPE
        )
