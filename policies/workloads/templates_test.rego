package workloads.pods_test

# Host paths, seccomp and model sidecars (WL-010..012), and the pod templates custom resources
# carry; apart from pods_test.rego for its length.

import data.lib.testing_test as t
import data.workloads.pods

template(meta, spec) := t.k8s("Deployment", "iris", "models", {"template": {
	"metadata": meta,
	"spec": object.union({"containers": [good]}, spec),
}})

found(resources) := f if {
	f := t.brief(pods.deny) with input as t.plan(resources)
}

test_host_path_passing if {
	found([template({}, {"volumes": [{"name": "tmp", "emptyDir": {}}]})]) == set()
}

test_host_path_violating if {
	d := template({}, {"volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]})
	found([d]) == {["WL-010", "high", d.urn, "workload iris mounts the node's /var/run/docker.sock (volume docker)"]}
}

test_host_path_missing_field if {
	# A hostPath without a path still mounts the node.
	d := template({}, {"volumes": [{"name": "node", "hostPath": {"type": "Directory"}}]})
	found([d]) == {["WL-010", "high", d.urn, "workload iris mounts the node's unset (volume node)"]}
}

test_seccomp_passing if {
	d := template({}, {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}})
	found([d]) == set()
}

test_seccomp_violating if {
	unconfined := {"seccompProfile": {"type": "Unconfined"}}
	container := object.union(good, {"securityContext": object.union(good.securityContext, unconfined)})
	d := t.k8s("Deployment", "iris", "models", {"template": {"spec": {
		"securityContext": unconfined,
		"containers": [container],
	}}})
	found([d]) == {
		["WL-011", "high", d.urn, "pod of iris/server runs with seccomp Unconfined"],
		["WL-011", "high", d.urn, "container iris/server runs with seccomp Unconfined"],
	}
}

test_seccomp_missing_field if {
	# No profile: the runtime's default, not Unconfined.
	found([template({}, {})]) == set()
}

model_labels := {"app": "iris", "version": "v1"}

test_model_sidecar_passing if {
	kept := template({"labels": model_labels}, {})
	job := object.union(
		template({"labels": {"app": "materialize"}, "annotations": {"sidecar.istio.io/inject": "false"}}, {}),
		{"urn": "u-job"},
	)
	found([kept, job]) == set()
}

test_model_sidecar_violating if {
	off := template(
		{"labels": object.union(model_labels, {"sidecar.istio.io/inject": "false"}), "annotations": {
			"sidecar.istio.io/inject": "False",
		}},
		{},
	)
	found([off]) == {
		["WL-012", "high", off.urn, "model workload iris turns its sidecar off (annotation sidecar.istio.io/inject=false)"],
		["WL-012", "high", off.urn, "model workload iris turns its sidecar off (label sidecar.istio.io/inject=false)"],
	}
}

test_model_sidecar_missing_field if {
	# No template metadata at all: nothing turns the sidecar off.
	found([t.k8s("Deployment", "iris", "models", {"template": {"spec": {"containers": [good]}}})]) == set()
}

test_custom_resources_with_pod_templates_are_checked if {
	root := object.union(good, {"securityContext": object.union(good.securityContext, {"runAsNonRoot": false})})
	rollout := t.k8s("Rollout", "r", "models", {"template": {"spec": {"containers": [root]}}})
	knative := t.resource("kubernetes:serving.knative.dev/v1:Service", "k", {
		"kind": "Service", "metadata": {"name": "k", "namespace": "models"},
		"spec": {"template": {"spec": {"containers": [root]}}},
	})
	kserve := t.k8s("InferenceService", "s", "models", {"predictor": {"containers": [root]}})
	core := t.resource("kubernetes:core/v1:Service", "svc", {"kind": "Service", "spec": {"ports": [{"port": 80}]}})
	{[f[0], f[2]] | some f in found([rollout, knative, kserve, core])} == {
		["WL-001", rollout.urn], ["WL-001", knative.urn], ["WL-001", kserve.urn],
	}
}
