"""meshlib's metric instruments, twice: OpenTelemetry (API only) and the in-process registry.

Names follow Istio's standard metrics where they apply (reporter=source) and Envoy's
cluster statistics for the rest:

===================================== ========= ===========================================
name                                  kind      labels
===================================== ========= ===========================================
istio_requests_total                  counter   ISTIO_LABELS (one per call; reporter=source,
                                                and reporter=destination from the inbound side)
istio_request_duration_milliseconds   histogram ISTIO_LABELS (ms, one per call)
meshlib_route_requests_total          counter   route, cluster, response_code, response_flags
meshlib_upstream_rq_total             counter   cluster, endpoint, outcome, response_code
meshlib_upstream_rq_time              histogram cluster, endpoint (ms, one per attempt)
meshlib_upstream_rq_active            updown    cluster
meshlib_upstream_rq_retry_total       counter   cluster, reason
meshlib_upstream_rq_overflow_total    counter   cluster (calls refused by its circuit breaker)
meshlib_outlier_ejections_active      updown    cluster
meshlib_outlier_ejections_total       counter   cluster
meshlib_xds_updates_total             counter   type, accepted
meshlib_xds_connected                 gauge     (none)
===================================== ========= ===========================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from opentelemetry import metrics

from ._registry import StatsRegistry
from ._semconv import Destination, destination_of

__all__ = [
    "INBOUND_LABELS",
    "ISTIO_LABELS",
    "InboundInstruments",
    "OtelInstruments",
    "RegistryInstruments",
    "otel_meter",
    "process_instruments",
]

ISTIO_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_version",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
#: Istio's labels of the server side (reporter=destination), as the inbound middleware
#: records them (:func:`process_instruments`).
INBOUND_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
_CACHE_LIMIT = 4096
_Pairs = tuple[tuple[str, str], ...]


def otel_meter(
    provider: metrics.MeterProvider | None, version: Callable[[], str]
) -> tuple[metrics.Meter | None, bool]:
    """meshlib's meter from ``provider`` (None: the global one) and whether that answer is
    final. While the global provider is still the API's proxy, no meter (not final)."""
    provider = provider or metrics.get_meter_provider()
    # The API's proxy class is private; its name is stable across opentelemetry-api 1.x.
    if type(provider).__name__ == "_ProxyMeterProvider":
        return None, False
    if isinstance(provider, metrics.NoOpMeterProvider):
        return None, True
    return provider.get_meter("meshlib", version()), True


class RegistryInstruments:
    """The same metrics in the in-process :class:`StatsRegistry` (for the admin server);
    the per-request ones are folded in from the call and attempt records (``_tally``)."""

    def __init__(self, stats: StatsRegistry) -> None:
        self.requests = stats.counter(
            "istio_requests_total", "Requests, one per call (reporter=source)", ISTIO_LABELS
        )
        self.duration = stats.histogram(
            "istio_request_duration_milliseconds", "Call duration in milliseconds", ISTIO_LABELS
        )
        self.upstream_rq = stats.counter(
            "meshlib_upstream_rq_total",
            "Upstream requests (attempts) per endpoint",
            ("cluster", "endpoint", "outcome", "response_code"),
        )
        self.upstream_time = stats.histogram(
            "meshlib_upstream_rq_time",
            "Upstream request (attempt) time in milliseconds",
            ("cluster", "endpoint"),
        )
        self.active = stats.gauge(
            "meshlib_upstream_rq_active", "Active upstream requests", ("cluster",)
        )
        self.retries = stats.counter(
            "meshlib_upstream_rq_retry_total", "Retries", ("cluster", "reason")
        )
        self.routes = stats.counter(
            "meshlib_route_requests_total",
            "Calls per route and cluster, by response code and Envoy response flag",
            ("route", "cluster", "response_code", "response_flags"),
        )
        self.overflow = stats.counter(
            "meshlib_upstream_rq_overflow_total",
            "Calls refused by the cluster circuit breaker (max_requests, max_pending_requests)",
            ("cluster",),
        )
        self.ejections_active = stats.gauge(
            "meshlib_outlier_ejections_active", "Endpoints ejected now", ("cluster",)
        )
        self.ejections_total = stats.counter(
            "meshlib_outlier_ejections_total", "Outlier ejections", ("cluster",)
        )
        self.xds_updates = stats.counter(
            "meshlib_xds_updates_total", "xDS updates ACKed (true) or NACKed", ("type", "accepted")
        )
        self.xds_connected = stats.gauge(
            "meshlib_xds_connected", "1 while the ADS stream is connected", ()
        )
        self.stats, self._lock = stats, stats.lock
        self._destinations: dict[tuple[str, str], Destination] = {}
        self._keys: dict[tuple[object, ...], tuple[str, ...]] = {}

    def istio_key(
        self,
        workload: str,
        namespace: str,
        cluster: str,
        authority: str,
        protocol: str,
        code: int,
        grpc: str,
        flags: str,
    ) -> tuple[str, ...]:
        """The ISTIO_LABELS values of one call (reporter=source), cached."""
        lookup = (workload, namespace, cluster, authority, protocol, code, grpc, flags)
        key = self._keys.get(lookup)
        if key is None:
            dest = self.destination(cluster, authority)
            key = (
                "source",
                workload,
                namespace,
                dest.service,
                dest.name,
                dest.namespace,
                dest.version,
                protocol,
                str(code),
                grpc,
                flags,
                "unknown",
            )
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            self._keys[lookup] = key
        return key

    def destination(self, cluster: str, authority: str) -> Destination:
        key = (cluster, authority)
        dest = self._destinations.get(key)
        if dest is None:
            if len(self._destinations) >= _CACHE_LIMIT:
                self._destinations.clear()
            dest = self._destinations[key] = destination_of(cluster, authority)
        return dest


