"""The kubeconfig round-trips, and a broken one is refused naming the file and the key."""

from pathlib import Path

import pytest
import yaml

from servectl.cluster.kubeconfig import Credentials, KubeconfigError, build, read, write

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_what_is_written_reads_back(tmp_path: Path) -> None:
    path = write(tmp_path / "kubeconfig", build("https://127.0.0.1:6443", CA, "admin", "secret"))
    assert read(path) == Credentials("https://127.0.0.1:6443", CA, "secret")
    assert path.stat().st_mode & 0o777 == 0o600, "the kubeconfig holds a token"


def _broken(config: dict[str, object], edit: str) -> dict[str, object]:
    if edit == "no current context":
        del config["current-context"]
    elif edit == "no token":
        config["users"] = [{"name": "admin", "user": {}}]
    elif edit == "bad CA":
        cluster = {"server": "x", "certificate-authority-data": "%%"}
        config["clusters"] = [{"name": "servectl-local", "cluster": cluster}]
    elif edit == "unknown cluster":
        config["contexts"] = [{"name": "servectl-local", "context": {"cluster": "other", "user": "admin"}}]
    return config


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("no current context", "current-context is missing"),
        ("no token", r"users\[admin\].token is missing"),
        ("bad CA", r"clusters\[servectl-local\].certificate-authority-data"),
        ("unknown cluster", "`clusters` has no entry named 'other'"),
    ],
)
def test_a_broken_kubeconfig_names_the_key(tmp_path: Path, edit: str, message: str) -> None:
    config = _broken(build("https://127.0.0.1:6443", CA, "admin", "secret"), edit)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeconfigError, match=message) as caught:
        read(path)
    assert str(path) in str(caught.value), "the error names the file"


@pytest.mark.parametrize("text", ["just a string", "a: [unclosed"])
def test_not_a_kubeconfig_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(KubeconfigError, match=str(path)):
        read(path)
