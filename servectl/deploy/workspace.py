"""The Pulumi workspace `servectl deploy` runs the platform layer in: a directory beside the stack's state
holding the platform project's settings and a copy of the stack file, and the stack selected in it.

Why a copy and not the repository's stack file: with a passphrase secrets provider, the engine writes the
stack's `encryptionsalt` into its stack file, and that salt must stay with the state it encrypted. So the
copy is refreshed from the repository on every run (the repository's config wins) but keeps its salt; the
repository's file is never written.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from servectl.engine import Toolchain, workspace_options
from stacks.preview.run import project_name

ROOT = Path(__file__).resolve().parents[2]
STATE_KEY = "model-serving:state"
SALT = "encryptionsalt"


class WorkspaceError(ValueError):
    """The stack cannot be deployed from here; the message names the file and key."""


def _state(stack: str, root: Path) -> tuple[Path, dict[str, Any]]:
    """The stack file and its `model-serving:state` block."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise WorkspaceError(f"{path}: no such stack file")
    config: dict[str, Any] = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("config") or {}
    state = config.get(STATE_KEY) or {}
    return path, state if isinstance(state, dict) else {}


def check_secrets_provider(stack: str, root: Path = ROOT) -> None:
    """The deploy encrypts the stack's secrets with a passphrase; a stack file naming another provider is an
    error naming the key, rather than its secrets silently encrypted another way than it says."""
    path, state = _state(stack, root)
    provider = str(state.get("secretsProvider") or "passphrase")
    if provider != "passphrase":
        raise WorkspaceError(
            f"{path}: {STATE_KEY}.secretsProvider is {provider}; servectl deploy uses the passphrase "
            "provider of a file backend (deploy with `pulumi up` against the stack's own backend)"
        )


def state_dir(stack: str, root: Path = ROOT) -> Path:
    """The stack's file backend directory from `model-serving:state.backend` (`file://...`)."""
    path, state = _state(stack, root)
    backend = str(state.get("backend") or "")
    if not backend.startswith("file://"):
        raise WorkspaceError(
            f"{path}: {STATE_KEY}.backend is {backend or 'unset'}; servectl deploy keeps state in a file "
            "backend: give --state DIR (or deploy with `pulumi up` against the stack's own backend)"
        )
    return Path(backend.removeprefix("file://")).expanduser()


def stack_file(stack: str, workdir: Path, root: Path = ROOT) -> Path:
    """The workspace's copy of the repository's stack file, keeping the salt of the previous copy."""
    source = root / f"Pulumi.{stack}.yaml"
    settings: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    copy = workdir / source.name
    if copy.is_file():
        previous = yaml.safe_load(copy.read_text(encoding="utf-8")) or {}
        if SALT in previous:
            settings[SALT] = previous[SALT]
    copy.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return copy


@dataclass(frozen=True)
class Target:
    """Where a deploy's state lives, which cluster it reaches, and where its stack file is."""

    stack: str
    state: Path
    kubeconfig: Path | None = None
    project_dir: Path = ROOT
    """The directory of `Pulumi.<stack>.yaml` (the repository root)."""


class Workspace(auto.LocalWorkspace):
    """A local workspace whose next command can be given extra CLI flags (`Workspace.extra_args`), through
    the Automation API's own hook for that: `preview --json` lists unchanged resources only with
    `--show-sames`, and the policy gate must see every resource of the stack, not only what changes."""

    extra_args: tuple[str, ...] = ()

    def serialize_args_for_op(self, stack_name: str) -> list[str]:
        return list(self.extra_args)


def select_stack(target: Target, program: auto.PulumiFn, toolchain: Toolchain | None = None) -> auto.Stack:
    """The platform stack in its workspace (created on first use), run by the pinned engine with `program`."""
    workdir = target.state / "workspace" / target.stack
    check_secrets_provider(target.stack, target.project_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    stack_file(target.stack, workdir, target.project_dir)
    opts = workspace_options(target.state / "backend", toolchain=toolchain or Toolchain())
    env = dict(opts.env_vars or {})
    if target.kubeconfig is not None:
        env["KUBECONFIG"] = str(target.kubeconfig.resolve())
    project = auto.ProjectSettings(name=project_name(layer="platform"), runtime="python")
    workspace = Workspace(
        work_dir=str(workdir),
        pulumi_home=opts.pulumi_home,
        env_vars=env,
        pulumi_command=opts.pulumi_command,
        project_settings=project,
        secrets_provider="passphrase",
        program=program,
    )
    return auto.Stack.create_or_select(target.stack, workspace)
