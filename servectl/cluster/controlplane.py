"""Start etcd, kube-apiserver and (optionally) kube-controller-manager on 127.0.0.1, each waited for until
it answers its health check, and stop whatever was started if any step fails.

The API server runs with TLS (a self-signed certificate), RBAC, a static token file with an admin in
`system:masters`, service-account signing, and `--endpoint-reconciler-type=none` (no kubelet, so no
endpoints to reconcile). The controller-manager authenticates as the token-file user
`system:kube-controller-manager` and runs each controller under its own ServiceAccount
(`--use-service-account-credentials`), as kubeadm sets it up: the bootstrap RBAC policy then grants each
controller exactly its rights. Without it, namespace deletion and foreground deletion never finish.
"""

import shutil
import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from servectl.cluster import kubeconfig, processes
from servectl.cluster.crds import CrdError, apply_crds
from servectl.cluster.pki import ADMIN_USER, CONTROLLER_MANAGER_USER, User, new_token, write_pki, write_tokens
from servectl.cluster.state import Layout, State, remove_state, write_state
from servectl.experiments.kube import ApiServer, KubeError
from servectl.experiments.local_prometheus import free_port

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
ISTIO_CRDS = TOOLS / "kube-crds" / "istio-v1.32.0.yaml"
READY_TIMEOUT = {"etcd": 30.0, "kube-apiserver": 90.0, "kube-controller-manager": 60.0}
"""Start-up on a loaded 2-core machine: etcd in a second, kube-apiserver in 10 to 30, the
controller-manager in a few; the bounds are for a process that hangs."""
PROBE_TIMEOUT = 5.0

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """A step of `up` failed; the message names the process or file and the reason."""


@dataclass(frozen=True)
class Binaries:
    """The programs to run; `controller_manager` None runs the API server without it."""

    etcd: Path
    apiserver: Path
    controller_manager: Path | None

    @classmethod
    def installed(cls, controller_manager: bool = True) -> "Binaries":
        """Debian's etcd from PATH and the Kubernetes binaries `make setup` builds into .tools/bin."""
        etcd = shutil.which("etcd")
        kcm = TOOLS / "bin" / "kube-controller-manager"
        return cls(
            Path(etcd) if etcd else Path("/usr/bin/etcd"),
            TOOLS / "bin" / "kube-apiserver",
            kcm if controller_manager else None,
        )

    def check(self) -> None:
        """`ClusterError` saying what to run when a binary is missing, before anything starts."""
        wanted = [(self.etcd, "make setup (Debian's etcd-server)"), (self.apiserver, "make kube-apiserver")]
        if self.controller_manager is not None:
            wanted.append((self.controller_manager, "make kube-controller-manager"))
        for path, remedy in wanted:
            if not (path.is_file() and path.stat().st_mode & 0o111):
                raise ClusterError(f"{path} is missing or not executable: run `{remedy}`")


@dataclass(frozen=True)
class Cluster:
    """A running control plane."""

    url: str
    kubeconfig: Path
    ca_file: Path
    admin_token_file: Path
    processes: tuple[processes.Recorded, ...]

    @property
    def admin(self) -> ApiServer:
        """A `system:masters` client."""
        return ApiServer(self.url, self.admin_token_file, self.ca_file, timeout=20)


@dataclass
class Ports:
    """Free loopback ports, one per listener, picked when the control plane is laid out."""

    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)


def etcd_args(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """etcd on loopback, one member, data in the state directory."""
    client, peer = f"http://127.0.0.1:{ports.etcd_client}", f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(binary),
        *("--name", "default", "--data-dir", str(layout.etcd_data)),
        *("--listen-client-urls", client, "--advertise-client-urls", client),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", f"default={peer}"),
    ]


def apiserver_args(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """kube-apiserver on 127.0.0.1 with TLS, RBAC and the token file; no anonymous access. Privileged
    containers are allowed, as on EKS (the Istio CNI node agent needs them): refusing them is the
    platform's admission policies' job in model namespaces, which the tests must see do it."""
    pki = layout.pki
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        "--authorization-mode=RBAC",
        f"--token-auth-file={pki.tokens}",
        "--anonymous-auth=false",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki.service_account_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--service-cluster-ip-range=10.96.0.0/24",
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        f"--cert-dir={pki.root}",
    ]


def controller_manager_args(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """kube-controller-manager on 127.0.0.1, serving its health check with the same certificate."""
    pki, config = layout.pki, layout.controller_manager_kubeconfig
    return [
        str(binary),
        f"--kubeconfig={config}",
        f"--authentication-kubeconfig={config}",
        f"--authorization-kubeconfig={config}",
        # The API server has no client CA (tokens only), so there is no extension-apiserver-authentication
        # ConfigMap to look one up in: without this the controller-manager logs an error every second.
        "--authentication-skip-lookup=true",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.serving_cert}",
        "--profiling=false",
    ]


