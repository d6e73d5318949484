"""`load_config()` under the Pulumi runtime (mocked, in this process), on the cases of test_config_load.py.

The stand-ins there could drift from Pulumi's own `Config` and `get_stack`: here the program runs as
`pulumi preview` runs it, with the stack file's config set as the CLI sets it.
"""

from __future__ import annotations

import pytest

from stacks.config import ConfigError, load_config
from stacks.preview.run import run_under_mocks, stack_config, stack_names
from stacks.settings import StackConfig
from tests.stacks.test_config_load import ERRORS, broken, parsed


def loaded(stack: str, config: dict[str, str]) -> StackConfig:
    """The config `load_config()` returns inside a program run with `config`."""
    found: list[StackConfig] = []
    run_under_mocks(lambda: found.append(load_config()), stack=stack, project="model-serving", config=config)
    assert len(found) == 1, f"the program ran {len(found)} times"
    return found[0]


@pytest.mark.parametrize("stack", stack_names())
def test_load_config_reads_the_whole_stack_file_under_the_runtime(stack: str) -> None:
    config = stack_config(stack)
    assert loaded(stack, config) == parsed(stack, config), f"{stack}: load_config() differs from the file"


@pytest.mark.parametrize(("stack", "key", "value", "message"), ERRORS)
def test_load_config_names_the_stacks_own_file_under_the_runtime(
    stack: str, key: str, value: str | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(stack, broken(stack, key, value))
    assert str(caught.value) == message, str(caught.value)
