"""The users' catalog: where a model's V2 metadata comes from (the target, or the profile's documents).

loadtests.users imports locust, which patches the standard library with gevent when it is imported, so the
catalog runs in a process of its own here (as under `servectl loadtest`), never in pytest's.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.profiles import BUNDLED_PROFILES
from serving_image.runtime import PLATFORM, OnnxModel

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "serving_image" / "models"
SHIPPED = BUNDLED_PROFILES.parent / "metadata" / "tabular-classifier.json"
CLOSED = "http://127.0.0.1:9"
"""Nothing listens here: a metadata request would fail."""


def metadata(profile: str) -> tuple[int, str]:
    """`Catalog.metadata` of tabular-classifier under `profile`, against the closed port, in a fresh process:
    (exit code, its JSON or the error's type)."""
    code = (
        "import locust  # noqa: F401  (first: it patches the standard library)\nimport json, sys\n"
        "from loadtests.profiles import load_profile\n"
        "from loadtests.users import Catalog\n"
        f"Catalog.configure(load_profile({profile!r}), None)\n"
        "try:\n"
        f"    print(json.dumps(Catalog.metadata({CLOSED!r}, 'tabular-classifier')))\n"
        "except OSError as error:\n"
        "    sys.exit(type(error).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    return result.returncode, (result.stdout or result.stderr).strip()


def test_metadata_from_the_profiles_documents_without_asking_the_target() -> None:
    code, out = metadata("smb-smoke")
    assert code == 0, out
    assert json.loads(out) == json.loads(SHIPPED.read_text()), "the shipped document, not a request"


def test_metadata_from_the_target_without_documents() -> None:
    code, out = metadata("deploy-smoke")
    assert code != 0 and "Error" in out.splitlines()[-1], (
        f"the target was asked (and is closed): {code} {out}"
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_shipped_metadata_is_what_the_bundled_model_declares(version: str) -> None:
    """The document stands in for `GET /v2/models/tabular-classifier`: its tensors must be the ones the
    served graph has (the server reads them from the ONNX file the same way), for every version."""
    shipped = json.loads(SHIPPED.read_text())
    model = OnnxModel(REPOSITORY / "tabular-classifier" / version / "model.onnx", intra_op_threads=1)
    assert shipped["platform"] == PLATFORM and version in shipped["versions"], shipped
    assert shipped["inputs"] == [spec.metadata() for spec in model.inputs], "inputs drifted from the model"
    assert shipped["outputs"] == [spec.metadata() for spec in model.outputs], "outputs drifted from the model"
