"""JobQueue: the in-region queue of asynchronous inference, an ElastiCache (Redis OSS) replication group.

Redis Streams carry the jobs (consumer groups give at-least-once delivery, XAUTOCLAIM the visibility timeout),
so the queue must never drop an entry: its parameter group sets `maxmemory-policy noeviction`, and a full
queue refuses writes (the serving image answers 429) instead of evicting jobs.

Order matters on a fresh account: ElastiCache's service-linked role (it manages the group's network
interfaces) before the group; the auth token's secret before the group that reads its token from it.
The key needs no statement for ElastiCache or Secrets Manager: both use it on behalf of the caller (the
deployer creating the group, the secret syncer reading the secret), whose IAM policies the key's account
statement lets grant it.
"""

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.settings import JobQueueConfig

PORT = 6379
ALARM_KEY_USERS = ("cloudwatch.amazonaws.com", "sns.amazonaws.com")
"""Services that use the queue's key for its alarm topic: CloudWatch publishes to it, SNS delivers from it."""
ELASTICACHE_SERVICE = "elasticache.amazonaws.com"
REPLICATION_GROUP_ID_LIMIT = 40
TOKEN_LENGTH = 64
"""AUTH token characters: ElastiCache takes 16 to 128 printable characters; letters and digits only, so the
token needs no escaping in the `rediss://` URL the pods get."""
CALLBACK_KEY_LENGTH = 64
"""Characters of the callbacks' HMAC key (letters and digits: 64 bytes, twice the image's minimum of 32)."""


@dataclass(frozen=True)
class QueueAlarm:
    """A CloudWatch alarm on one metric of every cache node."""

    key: str
    metric: str
    statistic: str
    threshold: float
    periods: int
    missing: str
    """What a period without data counts as (a primary reports no replication lag)."""
    description: str


ALARMS = (
    QueueAlarm(
        "memory",
        "DatabaseMemoryUsagePercentage",
        "Maximum",
        80,
        3,
        "missing",
        "The queue is filling up; at 100% it refuses new jobs (noeviction): add workers or a larger node.",
    ),
    QueueAlarm(
        "evictions",
        "Evictions",
        "Sum",
        0,
        1,
        "notBreaching",
        "Keys were evicted: jobs may be lost. maxmemory-policy must be noeviction.",
    ),
    QueueAlarm(
        "replication-lag",
        "ReplicationLag",
        "Maximum",
        30,
        5,
        "notBreaching",
        "A replica lags the primary by more than 30 s: a failover now would lose the jobs written since.",
    ),
    QueueAlarm(
        "cpu",
        "EngineCPUUtilization",
        "Average",
        80,
        5,
        "missing",
        "The Redis engine thread is saturated: submits and reads slow down.",
    ),
)
"""Memory, evictions, replication lag and engine CPU, on each node (the primary can change at a failover)."""


def replication_group_id(prefix: str) -> str:
    """The group's id from the cluster's name (stack and region): at most 40 characters, no double hyphen."""
    name = f"{prefix}-jobs".lower()
    while "--" in name:
        name = name.replace("--", "-")
    if len(name) <= REPLICATION_GROUP_ID_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: REPLICATION_GROUP_ID_LIMIT - 9].rstrip('-')}-{digest}"


def member_ids(group_id: str, nodes: int) -> list[str]:
    """The cache clusters named for a group's nodes (`<group>-001`, ...), the alarms' dimension."""
    return [f"{group_id}-{i:03d}" for i in range(1, nodes + 1)]


