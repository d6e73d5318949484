"""Cluster add-ons: the AWS Load Balancer Controller and the gateway's TargetGroupBinding, cert-manager and
the gateway's certificate chain, metrics-server and the Cluster Autoscaler.

Every image comes from the in-region registry (`stacks.artifacts`); values name the cluster, region and VPC
explicitly because pods cannot reach the instance metadata service (hop limit 1).
"""

from typing import Any

from stacks import contract
from stacks.artifacts import load_lock
from stacks.manifests import Manifest, mesh, metadata

SYSTEM_NAMESPACE = "kube-system"
CERT_MANAGER_NAMESPACE = "cert-manager"
LB_CONTROLLER_SA = "aws-load-balancer-controller"
CLUSTER_AUTOSCALER_SA = "cluster-autoscaler"
GATEWAY_SERVICE = "istio-ingressgateway"
"""The gateway chart's Service, whose pods the NLB's target group registers."""
GATEWAY_STATUS_PORT = 15021
"""The gateway's readiness port, the NLB target group's health check."""
OBSERVABILITY_NAMESPACE = "observability"
FLUENT_BIT_SA = "aws-for-fluent-bit"
OTEL_COLLECTOR_SA = "otel-collector"
IRSA_SUBJECTS = {
    contract.ROLE_LB_CONTROLLER: (SYSTEM_NAMESPACE, LB_CONTROLLER_SA),
    contract.ROLE_CLUSTER_AUTOSCALER: (SYSTEM_NAMESPACE, CLUSTER_AUTOSCALER_SA),
    contract.ROLE_FLUENT_BIT: (OBSERVABILITY_NAMESPACE, FLUENT_BIT_SA),
    contract.ROLE_OTEL_COLLECTOR: (OBSERVABILITY_NAMESPACE, OTEL_COLLECTOR_SA),
}
"""(namespace, service account) each IRSA role of infra must trust (`system:serviceaccount:NS:SA`).
cert-manager needs no role: its issuers are in-cluster."""
KEDA_NAMESPACE = "keda"
EXTERNAL_SECRETS_NAMESPACE = "external-secrets"
EXTERNAL_SECRETS_SA = "external-secrets"
EXTERNAL_SECRETS_SUBJECT = (EXTERNAL_SECRETS_NAMESPACE, EXTERNAL_SECRETS_SA)
"""Where the secret syncer runs: the only service account the queue token's reader role trusts (infra makes
that role only where a region runs a job queue, so it is not among `IRSA_SUBJECTS`)."""
SELF_SIGNED_ISSUER = "selfsigned"
CA_ISSUER = "model-serving-ca"
CA_SECRET = "model-serving-ca"  # noqa: S105 - a Secret's name
WAIT_FOR_READY = {"pulumi.com/waitFor": "condition=Ready"}
"""Makes `pulumi up` wait until cert-manager reports the certificate issued, so what follows can use it."""


def irsa_annotations(role_arn: str) -> dict[str, str]:
    """ServiceAccount annotations of an IRSA role, with STS called at its regional endpoint: the global
    endpoint is served from outside most jurisdictions."""
    return {"eks.amazonaws.com/role-arn": role_arn, "eks.amazonaws.com/sts-regional-endpoints": "true"}


def tagged_image(key: str, registry: str) -> dict[str, str]:
    """`repository` + `tag` for charts that join them with `:`: the tag carries the digest, so the pull is
    pinned (`repo:tag@sha256:...`) even where the chart has no digest field."""
    image = load_lock().image(key)
    return {"repository": f"{registry}/{image.repository}", "tag": f"{image.tag}@{image.digest}"}


