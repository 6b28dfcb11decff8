"""The list/watch machinery under :class:`KubernetesSource`: kinds, client, reflectors.

A :class:`Reflector` lists one kind with the ``kubernetes`` client (CoreV1 for Service,
Endpoints and Pod, DiscoveryV1 for EndpointSlice, CustomObjectsApi for Istio's kinds),
asking for the raw JSON, then watches from the list's ``resourceVersion``. Events go to a
:class:`Store`. A watch that ends is resumed from the last version seen (BOOKMARK events
included); ``410 Gone`` relists; other failures are retried with jittered backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "RESOURCE_KINDS",
    "Backoff",
    "KubernetesError",
    "Reflector",
    "ResourceKind",
    "Store",
    "make_api_client",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResourceKind:
    """Where a kind lives in the API: ``/api/v1/...`` for the core group, else ``/apis/...``."""

    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        """``apiVersion`` of the kind's objects (``v1``, ``networking.istio.io/v1``)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        """The URL path of the group version."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


#: The kinds the control plane reads, in the API groups and versions it watches.
RESOURCE_KINDS: tuple[ResourceKind, ...] = (
    ResourceKind("Service", "", "v1", "services"),
    ResourceKind("Endpoints", "", "v1", "endpoints"),
    ResourceKind("Pod", "", "v1", "pods"),
    ResourceKind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices"),
    ResourceKind("ServiceEntry", "networking.istio.io", "v1", "serviceentries"),
    ResourceKind("WorkloadEntry", "networking.istio.io", "v1", "workloadentries"),
    ResourceKind("VirtualService", "networking.istio.io", "v1", "virtualservices"),
    ResourceKind("DestinationRule", "networking.istio.io", "v1", "destinationrules"),
    ResourceKind("Sidecar", "networking.istio.io", "v1", "sidecars"),
    ResourceKind("PeerAuthentication", "security.istio.io", "v1", "peerauthentications"),
    ResourceKind("AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies"),
    ResourceKind("RequestAuthentication", "security.istio.io", "v1", "requestauthentications"),
)


class KubernetesError(ConnectionError):
    """The API server could not be reached or refused a request the source needs."""


class Store(Protocol):
    """Where a reflector puts what it reads."""

    def replace(
        self, kind: ResourceKind, namespace: str | None, items: list[dict[str, Any]]
    ) -> None:
        """A fresh list of ``kind`` in ``namespace`` (None: all) replaces what was held."""
        ...

    def apply(self, event_type: str, doc: dict[str, Any]) -> None:
        """One ``ADDED``, ``MODIFIED`` or ``DELETED`` event's object."""
        ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(maximum, initial * 2**n))``."""

    initial: float = 0.5
    maximum: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures (``failures >= 1``)."""
        return random.uniform(0, min(self.maximum, self.initial * 2 ** (failures - 1)))


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


def _kube() -> Any:
    """The ``kubernetes`` package (an optional dependency: the ``kubernetes`` extra)."""
    try:
        import kubernetes.client
        import kubernetes.config
        import kubernetes.watch
    except ImportError:  # pragma: no cover - the extra is installed in development
        raise KubernetesError(
            "the Kubernetes source needs the kubernetes package: pip install 'meshlib[kubernetes]'"
        ) from None
    return kubernetes


def make_api_client(
    given: Any, kubeconfig: str | None, host: str | None, context: str | None, pool: int
) -> Any:
    """``given`` (an ``ApiClient``), or one for ``host``, the cluster we run in, or a kubeconfig.

    ``pool`` is the connection pool size a new client gets: one connection per watch.
    """
    kube = _kube()
    if given is not None:
        return given
    configuration = kube.client.Configuration()
    if host is not None:
        configuration.host = host
    elif kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube.config.load_incluster_config(client_configuration=configuration)
    else:
        try:
            kube.config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (kube.config.ConfigException, OSError) as err:
            where = kubeconfig or "~/.kube/config"
            raise KubernetesError(f"kubeconfig {where}: {err}") from None
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, pool)
    return kube.client.ApiClient(configuration)


