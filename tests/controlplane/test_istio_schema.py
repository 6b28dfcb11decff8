"""Istio's and Kubernetes' published schemas, kinds and ``kubectl apply`` folder semantics."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshlib.controlplane import ConfigError, ControlPlane, FileSource
from meshlib.controlplane.objects._schema import _data, spec_schema
from meshlib.controlplane.objects._support import SUPPORTED

SAMPLES = Path(__file__).parent / "data" / "istio-samples"
#: Valid Istio samples meshlib refuses as a whole: TCP routes are not supported.
REFUSED_SAMPLES = {"tcp-echo_tcp-echo-all-v1.yaml"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_schemas_are_packaged_with_their_origin() -> None:
    folder = resources.files("meshlib.controlplane.objects").joinpath("schemas")
    istio = json.loads(folder.joinpath("istio.json").read_text())
    assert istio["release"] == "1.30.3"
    for group, versions in (
        ("networking.istio.io", ("v1alpha3", "v1beta1", "v1")),
        ("security.istio.io", ("v1beta1", "v1")),
    ):
        for version in versions:
            kinds = {
                k.rsplit("/", 1)[1] for k in istio["kinds"] if k.startswith(f"{group}/{version}/")
            }
            assert kinds, (group, version)
    assert "description" not in json.dumps(istio)


def test_every_istio_sample_is_accepted(tmp_path: Path) -> None:
    for sample in sorted(SAMPLES.iterdir()):
        if sample.name in REFUSED_SAMPLES:
            continue
        shutil.copy(sample, tmp_path / sample.name)
        source = FileSource(tmp_path / sample.name)
        result = source.load_lenient()
        assert result.problems == (), sample.name


def test_a_valid_but_unsupported_sample_is_refused_by_name(tmp_path: Path) -> None:
    result = FileSource(SAMPLES / "tcp-echo_tcp-echo-all-v1.yaml").load_lenient()
    assert any(
        "VirtualService default/tcp-echo: spec.tcp: not supported by meshlib" in p
        for p in result.problems
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["spec"]["http"][0]["match"][0].__setitem__(
                "header", d["spec"]["http"][0]["match"][0].pop("headers")
            ),
            'spec.http[0].match[0].header: unknown field; did you mean "headers"?',
        ),
        (
            lambda d: d["spec"]["http"][0]["route"][0]["destination"].__setitem__(
                "subet", d["spec"]["http"][0]["route"][0]["destination"].pop("subset")
            ),
            'spec.http[0].route[0].destination.subet: unknown field; did you mean "subset"?',
        ),
        (
            lambda d: d["spec"].__setitem__("htp", d["spec"].pop("http")),
            'spec.htp: unknown field; did you mean "http"?',
        ),
        (
            lambda d: d["spec"]["http"][0].__setitem__("corsPolicy", {"allowOrigins": []}),
            "spec.http[0].corsPolicy: not supported by meshlib",
        ),
    ],
)
def test_typos_in_the_jason_rule_are_refused_with_file_object_and_path(
    tmp_path: Path, edit: Any, expected: str
) -> None:
    name = "bookinfo_networking_virtual-service-reviews-test-v2.yaml"
    doc = yaml.safe_load((SAMPLES / name).read_text())
    edit(doc)
    f = write(tmp_path / "vs.yaml", yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        FileSource(f).load()
    assert f"{f}: VirtualService default/reviews: {expected}" in info.value.problems


def test_security_typos_never_load_as_defaults(tmp_path: Path) -> None:
    f = write(
        tmp_path / "sec.yaml",
        """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all}
spec: {acton: DENY}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict}
spec: {mtls: {moe: STRICT}}
""",
    )
    problems = FileSource(f).load_lenient().problems
    assert (
        f"{f}: AuthorizationPolicy default/deny-all: "
        'spec.acton: unknown field; did you mean "action"?' in problems
    )
    assert (
        f"{f}: PeerAuthentication default/strict: "
        'spec.mtls.moe: unknown field; did you mean "mode"?' in problems
    )


def test_every_schema_error_of_an_object_is_listed(tmp_path: Path) -> None:
    f = write(
        tmp_path / "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, labls: {}}\n"
        "spec: {ports: [{prot: 80}], selectr: {}}\n",
    )
    problems = FileSource(f).load_lenient().problems
    assert problems == (
        f'{f}: Service default/a: metadata.labls: unknown field; did you mean "labels"?',
        f"{f}: Service default/a: spec.ports[0].port: is required",
        f'{f}: Service default/a: spec.ports[0].prot: unknown field; did you mean "port"?',
        f'{f}: Service default/a: spec.selectr: unknown field; did you mean "selector"?',
    )


def test_misspelled_kinds_are_errors_and_unused_kinds_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path / "a.yaml",
        """\
