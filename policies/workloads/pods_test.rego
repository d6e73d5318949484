package workloads.pods_test

import data.lib.testing_test as t
import data.workloads.pods

digest := "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

image := concat("@", ["123456789012.dkr.ecr.me-central-1.amazonaws.com/serving", digest])

good := {
	"name": "server",
	"image": image,
	"securityContext": {
		"runAsNonRoot": true, "runAsUser": 10001, "readOnlyRootFilesystem": true,
		"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
	},
	"resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
	"readinessProbe": {"httpGet": {"path": "/v2/health/ready"}},
	"livenessProbe": {"httpGet": {"path": "/v2/health/live"}},
}

deploy(c) := t.k8s("Deployment", "iris", "models", {"template": {"spec": {"containers": [c]}}})

check(c) := found if {
	found := t.brief(pods.deny) with input as t.plan([deploy(c)])
}

urn := deploy(good).urn

with_sc(sc) := object.union(object.remove(good, ["securityContext"]), {"securityContext": sc})

test_all_passing if {
	check(good) == set()
}

test_other_kinds_passing if {
	pod := t.k8s("Pod", "p", "models", {"containers": [good]})
	cron := t.k8s("CronJob", "c", "models", {"jobTemplate": {"spec": {"template": {"spec": {"containers": [good]}}}}})
	pods.deny == set() with input as t.plan([pod, cron])
}

test_non_root_passing if {
	pod_level := object.remove(good, ["securityContext"])
	sc := object.remove(good.securityContext, ["runAsNonRoot", "runAsUser"])
	c := object.union(pod_level, {"securityContext": sc})
	d := t.k8s("Deployment", "iris", "models", {"template": {"spec": {
		"securityContext": {"runAsNonRoot": true, "runAsUser": 10001},
		"containers": [c],
	}}})
	pods.deny == set() with input as t.plan([d])
}

test_non_root_violating if {
	check(object.union(good, {"securityContext": {"runAsUser": 0}})) == {[
		"WL-001", "high", urn, "container iris/server may run as root (runAsNonRoot=true, runAsUser=0)",
	]}
}

test_non_root_missing_field if {
	sc := object.remove(good.securityContext, ["runAsNonRoot", "runAsUser"])
	check(with_sc(sc)) == {[
		"WL-001", "high", urn, "container iris/server may run as root (runAsNonRoot=unset, runAsUser=unset)",
	]}
}

test_read_only_root_passing if {
	check(good) == set()
}

test_read_only_root_violating if {
	check(object.union(good, {"securityContext": {"readOnlyRootFilesystem": false}})) == {[
		"WL-002", "medium", urn, "container iris/server has readOnlyRootFilesystem=false",
	]}
}

test_read_only_root_missing_field if {
	sc := object.remove(good.securityContext, ["readOnlyRootFilesystem"])
	check(with_sc(sc)) == {[
		"WL-002", "medium", urn, "container iris/server has readOnlyRootFilesystem=unset",
	]}
}

test_escalation_violating if {
	check(object.union(good, {"securityContext": {"privileged": true}})) == {[
		"WL-003", "high", urn, "container iris/server has allowPrivilegeEscalation=false, privileged=true",
	]}
}

test_escalation_missing_field if {
	sc := object.remove(good.securityContext, ["allowPrivilegeEscalation"])
	check(with_sc(sc)) == {[
		"WL-003", "high", urn, "container iris/server has allowPrivilegeEscalation=unset, privileged=false",
	]}
}

test_capabilities_violating if {
	check(object.union(good, {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}})) == {[
		"WL-004", "high", urn, "container iris/server drops [\"ALL\"] and adds [\"NET_ADMIN\"]",
	]}
}

test_capabilities_missing_field if {
	sc := object.remove(good.securityContext, ["capabilities"])
	check(with_sc(sc)) == {["WL-004", "high", urn, "container iris/server drops [] and adds []"]}
}

test_limits_violating if {
	check(object.union(object.remove(good, ["resources"]), {"resources": {"limits": {"cpu": "1"}}})) == {[
		"WL-005", "medium", urn, "container iris/server has no memory limit",
	]}
}

