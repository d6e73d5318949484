"""The environment every run of the real Pulumi engine gets: the pinned CLI and Kubernetes provider that
`make setup` builds into .tools (mk/pulumi.mk), and nothing fetched at run time.

Why one place: a real-engine run that quietly picked up another `pulumi` on PATH, downloaded a plugin, or
wrote state to a service would test something other than what the project pins. So the CLI is called by
its path, the provider comes only from the plugin directory under .tools (ambient plugins on PATH are
ignored, so the SDK's requested version must match the one built, or the run fails), plugin acquisition
and the update check are off, and state goes to a file backend the caller names.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pulumi import automation as auto

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"
PULUMI_VERSION = "3.274.1"
"""What mk/pulumi.mk builds; the Python SDK pinned in constraints.txt may be older (the CLI is compatible)."""
KUBERNETES_PROVIDER_VERSION = "4.25.0"
"""The provider plugin mk/pulumi.mk installs, and the pulumi-kubernetes SDK release constraints.txt pins."""
PASSPHRASE_VARIABLES = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")


class EngineError(RuntimeError):
    """The real engine cannot run here; the message says what is missing and what to run."""


@dataclass(frozen=True)
class Toolchain:
    """Where the pinned engine and its plugin directory are (under .tools unless a test says otherwise)."""

    tools: Path = TOOLS

    @property
    def bin_dir(self) -> Path:
        """The pinned binaries; first on every engine run's PATH."""
        return self.tools / "bin"

    @property
    def pulumi(self) -> Path:
        """The Pulumi CLI, which the Automation API drives."""
        return self.bin_dir / "pulumi"

    @property
    def home(self) -> Path:
        """PULUMI_HOME: the plugin directory the provider is installed in."""
        return self.tools / "pulumi-home"

    @property
    def kubernetes_provider(self) -> Path:
        """The provider binary as `pulumi plugin install --file` placed it."""
        plugin = f"resource-kubernetes-v{KUBERNETES_PROVIDER_VERSION}"
        return self.home / "plugins" / plugin / "pulumi-resource-kubernetes"

    def check(self) -> None:
        """Raise `EngineError` naming each missing file and `make setup`, which builds them."""
        missing = [str(p) for p in (self.pulumi, self.kubernetes_provider) if not os.access(p, os.X_OK)]
        if missing:
            raise EngineError(
                f"the pinned Pulumi engine is not built: {', '.join(missing)} missing; run `make setup` "
                "(mk/pulumi.mk builds the CLI and the Kubernetes provider into .tools)"
            )


def passphrase_env(passphrase: str | None, base: Mapping[str, str]) -> dict[str, str]:
    """The secrets passphrase of the file backend's stacks: the caller's, else the one `base` already sets.

    A file backend encrypts config secrets with it; guessing one (an empty default) would encrypt real
    secrets with a known key, so with neither it is an error.
    """
    if passphrase is not None:
        return {"PULUMI_CONFIG_PASSPHRASE": passphrase}
    found = {name: base[name] for name in PASSPHRASE_VARIABLES if name in base}
    if not found:
        raise EngineError(
            "no secrets passphrase: set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE "
            "(the file backend encrypts the stack's secrets with it)"
        )
    return found


def engine_env(
    backend_dir: Path,
    passphrase: str | None = None,
    toolchain: Toolchain = Toolchain(),
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables of a real-engine run whose state lives in `backend_dir` (created if missing).

    `base` (default: this process's environment) supplies PATH's tail and an existing passphrase.
    """
    toolchain.check()
    base = os.environ if base is None else base
    secrets = passphrase_env(passphrase, base)  # refused before anything is created
    backend_dir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(toolchain.bin_dir), base.get("PATH", "")) if p)
    return {
        "PATH": path,
        "PULUMI_HOME": str(toolchain.home),
        "PULUMI_BACKEND_URL": backend_dir.resolve().as_uri(),
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        **secrets,
    }


def workspace_options(
    backend_dir: Path, passphrase: str | None = None, toolchain: Toolchain = Toolchain()
) -> auto.LocalWorkspaceOptions:
    """Automation API options for an inline program run by the pinned CLI with `engine_env`'s variables."""
    env = engine_env(backend_dir, passphrase, toolchain)
    command = auto.PulumiCommand(root=str(toolchain.tools))  # .tools/bin/pulumi, its version checked
    return auto.LocalWorkspaceOptions(pulumi_home=str(toolchain.home), env_vars=env, pulumi_command=command)
