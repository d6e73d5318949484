"""The model versions an smb stack's SageMaker Models read, which `servectl publish` must put in the bucket
before the full `up` (smb.yml).

    python .github/scripts/model_versions.py PLAN

Read from the gated plan (`pulumi preview --json`), not from the stack file, so the list is what CreateModel
will be asked for: each Model's data URL (`s3://<bucket>/models/<model>/<version>/`, the layout publish
writes with its default root) and its container's environment (`SERVING_MODEL_NAME`, `SERVING_MODEL_VERSION`:
the model and version the container serves) must agree, or SageMaker would copy one version and the server
call it another. Prints `<model> <version>` a line, sorted, each once (a real-time and an asynchronous
endpoint of the same version read the same prefix). A Model that disagrees, or a plan without Models, stops
here with the reason.
"""

import json
import sys
from pathlib import Path

from registry_targets import MODEL_TYPE, data_url, states

PUBLISH_ROOT = "models"
"""`servectl publish`'s key prefix (servectl/publish.py `Target.root`)."""


def versions(plan: dict[str, object]) -> list[tuple[str, str]]:
    """(model, version) of every Model in the plan, checked against its data URL."""
    found: set[tuple[str, str]] = set()
    for urn, state in states(plan).items():
        if state.get("type") != MODEL_TYPE:
            continue
        _, prefix = data_url(state)
        container = (state.get("inputs") or {}).get("primaryContainer") or {}
        environment = container.get("environment") or {}
        model, version = environment.get("SERVING_MODEL_NAME"), environment.get("SERVING_MODEL_VERSION")
        if not model or not version:
            raise SystemExit(f"{urn}: no SERVING_MODEL_NAME and SERVING_MODEL_VERSION in its environment")
        if prefix != f"{PUBLISH_ROOT}/{model}/{version}/":
            raise SystemExit(
                f"{urn}: serves {model} {version} but reads {prefix}, not {PUBLISH_ROOT}/{model}/{version}/"
            )
        found.add((str(model), str(version)))
    if not found:
        raise SystemExit("the plan has no SageMaker Model: nothing to publish")
    return sorted(found)


def main(argv: list[str]) -> None:
    """Print the versions."""
    if len(argv) != 1:
        raise SystemExit("usage: model_versions.py PLAN")
    print(
        "\n".join(f"{model} {version}" for model, version in versions(json.loads(Path(argv[0]).read_text())))
    )


if __name__ == "__main__":
    main(sys.argv[1:])
