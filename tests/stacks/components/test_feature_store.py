"""FeatureStore built alone under the mocks, with WorkloadIdentities attaching its read policies: the tables
in the region under its key with PITR, named as Feast names them; the prefixes; the private endpoint; the
materialization role; and each model's role reading its own views' tables only."""

import base64
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from stacks import features
from stacks.components.feature_store import FeatureStore, FeatureStoreArgs
from stacks.components.identities import WorkloadIdentities, WorkloadIdentitiesArgs
from stacks.contract import model_role
from stacks.preview.mocks import ACCOUNT_ID
from tests.stacks.conftest import TAGS, Built, build_component
from tests.stacks.test_features import allows

REGION = "eu-central-1"
CLUSTER = f"eu-prod-{REGION}"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
BUCKET = f"acme-models-{REGION}"
ROUTE_TABLES = ["rtb-0aaa", "rtb-0bbb", "rtb-0ccc"]
OIDC = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/oidc.eks.{REGION}.amazonaws.com/id/ABC"
ISSUER = f"https://oidc.eks.{REGION}.amazonaws.com/id/ABC"
MODEL_VIEWS = {"tabular-classifier": ("tumour_measurements",), "ticket-router": ("ticket_texts",)}
TENANTS = {"tabular-classifier": "payments", "ticket-router": "support", "plain": "payments"}
TABLE = "aws:dynamodb/table:Table"
POLICY = "aws:iam/rolePolicy:RolePolicy"


def _args(**overrides: Any) -> FeatureStoreArgs:
    values: dict[str, Any] = {
        "stack": "eu-prod",
        "project": "model_serving",
        "region": REGION,
        "cluster_name": CLUSTER,
        "views": ("ticket_texts", "tumour_measurements"),
        "model_views": MODEL_VIEWS,
        "key_arn": KEY,
        "bucket": BUCKET,
        "bucket_arn": f"arn:aws:s3:::{BUCKET}",
        "vpc_id": "vpc-0123",
        "route_table_ids": [pulumi.Output.from_input(r) for r in ROUTE_TABLES],
        "oidc_provider_arn": OIDC,
        "oidc_issuer": ISSUER,
        "namespace": "payments",
        "tags": TAGS,
    } | overrides
    return FeatureStoreArgs(**values)


def _program(opts: pulumi.ResourceOptions) -> None:
    store = FeatureStore("features", _args(), opts)
    WorkloadIdentities(
        "identities",
        WorkloadIdentitiesArgs(
            cluster_name=CLUSTER,
            region=REGION,
            oidc_provider_arn=OIDC,
            oidc_issuer=ISSUER,
            target_group_arn=f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT_ID}:targetgroup/g/0123",
            node_security_group_id="sg-0123",
            log_group_arn=f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/containers",
            model_bucket_arn=f"arn:aws:s3:::{BUCKET}",
            model_key_arn=KEY,
            models=TENANTS,
            feature_policies=store.serving_policies,
            tags=TAGS,
        ),
        opts,
    )


@pytest.fixture(scope="module")
def built() -> Built:
    return build_component(_program, region=REGION)


def _tables(built: Built) -> dict[str, dict[str, Any]]:
    return {t.inputs["name"]: t.inputs for t in built.of_type(TABLE)}


def test_a_table_per_view_named_as_feast_names_it(built: Built) -> None:
    assert sorted(_tables(built)) == [
        "eu-prod.model_serving.ticket_texts",
        "eu-prod.model_serving.tumour_measurements",
    ]


def test_tables_take_the_key_schema_feast_creates(built: Built) -> None:
    tables = _tables(built)
    assert len(tables) == 2, sorted(tables)
    for name, table in tables.items():
        assert table["hashKey"] == features.TABLE_KEY == "entity_id", name
        assert table["attributes"] == [{"name": "entity_id", "type": "S"}], table["attributes"]
        assert table["billingMode"] == "PAY_PER_REQUEST", name
        assert not table.get("rangeKey"), "Feast's store reads by the hash key alone"


