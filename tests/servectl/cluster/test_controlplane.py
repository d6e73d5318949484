"""The control plane's flags and its failure paths, on the real binaries: a missing binary is refused
before anything starts, a failure after etcd and kube-apiserver are up stops both, and without the
controller-manager a deleted namespace never goes (why `up` runs it; the end-to-end test shows it going).
"""

import time
from pathlib import Path

import pytest

from servectl.cluster import processes
from servectl.cluster.controlplane import (
    Binaries,
    ClusterError,
    Ports,
    apiserver_args,
    controller_manager_args,
    etcd_args,
    up,
)
from servectl.cluster.state import Layout
from tests.servectl.cluster.conftest import processes_in

TERMINATING_WAIT = 8.0
"""With the controller-manager the namespace is gone in a few seconds (test_command); without it, it
must still be there after this long."""


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)


def test_every_process_listens_on_loopback_only(tmp_path: Path) -> None:
    layout, ports, binary = Layout(tmp_path), Ports(), Path("/bin/true")
    etcd = etcd_args(binary, layout, ports)
    urls = [etcd[i + 1] for i, a in enumerate(etcd) if a.endswith("-urls")]
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls), urls
    for args in (apiserver_args(binary, layout, ports), controller_manager_args(binary, layout, ports)):
        assert _flags(args)["bind-address"] == "127.0.0.1", args


def test_the_api_server_needs_tls_and_a_token_and_authorizes_with_rbac(tmp_path: Path) -> None:
    flags = _flags(apiserver_args(Path("/bin/true"), Layout(tmp_path), Ports()))
    expected = {
        "anonymous-auth": "false",
        "authorization-mode": "RBAC",
        "endpoint-reconciler-type": "none",
        "token-auth-file": str(tmp_path / "pki" / "tokens.csv"),
        "tls-cert-file": str(tmp_path / "pki" / "serving.crt"),
    }
    assert {k: flags.get(k) for k in expected} == expected


def test_each_controller_runs_under_its_own_service_account(tmp_path: Path) -> None:
    flags = _flags(controller_manager_args(Path("/bin/true"), Layout(tmp_path), Ports()))
    assert flags["use-service-account-credentials"] == "true"
    assert flags["service-account-private-key-file"] == str(tmp_path / "pki" / "sa.key")


def test_the_installed_binaries_pass_the_check() -> None:
    Binaries.installed().check()


@pytest.mark.parametrize("what", ["missing", "not executable"])
def test_a_missing_binary_is_refused_before_anything_starts(tmp_path: Path, what: str) -> None:
    kcm = tmp_path / "kube-controller-manager"
    if what == "not executable":
        kcm.write_text("#!/bin/sh\n")
    binaries = Binaries(Binaries.installed().etcd, Binaries.installed().apiserver, kcm)
    directory = tmp_path / "state"
    with pytest.raises(ClusterError, match=f"{kcm} is missing or not executable: run `make kube-controller-"):
        up(Layout(directory), binaries)
    assert not directory.exists(), "nothing is written before the check"


@pytest.mark.slow
def test_a_failure_after_the_api_server_is_up_stops_it_and_etcd(tmp_path: Path) -> None:
    bad = tmp_path / "bad-crds.yaml"
    # A CRD with no spec: the API server refuses it (422), after etcd and kube-apiserver are up.
    bad.write_text("kind: CustomResourceDefinition\napiVersion: apiextensions.k8s.io/v1\nmetadata: {name: x}")
    directory = tmp_path / "state"
    with pytest.raises(ClusterError) as caught:
        up(Layout(directory), Binaries.installed(), crds=bad)
    message = str(caught.value)
    assert "customresourcedefinitions: 422" in message, message
    assert processes_in(directory) == [], "etcd or kube-apiserver left running"
    assert sorted(p.name for p in (directory / "logs").iterdir()) == ["etcd.log", "kube-apiserver.log"]
    assert sorted(p.name for p in directory.iterdir()) == ["logs"], "only the logs are kept"


@pytest.mark.slow
def test_without_the_controller_manager_a_deleted_namespace_stays(tmp_path: Path) -> None:
    cluster = up(Layout(tmp_path / "state"), Binaries.installed(controller_manager=False), crds=None)
    try:
        api = cluster.admin
        api.request("POST", "api/v1/namespaces", {"metadata": {"name": "stuck"}})
        api.request("DELETE", "api/v1/namespaces/stuck")
        time.sleep(TERMINATING_WAIT)
        namespace = api.request("GET", "api/v1/namespaces/stuck")
        assert namespace["status"]["phase"] == "Terminating", namespace["status"]
    finally:
        assert processes.stop(list(cluster.processes)) == []
