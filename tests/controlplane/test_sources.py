"""FileSource and the object models: YAML/JSON in, typed objects or precise errors out."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from meshlib.controlplane import (
    ConfigError,
    EndpointConditions,
    FileSource,
    ObjectRef,
    Service,
    ServicePort,
)

from .conftest import REVIEWS_YAML, write


def test_loads_directory_of_yaml_and_json(config_dir: Path) -> None:
    write(
        config_dir / "extra.json",
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": "details", "namespace": "shop"},
                        "spec": {"ports": [{"port": 9080, "appProtocol": "http"}]},
                    }
                ],
            }
        ),
    )
    write(config_dir / "notes.txt", "kind: Service\n: not yaml at all [")
    objects = FileSource(config_dir).load()
    names = sorted(f"{s.namespace}/{s.name}" for s in objects.services)
    assert names == ["default/ratings", "default/reviews", "shop/details"]
    assert sorted(s.name for s in objects.endpoint_slices) == [
        "ratings-1",
        "reviews-a",
        "reviews-b",
    ]
    details = next(s for s in objects.services if s.name == "details")
    assert details.ports == (ServicePort(port=9080, app_protocol="http"),)
    assert details.fqdn == "details.shop.svc.cluster.local"


def test_service_fields(tmp_path: Path) -> None:
    objects = FileSource(write(tmp_path / "r.yaml", REVIEWS_YAML)).load()
    [svc] = objects.services
    assert svc == Service(
        name="reviews",
        namespace="default",
        ports=(ServicePort(port=9080, name="http", target_port=9080, protocol="TCP"),),
        cluster_ip="10.96.0.20",
        selector={"app": "reviews"},
    )
    assert [s.name for s in objects.slices_for(svc)] == ["reviews-a", "reviews-b"]


def test_endpoint_slice_fields(tmp_path: Path) -> None:
    f = write(
        tmp_path / "s.yaml",
        """\
        kind: EndpointSlice
        apiVersion: discovery.k8s.io/v1
        metadata:
          name: web-x1
          namespace: shop
          labels: {kubernetes.io/service-name: web, other: label}
        addressType: IPv6
        endpoints:
        - addresses: ["::1", "fd00::2"]
          conditions: {ready: false, serving: true, terminating: true}
          nodeName: node-1
          zone: us-east-1a
          targetRef: {kind: Pod, name: web-0, namespace: shop}
        - addresses: ["::1"]
        ports:
        - {name: http, port: 8080, protocol: TCP}
        - {name: all}
        """,
    )
    [eps] = FileSource(f).load().endpoint_slices
    assert (eps.name, eps.namespace, eps.service_name, eps.address_type) == (
        "web-x1",
        "shop",
        "web",
        "IPv6",
    )
    first, second = eps.endpoints
    assert first.addresses == ("::1", "fd00::2")
    assert first.conditions == EndpointConditions(ready=False, serving=True, terminating=True)
    assert not first.conditions.is_ready
    assert (first.node_name, first.zone) == ("node-1", "us-east-1a")
    assert first.target_ref == ObjectRef(kind="Pod", name="web-0", namespace="shop")
    assert second.conditions.is_ready  # absent "ready" means ready
    assert [(p.name, p.port) for p in eps.ports] == [("http", 8080), ("all", None)]


def test_unknown_kinds_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(
        tmp_path / "mixed.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec: {anything: [goes]}
        ---
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec: {ports: [{port: 80}]}
        """,
    )
    with caplog.at_level(logging.DEBUG, logger="meshlib.controlplane"):
        objects = FileSource(f).load()
    assert [s.name for s in objects.services] == ["a"]
    assert "skipping Gateway default/gw" in caplog.text


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            "apiVersion: v1\n"
            "kind: Service\nmetadata: {name: reviews}\nspec: {ports: [{port: 70000}]}",
            "Service default/reviews: spec.ports[0].port: must be an integer 1-65535",
        ),
        (
            "apiVersion: v1\n"
            "kind: Service\nmetadata: {name: reviews, namespace: x}\nspec: {ports: [{port: '80'}]}",
            "Service x/reviews: spec.ports[0].port: must be an integer",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: r}\n"
            "spec: {ports: [{port: 80, name: a}, {port: 81, name: b, protocol: QUIC}]}",
            "Service default/r: spec.ports[1].protocol: must be one of TCP, UDP, SCTP",
        ),
        (
            "apiVersion: v1\n"
            "kind: Service\nmetadata: {name: r}\nspec: {ports: [{port: 80}, {port: 81}]}",
            "Service default/r: spec.ports: ports must have unique, non-empty names",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {}",
            "Service default/Bad_Name: metadata.name: 'Bad_Name' is not a valid DNS name",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\nspec: {}",
            "Service x/<unnamed>: metadata.name: is required",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: r}",
            "Service default/r: spec: is required",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: r}\nspec: {clusterIP: 10.0.0.300}",
            "Service default/r: spec.clusterIP: '10.0.0.300' is not an IP address",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\n"
            "kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n"
            "endpoints: [{addresses: [10.0.0.1]}, {addresses: ['::1']}]",
            "EndpointSlice default/s: endpoints[1].addresses[0]: '::1' is not an IPv4 address",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\n"
            "kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n"
            "endpoints: [{addresses: [10.0.0.1], conditions: {ready: 'yes'}}]",
            "EndpointSlice default/s: endpoints[0].conditions.ready: must be true or false",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\n"
            "kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n"
            "endpoints: [{addresses: []}]",
            "EndpointSlice default/s: endpoints[0].addresses: must list at least one address",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\n",
            "EndpointSlice default/s: addressType: is required",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\n"
            "kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nports: [{port: 0}]",
            "EndpointSlice default/s: ports[0].port: must be an integer 1-65535",
        ),
    ],
)
def test_bad_objects_name_file_kind_object_and_field(
    tmp_path: Path, doc: str, expected: str
) -> None:
    f = write(tmp_path / "bad.yaml", doc)
    with pytest.raises(ConfigError) as info:
        FileSource(f).load()
    assert str(info.value) == f"{f}: {expected}"


