package document.integrity_test

import data.document.integrity
import data.lib.testing_test as t

deployment := t.k8s("Deployment", "iris", "banking", {})

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models"})

test_one_resource_per_urn_passing if {
	integrity.deny == set() with input as t.plan([bucket, deployment])
}

test_one_resource_per_urn_violating if {
	# The normalizer counts repeated URNs; every copy stays in the resources and is judged.
	doc := object.union(t.plan([bucket, bucket]), {"duplicate_urns": {bucket.urn: 2}})
	t.brief(integrity.deny) == {[
		"DOC-001", "high", bucket.urn,
		sprintf("%s appears 2 times in the document; the engine names each resource once", [bucket.urn]),
	]} with input as doc
}

test_one_resource_per_urn_missing_field if {
	# An input built before the count existed (no duplicate_urns) is read as having none.
	integrity.deny == set() with input as object.remove(t.plan([bucket]), {"duplicate_urns"})
}

test_kind_matches_type_passing if {
	integrity.deny == set() with input as t.plan([deployment])
}

test_kind_matches_type_violating if {
	hidden := object.union(deployment, {"properties": {"kind": "ConfigMap"}})
	t.brief(integrity.deny) == {[
		"DOC-002", "high", hidden.urn,
		"iris is a Deployment by its type but says kind \"ConfigMap\" in its inputs",
	]} with input as t.plan([hidden])
}

test_kind_matches_type_missing_field if {
	# No kind input: the type alone says what the object is.
	bare := object.union(deployment, {"properties": {"kind": null}})
	integrity.deny == set() with input as t.plan([bare])
}

test_kind_of_a_release_is_not_an_object_kind if {
	release := t.resource("kubernetes:helm.sh/v3:Release", "istiod", {"kind": "anything"})
	integrity.deny == set() with input as t.plan([release])
}

test_thresholds_from_policy_data_passing if {
	doc := object.union(t.plan([bucket]), {"config": {"model-serving:owner": "ml"}})
	integrity.deny == set() with input as doc
}

test_thresholds_from_policy_data_violating if {
	doc := object.union(t.plan([bucket]), {"config": {"model-serving:maxCanaryStep": "100"}})
	t.brief(integrity.deny) == {[
		"DOC-003", "high", "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod",
		"stack uae-prod sets model-serving:maxCanaryStep=100 in its config; the gate's thresholds come from the policy data",
	]} with input as doc
}

test_thresholds_from_policy_data_missing_field if {
	integrity.deny == set() with input as object.remove(t.plan([bucket]), {"config"})
}
