"""One model's manifests: routing (sticky buckets, shadow, faults), pods, isolation and footprint."""

import hashlib
import json
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from serving_image import assignment
from stacks.manifests import serving
from stacks.manifests.serving import ServingSpec, virtual_service
from stacks.manifests.sticky import ASSIGNMENT_HEADER, BUCKET_HEADER, BUCKETS, CALLER_HEADER, USER_HEADER
from stacks.settings import Fault, ModelConfig, Shadow, StackConfig
from tests.stacks.schemas import validate


def _spec(eu_config: StackConfig, **variants: Any) -> ServingSpec:
    model: ModelConfig = eu_config.models[0]
    model = replace(model, variants=replace(model.variants, **variants))
    return ServingSpec(
        model=model, image="i", sync_image="s", region="eu-central-1", service_account=model.name,
        gateway="istio-system/model-api", api_host="api.models.example.eu",
    )  # fmt: skip


def _service(eu_config: StackConfig, **variants: Any) -> dict[str, Any]:
    return virtual_service(_spec(eu_config, **variants))


def _routes(eu_config: StackConfig, **variants: Any) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in _service(eu_config, **variants)["spec"]["http"]}


def test_shadow_mirrors_live_routes(eu_config: StackConfig) -> None:
    routes = _routes(eu_config, weights=(("1", 100), ("2", 0)), shadow=Shadow(version="2", percent=10))
    weighted = routes["tabular-classifier-weighted"]
    assert weighted["mirror"]["subset"] == "v2", weighted
    assert weighted["mirrorPercentage"] == {"value": 10.0}, weighted
    assert "mirror" not in routes["tabular-classifier-v1"], "an explicit version path is not live traffic"
    assert "mirror" not in routes["tabular-classifier-header-0"], "the header route already sends to v2"


def test_fault_on_the_routes_that_send_only_to_the_version(eu_config: StackConfig) -> None:
    routes = _routes(eu_config, faults=(("2", Fault(delay_ms=50, error_ratio=0.2)),))
    fault = routes["tabular-classifier-v2"]["fault"]
    assert fault == {
        "delay": {"percentage": {"value": 100.0}, "fixedDelay": "50ms"},
        "abort": {"percentage": {"value": 20.0}, "httpStatus": 500},
    }, fault
    assert routes["tabular-classifier-header-0"]["fault"] == fault, "the header route sends only to v2"
    assert "fault" not in routes["tabular-classifier-v1"], "v1 is not degraded"
    assert "fault" not in routes["tabular-classifier-weighted"], (
        "Istio cannot fault one destination of a split"
    )


def test_no_shadow_no_faults_no_extra_keys(eu_config: StackConfig) -> None:
    assert "tabular-classifier-weighted" in _routes(eu_config), sorted(_routes(eu_config))
    for route in _routes(eu_config).values():
        assert not {"mirror", "mirrorPercentage", "fault"} & set(route), route


def test_mirror_and_fault_validate_against_istios_crd_schema(eu_config: StackConfig) -> None:
    validate(
        _service(
            eu_config,
            weights=(("1", 90), ("2", 10)),
            shadow=Shadow(version="2", percent=10),
            faults=(("2", Fault(delay_ms=50, error_ratio=0.2)),),
        )
    )


def _sticky_routes(vs: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in vs["spec"]["http"] if BUCKET_HEADER in r["match"][0].get("headers", {})]


SPLITS = [
    (("1", 90), ("2", 10)),
    (("1", 50), ("2", 50)),
    (("1", 0), ("2", 100)),
    (("1", 1), ("2", 99)),
    (("1", 33), ("2", 33), ("3", 34)),
    (("1", 7), ("2", 0), ("3", 93)),
    (("1", 25), ("2", 25), ("3", 25), ("4", 25)),
]


