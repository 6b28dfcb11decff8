"""Resilience: retries, timeouts, faults, circuit breaking, outlier detection.

The policies are compiled from xDS by the Snapshot; the one a user configures is
``EndpointBreakers`` (per-endpoint pybreaker breakers, given to ``Mesh``).
"""

from .endpoint_breaker import EndpointBreaker, EndpointBreakers

__all__ = ["EndpointBreaker", "EndpointBreakers"]
