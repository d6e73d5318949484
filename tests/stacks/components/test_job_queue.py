"""JobQueue: the job queue of asynchronous inference as ElastiCache and Secrets Manager would need it."""

import json
from typing import Any, cast

import pulumi
import pytest

from stacks.components.job_queue import (
    ALARMS,
    ELASTICACHE_SERVICE,
    PORT,
    JobQueue,
    JobQueueArgs,
    member_ids,
    replication_group_id,
)
from stacks.preview.monitor import Registration
from stacks.settings import JobQueueConfig
from tests.stacks.conftest import TAGS, Built, build_component

REGION = "eu-central-1"
NODE_SG = "sg-0123456789abcdef0"
SUBNETS = ["subnet-0a", "subnet-0b", "subnet-0c"]
CONFIG = JobQueueConfig(
    node_type="cache.r7g.large",
    engine_version="7.1",
    replicas=2,
    snapshot_retention_days=7,
    input_retention_days=7,
)
RG = "aws:elasticache/replicationGroup:ReplicationGroup"
SLR = "aws:iam/serviceLinkedRole:ServiceLinkedRole"


def queue_args(**overrides: Any) -> JobQueueArgs:
    values: dict[str, Any] = {
        "prefix": "eu-prod-eu-central-1",
        "region": REGION,
        "config": CONFIG,
        "vpc_id": "vpc-0123456789abcdef0",
        "vpc_cidr": "10.40.0.0/16",
        "private_subnet_ids": list(SUBNETS),
        "node_security_group_id": NODE_SG,
        "create_service_linked_role": True,
        "tags": TAGS,
    } | overrides
    return JobQueueArgs(**values)


@pytest.fixture(scope="module")
def queue() -> Built:
    return build_component(lambda opts: JobQueue("q", queue_args(), opts))


def _group(built: Built) -> Registration:
    return built.one(RG)


def test_replication_group_is_redis_7_multi_az_with_failover(queue: Built) -> None:
    inputs = _group(queue).inputs
    assert inputs["engine"] == "redis" and inputs["engineVersion"].startswith("7."), inputs
    assert inputs["automaticFailoverEnabled"] is True, "no automatic failover: a lost primary stops the queue"
    assert inputs["multiAzEnabled"] is True, "replicas may share the primary's zone"
    assert inputs["numCacheClusters"] == 1 + CONFIG.replicas >= 2, f"nodes: {inputs['numCacheClusters']}"


def test_transit_is_tls_only_and_clients_must_authenticate(queue: Built) -> None:
    inputs = _group(queue).inputs
    assert inputs["transitEncryptionEnabled"] is True, "no TLS in transit"
    assert inputs["transitEncryptionMode"] == "required", "mode preferred still admits plain clients"
    token = inputs.get("authToken")
    assert isinstance(token, dict) and token.get("value"), f"no AUTH token, or not marked secret: {token!r}"
    assert token["value"].isalnum() and 16 <= len(token["value"]) <= 128, (
        "ElastiCache takes 16-128 characters"
    )


def test_at_rest_encryption_uses_the_components_own_regional_key(queue: Built) -> None:
    inputs = _group(queue).inputs
    key = queue.one("aws:kms/key:Key")
    assert inputs["atRestEncryptionEnabled"] is True, "not encrypted at rest"
    assert inputs["kmsKeyId"].startswith(f"arn:aws:kms:{REGION}:"), (
        f"key outside the region: {inputs['kmsKeyId']}"
    )
    assert key.urn in _group(queue).property_dependencies["kmsKeyId"], (
        "the group does not use the queue's key"
    )


