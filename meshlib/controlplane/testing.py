"""Test helpers for the control plane: a fake Kubernetes API server on loopback.

:class:`FakeKubernetesAPI` is a real HTTP server (``http.server`` on 127.0.0.1) that
speaks the parts of the Kubernetes API a list/watch client uses: list responses with
``metadata.resourceVersion``, ``?watch=true&resourceVersion=N`` streams of
newline-delimited JSON events (``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK``,
``ERROR``), ``410 Gone`` for a resourceVersion older than the retained history, and
``Status`` objects for errors. Tests change objects with :meth:`~FakeKubernetesAPI.apply`
and :meth:`~FakeKubernetesAPI.delete` and break connections with
:meth:`~FakeKubernetesAPI.drop_watches`, :meth:`~FakeKubernetesAPI.expire_watches` and
:meth:`~FakeKubernetesAPI.partition`::

    with FakeKubernetesAPI() as api:
        api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {...}, "spec": {...}})
        source = KubernetesSource(host=api.url)
"""

from __future__ import annotations

import copy
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .sources._live import RESOURCE_KINDS, ResourceKind

__all__ = ["RESOURCE_KINDS", "FakeKubernetesAPI", "ResourceKind"]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass(frozen=True)
class _Event:
    rv: int
    kind: str
    namespace: str
    type: str
    object: Mapping[str, Any]


