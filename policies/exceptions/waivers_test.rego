package exceptions.waivers_test

import data.exceptions.waivers
import data.lib.testing_test as t

urn := "urn:pulumi:uae-prod::p::aws:s3/bucket:Bucket::models"

waiver(expires) := {"id": "ENC-001", "urn": urn, "reason": "migrating", "owner": "ml", "expires": expires}

# 2026-01-01T00:00:00Z
now := 1767225600000000000

test_waived_passing if {
	waivers.waived({"id": "ENC-001", "urn": urn}, now)
		with input as t.plan([])
		with data.waivers as [waiver("2026-06-30")]
}

test_waived_other_rule if {
	not waivers.waived({"id": "ENC-002", "urn": urn}, now)
		with input as t.plan([])
		with data.waivers as [waiver("2026-06-30")]
}

test_expired_passing if {
	waivers.deny == set() with input as t.plan([])
		with data.waivers as [waiver("2026-06-30")]
		with time.now_ns as now
}

test_expired_violating if {
	t.brief(waivers.deny) == {[
		"WAV-001", "high", urn,
		sprintf("waiver of ENC-001 for %s (owner ml) expired on 2025-12-31", [urn]),
	]} with input as t.plan([])
		with data.waivers as [waiver("2025-12-31")]
		with time.now_ns as now
	not waivers.waived({"id": "ENC-001", "urn": urn}, now)
		with input as t.plan([])
		with data.waivers as [waiver("2025-12-31")]
}

test_expired_missing_field if {
	t.brief(waivers.deny) == {[
		"WAV-002", "medium", urn,
		sprintf("waiver for %s lacks or garbles expires, owner", [urn]),
	]} with input as t.plan([])
		with data.waivers as [object.remove(waiver("x"), ["owner", "expires"])]
		with time.now_ns as now
}

test_complete_violating if {
	t.brief(waivers.deny) == {[
		"WAV-002", "medium", urn,
		sprintf("waiver for %s lacks or garbles expires", [urn]),
	]} with input as t.plan([])
		with data.waivers as [waiver("next year")]
		with time.now_ns as now
}

test_other_stack_ignored if {
	other := object.union(waiver("2025-12-31"), {"urn": "urn:pulumi:eu-prod::p::aws:s3/bucket:Bucket::models"})
	waivers.deny == set() with input as t.plan([]) with data.waivers as [other] with time.now_ns as now
}

test_overrides_add_waivers if {
	t.brief(waivers.deny) == {[
		"WAV-001", "high", urn,
		sprintf("waiver of ENC-001 for %s (owner ml) expired on 2025-12-31", [urn]),
	]} with input as t.plan([])
		with data.overrides as {"waivers": [waiver("2025-12-31")]}
		with time.now_ns as now
}