test_limits_missing_field if {
	check(object.remove(good, ["resources"])) == {
		["WL-005", "medium", urn, "container iris/server has no cpu limit"],
		["WL-005", "medium", urn, "container iris/server has no memory limit"],
	}
}

test_probes_violating if {
	check(object.union(object.remove(good, ["livenessProbe"]), {"livenessProbe": false})) == {[
		"WL-006", "medium", urn,
		"container iris/server has no livenessProbe",
	]}
}

test_probes_missing_field if {
	check(object.remove(good, ["readinessProbe", "livenessProbe"])) == {
		["WL-006", "medium", urn, "container iris/server has no readinessProbe"],
		["WL-006", "medium", urn, "container iris/server has no livenessProbe"],
	}
}

test_probes_init_containers_passing if {
	init := object.union(object.remove(good, ["livenessProbe", "readinessProbe"]), {"name": "sync"})
	d := t.k8s("Deployment", "iris", "models", {"template": {"spec": {"containers": [good], "initContainers": [init]}}})
	pods.deny == set() with input as t.plan([d])
}

test_probes_jobs_passing if {
	job := t.k8s("Job", "j", "models", {"template": {"spec": {"containers": [object.remove(good, ["livenessProbe"])]}}})
	pods.deny == set() with input as t.plan([job])
}

test_digest_violating if {
	tagged := "123456789012.dkr.ecr.me-central-1.amazonaws.com/serving:1.0"
	check(object.union(good, {"image": tagged})) == {[
		"WL-007", "high", urn, sprintf("container iris/server uses image %q, which is not pinned by digest", [tagged]),
	]}
}

test_digest_missing_field if {
	check(object.remove(good, ["image"])) == {
		["WL-007", "high", urn, "container iris/server uses image \"unset\", which is not pinned by digest"],
		["WL-008", "high", urn, "container iris/server uses image \"unset\" from a registry that is not approved"],
	}
}

test_registry_violating if {
	other := concat("", ["ghcr.io/x/serving@", split(image, "@")[1]])
	check(object.union(good, {"image": other})) == {[
		"WL-008", "high", urn,
		sprintf("container iris/server uses image %q from a registry that is not approved", [other]),
	]}
}

test_registry_missing_field if {
	check(object.union(good, {"image": ""})) == {
		["WL-007", "high", urn, "container iris/server uses image \"\", which is not pinned by digest"],
		["WL-008", "high", urn, "container iris/server uses image \"\" from a registry that is not approved"],
	}
}

test_registry_listed_for_stack_passing if {
	local := concat("", ["registry.dc1.example.ae/serving@", digest])
	doc := object.union(t.plan([deploy(object.union(good, {"image": local}))]), {"stack": "onprem-ae"})
	pods.deny == set() with input as doc
}

test_registry_listed_for_other_stack_violating if {
	local := concat("", ["registry.dc1.example.ae/serving@", digest])
	check(object.union(good, {"image": local})) == {[
		"WL-008", "high", urn,
		sprintf("container iris/server uses image %q from a registry that is not approved", [local]),
	]}
}

pod_with(fields) := t.k8s("Pod", "p", "models", object.union({"containers": [good]}, fields))

test_host_namespaces_passing if {
	pods.deny == set() with input as t.plan([pod_with({"hostNetwork": false, "hostPID": false, "hostIPC": false})])
}

test_host_namespaces_missing_field_passing if {
	pods.deny == set() with input as t.plan([pod_with({})])
}

test_host_namespaces_violating if {
	p := pod_with({"hostNetwork": true, "hostPID": true, "hostIPC": false})
	t.brief(pods.deny) == {
		["WL-009", "high", p.urn, "workload p shares the host's namespace (hostNetwork=true)"],
		["WL-009", "high", p.urn, "workload p shares the host's namespace (hostPID=true)"],
	} with input as t.plan([p])
}

test_host_namespaces_template_violating if {
	d := t.k8s("Deployment", "iris", "models", {"template": {"spec": {"containers": [good], "hostIPC": true}}})
	found := t.brief(pods.deny) with input as t.plan([d])
	found == {["WL-009", "high", d.urn, "workload iris shares the host's namespace (hostIPC=true)"]}
}
