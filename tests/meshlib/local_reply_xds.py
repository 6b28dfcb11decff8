"""The xDS of the local-reply tests: one route per outcome the mesh answers itself.

``/uh`` an empty cluster, ``/uo`` a breaker with no room, ``/ut`` a 0.3 s route timeout
on a held backend, ``/uf`` a closed port, ``/urx`` the same with two retries, ``/uc`` a
backend that resets every connection once the request arrived, ``/fi`` a fault abort
(503), ``/do`` drop_overloads of every request, ``/ok`` a plain route; the routes of
:data:`ANSWERS` answer with a direct response or a redirect; anything else has no route.
meshlib reads the API listener ``svc.test:80``; a real Envoy the socket listener
``envoy-in`` (whose access log writes ``%RESPONSE_FLAGS%``).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.http.local_ratelimit.v3 import (  # noqa: F401  (registers type)
    local_rate_limit_pb2,
)
from google.protobuf import json_format

from meshlib.controlplane import ControlPlane
from tests.httpx.servers import ResettingServer
from tests.meshlib.cluster_xds import Backend, cla, cluster, control_plane
from tests.support import UvicornThread

MESH_HOST = "svc.test:80"
HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
#: The token bucket of ``/rl``: RL_TOKENS calls pass, then 429 (no refill within a test).
RL_TOKENS = 3
_RL_ROUTE = {
    "envoy.filters.http.local_ratelimit": {
        "@type": RATELIMIT,
        "stat_prefix": "http_local_rate_limiter",
        "token_bucket": {"max_tokens": RL_TOKENS, "tokens_per_fill": 1, "fill_interval": "3600s"},
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "response_headers_to_add": [
            {
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "header": {"key": "x-local-rate-limit", "value": "true"},
            }
        ],
    }
}
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
BEFORE = "upstream connect error or disconnect/reset before headers. "
#: What Envoy 1.40 answers on this xDS (checked by tests/peers/test_envoy_local_replies.py):
#: status, body, the x-envoy-* headers, the response flag.
ENVOY: dict[str, tuple[int, bytes, dict[str, str], str]] = {
    "/nothing": (404, b"", {}, "NR"),
    "/uh": (503, b"no healthy upstream", {}, "UH"),
    "/uo": (503, BEFORE.encode() + b"reset reason: overflow", {"x-envoy-overloaded": "true"}, "UO"),
    "/ut": (504, b"upstream request timeout", {}, "UT"),
    "/uf": (503, BEFORE.encode() + b"reset reason: remote connection failure", {}, "UF"),
    "/urx": (
        503,
        BEFORE.encode() + b"retried and the latest reset reason: remote connection failure",
        {},
        "URX,UF",
    ),
    "/uc": (503, BEFORE.encode() + b"reset reason: connection termination", {}, "UC"),
    "/fi": (503, b"fault filter abort", {}, "FI"),
    "/do": (
        503,
        b"unconditional drop overload",
        {"x-envoy-unconditional-drop-overload": "true"},
        "UDO",
    ),
}

#: The Host every request of the direct-response/redirect tests carries (to Envoy too).
ANSWER_HOST = "svc.test:80"
_ANSWERED = {"response_headers_to_add": [{"header": {"key": "x-lr", "value": "local"}}]}


def _redirect(path: str, **redirect: Any) -> dict[str, Any]:
    return {"match": {"path_separated_prefix": path}, "redirect": redirect, **_ANSWERED}


def _direct(path: str, status: int, **body: Any) -> dict[str, Any]:
    action: dict[str, Any] = {"status": status}
    if body:
        action["body"] = body
    return {"match": {"path_separated_prefix": path}, "direct_response": action, **_ANSWERED}


#: Routes answered by the route itself: the request path, its route, and what Envoy 1.40
#: answers (status, body, location; every answer also carries ``x-lr: local``), checked
#: by tests/peers/test_envoy_local_replies.py.
ANSWERS: dict[str, tuple[dict[str, Any], tuple[int, bytes, str | None]]] = {
    "/dr/teapot": (_direct("/dr", 418, inline_string="teapot"), (418, b"teapot", None)),
    "/dr-bytes": (_direct("/dr-bytes", 200, inline_bytes="aGVsbG8="), (200, b"hello", None)),
    "/dr-empty": (_direct("/dr-empty", 204), (204, b"", None)),
    "/dr-moved/a?q=1": (
        _direct("/dr-moved", 302, inline_string="moved"),
        (302, b"moved", "http://svc.test:80/dr-moved/a?q=1"),
    ),
    "/re-host/a?q=1": (
        _redirect("/re-host", host_redirect="other.test:7000"),
        (301, b"", "http://other.test:7000/re-host/a?q=1"),
    ),
    "/re-https/a": (
        _redirect("/re-https", https_redirect=True),
        (301, b"", "https://svc.test/re-https/a"),
    ),
    "/re-port/a": (
        _redirect("/re-port", port_redirect=8443),
        (301, b"", "http://svc.test:8443/re-port/a"),
    ),
    "/re-path/a?q=1": (
        _redirect("/re-path", path_redirect="/new", response_code="TEMPORARY_REDIRECT"),
        (307, b"", "http://svc.test:80/new?q=1"),
    ),
    "/re-pathq/a?q=2": (
        _redirect(
            "/re-pathq",
            path_redirect="/new?x=1",
            strip_query=True,
            https_redirect=True,
            response_code="PERMANENT_REDIRECT",
        ),
        (308, b"", "https://svc.test/new?x=1"),
    ),
    "/re-prefix/a/b?q=1": (
        _redirect("/re-prefix", prefix_rewrite="/after", strip_query=True),
        (301, b"", "http://svc.test:80/after/a/b"),
    ),
    "/re-regex/z?q=1": (
        _redirect(
            "/re-regex",
            regex_rewrite={"pattern": {"regex": "^/re-regex/(.*)$"}, "substitution": "/y/\\1"},
            response_code="SEE_OTHER",
        ),
        (303, b"", "http://svc.test:80/y/z?q=1"),
    ),
    "/re-scheme/a": (
        _redirect("/re-scheme", scheme_redirect="https", host_redirect="other.test"),
        (301, b"", "https://other.test/re-scheme/a"),
    ),
}


def hcm(route_config: dict[str, Any], log: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": "lr",
        "route_config": route_config,
        "http_filters": [
            {
                # no bucket at the listener: only /rl (typed_per_filter_config) is limited
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {"@type": RATELIMIT, "stat_prefix": "http_local_rate_limiter"},
            },
            {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
    }
    if log is not None:
        out["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": FILE_LOG,
                    "path": str(log),
                    "log_format": {"text_format": "%REQ(:PATH)% %RESPONSE_FLAGS%\n"},
                },
            }
        ]
    return out


def route(prefix: str, cluster_name: str, **extra: Any) -> dict[str, Any]:
    action = {"cluster": cluster_name, "timeout": "5s", **extra.pop("action", {})}
    return {"match": {"prefix": prefix}, "route": action, **extra}


class LocalReplyWorld:
    """Two backends (``ok``, and ``slow`` held on a gate), a closed port, the control
    plane serving the resources above (``log``: Envoy's access log path)."""

    def __init__(self, tmp: Path, log: Path | None = None) -> None:
        self.ok = Backend()
        self.slow = Backend()
        self.slow.gate = threading.Event()
        self.servers = [UvicornThread(b).start() for b in (self.ok, self.slow)]
        self.ok.port, self.slow.port = (s.port for s in self.servers)
        self.closed = _free_port()  # nothing listens here
        self.resetting = ResettingServer().__enter__()  # resets every connection
        self.cp: ControlPlane
        self.cp, cache = control_plane(tmp)
        self.cp.start()
        abort = {
            "envoy.filters.http.fault": {
                "@type": FAULT,
                "abort": {"http_status": 503, "percentage": {"numerator": 100}},
            }
        }
        delay = {
            "envoy.filters.http.fault": {
                "@type": FAULT,
                "delay": {"fixed_delay": "0.05s", "percentage": {"numerator": 100}},
            }
        }
        retries = {"retry_policy": {"retry_on": "connect-failure", "num_retries": 2}}
        rs = [
            *(r for r, _ in ANSWERS.values()),
            route("/uh", "empty"),
            route("/uo", "full"),
            route("/ut", "slow", action={"timeout": "0.3s"}),
            route("/uf", "closed"),
            route("/urx", "closed", action=retries),
            route("/uc", "resetting"),
            route("/fi", "ok", typed_per_filter_config=abort),
            route("/di", "ok", typed_per_filter_config=delay),
            route("/do", "dropped"),
            route("/ok", "ok"),
            route("/rl", "ok", typed_per_filter_config=_RL_ROUTE),
        ]
        rc = {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": rs}]}
        api = {"name": MESH_HOST, "api_listener": {"api_listener": hcm(rc)}}
        sock = {
            "name": "envoy-in",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm(rc, log),
                        }
                    ]
                }
            ],
        }
        zero = {"thresholds": [{"max_requests": 0, "max_pending_requests": 0}]}
        every = {"category": "all", "drop_percentage": {"numerator": 100}}
        cache.install(
            cluster("empty"),
            cla("empty", []),
            cluster("full", circuit_breakers=zero),
            cla("full", [self.ok.port]),
            cluster("slow"),
            cla("slow", [self.slow.port]),
            cluster("closed"),
            cla("closed", [self.closed]),
            cluster("ok"),
            cla("ok", [self.ok.port]),
            cluster("resetting"),
            cla("resetting", [self.resetting.port]),
            cluster("dropped"),
            cla("dropped", [self.ok.port], policy={"drop_overloads": [every]}),
            json_format.ParseDict(api, listener_pb2.Listener()),
            json_format.ParseDict(sock, listener_pb2.Listener()),
        )

    def close(self) -> None:
        assert self.slow.gate is not None
        self.slow.gate.set()
        self.resetting.__exit__()
        self.cp.stop()
        for s in self.servers:
            s.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
