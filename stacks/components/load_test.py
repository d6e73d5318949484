"""LoadTest: the load tests run inside a cluster, against a stack's gateway, for load one machine cannot make.

A locust master Job and a worker Job (`parallelism` = workers) built from the image that carries `loadtests/`;
profiles and SLO gates in a ConfigMap. The master's exit code is the gate's verdict, so the Job succeeds only
when every gate passes, and the gate table is in its log. Both Jobs are bounded by `activeDeadlineSeconds`.
The manifests come from the pure functions below; the component only creates them.
"""

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.components import kube
from stacks.manifests import Manifest, metadata

MASTER_PORT = 5557
APP_DIR = "/app"
CONFIG_DIR = "/config"
REPORT_DIR = "/reports"
RUN_AS_USER = 10001
DNS_PORT = 53


@dataclass(frozen=True, kw_only=True)
class LoadTestArgs:
    """Inputs of `LoadTest`."""

    namespace: str
    """Namespace the Jobs run in (it must exist)."""
    image: str
    """The image `loadtests/Dockerfile` builds (locust, `loadtests/` under /app), pinned by digest."""
    target: str
    """Base URL of the V2 REST endpoint, e.g. the stack's gateway `https://api.example.com`."""
    grpc_target: str | None = None
    """host:port of the V2 gRPC endpoint; without it only REST users run."""
    profile: str = "smoke"
    """Profile name in `profiles_yaml`."""
    profiles_yaml: str
    """The profiles file's text (loadtests/profiles.yaml or a team's own)."""
    slo_yaml: str
    """The SLO gates file's text (loadtests/slo.yaml or a team's own)."""
    workers: int = 4
    """Worker pods; each is one locust process."""
    deadline_s: int = 900
    """Kubernetes stops both Jobs after this many seconds, whatever the profile says."""
    worker_cpu: str = "1"
    """CPU request and limit of a worker (locust uses one core per process)."""
    worker_memory: str = "512Mi"
    """Memory request and limit of a worker."""


def _labels(name: str, role: str) -> dict[str, str]:
    return {"app": name, "app.kubernetes.io/name": "locust", "app.kubernetes.io/component": role}


def _command(args: LoadTestArgs) -> list[str]:
    command = ["python", "-m", "locust", "--config", f"{APP_DIR}/loadtests/locust.conf",
               "-f", f"{APP_DIR}/loadtests/locustfile.py", "--host", args.target,
               "--load-profile", args.profile, "--load-profiles", f"{CONFIG_DIR}/profiles.yaml",
               "--slo-file", f"{CONFIG_DIR}/slo.yaml"]  # fmt: skip
    if args.grpc_target:
        command += ["--grpc-target", args.grpc_target]
    return command


def user_classes(args: LoadTestArgs) -> list[str]:
    """REST users always, gRPC users with a gRPC target."""
    return ["RestUser", "GrpcUser"] if args.grpc_target else ["RestUser"]


def master_command(args: LoadTestArgs) -> list[str]:
    """The master: waits for every worker, runs the profile, gates, exits 0 or 1."""
    return [*_command(args), "--master", "--master-bind-port", str(MASTER_PORT),
            "--expect-workers", str(args.workers), "--expect-workers-max-wait", "300",
            "--report-dir", REPORT_DIR, "--csv", f"{REPORT_DIR}/locust", "--csv-full-history",
            *user_classes(args)]  # fmt: skip


def worker_command(args: LoadTestArgs, name: str) -> list[str]:
    """A worker: connects to the master's Service and runs the users it is given."""
    return [*_command(args), "--worker", "--master-host", f"{name}-master", "--master-port", str(MASTER_PORT),
            *user_classes(args)]  # fmt: skip