@pytest.mark.parametrize("weights", SPLITS)
def test_every_bucket_matches_one_sticky_route_of_the_right_version(
    eu_config: StackConfig, weights: tuple[tuple[str, int], ...]
) -> None:
    routes = _sticky_routes(_service(eu_config, weights=weights))
    # Contiguous ranges in version order, the layout the server's router uses.
    owner = [v for v, w in sorted(weights, key=lambda vw: int(vw[0])) for _ in range(w)]
    for bucket in range(BUCKETS):
        hits = [
            r["route"][0]["destination"]["subset"]
            for r in routes
            if re.fullmatch(r["match"][0]["headers"][BUCKET_HEADER]["regex"], str(bucket))
        ]
        assert hits == [f"v{owner[bucket]}"], f"bucket {bucket} under {weights}: routes to {hits}"
    assert len(routes) == sum(1 for _, w in weights if w > 0), "one sticky route per version with weight"


def test_sticky_routes_sit_between_header_routes_and_the_weighted_split(eu_config: StackConfig) -> None:
    vs = _service(eu_config)
    names = [r["name"] for r in vs["spec"]["http"]]
    assert names == serving.route_names(vs_model := eu_config.models[0]), (
        "route_names lists the routes in order"
    )
    assert names == [
        f"{vs_model.name}-v1", f"{vs_model.name}-v2", f"{vs_model.name}-header-0",
        f"{vs_model.name}-sticky-v1", f"{vs_model.name}-sticky-v2", f"{vs_model.name}-weighted",
    ], names  # fmt: skip
    weighted = vs["spec"]["http"][-1]
    assert all("headers" not in m for m in weighted["match"]), (
        "the random split takes requests without a bucket"
    )
    for route in _sticky_routes(vs):
        assert [m["uri"] for m in route["match"]] == [
            {"exact": f"/v2/models/{vs_model.name}"},
            {"prefix": f"/v2/models/{vs_model.name}/"},
        ], route["match"]


def test_no_sticky_header_no_sticky_routes(eu_config: StackConfig) -> None:
    vs = _service(eu_config, sticky_header=None)
    assert not _sticky_routes(vs), "without a sticky header every request takes the weighted split"
    assert [r["name"] for r in vs["spec"]["http"]] == serving.route_names(replace(
        eu_config.models[0], variants=replace(eu_config.models[0].variants, sticky_header=None)
    )), "route_names follows"  # fmt: skip


def test_sticky_routes_carry_fault_and_mirror(eu_config: StackConfig) -> None:
    routes = _routes(
        eu_config,
        weights=(("1", 80), ("2", 20)),
        shadow=Shadow(version="3", percent=5),
        faults=(("2", Fault(delay_ms=10, error_ratio=0.0)),),
    )
    assert "fault" in routes["tabular-classifier-sticky-v2"], "the sticky route sends only to v2"
    assert "fault" not in routes["tabular-classifier-sticky-v1"], "v1 is not degraded"
    assert routes["tabular-classifier-sticky-v1"]["mirror"]["subset"] == "v3", (
        "sticky traffic is live traffic"
    )


def test_sticky_routes_validate_against_istios_crd_schema(eu_config: StackConfig) -> None:
    validate(_service(eu_config, weights=(("1", 33), ("2", 33), ("3", 34))))


def _pod(eu_config: StackConfig, **spec: Any) -> dict[str, Any]:
    template: dict[str, Any] = serving.deployment(replace(_spec(eu_config), **spec), "2")["spec"]["template"]
    return template


def test_pods_are_ready_only_once_their_version_is_loaded(eu_config: StackConfig) -> None:
    (server,) = _pod(eu_config)["spec"]["containers"]
    loaded = "/v2/models/tabular-classifier/versions/2/ready"
    assert server["readinessProbe"]["httpGet"]["path"] == loaded, server["readinessProbe"]
    assert server["startupProbe"]["httpGet"]["path"] == loaded, server["startupProbe"]
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", "liveness stays on the process"


def test_no_outbound_port_bypasses_the_sidecar(eu_config: StackConfig) -> None:
    annotations = _pod(eu_config)["metadata"]["annotations"]
    assert not [a for a in annotations if a.startswith("traffic.sidecar.istio.io/exclude")], annotations


def test_sidecar_resources_are_explicit(eu_config: StackConfig) -> None:
    annotations = _pod(eu_config)["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("sidecar.istio.io/proxy")} == {
        "sidecar.istio.io/proxyCPU": serving.SIDECAR_CPU,
        "sidecar.istio.io/proxyMemory": serving.SIDECAR_MEMORY,
        "sidecar.istio.io/proxyCPULimit": serving.SIDECAR_CPU_LIMIT,
        "sidecar.istio.io/proxyMemoryLimit": serving.SIDECAR_MEMORY_LIMIT,
    }, annotations


