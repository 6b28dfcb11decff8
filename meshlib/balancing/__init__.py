"""Load balancing: one module per policy, each a picker over an immutable endpoint set.

``Balancer`` adds priorities, locality weights and panic above the policy's picker;
``priority_loads`` is Envoy's priority-load rule (healthy, then degraded hosts; panic),
shared with aggregate clusters.
Policies (``LbConfig.policy``): ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV,
PICK_FIRST, and meshlib's opt-in PEAK_EWMA. ``slow_start`` ramps new endpoints' weights
(``RampTimer`` rebuilds balancers while they ramp); ``zone_aware`` keeps traffic in the
caller's locality against its own cluster's spread (``LocalCluster``).
"""

from ._hashing import murmur_hash2, xxhash64
from ._picker import Picker, PickerFactory
from .balancer import HASH_POLICIES, POLICIES, Balancer, LocalityGroup
from .least_request import LeastRequestPicker
from .maglev import MaglevPicker
from .peak_ewma import PeakEwmaPicker
from .pick_first import PickFirstPicker
from .priority import (
    LevelHealth,
    PriorityLoads,
    is_available,
    is_degraded,
    is_healthy,
    is_host,
    priority_loads,
)
from .random_pick import RandomPicker
from .ring_hash import RingHashPicker
from .round_robin import RoundRobinPicker
from .slow_start import RampTimer, ramp_weights, slow_start_factor
from .zone_aware import LocalCluster, ZonePicker, ZonePlan, zone_plan

__all__ = [
    "HASH_POLICIES",
    "POLICIES",
    "Balancer",
    "LeastRequestPicker",
    "LevelHealth",
    "LocalCluster",
    "LocalityGroup",
    "MaglevPicker",
    "PeakEwmaPicker",
    "PickFirstPicker",
    "Picker",
    "PickerFactory",
    "PriorityLoads",
    "RampTimer",
    "RandomPicker",
    "RingHashPicker",
    "RoundRobinPicker",
    "ZonePicker",
    "ZonePlan",
    "is_available",
    "is_degraded",
    "is_healthy",
    "is_host",
    "murmur_hash2",
    "priority_loads",
    "ramp_weights",
    "slow_start_factor",
    "xxhash64",
    "zone_plan",
]