@dataclass(frozen=True, kw_only=True)
class JobQueueArgs:
    """Inputs of `JobQueue`."""

    prefix: str
    """`<stack>-<region>` (the cluster's name): the group's id and the secret's name start with it."""
    region: str
    """The region of the group, its key and its secret."""
    config: JobQueueConfig
    """Node type, engine version, replicas, snapshots."""
    vpc_id: pulumi.Input[str]
    """The region's VPC."""
    vpc_cidr: str
    """Its range: the Secrets Manager endpoint takes HTTPS from it."""
    private_subnet_ids: list[pulumi.Input[str]]
    """The private subnets, one per zone: the subnet group, and the Secrets Manager endpoint."""
    node_security_group_id: pulumi.Input[str]
    """The cluster's node security group: the only one admitted to the queue's port."""
    create_service_linked_role: bool
    """Create ElastiCache's service-linked role: once per account (the primary region of one stack)."""
    service_linked_role: pulumi.Resource | None = None
    """The role when another region's `JobQueue` creates it: the group waits for it."""
    callbacks: bool = False
    """Job callbacks are on (the stack allows callback hosts): a generated HMAC key the workers sign with."""
    alarm_emails: tuple[str, ...] = ()
    """Where the alarms are mailed: the stack's e-mail alert receivers (each confirms SNS's first message)."""
    tags: dict[str, str]
    """Tags."""


