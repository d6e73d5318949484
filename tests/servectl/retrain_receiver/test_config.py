from pathlib import Path
from typing import Any

import pytest

from servectl.retrain_receiver.config import DEFAULT_COMMAND, ConfigError, load_config, parse_config


def test_defaults_and_per_model_overrides() -> None:
    config = parse_config(
        {
            "args": ["--state", "/s"],
            "models": {
                "a": {"data": "s3://b/a.csv"},
                "b": {
                    "data": "/data/b.csv",
                    "command": ["python", "retrain.py"],
                    "args": ["--margin", "0.02"],
                },
            },
        }
    )
    a, b = config.models["a"], config.models["b"]
    assert a.command == DEFAULT_COMMAND and a.args == ("--state", "/s"), a
    assert b.command == ("python", "retrain.py") and b.args == ("--state", "/s", "--margin", "0.02"), b
    assert config.timeout_seconds == 3600, config


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "top level"),
        ({}, "models"),
        ({"models": {}}, "models"),
        ({"models": {"a": {}}}, "models.a.data"),
        ({"models": {"a": {"data": "x", "command": []}}}, "models.a.command"),
        ({"models": {"a": {"data": "x", "args": [1]}}}, "models.a.args"),
        ({"command": "servectl retrain", "models": {"a": {"data": "x"}}}, "command"),
        ({"timeout_seconds": 0, "models": {"a": {"data": "x"}}}, "timeout_seconds"),
    ],
)
def test_a_bad_config_names_the_field(doc: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_config(doc, "receiver.yaml")


def test_an_unreadable_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
