"""A model's config.yaml: defaults, validation, and errors that name the file and key."""

from pathlib import Path

import pytest

from serving_image.model_config import ConfigError, ModelConfig, load_model_config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_model_config(tmp_path) == ModelConfig()


def test_full_config_parses_with_integer_version_keys(tmp_path: Path) -> None:
    config = load_model_config(
        write(
            tmp_path,
            "max_batch_size: 16\nmax_queue_delay_ms: 2\nmax_queue_size: 100\n"
            "variants:\n  weights: {1: 90, 2: 10}\n  sticky: {header: x-user-id}\n"
            "  routes:\n    - {header: x-segment, value: enterprise, version: '2'}\n",
        )
    )
    assert config.max_batch_size == 16 and config.max_queue_delay_ms == 2
    assert config.variants is not None and config.variants.weights == {"1": 90, "2": 10}
    assert config.variants.routes[0].version == "2"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("max_batch_size: -1\n", "max_batch_size", "greater than or equal to 0"),
        ("max_batch_sise: 4\n", "max_batch_sise", "Extra inputs are not permitted"),
        ("variants:\n  weights: {1: 90, 2: 20}\n", "variants", "weights must sum to 100, got 110"),
        ("variants:\n  weights: {1: 100}\n  sticky: {}\n", "variants.sticky.header", "Field required"),
        ("max_queue_size: lots\n", "max_queue_size", "valid integer"),
        ("quality:\n  accuracy_margin: 1.5\n", "quality.accuracy_margin", "less than or equal to 1"),
        ("quality:\n  accuracy_margin: -0.1\n", "quality.accuracy_margin", "greater than or equal to 0"),
        ("quality:\n  margin: 0.1\n", "quality.margin", "Extra inputs are not permitted"),
    ],
)
def test_invalid_config_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_model_config(write(tmp_path, text))
    message = str(raised.value)
    assert str(tmp_path / "config.yaml") in message, message
    assert f"key '{key}'" in message, message
    assert reason in message, message


def test_quality_margin_defaults_to_5_points_and_is_read(tmp_path: Path) -> None:
    assert ModelConfig().quality.accuracy_margin == 0.05
    config = load_model_config(write(tmp_path, "quality:\n  accuracy_margin: 0.02\n"))
    assert config.quality.accuracy_margin == 0.02, config


def test_unparseable_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.yaml: cannot read"):
        load_model_config(write(tmp_path, "max_batch_size: [unclosed\n"))
