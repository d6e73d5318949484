"""Real processes for the experiment tests: the serving image on loopback with a model repository made for the
test, a real Prometheus scraping it, and one real API server for the session (`cluster`). All are always
stopped."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from servectl.experiments.kube import ApiServer
from stacks.manifests import rollout_controller
from tests.kube_api import KubeApi, kube_api, service_account_user
from tests.servectl.experiments.stack_objects import stack_model
from tests.serving_image.conftest import start_server

BUNDLED = Path(__file__).resolve().parents[3] / "serving_image" / "models" / "tabular-classifier"
MODEL = "tabular-classifier"


@dataclass(frozen=True)
class Server:
    """A running server."""

    url: str
    process: subprocess.Popen[bytes]
    repository: Path
    stderr: Path

    @property
    def config(self) -> Path:
        """The model's config.yaml."""
        return self.repository / MODEL / "config.yaml"

    def wait_for_event(self, event: str, count: int = 1, timeout: float = 20.0) -> None:
        """Wait until the server has logged `event` on stderr `count` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr.read_text().count(f'"event":"{event}"') >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"no {event} in {self.stderr}:\n{self.stderr.read_text()[-2000:]}")


def make_repository(root: Path, config: str) -> Path:
    """A model repository with the bundled classifier's versions 1 and 2 and the given config.yaml."""
    assert (BUNDLED / "2" / "model.onnx").exists(), "bundled models missing: run `make models`"
    repository = root / "models"
    for version in ("1", "2"):
        shutil.copytree(BUNDLED / version, repository / MODEL / version)
    (repository / MODEL / "config.yaml").write_text(config)
    return repository


@contextmanager
def running_server(repository: Path, logs: Path) -> Iterator[Server]:
    """The serving image on free loopback ports, ready; stopped with SIGTERM, which must exit 0.

    The experiments' load posts every answer's feedback from one caller as fast as the machine allows (on an
    idle machine past the default 500 a second after a burst of 1,000), so the per-caller feedback limit is
    raised here: these tests judge the experiment, and the limiter has its own (serving_image's tests)."""
    unlimited = {"SERVING_FEEDBACK_RATE_PER_SECOND": "1000000", "SERVING_FEEDBACK_BURST": "1000000"}
    started = start_server(repository, logs, env=unlimited)
    try:
        yield Server(started.base, started.process, repository, logs / "stderr.log")
    finally:
        code = started.stop(timeout=60)
        assert code == 0, f"server exited {code}: {started.stderr()[-2000:]}"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Where a test's processes write their logs."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


KUBE_MODEL = stack_model()
CONTROLLER = service_account_user(KUBE_MODEL.tenant, rollout_controller.name(KUBE_MODEL), "controller-token")
"""The controller's identity: a token-file user named as its ServiceAccount (no token minting here)."""


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """The API server with the model's namespace and the controller's ServiceAccount, Role and RoleBinding,
    as the stack deploys them; one per session, since it takes 10 to 30 s to start."""
    with kube_api(tmp_path_factory.mktemp("kube"), [CONTROLLER]) as api:
        admin, namespace = api.admin, KUBE_MODEL.tenant
        admin.request("POST", "api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": namespace}})  # fmt: skip
        rbac = f"apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        admin.request("POST", f"api/v1/namespaces/{namespace}/serviceaccounts",
                      rollout_controller.service_account(KUBE_MODEL))  # fmt: skip
        admin.request("POST", f"{rbac}/roles", rollout_controller.role(KUBE_MODEL))
        admin.request("POST", f"{rbac}/rolebindings", rollout_controller.role_binding(KUBE_MODEL))
        yield api


@pytest.fixture
def controller(cluster: KubeApi) -> ApiServer:
    """The controller's client: its own token, the server's CA."""
    return cluster.client(CONTROLLER.name)


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server as a process on loopback, one per test module (aws_emulator.py)."""
    from tests.servectl.experiments.aws_emulator import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """boto3 pointed at the emulator by its standard environment, the emulator emptied; no profile of the
    machine leaks in."""
    from tests.servectl.experiments.aws_emulator import reset

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "me-central-1", "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    reset(moto_url)
    return moto_url
