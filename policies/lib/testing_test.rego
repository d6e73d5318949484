# METADATA
# title: Test helpers
# description: Builders for small normalized plans, shared by every package's tests.
package lib.testing_test

import data.lib.result

provider_urn := "urn:pulumi:uae-prod::p::pulumi:providers:aws::default_7_0_0"

# METADATA
# description: A normalized resource of the uae-prod stack on the default AWS provider.
resource(type, name, props) := {
	"urn": sprintf("urn:pulumi:uae-prod::p::%s::%s", [type, name]),
	"type": type,
	"name": name,
	"provider": provider_urn,
	"parent": "",
	"dependencies": [],
	"properties": props,
}

# METADATA
# description: The default AWS provider in region.
provider(region) := object.union(
	resource("pulumi:providers:aws", "default_7_0_0", {"region": region}),
	{"provider": ""},
)

# METADATA
# description: A plan of the uae-prod stack (jurisdiction AE) with the provider in me-central-1.
plan(resources) := {
	"stack": "uae-prod",
	"project": "p",
	"jurisdiction": "AE",
	"config": {},
	"resources": array.concat([provider("me-central-1")], resources),
}

# METADATA
# description: A Kubernetes object as pulumi-kubernetes gives it.
k8s(kind, name, namespace, spec) := resource(sprintf("kubernetes:test/v1:%s", [kind]), name, {
	"kind": kind,
	"metadata": {"name": name, "namespace": namespace},
	"spec": spec,
})

# METADATA
# description: The comparable part of findings (id, severity, URN, message).
brief(findings) := {[f.id, f.severity, f.urn, f.message] | some f in findings}

test_finding_carries_metadata if {
	annotations := {"custom": {"id": "X-1", "severity": "low", "message": "%s is %d", "remediation": "fix it"}}
	r := resource("aws:s3/bucket:Bucket", "b", {})
	result.finding(annotations, r, ["b", 3]) == {
		"id": "X-1",
		"severity": "low",
		"urn": r.urn,
		"type": "aws:s3/bucket:Bucket",
		"message": "b is 3",
		"remediation": "fix it",
	}
}
