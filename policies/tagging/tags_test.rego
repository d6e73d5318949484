package tagging.tags_test

import data.lib.testing_test as t
import data.tagging.tags

full := {"owner": "ml", "data-classification": "confidential", "jurisdiction": "AE"}

key(props) := t.resource("aws:kms/key:Key", "key", props)

test_required_passing if {
	other := t.resource("aws:s3/bucketVersioning:BucketVersioning", "v", {})
	tags.deny == set() with input as t.plan([key({"tags": full}), other])
}

test_required_from_default_tags_passing if {
	provider := object.union(t.provider("me-central-1"), {"properties": {"defaultTags": {"tags": full}}})
	doc := object.union(t.plan([key({})]), {"resources": [provider, key({})]})
	tags.deny == set() with input as doc
}

test_required_violating if {
	k := key({"tags": {"owner": "ml", "jurisdiction": "AE", "data-classification": ""}})
	t.brief(tags.deny) == {[
		"TAG-001", "low", k.urn,
		"key is missing tags data-classification",
	]} with input as t.plan([k])
}

test_required_missing_field if {
	k := key({})
	t.brief(tags.deny) == {[
		"TAG-001", "low", k.urn,
		"key is missing tags data-classification, jurisdiction, owner",
	]} with input as t.plan([k])
}

test_jurisdiction_passing if {
	tags.deny == set() with input as t.plan([key({"tags": full})])
}

test_jurisdiction_violating if {
	k := key({"tags": object.union(full, {"jurisdiction": "EU"})})
	t.brief(tags.deny) == {[
		"TAG-002", "medium", k.urn,
		"key is tagged jurisdiction=EU in a stack of jurisdiction AE",
	]} with input as t.plan([k])
}

test_jurisdiction_missing_field if {
	# Untaggable resources with a tags map are still checked.
	r := t.resource("aws:ec2/routeTable:RouteTable", "rt", {"tags": object.remove(full, ["jurisdiction"])})
	t.brief(tags.deny) == {["TAG-001", "low", r.urn, "rt is missing tags jurisdiction"]} with input as t.plan([r])
}
