"""The deploy workspace: where state goes (the stack file's file:// backend, or an error naming the key) and
the stack file's copy, refreshed from the repository but keeping the salt its state was encrypted with."""

from pathlib import Path

import pytest
import yaml

from servectl.deploy.workspace import SALT, WorkspaceError, check_secrets_provider, stack_file, state_dir

STACK = """config:
  model-serving:jurisdiction: AE
  model-serving:state:
    backend: {backend}
    secretsProvider: passphrase
"""


def write_stack(root: Path, backend: str, name: str = "onprem-x") -> Path:
    path = root / f"Pulumi.{name}.yaml"
    path.write_text(STACK.format(backend=backend), encoding="utf-8")
    return path


def test_state_dir_is_the_stack_files_file_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_stack(tmp_path, "file://~/.pulumi-model-serving/onprem-x")
    assert state_dir("onprem-x", tmp_path) == tmp_path / "home" / ".pulumi-model-serving" / "onprem-x"


def test_a_cloud_backend_or_a_missing_file_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "s3://acme-state?region=me-central-1")
    with pytest.raises(WorkspaceError, match=rf"{path}: model-serving:state.backend is s3://.*give --state"):
        state_dir("onprem-x", tmp_path)
    with pytest.raises(WorkspaceError, match=r"Pulumi\.nope\.yaml: no such stack file"):
        state_dir("nope", tmp_path)


def test_the_copy_follows_the_repository_but_keeps_its_salt(tmp_path: Path) -> None:
    source = write_stack(tmp_path, "file:///state")
    workdir = tmp_path / "work"
    workdir.mkdir()
    copy = stack_file("onprem-x", workdir, tmp_path)
    assert yaml.safe_load(copy.read_text()) == yaml.safe_load(source.read_text())
    # The engine writes the salt into the copy when it creates the stack ...
    settings = yaml.safe_load(copy.read_text())
    copy.write_text(yaml.safe_dump({**settings, SALT: "v1:abc"}))
    # ... and the repository's config changes later.
    source.write_text(source.read_text().replace("AE", "EU"))
    refreshed = yaml.safe_load(stack_file("onprem-x", workdir, tmp_path).read_text())
    assert refreshed[SALT] == "v1:abc", "the salt stays with the state it encrypted"
    assert refreshed["config"]["model-serving:jurisdiction"] == "EU", "the repository's config wins"
    assert SALT not in yaml.safe_load(source.read_text()), "the repository's file is never written"


def test_a_secrets_provider_other_than_the_passphrase_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "file:///state")
    check_secrets_provider("onprem-x", tmp_path)  # passphrase: accepted
    path.write_text(
        path.read_text().replace("secretsProvider: passphrase", "secretsProvider: awskms://alias/k")
    )
    with pytest.raises(WorkspaceError, match=rf"{path}: model-serving:state.secretsProvider is awskms://"):
        check_secrets_provider("onprem-x", tmp_path)
