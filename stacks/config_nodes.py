"""The raw stack file as a tree of nodes that know their key path, and the error a bad key raises.

Apart from stacks.config so that the profile-specific parsers (stacks.config_smb) share them without an
import cycle.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A stack file key that is missing or invalid."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Node:
    """A value in the raw config with the key path that leads to it, for error messages."""

    value: Any
    path: str
    source: str

    def fail(self, reason: str) -> ConfigError:
        return ConfigError(self.source, self.path, reason)

    def optional(self, key: str) -> "Node":
        """The value under `key`, None when the key is left out or empty."""
        if not isinstance(self.value, Mapping):
            raise self.fail("must be a mapping")
        return Node(self.value.get(key), f"{self.path}.{key}", self.source)

    def child(self, key: str) -> "Node":
        """The value under `key`, which must be given."""
        node = self.optional(key)
        if node.value is None:
            raise node.fail("is required")
        return node

    def items(self) -> list["Node"]:
        if not isinstance(self.value, list):
            raise self.fail("must be a list")
        return [Node(v, f"{self.path}[{i}]", self.source) for i, v in enumerate(self.value)]

    def string(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        node = self.child(key)
        if not isinstance(node.value, str) or not node.value:
            raise node.fail("must be a non-empty string")
        if pattern is not None and not pattern.match(node.value):
            raise node.fail(f"{node.value!r} does not match {pattern.pattern}")
        return node.value

    def integer(self, key: str, low: int, high: int) -> int:
        node = self.child(key)
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            raise node.fail("must be an integer")
        if not low <= node.value <= high:
            raise node.fail(f"{node.value} is outside {low}..{high}")
        return node.value

    def strings(self, key: str) -> tuple[str, ...]:
        node = self.optional(key)
        if node.value is None:
            return ()
        values = tuple(item.value for item in node.items())
        if not all(isinstance(v, str) and v for v in values):
            raise node.fail("must be a list of non-empty strings")
        return values