def test_bucket_reaches_the_sync_through_the_environment(eu_config: StackConfig) -> None:
    (sync,) = _pod(eu_config)["spec"]["initContainers"]
    env = {e["name"]: e for e in sync["env"]}
    assert env["MODEL_BUCKET"]["valueFrom"] == {
        "configMapKeyRef": {"name": "tabular-classifier-store", "key": serving.BUCKET_KEY}
    }, env["MODEL_BUCKET"]
    assert sync["args"] == [
        "s3://$(MODEL_BUCKET)/models/tabular-classifier/2",
        "/models/tabular-classifier/2",
    ]
    assert "$(" not in serving.SYNC_SCRIPT, "the kubelet would expand $(VAR) inside the script too"
    assert env["AWS_STS_REGIONAL_ENDPOINTS"]["value"] == "regional", "STS stays in the region"
    assert "AWS_ENDPOINT_URL" not in env and "envFrom" not in sync, "EKS: regional S3 and IRSA"


def test_on_premises_store_endpoint_and_credentials(eu_config: StackConfig) -> None:
    pod = _pod(eu_config, store_endpoint="https://objects.dc1.example.ae", store_credentials_secret="creds")
    (sync,) = pod["spec"]["initContainers"]
    assert {"name": "AWS_ENDPOINT_URL", "value": "https://objects.dc1.example.ae"} in sync["env"], sync["env"]
    assert sync["envFrom"] == [{"secretRef": {"name": "creds"}}], sync.get("envFrom")


def test_a_model_reading_features_mounts_the_namespaces_feature_repository(eu_config: StackConfig) -> None:
    pod = _pod(eu_config, features=True)["spec"]
    (server,) = pod["containers"]
    assert {"name": "SERVING_FEATURE_REPO", "value": "/etc/feast"} in server["env"], server["env"]
    assert {"name": "feature-repo", "mountPath": "/etc/feast", "readOnly": True} in server["volumeMounts"]
    assert {"name": "feature-repo", "configMap": {"name": "feature-store"}} in pod["volumes"], pod["volumes"]
    (sync,) = pod["initContainers"]
    assert "feature-repo" not in {m["name"] for m in sync["volumeMounts"]}, "the sync needs no feature store"


def test_a_model_sent_its_features_is_served_as_before(eu_config: StackConfig) -> None:
    pod = _pod(eu_config)["spec"]
    (server,) = pod["containers"]
    assert "SERVING_FEATURE_REPO" not in {e["name"] for e in server["env"]}, server["env"]
    assert "feature-repo" not in {v["name"] for v in pod["volumes"]}, pod["volumes"]


def test_deployment_validates(eu_config: StackConfig) -> None:
    spec = replace(_spec(eu_config), store_endpoint="https://s3.example", store_credentials_secret="creds")
    validate(serving.deployment(spec, "1"))
    validate(serving.deployment(_spec(eu_config), "2"))
    validate(serving.deployment(replace(_spec(eu_config), features=True), "2"))