def test_tables_are_in_the_region_under_its_key_with_recovery_and_protection(built: Built) -> None:
    tables = built.of_type(TABLE)
    assert len(tables) == 2, [table.urn for table in tables]
    for table in tables:
        assert built.regions[table.urn] == REGION, table.urn
        assert table.inputs["serverSideEncryption"] == {"enabled": True, "kmsKeyArn": KEY}, table.inputs
        assert table.inputs["pointInTimeRecovery"] == {"enabled": True}, table.inputs
        assert table.inputs["deletionProtectionEnabled"] is True, table.inputs
        assert not table.inputs.get("replicas"), "a global table would copy features to other regions"
        assert table.inputs["tags"] == TAGS, table.inputs


def test_tables_are_protected_from_pulumi_destroy() -> None:
    protected: dict[str, bool] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if args.type_ == TABLE:
            protected[args.name] = bool(args.opts.protect)

    build_component(
        lambda opts: _program(
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[record]))
        ),
        region=REGION,
    )
    assert protected == {"features-ticket-texts": True, "features-tumour-measurements": True}, protected


def test_registry_and_offline_prefixes_in_the_model_bucket_under_its_key(built: Built) -> None:
    objects = {o.inputs["key"]: o for o in built.of_type("aws:s3/bucketObjectv2:BucketObjectv2")}
    assert sorted(objects) == ["feast/", "features/", "features/tumour_measurements.parquet"], sorted(objects)
    for key, obj in objects.items():
        assert obj.inputs["bucket"] == BUCKET, key
        assert obj.inputs["serverSideEncryption"] == "aws:kms" and obj.inputs["kmsKeyId"] == KEY, obj.inputs
        assert built.regions[obj.urn] == REGION, obj.urn


def test_the_bundled_views_offline_parquet_is_uploaded_and_no_other(built: Built) -> None:
    """The set-up's parquet of the bundled view, as the object the applied source reads; the stack's other
    view (ticket_texts) has no bundled data, its rows come from the user's pipelines."""
    (seed,) = [
        o.inputs
        for o in built.of_type("aws:s3/bucketObjectv2:BucketObjectv2")
        if o.inputs["key"].endswith(".parquet")
    ]
    assert seed["key"] == features.offline_key("tumour_measurements"), seed["key"]
    bundled = Path(features.BUNDLED_OFFLINE_DATA["tumour_measurements"])
    assert base64.b64decode(seed["contentBase64"]) == bundled.read_bytes(), "not the set-up's parquet"
    assert seed["serverSideEncryption"] == "aws:kms" and seed["kmsKeyId"] == KEY, seed


def test_a_seed_file_that_is_missing_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "tumour_measurements.parquet"
    with pytest.raises(Exception, match=rf"{missing}: no such file; `make setup` builds"):
        build_component(
            lambda opts: FeatureStore(
                "features", _args(offline_seed={"tumour_measurements": str(missing)}), opts
            ),
            region=REGION,
        )


def test_dynamodb_is_reached_through_a_gateway_endpoint_on_the_private_route_tables(built: Built) -> None:
    endpoint = built.one("aws:ec2/vpcEndpoint:VpcEndpoint", "-dynamodb").inputs
    assert endpoint["serviceName"] == f"com.amazonaws.{REGION}.dynamodb", endpoint
    assert endpoint["vpcEndpointType"] == "Gateway", endpoint
    assert endpoint["routeTableIds"] == ROUTE_TABLES, endpoint


def test_the_materialization_role_trusts_only_the_jobs_service_account(built: Built) -> None:
    role = built.one("aws:iam/role:Role", "features-materialize").inputs
    assert role["name"] == f"{CLUSTER}-feature-materialize", role["name"]
    (statement,) = json.loads(role["assumeRolePolicy"])["Statement"]
    subjects = statement["Condition"]["StringEquals"]
    assert (
        subjects[f"{ISSUER.removeprefix('https://')}:sub"]
        == "system:serviceaccount:payments:feature-materialize"
    )