def test_all_bad_objects_are_reported_together(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: -1}]}",
    )
    write(
        tmp_path / "b.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{}]}",
    )
    write(
        tmp_path / "c.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {ports: [{port: 1}]}",
    )
    with pytest.raises(ConfigError) as info:
        FileSource(tmp_path).load()
    # b's missing port is now named by the Kubernetes schema (issue 15).
    assert info.value.problems == (
        f"{tmp_path / 'a.yaml'}: Service default/a: spec.ports[0].port: must be an integer 1-65535",
        f"{tmp_path / 'b.yaml'}: Service default/b: spec.ports[0].port: is required",
    )


def test_same_object_in_two_files_the_newest_wins(tmp_path: Path) -> None:
    # kubectl apply semantics (issue 15): the file applied last wins, whatever its name.
    doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: %d}]}"
    write(tmp_path / "2.yaml", doc % 2)
    newer = write(tmp_path / "1.yaml", doc % 1)
    old = (tmp_path / "2.yaml").stat().st_mtime_ns
    os.utime(newer, ns=(old + 10**9, old + 10**9))
    (service,) = FileSource(tmp_path).load().services
    assert service.ports[0].port == 1


def test_missing_path_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file or directory"):
        FileSource(tmp_path / "nope.yaml").load()


def test_invalid_yaml_fails_fast(tmp_path: Path) -> None:
    f = write(
        tmp_path / "broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a\nspec: x\n"
    )
    with pytest.raises(ConfigError) as info:
        FileSource(f).load()
    message = str(info.value)
    assert message.startswith(f"{f}: invalid YAML: ")
    assert "line" in message


def test_invalid_json_and_non_mapping_documents(tmp_path: Path) -> None:
    f = write(tmp_path / "x.json", "{not json")
    with pytest.raises(ConfigError, match=r"x\.json: invalid JSON"):
        FileSource(f).load()
    f = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: document 0: must be a mapping"):
        FileSource(f).load()
    f = write(
        tmp_path / "nokind.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {}\n---\na: 1\n",
    )
    with pytest.raises(ConfigError, match=r"nokind\.yaml: document 1: kind: is required"):
        FileSource(f).load()


def test_unreadable_file_fails_fast(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"apiVersion: v1\nkind: Service\nmetadata: {name: caf\xe9}\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: cannot read"):
        FileSource(f).load()


def test_load_again_rereads_files(tmp_path: Path) -> None:
    f = write(
        tmp_path / "s.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}",
    )
    source = FileSource(f)
    assert source.load().services[0].ports[0].port == 1
    write(f, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 2}]}")
    assert source.load().services[0].ports[0].port == 2