class FakeKubernetesAPI:
    """A list/watch Kubernetes API server on 127.0.0.1 (an ephemeral port by default).

    ``kinds`` are the resource kinds it serves (others answer 404, as an API server
    without the CRD does). Every change gets the next cluster-wide resourceVersion; watch
    requests replay the retained history after the version they name.
    """

    def __init__(self, *, port: int = 0, kinds: tuple[ResourceKind, ...] = RESOURCE_KINDS) -> None:
        self.kinds = {k.kind: k for k in kinds}
        self._by_path = {(k.prefix, k.plural): k for k in kinds}
        self._cond = threading.Condition()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._events: list[_Event] = []
        self._rv = 1
        self._oldest_rv = 1  # watches from a version older than this get 410 Gone
        self._epoch = 0  # bumped to end open watch streams
        self._expire_epoch = 0  # bumped to end them with a 410 ERROR event
        self._bookmark_epoch = 0  # bumped to send a BOOKMARK on each
        self._refusing = False
        self._closed = False
        self._sockets: set[socket.socket] = set()
        #: Every request served, as ``(verb, path, query)``; verb is ``list`` or ``watch``.
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-kube-api", daemon=True
        )

    # lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``host`` for a ``kubernetes`` client."""
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        """Write a kubeconfig whose current context is this server; returns its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))
        return target

    def start(self) -> FakeKubernetesAPI:
        """Serve on a background thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every stream and stop serving."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self.drop_watches()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeKubernetesAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # objects -----------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        with self._cond:
            return self._rv

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace an object (its ``kind``, ``metadata.namespace`` and ``name``).

        Returns the stored copy, with the ``resourceVersion`` and ``uid`` the server set.
        The object's content is not validated: bad objects are for clients to reject.
        """
        kind = self._kind(obj.get("kind"))
        stored = copy.deepcopy(dict(obj))
        stored["apiVersion"] = kind.api_version
        meta = stored.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (kind.kind, str(meta["namespace"]), str(meta.get("name", "")))
        with self._cond:
            old = self._objects.get(key)
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            meta["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self._objects[key] = stored
            self._record("MODIFIED" if old else "ADDED", key, stored)
        return copy.deepcopy(stored)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete an object; raises ``KeyError`` if there is none."""
        with self._cond:
            stored = self._objects.pop((kind, namespace, name))
            self._rv += 1
            gone = copy.deepcopy(stored)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record("DELETED", (kind, namespace, name), gone)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """A copy of a stored object; raises ``KeyError`` if there is none."""
        with self._cond:
            return copy.deepcopy(self._objects[(kind, namespace, name)])

    def _kind(self, kind: Any) -> ResourceKind:
        if kind not in self.kinds:
            raise ValueError(f"kind: {kind!r} is not served (serving {sorted(self.kinds)})")
        return self.kinds[kind]

    def _record(self, type_: str, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        self._events.append(_Event(self._rv, key[0], key[1], type_, copy.deepcopy(obj)))
        self._cond.notify_all()

    # faults ------------------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the event history: watching from any older resourceVersion is 410 Gone."""
        with self._cond:
            self._oldest_rv = self._rv

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (no final chunk), as a network fault."""
        with self._cond:
            self._epoch += 1
            sockets = list(self._sockets)
            self._cond.notify_all()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def expire_watches(self) -> None:
        """Compact, and end every open watch with an ``ERROR`` event carrying 410 Gone."""
        with self._cond:
            self._expire_epoch += 1
            self._cond.notify_all()
        self.compact()

    def bookmark(self) -> None:
        """Send a ``BOOKMARK`` event at the current resourceVersion to every open watch."""
        with self._cond:
            self._bookmark_epoch += 1
            self._cond.notify_all()

    @contextmanager
    def partition(self) -> Iterator[None]:
        """While inside, drop open watches and answer every request 503 Service Unavailable."""
        with self._cond:
            self._refusing = True
        self.drop_watches()
        try:
            yield
        finally:
            with self._cond:
                self._refusing = False

    def count(self, verb: str, kind: str | None = None) -> int:
        """How many ``list`` or ``watch`` requests were served (for ``kind``'s path)."""
        plural = self.kinds[kind].plural if kind else ""
        with self._cond:
            return sum(1 for v, p, _ in self.requests if v == verb and p.endswith("/" + plural))

    # serving -----------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[ResourceKind, str | None] | None:
        parts = path.strip("/").split("/")
        # /api/v1/[namespaces/NS/]PLURAL  or  /apis/GROUP/VERSION/[namespaces/NS/]PLURAL
        head = 2 if parts[0] == "api" else 3
        prefix = "/" + "/".join(parts[:head])
        rest = parts[head:]
        namespace = None
        if len(rest) == 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if len(rest) != 1:
            return None
        kind = self._by_path.get((prefix, rest[0]))
        return (kind, namespace) if kind else None

    def _list(self, kind: ResourceKind, namespace: str | None) -> dict[str, Any]:
        with self._cond:
            items = [
                {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
                for (k, ns, _), obj in sorted(self._objects.items())
                if k == kind.kind and namespace in (None, ns)
            ]
            rv = self._rv
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": copy.deepcopy(items),
        }

    def _watch(
        self,
        handler: BaseHTTPRequestHandler,
        kind: ResourceKind,
        namespace: str | None,
        query: dict[str, str],
    ) -> None:
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        since = query.get("resourceVersion", "")
        with self._cond:
            epoch, expire_epoch, marks = self._epoch, self._expire_epoch, self._bookmark_epoch
            oldest = self._oldest_rv
            pending: list[_Event] = []
            if since in ("", "0"):  # synthetic ADDED for the current state, then changes
                cursor = self._rv
                pending = [
                    _Event(self._rv, k, ns, "ADDED", obj)
                    for (k, ns, _), obj in sorted(self._objects.items())
                ]
            else:
                cursor = int(since) if since.isdigit() else -1
                if cursor < oldest:
                    pending = [_Event(self._rv, "", "", "GONE", {})]
        sock = handler.connection
        with self._cond:
            self._sockets.add(sock)
        try:
            handler.send_response(HTTPStatus.OK)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            while True:
                for event in pending:
                    if event.type == "GONE":
                        message = f"too old resource version: {since} ({oldest})"
                        _chunk(handler, _line("ERROR", _status(410, "Expired", message)))
                        _chunk(handler, b"")
                        return
                    if event.type == "BOOKMARK":
                        if bookmarks:
                            meta = {"resourceVersion": str(event.rv)}
                            obj = {"kind": kind.kind, "apiVersion": kind.api_version}
                            _chunk(handler, _line("BOOKMARK", {**obj, "metadata": meta}))
                    elif event.kind == kind.kind and namespace in (None, event.namespace):
                        _chunk(handler, _line(event.type, dict(event.object)))
                with self._cond:
                    while True:
                        if self._closed or self._epoch != epoch:
                            return
                        if self._expire_epoch != expire_epoch:
                            pending = [_Event(self._rv, "", "", "GONE", {})]
                            break
                        pending = [e for e in self._events if e.rv > cursor]
                        if self._bookmark_epoch != marks:
                            marks = self._bookmark_epoch
                            pending.append(_Event(self._rv, "", "", "BOOKMARK", {}))
                        if pending:
                            cursor = max(cursor, pending[-1].rv)
                            break
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            _chunk(handler, b"")  # a clean end of stream
                            return
                        self._cond.wait(remaining)
        except OSError:
            return
        finally:
            with self._cond:
                self._sockets.discard(sock)
            handler.close_connection = True


def _line(type_: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}).encode() + b"\n"


def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()


def _handler(api: FakeKubernetesAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send_json(self, code: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            watch = query.get("watch") in ("true", "1")
            with api._cond:
                api.requests.append(("watch" if watch else "list", url.path, query))
                refusing = api._refusing
            if refusing:
                status = _status(503, "ServiceUnavailable", "the server is unavailable")
                self._send_json(503, status)
                return
            route = api._route(url.path)
            if route is None:
                self._send_json(
                    404,
                    _status(404, "NotFound", "the server could not find the requested resource"),
                )
                return
            kind, namespace = route
            if watch:
                api._watch(self, kind, namespace, query)
            else:
                self._send_json(200, api._list(kind, namespace))

    return Handler