class JobQueue(pulumi.ComponentResource):
    """A Multi-AZ replication group with automatic failover, TLS and AUTH, encrypted at rest with its own
    regional key, in the private subnets behind a security group that admits only the cluster's nodes; its
    AUTH token in Secrets Manager under the same key; alarms on memory, evictions, replication lag and CPU."""

    endpoint: pulumi.Output[str]
    port: int
    secret_arn: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    replication_group_id: str
    security_group_id: pulumi.Output[str]
    service_linked_role: aws.iam.ServiceLinkedRole | None
    callback_secret_arn: pulumi.Output[str] | None
    """The callbacks' HMAC key in Secrets Manager (under the queue's key); None with callbacks off."""
    alarm_topic_arn: pulumi.Output[str]
    """The SNS topic every alarm of the queue notifies, on alarm and on recovery (under the queue's key)."""

    def __init__(self, name: str, args: JobQueueArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if args.create_service_linked_role and args.service_linked_role is not None:
            raise ValueError(
                "create_service_linked_role and service_linked_role both set: the role is one per account"
            )
        super().__init__("model-serving:queue:JobQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.replication_group_id = replication_group_id(args.prefix)
        key = RegionalKey(
            f"{name}-key",
            RegionalKeyArgs(
                purpose="asynchronous inference jobs, their queue's token and its alarms",
                region=args.region,
                # CloudWatch encrypts each alarm's message to the topic with the key, SNS decrypts it to
                # deliver: an encrypted topic whose key leaves CloudWatch out silently drops every alarm.
                service_users=ALARM_KEY_USERS,
                tags=args.tags,
            ),
            opts=child,
        )
        token = self._auth_token(name, args, key)
        security_group = _security_group(name, args, child)
        group = self._replication_group(name, args, key, token, security_group)
        topic = _alarm_topic(name, args, key, child)
        _alarms(name, args, self.replication_group_id, group, topic, child)
        _secrets_manager_endpoint(name, args, child)
        self.callback_secret_arn = self._callback_key(name, args, key) if args.callbacks else None
        self.endpoint = group.primary_endpoint_address
        self.port = PORT
        self.key_arn = key.arn
        self.alarm_topic_arn = topic.arn
        self.security_group_id = security_group.id
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "port": self.port,
                "secret_arn": self.secret_arn,
                "key_arn": self.key_arn,
                "replication_group_id": self.replication_group_id,
                "security_group_id": self.security_group_id,
                "callback_secret_arn": self.callback_secret_arn,
                "alarm_topic_arn": self.alarm_topic_arn,
            }
        )

    def _callback_key(self, name: str, args: JobQueueArgs, key: RegionalKey) -> pulumi.Output[str]:
        """The key workers sign callbacks with (HMAC-SHA256; 64 letters and digits, more than the 32 bytes
        the image requires), generated by Secrets Manager like the AUTH token, so neither the program nor its
        state ever holds it: the in-cluster syncer copies it into the model's namespace."""
        secret = aws.secretsmanager.Secret(
            f"{name}-callback-key",
            name=f"{args.prefix}/job-queue/callback-key",
            description=f"HMAC key of the job callbacks of {self.replication_group_id}",
            kms_key_id=key.arn,
            recovery_window_in_days=7,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        generated = aws.secretsmanager.get_random_password_output(
            password_length=CALLBACK_KEY_LENGTH,
            exclude_punctuation=True,
            include_space=False,
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-callback-key",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(generated.random_password.apply(lambda p: p or "")),
            # The generator answers anew on every run: only the first value is stored.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["secretString"]),
        )
        return secret.arn

    def _auth_token(self, name: str, args: JobQueueArgs, key: RegionalKey) -> pulumi.Output[str]:
        """The AUTH token, kept in Secrets Manager under the queue's key, which is where the group reads it
        from: Secrets Manager is the one source (the in-cluster syncer reads it too), so a token put there by
        a rotation reaches the group on the next deploy. The first value comes from Secrets Manager's password
        generator; later runs leave the stored value alone."""
        secret = aws.secretsmanager.Secret(
            f"{name}-auth-token",
            name=f"{args.prefix}/job-queue/auth-token",
            description=f"AUTH token of the asynchronous inference queue {self.replication_group_id}",
            kms_key_id=key.arn,
            recovery_window_in_days=7,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        generated = aws.secretsmanager.get_random_password_output(
            password_length=TOKEN_LENGTH,
            exclude_punctuation=True,
            include_space=False,
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        version = aws.secretsmanager.SecretVersion(
            f"{name}-auth-token",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(generated.random_password.apply(lambda p: p or "")),
            # The generator answers anew on every run: only the first value is stored.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["secretString"]),
        )
        self.secret_arn = secret.arn
        stored = aws.secretsmanager.get_secret_version_output(
            secret_id=secret.id, opts=pulumi.InvokeOutputOptions(parent=self, depends_on=[version])
        )
        # The group depends on the version: its token is read only once the version exists.
        token: pulumi.Output[str] = pulumi.Output.all(token=stored.secret_string, version=version.id).apply(
            lambda v: str(v["token"])
        )
        return pulumi.Output.secret(token)

    def _replication_group(
        self,
        name: str,
        args: JobQueueArgs,
        key: RegionalKey,
        token: pulumi.Output[str],
        security_group: aws.ec2.SecurityGroup,
    ) -> aws.elasticache.ReplicationGroup:
        """The group, protected: destroying it would drop every queued job and stored result."""
        self.service_linked_role = None
        if args.create_service_linked_role:
            self.service_linked_role = aws.iam.ServiceLinkedRole(
                f"{name}-elasticache",
                aws_service_name=ELASTICACHE_SERVICE,
                description="ElastiCache (the asynchronous inference queue's network interfaces)",
                tags=args.tags,
                # Account-wide: other stacks' caches use it too, so destroying this stack keeps it.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
        role = self.service_linked_role or args.service_linked_role
        subnets = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=self.replication_group_id,
            description="Private subnets of the asynchronous inference queue",
            subnet_ids=args.private_subnet_ids,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        parameters = _parameter_group(name, args, self.replication_group_id, self)
        return aws.elasticache.ReplicationGroup(
            f"{name}-redis",
            replication_group_id=self.replication_group_id,
            description="Asynchronous inference jobs (Redis Streams) and their results",
            engine="redis",
            engine_version=args.config.engine_version,
            node_type=args.config.node_type,
            num_cache_clusters=args.config.nodes,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            port=PORT,
            parameter_group_name=parameters.name,
            subnet_group_name=subnets.name,
            security_group_ids=[security_group.id],
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            kms_key_id=key.arn,
            auth_token=token,
            # A new token in Secrets Manager is added beside the old one; `SET` later drops the old.
            auth_token_update_strategy="ROTATE",  # noqa: S106 - a strategy's name, not a token
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=args.config.snapshot_retention_days,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=True, depends_on=[role] if role else []),
        )


def _parameter_group(
    name: str, args: JobQueueArgs, group_id: str, parent: pulumi.Resource
) -> aws.elasticache.ParameterGroup:
    """The engine's defaults but for eviction: a queue must never drop an entry to make room."""
    return aws.elasticache.ParameterGroup(
        f"{name}-parameters",
        name=f"{group_id}-{args.config.parameter_group_family}",
        family=args.config.parameter_group_family,
        description="Job queue: never evict (a full queue refuses writes instead)",
        parameters=[aws.elasticache.ParameterGroupParameterArgs(name="maxmemory-policy", value="noeviction")],
        tags=args.tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def _security_group(name: str, args: JobQueueArgs, child: pulumi.ResourceOptions) -> aws.ec2.SecurityGroup:
    """The queue's port from the cluster's nodes (where every pod's traffic comes from), nothing else; no
    egress, since the group only answers."""
    group = aws.ec2.SecurityGroup(
        f"{name}-redis",
        vpc_id=args.vpc_id,
        description="Asynchronous inference queue: Redis TLS from the cluster's nodes only",
        tags=args.tags,
        opts=child,
    )
    aws.vpc.SecurityGroupIngressRule(
        f"{name}-redis-from-nodes",
        security_group_id=group.id,
        referenced_security_group_id=args.node_security_group_id,
        ip_protocol="tcp",
        from_port=PORT,
        to_port=PORT,
        description="Redis (TLS) from the cluster's nodes",
        tags=args.tags,
        opts=child,
    )
    return group


def _alarm_topic(
    name: str, args: JobQueueArgs, key: RegionalKey, child: pulumi.ResourceOptions
) -> aws.sns.Topic:
    """The alarms' topic, under the queue's key, mailed to each e-mail receiver. Its default access policy
    lets the account's own CloudWatch alarms publish; webhook receivers take Alertmanager's payload, not
    SNS's, so they are not subscribed (subscribe a pager to the exported ARN)."""
    topic = aws.sns.Topic(f"{name}-alarms", kms_master_key_id=key.arn, tags=args.tags, opts=child)
    for index, email in enumerate(args.alarm_emails):
        aws.sns.TopicSubscription(
            f"{name}-alarms-mail-{index}", topic=topic.arn, protocol="email", endpoint=email, opts=child
        )
    return topic


def _alarms(
    name: str,
    args: JobQueueArgs,
    group_id: str,
    group: aws.elasticache.ReplicationGroup,
    topic: aws.sns.Topic,
    child: pulumi.ResourceOptions,
) -> None:
    """Each alarm of `ALARMS` on each node, notifying the topic when it fires and when it clears; they wait
    for the group, whose nodes publish the metrics."""
    after = pulumi.ResourceOptions(parent=child.parent, depends_on=[group])
    for alarm in ALARMS:
        for member in member_ids(group_id, args.config.nodes):
            aws.cloudwatch.MetricAlarm(
                f"{name}-{alarm.key}-{member.rsplit('-', 1)[1]}",
                name=f"{member}-{alarm.key}",
                alarm_description=alarm.description,
                namespace="AWS/ElastiCache",
                metric_name=alarm.metric,
                dimensions={"CacheClusterId": member},
                statistic=alarm.statistic,
                comparison_operator="GreaterThanThreshold",
                threshold=alarm.threshold,
                period=60,
                evaluation_periods=alarm.periods,
                treat_missing_data=alarm.missing,
                alarm_actions=[topic.arn],
                ok_actions=[topic.arn],
                tags=args.tags,
                opts=after,
            )


def _secrets_manager_endpoint(name: str, args: JobQueueArgs, child: pulumi.ResourceOptions) -> None:
    """Secrets Manager inside the VPC: the in-cluster syncer reads the token through it, since the egress
    firewall lets no AWS API out (the network's own endpoints do not include Secrets Manager)."""
    group = aws.ec2.SecurityGroup(
        f"{name}-secretsmanager",
        vpc_id=args.vpc_id,
        description="HTTPS from inside the VPC to the Secrets Manager endpoint",
        ingress=[
            aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=443, to_port=443, cidr_blocks=[args.vpc_cidr], description="VPC"
            )
        ],
        tags=args.tags,
        opts=child,
    )
    aws.ec2.VpcEndpoint(
        f"{name}-secretsmanager",
        vpc_id=args.vpc_id,
        service_name=f"com.amazonaws.{args.region}.secretsmanager",
        vpc_endpoint_type="Interface",
        private_dns_enabled=True,
        subnet_ids=args.private_subnet_ids,
        security_group_ids=[group.id],
        tags=args.tags,
        opts=child,
    )
