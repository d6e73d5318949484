"""The built wheel (what the Dockerfile's non-editable `pip install .` installs) carries the feature
repository's definitions and config, and none of its generated data: the retrain image's CronJob runs
`servectl features apply` from the package's own `serving_image/feature_repo` (docs/features.md)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from serving_image.features import repository

ROOT = Path(__file__).resolve().parents[2]
REPO_IN_WHEEL = "serving_image/feature_repo/"
SHIPPED = (f"{REPO_IN_WHEEL}definitions.py", f"{REPO_IN_WHEEL}feature_store.yaml")
PACKAGE_DATA = '"feature_repo/*.py", "feature_repo/feature_store.yaml"'


def source_tree(destination: Path) -> Path:
    """The parts of the checkout a wheel is built from, with generated feature data present in it (as on a
    machine after `make setup`) so the test sees that it stays out; the built models are left behind."""
    destination.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    for package in ("serving_image", "servectl"):
        shutil.copytree(
            ROOT / package,
            destination / package,
            ignore=shutil.ignore_patterns("__pycache__", "models", "data", ".build-*"),
        )
    repository.write_data(destination / "serving_image" / "feature_repo" / repository.DATA_DIR)
    return destination


def wheel_names(source: Path, out: Path) -> list[str]:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
         str(source)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = out.glob("model_serving-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.mark.slow
def test_the_wheel_carries_the_feature_repository_and_not_its_data(tmp_path: Path) -> None:
    source = source_tree(tmp_path / "src")
    assert (source / "serving_image/feature_repo/data" / repository.MEASUREMENTS_FILE).is_file()
    names = wheel_names(source, tmp_path / "wheel")
    for shipped in SHIPPED:
        assert shipped in names, f"{shipped} is not in the wheel"
    data = [n for n in names if n.startswith(f"{REPO_IN_WHEEL}data/")]
    assert data == [], f"generated data in the wheel: {data}"
    installed = tmp_path / "installed"
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))) as archive:
        archive.extractall(installed, members=[n for n in names if n.startswith(REPO_IN_WHEEL)])
    kinds = sorted(type(o).__name__ for o in repository.definitions(installed / REPO_IN_WHEEL))
    assert kinds == [
        "Entity",
        "FeatureService",
        "FeatureService",
        "FeatureService",
        "FeatureView",
        "FileSource",
    ]
    repository.open_store(installed / REPO_IN_WHEEL)  # its feature_store.yaml is one Feast reads


@pytest.mark.slow
def test_without_the_package_data_the_config_is_left_out(tmp_path: Path) -> None:
    """The case the first test guards against: the definitions are found as a namespace package's module,
    but the config beside them is not a module, so without package data a wheel has no feature_store.yaml."""
    source = source_tree(tmp_path / "src")
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    assert PACKAGE_DATA in text, "pyproject's package data changed; update this test"
    pyproject.write_text(text.replace(f", {PACKAGE_DATA}", ""))
    names = wheel_names(source, tmp_path / "wheel")
    assert f"{REPO_IN_WHEEL}feature_store.yaml" not in names, "the config came along without package data"
