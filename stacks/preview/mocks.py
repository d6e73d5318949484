"""Mocks that answer like AWS and Kubernetes would: realistic ids, ARNs and each region's availability zones.

Values are derived from a hash of the resource's name, type and region, so a plan is the same on every run.
"""

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pulumi

ACCOUNT_ID = "123456789012"
ZONES_INVOKE = "aws:index/getAvailabilityZones:getAvailabilityZones"
IDENTITY_INVOKE = "aws:index/getCallerIdentity:getCallerIdentity"
PARTITION_INVOKE = "aws:index/getPartition:getPartition"
RANDOM_PASSWORD_INVOKE = "aws:secretsmanager/getRandomPassword:getRandomPassword"  # noqa: S105 - a token
SECRET_VERSION_INVOKE = "aws:secretsmanager/getSecretVersion:getSecretVersion"  # noqa: S105 - a type token
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"  # noqa: S105 - a type token
STACK_REFERENCE = "pulumi:pulumi:StackReference"
_SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 - the SDK's marker key, not a secret
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 - the SDK's secret marker, not a secret
"""How the SDK marks a secret value in the properties it sends (`{sig key: secret sig, "value": ...}`)."""
UNKNOWN_ID = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
"""The id the engine gives a resource it has not created yet (providers in a preview)."""

# Availability zones an account sees in each region the jurisdictions allow (us-west-1 offers new
# accounts two).
AVAILABILITY_ZONES: dict[str, tuple[str, ...]] = {
    "me-central-1": ("a", "b", "c"),
    "eu-central-1": ("a", "b", "c"),
    "eu-west-1": ("a", "b", "c"),
    "eu-west-3": ("a", "b", "c"),
    "eu-north-1": ("a", "b", "c"),
    "eu-south-1": ("a", "b", "c"),
    "eu-south-2": ("a", "b", "c"),
    "us-east-1": ("a", "b", "c", "d", "e", "f"),
    "us-east-2": ("a", "b", "c"),
    "us-west-1": ("b", "c"),
    "us-west-2": ("a", "b", "c", "d"),
}
_ZONE_ID_PREFIX = {
    "me-central-1": "mec1",
    "eu-central-1": "euc1",
    "eu-west-1": "euw1",
    "eu-west-3": "euw3",
    "eu-north-1": "eun1",
    "eu-south-1": "eus1",
    "eu-south-2": "eus2",
    "us-east-1": "use1",
    "us-east-2": "use2",
    "us-west-1": "usw1",
    "us-west-2": "usw2",
}
# Prefixes of EC2-style ids, by resource type.
_EC2_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
    "aws:ec2/route:Route": "r-rtb",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "sg",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
    "aws:ec2/flowLog:FlowLog": "fl",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt",
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": "pcx",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr",
}


def _plain(value: Any) -> Any:
    """A value without the SDK's secret wrapping (the engine keeps the plain value beside the secret mark)."""
    if isinstance(value, dict) and value.get(_SECRET_SIG_KEY) == _SECRET_SIG:
        return _plain(value.get("value"))
    return value


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


