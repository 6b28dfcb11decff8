"""The telemetry seam: one span per call, one child span per attempt, metrics, hooks.

Adapters drive it at a handful of points (see docs/observability.md)::

    rec = telemetry.start_call(call, protocol="http")
    rec.route(plan.route_name, plan.cluster)
    a = rec.attempt(attempt.endpoint, plan.cluster, attempt_number=attempt.number,
                    retry_reason=reason)
    a.inject(headers)                       # W3C / B3 context of the attempt span
    a.end(outcome)
    rec.end(status=200)                     # or grpc_status=..., or error=exc

Only ``opentelemetry-api`` is used. With the API's no-op providers (no SDK configured)
no span is started and no OpenTelemetry instrument is called, and that is decided by one
comparison per call (``quiet_until``, against the call's start time): the cost is
queueing the facts that keep the admin server's ``/stats`` working (``_tally``).
"""

from __future__ import annotations

import functools
import math
import time

from opentelemetry import metrics, trace

from .._call import Call
from ._metrics import InboundInstruments, OtelInstruments, RegistryInstruments, otel_meter
from ._records import CallRecord
from ._registry import StatsRegistry
from ._tally import Tally

__all__ = ["XDS_STATES", "Telemetry"]

#: Seconds between looks for a global SDK provider while the API's proxies are in place.
RECHECK = 1.0
XDS_STATES = ("connecting", "connected", "disconnected")


@functools.cache
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("meshlib-proxyless")
    except Exception:
        return "0"


class Telemetry:
    """Owns meshlib's tracer and meter (defaults: the global providers, followed even when
    they are set later) and the in-process :class:`StatsRegistry` (``stats``).

    ``workload`` and ``namespace`` fill Istio's ``source_workload`` labels.
    ``quiet_until`` (``time.perf_counter()`` seconds): until then, calls neither trace
    nor record OpenTelemetry metrics (no SDK).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        workload: str = "unknown",
        namespace: str = "unknown",
        stats: StatsRegistry | None = None,
    ) -> None:
        self.stats = stats if stats is not None else StatsRegistry()
        self.workload = workload
        self.namespace = namespace
        self.registry = RegistryInstruments(self.stats)
        #: Server-side metrics (reporter=destination) of ``Inbound(telemetry=self)``.
        self.inbound = InboundInstruments(StatsRegistry())
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer: trace.Tracer | None = None
        self._tracer_ready = False
        self._otel: OtelInstruments | None = None
        self._otel_ready = False
        self._tracer_recheck = self._otel_recheck = 0.0
        self.quiet_until = 0.0  # look on the first call
        self.tally = Tally(self)  # the per-request facts not yet in ``stats``
        self._ejected: set[tuple[str, str]] = set()
        self.xds_state = "unknown"  # until the xDS client reports (xds_connection)
        self.xds_state_since = time.time()

    # -- provider resolution ------------------------------------------------------------
    # While the global providers are the API's proxies (no SDK configured yet), look for a
    # real one at most once per RECHECK seconds: the API's lookup reads os.environ.
    def live(self, now: float) -> bool:
        """Whether calls trace or record OpenTelemetry metrics; when neither, calls
        starting before ``quiet_until`` (set here from ``now``, a perf_counter time)
        skip the question."""
        if self.tracer() is not None or self.otel() is not None:
            self.quiet_until = -math.inf
            return True
        final = self._tracer_ready and self._otel_ready
        self.quiet_until = math.inf if final else now + RECHECK
        return False

    def tracer(self) -> trace.Tracer | None:
        """meshlib's tracer, or None while tracing is a no-op."""
        if self._tracer_ready:
            return self._tracer
        now = time.perf_counter()
        if now < self._tracer_recheck:
            return None
        provider = self._tracer_provider or trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            self._tracer_recheck = now + RECHECK
            return None
        if not isinstance(provider, trace.NoOpTracerProvider):
            self._tracer = provider.get_tracer("meshlib", _version())
        self._tracer_ready = True
        return self._tracer

    def otel(self) -> OtelInstruments | None:
        """The OpenTelemetry instruments, or None while metrics are a no-op."""
        if self._otel_ready:
            return self._otel
        now = time.perf_counter()
        if now < self._otel_recheck:
            return None
        meter, final = otel_meter(self._meter_provider, _version)
        if meter is not None:
            self._otel = OtelInstruments(meter)
        self._otel_ready = final
        self._otel_recheck = now + RECHECK
        return self._otel

    # -- the data path ------------------------------------------------------------------
    def start_call(self, call: Call, protocol: str = "http") -> CallRecord:
        """Begin one logical call (``protocol``: ``"http"`` or ``"grpc"``)."""
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        return CallRecord(self, call, protocol)

    # -- event hooks --------------------------------------------------------------------
    def breaker_overflow(self, cluster: str) -> None:
        """A request failed fast on the cluster's circuit breaker (max_requests)."""
        key = (cluster,)
        self.registry.overflow.add(key)
        otel = self.otel()
        if otel is not None:
            otel.overflow.add(1, otel.attrs(("cluster", cluster)))

    def outlier_ejection(self, cluster: str, address: str, ejected: bool) -> None:
        """Outlier detection ejected (True) or returned (False) an endpoint."""
        host = (cluster, address)
        if ejected == (host in self._ejected):
            return  # no change
        delta = 1 if ejected else -1
        if ejected:
            self._ejected.add(host)
            self.registry.ejections_total.add((cluster,))
        else:
            self._ejected.discard(host)
        self.registry.ejections_active.add((cluster,), delta)
        otel = self.otel()
        if otel is not None:
            attrs = otel.attrs(("cluster", cluster))
            otel.ejections_active.add(delta, attrs)
            if ejected:
                otel.ejections_total.add(1, attrs)

    def xds_update(self, type_url: str, accepted: bool) -> None:
        """The xDS client ACKed (``accepted``) or NACKed an update of ``type_url``."""
        rtype = type_url.rpartition(".")[2] or type_url
        flag = "true" if accepted else "false"
        self.registry.xds_updates.add((rtype, flag))
        otel = self.otel()
        if otel is not None:
            otel.xds_updates.add(1, otel.attrs(("type", rtype), ("accepted", flag)))

    def xds_connection(self, state: str) -> None:
        """The ADS stream's state: ``connecting``, ``connected`` or ``disconnected``."""
        if state not in XDS_STATES:
            raise ValueError(f"xds_connection state must be one of {XDS_STATES}, got {state!r}")
        was = self.xds_state == "connected"
        now = state == "connected"
        self.xds_state, self.xds_state_since = state, time.time()
        self.registry.xds_connected.set((), 1.0 if now else 0.0)
        otel = self.otel()
        if otel is not None and was != now:
            otel.xds_connected.add(1 if now else -1)
