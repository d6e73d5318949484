"""A real Kubernetes API server on loopback for the tests: Debian's etcd and kube-apiserver v1.34 (built by
`make kube-apiserver`, part of `make setup`), with a self-signed serving certificate, RBAC authorization and
a static token file, and the Istio CRDs applied (mk/kubeapi.mk).

Why a real one: only the API server itself shows that a Role grants what the controller does and nothing
more, and that what it writes passes the CRD's schema. No kube-controller-manager runs, so nothing here may
wait on a controller: no namespace deletion, no service-account token minting (the controller's identity is
a token-file user named as its ServiceAccount, which RBAC matches exactly as it would a minted token's).
Everything runs in a temporary directory and is stopped at the end, with bounded waits.
"""

import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from servectl.experiments.kube import ApiServer
from servectl.experiments.local_prometheus import free_port

ROOT = Path(__file__).resolve().parents[1]
KUBE_APISERVER = ROOT / ".tools" / "bin" / "kube-apiserver"
ISTIO_CRDS = ROOT / ".tools" / "kube-crds" / "istio-v1.32.0.yaml"
ADMIN_TOKEN = "admin-token"
READY_TIMEOUT = 90.0
"""Start-up on a loaded 2-core machine: etcd in a second, kube-apiserver in 10 to 30."""
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class User:
    """A token-file user: its token, name and groups."""

    token: str
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class KubeApi:
    """A running API server and a client per user."""

    url: str
    ca_file: Path
    tokens: dict[str, Path]
    """User name to the file holding its token (what `ApiServer` reads, as from a pod's mount)."""

    def client(self, user: str) -> ApiServer:
        """The controller's own client, authenticated as `user`."""
        return ApiServer(self.url, self.tokens[user], self.ca_file, timeout=20)

    @property
    def admin(self) -> ApiServer:
        """A `system:masters` client, for what the platform layer would create."""
        return self.client("admin")


def service_account_user(namespace: str, name: str, token: str) -> User:
    """The user name and groups the API server gives a ServiceAccount's token."""
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
    return User(token, f"system:serviceaccount:{namespace}:{name}", groups)


def _require(path: Path, target: str) -> None:
    """Never skip: a missing tool fails the test with what to run."""
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make {target}`", pytrace=False)


def _certificates(pki: Path) -> None:
    """A self-signed serving certificate for 127.0.0.1 and the service-account signing key."""
    run = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        str(pki / "serving.key"),
        "-out",
        str(pki / "serving.crt"),
    ]
    subprocess.run(run, check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _token_file(root: Path, users: list[User]) -> dict[str, Path]:
    """The API server's token CSV (token,user,uid,"groups"), and one file per user with its token."""
    lines, files = [], {}
    for user in users:
        lines.append(f'{user.token},{user.name},{user.name},"{",".join(user.groups)}"')
        files[user.name] = root / f"{user.name.replace(':', '_')}.token"
        files[user.name].write_text(user.token + "\n")
    (root / "tokens.csv").write_text("\n".join(lines) + "\n")
    return files


@contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to `log`; SIGTERM at the end, SIGKILL if it does not exit in time."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def _etcd(root: Path) -> list[str]:
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    return [
        shutil.which("etcd") or "etcd",
        "--name",
        "default",
        "--data-dir",
        str(root / "etcd"),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"default={peer}",
    ]


def _apiserver(root: Path, etcd_url: str, port: int) -> list[str]:
    pki = root / "pki"
    return [
        str(KUBE_APISERVER),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        "--authorization-mode=RBAC",
        f"--token-auth-file={root / 'tokens.csv'}",
        "--anonymous-auth=false",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.key'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/24",
        "--endpoint-reconciler-type=none",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        f"--cert-dir={pki}",
    ]


def _ready(api: ApiServer) -> bool:
    """/readyz answers `ok` in plain text (not JSON, so not through `ApiServer.request`)."""
    token = api.token_file.read_text().strip() if api.token_file else ""
    context = ssl.create_default_context(cafile=str(api.ca_file))
    request = urllib.request.Request(f"{api.url}/readyz", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:
            return bool(answer.read() == b"ok")
    except OSError:
        return False


def _wait_ready(api: ApiServer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited {process.returncode}:\n{log.read_text()[-3000:]}")
        if _ready(api):
            return
        time.sleep(0.5)
    raise TimeoutError(f"kube-apiserver not ready in {READY_TIMEOUT}s:\n{log.read_text()[-3000:]}")


def apply_crds(api: ApiServer, path: Path) -> list[str]:
    """Create every CRD in `path` and wait until each is established; their names."""
    crds = [
        d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "CustomResourceDefinition"
    ]
    base = "apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in crds:
        api.request("POST", base, crd)
    deadline = time.monotonic() + READY_TIMEOUT
    for crd in crds:
        while not _established(api.request("GET", f"{base}/{crd['metadata']['name']}")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {crd['metadata']['name']} not established in {READY_TIMEOUT}s")
            time.sleep(0.2)
    return [crd["metadata"]["name"] for crd in crds]


def _established(crd: dict[str, Any]) -> bool:
    conditions = crd.get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@contextmanager
def kube_api(root: Path, users: list[User]) -> Iterator[KubeApi]:
    """etcd and kube-apiserver in `root`, ready, with the Istio CRDs applied and `users` (plus an admin)
    in the token file; both stopped on exit."""
    _require(KUBE_APISERVER, "kube-apiserver")
    _require(ISTIO_CRDS, "kube-apiserver")
    if shutil.which("etcd") is None:
        pytest.fail("etcd is missing: run `make setup` (Debian's etcd-server)", pytrace=False)
    (root / "pki").mkdir(parents=True)
    _certificates(root / "pki")
    tokens = _token_file(root, [User(ADMIN_TOKEN, "admin", ("system:masters",)), *users])
    etcd_args = _etcd(root)
    etcd_url = etcd_args[etcd_args.index("--listen-client-urls") + 1]
    port, log = free_port(), root / "kube-apiserver.log"
    with ExitStack() as stack:
        stack.enter_context(_process(etcd_args, root / "etcd.out"))
        process = stack.enter_context(_process(_apiserver(root, etcd_url, port), log))
        api = KubeApi(f"https://127.0.0.1:{port}", root / "pki" / "serving.crt", tokens)
        _wait_ready(api.admin, process, log)
        apply_crds(api.admin, ISTIO_CRDS)
        yield api
