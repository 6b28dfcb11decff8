"""The cluster layer: per-cluster views and picks, and the state carried across pushes.

- ``EndpointState`` / ``EndpointRegistry`` (``_endpoints``): per-endpoint state keyed by
  (cluster, address) that outlives config pushes: what a picker returns and what an
  attempt reports its outcome to.
- ``ClusterViews`` (``_cluster_views``): builds the Snapshot's per-cluster views (the
  view's ``pick`` is the cluster's balancer behind its circuit breaker) and keeps each
  cluster's breaker, outlier detector, endpoint breakers and slow-start tracking.
- ``AggregateView`` (``_aggregate``): an aggregate cluster (Envoy's
  ``envoy.clusters.aggregate``) failing over across its child clusters.
- ``Outcome`` / ``OutcomeKind``: what one attempt reports to its endpoint
  (``EndpointState.finished``) and, through it, to outlier detection and breakers.

The Snapshot itself (``meshlib._snapshot``) holds these views; it is not part of this
package. Names are loaded on first use: the balancing and resilience packages import
``EndpointState`` from here while this package's views import them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._outcome import Outcome, OutcomeKind
    from ._aggregate import (
        MAX_DEPTH,
        AggregateBalancer,
        AggregateView,
        Child,
        ClusterTree,
        cluster_tree,
    )
    from ._cluster_views import ClusterViews
    from ._endpoints import EndpointRegistry, EndpointState, HostStats, OutcomeSink, ProbeGate

__all__ = [
    "MAX_DEPTH",
    "AggregateBalancer",
    "AggregateView",
    "Child",
    "ClusterTree",
    "ClusterViews",
    "EndpointRegistry",
    "EndpointState",
    "HostStats",
    "Outcome",
    "OutcomeKind",
    "OutcomeSink",
    "ProbeGate",
    "cluster_tree",
]

_HOMES = {
    "MAX_DEPTH": "meshlib.cluster._aggregate",
    "AggregateBalancer": "meshlib.cluster._aggregate",
    "AggregateView": "meshlib.cluster._aggregate",
    "Child": "meshlib.cluster._aggregate",
    "ClusterTree": "meshlib.cluster._aggregate",
    "cluster_tree": "meshlib.cluster._aggregate",
    "ClusterViews": "meshlib.cluster._cluster_views",
    "EndpointRegistry": "meshlib.cluster._endpoints",
    "EndpointState": "meshlib.cluster._endpoints",
    "HostStats": "meshlib.cluster._endpoints",
    "Outcome": "meshlib._outcome",
    "OutcomeKind": "meshlib._outcome",
    "OutcomeSink": "meshlib.cluster._endpoints",
    "ProbeGate": "meshlib.cluster._endpoints",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