def test_key_policy_lets_iam_grant_the_key_to_elasticache_and_secrets_manager_callers(queue: Built) -> None:
    # ElastiCache and Secrets Manager use the key on behalf of the caller (kms:ViaService): the key policy
    # must trust the account, or no IAM policy (the deployer's, the secret syncer's) could grant its use.
    statements = json.loads(queue.one("aws:kms/key:Key").inputs["policy"])["Statement"]
    account = [s for s in statements if s["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}]
    assert account and account[0]["Action"] == "kms:*", f"key policy: {statements}"


def test_auth_token_lives_in_secrets_manager_under_the_same_key(queue: Built) -> None:
    secret = queue.one("aws:secretsmanager/secret:Secret")
    key = queue.one("aws:kms/key:Key")
    assert key.urn in secret.property_dependencies["kmsKeyId"], "secret not encrypted with the queue's key"
    assert secret.inputs["name"] == "eu-prod-eu-central-1/job-queue/auth-token", secret.inputs["name"]
    assert "replicas" not in secret.inputs, "the token must not be copied out of the region"


def test_group_reads_its_token_from_the_secret_once_the_version_exists(queue: Built) -> None:
    version = queue.one("aws:secretsmanager/secretVersion:SecretVersion")
    group = _group(queue)
    assert version.urn in group.property_dependencies["authToken"], (
        "the group's token must be what Secrets Manager holds, read after the version is stored"
    )
    assert group.inputs["authToken"]["value"] == version.inputs["secretString"]["value"], (
        "the group and the secret disagree on the token"
    )


def test_nodes_sit_in_the_private_subnets(queue: Built) -> None:
    subnets = queue.one("aws:elasticache/subnetGroup:SubnetGroup")
    assert subnets.inputs["subnetIds"] == SUBNETS, subnets.inputs
    assert _group(queue).inputs["subnetGroupName"] == subnets.inputs["name"], "group outside its subnet group"


def test_only_the_clusters_nodes_reach_the_port(queue: Built) -> None:
    group = _group(queue)
    groups = [g for g in queue.of_type("aws:ec2/securityGroup:SecurityGroup") if g.name == "q-redis"]
    assert len(groups) == 1 and not groups[0].inputs.get("ingress"), f"inline rules: {groups}"
    assert group.property_dependencies["securityGroupIds"] == (groups[0].urn,), "group behind another SG"
    rules = queue.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert len(rules) == 1, [r.name for r in rules]
    rule = rules[0].inputs
    assert rule["referencedSecurityGroupId"] == NODE_SG and "cidrIpv4" not in rule, rule
    assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (PORT, PORT, "tcp"), rule


def test_parameter_group_never_evicts(queue: Built) -> None:
    parameters = queue.one("aws:elasticache/parameterGroup:ParameterGroup")
    assert parameters.inputs["family"] == "redis7", parameters.inputs
    assert {p["name"]: p["value"] for p in parameters.inputs["parameters"]} == {
        "maxmemory-policy": "noeviction"
    }
    assert _group(queue).inputs["parameterGroupName"] == parameters.inputs["name"], "group on the default"


def test_alarms_cover_memory_evictions_lag_and_cpu_on_every_node(queue: Built) -> None:
    alarms = queue.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert alarms, "no alarms"
    seen = {(a.inputs["metricName"], a.inputs["dimensions"]["CacheClusterId"]) for a in alarms}
    nodes = member_ids(_group(queue).inputs["replicationGroupId"], CONFIG.nodes)
    metrics = {"DatabaseMemoryUsagePercentage", "Evictions", "ReplicationLag", "EngineCPUUtilization"}
    assert {a.metric for a in ALARMS} == metrics, ALARMS
    assert seen == {(m, n) for m in metrics for n in nodes}, (
        f"missing {sorted({(m, n) for m in metrics for n in nodes} - seen)}"
    )
    evictions = [a.inputs for a in alarms if a.inputs["metricName"] == "Evictions"]
    assert all(a["threshold"] == 0 and a["namespace"] == "AWS/ElastiCache" for a in evictions), evictions


TOPIC = "aws:sns/topic:Topic"


def _fed_by(consumer: Registration, field: str, producers: list[Registration]) -> bool:
    return set(consumer.property_dependencies.get(field, ())) == {p.urn for p in producers}


def test_every_alarm_notifies_the_queues_topic_when_it_fires_and_when_it_clears(queue: Built) -> None:
    topic = queue.one(TOPIC)
    alarms = queue.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert len(alarms) == len(ALARMS) * CONFIG.nodes, [a.name for a in alarms]
    for alarm in alarms:
        assert len(alarm.inputs["alarmActions"]) == 1 and len(alarm.inputs["okActions"]) == 1, alarm.inputs
        assert _fed_by(alarm, "alarmActions", [topic]) and _fed_by(alarm, "okActions", [topic]), alarm.name


def test_the_alarm_topic_is_under_the_queues_key_which_cloudwatch_and_sns_may_use(queue: Built) -> None:
    # A real CloudWatch alarm cannot publish to a topic under a key whose policy leaves CloudWatch out: the
    # action fails in the alarm's history and nobody hears of it. SNS needs the key to deliver.
    key = queue.one("aws:kms/key:Key")
    assert _fed_by(queue.one(TOPIC), "kmsMasterKeyId", [key]), "the topic must use the queue's own key"
    statements = {s.get("Sid"): s for s in json.loads(key.inputs["policy"])["Statement"]}
    services = statements["ServicesUseKey"]
    assert services["Principal"] == {"Service": ["cloudwatch.amazonaws.com", "sns.amazonaws.com"]}, services
    assert services["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"], services
    assert services["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}, services


def test_the_alarms_are_mailed_to_each_email_receiver() -> None:
    emails = ("oncall@example.eu", "data-platform@example.eu")
    built = build_component(lambda opts: JobQueue("q", queue_args(alarm_emails=emails), opts))
    subscriptions = built.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sorted((s.inputs["protocol"], s.inputs["endpoint"]) for s in subscriptions) == sorted(
        ("email", e) for e in emails
    ), [s.inputs for s in subscriptions]
    topic = built.one(TOPIC)
    assert all(_fed_by(s, "topic", [topic]) for s in subscriptions), "each subscription is to the alarm topic"


def test_without_email_receivers_nothing_is_subscribed(queue: Built) -> None:
    assert queue.of_type("aws:sns/topicSubscription:TopicSubscription") == []


def test_the_service_linked_role_comes_before_the_group_and_outlives_the_stack() -> None:
    retained: dict[str, bool] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if args.type_ == SLR:
            retained[args.name] = bool(args.opts.retain_on_delete)

    built = build_component(
        lambda opts: JobQueue(
            "q",
            queue_args(),
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[record])),
        )
    )
    role = built.one(SLR)
    assert role.inputs["awsServiceName"] == ELASTICACHE_SERVICE, role.inputs
    assert role.urn in _group(built).dependencies, "the group may be created before ElastiCache's role exists"
    assert retained == {"q-elasticache": True}, (
        f"destroying the stack would delete an account-wide role: {retained}"
    )


def test_a_secondary_region_waits_for_the_primarys_role_and_creates_none() -> None:
    def make(opts: pulumi.ResourceOptions) -> None:
        first = JobQueue("first", queue_args(), opts)
        JobQueue(
            "second",
            queue_args(
                prefix="eu-prod-eu-west-1",
                create_service_linked_role=False,
                service_linked_role=first.service_linked_role,
            ),
            opts,
        )

    built = build_component(make)
    roles = built.of_type(SLR)
    assert [r.name for r in roles] == ["first-elasticache"], "the role is one per account"
    second = built.one(RG, "second-redis")
    assert roles[0].urn in second.dependencies, "the secondary's group does not wait for the role"


def test_group_is_protected_from_destroy() -> None:
    protected: dict[str, bool] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if args.type_ == RG:
            protected[args.name] = bool(args.opts.protect)

    build_component(
        lambda opts: JobQueue(
            "q",
            queue_args(),
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[record])),
        )
    )
    assert protected == {"q-redis": True}, f"destroy would drop every queued job: {protected}"