class InboundInstruments:
    """Istio's server-side metrics (reporter=destination) in their own registry: one per
    process (:func:`process_instruments`), which every AdminServer renders along with its
    mesh's, so ``/stats/prometheus`` has both sides."""

    def __init__(self, stats: StatsRegistry) -> None:
        self.stats = stats
        self.requests = stats.counter(
            "istio_requests_total", "Requests (reporter=destination: served)", INBOUND_LABELS
        )
        self.duration = stats.histogram(
            "istio_request_duration_milliseconds", "Request duration in ms", INBOUND_LABELS
        )

    def record(self, labels: dict[str, str], elapsed_ms: float) -> None:
        """One request served; ``labels`` has INBOUND_LABELS' keys (missing: empty)."""
        key = tuple(labels.get(k, "") for k in INBOUND_LABELS)
        with self.stats.lock:
            self.requests.add_locked(key)
            self.duration.observe_locked(key, elapsed_ms)


_process: InboundInstruments | None = None
_process_lock = threading.Lock()


def process_instruments() -> InboundInstruments:
    """The process's server-side instruments (created on first use)."""
    global _process
    with _process_lock:
        if _process is None:
            _process = InboundInstruments(StatsRegistry())
        return _process


class OtelInstruments:
    """The OpenTelemetry instruments and a cache of attribute dictionaries."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.requests = meter.create_counter(
            "istio_requests_total", unit="1", description="Requests, one per call"
        )
        self.duration = meter.create_histogram(
            "istio_request_duration_milliseconds", unit="ms", description="Call duration"
        )
        self.upstream_rq = meter.create_counter(
            "meshlib_upstream_rq_total", unit="1", description="Upstream requests (attempts)"
        )
        self.upstream_time = meter.create_histogram(
            "meshlib_upstream_rq_time", unit="ms", description="Upstream request time"
        )
        self.active = meter.create_up_down_counter(
            "meshlib_upstream_rq_active", unit="1", description="Active upstream requests"
        )
        self.retries = meter.create_counter(
            "meshlib_upstream_rq_retry_total", unit="1", description="Retries"
        )
        self.overflow = meter.create_counter(
            "meshlib_upstream_rq_overflow_total",
            unit="1",
            description="Calls refused by the cluster circuit breaker",
        )
        self.ejections_active = meter.create_up_down_counter(
            "meshlib_outlier_ejections_active", unit="1", description="Endpoints ejected now"
        )
        self.ejections_total = meter.create_counter(
            "meshlib_outlier_ejections_total", unit="1", description="Outlier ejections"
        )
        self.xds_updates = meter.create_counter(
            "meshlib_xds_updates_total", unit="1", description="xDS updates ACKed or NACKed"
        )
        self.xds_connected = meter.create_up_down_counter(
            "meshlib_xds_connected", unit="1", description="1 while the ADS stream is connected"
        )
        self._attrs: dict[_Pairs, dict[str, str]] = {}
        self._istio: dict[tuple[str, ...], dict[str, str]] = {}

    def attrs(self, *pairs: tuple[str, str]) -> dict[str, str]:
        """The (cached, shared: do not modify) attribute dict for these pairs."""
        found = self._attrs.get(pairs)
        if found is None:
            if len(self._attrs) >= _CACHE_LIMIT:
                self._attrs.clear()
            found = self._attrs[pairs] = dict(pairs)
        return found

    def istio_attrs(self, key: tuple[str, ...]) -> dict[str, str]:
        """Istio's labels for a key in :data:`ISTIO_LABELS` order."""
        found = self._istio.get(key)
        if found is None:
            if len(self._istio) >= _CACHE_LIMIT:
                self._istio.clear()
            found = self._istio[key] = dict(zip(ISTIO_LABELS, key, strict=True))
        return found
