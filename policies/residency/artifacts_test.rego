package residency.artifacts_test

import data.lib.testing_test as t
import data.residency.artifacts

# The registry location of uae-prod: its ECR in me-central-1 and the stack's namespace.
ecr := "123456789012.dkr.ecr.me-central-1.amazonaws.com/uae-prod"

west_ecr := "123456789012.dkr.ecr.eu-west-1.amazonaws.com/eu-prod"

central_ecr := "123456789012.dkr.ecr.eu-central-1.amazonaws.com/eu-prod"

# The policy data's stack map for these tests, so that they do not follow the shipped accounts.
stacks := {
	"uae-prod": {"jurisdiction": "AE", "kind": "aws", "registries": [ecr]},
	"eu-prod": {"jurisdiction": "EU", "kind": "aws", "registries": [central_ecr, west_ecr]},
	"onprem-ae": {"jurisdiction": "AE", "kind": "onprem", "registries": ["registry.dc1.example.ae"]},
}

sha := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

digest := concat("", ["sha256:", sha])

k8s_provider := "urn:pulumi:uae-prod::p::pulumi:providers:kubernetes::me-central-1-k8s"

# The cluster's kubeconfig, as the infra layer's outputs give it: its server names the region.
kubeconfig := json.marshal({"clusters": [{"cluster": {"server": "https://ABC.gr7.me-central-1.eks.amazonaws.com"}}]})

provider := object.union(
	t.resource("pulumi:providers:kubernetes", "me-central-1-k8s", {"kubeconfig": kubeconfig}),
	{"provider": ""},
)

release(name, props) := object.union(
	t.resource("kubernetes:helm.sh/v3:Release", name, object.union({"version": "1.0.0"}, props)),
	{"provider": k8s_provider},
)

chart(name) := sprintf("oci://%s/mirror/charts/%s", [ecr, name])

# A uae-prod plan with the cluster's provider.
plan_of(resources) := t.plan(array.concat([provider], resources))

test_chart_passing if {
	doc := plan_of([release("monitoring", {"chart": chart("kube-prometheus-stack")})])
	found := t.brief(artifacts.deny) with input as doc with data.stacks as stacks
	found == set()
}

test_chart_passing_on_premises if {
	r := release("monitoring", {"chart": "oci://registry.dc1.example.ae/mirror/charts/kube-prometheus-stack"})
	doc := object.union(t.plan([r]), {"stack": "onprem-ae"})
	found := t.brief(artifacts.deny) with input as doc with data.stacks as stacks
	found == set()
}

mirror(registry) := sprintf("oci://%s/mirror/charts", [registry])

# The RES-007 finding for a release's field taken from ref, with the mirror(s) it should use.
chart_finding(r, field, ref, mirrors) := ["RES-007", "high", r.urn, sprintf(
	"Helm release %s takes its %s from %q, outside the stack's in-region chart mirror %s",
	[r.name, field, ref, mirrors],
)]

# The RES-008 finding for a value at path set to ref, with the problem found.
image_finding(r, path, ref, problem) := ["RES-008", "high", r.urn, sprintf(
	"Helm release %s sets %s to %q: %s",
	[r.name, path, ref, problem],
)]

outside(allowed) := sprintf("it is outside the stack's in-region registry %s", [allowed])

floating := "the image is not pinned by sha256 digest"

test_chart_violating if {
	outside_repo := release("outside", {"chart": "oci://ghcr.io/prometheus-community/charts/kube-prometheus-stack"})
	other_region := release("other-region", {
		"chart": "oci://123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/charts/istiod",
	})
	escaped := release("escaped", {"chart": concat("", [chart("x"), "/../../other/x"])})
	namespace := release("namespace", {"chart": "oci://123456789012.dkr.ecr.me-central-1.amazonaws.com/mirror/charts/x"})
	repo := release("repo", {
		"chart": chart("istiod"),
		"repositoryOpts": {"repo": "https://istio-release.storage.googleapis.com/charts"},
	})
	doc := plan_of([outside_repo, other_region, escaped, namespace, repo])
	found := t.brief(artifacts.deny) with input as doc with data.stacks as stacks
	found == {
		chart_finding(namespace, "chart", namespace.properties.chart, mirror(ecr)),
		chart_finding(outside_repo, "chart", outside_repo.properties.chart, mirror(ecr)),
		chart_finding(other_region, "chart", other_region.properties.chart, mirror(ecr)),
		chart_finding(escaped, "chart", escaped.properties.chart, mirror(ecr)),
		chart_finding(repo, "repository", repo.properties.repositoryOpts.repo, mirror(ecr)),
	}
}

