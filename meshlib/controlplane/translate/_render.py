"""Per-view rendering of a translation: what each kind of node is actually served.

The proxyless tables are translated once per configuration; :class:`Renderer` derives
each node view from them (memoised per snapshot by the cache):

* meshlib clients: the tables plus the short ``name:port`` listeners of their namespace;
* grpcio clients: the same, with load-balancing policies grpcio rejects mapped to the
  nearest it accepts (LEAST_REQUEST and RANDOM to ROUND_ROBIN, MAGLEV to RING_HASH);
* Envoy nodes: socket listeners, port-keyed route configurations, Envoy clusters and
  SDS secrets (:mod:`._translate_envoy`);
* every view: Sidecar egress scoping and locality-aware endpoint priorities.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2

from ..objects._istio_mesh import Sidecar
from ..xds._cache import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from ..xds._views import GRPC, NodeView
from ._clusters import apply_locality
from ._envoy import SecretStore, envoy_tables
from ._registry import MeshService
from ._routes import route_clusters
from ._rules import RuleIndex
from ._tls import ROOT_NAMESPACE

__all__ = ["Renderer", "sidecar_for"]

_GRPC_LB = {
    cluster_pb2.Cluster.LEAST_REQUEST: cluster_pb2.Cluster.ROUND_ROBIN,
    cluster_pb2.Cluster.RANDOM: cluster_pb2.Cluster.ROUND_ROBIN,
    cluster_pb2.Cluster.MAGLEV: cluster_pb2.Cluster.RING_HASH,
}

Tables = dict[str, dict[str, Any]]


def _grpc_lb_config(cluster: cluster_pb2.Cluster) -> None:
    """Keep ``lb_config`` consistent with a policy swapped for gRPC: a least-request
    slow start moves to round_robin_lb_config; MAGLEV's table settings are dropped."""
    which = cluster.WhichOneof("lb_config")
    if which == "least_request_lb_config":
        old = cluster.least_request_lb_config
        if old.HasField("slow_start_config"):
            slow = cluster_pb2.Cluster.SlowStartConfig()
            slow.CopyFrom(old.slow_start_config)
            cluster.round_robin_lb_config.slow_start_config.CopyFrom(slow)
        else:
            cluster.ClearField("least_request_lb_config")
    elif which == "maglev_lb_config":
        cluster.ClearField("maglev_lb_config")


def sidecar_for(sidecars: tuple[Sidecar, ...], view: NodeView) -> Sidecar | None:
    """The Sidecar that applies to a node: selecting it, else its namespace's, else root."""
    labels = dict(view.labels)
    in_ns = sorted((s for s in sidecars if s.namespace == view.namespace), key=lambda s: s.name)
    for s in in_ns:
        sel = s.workload_selector
        if sel and all(labels.get(k) == v for k, v in sel.items()):
            return s
    for s in in_ns:
        if not s.workload_selector:
            return s
    root = sorted((s for s in sidecars if s.namespace == ROOT_NAMESPACE), key=lambda s: s.name)
    return next((s for s in root if not s.workload_selector), None)


def _visible(sidecar: Sidecar, namespace: str) -> Callable[[MeshService], bool]:
    rules = []
    for entry in sidecar.egress_hosts:
        ns, _, host = entry.partition("/")
        rules.append((namespace if ns == "." else ns, host))

    def visible(svc: MeshService) -> bool:
        for ns, host in rules:
            if ns == "~" or (ns != "*" and ns != svc.namespace):
                continue
            if host == "*" or fnmatch.fnmatchcase(svc.hostname, host):
                return True
        return False

    return visible


class Renderer:
    """Derives every node view from one translation."""

    def __init__(
        self,
        index: RuleIndex,
        tables: Mapping[str, Mapping[str, Any]],
        short: Mapping[str, Mapping[str, Any]],
        owners: Mapping[str, str],
        ca: Any = None,
    ) -> None:
        self.index = index
        self.tables = tables
        self.short = short
        self.owners = owners
        self.secrets = SecretStore(ca) if ca is not None else None

    def render(self, view: NodeView) -> Tables:
        """Every resource ``view`` is served, by type URL and name."""
        objects = self.index.registry.objects
        sidecar = sidecar_for(objects.sidecars, view)
        visible = _visible(sidecar, view.namespace) if sidecar is not None else None
        if not view.proxyless:
            return envoy_tables(self.index, view, self.secrets, visible)
        out: Tables = {t: dict(named) for t, named in self.tables.items()}
        out[LISTENER_TYPE].update(self.short.get(view.namespace, {}))
        if visible is not None:
            self._scope(out, visible)
        if view.kind == GRPC:
            for name, cluster in list(out[CLUSTER_TYPE].items()):
                if cluster.lb_policy in _GRPC_LB:
                    copy = cluster_pb2.Cluster()
                    copy.CopyFrom(cluster)
                    copy.lb_policy = _GRPC_LB[cluster.lb_policy]
                    _grpc_lb_config(copy)
                    out[CLUSTER_TYPE][name] = copy
        if any(view.locality):
            self._localize(out, view)
        return out

    def _scope(self, out: Tables, visible: Callable[[MeshService], bool]) -> None:
        services = self.index.registry.services
        keep_hosts = {h for h, svc in services.items() if visible(svc)}
        for type_url in (LISTENER_TYPE, ROUTE_TYPE):
            for name in list(out[type_url]):
                owner = self.owners.get(name)
                if owner is not None and owner not in keep_hosts:
                    del out[type_url][name]
        # Keep every cluster a kept route can reach, so no route names a missing cluster.
        needed: set[str] = set()
        for rc in out[ROUTE_TYPE].values():
            needed |= route_clusters(rc)
        for type_url in (CLUSTER_TYPE, ENDPOINT_TYPE):
            for name in list(out[type_url]):
                owner = self.owners.get(name)
                if owner is not None and owner not in keep_hosts and name not in needed:
                    del out[type_url][name]

    def _localize(self, out: Tables, view: NodeView) -> None:
        services = self.index.registry.services
        for name, cla in list(out[ENDPOINT_TYPE].items()):
            _, port, subset, host = name.split("|", 3)
            svc = services.get(host)
            if svc is None:
                continue
            policy = self.index.policy(svc, int(port), subset)
            out[ENDPOINT_TYPE][name] = apply_locality(cla, policy, view.locality)
