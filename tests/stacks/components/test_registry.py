import json

import pulumi
import pytest

from stacks.artifacts import load_lock
from stacks.components.registry import PULL_THROUGH_UPSTREAMS, Registry, RegistryArgs
from stacks.preview.mocks import ACCOUNT_ID
from tests.stacks.conftest import TAGS, Built, build_component

KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/11111111-2222-4333-a444-555555555555"
OWN = ["model-serving/server", "model-serving/model-sync"]
REPO = "aws:ecr/repository:Repository"


def registry_args(**overrides: object) -> RegistryArgs:
    values: dict[str, object] = {
        "region": "eu-central-1",
        "jurisdiction": "EU",
        "key_arn": KEY,
        "repositories": OWN,
        "replicate_to": ["eu-west-1"],
        "tags": TAGS,
    }
    return RegistryArgs(**(values | overrides))  # type: ignore[arg-type]


def build(args: RegistryArgs) -> Built:
    made: list[Registry] = []

    def factory(opts: pulumi.ResourceOptions) -> None:
        made.append(Registry("reg", args, opts))

    built = build_component(factory)
    assert made, "the component was not built"
    return built


@pytest.fixture(scope="module")
def registry() -> Built:
    return build(registry_args())


def test_a_repository_for_every_lock_entry_and_own_image(registry: Built) -> None:
    lock = load_lock()
    expected = {i.repository for i in lock.images.values()} | {c.repository for c in lock.charts.values()}
    names = {r.inputs["name"] for r in registry.of_type(REPO)}
    assert names == expected | set(OWN), f"missing {sorted(expected | set(OWN) - names)}"


def test_tags_are_immutable(registry: Built) -> None:
    mutable = [
        r.inputs["name"] for r in registry.of_type(REPO) if r.inputs.get("imageTagMutability") != "IMMUTABLE"
    ]
    assert not mutable, f"mutable tags let a tag change digest: {mutable}"


def test_repositories_are_kms_encrypted_with_the_region_key(registry: Built) -> None:
    assert len(registry.of_type(REPO)) > len(OWN), "the lock's repositories are missing"
    for r in registry.of_type(REPO):
        enc = r.inputs.get("encryptionConfigurations") or [{}]
        assert enc[0].get("encryptionType") == "KMS", f"{r.name}: {enc}"
        assert enc[0].get("kmsKey") == KEY, f"{r.name}: not the region key: {enc}"


def test_scan_on_push_and_untagged_lifecycle(registry: Built) -> None:
    assert len(registry.of_type(REPO)) > len(OWN), "the lock's repositories are missing"
    for r in registry.of_type(REPO):
        assert r.inputs["imageScanningConfiguration"]["scanOnPush"] is True, f"{r.name}: no scan on push"
    policies = registry.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert len(policies) == len(registry.of_type(REPO)), "every repository needs a lifecycle policy"
    rule = json.loads(policies[0].inputs["policy"])["rules"][0]
    assert rule["selection"]["tagStatus"] == "untagged", f"lifecycle must only expire untagged: {rule}"


def test_replication_goes_only_to_the_stack_regions(registry: Built) -> None:
    conf = registry.one("aws:ecr/replicationConfiguration:ReplicationConfiguration").inputs
    rule = conf["replicationConfiguration"]["rules"][0]
    regions = {d["region"] for d in rule["destinations"]}
    assert regions == {"eu-west-1"}, f"destinations: {regions}"
    assert {d["registryId"] for d in rule["destinations"]} == {ACCOUNT_ID}, "replicate within the account"
    filters = {f["filter"] for f in rule["repositoryFilters"]}
    assert filters == set(OWN), (
        f"only the project's own images replicate (mirror writes each region): {filters}"
    )


