"""The receiver's configuration file (YAML): which models it retrains, from which data, with which command.

```yaml
command: [servectl, retrain]        # default; the program and its leading arguments
args: [--state, /var/lib/retrain]   # optional, appended to every run
timeout_seconds: 3600               # a run taking longer is killed and logged as failed
models:
  tabular-classifier:
    data: s3://model-bucket/training/tabular-classifier.csv
    command: [...]                  # optional, per model
    args: [...]                     # optional, per model (after the global ones)
```
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_COMMAND = ("servectl", "retrain")
DEFAULT_TIMEOUT_SECONDS = 3600.0


class ConfigError(ValueError):
    """The file cannot be used; the message names the file and the field."""


@dataclass(frozen=True, kw_only=True)
class ModelTarget:
    """How one model is retrained."""

    data: str
    """The labelled dataset's URI (a path or s3://bucket/key), passed as `--data`."""
    command: tuple[str, ...]
    """The program and its leading arguments (default `servectl retrain`)."""
    args: tuple[str, ...] = ()
    """Further arguments appended after the contract's."""


@dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    """The whole file."""

    models: dict[str, ModelTarget]
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


def _strings(value: Any, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of non-empty strings")
    return tuple(value)


def parse_config(doc: Any, source: str = "config") -> ReceiverConfig:
    """Validate a loaded document; raise ConfigError naming `source` and the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    command = _strings(doc.get("command"), f"{source}: command", DEFAULT_COMMAND)
    if not command:
        raise ConfigError(f"{source}: command: must not be empty")
    common = _strings(doc.get("args"), f"{source}: args", ())
    timeout = doc.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{source}: timeout_seconds: expected a positive number, got {timeout!r}")
    models = doc.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{source}: models: expected a non-empty mapping of model name to settings")
    targets: dict[str, ModelTarget] = {}
    for name, entry in models.items():
        where = f"{source}: models.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("data"), str) or not entry["data"]:
            raise ConfigError(f"{where}.data: expected the labelled dataset's path or s3:// URI")
        own = _strings(entry.get("command"), f"{where}.command", command)
        if not own:
            raise ConfigError(f"{where}.command: must not be empty")
        extra = _strings(entry.get("args"), f"{where}.args", ())
        targets[str(name)] = ModelTarget(data=entry["data"], command=own, args=common + extra)
    return ReceiverConfig(models=targets, timeout_seconds=float(timeout))


def load_config(path: Path) -> ReceiverConfig:
    """Read and validate the YAML (or JSON) file at `path`."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: {error}") from error
    return parse_config(doc, str(path))
