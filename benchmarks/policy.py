"""Policy gate timings: the shipped stacks' plans, and synthetic plans up to 10,000 resources.

Run `python benchmarks/policy.py` (or `make policy-bench`) after `make setup`. It plans the
shipped stacks with `servectl plan` (not timed), starts one local OPA server (start-up
timed apart), and prints wall times per check, including normalization and the HTTP round
trip, and how time grows with plan size. The synthetic plans repeat the eu-prod plan's
resources under new names, links intact, so they are as clean as the stack itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from policies.normalize import from_document
from policies.opa import Gate, local_server
from stacks.preview.run import layers_of, stack_names

REPO = Path(__file__).resolve().parents[1]
SIZES = (1_000, 2_500, 5_000, 10_000)
SYNTHETIC_BASE = "eu-prod.infra"


def shipped_plans(out: Path) -> dict[str, dict[str, Any]]:
    """Every shipped stack's layers' offline plans (`<stack>.<layer>`), from `servectl plan`."""
    docs = {}
    for stack in stack_names(REPO):
        for layer in layers_of(stack):
            path = out / f"{stack}.{layer}.json"
            cmd = [
                sys.executable,
                "-m",
                "servectl",
                "plan",
                "--stack",
                stack,
                "--layer",
                layer,
                "--out",
                str(path),
            ]
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
            docs[f"{stack}.{layer}"] = json.loads(path.read_text())
    return docs


def synthetic(base: dict[str, Any], size: int) -> dict[str, Any]:
    """About `size` resources: base's non-provider steps repeated, each copy's names prefixed."""
    shared = [s for s in base["steps"] if s["newState"]["type"].startswith("pulumi:")]
    body = [json.dumps(s) for s in base["steps"] if not s["newState"]["type"].startswith("pulumi:")]
    regions = sorted({p["newState"].get("inputs", {}).get("region", "") for p in shared} - {""})
    steps = list(shared)
    copy_no = 0
    while len(steps) < size:
        for original in body[: size - len(steps)]:
            # Resource names start with their region ("eu-central-1-..."); region values do not
            # end in "-", so only names (and the URNs and references built from them) change.
            text = original
            for region in regions:
                text = text.replace(f"{region}-", f"c{copy_no}-{region}-")
            steps.append(json.loads(text))
        copy_no += 1
    return {"config": base.get("config", {}), "steps": steps}


def main() -> None:
    """Print the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        plans = shipped_plans(Path(tmp))
    inputs = {stack: from_document(doc) for stack, doc in plans.items()}
    started = time.perf_counter()
    with local_server() as endpoint, Gate(endpoint, timeout=120) as gate:
        print(f"OPA server ready in {time.perf_counter() - started:.2f} s")
        gate.evaluate(next(iter(inputs.values())))  # warm-up: the first query compiles
        t0 = time.perf_counter()
        results = {stack: gate.evaluate(from_document(plans[stack])) for stack in plans}
        took = time.perf_counter() - t0
        resources = sum(r["summary"]["resources"] for r in results.values())
        denied = sum(r["summary"]["denied"] for r in results.values())
        summary = f"{resources} resources, {denied} denied"
        print(f"all {len(plans)} shipped stacks ({summary}): {took:.3f} s (budget 2 s)")
        print(f"{'resources':>10} {'seconds':>8} {'ms/1k res':>10} {'findings':>9}")
        for size in SIZES:
            doc = from_document(synthetic(plans[SYNTHETIC_BASE], size))
            t0 = time.perf_counter()
            result = gate.evaluate(doc)
            took = time.perf_counter() - t0
            n = result["summary"]["resources"]
            print(f"{n:>10} {took:>8.2f} {took / n * 1e6:>10.1f} {result['summary']['findings']:>9}")
        print("budget: 10,000 resources in 10 s (a cut-off last copy may leave a VPC without its flow log)")


if __name__ == "__main__":
    main()