def zone_spread(labels: dict[str, str]) -> list[dict[str, Any]]:
    """Spread replicas across availability zones; best effort, so a single-zone cluster still schedules."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": labels},
        }
    ]


def lb_controller_values(
    registry: str, cluster_name: str, region: str, vpc_id: str, role_arn: str
) -> dict[str, Any]:
    """Two controller replicas behind a PDB, spread across zones, with region and VPC given explicitly."""
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "image": tagged_image("aws-load-balancer-controller", registry),
        "replicaCount": 2,
        "serviceAccount": {
            "create": True,
            "name": LB_CONTROLLER_SA,
            "annotations": irsa_annotations(role_arn),
        },
        "podDisruptionBudget": {"maxUnavailable": 1},
        "topologySpreadConstraints": zone_spread({"app.kubernetes.io/name": "aws-load-balancer-controller"}),
        # The NLB is infra's; the controller only registers pods through the TargetGroupBinding and must not
        # turn LoadBalancer Services into load balancers of its own.
        "enableServiceMutatorWebhook": False,
    }


def target_group_binding(target_group_arn: str, nlb_security_group: str) -> Manifest:
    """Registers the gateway pods (by IP) in infra's NLB target group, and lets the NLB's security group reach
    them on the HTTPS and health-check ports (the controller manages that rule on the nodes' groups)."""
    return {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": metadata("model-api", mesh.NAMESPACE),
        "spec": {
            "serviceRef": {"name": GATEWAY_SERVICE, "port": 443},
            "targetGroupARN": target_group_arn,
            "targetType": "ip",
            "networking": {
                "ingress": [
                    {
                        "from": [{"securityGroup": {"groupID": nlb_security_group}}],
                        "ports": [
                            {"protocol": "TCP", "port": mesh.GATEWAY_HTTPS_TARGET},
                            {"protocol": "TCP", "port": GATEWAY_STATUS_PORT},
                        ],
                    }
                ]
            },
        },
    }


def _digest_image(key: str, registry: str) -> dict[str, str]:
    image = load_lock().image(key)
    return {"repository": f"{registry}/{image.repository}", "digest": image.digest}


def cert_manager_values(registry: str) -> dict[str, Any]:
    """cert-manager with its CRDs, two replicas of controller, webhook and CA injector, images from the
    registry."""
    ha = {"replicaCount": 2, "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}
    return {
        "crds": {"enabled": True, "keep": True},
        **ha,
        "image": _digest_image("cert-manager-controller", registry),
        "webhook": {**ha, "image": _digest_image("cert-manager-webhook", registry)},
        "cainjector": {**ha, "image": _digest_image("cert-manager-cainjector", registry)},
        "acmesolver": {"image": _digest_image("cert-manager-acmesolver", registry)},
        # The post-install check makes the release wait until the webhook answers, so the issuers created
        # right after it are admitted.
        "startupapicheck": {
            "enabled": True,
            "image": _digest_image("cert-manager-startupapicheck", registry),
        },
    }


def _issuer_ref(name: str) -> dict[str, str]:
    return {"name": name, "kind": "ClusterIssuer", "group": "cert-manager.io"}


def self_signed_issuer() -> Manifest:
    """The root of the chain: signs only the CA certificate below."""
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": metadata(SELF_SIGNED_ISSUER),
        "spec": {"selfSigned": {}},
    }


def ca_certificate() -> Manifest:
    """The cluster's CA, in cert-manager's namespace (where ClusterIssuers read their secrets)."""
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata(CA_ISSUER, CERT_MANAGER_NAMESPACE) | {"annotations": WAIT_FOR_READY},
        "spec": {
            "isCA": True,
            "commonName": "model-serving in-cluster CA",
            "secretName": CA_SECRET,
            "duration": "43800h",
            "renewBefore": "720h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": _issuer_ref(SELF_SIGNED_ISSUER),
        },
    }


def ca_issuer() -> Manifest:
    """Issues the workload certificates from the CA's secret."""
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": metadata(CA_ISSUER),
        "spec": {"ca": {"secretName": CA_SECRET}},
    }