def _get(url: str, ca_file: Path | None = None, token: str | None = None) -> bytes | None:
    """The body of a GET, or None if it fails in any way (a probe, not a client)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - URLs built here, loopback only
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT, context=context) as answer:  # noqa: S310
            body: bytes = answer.read()
            return body
    except OSError:
        return None


def apiserver_ready(url: str, ca_file: Path, token: str) -> bool:
    """/readyz answers `ok` (plain text) once etcd is reached and the post-start hooks are done."""
    return _get(f"{url}/readyz", ca_file, token) == b"ok"


def _wait(record: processes.Recorded, probe: Callable[[], bool]) -> float:
    """Poll `probe` until it holds; seconds taken. `ClusterError` with the log's tail if the process exits
    or the bound passes."""
    started, timeout = time.monotonic(), READY_TIMEOUT[record.name]
    while time.monotonic() - started < timeout:
        if not processes.is_running(record):
            raise ClusterError(f"{record.name} exited during start-up; {_log(record)}")
        if probe():
            return time.monotonic() - started
        time.sleep(0.3)
    raise ClusterError(f"{record.name} not ready within {timeout} s; {_log(record)}")


def _log(record: processes.Recorded) -> str:
    return f"{record.log}, last lines:\n{processes.tail(record.log)}"


def _quiet(_: str) -> None:
    """The default progress sink: say nothing."""


def _write_credentials(layout: Layout, url: str, admin_token: str, users: tuple[User, ...]) -> None:
    """Certificates and keys, the token file (admin, controller-manager, `users`) and both kubeconfigs."""
    write_pki(layout.pki)
    kcm_token = new_token()
    admin = User(admin_token, ADMIN_USER, ("system:masters",))
    write_tokens(layout.pki, [admin, User(kcm_token, CONTROLLER_MANAGER_USER), *users])
    ca = layout.pki.serving_cert.read_bytes()
    kubeconfig.write(layout.kubeconfig, kubeconfig.build(url, ca, ADMIN_USER, admin_token))
    kcm_config = kubeconfig.build(url, ca, CONTROLLER_MANAGER_USER, kcm_token)
    kubeconfig.write(layout.controller_manager_kubeconfig, kcm_config)
    kubeconfig.write_private(layout.admin_token, admin_token + "\n")


class _Starter:
    """Starts the processes one at a time, rewriting the state file after each."""

    def __init__(self, layout: Layout, url: str) -> None:
        self.layout, self.url = layout, url
        self.records: list[processes.Recorded] = []

    def start(self, name: str, args: list[str]) -> processes.Recorded:
        record = processes.start(name, args, self.layout.logs / f"{name}.log")
        self.records.append(record)
        write_state(self.layout, State(self.url, self.layout.kubeconfig, tuple(self.records)))
        return record


def _etcd_healthy(port: int) -> bool:
    return _get(f"http://127.0.0.1:{port}/health") in (b'{"health":"true"}', b'{"health":"true","reason":""}')


def _start_all(
    starter: _Starter, binaries: Binaries, ports: Ports, crds: Path | None, progress: Progress
) -> None:
    """etcd, kube-apiserver, the CRDs, kube-controller-manager: each waited for before the next."""
    layout, url = starter.layout, starter.url
    etcd = starter.start("etcd", etcd_args(binaries.etcd, layout, ports))
    progress(f"etcd ready in {_wait(etcd, lambda: _etcd_healthy(ports.etcd_client)):.1f} s")
    apiserver = starter.start("kube-apiserver", apiserver_args(binaries.apiserver, layout, ports))
    token, ca = layout.admin_token.read_text().strip(), layout.pki.serving_cert
    progress(
        f"kube-apiserver ready in {_wait(apiserver, lambda: apiserver_ready(url, ca, token)):.1f} s at {url}"
    )
    if crds is not None:
        names = apply_crds(ApiServer(url, layout.admin_token, ca, timeout=20), crds)
        progress(f"{len(names)} CRDs established from {crds}")
    if binaries.controller_manager is not None:
        args = controller_manager_args(binaries.controller_manager, layout, ports)
        kcm = starter.start("kube-controller-manager", args)
        health = f"https://127.0.0.1:{ports.controller_manager}/healthz"
        progress(f"kube-controller-manager ready in {_wait(kcm, lambda: _get(health, ca) == b'ok'):.1f} s")


def _stopped(starter: _Starter, error: BaseException) -> BaseException:
    """Stop what `up` started, remove its files but the logs, and say so in the error to raise (a
    `ClusterError` for the failures `up` expects; anything else, such as Ctrl-C, unchanged)."""
    left = processes.stop(starter.records)
    if left:
        note = f" (still running after SIGKILL: {[r.pid for r in left]}; state kept for `down`)"
    else:
        # Nothing runs: only the logs are worth keeping, and a second `up` may start afresh.
        remove_state(starter.layout, keep=("logs",))
        note = f" (logs kept in {starter.layout.logs})"
    if isinstance(error, (CrdError, KubeError, OSError, ValueError)):
        return ClusterError(f"{type(error).__name__}: {error}{note}")
    if isinstance(error, ClusterError):
        return ClusterError(f"{error}{note}")
    return error


def up(
    layout: Layout,
    binaries: Binaries,
    *,
    users: tuple[User, ...] = (),
    admin_token: str | None = None,
    port: int | None = None,
    crds: Path | None = ISTIO_CRDS,
    progress: Progress = _quiet,
) -> Cluster:
    """Start the control plane in `layout.root` and wait until it is ready; stop all it started and raise
    `ClusterError` (what failed, and the log's tail) if any step fails. The processes outlive the caller."""
    binaries.check()
    if crds is not None and not crds.is_file():
        raise ClusterError(f"{crds} is missing: run `make kube-apiserver`")
    layout.logs.mkdir(parents=True, exist_ok=True)
    ports = Ports()
    ports.apiserver = port or ports.apiserver
    url = f"https://127.0.0.1:{ports.apiserver}"
    starter = _Starter(layout, url)
    try:
        _write_credentials(layout, url, admin_token or new_token(), users)
        _start_all(starter, binaries, ports, crds, progress)
    except BaseException as error:
        failure = _stopped(starter, error)
        if failure is error:
            raise
        raise failure from error
    return Cluster(
        url, layout.kubeconfig, layout.pki.serving_cert, layout.admin_token, tuple(starter.records)
    )
