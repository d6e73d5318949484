"""`load_config()` reads the stack file the way the Pulumi CLI hands it to the program.

It must read every key of the stack file, from the `model-serving` namespace, with `aws:region`, and
name the stack's own file in its errors. Here `pulumi.Config` and `pulumi.get_stack` are stood in for,
answering from the stack file as the CLI encodes it: no runtime is needed, so these tests also run in
the mutation tester's child processes, where the runtime's event loop does not survive the fork.
test_config_load_runtime.py runs the same cases under the Pulumi runtime.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from stacks.config import ConfigError, load_config, parse_config
from stacks.preview.run import stack_config, stack_names
from stacks.settings import StackConfig


class StandInConfig:
    """`pulumi.Config` for one namespace, answering from the CLI's encoding of a stack file."""

    def __init__(self, namespace: str, config: dict[str, str]) -> None:
        self._namespace, self._config = namespace, config

    def get(self, key: str) -> str | None:
        return self._config.get(f"{self._namespace}:{key}")

    def get_object(self, key: str) -> Any:
        text = self.get(key)
        return None if text is None else json.loads(text)


def loaded(stack: str, config: dict[str, str]) -> StackConfig:
    """The config `load_config()` returns with pulumi.Config and pulumi.get_stack stood in for."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pulumi, "get_stack", lambda: stack)
        patch.setattr(pulumi, "Config", lambda namespace: StandInConfig(namespace, config))
        return load_config()


def parsed(stack: str, config: dict[str, str]) -> StackConfig:
    """The same stack file parsed directly, every value decoded as the CLI encodes it."""
    prefix = "model-serving:"
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith(prefix):
            name = key.removeprefix(prefix)
            strings = {"jurisdiction", "profile", "owner", "dataClassification", "accountId"}
            values[name] = value if name in strings else json.loads(value)
    return parse_config(
        values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=config.get("aws:region")
    )


def broken(stack: str, key: str, value: str | None) -> dict[str, str]:
    """The stack file's config with one key changed (None: left out)."""
    config = stack_config(stack)
    if value is None:
        del config[key]
    else:
        config[key] = value
    return config


# (stack, key, its new value or None to leave it out, the error)
ERRORS = [
    pytest.param(
        "eu-prod",
        "model-serving:owner",
        None,
        "Pulumi.eu-prod.yaml: model-serving.owner: is required",
        id="a string key left out",
    ),
    pytest.param(
        "smb-eu",
        "aws:region",
        "eu-west-3",
        "Pulumi.smb-eu.yaml: aws:region: 'eu-west-3' must be the primary region eu-west-1",
        id="aws:region read from the aws namespace",
    ),
    pytest.param(
        "onprem-ae",
        "model-serving:egress",
        json.dumps({"allowedDomains": ["example.com"]}),
        "Pulumi.onprem-ae.yaml: model-serving.egress: "
        "has no meaning for an on-premises stack (profile onprem)",
        id="an object key read as an object",
    ),
]


@pytest.mark.parametrize("stack", stack_names())
def test_load_config_reads_the_whole_stack_file(stack: str) -> None:
    config = stack_config(stack)
    assert loaded(stack, config) == parsed(stack, config), f"{stack}: load_config() differs from the file"


@pytest.mark.parametrize(("stack", "key", "value", "message"), ERRORS)
def test_load_config_names_the_stacks_own_file(stack: str, key: str, value: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(stack, broken(stack, key, value))
    assert str(caught.value) == message, str(caught.value)
