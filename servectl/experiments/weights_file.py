"""Rewriting a model's `variants.weights` in a YAML file in place, keeping every comment and the key order.

ruamel.yaml is not a dependency of this project, so the edit is surgical: only the lines of the one weights
mapping change, in the style they were written (block or flow), and the result is parsed again and must
equal the original document with only those weights replaced; otherwise nothing is written.
"""

import re
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml

_KEY = re.compile(r"^(?P<indent>\s*)(?:-\s+)?(?P<key>[\"']?[\w:.-]+[\"']?)\s*:(?P<rest>.*)$")
_ENTRY = re.compile(r"^(?P<indent>\s*)(?P<q>[\"']?)(?P<version>\d+)(?P=q)\s*:\s*(?P<value>\d+)(?P<tail>.*)$")


class WeightsFileError(ValueError):
    """The file has no weights block where expected, or the edit would change anything else."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The index after the last line more indented than `indent` following `start` (blank lines kept)."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    return end


def _find_key(lines: list[str], key: str, lo: int, hi: int) -> int:
    for i in range(lo, hi):
        match = _KEY.match(lines[i])
        if match and match["key"].strip("\"'") == key:
            return i
    raise WeightsFileError(f"no `{key}:` between lines {lo + 1} and {hi}")


def _flow(weights: dict[str, int]) -> str:
    return "{" + ", ".join(f'"{v}": {w}' for v, w in weights.items()) + "}"


def _rewrite(lines: list[str], at: int, weights: dict[str, int]) -> list[str]:
    line = lines[at]
    head, _, rest = line.partition("weights:")
    value, hash_, comment = rest.partition("#")
    if value.strip():  # flow style on one line
        tail = f"  #{comment}" if hash_ else ""
        return [*lines[:at], f"{head}weights: {_flow(weights)}{tail.rstrip()}", *lines[at + 1 :]]
    end = _block_end(lines, at, _indent(line))
    body = lines[at + 1 : end]
    entries = {m["version"]: (i, m) for i, b in enumerate(body) if (m := _ENTRY.match(b))}
    indent = next((m["indent"] for _, m in entries.values()), " " * (_indent(line) + 2))
    new_body = list(body)
    for version, weight in weights.items():
        if version in entries:
            i, m = entries[version]
            new_body[i] = f"{m['indent']}{m['q']}{version}{m['q']}: {weight}{m['tail']}"
        else:
            new_body.append(f'{indent}"{version}": {weight}')
    return [*lines[: at + 1], *new_body, *lines[end:]]


def set_weights(
    path: Path,
    weights: dict[str, int],
    locate: Callable[[list[str]], int],
    variants_of: Callable[[Any], dict[str, Any]],
) -> None:
    """Replace the weights mapping at the line `locate` finds; check nothing else in the document changed.

    `variants_of` finds the mapping that holds `weights` in the parsed document.
    """
    text = path.read_text()
    before = yaml.safe_load(text)
    lines = text.splitlines()
    new_lines = _rewrite(lines, locate(lines), weights)
    new_text = "\n".join(new_lines) + ("\n" if text.endswith("\n") else "")
    after = yaml.safe_load(new_text)
    want = deepcopy(before)
    variants_of(want)["weights"] = _normalised(variants_of(before)["weights"]) | weights
    # YAML reads an unquoted `1:` as an integer; versions are names, so compare them as strings.
    variants_of(after)["weights"] = _normalised(variants_of(after)["weights"])
    if after != want:
        raise WeightsFileError(
            f"{path}: rewriting the weights would change more than the weights; not written"
        )
    path.write_text(new_text)


def _normalised(weights: dict[Any, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in weights.items()}


def set_stack_weights(path: Path, model: str, weights: dict[str, int]) -> None:
    """Set `model-serving:models[name=model].variants.weights` in a Pulumi stack file."""

    def locate(lines: list[str]) -> int:
        models = _find_key(lines, "model-serving:models", 0, len(lines))
        end = _block_end(lines, models, _indent(lines[models]))
        named = re.compile(rf"^\s*-\s+name:\s*[\"']?{re.escape(model)}[\"']?\s*(#.*)?$")
        item = next((i for i in range(models + 1, end) if named.match(lines[i])), None)
        if item is None:
            raise WeightsFileError(f"{path}: model {model!r} is not in model-serving:models")
        item_end = _block_end(lines, item, _indent(lines[item]))
        variants = _find_key(lines, "variants", item, item_end)
        return _find_key(lines, "weights", variants, _block_end(lines, variants, _indent(lines[variants])))

    def variants_of(doc: Any) -> dict[str, Any]:
        found: dict[str, Any] = next(m for m in doc["config"]["model-serving:models"] if m["name"] == model)
        variants: dict[str, Any] = found["variants"]
        return variants

    set_weights(path, weights, locate, variants_of)


def set_model_config_weights(path: Path, weights: dict[str, int]) -> None:
    """Set `variants.weights` in a served model's `config.yaml`."""

    def locate(lines: list[str]) -> int:
        variants = _find_key(lines, "variants", 0, len(lines))
        return _find_key(lines, "weights", variants, _block_end(lines, variants, _indent(lines[variants])))

    def variants_of(doc: Any) -> dict[str, Any]:
        variants: dict[str, Any] = doc["variants"]
        return variants

    set_weights(path, weights, locate, variants_of)
