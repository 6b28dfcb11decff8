"""Routes that answer themselves (``direct_response``, ``redirect``): decoding with
Envoy's defaults, NACKs naming the field, the Location rules on host forms the
differential against Envoy (tests/peers/test_envoy_local_replies.py) does not reach, and
the answers through the public API in both ``local_replies`` modes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshlib import Mesh
from meshlib._call import Call
from meshlib.local_reply import LocalReply
from meshlib.routing import RouteTable
from tests.meshlib.local_reply_xds import ANSWER_HOST, ANSWERS, MESH_HOST, LocalReplyWorld
from tests.meshlib.test_routing_decode import decode_routes
from tests.meshlib.xds_builders import packed, route_config
from tests.peers.test_envoy_cluster_differential import wait_for
from xds_client.resources import ResourceError
from xds_client.resources.route import DirectResponse, Redirect, RouteConfigType

pytestmark = pytest.mark.timeout(60)


def answered(path: str, **action: Any) -> dict[str, Any]:
    return {"match": {"prefix": path}, **action}


def test_direct_response_and_redirect_decode_with_envoys_defaults() -> None:
    rc = decode_routes(
        answered("/d", direct_response={"status": 200, "body": {"inline_string": "hi"}}),
        answered("/r", redirect={}),
        answered("/n", non_forwarding_action={}),
    )
    direct, redirect, other = rc.virtual_hosts[0].routes
    assert direct.action is None and direct.direct_response == DirectResponse(200, b"hi")
    assert redirect.redirect == Redirect()  # 301, every part of the request kept
    assert redirect.redirect is not None and redirect.redirect.status == 301
    assert other.direct_response is None and other.redirect is None


@pytest.mark.parametrize(
    ("action", "field", "problem"),
    [
        ({"direct_response": {"status": 199}}, "direct_response.status", "not in [200, 600)"),
        ({"direct_response": {"status": 600}}, "direct_response.status", "not in [200, 600)"),
        (
            {"direct_response": {"status": 200, "body": {"filename": "/etc/hostname"}}},
            "direct_response.body.filename",
            "only an inline body",
        ),
        (
            {"direct_response": {"status": 200, "body": {"environment_variable": "X"}}},
            "direct_response.body.environment_variable",
            "only an inline body",
        ),
        (
            {"direct_response": {"status": 200, "body": {"inline_string": "x" * 4097}}},
            "direct_response.body",
            "the maximum is 4096",
        ),
        (
            {"direct_response": {"status": 200, "body_format": {"text_format": "x"}}},
            "direct_response.body_format",
            "not supported",
        ),
        ({"redirect": {"response_code": 9}}, "redirect.response_code", "unknown"),
        ({"redirect": {"port_redirect": 70000}}, "redirect.port_redirect", "not a port"),
        ({"redirect": {"host_redirect": "a\nb"}}, "redirect.host_redirect", "header value"),
        ({"redirect": {"path_redirect": "/a\r\n"}}, "redirect.path_redirect", "header value"),
        (
            {"redirect": {"regex_rewrite": {"pattern": {"regex": "[z-a]"}, "substitution": ""}}},
            "redirect.regex_rewrite.pattern.regex",
            "invalid RE2 regex",
        ),
    ],
)
def test_bad_answers_are_nacked_with_their_path(
    action: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(ResourceError) as err:
        decode_routes(answered("/", **action))
    assert err.value.field == f"virtual_hosts[0].routes[0].{field}"
    assert problem in err.value.problem


def test_prefix_rewrite_redirect_needs_a_prefix_match() -> None:
    bad = {"match": {"safe_regex": {"regex": "/a.*"}}, "redirect": {"prefix_rewrite": "/b"}}
    with pytest.raises(ResourceError) as err:
        decode_routes(bad)
    assert err.value.field == "virtual_hosts[0].routes[0].redirect.prefix_rewrite"


def test_the_body_limit_follows_the_route_configuration() -> None:
    vh = {
        "name": "vh",
        "domains": ["*"],
        "routes": [
            answered("/", direct_response={"status": 200, "body": {"inline_string": "abc"}})
        ],
    }
    msg = route_config([vh])
    msg.max_direct_response_body_size_bytes.value = 2
    with pytest.raises(ResourceError, match="the maximum is 2"):
        RouteConfigType().decode(packed(msg))


@pytest.mark.parametrize(
    ("redirect", "host", "scheme", "location"),
    [
        # an IPv6 host keeps its brackets; the old scheme's default port goes on a change
        ({"https_redirect": True}, "[::1]:80", "http", "https://[::1]/p?q=1"),
        ({"https_redirect": True}, "[::1]:9080", "http", "https://[::1]:9080/p?q=1"),
        ({"port_redirect": 81}, "[::1]", "http", "http://[::1]:81/p?q=1"),
        # https → http drops 443, keeps another port
        ({"scheme_redirect": "http"}, "svc.test:443", "https", "http://svc.test/p?q=1"),
        ({"scheme_redirect": "http"}, "svc.test:8443", "https", "http://svc.test:8443/p?q=1"),
        # the same scheme keeps the port
        ({"scheme_redirect": "http"}, "svc.test:80", "http", "http://svc.test:80/p?q=1"),
        (
            {"host_redirect": "o.test", "port_redirect": 9},
            "svc.test:80",
            "http",
            "http://o.test:9/p?q=1",
        ),
    ],
)
def test_location_rules(redirect: dict[str, Any], host: str, scheme: str, location: str) -> None:
    table = RouteTable(decode_routes(answered("/", redirect=redirect)))
    reply = table.route_or_reply(Call("svc.test:80", "GET", "/p?q=1", {"host": host}, scheme))
    assert isinstance(reply, LocalReply) and reply.reason == "redirect"
    assert dict(reply.headers)["location"] == location
    assert table.route(Call("svc.test:80", "GET", "/p", {"host": host}, scheme)) is None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReplyWorld]:
    w = LocalReplyWorld(tmp_path_factory.mktemp("route-answers"))
    yield w
    w.close()


@pytest.mark.parametrize("mode", ["envoy", "raise"])
def test_answers_are_responses_in_both_modes(world: LocalReplyWorld, mode: str) -> None:
    with Mesh(world.cp.bootstrap(), local_replies=mode) as mesh:
        with mesh.httpx_client(timeout=10) as client:
            wait_for(lambda: client.get(f"http://{MESH_HOST}/ok").status_code == 200, "route")
            for path, (_, (status, body, location)) in ANSWERS.items():
                r = client.get(f"http://{MESH_HOST}{path}", headers={"host": ANSWER_HOST})
                assert (r.status_code, r.content, r.headers.get("location")) == (
                    status,
                    body,
                    location,
                )
                assert r.headers["x-lr"] == "local"
                reply = r.extensions["meshlib.local_reply"]
                assert reply.flag == "-" and reply.configured
        text = mesh.telemetry.stats.prometheus()
        assert 'response_code="418",grpc_response_status="",response_flags="-"' in text
        assert 'response_code="308",grpc_response_status="",response_flags="-"' in text


def test_async_client_gets_the_redirect(world: LocalReplyWorld) -> None:
    async def run(mesh: Mesh) -> httpx.Response:
        async with mesh.httpx_async_client(timeout=10) as c:
            for _ in range(200):
                if (await c.get(f"http://{MESH_HOST}/ok")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            return await c.get(f"http://{MESH_HOST}/re-port/a", headers={"host": ANSWER_HOST})

    with Mesh(world.cp.bootstrap()) as mesh:
        r = asyncio.run(run(mesh))
    assert (r.status_code, r.headers["location"]) == (301, "http://svc.test:8443/re-port/a")
