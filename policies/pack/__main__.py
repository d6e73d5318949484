"""Entry point Pulumi runs for `pulumi preview --policy-pack policies/pack`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# The pack runs in its own virtualenv; the normalizer and OPA runner come from this repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy

from policies.opa import Endpoint
from policies.pack.gate import validate


def _validate(args: Any, report_violation: Any) -> None:
    url = os.environ.get("POLICY_OPA_URL")
    validate(args.resources, report_violation, opa_url=Endpoint.parse(url) if url else None)


PolicyPack(
    name="model-serving-gate",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        StackValidationPolicy(
            name="model-serving-gate",
            description="Residency and security rules in Rego (policies/), evaluated by OPA.",
            validate=_validate,
        )
    ],
)
