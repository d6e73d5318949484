"""Reading the load tests' YAML files: every key is known and every value checked, or a `ConfigError`
names the file, the key and what is wrong with it (the command line turns that into exit code 2)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and the key."""


def load_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


def mapping(value: object, where: str) -> Mapping[str, Any]:
    """`value` as a mapping with string keys."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}: expected a mapping with string keys, got {value!r}")
    return value


def check_keys(value: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuse any key not in `allowed`."""
    for key in value:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {', '.join(sorted(allowed))}")


def number(value: object, where: str, *, minimum: float = 0.0, integer: bool = False) -> float:
    """A number (not a bool) at least `minimum`; whole if `integer`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: must be at least {minimum:g}, got {value!r}")
    if integer and value != int(value):
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    return float(value)