def gateway_certificate(api_host: str, credential_name: str) -> Manifest:
    """The gateway's serving certificate for the NLB -> gateway hop. ACM terminates the public TLS on the NLB,
    which does not validate target certificates, so an in-cluster CA suffices and needs no egress (no ACME,
    no DNS-01); the hop stays encrypted."""
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata("gateway-tls", mesh.NAMESPACE) | {"annotations": WAIT_FOR_READY},
        "spec": {
            "secretName": credential_name,
            "dnsNames": [api_host],
            "duration": "2160h",
            "renewBefore": "360h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "digital signature"],
            "issuerRef": _issuer_ref(CA_ISSUER),
        },
    }


def metrics_server_values(registry: str) -> dict[str, Any]:
    """Two replicas behind a PDB: the HPAs of the models and the gateway read their CPU from it."""
    return {
        "image": tagged_image("metrics-server", registry),
        "replicas": 2,
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "topologySpreadConstraints": zone_spread({"app.kubernetes.io/name": "metrics-server"}),
    }


def cluster_autoscaler_values(registry: str, cluster_name: str, region: str, role_arn: str) -> dict[str, Any]:
    """The autoscaler finds the node groups by their auto-discovery tags; region given, not looked up."""
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "image": tagged_image("cluster-autoscaler", registry),
        "replicaCount": 2,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": CLUSTER_AUTOSCALER_SA,
                "annotations": irsa_annotations(role_arn),
            }
        },
        "extraArgs": {
            # One node group per zone: keep them the same size so zone spread stays possible.
            "balance-similar-node-groups": True,
            "expander": "least-waste",
            # Every kube-system Deployment of the platform runs two replicas behind a PDB, and every meshed
            # pod has emptyDir volumes (the sidecar's): with the defaults no node would ever scale down.
            "skip-nodes-with-system-pods": False,
            "skip-nodes-with-local-storage": False,
        },
    }


def _keda_image(key: str, registry: str) -> dict[str, str]:
    """KEDA's charts join `registry/repository:tag`: the tag carries the digest, so the pull is pinned."""
    image = load_lock().image(key)
    return {"registry": registry, "repository": image.repository, "tag": f"{image.tag}@{image.digest}"}


def keda_values(registry: str) -> dict[str, Any]:
    """KEDA (operator, external-metrics server, admission webhooks), two replicas of each behind PDBs: it
    scales the async workers on their stream's backlog."""
    return {
        "image": {
            "keda": _keda_image("keda", registry),
            "metricsApiServer": _keda_image("keda-metrics-apiserver", registry),
            "webhooks": _keda_image("keda-admission-webhooks", registry),
        },
        "operator": {"replicaCount": 2},
        "metricsServer": {"replicaCount": 2},
        "webhooks": {"replicaCount": 2},
        "podDisruptionBudget": {
            "operator": {"maxUnavailable": 1},
            "metricServer": {"maxUnavailable": 1},
            "webhooks": {"maxUnavailable": 1},
        },
    }


def external_secrets_values(registry: str, role_arn: str) -> dict[str, Any]:
    """External Secrets with its CRDs and two replicas, running as the IRSA role that may read the job
    queue's token and nothing else (the stores name no other credentials)."""
    image = tagged_image("external-secrets", registry)
    return {
        "installCRDs": True,
        "replicaCount": 2,
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
        "image": image,
        "serviceAccount": {
            "create": True,
            "name": EXTERNAL_SECRETS_SA,
            "annotations": irsa_annotations(role_arn),
        },
        "webhook": {"replicaCount": 2, "image": image},
        "certController": {"image": image},
        # Only the platform's ClusterSecretStore: tenants create neither stores nor ExternalSecrets.
        "processClusterExternalSecret": False,
        "processPushSecret": False,
    }


def job_queue_store(name: str, region: str, namespaces: list[str]) -> Manifest:
    """The region's Secrets Manager as a store for the namespaces of the models with async requests alone;
    it authenticates as the syncer's own IRSA role."""
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ClusterSecretStore",
        "metadata": metadata(name),
        "spec": {
            "provider": {"aws": {"service": "SecretsManager", "region": region}},
            "conditions": [{"namespaces": sorted(set(namespaces))}],
        },
    }
