"""The server listener's jwt_authn filter: what meshlib honours is decoded, the rest is
refused with its path (the listener is NACKed, never enforced partly); a client listener
does not accept it at all."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from google.protobuf import any_pb2, json_format

from xds_client.resources import ResourceError
from xds_client.resources._jwt_authn import decode_jwt_authn


def fail(field: str, problem: str) -> ResourceError:
    return ResourceError("Listener", "l", field, problem)


def config(**provider: Any) -> dict[str, Any]:
    return {
        "providers": {
            "origins-0": {
                "issuer": "https://idp",
                "remote_jwks": {"http_uri": {"uri": "https://idp/jwks", "timeout": "2s"}},
                **provider,
            }
        },
        "rules": [
            {
                "match": {"prefix": "/"},
                "requires": {
                    "requires_any": {
                        "requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]
                    }
                },
            }
        ],
        "bypass_cors_preflight": True,
    }


def decode(doc: dict[str, Any]) -> Any:
    msg = any_pb2.Any()
    msg.Pack(json_format.ParseDict(doc, jwt_pb2.JwtAuthentication()))
    return decode_jwt_authn(msg, "http_filters[0]", fail)


def test_istiod_shape_is_decoded() -> None:
    out = decode(config(forward=True, from_headers=[{"name": "X-Token", "value_prefix": "T "}]))
    (p,) = out.providers
    assert out.allow_missing
    assert (p.issuer, p.jwks_uri, p.timeout, p.forward) == (
        "https://idp",
        "https://idp/jwks",
        2.0,
        True,
    )
    assert p.from_headers == (("x-token", "T "),)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subjects": {"exact": "a"}}, "providers[origins-0].subjects"),
        ({"max_lifetime": "10s"}, "providers[origins-0].max_lifetime"),
        ({"clock_skew_seconds": 5}, "providers[origins-0].clock_skew_seconds"),
        ({"header_in_metadata": "h"}, "providers[origins-0].header_in_metadata"),
    ],
)
def test_unhonoured_provider_fields_are_refused(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ResourceError, match=field.replace("[", r"\[").replace("]", r"\]")):
        decode(config(**change))


def test_per_route_rules_and_requires_all_are_refused() -> None:
    doc = config()
    doc["rules"][0]["match"] = {"prefix": "/admin"}
    with pytest.raises(ResourceError, match="only prefix '/'"):
        decode(doc)
    doc = config()
    doc["rules"][0]["requires"] = {"requires_all": {"requirements": [{"provider_name": "x"}]}}
    with pytest.raises(ResourceError, match="requires_all"):
        decode(doc)
    doc = config()
    doc["bypass_cors_preflight"] = False
    with pytest.raises(ResourceError, match="bypass_cors_preflight"):
        decode(doc)
