"""Fixtures for the control plane tests: config files, a running ControlPlane, an ADS client."""

from __future__ import annotations

import queue
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from meshlib.controlplane import ControlPlane

REVIEWS_YAML = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: default
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports:
  - name: http
    port: 9080
    targetPort: 9080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-a
  namespace: default
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true}
  zone: zone-a
ports:
- {name: http, port: 19081}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-b
  namespace: default
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true}
  zone: zone-a
ports:
- {name: http, port: 19082}
"""

RATINGS_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  ports: [{name: grpc, port: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-1
  labels: {kubernetes.io/service-name: ratings}
addressType: IPv4
endpoints:
- addresses: [127.0.0.2]
ports: [{name: grpc, port: 29090}]
"""


def write(path: Path, text: str) -> Path:
    """Write dedented ``text`` to ``path`` and return it."""
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A directory with the reviews (two slices) and ratings services."""
    d = tmp_path / "config"
    d.mkdir()
    write(d / "reviews.yaml", REVIEWS_YAML)
    write(d / "ratings.yml", RATINGS_YAML)
    return d


@pytest.fixture
def control_plane(config_dir: Path) -> Iterator[ControlPlane]:
    """A started ControlPlane over ``config_dir``."""
    with ControlPlane(config_dir) as cp:
        yield cp


class AdsClient:
    """A bare ADS stream over a real gRPC channel; responses are read with a timeout."""

    def __init__(self, address: str, node_id: str, namespace: str = "default") -> None:
        self.node = base_pb2.Node(id=node_id)
        self.node.metadata.CopyFrom(
            struct_pb2.Struct(
                fields={
                    "NAMESPACE": struct_pb2.Value(string_value=namespace),
                    "GENERATOR": struct_pb2.Value(string_value="grpc"),
                }
            )
        )
        self._first = True
        self._requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        self._responses: queue.Queue[object] = queue.Queue()
        self.channel = grpc.insecure_channel(address)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(iter(self._requests.get, None))
        self.ended = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self._responses.put(response)
        except grpc.RpcError as err:
            self._responses.put(err)
        finally:
            self.ended.set()

    def send(
        self,
        type_url: str,
        names: list[str] | tuple[str, ...] = (),
        *,
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        """Send one DiscoveryRequest (the first one carries the node)."""
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            response_nonce=nonce,
            version_info=version,
        )
        if self._first:
            req.node.CopyFrom(self.node)
            self._first = False
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self._requests.put(req)

    def ack(
        self, response: discovery_pb2.DiscoveryResponse, names: list[str] | tuple[str, ...] = ()
    ) -> None:
        """ACK ``response`` keeping subscription ``names``."""
        self.send(response.type_url, names, nonce=response.nonce, version=response.version_info)

    def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        """The next response; fails the test if none arrives in ``timeout``."""
        try:
            item = self._responses.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no DiscoveryResponse within {timeout}s")
        if isinstance(item, grpc.RpcError):
            raise item
        assert isinstance(item, discovery_pb2.DiscoveryResponse)
        return item

    def assert_silent(self, wait: float = 0.3) -> None:
        """Assert no response arrives within ``wait`` seconds."""
        try:
            item = self._responses.get(timeout=wait)
        except queue.Empty:
            return
        pytest.fail(f"unexpected response: {item}")

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def ads(control_plane: ControlPlane) -> Iterator[Callable[..., AdsClient]]:
    """Factory: ``ads(node_id, namespace="default")`` opens a stream to ``control_plane``."""
    clients: list[AdsClient] = []

    def make(node_id: str = "node-1", namespace: str = "default") -> AdsClient:
        client = AdsClient(control_plane.address, node_id, namespace)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
