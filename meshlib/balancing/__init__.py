"""Load balancing: one module per policy, each a picker over an immutable endpoint set."""

from ._picker import Picker, PickerFactory
from .round_robin import RoundRobinPicker

POLICIES: dict[str, PickerFactory] = {"ROUND_ROBIN": RoundRobinPicker}

__all__ = ["POLICIES", "Picker", "PickerFactory", "RoundRobinPicker"]
