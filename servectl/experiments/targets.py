"""Where a model's weights live and how new ones take effect: a Pulumi stack file, or a running server.

A stack: the weights are written into `Pulumi.<stack>.yaml`; where the Pulumi CLI is installed the
Automation API runs `up`, otherwise the command to run is returned. A standalone server: the weights are
written into the model's `config.yaml` and the server re-reads it on SIGHUP, without a restart.
"""

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from servectl.experiments import weights_file
from servectl.experiments.decision import Schedule
from stacks.config import NAMESPACE, parse_config

ROOT = Path(__file__).resolve().parents[2]


class Target(Protocol):
    """Reads and applies one model's weights."""

    def weights(self) -> dict[str, int]:
        """The configured weights, version to percent."""
        ...

    def schedule(self) -> Schedule | None:
        """The model's rollout schedule, when the target configures one."""
        ...

    def apply(self, weights: dict[str, int]) -> str:
        """Write the weights and make them take effect; returns what was done, in words."""
        ...


@dataclass(frozen=True)
class StackTarget:
    """A model in a Pulumi stack file."""

    stack: str
    model: str
    root: Path = ROOT

    @property
    def path(self) -> Path:
        """The stack file."""
        return self.root / f"Pulumi.{self.stack}.yaml"

    def _model(self) -> Any:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist; stacks: {_stacks(self.root)}")
        config = yaml.safe_load(self.path.read_text())["config"]
        raw = {k.removeprefix(f"{NAMESPACE}:"): v for k, v in config.items() if k.startswith(f"{NAMESPACE}:")}
        parsed = parse_config(
            raw, stack=self.stack, source=self.path.name, aws_region=config.get("aws:region")
        )
        found = [m for m in parsed.models if m.name == self.model]
        if not found:
            raise KeyError(f"{self.path.name} has no model {self.model!r}: {[m.name for m in parsed.models]}")
        return found[0]

    def weights(self) -> dict[str, int]:
        """The stack's weights for the model."""
        return dict(self._model().variants.weights)

    def schedule(self) -> Schedule | None:
        """The stack's rollout block for the model, if it has one."""
        rollout = self._model().rollout
        if rollout is None:
            return None
        return Schedule(
            steps=rollout.steps,
            min_samples=rollout.min_samples,
            interval_seconds=rollout.interval_seconds,
            failed_checks=rollout.failed_checks,
            settle_seconds=rollout.settle_seconds,
            holdback_percent=rollout.holdback_percent,
            guard_seconds=rollout.guard_seconds,
            segments=rollout.segment_values,
        )

    def optional_metrics(self) -> frozenset[str]:
        """The feedback metrics the stack marks optional for the model (none without a rollout block)."""
        rollout = self._model().rollout
        return frozenset(rollout.optional_metrics) if rollout is not None else frozenset()

    def apply(self, weights: dict[str, int]) -> str:
        """Write the stack file; run `pulumi up` through the Automation API where the CLI exists."""
        weights_file.set_stack_weights(self.path, self.model, weights)
        written = f"wrote {_show(weights)} into {self.path.name}"
        if shutil.which("pulumi") is None:
            return f"{written}; the Pulumi CLI is not installed, apply with: pulumi up --stack {self.stack}"
        from pulumi import automation

        stack = automation.select_stack(stack_name=self.stack, work_dir=str(self.root))
        result = stack.up(on_output=print)
        return f"{written}; pulumi up: {result.summary.result}"


@dataclass(frozen=True)
class ServerTarget:
    """A model of a standalone server: its `config.yaml`, and the server process to signal."""

    repository: Path
    model: str
    pid: int | None
    pid_files: tuple[Path, ...] = ()
    """Files each holding one server's pid, written by whatever supervises the servers; read at every
    apply, so a server restarted under a new pid is still signalled (several servers, one repository)."""

    @property
    def path(self) -> Path:
        """The model's config.yaml."""
        return self.repository / self.model / "config.yaml"

    def weights(self) -> dict[str, int]:
        """The weights in the model's config.yaml."""
        doc = yaml.safe_load(self.path.read_text()) or {}
        weights = (doc.get("variants") or {}).get("weights")
        if not weights:
            raise KeyError(f"{self.path} has no variants.weights; add them to start an experiment")
        return {str(k): int(v) for k, v in weights.items()}

    def schedule(self) -> Schedule | None:
        """A server's config.yaml carries no schedule; the command's options give it."""
        return None

    def apply(self, weights: dict[str, int]) -> str:
        """Write config.yaml and send SIGHUP, so the server re-reads it; with `pid_files`, to every server."""
        weights_file.set_model_config_weights(self.path, weights)
        written = f"wrote {_show(weights)} into {self.path}"
        if self.pid is None and not self.pid_files:
            return f"{written}; send the server SIGHUP to apply them (kill -HUP <pid>)"
        done = []
        if self.pid is not None:
            os.kill(self.pid, signal.SIGHUP)
            done.append(f"sent SIGHUP to server pid {self.pid}")
        done += [_hangup(path) for path in self.pid_files]
        return f"{written}; " + "; ".join(done)


def _hangup(pid_file: Path) -> str:
    """SIGHUP the server whose pid the file holds. A server that is gone (no file, or no such process) is
    skipped, not an error: a server reads config.yaml when it starts, so one started later applies the
    weights anyway, and the window waits for every server still reporting (window.confirm)."""
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError:
        return f"no server: {pid_file} does not exist"
    except ValueError:
        raise ValueError(f"{pid_file} does not hold a pid: {pid_file.read_text()[:40]!r}") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return f"server pid {pid} (from {pid_file.name}) is gone"
    return f"sent SIGHUP to server pid {pid} (from {pid_file.name})"


def _show(weights: dict[str, int]) -> str:
    return ", ".join(f"v{v} {w}%" for v, w in weights.items())


def _stacks(root: Path) -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))