apiVersion: networking.istio.io/v1
kind: VirtualServce
metadata: {name: x}
spec: {}
---
apiVersion: v1
kind: Servce
metadata: {name: y}
---
apiVersion: networking.istio.io/v2
kind: VirtualService
metadata: {name: z}
""",
    )
    shutil.copy(SAMPLES / "bookinfo_platform_kube_bookinfo.yaml", tmp_path / "bookinfo.yaml")
    result = FileSource(tmp_path).load_lenient()
    f = tmp_path / "a.yaml"
    assert result.problems == (
        f"{f}: VirtualServce default/x: kind: unknown kind 'VirtualServce' in "
        'networking.istio.io; did you mean "VirtualService"?',
        f"{f}: Servce default/y: kind: unknown kind 'Servce' in the core group "
        '(apiVersion: v1); did you mean "Service"?',
        f"{f}: VirtualService default/z: apiVersion: networking.istio.io/v2 does not serve "
        "VirtualService (served: ['v1', 'v1alpha3', 'v1beta1'])",
    )
    assert result.skipped == {"Deployment": 6, "ServiceAccount": 4}
    with caplog.at_level(logging.INFO, logger="meshlib.controlplane"):
        cp = ControlPlane(tmp_path)
        with pytest.raises(ConfigError):
            cp.reload()
    assert "skipped 6 Deployment, 4 ServiceAccount" in caplog.text


def _schema_paths(node: Any, prefix: str, out: set[str]) -> None:
    if not isinstance(node, dict):
        return
    for key, sub in (node.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        out.add(path)
        _schema_paths(sub, path, out)
    if isinstance(node.get("items"), dict):
        _schema_paths(node["items"], f"{prefix}[]", out)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and not node.get("properties"):
        _schema_paths(extra, f"{prefix}{{}}", out)


@pytest.mark.parametrize("kind", sorted(SUPPORTED))
def test_audit_every_schema_field_is_honoured_or_refused(tmp_path: Path, kind: str) -> None:
    """Walk each version's schema: a field listed as honoured must exist there (so the
    list has no typos), and a field that is not listed is refused by name."""
    istio = _data("istio.json")
    versions = [k for k in istio["kinds"] if k.endswith(f"/{kind}")]
    assert versions
    listed = {p.removesuffix(".*") for p in SUPPORTED[kind]} - {"apiVersion", "kind"}
    every: set[str] = set()
    for key in versions:
        group, version, _ = key.split("/")
        schema = spec_schema(f"{group}/{version}", kind)
        assert schema is not None
        paths: set[str] = set()
        _schema_paths(dict(schema), "", paths)
        every |= paths
    missing = {p for p in listed if p not in every and not p.startswith(("metadata", "status"))}
    assert missing == set()
    refused = sorted(
        p for p in every if p.startswith("spec.") and not _honoured(p, SUPPORTED[kind])
    )
    # Each refused field, present in an otherwise empty object, is named as unsupported.
    from meshlib.controlplane.objects._support import unsupported_fields

    schema = spec_schema(versions[0].rsplit("/", 1)[0], kind)
    for path in refused:
        doc = _doc_with(path)
        found = [str(e) for e in unsupported_fields(kind, doc, schema)]
        assert any("not supported by meshlib" in e for e in found), path


def _honoured(path: str, supported: frozenset[str]) -> bool:
    from meshlib.controlplane.objects._support import _covered

    return _covered(path, supported)


def _doc_with(path: str) -> dict[str, Any]:
    """A document that holds ``path`` (``a.b[].c{}.d`` -> ``{a: {b: [{c: {k: {d: 1}}}]}}``)."""
    tokens: list[str] = []
    for part in path.replace("[]", ".[]").replace("{}", ".{}").split("."):
        if part:
            tokens.append(part)
    root: dict[str, Any] = {}
    node: Any = root
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        value: Any = 1 if last else ([] if tokens[i + 1] == "[]" else {})
        if token == "[]":
            item: Any = {} if not last else 1
            node.append(item)
            node = item
        elif token == "{}":
            node["k"] = {} if not last else 1
            node = node["k"]
        else:
            node[token] = value
            node = value
    return root


def test_folders_are_read_recursively_and_the_newest_applied_wins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vs = (SAMPLES / "bookinfo_networking_virtual-service-all-v1.yaml").read_text()
    write(
        tmp_path / "platform" / "kube" / "bookinfo.yaml",
        (SAMPLES / "bookinfo_platform_kube_bookinfo.yaml").read_text(),
    )
    write(
        tmp_path / "networking" / "rules.yaml",
        (SAMPLES / "bookinfo_networking_destination-rule-all.yaml").read_text(),
    )
    first = write(tmp_path / "networking" / "b-all-v1.yaml", vs)
    later = write(
        tmp_path / "networking" / "a-reviews-v3.yaml",
        (SAMPLES / "bookinfo_networking_virtual-service-reviews-v3.yaml").read_text(),
    )
    stamp = first.stat().st_mtime_ns + 10**9
    os.utime(later, ns=(stamp, stamp))
    write(tmp_path / ".hidden" / "x.yaml", "not: [valid")
    with caplog.at_level(logging.INFO, logger="meshlib.controlplane"):
        cp = ControlPlane(tmp_path)
        cp.reload()
    objects = cp.objects
    reviews = next(v for v in objects.virtual_services if v.name == "reviews")
    assert reviews.http[0].route[0].destination.subset == "v3"
    kinds = Counter(k.split(" ")[0] for k in cp._good)
    assert kinds == {"Service": 4, "VirtualService": 4, "DestinationRule": 4}
    assert "12 objects from 4 files: 4 DestinationRule, 4 Service, 4 VirtualService" in caplog.text


def test_a_file_that_stops_parsing_keeps_its_objects_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = write(
        tmp_path / "bookinfo.yaml", (SAMPLES / "bookinfo_platform_kube_bookinfo.yaml").read_text()
    )
    cp = ControlPlane(tmp_path)
    cp.reload()
    before = cp.snapshot()
    with f.open("a") as out:
        out.write("  extra: [unclosed\n")
    time.sleep(0.01)
    with pytest.raises(ConfigError, match="invalid YAML"):
        cp.reload()
    assert sorted(s.name for s in cp.objects.services) == [
        "details",
        "productpage",
        "ratings",
        "reviews",
    ]
    assert cp.snapshot().version == before.version  # nothing changed, nothing pushed
    # And the same holds after a restart of the watcher loop: reload once more.
    with pytest.raises(ConfigError):
        cp.reload()
    assert len(cp.objects.services) == 4


def test_objects_as_kubectl_get_prints_them_are_accepted(tmp_path: Path) -> None:
    f = write(
        tmp_path / "exported.yaml",
        """\