class Reflector:
    """List then watch one kind in one namespace (or all), feeding ``store`` until ``stopped``.

    ``synced`` is set after the first list, or after it failed (then ``error`` says why).
    """

    def __init__(
        self,
        api_client: Any,
        kind: ResourceKind,
        namespace: str | None,
        store: Store,
        stopped: threading.Event,
        backoff: Backoff,
        watch_timeout: int,
    ) -> None:
        self.api_client = api_client
        self.store = store
        self.stopped = stopped
        self.backoff = backoff
        self.watch_timeout = watch_timeout
        self.kind = kind
        self.namespace = namespace
        self.synced = threading.Event()
        self.error: str | None = None
        #: The resourceVersion a resumed watch would start from (None: relist first).
        self.version: str | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"kube-{self.describe()}", daemon=True
        )
        self._response: Any = None

    def describe(self) -> str:
        where = f"namespaces/{self.namespace}/" if self.namespace else ""
        return f"{self.kind.prefix}/{where}{self.kind.plural}"

    def cancel(self) -> None:
        """Unblock a watch in progress by shutting its socket."""
        response = self._response
        if response is not None:
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _call(self, **kwargs: Any) -> Any:
        client = _kube().client
        api = self.api_client
        k, ns = self.kind, self.namespace
        kwargs["_preload_content"] = False
        if k.group == "":
            core = client.CoreV1Api(api)
            if ns is None:
                fn = getattr(core, f"list_{_snake(k.kind)}_for_all_namespaces")
                return fn(**kwargs)
            return getattr(core, f"list_namespaced_{_snake(k.kind)}")(ns, **kwargs)
        if k.group == "discovery.k8s.io":
            discovery = client.DiscoveryV1Api(api)
            if ns is None:
                return discovery.list_endpoint_slice_for_all_namespaces(**kwargs)
            return discovery.list_namespaced_endpoint_slice(ns, **kwargs)
        custom = client.CustomObjectsApi(api)
        if ns is None:
            return custom.list_custom_object_for_all_namespaces(
                k.group, k.version, k.plural, **kwargs
            )
        return custom.list_namespaced_custom_object(k.group, k.version, ns, k.plural, **kwargs)

    def _list(self) -> str:
        response = self._call(_request_timeout=30)
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        items = []
        for item in body.get("items") or []:
            # List items omit kind and apiVersion; the parser needs them.
            items.append({"apiVersion": self.kind.api_version, "kind": self.kind.kind, **item})
        self.store.replace(self.kind, self.namespace, items)
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, resource_version: str) -> Iterator[str]:
        """Apply events until the stream ends; yields each resourceVersion reached."""
        iter_resp_lines = _kube().watch.watch.iter_resp_lines
        timeout = self.watch_timeout
        self._response = self._call(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=(10, timeout + 30),
        )
        try:
            # close() sets the stop flag before it looks for a response to cancel: either
            # it sees this response, or this check sees the flag.
            if self.stopped.is_set():
                return
            for line in iter_resp_lines(self._response):
                if not line.strip():
                    continue
                event = json.loads(line)
                event_type, obj = event.get("type"), event.get("object") or {}
                if event_type == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone(obj.get("message", "410 Gone"))
                    raise KubernetesError(f"watch error {obj.get('code')}: {obj.get('message')}")
                if event_type in ("ADDED", "MODIFIED", "DELETED"):
                    doc = {"apiVersion": self.kind.api_version, "kind": self.kind.kind, **obj}
                    self.store.apply(event_type, doc)
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    yield str(version)
        finally:
            response, self._response = self._response, None
            response.release_conn()

    def _run(self) -> None:
        api_exception = _kube().client.exceptions.ApiException
        stopped = self.stopped
        version: str | None = None
        failures = 0
        while not stopped.is_set():
            self.version = version
            try:
                if version is None:
                    version = self.version = self._list()
                    self.synced.set()
                    log.debug("kubernetes: listed %s at %s", self.describe(), version)
                started, progressed = time.monotonic(), False
                for reached in self._watch(version):
                    version, progressed, failures = reached, True, 0
                    self.version = version
                if progressed or time.monotonic() - started >= 1.0:
                    failures = 0  # a watch's normal end: resume from the last version
                    continue
                problem = "the watch ended at once"
            except _Gone as gone:
                version, problem = None, f"{gone}; relisting"
                if failures == 0:  # relist at once; again only after a backoff
                    failures = 1
                    log.info("kubernetes: %s: %s", self.describe(), problem)
                    continue
            except api_exception as err:
                if err.status == 410:
                    version = None
                problem = f"{err.status} {err.reason}"
                if not self.synced.is_set():
                    if err.status != 404:
                        self.error = problem
                        self.synced.set()
                        return
                    problem = "not served (no such kind); treating it as empty"
                    self.synced.set()
            except Exception as err:  # network failures come in many classes
                if stopped.is_set():
                    return
                if not self.synced.is_set():
                    self.error = f"cannot reach the API server: {err}"
                    self.synced.set()
                    return
                problem = str(err) or type(err).__name__
            failures += 1
            delay = self.backoff.delay(failures)
            log.warning("kubernetes: %s: %s; retrying in %.1fs", self.describe(), problem, delay)
            stopped.wait(delay)


def _snake(kind: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")
