"""The pre-flight gate of a deploy: `servectl policy check` on the real engine's preview document."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GATE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Verdict:
    """What the gate said about one preview: its exit code (0 pass, 1 denied, 2 could not check) and text."""

    code: int
    report: dict[str, Any]
    log: str

    @property
    def denied(self) -> list[dict[str, Any]]:
        """The findings that stop the deploy (not waived)."""
        return [f for f in self.report.get("findings", []) if not f.get("waived")]

    def summary(self) -> str:
        """The gate's counts, waivers included, and any override that loosens the policy data (an active
        waiver or exception is reported, never hidden)."""
        counts = self.report.get("summary", {})
        found, denied, waived = (counts.get(k, "?") for k in ("findings", "denied", "waived"))
        exceptions = "".join(f"; active exception: {e}" for e in counts.get("exceptions", []))
        return f"{found} findings, {denied} denied, {waived} waived{exceptions}"

    def lines(self) -> list[str]:
        """One line per finding that stops the deploy, or why the gate could not decide."""
        if self.code == 2 or not self.report:
            return [f"the policy gate could not check the preview: {self.log.strip()[-400:]}"]
        return [f"{f['id']} {f['severity']}: {f['message']}" for f in self.denied]


def check(preview: Path, out: Path, project_dir: Path = ROOT, overrides: Path | None = None) -> Verdict:
    """Run the gate (it starts its own OPA server) on `preview`, with the stack files of `project_dir` and an
    organisation override file (`overrides`: e.g. waivers); the report is written to `out`."""
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "servectl", "policy", "check", str(preview.resolve()), "--format",
               "json", "--out", str(out.resolve()), "--project-dir", str(project_dir.resolve()),
               *(["--data", str(overrides.resolve())] if overrides else [])]  # fmt: skip
    # From the repository root: the gate reads the stack files and the pinned OPA there.
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=GATE_TIMEOUT, check=False, cwd=ROOT
    )
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    return Verdict(code=done.returncode if report else 2, report=report, log=done.stdout + done.stderr)
