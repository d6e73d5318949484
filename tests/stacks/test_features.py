"""stacks/features.py against Feast itself: the tables are where Feast's DynamoDB store looks (its own
naming function), the in-cluster `feature_store.yaml` is a config Feast accepts (its DynamoDB store's config
class), the stack files name views and services the feature repository defines, and the two roles'
documents allow exactly what each side does."""

import fnmatch
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from feast import FeatureService, FeatureView
from feast.infra.online_stores.dynamodb import DynamoDBOnlineStoreConfig, _get_table_name
from feast.repo_config import RepoConfig

from stacks import features
from stacks.config import parse_config
from stacks.preview.run import ROOT, stack_names

REPO = ROOT / "serving_image" / "feature_repo"
ACCOUNT = "123456789012"
REGION = "eu-central-1"
BUCKET = "acme-eu-serving-models-eu-central-1"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0000abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(scope="module")
def definitions() -> ModuleType:
    """The feature repository's definitions, imported as Feast's `feast apply` would."""
    spec = importlib.util.spec_from_file_location("feature_repo_definitions", REPO / "definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _objects(module: ModuleType, kind: type) -> dict[str, Any]:
    return {str(getattr(o, "name")): o for o in vars(module).values() if isinstance(o, kind)}  # noqa: B009


def _repo_config(tmp_path: Path) -> RepoConfig:
    """The in-cluster config through Feast's RepoConfig, as a pod reads it (DynamoDB online store and all)."""
    raw = yaml.safe_load(features.feature_store_yaml("eu-prod", "model_serving", REGION, BUCKET))
    return RepoConfig(repo_path=tmp_path, **raw)


def test_the_in_cluster_config_is_one_feast_accepts(tmp_path: Path) -> None:
    config = _repo_config(tmp_path)
    assert config.registry.path == f"s3://{BUCKET}/feast/registry.db", config.registry
    assert config.offline_store.type == "file", config.offline_store
    assert isinstance(config.online_store, DynamoDBOnlineStoreConfig), config.online_store
    assert config.online_store.region == REGION, config.online_store
    assert config.online_store.consistent_reads is False, config.online_store
    local = yaml.safe_load((REPO / "feature_store.yaml").read_text())
    assert config.project == local["project"], "the cluster and the local repository name one project"
    assert config.entity_key_serialization_version == local["entity_key_serialization_version"], (
        "entity keys serialized differently would miss every item the other side wrote"
    )
    online = features.feature_store_config("eu-prod", "model_serving", REGION, BUCKET)["online_store"]
    unknown = sorted(set(online) - set(DynamoDBOnlineStoreConfig.model_fields))
    assert unknown == [], f"Feast's DynamoDB config has no fields {unknown}"


def test_a_misspelt_online_store_field_is_refused_by_feast(tmp_path: Path) -> None:
    """The test above can fail: Feast's config class refuses a field it does not know."""
    raw = yaml.safe_load(features.feature_store_yaml("eu-prod", "model_serving", REGION, BUCKET))
    raw["online_store"]["table_name_templat"] = raw["online_store"].pop("table_name_template")
    with pytest.raises(ValueError, match="table_name_templat"):
        RepoConfig(repo_path=tmp_path, **raw)


def test_table_names_are_the_ones_feasts_dynamodb_store_reads(
    tmp_path: Path, definitions: ModuleType
) -> None:
    """Feast's own `_get_table_name` on the in-cluster config names each view's table as infra does."""
    default = DynamoDBOnlineStoreConfig.model_fields["table_name_template"].default
    assert default == features.FEAST_TABLE_NAME_TEMPLATE, f"Feast's default naming moved: {default}"
    config = _repo_config(tmp_path)
    assert config.online_store.table_name_template == "eu-prod.{project}.{table_name}", "the stack first"
    views = _objects(definitions, FeatureView)
    assert views, "the feature repository defines no feature view"
    for name, view in views.items():
        expected = _get_table_name(config.online_store, config, view)
        assert features.table_name("eu-prod", "model_serving", name) == expected, expected
        assert expected == f"eu-prod.model_serving.{name}", expected


def _shipped_features() -> list[tuple[str, Any]]:
    found = []
    for stack in stack_names():
        values = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        raw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("model-serving:")}
        cfg = parse_config(
            raw, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=values.get("aws:region")
        )
        if cfg.features is not None:
            found.append((stack, cfg.features))
    return found


def test_some_shipped_stack_reads_features() -> None:
    assert [stack for stack, _ in _shipped_features()] == ["eu-prod"]


