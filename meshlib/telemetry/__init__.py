"""Telemetry: OpenTelemetry traces and metrics (API only) and an in-process stats registry.

    from meshlib.telemetry import Telemetry

    telemetry = Telemetry()                     # the global tracer and meter providers
    rec = telemetry.start_call(call, protocol="http")
    ...

See docs/observability.md for the adapter call points, span attributes and metric names.
"""

from ._metrics import ISTIO_LABELS
from ._records import AttemptRecord, CallRecord
from ._registry import DURATION_BUCKETS_MS, Counter, Gauge, Histogram, Sample, StatsRegistry
from ._semconv import GRPC_CODES, Destination, destination_of, response_flags, retry_reason
from ._telemetry import XDS_STATES, Telemetry

__all__ = [
    "DURATION_BUCKETS_MS",
    "GRPC_CODES",
    "ISTIO_LABELS",
    "XDS_STATES",
    "AttemptRecord",
    "CallRecord",
    "Counter",
    "Destination",
    "Gauge",
    "Histogram",
    "Sample",
    "StatsRegistry",
    "Telemetry",
    "destination_of",
    "response_flags",
    "retry_reason",
]
