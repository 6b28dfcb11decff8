"""Regenerate the structural schemas meshlib validates Istio and Kubernetes objects against.

Istio: the ``openAPIV3Schema`` of every CRD in Istio's ``crd-all.gen.yaml`` of a pinned
release (``manifests/charts/base/files/crd-all.gen.yaml``), for every served version.
Kubernetes: Service, Endpoints, Pod, EndpointSlice and ObjectMeta from the ``kubernetes``
Python client's pydantic models (``model_json_schema(by_alias=True)``; the client is
generated from the Kubernetes OpenAPI document and its models forbid extra fields).

Only structure is kept: names, types, enums, required, bounds, patterns, list and map rules
and the ``x-kubernetes-*`` markers that change validation; description text is dropped.
CEL rules (``x-kubernetes-validations``) are dropped too: jsonschema cannot run them.

    git -C istio show 1.30.3:manifests/charts/base/files/crd-all.gen.yaml > crd-all.yaml
    python scripts/refresh_schemas.py --istio crd-all.yaml --release 1.30.3
"""

from __future__ import annotations

import argparse
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent.parent / "meshlib" / "controlplane" / "objects" / "schemas"
_DROP = {"description", "title", "default", "example", "x-kubernetes-validations", "format"}
_INT_BOUNDS = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
#: Kubernetes kinds the control plane reads, by apiVersion, and the client model of each.
K8S_KINDS = {
    ("v1", "Service"): "V1Service",
    ("v1", "Endpoints"): "V1Endpoints",
    ("v1", "Pod"): "V1Pod",
    ("discovery.k8s.io/v1", "EndpointSlice"): "V1EndpointSlice",
}


def crd_node(node: Any) -> Any:
    """One CRD schema node, structure only, as a draft-7 JSON schema."""
    if isinstance(node, list):
        return [crd_node(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: crd_node(sub) for name, sub in value.items()}
        else:
            out[key] = crd_node(value)
    fmt = node.get("format")
    if fmt in _INT_BOUNDS and node.get("type") == "integer":
        low, high = _INT_BOUNDS[fmt]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    if out.pop("x-kubernetes-int-or-string", None):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        # Kubernetes prunes (strict validation: rejects) fields a structural schema omits.
        out["additionalProperties"] = False
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def istio(crds: Path, release: str) -> dict[str, Any]:
    """``{"release", "kinds": {"group/version/Kind": index}, "schemas": [spec schema...]}``."""
    schemas: list[Any] = []
    seen: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for doc in yaml.safe_load_all(crds.read_text(encoding="utf-8")):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
        for version in doc["spec"]["versions"]:
            if not version.get("served", True):
                continue
            props = version["schema"]["openAPIV3Schema"].get("properties", {})
            body = {name: crd_node(props[name]) for name in ("spec", "status") if name in props}
            text = json.dumps(body, sort_keys=True)
            if text not in seen:
                seen[text] = len(schemas)
                schemas.append(body)
            kinds[f"{group}/{version['name']}/{kind}"] = seen[text]
    return {"release": release, "kinds": kinds, "schemas": schemas}


#: ``resource.Quantity`` fields: the client models them as strings, the API server takes
#: numbers too (``cpu: 1``).
QUANTITIES = {
    ("V1ContainerStatus", "allocatedResources"),
    ("V1EmptyDirVolumeSource", "sizeLimit"),
    ("V1PodSpec", "overhead"),
    ("V1PodStatus", "allocatedResources"),
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"),
    ("V1VolumeResourceRequirements", "requests"),
}
_QUANTITY = {"type": ["string", "integer", "number"]}


def _quantities(definitions: dict[str, Any]) -> None:
    for model, name in QUANTITIES:
        prop = definitions.get(model, {}).get("properties", {}).get(name)
        if prop is None:
            continue
        if prop.get("type") == "object":
            prop["additionalProperties"] = dict(_QUANTITY)
        else:
            prop.clear()
            prop.update(_QUANTITY)


def _pydantic_node(node: Any) -> Any:
    if isinstance(node, list):
        return [_pydantic_node(v) for v in node]
    if not isinstance(node, dict):
        return node
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        # Optional[X] is anyOf [X, null]: meshlib drops null fields before validating.
        rest = [v for v in any_of if v != {"type": "null"}]
        if len(rest) == 1 and len(any_of) == 2:
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            merged.update(rest[0])
            return _pydantic_node(merged)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "$ref":
            out[key] = value.replace("#/$defs/", "#/definitions/")
        elif key in ("properties", "$defs"):
            out["definitions" if key == "$defs" else key] = {
                name: _pydantic_node(sub) for name, sub in value.items()
            }
        else:
            out[key] = _pydantic_node(value)
    return out


def kubernetes() -> dict[str, Any]:
    """``{"client", "kinds": {"apiVersion/Kind": model}, "definitions": {...}}``."""
    import kubernetes.client as client

    definitions: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for (api_version, kind), model in [*K8S_KINDS.items(), (("", "ObjectMeta"), "V1ObjectMeta")]:
        schema = _pydantic_node(getattr(client, model).model_json_schema(by_alias=True))
        definitions.update(schema.pop("definitions", {}))
        definitions[model] = schema
        if api_version:
            kinds[f"{api_version}/{kind}"] = model
    _quantities(definitions)
    return {
        "client": f"kubernetes {metadata.version('kubernetes')}",
        "kinds": kinds,
        "definitions": dict(sorted(definitions.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--istio", type=Path, help="Istio's crd-all.gen.yaml")
    parser.add_argument("--release", default="", help="the Istio release it is from")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.istio is not None:
        data = istio(args.istio, args.release)
        (OUT / "istio.json").write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))
        print(f"istio {args.release}: {len(data['kinds'])} kinds, {len(data['schemas'])} schemas")
    data = kubernetes()
    (OUT / "kubernetes.json").write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))
    print(f"{data['client']}: {len(data['definitions'])} definitions")


if __name__ == "__main__":
    main()