def _fake_aws(tmp_path: Path) -> dict[str, str]:
    """An `aws` on PATH whose `s3 sync s3://B/K DIR` copies `<store>/B/K` to DIR, like the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aws"
    fake.write_text(
        "#!/bin/sh\n"
        "for last; do :; done\n"
        'src=""; for a; do case "$a" in s3://*) src="${a#s3://}";; esac; done\n'
        'mkdir -p "$last"\ncp -R "$STORE/$src/." "$last/"\n'
    )
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STORE": str(tmp_path / "store"), "AWS_REGION": "r"}


def _publish(tmp_path: Path, files: dict[str, bytes], sums: str | None) -> None:
    version = tmp_path / "store" / "bucket" / "models" / "m" / "1"
    version.mkdir(parents=True)
    for name, body in files.items():
        (version / name).write_bytes(body)
    if sums is not None:
        (version / serving.CHECKSUMS_FILE).write_text(sums)


def _sync(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        "/bin/sh",
        "-c",
        serving.SYNC_SCRIPT,
        "model-sync",
        "s3://bucket/models/m/1",
        str(tmp_path / "out"),
    ]
    env = _fake_aws(tmp_path)
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=60)


def _sum(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


MODEL_BYTES = b"onnx-model"


@pytest.mark.parametrize(
    "sums",
    [
        f"{_sum(MODEL_BYTES)}  model.onnx\n{_sum(b'c')}  labels.txt\n",
        f"{_sum(MODEL_BYTES)} *model.onnx",  # binary-mode marker, no final newline
    ],
)
def test_sync_accepts_files_that_match_their_checksums(tmp_path: Path, sums: str) -> None:
    _publish(tmp_path, {"model.onnx": MODEL_BYTES, "labels.txt": b"c"}, sums)
    done = _sync(tmp_path)
    assert done.returncode == 0, f"sync failed: {done.stderr}"
    assert (tmp_path / "out" / "model.onnx").read_bytes() == MODEL_BYTES, "the model is in place"


@pytest.mark.parametrize(
    ("sums", "message"),
    [
        (None, "no SHA256SUMS"),
        (f"{_sum(b'other')}  model.onnx\n", "do not match"),
        (f"{_sum(b'c')}  labels.txt\n", "does not list model.onnx"),
        (f"{_sum(MODEL_BYTES)}  model.onnx\n{_sum(b'x')}  missing.bin\n", "do not match"),
    ],
)
def test_sync_fails_the_pod_on_missing_or_wrong_checksums(
    tmp_path: Path, sums: str | None, message: str
) -> None:
    _publish(tmp_path, {"model.onnx": MODEL_BYTES, "labels.txt": b"c"}, sums)
    done = _sync(tmp_path)
    assert done.returncode != 0, f"sync must fail ({message}): {done.stdout} {done.stderr}"
    assert message in done.stderr, f"the error says what is wrong: {done.stderr}"


def test_pod_authorization_admits_only_the_gateway_on_the_serving_ports(eu_config: StackConfig) -> None:
    model = eu_config.models[0]
    policy = serving.pod_authorization(model)
    validate(policy)
    assert policy["metadata"]["namespace"] == model.tenant, "in the model's namespace, on its pods"
    pod_labels = serving.deployment(_spec(eu_config), "1")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), (
        "selects every version's pods"
    )
    assert policy["spec"]["action"] == "ALLOW", policy["spec"]
    assert policy["spec"]["rules"] == [
        {
            "from": [{"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway"]}}],
            "to": [{"operation": {"ports": ["8080", "8081"]}}],
        }
    ], policy["spec"]["rules"]


@pytest.mark.parametrize(("role", "annotated"), [("arn:aws:iam::1:role/r", True), (None, False)])
def test_service_account_is_annotated_only_with_a_role(
    eu_config: StackConfig, role: str | None, annotated: bool
) -> None:
    meta = serving.service_account(eu_config.models[0], role)["metadata"]
    assert ("eks.amazonaws.com/role-arn" in meta.get("annotations", {})) is annotated, meta


@pytest.mark.parametrize(
    ("quantity", "millicores"), [("2", 2000), ("500m", 500), ("1.5", 1500), ("0.1", 100), ("250m", 250)]
)
def test_cpu_quantities(quantity: str, millicores: int) -> None:
    assert serving.cpu_millicores(quantity) == millicores, quantity


@pytest.mark.parametrize(
    ("quantity", "size"), [("2Gi", 2 * 2**30), ("512Mi", 2**29), ("1G", 10**9), ("100", 100)]
)
def test_memory_quantities(quantity: str, size: int) -> None:
    assert serving.memory_bytes(quantity) == size, quantity


@pytest.mark.parametrize("bad", ["", "2 cores", "1e3", "-1", "2GB"])
def test_bad_quantities_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        serving.cpu_millicores(bad)
    with pytest.raises(ValueError, match="not a"):
        serving.memory_bytes(bad)


def test_pod_footprint_counts_the_sidecar(eu_config: StackConfig) -> None:
    model = replace(eu_config.models[0], cpu="2", memory="2Gi")
    assert serving.pod_footprint(model) == (2_000 + 500, 2 * 2**30 + 256 * 2**20), serving.pod_footprint(
        model
    )


def test_pod_footprint_counts_the_sync_when_it_is_the_larger(eu_config: StackConfig) -> None:
    model = replace(eu_config.models[0], cpu="100m", memory="128Mi")
    sync = serving.SYNC_LIMITS
    expected = (500 + serving.cpu_millicores(sync["cpu"]), 256 * 2**20 + serving.memory_bytes(sync["memory"]))
    assert serving.pod_footprint(model) == expected, "the proxy runs beside the init container too"


def test_pod_footprint_matches_the_pod_it_describes(eu_config: StackConfig) -> None:
    pod = _pod(eu_config)["spec"]
    limits = [c["resources"]["limits"] for c in pod["containers"] + pod["initContainers"]]
    cpu = [serving.cpu_millicores(x["cpu"]) for x in limits]
    assert serving.pod_footprint(eu_config.models[0])[0] == max(cpu) + 500, f"limits {limits}"


def test_server_reads_the_caller_from_the_header_the_gateway_writes(eu_config: StackConfig) -> None:
    spec = _spec(eu_config)
    (server,) = serving.deployment(spec, "1")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env.get("SERVING_TRUSTED_PROXY_HEADER") == CALLER_HEADER, (
        f"the audit log would name whatever a client sends: {env}"
    )


def test_pods_drain_before_the_kubelet_and_the_sidecar_give_up(eu_config: StackConfig) -> None:
    pod = serving.deployment(_spec(eu_config), "1")["spec"]["template"]
    (server,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    delay, grace = int(env["SERVING_DRAIN_DELAY_SECONDS"]), int(env["SERVING_GRACE_PERIOD_SECONDS"])
    assert 0 < delay < grace < pod["spec"]["terminationGracePeriodSeconds"], (delay, grace, pod["spec"])
    proxy = json.loads(pod["metadata"]["annotations"]["proxy.istio.io/config"])
    assert proxy["terminationDrainDuration"] == f"{grace}s", f"the sidecar stops before the server: {proxy}"


def test_every_route_tells_the_pods_how_it_chose_their_version(eu_config: StackConfig) -> None:
    """The server's `assignment` label behind the mesh: each route sets it (replacing a client's value), a
    sticky route also the user key, from the model's sticky header through Envoy's %REQ()%."""
    model = eu_config.models[0]
    assert model.variants.sticky_header is not None, "the eu stack's model assigns by a sticky header"
    routes = _routes(eu_config)
    user = f"%REQ({model.variants.sticky_header.lower()})%"
    expected = {
        f"{model.name}-v1": {ASSIGNMENT_HEADER: "explicit"},
        f"{model.name}-v2": {ASSIGNMENT_HEADER: "explicit"},
        f"{model.name}-header-0": {ASSIGNMENT_HEADER: "header"},
        f"{model.name}-sticky-v1": {ASSIGNMENT_HEADER: "sticky", USER_HEADER: user},
        f"{model.name}-sticky-v2": {ASSIGNMENT_HEADER: "sticky", USER_HEADER: user},
        f"{model.name}-weighted": {ASSIGNMENT_HEADER: "weighted"},
    }
    got = {name: route["headers"]["request"]["set"] for name, route in routes.items()}
    assert got == expected, got
    validate(_service(eu_config))


def test_the_pods_believe_the_routes_assignment_and_the_mesh_counts_it(eu_config: StackConfig) -> None:
    (server,) = _pod(eu_config)["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["SERVING_TRUST_ASSIGNMENT_HEADER"] == "true", env
    model = eu_config.models[0]
    telemetry = serving.assignment_telemetry(model)
    validate(telemetry)
    assert telemetry["metadata"]["namespace"] == model.tenant, "beside the pods, not mesh-wide"
    assert telemetry["spec"]["selector"]["matchLabels"] == serving.labels(model.name), telemetry
    [override] = telemetry["spec"]["metrics"][0]["overrides"]
    assert override["tagOverrides"] == {"assignment": {"value": f"request.headers['{ASSIGNMENT_HEADER}']"}}


def test_the_mesh_and_the_server_name_the_same_headers_and_values() -> None:
    assert (ASSIGNMENT_HEADER, USER_HEADER) == (assignment.ASSIGNMENT_HEADER, assignment.USER_HEADER)
    assert {"explicit", "header", "sticky", "weighted"} == assignment.ASSIGNMENTS
