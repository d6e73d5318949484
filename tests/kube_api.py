"""A real Kubernetes control plane on loopback for the tests: the one `servectl cluster up` starts
(`servectl.cluster.controlplane`): Debian's etcd, kube-apiserver v1.34 and kube-controller-manager (built
by `make kube-apiserver kube-controller-manager`, part of `make setup`), with a self-signed serving
certificate, RBAC authorization and a static token file, and the Istio CRDs applied (mk/kubeapi.mk).

Why a real one: only the API server itself shows that a Role grants what the controller does and nothing
more, and that what it writes passes the CRD's schema. The controller-manager runs by default, so
namespace deletion, foreground deletion and garbage collection behave as on a real cluster; it adds about
half a second to start-up (`controller_manager=False` leaves it out). The rollout controller's identity is
still a token-file user named as its ServiceAccount, which RBAC matches exactly as it would a minted
token's. Everything runs in the test's directory and is stopped at the end, with bounded waits.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from servectl.cluster import processes
from servectl.cluster.controlplane import ISTIO_CRDS, TOOLS, Binaries, ClusterError, up
from servectl.cluster.crds import apply_crds
from servectl.cluster.pki import User
from servectl.cluster.state import Layout
from servectl.experiments.kube import ApiServer

__all__ = ["ADMIN_TOKEN", "ISTIO_CRDS", "KubeApi", "User", "apply_crds", "kube_api", "service_account_user"]

KUBE_APISERVER = TOOLS / "bin" / "kube-apiserver"
ADMIN_TOKEN = "admin-token"
"""Fixed so a test can write its own kubeconfig for the admin; the CLI's admin token is random."""
STOP_TIMEOUT = processes.STOP_TIMEOUT


@dataclass(frozen=True)
class KubeApi:
    """A running API server and a client per user."""

    url: str
    ca_file: Path
    tokens: dict[str, Path]
    """User name to the file holding its token (what `ApiServer` reads, as from a pod's mount)."""
    kubeconfig: Path | None = None
    """The admin's kubeconfig, as `servectl cluster up` writes it."""

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


def _token_files(root: Path, users: list[User]) -> dict[str, Path]:
    """One file per user holding its token, for `KubeApi.client`."""
    files = {}
    for user in users:
        files[user.name] = root / f"{user.name.replace(':', '_')}.token"
        files[user.name].write_text(user.token + "\n")
    return files


@contextmanager
def kube_api(root: Path, users: list[User], *, controller_manager: bool = True) -> Iterator[KubeApi]:
    """etcd, kube-apiserver and (unless told not to) kube-controller-manager in `root`, ready, with the
    Istio CRDs applied and `users` (plus an admin) in the token file; all stopped on exit."""
    binaries = Binaries.installed(controller_manager)
    try:
        binaries.check()
    except ClusterError as error:
        pytest.fail(str(error), pytrace=False)  # never skip: say what to run
    if not ISTIO_CRDS.is_file():
        pytest.fail(f"{ISTIO_CRDS} is missing: run `make kube-apiserver`", pytrace=False)
    admin = User(ADMIN_TOKEN, "admin", ("system:masters",))
    tokens = _token_files(root, [admin, *users])
    cluster = up(Layout(root), binaries, users=tuple(users), admin_token=ADMIN_TOKEN)
    try:
        yield KubeApi(cluster.url, cluster.ca_file, tokens, cluster.kubeconfig)
    finally:
        left = processes.stop(list(cluster.processes))
        assert not left, f"still running after SIGKILL: {left}"
