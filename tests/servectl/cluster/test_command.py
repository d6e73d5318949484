"""`servectl cluster up|status|down` as a user runs them, against the real etcd, kube-apiserver and
kube-controller-manager.

What this proves that no mock can: the processes outlive the command that started them and are found
again by another; the kubeconfig alone reaches the API server over TLS as an admin; the controller-manager
really runs (a deleted namespace and a foreground-deleted owner disappear); `down` leaves no process; and
a failing `up` (a port taken) stops what it had started and names the cause.
"""

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from servectl.cluster.processes import Recorded, is_running
from servectl.experiments.kube import ApiServer, KubeError
from tests.servectl.cluster.conftest import client, processes_in, servectl, wait_until

pytestmark = pytest.mark.slow

DELETE_TIMEOUT = 60.0
"""The namespace controller finalizes a namespace in a few seconds (10 s measured under load 14)."""


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A control plane started by `servectl cluster up` for this module; `down` at the end, whatever
    happened (a test that brought it down already makes this a no-op)."""
    directory = tmp_path_factory.mktemp("cluster") / "state"
    done = servectl("up", "--dir", str(directory), whole_cli=True)  # as wired in servectl/cli.py
    try:
        assert done.returncode == 0, f"up failed:\n{done.stdout}\n{done.stderr}"
        yield directory
    finally:
        servectl("down", "--dir", str(directory))


def _recorded(directory: Path) -> list[Recorded]:
    state = json.loads((directory / "cluster.json").read_text())
    return [Recorded.from_json(p) for p in state["processes"]]


def _gone(api: ApiServer, path: str) -> bool:
    try:
        api.request("GET", path)
    except KubeError as error:
        return ": 404 " in str(error)
    return False


def test_up_prints_the_kubeconfig_and_status_says_running(cluster_dir: Path) -> None:
    names = [r.name for r in _recorded(cluster_dir)]
    assert names == ["etcd", "kube-apiserver", "kube-controller-manager"], names
    done = servectl("status", "--dir", str(cluster_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("running:"), done.stdout
    assert f"kubeconfig: {cluster_dir / 'kubeconfig'}" in done.stdout, done.stdout
    assert oct((cluster_dir / "kubeconfig").stat().st_mode & 0o777) == "0o600", "the kubeconfig holds a token"


def test_a_second_up_says_it_is_running_and_succeeds(cluster_dir: Path) -> None:
    before = _recorded(cluster_dir)
    done = servectl("up", "--dir", str(cluster_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("already running at https://127.0.0.1:"), done.stdout
    assert _recorded(cluster_dir) == before, "a second up must not start or record anything"


def test_the_kubeconfig_deletes_a_namespace_through_the_controller_manager(
    cluster_dir: Path, tmp_path: Path
) -> None:
    api = client(cluster_dir / "kubeconfig", tmp_path)
    assert api.url.startswith("https://127.0.0.1:"), api.url
    api.request("POST", "api/v1/namespaces", {"metadata": {"name": "short-lived"}})
    api.request("POST", "api/v1/namespaces/short-lived/configmaps", {"metadata": {"name": "settings"}})
    api.request("DELETE", "api/v1/namespaces/short-lived")
    wait_until(lambda: _gone(api, "api/v1/namespaces/short-lived"), DELETE_TIMEOUT, "namespace deleted")


def test_a_foreground_delete_takes_the_dependent_first(cluster_dir: Path, tmp_path: Path) -> None:
    api = client(cluster_dir / "kubeconfig", tmp_path)
    base = "api/v1/namespaces/default/configmaps"
    owner = api.request("POST", base, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    blocking = [{**reference, "blockOwnerDeletion": True}]
    api.request("POST", base, {"metadata": {"name": "dependent", "ownerReferences": blocking}})
    api.request("DELETE", f"{base}/owner", {"kind": "DeleteOptions", "propagationPolicy": "Foreground"})
    wait_until(lambda: _gone(api, f"{base}/owner"), DELETE_TIMEOUT, "owner deleted in the foreground")
    assert _gone(api, f"{base}/dependent"), "the owner went before its blocking dependent"


def test_status_is_half_up_when_a_process_died_and_down_stops_the_rest(cluster_dir: Path) -> None:
    records = _recorded(cluster_dir)
    kcm = next(r for r in records if r.name == "kube-controller-manager")
    os.kill(kcm.pid, signal.SIGKILL)
    wait_until(lambda: not is_running(kcm), 10, "controller-manager killed")
    half = servectl("status", "--dir", str(cluster_dir))
    assert half.returncode == 1, half.stdout + half.stderr
    assert "half up: not running: kube-controller-manager" in half.stdout, half.stdout
    refused = servectl("up", "--dir", str(cluster_dir))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "cluster down" in refused.stderr, refused.stderr
    down = servectl("down", "--dir", str(cluster_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(is_running(r) for r in records), [r for r in records if is_running(r)]
    assert processes_in(cluster_dir) == [], "processes left after down"
    assert not cluster_dir.exists(), "down leaves the state directory behind"
    stopped = servectl("status", "--dir", str(cluster_dir))
    assert (stopped.returncode, stopped.stdout.split(":")[0]) == (3, "stopped"), stopped.stdout


def test_up_on_a_taken_port_stops_etcd_and_names_the_cause(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = servectl("up", "--dir", str(directory), "--port", str(taken.getsockname()[1]))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "kube-apiserver exited during start-up" in done.stderr, done.stderr
    assert "address already in use" in done.stderr, "the log's last lines should say why"
    assert "etcd ready" in done.stderr, "etcd was started first, so stopping it is what is tested"
    assert processes_in(directory) == [], "a failed up left processes running"
    assert sorted(p.name for p in directory.iterdir()) == ["logs"], "only the logs should be kept"
    assert servectl("status", "--dir", str(directory)).returncode == 3
