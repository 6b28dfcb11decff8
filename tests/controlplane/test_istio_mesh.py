"""ServiceEntry, WorkloadEntry, Endpoints, Pod, Sidecar, PeerAuthentication and
AuthorizationPolicy translation, and the Envoy view."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ConfigError,
    NodeView,
)

from .istio_support import REVIEWS, cluster, cluster_of, endpoints, load, view

INBOUND = "xds.istio.io/grpc/lds/inbound/127.0.0.1:19001"


def test_service_entry_static_and_dns(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy}
spec:
  hosts: [legacy.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {http: 9090}}
""",
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: local-dns}
spec:
  hosts: [localhost]
  resolution: DNS
  ports: [{number: 7000, name: http}]
""",
    )
    static = cluster_of(host="legacy.internal", port=8080)
    assert endpoints(res, static) == [("10.0.0.1", 8080), ("10.0.0.2", 9090)]
    assert "legacy.internal:8080" in res.shared[LISTENER_TYPE]
    dns = cluster_of(host="localhost", port=7000)
    # Proxyless clients take IPs: the control plane resolves the name.
    assert ("127.0.0.1", 7000) in endpoints(res, dns)
    envoy_cluster = view(res, CLUSTER_TYPE, NodeView(kind="envoy"))[dns]
    assert envoy_cluster.type == cluster_pb2.Cluster.STRICT_DNS
    (loc,) = envoy_cluster.load_assignment.endpoints
    assert loc.lb_endpoints[0].endpoint.address.socket_address.address == "localhost"


def test_workload_entries_join_services_by_selector(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1}
spec:
  address: 10.1.1.1
  labels: {app: reviews, version: v9}
  serviceAccount: reviews-vm
  locality: region-a/zone-z
""",
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: vm, labels: {version: v9}}]
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
""",
    )
    assert endpoints(res, cluster_of("vm")) == [("10.1.1.1", 9080)]
    cla = res.shared[ENDPOINT_TYPE][cluster_of("vm")]
    assert (cla.endpoints[0].locality.region, cla.endpoints[0].locality.zone) == (
        "region-a",
        "zone-z",
    )
    ctx = tls_pb2.UpstreamTlsContext()
    assert cluster(res, cluster_of("vm")).transport_socket.typed_config.Unpack(ctx)
    sans = ctx.common_tls_context.combined_validation_context.default_validation_context
    assert [m.exact for m in sans.match_subject_alt_names] == [
        "spiffe://cluster.local/ns/default/sa/reviews-vm"
    ]


def test_endpoints_and_pod_labels(tmp_path: Path) -> None:
    base = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets:
- addresses: [{ip: 127.0.0.5}]
  notReadyAddresses: [{ip: 127.0.0.6}]
  ports: [{name: http, port: 8000}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {version: blue}}
spec: {serviceAccountName: web, containers: [{name: web, image: web}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-extra, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [127.0.0.7], targetRef: {kind: Pod, name: web-1}}]
ports: [{name: http, port: 8001}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec: {host: web, subsets: [{name: blue, labels: {version: blue}}]}
"""
    res = load(tmp_path, base=base)
    web = "web.default.svc.cluster.local"
    assert endpoints(res, cluster_of(host=web, port=80)) == [
        ("127.0.0.5", 8000),
        ("127.0.0.7", 8001),
    ]
    assert endpoints(res, cluster_of("blue", host=web, port=80)) == [("127.0.0.7", 8001)]


def _filters(listener: listener_pb2.Listener) -> list[hcm_pb2.HttpFilter]:
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return list(hcm.http_filters)


@pytest.mark.parametrize(
    ("mode", "chain", "client_tls"),
    [
        ("STRICT", "inbound-mtls", True),
        ("PERMISSIVE", "inbound-plaintext", False),
        ("DISABLE", "inbound-plaintext", False),
    ],
)
def test_peer_authentication_modes(tmp_path: Path, mode: str, chain: str, client_tls: bool) -> None:
    res = load(
        tmp_path,
        f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: {mode}}}}}
""",
    )
    listener = res.shared[LISTENER_TYPE][INBOUND]
    assert listener.filter_chains[0].name == chain
    assert listener.filter_chains[0].HasField("transport_socket") == client_tls
    # auto-mTLS: clients of a STRICT workload use ISTIO_MUTUAL without a DestinationRule
    assert cluster(res, cluster_of()).HasField("transport_socket") == client_tls


def test_workload_peer_authentication_wins_over_namespace(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns}
spec: {mtls: {mode: STRICT}}
""",
        """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: v1-open}
spec:
  selector: {matchLabels: {version: v1}}
  mtls: {mode: STRICT}
  portLevelMtls: {"19001": {mode: DISABLE}}
""",
    )
    assert res.shared[LISTENER_TYPE][INBOUND].filter_chains[0].name == "inbound-plaintext"
    v2 = "xds.istio.io/grpc/lds/inbound/127.0.0.1:19002"
    assert res.shared[LISTENER_TYPE][v2].filter_chains[0].name == "inbound-mtls"


def test_envoy_auto_mtls_uses_transport_socket_matches(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: meshed}
spec:
  address: 10.2.2.2
  labels: {app: reviews, security.istio.io/tlsMode: istio}
