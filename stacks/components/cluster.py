"""Cluster: EKS with encrypted secrets, a private endpoint reached from the deploy runner, audit logs, IRSA,
managed add-ons and hardened managed nodes.

Order matters on a fresh account: the Auto Scaling service-linked role before the volume key that names it,
the vpc-cni add-on (with its own role) before the nodes it gives addresses to, and the add-ons that schedule
pods (CoreDNS, the EBS CSI driver) after the nodes.
"""

import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.components.identities import ServiceAccount, iam_name, irsa_role
from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.documents import assume_role_policy, volume_key_user_policy
from stacks.settings import ClusterConfig, IdentityConfig

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator")
POLICY = "arn:aws:iam::aws:policy/"
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly")
"""The node role's policies. The CNI's rights are on the vpc-cni add-on's own role, not every pod's node."""
CLUSTER_ADMIN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
AUTOSCALING_SERVICE = "autoscaling.amazonaws.com"
CNI_ACCOUNT = ServiceAccount("kube-system", "aws-node")
EBS_CSI_ACCOUNT = ServiceAccount("kube-system", "ebs-csi-controller-sa")
NETWORK_POLICY = {"enableNetworkPolicy": "true"}
"""vpc-cni configuration: its node agent enforces Kubernetes NetworkPolicies."""
ADDONS_AFTER_NODES = ("coredns", "kube-proxy")
"""Add-ons without an AWS identity, created once nodes exist (CoreDNS's pods need somewhere to run)."""
ROLE_ARN = re.compile(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+")
IDENTITY_GROUP_PREFIX = "idp:"
"""Prefix EKS puts before the identity provider's group names (RBAC bindings use it)."""


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str, role_arn: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` as the deploy role: no credential in it."""
    token_args = [
        "eks",
        "get-token",
        "--cluster-name",
        cluster_name,
        "--region",
        region,
        "--role-arn",
        role_arn,
    ]
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": token_args,
                        }
                    },
                }
            ],
        }
    )


@dataclass(frozen=True, kw_only=True)
class ClusterArgs:
    """Inputs of `Cluster`."""

    cluster_name: str
    """EKS cluster name (it carries the stack and the region)."""
    region: str
    """The region."""
    config: ClusterConfig
    """Version, endpoint access and node group."""
    identity: IdentityConfig
    """Identity provider for people."""
    private_subnet_ids: list[pulumi.Input[str]]
    """Subnets for the control plane ENIs and the nodes."""
    log_retention_days: int
    """Control-plane and container log retention."""
    deploy_role_arn: pulumi.Input[str]
    """The deploy runner's deploy role: cluster admin through an access entry; the kubeconfig assumes it."""
    runner_security_group_id: pulumi.Input[str] | None
    """The deploy runner's security group, let into the API endpoint on 443."""
    break_glass_role_arn: str
    """An IAM role for emergencies, cluster admin through an access entry."""
    create_autoscaling_role: bool
    """Create EC2 Auto Scaling's service-linked role. It is one per account: true in exactly one region of
    one stack on a fresh account, false where the account has it already or another region creates it."""
    autoscaling_role: pulumi.Resource | None = None
    """The service-linked role when another region's `Cluster` creates it: the volume key waits for it."""
    tags: dict[str, str]
    """Tags."""


class Cluster(pulumi.ComponentResource):
    """An EKS cluster administered through access entries (the deploy and break-glass roles), its nodes,
    managed add-ons and the log groups of its control plane and containers."""

    name: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    container_log_group: pulumi.Output[str]
    container_log_group_arn: pulumi.Output[str]
    autoscaling_role: aws.iam.ServiceLinkedRole | None

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        _check(args)
        super().__init__("model-serving:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = self._volume_key(name, args, child)
        containers = _container_log_group(name, args, key, child)
        cluster = self._control_plane(name, args, key, child)
        security_group = cluster.vpc_config.apply(lambda v: v.cluster_security_group_id or "")
        oidc, issuer = _service_account_issuer(name, args, cluster, child)
        self._access(name, args, cluster, security_group, child)
        cni = self._network_addon(name, args, cluster, oidc.arn, issuer, child)
        nodes = self._nodes(name, args, cluster, key, cni, child)
        self._addons(name, args, cluster, key.arn, oidc.arn, issuer, nodes, child)
        self._people(name, args, cluster, child)
        self.name = cluster.name
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer = issuer
        self.key_arn = key.arn
        self.kubeconfig = _deploy_kubeconfig(cluster, args)
        self.security_group_id = security_group
        self.container_log_group = containers.name
        self.container_log_group_arn = containers.arn
        self.register_outputs(
            {
                "name": self.name,
                "oidc_provider_arn": self.oidc_provider_arn,
                "oidc_issuer": self.oidc_issuer,
                "key_arn": self.key_arn,
                "kubeconfig": self.kubeconfig,
                "security_group_id": self.security_group_id,
                "container_log_group": self.container_log_group,
                "container_log_group_arn": self.container_log_group_arn,
            }
        )

    def _volume_key(self, name: str, args: ClusterArgs, child: pulumi.ResourceOptions) -> RegionalKey:
        """The key of secrets, logs and node volumes. Its policy names the Auto Scaling service-linked role,
        which launches the nodes: KMS rejects the policy until that role exists, so the key waits for it."""
        self.autoscaling_role = None
        if args.create_autoscaling_role:
            self.autoscaling_role = aws.iam.ServiceLinkedRole(
                f"{name}-autoscaling",
                aws_service_name=AUTOSCALING_SERVICE,
                description="EC2 Auto Scaling (EKS managed node groups)",
                tags=args.tags,
                # Account-wide: other stacks' node groups use it too, so destroying this stack keeps it.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
        role = self.autoscaling_role or args.autoscaling_role
        return RegionalKey(
            f"{name}-key",
            RegionalKeyArgs(
                purpose="EKS secrets, logs and node volumes",
                region=args.region,
                log_service=True,
                autoscaling_volumes=True,
                waits_for=(role,) if role else (),
                alias=f"{args.cluster_name}-eks",
                tags=args.tags,
            ),
            opts=child,
        )

    def _control_plane(
        self, name: str, args: ClusterArgs, key: RegionalKey, child: pulumi.ResourceOptions
    ) -> aws.eks.Cluster:
        """The cluster, protected; its API is private unless the config lists operator CIDRs."""
        # Created before the cluster so retention and encryption apply from the first log line.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane",
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=args.log_retention_days,
            kms_key_id=key.arn,
            tags=args.tags,
            opts=child,
        )
        role, attachment = _control_plane_role(name, args, child)
        public = bool(args.config.public_access_cidrs)
        return aws.eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.config.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=public,
                public_access_cidrs=list(args.config.public_access_cidrs) if public else None,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn), resources=["secrets"]
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            # Admins come from access entries only: whoever ran `pulumi up` gets no hidden admin binding.
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=False
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, attachment], protect=True),
        )

    def _access(
        self,
        name: str,
        args: ClusterArgs,
        cluster: aws.eks.Cluster,
        security_group: pulumi.Output[str],
        child: pulumi.ResourceOptions,
    ) -> None:
        """Who reaches the API: the runner's security group on 443; the deploy and break-glass roles as
        admins."""
        # A secondary region's cluster is reached from the primary's runner over peering: its rule names
        # the runner's subnets (a security group cannot be referenced across regions); see RegionPeering.
        if args.runner_security_group_id is not None:
            _api_from_runner(name, args, args.runner_security_group_id, security_group, child)
        self._admins(name, args, cluster, child)

    def _admins(
        self, name: str, args: ClusterArgs, cluster: aws.eks.Cluster, child: pulumi.ResourceOptions
    ) -> None:
        """The deploy and break-glass roles, and no one else, are cluster admins (the cluster gives its
        creator no admin binding); the policy is associated once the entry exists, as EKS requires."""
        admins: dict[str, pulumi.Input[str]] = {
            "deploy": args.deploy_role_arn,
            "break-glass": args.break_glass_role_arn,
        }
        for role, principal in admins.items():
            entry = aws.eks.AccessEntry(
                f"{name}-{role}",
                cluster_name=cluster.name,
                principal_arn=principal,
                type="STANDARD",
                tags=args.tags,
                opts=child,
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-{role}",
                cluster_name=cluster.name,
                principal_arn=principal,
                policy_arn=CLUSTER_ADMIN,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )

    def _network_addon(
        self,
        name: str,
        args: ClusterArgs,
        cluster: aws.eks.Cluster,
        oidc_arn: pulumi.Output[str],
        issuer: pulumi.Output[str],
        child: pulumi.ResourceOptions,
    ) -> aws.eks.Addon:
        """vpc-cni with NetworkPolicy enforcement and its own role. Created before the nodes: the node role
        has no CNI rights, so nodes could get no pod addresses (nor turn Ready) until this add-on holds its
        role; AWS's own guidance creates vpc-cni before compute for this reason."""
        cni = irsa_role(
            f"{name}-vpc-cni",
            role_name=iam_name(args.cluster_name, "vpc-cni"),
            oidc_provider_arn=oidc_arn,
            oidc_issuer=issuer,
            account=CNI_ACCOUNT,
            managed_policy_arns=(f"{POLICY}AmazonEKS_CNI_Policy",),
            tags=args.tags,
            opts=child,
        )
        return aws.eks.Addon(
            f"{name}-vpc-cni",
            cluster_name=cluster.name,
            addon_name="vpc-cni",
            service_account_role_arn=cni.role.arn,
            configuration_values=json.dumps(NETWORK_POLICY),
            # Take over the copy EKS bootstraps, and keep it as declared here.
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=cni.grants),
        )

    def _nodes(
        self,
        name: str,
        args: ClusterArgs,
        cluster: aws.eks.Cluster,
        key: RegionalKey,
        cni: aws.eks.Addon,
        child: pulumi.ResourceOptions,
    ) -> aws.eks.NodeGroup:
        """Managed nodes from a launch template: IMDSv2 only, one hop (pods cannot reach it), disks encrypted
        with the volume key. EKS tags the group's Auto Scaling group `k8s.io/cluster-autoscaler/enabled` and
        `k8s.io/cluster-autoscaler/<cluster>=owned`, which is what the cluster autoscaler discovers."""
        group = args.config.node_group
        role, attachments = _node_role(name, args, child)
        template = _node_launch_template(name, args, key, child)
        return aws.eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=cluster.name,
            node_role_arn=role.arn,
            subnet_ids=args.private_subnet_ids,
            instance_types=[group.instance_type],
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=group.min_size, max_size=group.max_size, desired_size=group.desired_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            tags=args.tags,
            # The key (with its grant to Auto Scaling) and the CNI must be in place before an instance starts.
            # The cluster autoscaler owns the desired size once it runs: a redeploy must not reset it.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*attachments, key, cni],
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

    def _addons(
        self,
        name: str,
        args: ClusterArgs,
        cluster: aws.eks.Cluster,
        key_arn: pulumi.Output[str],
        oidc_arn: pulumi.Output[str],
        issuer: pulumi.Output[str],
        nodes: aws.eks.NodeGroup,
        child: pulumi.ResourceOptions,
    ) -> None:
        """Add-ons whose pods need nodes: the EBS CSI driver, then those with no AWS identity."""
        self._ebs_csi_driver(name, args, cluster, key_arn, oidc_arn, issuer, nodes, child)
        for addon in ADDONS_AFTER_NODES:
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=cluster.name,
                addon_name=addon,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[nodes]),
            )

    def _ebs_csi_driver(
        self,
        name: str,
        args: ClusterArgs,
        cluster: aws.eks.Cluster,
        key_arn: pulumi.Output[str],
        oidc_arn: pulumi.Output[str],
        issuer: pulumi.Output[str],
        nodes: aws.eks.NodeGroup,
        child: pulumi.ResourceOptions,
    ) -> None:
        """The EBS CSI driver has its own role, with use of the volume key for the persistent volumes it
        creates (the key's account statement lets IAM policies grant it); the add-on waits for the role's
        grants, or its first volume would fail on a missing right."""
        csi = irsa_role(
            f"{name}-ebs-csi",
            role_name=iam_name(args.cluster_name, "ebs-csi"),
            oidc_provider_arn=oidc_arn,
            oidc_issuer=issuer,
            account=EBS_CSI_ACCOUNT,
            policy=key_arn.apply(volume_key_user_policy),
            managed_policy_arns=(f"{POLICY}service-role/AmazonEBSCSIDriverPolicy",),
            tags=args.tags,
            opts=child,
        )
        aws.eks.Addon(
            f"{name}-ebs-csi",
            cluster_name=cluster.name,
            addon_name="aws-ebs-csi-driver",
            service_account_role_arn=csi.role.arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[nodes, *csi.grants]),
        )

    def _people(
        self, name: str, args: ClusterArgs, cluster: aws.eks.Cluster, child: pulumi.ResourceOptions
    ) -> None:
        """People sign in through the identity provider; RBAC binds its groups under a prefix."""
        aws.eks.IdentityProviderConfig(
            f"{name}-people",
            cluster_name=cluster.name,
            oidc=aws.eks.IdentityProviderConfigOidcArgs(
                identity_provider_config_name="people",
                issuer_url=args.identity.issuer_url,
                client_id=args.identity.client_id,
                groups_claim=args.identity.groups_claim,
                groups_prefix=IDENTITY_GROUP_PREFIX,
                username_claim="email",
                username_prefix="idp:",
            ),
            tags=args.tags,
            opts=child,
        )


def _container_log_group(
    name: str, args: ClusterArgs, key: RegionalKey, child: pulumi.ResourceOptions
) -> aws.cloudwatch.LogGroup:
    """The containers' log group, made here rather than by the log shipper (which may only write streams
    into it), so the stack's retention and key hold from the first line."""
    return aws.cloudwatch.LogGroup(
        f"{name}-containers",
        name=f"/aws/eks/{args.cluster_name}/containers",
        retention_in_days=args.log_retention_days,
        kms_key_id=key.arn,
        tags=args.tags,
        opts=child,
    )


def _control_plane_role(
    name: str, args: ClusterArgs, child: pulumi.ResourceOptions
) -> tuple[aws.iam.Role, aws.iam.RolePolicyAttachment]:
    """The role EKS manages the control plane with; the cluster waits for the attachment, since EKS checks
    the role's rights when it creates the cluster."""
    role = aws.iam.Role(
        f"{name}-control-plane",
        assume_role_policy=assume_role_policy("eks.amazonaws.com"),
        tags=args.tags,
        opts=child,
    )
    attachment = aws.iam.RolePolicyAttachment(
        f"{name}-control-plane", role=role.name, policy_arn=f"{POLICY}AmazonEKSClusterPolicy", opts=child
    )
    return role, attachment


def _service_account_issuer(
    name: str, args: ClusterArgs, cluster: aws.eks.Cluster, child: pulumi.ResourceOptions
) -> tuple[aws.iam.OpenIdConnectProvider, pulumi.Output[str]]:
    """IRSA: IAM trusts tokens from the cluster's service-account issuer, with STS as their audience only.
    A cluster that reports no issuer yields an empty one rather than failing the program."""
    issuer = cluster.identities.apply(
        lambda ids: (ids[0].oidcs[0].issuer if ids and ids[0].oidcs else None) or ""
    )
    oidc = aws.iam.OpenIdConnectProvider(
        f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], tags=args.tags, opts=child
    )
    return oidc, issuer


def _api_from_runner(
    name: str,
    args: ClusterArgs,
    runner_security_group_id: pulumi.Input[str],
    security_group: pulumi.Output[str],
    child: pulumi.ResourceOptions,
) -> None:
    """The deploy runner's security group may reach the private API endpoint on 443, nothing else of it."""
    aws.vpc.SecurityGroupIngressRule(
        f"{name}-api-from-runner",
        security_group_id=security_group,
        referenced_security_group_id=runner_security_group_id,
        ip_protocol="tcp",
        from_port=443,
        to_port=443,
        description="Kubernetes API from the deploy runner",
        tags=args.tags,
        opts=child,
    )


def _node_role(
    name: str, args: ClusterArgs, child: pulumi.ResourceOptions
) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    """The nodes' role: join the cluster and pull images. No CNI rights: those are on the vpc-cni add-on's
    own role, not on every node."""
    role = aws.iam.Role(
        f"{name}-nodes",
        assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
        tags=args.tags,
        opts=child,
    )
    attachments = [
        aws.iam.RolePolicyAttachment(f"{name}-nodes-{p}", role=role.name, policy_arn=POLICY + p, opts=child)
        for p in NODE_POLICIES
    ]
    return role, attachments


def _node_launch_template(
    name: str, args: ClusterArgs, key: RegionalKey, child: pulumi.ResourceOptions
) -> aws.ec2.LaunchTemplate:
    """IMDSv2 only, with one hop, so a pod (one hop further) cannot reach the node's credentials; the root
    disk encrypted with the volume key; the stack's tags on the instances as well as the template."""
    group = args.config.node_group
    return aws.ec2.LaunchTemplate(
        f"{name}-nodes",
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
        ),
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    encrypted="true",
                    kms_key_id=key.arn,
                    volume_size=group.disk_gib,
                    volume_type="gp3",
                    delete_on_termination="true",
                ),
            )
        ],
        tag_specifications=[
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=args.tags)
        ],
        tags=args.tags,
        opts=child,
    )


def _deploy_kubeconfig(cluster: aws.eks.Cluster, args: ClusterArgs) -> pulumi.Output[str]:
    """The kubeconfig the platform layer uses: it carries no credential, only the command that gets a
    token as the deploy role."""
    return pulumi.Output.all(
        name=cluster.name,
        endpoint=cluster.endpoint,
        ca=cluster.certificate_authority.data,
        role=args.deploy_role_arn,
    ).apply(lambda v: kubeconfig(v["name"], v["endpoint"], v["ca"], args.region, v["role"]))


def _check(args: ClusterArgs) -> None:
    """Fail at plan time on what EKS or IAM would reject halfway through a deploy."""
    if not ROLE_ARN.fullmatch(args.break_glass_role_arn):
        raise ValueError(f"break-glass principal {args.break_glass_role_arn!r} is not an IAM role ARN")
    if args.create_autoscaling_role and args.autoscaling_role is not None:
        raise ValueError("create_autoscaling_role and autoscaling_role both set: the role is one per account")
