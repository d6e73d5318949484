"""Edge: the model API's public entry in one region, an internet-facing NLB that terminates TLS with an
in-region ACM certificate and forwards to the ingress gateway's pods by IP.

Why ACM on the NLB rather than cert-manager with a DNS-01 solver: the private key never leaves ACM in this
region, and issuing and renewing need no egress from the cluster, neither to a public CA nor to Route53's
global API (the egress firewall allows neither). The gateway pods register themselves in the target group
through a TargetGroupBinding that the platform layer creates from `Edge.target_group_arn`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pulumi
import pulumi_aws as aws

HTTPS_PORT = 443
STATUS_PORT = 15021
"""Istio's status port on the gateway pods."""
READY_PATH = "/healthz/ready"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
"""TLS 1.3 and 1.2 with forward-secret ciphers only."""
VALIDATION_TTL = 300


def certificate_names(api_host: str, region: str) -> list[str]:
    """The names this region's load balancer answers for: the API host and the region's own name (the one
    the Route53 health check probes)."""
    return [api_host, f"{region}.{api_host}"]


def validation_option(options: Sequence[Any], domain: str) -> Any:
    """ACM's DNS validation record for one of the certificate's names."""
    for option in options:
        if option.domain_name == domain:
            return option
    raise ValueError(f"ACM gave no validation record for {domain}")


@dataclass(frozen=True, kw_only=True)
class EdgeArgs:
    """Inputs of `Edge`."""

    api_host: str
    """The model API's host name."""
    region: str
    """This region (its name prefixes the regional host name)."""
    zone_id: str
    """Route53 hosted zone of `api_host`, where the certificate's validation records go."""
    vpc_id: pulumi.Input[str]
    """The VPC of the gateway pods."""
    vpc_cidr: str
    """The VPC's range: the load balancer reaches the pods only inside it."""
    public_subnet_ids: Sequence[pulumi.Input[str]]
    """Public subnets, one per AZ, for the load balancer's nodes."""
    tags: dict[str, str]
    """Tags on every taggable resource."""
    allowed_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    """Who may connect on 443. A narrower list must keep Route53's health checker ranges, or every
    regional health check fails."""
    access_log_bucket: str | None = None
    """Bucket (in this region) for the load balancer's access logs; none: no access logs."""


class Edge(pulumi.ComponentResource):
    """A TLS-terminating NLB, its certificate and the gateway pods' target group."""

    target_group_arn: pulumi.Output[str]
    load_balancer_dns_name: pulumi.Output[str]
    load_balancer_zone_id: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:edge:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        certificate_arn = self._certificate(name, args, child)
        sg = _load_balancer_security_group(name, args, child)
        lb = _load_balancer(name, args, sg, child)
        target_group = self._target_group(name, args, child)
        _tls_listener(name, args, lb, certificate_arn, target_group, child)
        self.target_group_arn = target_group.arn
        self.load_balancer_dns_name = lb.dns_name
        self.load_balancer_zone_id = lb.zone_id
        self.security_group_id = sg.id
        self.register_outputs(
            {
                "target_group_arn": self.target_group_arn,
                "load_balancer_dns_name": self.load_balancer_dns_name,
                "load_balancer_zone_id": self.load_balancer_zone_id,
                "security_group_id": self.security_group_id,
            }
        )

    def _certificate(self, name: str, args: EdgeArgs, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """A DNS-validated ACM certificate; the ARN returned is the validation's, so a listener that uses it
        waits until ACM has issued the certificate."""
        domain, *alternatives = certificate_names(args.api_host, args.region)
        certificate = aws.acm.Certificate(
            f"{name}-cert",
            domain_name=domain,
            subject_alternative_names=alternatives,
            validation_method="DNS",
            tags=args.tags,
            opts=child,
        )
        records = []
        for i, host in enumerate([domain, *alternatives]):
            option = certificate.domain_validation_options.apply(partial(validation_option, domain=host))
            records.append(
                aws.route53.Record(
                    f"{name}-cert-validation-{i}",
                    zone_id=args.zone_id,
                    name=option.apply(lambda o: str(o.resource_record_name)),
                    type=option.apply(lambda o: str(o.resource_record_type)),
                    records=[option.apply(lambda o: str(o.resource_record_value))],
                    ttl=VALIDATION_TTL,
                    # ACM gives every certificate of the account the same record for a name, and each region's
                    # certificate covers the API host: the regions share that record.
                    allow_overwrite=True,
                    opts=child,
                )
            )
        validation = aws.acm.CertificateValidation(
            f"{name}-cert-validation",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[r.fqdn for r in records],
            opts=child,
        )
        return validation.certificate_arn

    def _target_group(self, name: str, args: EdgeArgs, child: pulumi.ResourceOptions) -> aws.lb.TargetGroup:
        """The gateway pods by IP, re-encrypted on 443, healthy when Istio's readiness endpoint says so."""
        return aws.lb.TargetGroup(
            f"{name}-gateway",
            target_type="ip",
            protocol="TLS",
            port=HTTPS_PORT,
            vpc_id=args.vpc_id,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                protocol="HTTP",
                port=str(STATUS_PORT),
                path=READY_PATH,
                matcher="200-399",
                interval=10,
                healthy_threshold=2,
                unhealthy_threshold=2,
            ),
            tags=args.tags,
            opts=child,
        )


