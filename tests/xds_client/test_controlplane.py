"""Against the project's own control plane over real gRPC streams (state of the world
and delta): the whole Listener -> RouteConfiguration -> Cluster -> ClusterLoadAssignment
chain is ACKed, an update reaches the watcher, and the client's CSDS service reports it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from meshlib.controlplane import ControlPlane
from tests.support import service_objects, write_config
from xds_client import CsdsServicer, XdsClient
from xds_client.resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG

from .conftest import Recorder

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_full_chain_from_the_control_plane(
    tmp_path: Path, make_client: Callable[..., XdsClient], protocol: str
) -> None:
    write_config(tmp_path / "cfg", service_objects("reviews", 9080, [("127.0.0.1", 7001)]))
    with ControlPlane(tmp_path / "cfg") as cp:
        bootstrap = cp.bootstrap(node_id="sidecar~127.0.0.1~c.default~default.svc.cluster.local")
        client = make_client(bootstrap, protocol=protocol)
        lw, rw, cw, ew = Recorder(), Recorder(), Recorder(), Recorder()
        client.watch(LISTENER, "reviews.default.svc.cluster.local:9080", lw)
        listener = lw.wait("changed")
        assert listener.route_config_name
        client.watch(ROUTE_CONFIG, listener.route_config_name, rw)
        (cluster_name,) = rw.wait("changed").cluster_names()
        client.watch(CLUSTER, cluster_name, cw)
        cluster = cw.wait("changed")
        client.watch(ENDPOINTS, cluster.eds_service_name, ew)
        eds = ew.wait("changed")
        assert [e.port for e in eds.endpoints()] == [7001]
        endpoints = [("127.0.0.1", 7001), ("127.0.0.1", 7002)]
        write_config(tmp_path / "cfg", service_objects("reviews", 9080, endpoints))
        cp.reload()
        grown = ew.wait("changed", lambda r: len(r.endpoints()) == 2)
        assert sorted(e.port for e in grown.endpoints()) == [7001, 7002]
        for rtype in (LISTENER, ROUTE_CONFIG, CLUSTER, ENDPOINTS):
            cp.wait_for_ack(bootstrap["node"]["id"], rtype.type_url, timeout=5)
        assert cp.nacks() == []

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            CsdsServicer(client), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
                reply = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
                streamed = next(
                    iter(stub.StreamClientStatus(iter([csds_pb2.ClientStatusRequest()])))
                )
        finally:
            server.stop(0)
        (config,) = reply.config
        assert config.node.id == bootstrap["node"]["id"]
        assert {(c.type_url, c.client_status) for c in config.generic_xds_configs} == {
            (t.type_url, 3) for t in (LISTENER, ROUTE_CONFIG, CLUSTER, ENDPOINTS)
        }
        assert all(c.xds_config.type_url == c.type_url for c in config.generic_xds_configs)
        assert streamed == reply
