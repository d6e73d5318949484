"""The rollout block's `segments`: parsed with bounds, refused with the key and the reason, and handed to
the server pods as settings the server itself accepts."""

from typing import Any

import pytest

from serving_image.settings import Settings
from stacks.config import ConfigError
from stacks.manifests import serving
from stacks.manifests.serving import ServingSpec
from stacks.settings import StackConfig
from tests.stacks.test_config import parse, raw

SEGMENTS = {"header": "x-segment", "values": ["enterprise", "free"]}


def _with(segments: Any) -> tuple[dict[str, Any], str | None]:
    values, region = raw()
    values["models"][0]["rollout"]["segments"] = segments
    return values, region


def test_segments_parse_into_the_rollout() -> None:
    rollout = parse(*_with(SEGMENTS)).models[0].rollout
    assert rollout is not None, "the eu-prod classifier has a rollout"
    assert (rollout.segment_header, rollout.segment_values) == ("x-segment", ("enterprise", "free")), rollout


def test_without_segments_nothing_is_guarded() -> None:
    rollout = parse(*raw()).models[0].rollout
    assert rollout is not None and rollout.segment_values == (), rollout


@pytest.mark.parametrize(
    ("segments", "key", "reason"),
    [
        ({"header": "x-segment", "values": ["Enterprise"]}, r"values\[0\]", "must be 1-32 of"),
        ({"header": "x-segment", "values": ["other"]}, r"values\[0\]", "not 'other'"),
        ({"header": "x-segment", "values": ["a", "a"]}, "values", "distinct"),
        ({"header": "x-segment", "values": [f"s{i}" for i in range(17)]}, "values", "1 to 16"),
        ({"header": "X Segment", "values": ["free"]}, "header", "does not match"),
        ({"values": ["free"]}, "header", "is required"),
    ],
)
def test_bad_segments_are_refused_with_their_key(segments: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=rf"models\[0\]\.rollout\.segments\.{key}: .*{reason}"):
        parse(*_with(segments))


def _env(config: StackConfig) -> dict[str, str]:
    spec = ServingSpec(
        model=config.models[0], image="i", sync_image="s", region="eu-central-1",
        service_account="sa", gateway="istio-system/model-api", api_host="api.models.example.eu",
    )  # fmt: skip
    container = serving.deployment(spec, "1")["spec"]["template"]["spec"]["containers"]
    server = next(c for c in container if c["name"] == "server")
    return {e["name"]: e["value"] for e in server["env"] if "value" in e}


def test_the_pods_are_told_the_segments_in_a_form_the_server_accepts() -> None:
    env = _env(parse(*_with(SEGMENTS)))
    assert (
        env["SERVING_SEGMENT_HEADER"] == "x-segment" and env["SERVING_SEGMENT_VALUES"] == "enterprise,free"
    ), env
    settings = Settings(
        segment_header=env["SERVING_SEGMENT_HEADER"], segment_values=env["SERVING_SEGMENT_VALUES"]
    )
    assert settings.segment_values == "enterprise,free", (
        "the server's own validation accepts the stack's values"
    )


def test_without_segments_the_pods_get_no_segment_settings() -> None:
    env = _env(parse(*raw()))
    assert "SERVING_SEGMENT_HEADER" not in env and "SERVING_SEGMENT_VALUES" not in env, env
