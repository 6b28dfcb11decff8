"""Delta (incremental) ADS: subscriptions, changed-only pushes, removals, reconnects."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from meshlib.controlplane import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ControlPlane

from .conftest import RATINGS_YAML, write

pytestmark = pytest.mark.timeout(30)

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
RATINGS = "outbound|9090||ratings.default.svc.cluster.local"


class DeltaClient:
    """A bare delta ADS stream for a proxyless (GENERATOR=grpc) node."""

    def __init__(self, address: str, node_id: str = "delta-1") -> None:
        self.node = base_pb2.Node(id=node_id)
        self.node.metadata.CopyFrom(
            struct_pb2.Struct(fields={"GENERATOR": struct_pb2.Value(string_value="grpc")})
        )
        self._first = True
        self._requests: queue.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = queue.Queue()
        self._responses: queue.Queue[object] = queue.Queue()
        self.channel = grpc.insecure_channel(address)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.DeltaAggregatedResources(iter(self._requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self._responses.put(response)
        except grpc.RpcError as err:
            self._responses.put(err)

    def send(self, type_url: str, **fields: object) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **fields)  # type: ignore[arg-type]
        if self._first:
            req.node.CopyFrom(self.node)
            self._first = False
        self._requests.put(req)

    def recv(self, timeout: float = 5.0) -> discovery_pb2.DeltaDiscoveryResponse:
        item = self._responses.get(timeout=timeout)
        assert isinstance(item, discovery_pb2.DeltaDiscoveryResponse), item
        return item

    def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        self.send(response.type_url, response_nonce=response.nonce)

    def assert_silent(self, wait: float = 0.3) -> None:
        with pytest.raises(queue.Empty):
            self._responses.get(timeout=wait)

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def delta(control_plane: ControlPlane) -> Iterator[DeltaClient]:
    client = DeltaClient(control_plane.address)
    yield client
    client.close()


def test_subscribe_push_changes_and_removals(
    control_plane: ControlPlane, delta: DeltaClient, config_dir: Path
) -> None:
    delta.send(CLUSTER_TYPE)  # wildcard
    first = delta.recv()
    assert sorted(r.name for r in first.resources) == sorted([REVIEWS, RATINGS])
    assert all(r.version for r in first.resources)
    delta.ack(first)
    delta.send(ENDPOINT_TYPE, resource_names_subscribe=[REVIEWS, "outbound|1||nope"])
    eds = delta.recv()
    assert [r.name for r in eds.resources] == [REVIEWS]
    assert list(eds.removed_resources) == ["outbound|1||nope"]  # does not exist
    delta.ack(eds)
    control_plane.wait_for_ack("delta-1", ENDPOINT_TYPE)

    # An EndpointSlice change: only that assignment is pushed, clusters are unchanged.
    write(
        config_dir / "reviews.yaml",
        (config_dir / "reviews.yaml").read_text().replace("19082", "19083"),
    )
    control_plane.reload()
    push = delta.recv()
    assert (push.type_url, [r.name for r in push.resources]) == (ENDPOINT_TYPE, [REVIEWS])
    delta.ack(push)
    delta.assert_silent()

    # ratings deleted: a removal for CDS, nothing resent.
    (config_dir / "ratings.yml").unlink()
    control_plane.reload()
    push = delta.recv()
    assert push.type_url == CLUSTER_TYPE
    assert (list(push.resources), list(push.removed_resources)) == ([], [RATINGS])
    delta.ack(push)
    delta.assert_silent()
    write(config_dir / "ratings.yml", RATINGS_YAML)
    control_plane.reload()
    push = delta.recv()
    assert [r.name for r in push.resources] == [RATINGS]
    assert control_plane.nacks() == []


def test_reconnect_with_initial_versions_resends_nothing(control_plane: ControlPlane) -> None:
    client = DeltaClient(control_plane.address, "delta-2")
    try:
        client.send(LISTENER_TYPE, resource_names_subscribe=["reviews:9080"])
        got = client.recv()
        versions = {r.name: r.version for r in got.resources}
        assert list(versions) == ["reviews:9080"]
    finally:
        client.close()
    again = DeltaClient(control_plane.address, "delta-2")
    try:
        again.send(
            LISTENER_TYPE,
            resource_names_subscribe=["reviews:9080"],
            initial_resource_versions=versions,
        )
        response = again.recv()
        assert list(response.resources) == []
        again.send(LISTENER_TYPE, resource_names_unsubscribe=["reviews:9080"])
        again.assert_silent()
    finally:
        again.close()


def test_nack_is_recorded(control_plane: ControlPlane, delta: DeltaClient) -> None:
    delta.send(CLUSTER_TYPE)
    response = delta.recv()
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=CLUSTER_TYPE, response_nonce=response.nonce
    )
    request.error_detail.message = "bad cluster"
    delta._requests.put(request)
    event = control_plane.events.wait_for(lambda e: e.kind == "NACK", 5)
    assert (event.node_id, event.error_detail) == ("delta-1", "bad cluster")