def test_secrets_manager_is_reachable_inside_the_vpc(queue: Built) -> None:
    endpoints = queue.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert [e.inputs["serviceName"] for e in endpoints] == [f"com.amazonaws.{REGION}.secretsmanager"], (
        endpoints
    )
    endpoint = endpoints[0].inputs
    assert endpoint["privateDnsEnabled"] is True and endpoint["subnetIds"] == SUBNETS, endpoint


def test_every_resource_is_in_the_components_region(queue: Built) -> None:
    located = [r for r in queue.registrations if r.custom and r.type.startswith("aws:")]
    assert len(located) > 10, [r.type for r in located]
    assert {queue.regions[r.urn] for r in located} == {REGION}, "a resource left the region"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eu-prod-eu-central-1", "eu-prod-eu-central-1-jobs"),
        ("a--b", "a-b-jobs"),
    ],
)
def test_replication_group_id_is_a_valid_id(prefix: str, expected: str) -> None:
    assert replication_group_id(prefix) == expected


def test_a_long_prefix_gets_a_short_unique_id() -> None:
    first = replication_group_id("acme-production-platform-eu-central-1")
    second = replication_group_id("acme-production-platform-eu-central-2")
    assert len(first) <= 40 and len(second) <= 40, (first, second)
    assert first != second and "--" not in first and not first.endswith("-"), (first, second)


def test_args_refuse_a_second_service_linked_role() -> None:
    # Refused before anything registers: a stand-in for the other region's role suffices.
    other_regions_role = cast(pulumi.Resource, object())
    with pytest.raises(ValueError, match="one per account"):
        JobQueue("q", queue_args(service_linked_role=other_regions_role))


SECRET = "aws:secretsmanager/secret:Secret"
VERSION = "aws:secretsmanager/secretVersion:SecretVersion"


@pytest.fixture(scope="module")
def with_callbacks() -> Built:
    return build_component(lambda opts: JobQueue("q", queue_args(callbacks=True), opts))


def test_without_callbacks_there_is_no_callback_key(queue: Built) -> None:
    names = [s.inputs["name"] for s in queue.of_type(SECRET)]
    assert names == ["eu-prod-eu-central-1/job-queue/auth-token"], names


def test_the_callback_key_lives_in_secrets_manager_under_the_queues_key(with_callbacks: Built) -> None:
    secret = with_callbacks.one(SECRET, "-callback-key")
    key = with_callbacks.one("aws:kms/key:Key")
    assert secret.inputs["name"] == "eu-prod-eu-central-1/job-queue/callback-key", secret.inputs["name"]
    assert key.urn in secret.property_dependencies["kmsKeyId"], (
        "callback key not encrypted with the region's key"
    )
    assert "replicas" not in secret.inputs, "the key must not be copied out of the region"


def test_the_callback_key_is_generated_long_enough(with_callbacks: Built) -> None:
    version = with_callbacks.one(VERSION, "-callback-key")
    stored = version.inputs["secretString"]["value"]
    assert len(stored.encode()) >= 32 and stored.isalnum(), f"an HMAC key of {len(stored)} bytes"