test_chart_missing_field if {
	r := release("monitoring", {})
	found := t.brief(artifacts.deny) with input as plan_of([r]) with data.stacks as stacks
	found == {chart_finding(r, "chart", "unset", mirror(ecr))}
}

test_chart_unknown_stack_missing_field if {
	# A stack the policy data does not name has no registry: every chart fails.
	r := release("monitoring", {"chart": chart("kube-prometheus-stack")})
	doc := object.union(t.plan([r]), {"stack": "unknown-stack"})
	found := t.brief(artifacts.deny) with input as doc with data.stacks as stacks
	found == {chart_finding(r, "chart", chart("kube-prometheus-stack"), "none")}
}

with_values(values) := release("addon", {"chart": chart("addon"), "values": values})

in_ecr(path) := concat("/", [ecr, path])

test_values_passing if {
	values := {
		"image": {"repository": in_ecr("mirror/metrics-server"), "tag": concat("@", ["v0.8.0", digest])},
		"webhook": {"image": {"repository": in_ecr("mirror/jetstack/webhook"), "digest": digest}},
		"grafana": {"image": {"repository": "mirror/grafana/grafana", "tag": "12.1.0", "sha": sha}},
		"ksm": {"image": {"registry": ecr, "repository": "mirror/ksm", "sha": digest}},
		"global": {"imageRegistry": ecr, "hub": in_ecr("mirror/istio"), "tag": "1.30.8"},
		"pilot": {"image": concat("@", [in_ecr("mirror/istio/pilot"), digest]), "resources": {"cpu": "1"}},
		"pullPolicy": {"image": {"pullPolicy": "IfNotPresent"}},
	}
	found := t.brief(artifacts.deny) with input as plan_of([with_values(values)]) with data.stacks as stacks
	found == set()
}

test_values_violating if {
	values := {
		"image": {"repository": "docker.io/bitnami/metrics-server", "tag": concat("@", ["v0.8.0", digest])},
		"sidecar": {"image": {"repository": in_ecr("mirror/sidecar"), "tag": "1.30.7"}},
		"cni": {"image": "quay.io/istio/install-cni:1.30.8"},
		"global": {"hub": "docker.io/istio"},
		"other": {"image": concat("", [ecr, "-dev/mirror/x@", digest])},
	}
	r := with_values(values)
	found := t.brief(artifacts.deny) with input as plan_of([r]) with data.stacks as stacks
	found == {
		image_finding(
			r, "image", concat("@", ["docker.io/bitnami/metrics-server:v0.8.0", digest]),
			outside(ecr),
		),
		image_finding(r, "sidecar.image", in_ecr("mirror/sidecar:1.30.7"), floating),
		image_finding(r, "cni.image", values.cni.image, outside(ecr)),
		image_finding(r, "cni.image", values.cni.image, floating),
		image_finding(r, "global.hub", "docker.io/istio", outside(ecr)),
		image_finding(r, "other.image", values.other.image, outside(ecr)),
	}
}

test_values_missing_field if {
	# A repository without a registry (and no global.imageRegistry) is pulled from the chart's
	# default registry; an image without tag or digest floats.
	r := with_values({"grafana": {"image": {"repository": "mirror/grafana/grafana"}}})
	found := t.brief(artifacts.deny) with input as plan_of([r]) with data.stacks as stacks
	found == {
		image_finding(r, "grafana.image", "mirror/grafana/grafana", outside(ecr)),
		image_finding(r, "grafana.image", "mirror/grafana/grafana", floating),
	}
}

test_values_other_region_violating if {
	# eu-prod lists two ECRs; a release on the eu-west-1 cluster may use only eu-west-1's.
	west := object.union(provider, {"properties": {"kubeconfig": replace(kubeconfig, "me-central-1", "eu-west-1")}})
	image := sprintf("%s/mirror/istio/pilot@%s", [central_ecr, digest])
	r := with_values({"pilot": {"image": image}})
	doc := object.union(t.plan([west, r]), {"stack": "eu-prod"})
	found := t.brief(artifacts.deny) with input as doc with data.stacks as stacks
	found == {
		chart_finding(r, "chart", chart("addon"), mirror(west_ecr)),
		image_finding(r, "pilot.image", image, outside(west_ecr)),
	}
}

test_values_kubeconfig_object_violating if {
	# A kubeconfig given as an object (not YAML or JSON text) names the region just the same.
	west := object.union(provider, {"properties": {"kubeconfig": {"clusters": [{"cluster": {
		"server": "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
	}}]}}})
	r := release("monitoring", {"chart": chart("kube-prometheus-stack")})
	found := t.brief(artifacts.deny) with input as t.plan([west, r]) with data.stacks as stacks
	found == {chart_finding(r, "chart", chart("kube-prometheus-stack"), "none")}
}