def _load_balancer_security_group(
    name: str, args: EdgeArgs, child: pulumi.ResourceOptions
) -> aws.ec2.SecurityGroup:
    """HTTPS in from the allowed ranges only; out only into the VPC, to the gateway pods' HTTPS and status
    ports (the target group's health checks use the latter)."""
    return aws.ec2.SecurityGroup(
        f"{name}-nlb",
        vpc_id=args.vpc_id,
        description="Gateway load balancer: HTTPS in from allowed ranges, out to the gateway pods only",
        ingress=[
            aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp",
                from_port=HTTPS_PORT,
                to_port=HTTPS_PORT,
                cidr_blocks=list(args.allowed_cidrs),
                description="Model API clients",
            )
        ],
        egress=[
            aws.ec2.SecurityGroupEgressArgs(
                protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_blocks=[args.vpc_cidr],
                description=what,
            )
            for port, what in ((HTTPS_PORT, "Gateway pods"), (STATUS_PORT, "Gateway pods' health checks"))
        ],
        tags=args.tags,
        opts=child,
    )


def _load_balancer(
    name: str, args: EdgeArgs, sg: aws.ec2.SecurityGroup, child: pulumi.ResourceOptions
) -> aws.lb.LoadBalancer:
    """Internet-facing across the public subnets, every node serving every zone's pods; protected from
    deletion, since its DNS name is what the region's records alias; access logs only where a bucket is
    given."""
    return aws.lb.LoadBalancer(
        f"{name}-nlb",
        load_balancer_type="network",
        internal=False,
        ip_address_type="ipv4",
        subnets=list(args.public_subnet_ids),
        security_groups=[sg.id],
        enable_cross_zone_load_balancing=True,
        enable_deletion_protection=True,
        access_logs=(
            aws.lb.LoadBalancerAccessLogsArgs(bucket=args.access_log_bucket, prefix=name, enabled=True)
            if args.access_log_bucket
            else None
        ),
        tags=args.tags,
        opts=child,
    )


def _tls_listener(
    name: str,
    args: EdgeArgs,
    lb: aws.lb.LoadBalancer,
    certificate_arn: pulumi.Output[str],
    target_group: aws.lb.TargetGroup,
    child: pulumi.ResourceOptions,
) -> aws.lb.Listener:
    """TLS ends here with the validated certificate and TLS 1.2 or newer; everything goes to the gateway."""
    return aws.lb.Listener(
        f"{name}-https",
        load_balancer_arn=lb.arn,
        port=HTTPS_PORT,
        protocol="TLS",
        ssl_policy=TLS_POLICY,
        certificate_arn=certificate_arn,
        # gRPC clients insist on negotiating h2; REST clients keep HTTP/1.1.
        alpn_policy="HTTP2Preferred",
        default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn)],
        tags=args.tags,
        opts=child,
    )
