"""The immutable Snapshot the data path reads: listeners, route tables, clusters, pickers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from xds_client.resources import ClusterResource

from ._call import Call
from ._endpoints import EndpointState
from ._errors import NoHealthyUpstream
from ._routing import RouteTable
from .balancing import Picker

__all__ = ["ClusterView", "ListenerView", "Snapshot"]


@dataclass(frozen=True, slots=True)
class ListenerView:
    """A resolved target: its route table, or why it is unusable."""

    name: str
    routes: RouteTable | None
    error: str = ""
    missing: bool = False  # the control plane says no such listener: not a mesh host


@dataclass(frozen=True, slots=True)
class ClusterView:
    """A cluster with its endpoints and the picker built over them."""

    name: str
    resource: ClusterResource | None
    endpoints: tuple[EndpointState, ...]
    picker: Picker | None
    error: str = ""

    # The concrete layer's interface, as the logical layer (routing, retries) calls it.
    def pick(self, call: Call, *, exclude: Collection[EndpointState] = ()) -> EndpointState:
        """An endpoint for one attempt, avoiding ``exclude`` (retry host predicates) when
        possible; raises NoHealthyUpstream."""
        endpoint = self.picker.pick(call) if self.picker is not None else None
        if endpoint is None:
            why = f" ({self.error})" if self.error else ""
            raise NoHealthyUpstream(
                f"{self.name}: no healthy upstream{why}",
                target=call.authority,
                cluster=self.name,
                reason="no_healthy_upstream",
            )
        return endpoint


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent view of the mesh config. Never mutated; replaced whole."""

    version: int = 0
    listeners: Mapping[str, ListenerView] = field(default_factory=dict)
    clusters: Mapping[str, ClusterView] = field(default_factory=dict)
