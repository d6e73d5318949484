"""Custom resource definitions applied to a fresh API server, waited for until each is established (served),
so a client that creates a VirtualService right after `up` does not meet a 404."""

import time
from pathlib import Path
from typing import Any

import yaml

from servectl.experiments.kube import ApiServer

CRD_API = "apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ESTABLISH_TIMEOUT = 90.0
"""Some 20 Istio CRDs on a loaded 2-core machine: a few seconds; the bound is for a stuck server."""


class CrdError(RuntimeError):
    """A CRD file that cannot be applied, or a CRD never established; the message says which."""


def load(path: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in `path` (other kinds are skipped); `CrdError` naming the file."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as error:
        raise CrdError(f"{path}: cannot be read as YAML: {error}") from error
    crds = [d for d in documents if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
    if not crds:
        raise CrdError(f"{path}: holds no CustomResourceDefinition")
    return crds


def established(crd: dict[str, Any]) -> bool:
    """Whether the CRD's status has the condition Established=True."""
    conditions = crd.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def apply_crds(api: ApiServer, path: Path, timeout: float = ESTABLISH_TIMEOUT) -> list[str]:
    """Create every CRD in `path` and wait (at most `timeout` seconds in all) until each is established;
    their names."""
    crds = load(path)
    for crd in crds:
        api.request("POST", CRD_API, crd)
    deadline = time.monotonic() + timeout
    for crd in crds:
        name = crd["metadata"]["name"]
        while not established(api.request("GET", f"{CRD_API}/{name}")):
            if time.monotonic() > deadline:
                raise CrdError(f"CRD {name} not established within {timeout} s")
            time.sleep(0.2)
    return [crd["metadata"]["name"] for crd in crds]