apiVersion: v1
kind: Service
metadata:
  creationTimestamp: 2024-01-01T00:00:00Z
  name: reviews
  resourceVersion: "123"
  managedFields:
  - {apiVersion: v1, fieldsType: FieldsV1, fieldsV1: {f:spec: {}}, manager: kubectl}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080, protocol: TCP, targetPort: 9080}]
  sessionAffinity: None
  type: ClusterIP
status: {loadBalancer: {}}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, labels: {app: reviews}}
spec:
  containers: [{name: app, image: app, resources: {limits: {cpu: 1, memory: 1Gi}}}]
status: {podIP: 10.0.0.1, phase: Running}
""",
    )
    result = FileSource(f).load_lenient()
    assert result.problems == ()
    assert sorted(result.objects) == ["Pod default/reviews-1", "Service default/reviews"]


def test_a_watched_file_that_stops_parsing_pushes_nothing(tmp_path: Path) -> None:
    f = write(
        tmp_path / "bookinfo.yaml", (SAMPLES / "bookinfo_platform_kube_bookinfo.yaml").read_text()
    )
    with ControlPlane(tmp_path, watch=True, poll_interval=0.02, debounce=0.02) as cp:
        served = cp.snapshot().version
        with f.open("a") as out:
            out.write("  extra: [unclosed\n")
        for _ in range(200):  # bounded: the watcher sees the edit within a few polls
            if cp.problems:
                break
            time.sleep(0.02)
        assert any("invalid YAML" in p and str(f) in p for p in cp.problems)
        assert cp.snapshot().version == served
        assert len(cp.objects.services) == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "ExternalName"),
        ("sessionAffinity", "ClientIP"),
        ("publishNotReadyAddresses", "true"),
        ("internalTrafficPolicy", "Local"),
    ],
)
def test_service_settings_meshlib_does_not_route_by_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    f = write(
        tmp_path / "svc.yaml",
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: a}}\n"
        f"spec: {{ports: [{{port: 80}}], {field}: {value}}}\n",
    )
    (problem,) = FileSource(f).load_lenient().problems
    assert problem.startswith(f"{f}: Service default/a: spec.{field}: ")
    assert problem.endswith("is not supported by meshlib")


def test_request_authentication_is_read_and_unhonoured_fields_refused(tmp_path: Path) -> None:
    ok = write(
        tmp_path / "jwt.yaml",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\n"
        "spec: {jwtRules: [{issuer: me, jwksUri: 'https://example.com/jwks'}]}\n",
    )
    (ra,) = FileSource(ok).load().request_authentications
    assert ra.rules[0].issuer == "me" and ra.rules[0].jwks_uri == "https://example.com/jwks"
    bad = write(
        tmp_path / "jwt.yaml",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\n"
        "spec: {targetRefs: [{kind: Gateway, name: gw}], jwtRules: [{issuer: me}]}\n",
    )
    (problem,) = FileSource(bad).load_lenient().problems
    assert "RequestAuthentication default/jwt: spec.targetRefs: not supported by meshlib" in problem


def test_envoy_filter_is_refused_not_skipped(tmp_path: Path) -> None:
    # the shape of Istio's local rate-limit task: skipped, its limit would silently not apply
    f = write(
        tmp_path / "ef.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\n"
        "metadata: {name: filter-local-ratelimit-svc}\n"
        "spec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n"
        "    patch: {operation: INSERT_BEFORE,\n"
        "            value: {name: envoy.filters.http.local_ratelimit}}\n",
    )
    (problem,) = FileSource(f).load_lenient().problems
    assert "EnvoyFilter default/filter-local-ratelimit-svc: kind: EnvoyFilter is not supported" in (
        problem
    )