def _table_arn(view: str) -> str:
    return features.table_arn(REGION, ACCOUNT_ID, "eu-prod", "model_serving", view)


def test_the_materialization_role_writes_every_views_table_and_nothing_else(built: Built) -> None:
    doc = built.one(POLICY, "features-materialize").inputs["policy"]
    for view in ("tumour_measurements", "ticket_texts"):
        assert allows(doc, "dynamodb:BatchWriteItem", _table_arn(view)), view
    assert not allows(doc, "dynamodb:BatchWriteItem", _table_arn("other")), "another table"
    assert not allows(doc, "dynamodb:DeleteTable", _table_arn("ticket_texts")), "it may not delete a table"


def _reader(built: Built, model: str) -> str:
    suffix = model_role(model).replace(":", "-")
    return str(built.one(POLICY, f"-{suffix}-features").inputs["policy"])


def test_each_models_role_reads_its_own_views_tables_only(built: Built) -> None:
    """Fails if a serving role could write any table, or read a table of a view its services do not use."""
    everything = ("tumour_measurements", "ticket_texts", "other")
    writes = ("dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
    assert len(MODEL_VIEWS) >= 2, "one model reading alone cannot show another's tables are out of reach"
    for model, views in MODEL_VIEWS.items():
        doc = _reader(built, model)
        readable = {v for v in everything if allows(doc, "dynamodb:BatchGetItem", _table_arn(v))}
        assert readable == set(views), f"{model} reads {sorted(readable)}, its services use {views}"
        writable = {(v, a) for v in everything for a in writes if allows(doc, a, _table_arn(v))}
        assert writable == set(), f"{model} could write {writable}"


def test_the_read_policy_is_on_the_models_own_role(built: Built) -> None:
    policy = built.one(POLICY, "-model-tabular-classifier-features")
    role = built.one("aws:iam/role:Role", "identities-model-tabular-classifier")
    assert role.urn in policy.dependencies, "attached to another role"


def test_a_model_without_features_gets_no_read_policy(built: Built) -> None:
    assert not [p.name for p in built.of_type(POLICY) if p.name.endswith("-model-plain-features")]


def test_a_model_reading_a_view_without_a_table_is_refused() -> None:
    with pytest.raises(Exception, match=r"without a table: \['missing'\]"):
        build_component(
            lambda opts: FeatureStore(
                "features",
                FeatureStoreArgs(
                    stack="eu-prod",
                    project="model_serving",
                    region=REGION,
                    cluster_name=CLUSTER,
                    views=("tumour_measurements",),
                    model_views={"tabular-classifier": ("missing",)},
                    key_arn=KEY,
                    bucket=BUCKET,
                    bucket_arn=f"arn:aws:s3:::{BUCKET}",
                    vpc_id="vpc-0123",
                    route_table_ids=[],
                    oidc_provider_arn=OIDC,
                    oidc_issuer=ISSUER,
                    namespace="payments",
                    tags=TAGS,
                ),
                opts,
            ),
            region=REGION,
        )


def test_a_read_policy_for_a_model_without_a_role_is_refused() -> None:
    with pytest.raises(Exception, match=r"feature policies for models without a role: \['ghost'\]"):
        build_component(
            lambda opts: WorkloadIdentities(
                "identities",
                WorkloadIdentitiesArgs(
                    cluster_name=CLUSTER,
                    region=REGION,
                    oidc_provider_arn=OIDC,
                    oidc_issuer=ISSUER,
                    target_group_arn=f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT_ID}:targetgroup/g/0123",
                    node_security_group_id="sg-0123",
                    log_group_arn=f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/containers",
                    model_bucket_arn=f"arn:aws:s3:::{BUCKET}",
                    model_key_arn=KEY,
                    models=TENANTS,
                    feature_policies={"ghost": "{}"},
                    tags=TAGS,
                ),
                opts,
            ),
            region=REGION,
        )
