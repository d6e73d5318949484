"""Validation of Kubernetes objects: built-in kinds with kubernetes-validate, CRD kinds with the CRD
schemas the set-up fetched from the Istio, prometheus-operator, cert-manager, KEDA and External Secrets Go
modules (`make setup`, into .tools/crds)."""

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from stacks.preview.run import ROOT

KUBERNETES_VERSION = "1.33.0"
CRD_DIR = ROOT / ".tools" / "crds"
CRD_GROUPS = (".istio.io", "monitoring.coreos.com", "cert-manager.io", "keda.sh", "external-secrets.io")
"""API groups validated against the fetched CRD schemas."""


def _strict(schema: Any) -> Any:
    """Reject unknown fields where the CRD lists its properties (like `kubectl apply --validate=strict`)."""
    if isinstance(schema, dict):
        # Go's inline flags (`^(?i)...`) are not Python regexes; those few patterns are left to the API
        # server.
        out = {k: _strict(v) for k, v in schema.items() if not (k == "pattern" and "(?" in str(v))}
        if (
            "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, from every fetched CRD file."""
    files = sorted(Path(CRD_DIR).glob("*.yaml"))
    assert files, f"no CRD schemas in {CRD_DIR}: run `make setup` (target .stamps/crds)"
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _strict(schema)
    return out


def validate(obj: dict[str, Any]) -> None:
    """Raise if the object does not validate against its schema."""
    key = (obj["apiVersion"], obj["kind"])
    if "/" in obj["apiVersion"] and obj["apiVersion"].split("/")[0].endswith(CRD_GROUPS):
        schemas = crd_schemas()
        assert key in schemas, f"no published CRD schema for {key}"
        # Istio's schemas describe only spec and status; the API server checks the envelope itself.
        # (cert-manager's also list the envelope, optional, so leaving it out changes nothing.)
        body = {k: v for k, v in obj.items() if k not in {"apiVersion", "kind", "metadata"}}
        jsonschema.Draft7Validator(schemas[key]).validate(body)
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