""",
    )
    c = view(res, CLUSTER_TYPE, NodeView(kind="envoy"))[cluster_of()]
    assert [m.name for m in c.transport_socket_matches] == ["tlsMode-istio", "tlsMode-disabled"]
    cla = view(res, ENDPOINT_TYPE, NodeView(kind="envoy"))[cluster_of()]
    meta = {
        e.endpoint.address.socket_address.address: dict(
            e.metadata.filter_metadata["envoy.transport_socket_match"]
        )
        for loc in cla.endpoints
        for e in loc.lb_endpoints
    }
    assert meta["10.2.2.2"] == {"tlsMode": "istio"}
    assert meta["127.0.0.1"] == {}


def test_authorization_policy_becomes_rbac_filters(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  selector: {matchLabels: {version: v1}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin*]}}]
""",
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/frontend], notNamespaces: [test]}
    to: [{operation: {methods: [GET], ports: ["19001"]}}]
    when: [{key: "request.headers[x-user]", values: [alice]}]
""",
    )
    filters = _filters(res.shared[LISTENER_TYPE][INBOUND])
    assert [f.name for f in filters] == [
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.router",
    ]
    deny, allow = rbac_filter_pb2.RBAC(), rbac_filter_pb2.RBAC()
    assert filters[0].typed_config.Unpack(deny) and filters[1].typed_config.Unpack(allow)
    assert deny.rules.action == rbac_pb2.RBAC.DENY
    (policy,) = deny.rules.policies.values()
    perm = policy.permissions[0].and_rules.rules[0]
    assert perm.url_path.path.prefix == "/admin"
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW
    (policy,) = allow.rules.policies.values()
    ids = policy.principals[0].and_ids.ids
    assert ids[0].authenticated.principal_name.exact == (
        "spiffe://cluster.local/ns/default/sa/frontend"
    )
    assert ids[1].not_id.authenticated.principal_name.safe_regex.regex == ".*/ns/test/.*"
    outer = policy.permissions[0].and_rules.rules
    port, method = outer[0].and_rules.rules
    assert method.header.name == ":method" and method.header.string_match.exact == "GET"
    assert port.destination_port == 19001
    assert outer[1].header.name == "x-user"
    # v2 is not selected by the DENY policy: only the namespace-wide ALLOW applies
    v2 = _filters(res.shared[LISTENER_TYPE]["xds.istio.io/grpc/lds/inbound/127.0.0.1:19002"])
    assert [f.name for f in v2] == ["envoy.filters.http.rbac.allow", "envoy.filters.http.router"]


def test_sidecar_scopes_egress_hosts(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: [./ratings.default.svc.cluster.local]}]
""",
    )
    scoped = view(res, LISTENER_TYPE, NodeView(namespace="default"))
    assert "ratings:9080" in scoped and "reviews:9080" not in scoped
    assert f"{REVIEWS}:9080" not in scoped
    clusters = view(res, CLUSTER_TYPE, NodeView(namespace="default"))
    assert cluster_of() not in clusters
    other = view(res, LISTENER_TYPE, NodeView(namespace="other"))
    assert f"{REVIEWS}:9080" in other


def test_envoy_view_listeners_routes_and_clusters(tmp_path: Path) -> None:
    node = NodeView(kind="envoy", listener_ports=((9080, 15001),))
    listeners = view(load(tmp_path), LISTENER_TYPE, node)
    (listener,) = listeners.values()
    assert listener.name == "127.0.0.1_15001"
    assert listener.address.socket_address.port_value == 15001
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.rds.route_config_name == "9080"
    assert hcm.stat_prefix == "outbound_9080"
    routes = view(load(tmp_path), ROUTE_TYPE, node)
    hosts = [vh.name for vh in routes["9080"].virtual_hosts]
    assert hosts == ["ratings.default.svc.cluster.local:9080", f"{REVIEWS}:9080"]
    assert not view(load(tmp_path), LISTENER_TYPE, NodeView(kind="envoy"))


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (
            "apiVersion: networking.istio.io/v1\n"
            "kind: ServiceEntry\nmetadata: {name: x}\nspec: {hosts: [a], ports: [], "
            "resolution: STATIC}",
            r"ServiceEntry default/x: spec\.ports: is required|spec\.endpoints: STATIC",
        ),
        (
            "apiVersion: security.istio.io/v1\n"
            "kind: PeerAuthentication\nmetadata: {name: x}\nspec: {mtls: {mode: STRICTER}}",
            r"PeerAuthentication default/x: spec\.mtls\.mode: 'STRICTER' is not one of",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\n"
            "spec: {rules: [{when: [{key: request.auth.claims, values: [a]}]}]}",
            r"AuthorizationPolicy default/x: spec\.rules\[0\]\.when\[0\]\.key: unsupported",
        ),
        (
            "apiVersion: networking.istio.io/v1\n"
            "kind: Sidecar\nmetadata: {name: x}\nspec: {egress: [{hosts: [ratings]}]}",
            r"Sidecar default/x: spec\.egress\[0\]\.hosts\[0\]: 'ratings' must be namespace/host",
        ),
        (
            "apiVersion: networking.istio.io/v1\n"
            "kind: WorkloadEntry\nmetadata: {name: x}\nspec: {address: 1.2.3.4, weight: 0}",
            r"WorkloadEntry default/x: spec\.weight: must be an integer",
        ),
    ],
)
def test_bad_objects_name_kind_object_and_field(tmp_path: Path, doc: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load(tmp_path, doc)