@pytest.mark.parametrize(("stack", "config"), _shipped_features())
def test_stack_files_name_the_services_and_views_the_repository_defines(
    stack: str, config: Any, definitions: ModuleType
) -> None:
    services = _objects(definitions, FeatureService)
    assert config.models, f"{stack}: a features block with no reading model"
    assert all(entry.services for entry in config.models), f"{stack}: a reading model with no service"
    for entry in config.models:
        for name in entry.services:
            assert name in services, f"{stack}: {entry.model} has no feature service {name}"
            read = sorted({projection.name for projection in services[name].feature_view_projections})
            assert read == sorted(entry.feature_views), (
                f"{stack}: {name} reads {read}; {entry.model}'s pods may read {entry.feature_views}"
            )


def allows(document: str, action: str, resource: str) -> bool:
    """Whether an identity policy's Allow statements (no Deny is written here) cover an action on a
    resource, with IAM's case-insensitive action and `*`/`?` wildcards. Conditions are not evaluated: a
    statement with one counts as allowing, which can only make these tests stricter."""
    for statement in json.loads(document)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


OWN = features.table_arn(REGION, ACCOUNT, "eu-prod", "model_serving", "tumour_measurements")
OTHER = features.table_arn(REGION, ACCOUNT, "eu-prod", "model_serving", "account_balances")
WRITES = ("dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
READS = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan")
REGISTRY = f"{BUCKET_ARN}/feast/registry.db"


def test_the_serving_role_reads_its_views_tables_and_nothing_else() -> None:
    doc = features.serving_policy([OWN], BUCKET_ARN, KEY, REGION)
    assert allows(doc, "dynamodb:GetItem", OWN) and allows(doc, "dynamodb:BatchGetItem", OWN)
    assert not [a for a in WRITES if allows(doc, a, OWN)], "the serving role could write features"
    assert not [a for a in (*READS, *WRITES) if allows(doc, a, OTHER)], "it could read another table"
    assert not allows(doc, "dynamodb:Scan", OWN) and not allows(doc, "dynamodb:Query", OWN), "bulk reads"
    assert allows(doc, "s3:GetObject", REGISTRY) and not allows(doc, "s3:PutObject", REGISTRY)
    assert not allows(doc, "s3:GetObject", f"{BUCKET_ARN}/features/tumour_measurements.parquet")
    assert not allows(doc, "s3:GetObject", f"{BUCKET_ARN}/models/other/1/model.onnx")


def test_the_materialization_role_writes_its_tables_and_the_registry_only() -> None:
    doc = features.materialize_policy([OWN], BUCKET_ARN, KEY, REGION)
    assert allows(doc, "dynamodb:BatchWriteItem", OWN) and allows(doc, "dynamodb:DescribeTable", OWN)
    assert not [a for a in (*READS, *WRITES) if allows(doc, a, OTHER)], "it could touch another table"
    for action in ("dynamodb:CreateTable", "dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:Scan"):
        assert not allows(doc, action, OWN), action
    assert allows(doc, "s3:GetObject", f"{BUCKET_ARN}/features/tumour_measurements.parquet")
    assert not allows(doc, "s3:PutObject", f"{BUCKET_ARN}/features/tumour_measurements.parquet")
    assert allows(doc, "s3:PutObject", REGISTRY) and allows(doc, "s3:GetObject", REGISTRY)
    assert not allows(doc, "s3:GetObject", f"{BUCKET_ARN}/models/tabular-classifier/1/model.onnx")


@pytest.mark.parametrize("build", [features.serving_policy, features.materialize_policy])
def test_no_wildcard_resource_and_the_key_only_through_s3_and_dynamodb(build: Any) -> None:
    statements = json.loads(build([OWN], BUCKET_ARN, KEY, REGION))["Statement"]
    for statement in statements:
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        assert "*" not in resources, statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in actions if a.endswith(":*")], statement
    (kms,) = [s for s in statements if str(s["Action"]).startswith("['kms:")]
    assert kms["Resource"] == KEY, kms
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": [f"s3.{REGION}.amazonaws.com", f"dynamodb.{REGION}.amazonaws.com"]}
    }, kms


@pytest.mark.parametrize("build", [features.serving_policy, features.materialize_policy])
def test_a_policy_without_tables_is_refused(build: Any) -> None:
    with pytest.raises(ValueError, match="at least one table"):
        build([], BUCKET_ARN, KEY, REGION)
