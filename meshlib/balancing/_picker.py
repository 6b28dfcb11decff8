"""The load-balancer seam: a picker chooses one endpoint from an immutable set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._call import Call
from .._endpoints import EndpointState

__all__ = ["Picker", "PickerFactory"]


class Picker(Protocol):
    """Built once per endpoint set (per Snapshot); ``pick`` runs per request."""

    def pick(self, call: Call) -> EndpointState | None:
        """An endpoint for ``call``, or None when none is usable."""
        ...


class PickerFactory(Protocol):
    def __call__(self, endpoints: Sequence[EndpointState]) -> Picker: ...