def test_no_replication_for_a_single_region_stack() -> None:
    built = build(registry_args(replicate_to=[], pull_through_cache=False))
    assert not built.of_type("aws:ecr/replicationConfiguration:ReplicationConfiguration"), (
        "nothing to replicate to"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"replicate_to": ["eu-west-2"]}, "leaves jurisdiction EU"),
        ({"replicate_to": ["me-central-1"]}, "leaves jurisdiction EU"),
        (
            {"region": "me-central-1", "jurisdiction": "AE", "replicate_to": ["me-south-1"]},
            "leaves jurisdiction AE",
        ),
        ({"replicate_to": ["eu-central-1"]}, "its own region"),
        ({"repositories": ["mirror/server"]}, "reserved prefix"),
        ({"repositories": ["quay/server"]}, "reserved prefix"),
        ({"key_arn": KEY.replace("eu-central-1", "eu-west-1")}, "is not in eu-central-1"),
    ],
)
def test_refuses(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        # The check runs before anything registers, so no engine is needed to see the refusal.
        Registry("reg", registry_args(**overrides))


def test_pull_through_rules_for_credential_free_upstreams(registry: Built) -> None:
    rules = registry.of_type("aws:ecr/pullThroughCacheRule:PullThroughCacheRule")
    found = {r.inputs["ecrRepositoryPrefix"]: r.inputs["upstreamRegistryUrl"] for r in rules}
    assert found == PULL_THROUGH_UPSTREAMS, f"rules: {found}"
    assert all("credentialArn" not in r.inputs for r in rules), "these upstreams need no credentials"
    assert "mirror" not in found, "a cache prefix must not collide with mirror/"


def test_cached_repositories_are_created_encrypted_and_immutable(registry: Built) -> None:
    templates = {
        t.inputs["prefix"]: t
        for t in registry.of_type("aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate")
    }
    assert set(templates) == set(PULL_THROUGH_UPSTREAMS), f"a template per cache prefix: {sorted(templates)}"
    for prefix, t in templates.items():
        assert t.inputs["appliedFors"] == ["PULL_THROUGH_CACHE"], f"{prefix}: {t.inputs['appliedFors']}"
        assert t.inputs["encryptionConfigurations"][0] == {"encryptionType": "KMS", "kmsKey": KEY}, prefix
        assert t.inputs["imageTagMutability"] == "IMMUTABLE", prefix
        # ECR needs a custom role to apply a KMS key from a template.
        assert t.inputs.get("customRoleArn", "").startswith("arn:aws:iam::"), f"{prefix}: no custom role"


def test_template_role_may_use_the_key_and_ecr_assumes_it(registry: Built) -> None:
    role = registry.one("aws:iam/role:Role", "cache-template").inputs
    trust = json.loads(role["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "ecr.amazonaws.com"}, f"trust: {trust}"
    statements = json.loads(registry.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])["Statement"]
    kms = next(s for s in statements if any(a.startswith("kms:") for a in s["Action"]))
    assert "kms:CreateGrant" in kms["Action"] and kms["Resource"] == KEY, f"kms statement: {kms}"


def test_rule_waits_for_its_template_and_template_for_the_role_policy(registry: Built) -> None:
    policy = registry.one("aws:iam/rolePolicy:RolePolicy").urn
    for prefix in PULL_THROUGH_UPSTREAMS:
        template = registry.one(
            "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate", f"cache-{prefix}"
        )
        rule = registry.one("aws:ecr/pullThroughCacheRule:PullThroughCacheRule", f"cache-{prefix}")
        assert template.urn in rule.dependencies, (
            f"{prefix}: a first pull before the template makes an AES256 repo"
        )
        assert policy in template.dependencies, f"{prefix}: template before its role may use the key"


def test_registry_output_is_the_region_host() -> None:
    hosts: list[str] = []

    def factory(opts: pulumi.ResourceOptions) -> None:
        Registry("reg", registry_args(pull_through_cache=False), opts).registry.apply(hosts.append)

    build_component(factory)
    assert hosts == [f"{ACCOUNT_ID}.dkr.ecr.eu-central-1.amazonaws.com"], f"registry: {hosts}"
