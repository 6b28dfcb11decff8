"""RequestAuthentication and request-auth AuthorizationPolicy keys, translated: Istio's
``iss/sub`` wildcard strings become matchers on ``sub`` under each issuer's metadata."""

from __future__ import annotations

from google.protobuf import json_format

from meshlib.controlplane.translate._jwt import jwt_principal

ISS = "https://idp.example"


def sub_matchers(value: str, issuers: list[str]) -> list[dict[str, object]]:
    p = json_format.MessageToDict(jwt_principal("requestPrincipals", value, issuers))
    items = p.get("orIds", {}).get("ids", [p]) if "orIds" in p else [p]
    return [i.get("metadata", i) for i in items]


def test_exact_principal_splits_at_the_issuer() -> None:
    (m,) = sub_matchers(f"{ISS}/alice", [ISS, "other"])
    assert m["path"] == [{"key": ISS}, {"key": "sub"}]
    assert m["value"] == {"stringMatch": {"exact": "alice"}}


def test_wildcards() -> None:
    (m,) = sub_matchers(f"{ISS}/*", [ISS])
    assert m["value"] == {"presentMatch": True}
    (m,) = sub_matchers(f"{ISS}/al*", [ISS])
    assert m["value"] == {"stringMatch": {"prefix": "al"}}
    (m,) = sub_matchers("*", [ISS])
    assert m["value"] == {"presentMatch": True}
    # "*/alice": sub ends with /alice, or is exactly alice (the "/" from the issuer's end)
    values = [m["value"] for m in sub_matchers("*/alice", [ISS])]
    assert {"stringMatch": {"suffix": "/alice"}} in values
    assert {"stringMatch": {"exact": "alice"}} in values


def test_no_issuer_never_matches() -> None:
    p = json_format.MessageToDict(jwt_principal("requestPrincipals", f"{ISS}/a", []))
    assert p == {"notId": {"any": True}}
    p = json_format.MessageToDict(jwt_principal("request.auth.claims[group]", "x", ["o"]))
    assert p["metadata"]["path"] == [{"key": "o"}, {"key": "group"}]
