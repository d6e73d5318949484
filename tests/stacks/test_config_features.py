"""The stack file's `features` block (stacks/config.py `_features`): what it parses into, and every
refusal with the file, the key and the reason."""

from typing import Any

import pytest

from stacks.config import _cron_period_minutes
from tests.stacks.test_config_bounds import key_of
from tests.stacks.test_config_refusals import Edit, both, parse, refusal, removing, setting

FEATURES = ("features",)


def test_eu_prod_reads_the_classifier_from_the_feature_store() -> None:
    config = parse("eu-prod", lambda values: None).features
    assert config is not None, "eu-prod ships a features block"
    assert config.project == "model_serving", config
    assert config.tenant == "payments", "the job runs in the first reader's tenant unless told otherwise"
    assert config.stale_after_seconds == 5400, config
    entry = config.of("tabular-classifier")
    assert entry is not None and entry.feature_views == ("tumour_measurements",), entry
    assert entry.services == ("tabular_classifier_v1", "tabular_classifier_v2"), "one service per version"
    assert config.of("ticket-router") is None, "a model left out is sent its features as before"


def test_a_stack_without_the_block_has_no_feature_store() -> None:
    assert parse("eu-prod", removing(FEATURES)).features is None
    assert parse("us-prod", lambda values: None).features is None


def test_the_job_may_run_in_another_readers_tenant() -> None:
    def edit(values: dict[str, Any]) -> None:
        values["features"]["tenant"] = "support"

    config = parse("eu-prod", edit).features
    assert config is not None and config.tenant == "support", config


def _with(key: str, value: Any) -> Edit:
    def edit(values: dict[str, Any]) -> None:
        values["features"][key] = value

    return edit


def _model_entry(key: str, value: Any) -> Edit:
    def edit(values: dict[str, Any]) -> None:
        values["features"]["models"][0][key] = value

    return edit


def _onprem_block(values: dict[str, Any]) -> None:
    values["features"] = {
        "schedule": "0 * * * *",
        "staleAfterMinutes": 180,
        "models": [{"name": "tabular-classifier", "featureViews": ["tumour_measurements"]}],
    }


def _listed_twice(values: dict[str, Any]) -> None:
    values["features"]["models"].append(dict(values["features"]["models"][0]))


REFUSALS: list[tuple[str, Edit, tuple[Any, ...], str]] = [
    (
        "onprem-ae",
        _onprem_block,
        FEATURES,
        "has no meaning on premises: the stacks' online store is DynamoDB and the registry S3, both AWS; an "
        "on-premises cluster would need Feast's Redis online store in-cluster, which the platform does not "
        "deploy (docs/features.md)",
    ),
    (
        "eu-prod",
        _with("schedule", "every half hour"),
        (*FEATURES, "schedule"),
        ("'every half hour' is not a five-field cron schedule (UTC)"),
    ),
    (
        "eu-prod",
        _with("schedule", "*/30 * * *"),
        (*FEATURES, "schedule"),
        ("'*/30 * * *' is not a five-field cron schedule (UTC)"),
    ),
    (
        "eu-prod",
        _with("staleAfterMinutes", 30),
        (*FEATURES, "staleAfterMinutes"),
        (
            "30 is not above the schedule's 30 minutes between runs: the alert would fire between two "
            "successful runs"
        ),
    ),
    ("eu-prod", _with("staleAfterMinutes", 14), (*FEATURES, "staleAfterMinutes"), "14 is outside 15..10080"),
    ("eu-prod", removing((*FEATURES, "schedule")), (*FEATURES, "schedule"), "is required"),
    (
        "eu-prod",
        _with("project", "Model-Serving"),
        (*FEATURES, "project"),
        ("'Model-Serving' does not match ^[a-z][a-z0-9_]{0,62}$"),
    ),
    (
        "eu-prod",
        _with("models", []),
        (*FEATURES, "models"),
        ("needs at least one model: features for nobody would cost for nothing"),
    ),
    (
        "eu-prod",
        _model_entry("name", "ghost"),
        (*FEATURES, "models", 0, "name"),
        ("'ghost' is not one of the models ['tabular-classifier', 'ticket-router']"),
    ),
    (
        "eu-prod",
        _model_entry("featureViews", []),
        (*FEATURES, "models", 0, "featureViews"),
        ("needs at least one feature view"),
    ),
    (
        "eu-prod",
        _model_entry("featureViews", ["tumour-measurements"]),
        (*FEATURES, "models", 0, "featureViews"),
        ("'tumour-measurements' does not match ^[a-z][a-z0-9_]{0,62}$"),
    ),
    (
        "eu-prod",
        _model_entry("featureViews", ["a", "a"]),
        (*FEATURES, "models", 0, "featureViews"),
        ("lists a feature view twice"),
    ),
    ("eu-prod", _listed_twice, (*FEATURES, "models", 1), "model 'tabular-classifier' is listed twice"),
    (
        "eu-prod",
        _with("tenant", "nobody"),
        (*FEATURES, "tenant"),
        ("'nobody' is not the tenant of any model ['payments', 'support']"),
    ),
]


@pytest.mark.parametrize(
    ("stack", "edit", "path", "reason"),
    REFUSALS,
    ids=[f"{r[0]} {key_of(r[2])}: {r[3][:30]}" for r in REFUSALS],
)
def test_a_refusal_names_file_key_and_reason(
    stack: str, edit: Edit, path: tuple[Any, ...], reason: str
) -> None:
    err = refusal(stack, edit)
    source, key = f"Pulumi.{stack}.yaml", key_of(path)
    assert (err.source, err.key, err.reason) == (source, key, reason), (err.source, err.key, err.reason)


def test_the_job_counts_against_its_tenants_quota() -> None:
    """A quota that holds the tenant's models alone is one pod short once the job runs there."""
    err = refusal("eu-prod", setting(("tenants", 0, "quota", "pods"), 43))
    assert err.key == "model-serving.tenants[0].quota.pods" and "(44 pods)" in err.reason, err
    without = parse("eu-prod", both(removing(FEATURES), setting(("tenants", 0, "quota", "pods"), 43)))
    assert without.tenants[0].pods == 43, "without the job, 43 pods hold the models and the controller"


@pytest.mark.parametrize(
    ("schedule", "minutes"),
    [
        ("*/30 * * * *", 30),
        ("5 * * * *", 60),
        ("0 */6 * * *", 360),
        ("15 3 * * *", 1440),
        ("0 3 * * 1", None),
        ("0,30 * * * *", None),
    ],
)
def test_the_period_of_common_schedules(schedule: str, minutes: int | None) -> None:
    assert _cron_period_minutes(schedule) == minutes, schedule