class RealisticMocks(pulumi.runtime.Mocks):
    """Answers resource registrations and invokes with values shaped like the real services'."""

    def __init__(
        self,
        default_region: str | None = None,
        stack_outputs: dict[str, dict[str, Any]] | None = None,
        account: str = ACCOUNT_ID,
    ) -> None:
        self.default_region = default_region
        self.account = account
        """The account the deployer's credentials belong to (what `GetCallerIdentity` answers)."""
        self.stack_outputs = stack_outputs or {}
        """Fully qualified stack name -> its outputs, for the StackReferences a program reads."""
        self.provider_regions: dict[str, str] = {}
        """Provider reference (`urn::id`) -> region; the recording monitor fills it as providers register."""
        self.secret_values: dict[str, str] = {}
        """Secret id -> the value its latest SecretVersion stored (what GetSecretValue answers)."""

    def region_of(self, provider: str | None) -> str:
        """The region a provider reference points at (the default region when there is none)."""
        region = self.provider_regions.get(provider or "", self.default_region)
        if region is None:
            raise ValueError(f"no region known for provider {provider!r}")
        return region

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        """Answer the invokes the program makes, per region."""
        if args.token == ZONES_INVOKE:
            region = self.region_of(args.provider)
            letters = AVAILABILITY_ZONES[region]
            prefix = _ZONE_ID_PREFIX[region]
            return {
                "id": region,
                "names": [f"{region}{letter}" for letter in letters],
                "zoneIds": [f"{prefix}-az{i + 1}" for i in range(len(letters))],
                "state": "available",
                "groupNames": [region],
            }, []
        if args.token == IDENTITY_INVOKE:
            arn = f"arn:aws:sts::{self.account}:assumed-role/platform-deployer/pulumi"
            return {
                "id": self.account,
                "accountId": self.account,
                "arn": arn,
                "userId": "AROAEXAMPLE:pulumi",
            }, []
        if args.token == PARTITION_INVOKE:
            return {
                "id": "aws",
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
            }, []
        if args.token in (RANDOM_PASSWORD_INVOKE, SECRET_VERSION_INVOKE):
            return self._secrets_invoke(args)
        raise NotImplementedError(f"no mock for invoke {args.token}")

    def _secrets_invoke(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Secrets Manager's password generator (letters and digits, as asked), and a secret's current value:
        what its last SecretVersion stored, and a failure for a secret that holds none, as the service
        fails."""
        if args.token == RANDOM_PASSWORD_INVOKE:
            length = int(args.args.get("passwordLength") or 32)
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            seed = json.dumps(args.args, sort_keys=True)
            stream = b"".join(
                hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(length // 32 + 1)
            )
            password = "".join(alphabet[b % len(alphabet)] for b in stream[:length])
            return {"id": self.region_of(args.provider), "randomPassword": password}, []
        secret_id = str(args.args.get("secretId", ""))
        if secret_id not in self.secret_values:
            raise ValueError(f"GetSecretValue: secret {secret_id!r} has no value (ResourceNotFoundException)")
        version = _digest(secret_id, self.secret_values[secret_id])[:32]
        return {
            "id": f"{secret_id}|AWSCURRENT",
            "arn": secret_id,
            "secretId": secret_id,
            "secretString": self.secret_values[secret_id],
            "versionId": version,
            "versionStages": ["AWSCURRENT"],
        }, []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        """Return an id and outputs: the inputs plus what the cloud would compute."""
        if args.typ == "pulumi:providers:aws":
            # The provider refuses to configure when the caller's account is not one it may touch.
            allowed = args.inputs.get("allowedAccountIds")
            allowed = json.loads(allowed) if isinstance(allowed, str) else allowed
            if allowed and self.account not in allowed:
                raise ValueError(
                    f"provider {args.name}: account {self.account} is not in allowedAccountIds {allowed}"
                )
        if args.typ.startswith("pulumi:providers:"):
            return UNKNOWN_ID, dict(args.inputs)
        if args.typ == STACK_REFERENCE:
            # The engine reads the other stack's state; a reference to a stack it cannot find fails.
            name = str(args.inputs.get("name", args.resource_id))
            if name not in self.stack_outputs:
                raise ValueError(f"stack reference {name!r}: no such stack planned")
            return name, {"name": name, "outputs": self.stack_outputs[name], "secretOutputNames": []}
        if args.typ.startswith("kubernetes:") or not args.typ.startswith("aws:"):
            return self._kubernetes(args)
        region = self.region_of(args.provider)
        if args.typ == SECRET_VERSION:
            self.secret_values[str(args.inputs.get("secretId", ""))] = str(
                _plain(args.inputs.get("secretString"))
            )
        return _aws(args.typ, args.name, region, dict(args.inputs), self.account)

    def _kubernetes(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        meta = outputs.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name", args.name)
        resource_id = args.resource_id or (f"{namespace}/{name}" if namespace else name)
        if args.typ == "kubernetes:core/v1:Service" and args.resource_id:
            # A read of the ingress gateway's Service: the NLB the load balancer controller made for it.
            region = self.region_of(args.provider)
            digest = _digest(args.resource_id, args.name)
            host = f"k8s-istiosys-istioing-{digest[:10]}-{digest[10:26]}.elb.{region}.amazonaws.com"
            outputs["status"] = {"loadBalancer": {"ingress": [{"hostname": host}]}}
        return resource_id, outputs


def _arn(account: str, service: str, region: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def _aws(  # noqa: PLR0911 - one answer per kind of AWS resource
    typ: str, name: str, region: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    digest = _digest(typ, name, region)
    module = typ.split(":")[1].split("/", maxsplit=1)[0]
    if typ in _EC2_PREFIX:
        resource_id = f"{_EC2_PREFIX[typ]}-{digest[:17]}"
        outputs["arn"] = _arn(account, "ec2", region, f"{typ.rsplit(':', 1)[1].lower()}/{resource_id}")
        # A gateway endpoint publishes its service's prefix list (security groups allow S3 by it).
        gateway = (
            {"prefixListId": f"pl-{digest[17:25]}"} if outputs.get("vpcEndpointType") == "Gateway" else {}
        )
        return resource_id, outputs | {"ownerId": account} | gateway
    if typ == "aws:kms/key:Key":
        key_id = f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-a{digest[17:20]}-{digest[20:32]}"
        return key_id, outputs | {"arn": _arn(account, "kms", region, f"key/{key_id}"), "keyId": key_id}
    if typ.startswith("aws:s3/bucket:"):
        bucket = outputs.get("bucket") or f"{name}-{digest[:7]}"
        return bucket, outputs | {
            "bucket": bucket,
            "arn": f"arn:aws:s3:::{bucket}",
            "region": region,
            "bucketDomainName": f"{bucket}.s3.amazonaws.com",
            "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
        }
    if module == "iam":
        iam_name = outputs.get("name") or f"{name}-{digest[:7]}"
        kind = {"Role": "role", "Policy": "policy", "OpenIdConnectProvider": "oidc-provider"}.get(
            typ.rsplit(":", 1)[1], "resource"
        )
        if kind == "oidc-provider":
            iam_name = str(outputs.get("url", "")).removeprefix("https://")
        arn = f"arn:aws:iam::{account}:{kind}/{iam_name}"
        resource_id = arn if kind in {"policy", "oidc-provider"} else iam_name
        return resource_id, outputs | {"arn": arn, "name": iam_name, "uniqueId": f"AROA{digest[:17].upper()}"}
    if typ == "aws:eks/cluster:Cluster":
        return _eks(name, region, digest, outputs, account)
    if typ == "aws:cloudwatch/logGroup:LogGroup":
        group = outputs.get("name") or f"{name}-{digest[:7]}"
        return group, outputs | {"arn": _arn(account, "logs", region, f"log-group:{group}"), "name": group}
    if module == "route53":
        resource_id = (
            digest[:20].upper() if typ.endswith("HealthCheck") else f"{outputs.get('zoneId')}_{name}"
        )
        fqdn = {"fqdn": outputs.get("name")} if typ.endswith(":Record") else {}
        return resource_id, outputs | fqdn | {"arn": f"arn:aws:route53:::healthcheck/{resource_id}"}
    if typ in _COMPUTED:
        return _COMPUTED[typ](name, region, digest, outputs, account)
    resource_id = f"{name}-{digest[:8]}"
    return resource_id, outputs | {
        "arn": _arn(account, module, region, f"{typ.rsplit(':', 1)[1].lower()}/{resource_id}")
    }


def _eks(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    cluster = outputs.get("name") or f"{name}-{digest[:7]}"
    oidc = digest[:32].upper()
    ca = base64.b64encode(
        f"-----BEGIN CERTIFICATE-----\n{digest}\n-----END CERTIFICATE-----\n".encode()
    ).decode()
    return cluster, outputs | {
        "name": cluster,
        "arn": _arn(account, "eks", region, f"cluster/{cluster}"),
        "endpoint": f"https://{oidc}.gr7.{region}.eks.amazonaws.com",
        "certificateAuthority": {"data": ca},
        "identities": [{"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{oidc}"}]}],
        # EKS creates the cluster security group (control-plane ENIs and managed nodes share it).
        "vpcConfig": (outputs.get("vpcConfig") or {}) | {"clusterSecurityGroupId": f"sg-{digest[32:49]}"},
        "platformVersion": "eks.9",
        "status": "ACTIVE",
    }


def _load_balancer(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """A network load balancer: its ARN is the id; aliases need its DNS name and canonical zone."""
    lb_name = (outputs.get("name") or f"{name}-{digest[:7]}")[:32]
    arn = _arn(account, "elasticloadbalancing", region, f"loadbalancer/net/{lb_name}/{digest[:16]}")
    return arn, outputs | {
        "arn": arn,
        "name": lb_name,
        "dnsName": f"{lb_name}-{digest[16:26]}.elb.{region}.amazonaws.com",
        "zoneId": f"Z{digest[26:39].upper()}",
    }


def _target_group(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    tg_name = (outputs.get("name") or f"{name}-{digest[:7]}")[:32]
    arn = _arn(account, "elasticloadbalancing", region, f"targetgroup/{tg_name}/{digest[:16]}")
    return arn, outputs | {"arn": arn, "name": tg_name}


def _certificate(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """An ACM certificate with one DNS validation record per name, as ACM asks for them."""
    uuid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    arn = _arn(account, "acm", region, f"certificate/{uuid}")
    names = [outputs.get("domainName", ""), *(outputs.get("subjectAlternativeNames") or [])]
    options = [
        {
            "domainName": domain,
            "resourceRecordName": f"_{_digest(domain)[:32]}.{domain}.",
            "resourceRecordType": "CNAME",
            "resourceRecordValue": f"_{_digest(domain, account)[:32]}.acm-validations.aws.",
        }
        for domain in names
    ]
    return arn, outputs | {"arn": arn, "domainValidationOptions": options, "status": "PENDING_VALIDATION"}


def _firewall(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """A Network Firewall with one endpoint per mapped subnet (subnets are mapped in AZ order)."""
    arn = _arn(account, "network-firewall", region, f"firewall/{outputs.get('name') or name}")
    zones = AVAILABILITY_ZONES[region]
    states = [
        {
            "availabilityZone": f"{region}{zones[i]}",
            "attachments": [
                {
                    "endpointId": f"vpce-{_digest(digest, str(i))[:17]}",
                    "subnetId": m["subnetId"],
                    "status": "READY",
                }
            ],
        }
        for i, m in enumerate(outputs.get("subnetMappings") or [])
    ]
    return arn, outputs | {"arn": arn, "firewallStatuses": [{"syncStates": states}]}


def _peering_accepter(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """A peering's accepter: EC2 names it by the connection's `pcx-` id; auto-accepting makes it active."""
    status = "active" if outputs.get("autoAccept") else "pending-acceptance"
    return str(outputs.get("vpcPeeringConnectionId", "")), outputs | {"acceptStatus": status}


def _peering_options(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """One side's options of a peering: EC2 names them by the connection's `pcx-` id too."""
    return str(outputs.get("vpcPeeringConnectionId", "")), outputs


def _replication_group(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """An ElastiCache replication group (cluster mode off): its endpoints carry the group's id, a hash and the
    region's short code, its member clusters the id and a number."""
    group = outputs.get("replicationGroupId") or f"{name}-{digest[:7]}"
    host = f"{group}.{digest[:6]}.{_ZONE_ID_PREFIX[region]}.cache.amazonaws.com"
    nodes = int(outputs.get("numCacheClusters") or 1)
    return group, outputs | {
        "arn": _arn(account, "elasticache", region, f"replicationgroup:{group}"),
        "primaryEndpointAddress": f"master.{host}",
        "readerEndpointAddress": f"replica.{host}",
        "memberClusters": [f"{group}-{i:03d}" for i in range(1, nodes + 1)],
        "clusterEnabled": False,
    }


def _secret(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """A Secrets Manager secret: its ARN, the id, ends with six random characters after its name."""
    arn = _arn(account, "secretsmanager", region, f"secret:{outputs.get('name') or name}-{digest[:6]}")
    return arn, outputs | {"arn": arn}


def _secret_version(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    version = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    return f"{outputs.get('secretId')}|{version}", outputs | {
        "versionId": version,
        "arn": outputs.get("secretId"),
    }


_Answer = Callable[[str, str, str, dict[str, Any], str], tuple[str, dict[str, Any]]]


def _named(service: str, kind: str) -> _Answer:
    """A resource the service names when the program does not (SageMaker models, configs and endpoints, SNS
    topics), with its ARN; SNS ARNs end in the bare topic name."""

    def answer(
        name: str, region: str, digest: str, outputs: dict[str, Any], account: str
    ) -> tuple[str, dict[str, Any]]:
        given = outputs.get("name") or f"{name}-{digest[:7]}"
        arn = _arn(account, service, region, f"{kind}/{given}" if kind else given)
        return (arn if service == "sns" else given), outputs | {"name": given, "arn": arn}

    return answer


def _table(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """A DynamoDB table: its id is its name, its ARN `table/<name>` (IAM policies name it)."""
    given = outputs.get("name") or f"{name}-{digest[:7]}"
    arn = _arn(account, "dynamodb", region, f"table/{given}")
    return given, outputs | {"name": given, "arn": arn, "streamArn": ""}


def _http_api(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """An HTTP API: a ten-character id, its execute-api host and the ARN Lambda permissions name."""
    api_id = digest[:10]
    return api_id, outputs | {
        "apiEndpoint": f"https://{api_id}.execute-api.{region}.amazonaws.com",
        "executionArn": _arn(account, "execute-api", region, api_id),
        "arn": f"arn:aws:apigateway:{region}::/apis/{api_id}",
    }


def _function(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """A Lambda function: its ARN, and the invoke ARN API Gateway integrations call."""
    given = outputs.get("name") or f"{name}-{digest[:7]}"
    arn = _arn(account, "lambda", region, f"function:{given}")
    invoke = f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations"
    return given, outputs | {"name": given, "arn": arn, "invokeArn": invoke}


def _api_domain(
    name: str, region: str, digest: str, outputs: dict[str, Any], account: str
) -> tuple[str, dict[str, Any]]:
    """An API Gateway custom domain: the regional host and hosted zone its alias record points at."""
    config = dict(outputs.get("domainNameConfiguration") or {})
    config |= {
        "targetDomainName": f"d-{digest[:10]}.execute-api.{region}.amazonaws.com",
        "hostedZoneId": "ZAPIGW0000000",
    }
    return str(outputs.get("domainName")), outputs | {"domainNameConfiguration": config}


_COMPUTED = {
    "aws:apigatewayv2/api:Api": _http_api,
    "aws:apigatewayv2/domainName:DomainName": _api_domain,
    "aws:lambda/function:Function": _function,
    "aws:dynamodb/table:Table": _table,
    "aws:sagemaker/model:Model": _named("sagemaker", "model"),
    "aws:sagemaker/endpointConfiguration:EndpointConfiguration": _named("sagemaker", "endpoint-config"),
    "aws:sagemaker/endpoint:Endpoint": _named("sagemaker", "endpoint"),
    "aws:sns/topic:Topic": _named("sns", ""),
    "aws:elasticache/replicationGroup:ReplicationGroup": _replication_group,
    "aws:secretsmanager/secret:Secret": _secret,
    SECRET_VERSION: _secret_version,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:acm/certificate:Certificate": _certificate,
    "aws:networkfirewall/firewall:Firewall": _firewall,
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": _peering_accepter,
    "aws:ec2/peeringConnectionOptions:PeeringConnectionOptions": _peering_options,
}
"""Resources whose outputs the service computes and the program reads (DNS names, validation records)."""