def config_map(args: LoadTestArgs, name: str) -> Manifest:
    """Profiles and SLO gates, mounted read-only at /config."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(f"{name}-config", args.namespace, _labels(name, "config")),
        "data": {"profiles.yaml": args.profiles_yaml, "slo.yaml": args.slo_yaml},
    }


def master_service(args: LoadTestArgs, name: str) -> Manifest:
    """A headless Service the workers find the master by."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(f"{name}-master", args.namespace, _labels(name, "master")),
        "spec": {
            "clusterIP": "None",
            "selector": _labels(name, "master"),
            "ports": [{"name": "tcp-locust", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }


def _container(args: LoadTestArgs, role: str, command: list[str]) -> dict[str, Any]:
    resources = {"cpu": args.worker_cpu, "memory": args.worker_memory}
    return {
        "name": f"locust-{role}",
        "image": args.image,
        "command": command,
        "workingDir": APP_DIR,
        "resources": {"requests": resources, "limits": resources},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "reports", "mountPath": REPORT_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
        ],
    }


def _job(args: LoadTestArgs, name: str, role: str, command: list[str], pods: int) -> Manifest:
    pod_labels = _labels(name, role)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(f"{name}-{role}", args.namespace, pod_labels),
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,  # a failed gate is an answer, not a reason to retry
            "activeDeadlineSeconds": args.deadline_s,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_container(args, role, command)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{name}-config"}},
                        {"name": "reports", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def master_job(args: LoadTestArgs, name: str) -> Manifest:
    """One master pod; its exit code is the gate's verdict."""
    return _job(args, name, "master", master_command(args), 1)


def worker_job(args: LoadTestArgs, name: str) -> Manifest:
    """`workers` worker pods, all at once."""
    return _job(args, name, "worker", worker_command(args, name), args.workers)


def network_policy(args: LoadTestArgs, name: str) -> Manifest:
    """Workers reach the master; every load-test pod reaches DNS and the target (HTTP(S) and gRPC ports)."""
    pods = {"matchLabels": {"app": name}}
    target_ports = [{"protocol": "TCP", "port": p} for p in (80, 443, 8080, 8081)]
    master = {"protocol": "TCP", "port": MASTER_PORT}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(f"{name}-locust", args.namespace, _labels(name, "network")),
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": pods}], "ports": [master]}],
            "egress": [
                {"to": [{"podSelector": pods}], "ports": [master]},
                {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
                {"ports": target_ports},
            ],
        },
    }


def validate(args: LoadTestArgs) -> None:
    """Refuse arguments that would make a Job that cannot run as meant."""
    if "@sha256:" not in args.image:
        raise ValueError(f"LoadTest image must be pinned by digest (name@sha256:...), got {args.image!r}")
    if args.workers < 1:
        raise ValueError(f"LoadTest needs at least one worker, got {args.workers}")
    if not args.target.startswith(("http://", "https://")):
        raise ValueError(f"LoadTest target must be an http(s) URL, got {args.target!r}")


class LoadTest(pulumi.ComponentResource):
    """A locust master and workers as Jobs in a cluster, gated by the SLO file."""

    master_job_name: str
    worker_job_name: str

    def __init__(self, name: str, args: LoadTestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:loadtest:LoadTest", name, None, opts)
        validate(args)
        child = pulumi.ResourceOptions(parent=self)
        config = kube.create(f"{name}-config", config_map(args, name), child)
        service = kube.create(f"{name}-master", master_service(args, name), child)
        kube.create(f"{name}-netpol", network_policy(args, name), child)
        after = pulumi.ResourceOptions(parent=self, depends_on=[config, service])
        # batch/v1 Job is created here, not through stacks.components.kube, which maps the serving kinds.
        for role, manifest in (("master", master_job(args, name)), ("worker", worker_job(args, name))):
            k8s.batch.v1.Job(
                f"{name}-{role}", metadata=manifest["metadata"], spec=manifest["spec"], opts=after
            )
        self.master_job_name = f"{name}-master"
        self.worker_job_name = f"{name}-worker"
        self.register_outputs(
            {"master_job_name": self.master_job_name, "worker_job_name": self.worker_job_name}
        )
