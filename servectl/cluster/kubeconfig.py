"""The kubeconfig a client (kubectl, the Pulumi Kubernetes provider, `servectl deploy`) uses to reach the
local control plane, and a reader for the single-cluster, token-authenticated kind this package writes.

The CA is embedded (`certificate-authority-data`) rather than named by path, so the file still works when
copied elsewhere; it holds a bearer token, so it is written owner-readable only.
"""

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "servectl-local"


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used; the message names the file, the key and why."""


@dataclass(frozen=True)
class Credentials:
    """What a client needs: the server's URL, the CA that signed its certificate, a bearer token."""

    server: str
    ca_pem: bytes
    token: str


def build(server: str, ca_pem: bytes, user: str, token: str, name: str = CONTEXT) -> dict[str, Any]:
    """A kubeconfig with one cluster, one token user and the context joining them (the current one)."""
    ca = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }


def write_private(path: Path, text: str) -> Path:
    """`text` at `path`, created owner-readable only before anything is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # O_CREAT's mode does not apply to a file that already existed
        out.write(text)
    return path


def write(path: Path, config: dict[str, Any]) -> Path:
    """`config` as YAML at `path`, owner-readable only (it holds a token)."""
    return write_private(path, yaml.safe_dump(config, sort_keys=False))


def _named(path: Path, config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    entries = config.get(section)
    if not isinstance(entries, list):
        raise KubeconfigError(f"{path}: `{section}` is missing or not a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section.removesuffix("s"))
            if isinstance(body, dict):
                return body
    raise KubeconfigError(f"{path}: `{section}` has no entry named {name!r}")


def _field(path: Path, body: dict[str, Any], key: str, where: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise KubeconfigError(f"{path}: {where}.{key} is missing or empty")
    return value


def read(path: Path) -> Credentials:
    """The current context's server, CA and token; `KubeconfigError` naming the key that is wrong."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise KubeconfigError(f"{path}: cannot be read as YAML: {error}") from error
    if not isinstance(config, dict):
        raise KubeconfigError(f"{path}: not a kubeconfig (the top level is not a mapping)")
    current = config.get("current-context")
    if not isinstance(current, str) or not current:
        raise KubeconfigError(f"{path}: current-context is missing")
    context = _named(path, config, "contexts", current)
    cluster_name = _field(path, context, "cluster", f"contexts[{current}]")
    user_name = _field(path, context, "user", f"contexts[{current}]")
    cluster = _named(path, config, "clusters", cluster_name)
    user = _named(path, config, "users", user_name)
    ca_data = _field(path, cluster, "certificate-authority-data", f"clusters[{cluster_name}]")
    try:
        ca_pem = base64.b64decode(ca_data, validate=True)
    except binascii.Error as error:
        raise KubeconfigError(
            f"{path}: clusters[{cluster_name}].certificate-authority-data: {error}"
        ) from error
    server = _field(path, cluster, "server", f"clusters[{cluster_name}]")
    return Credentials(server, ca_pem, _field(path, user, "token", f"users[{user_name}]"))
