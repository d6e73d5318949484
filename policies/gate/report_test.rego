package gate.report_test

import data.gate.report
import data.lib.testing_test as t

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models", "region": "eu-west-1"})

# 2026-01-01T00:00:00Z
now := 1767225600000000000

waiver := {"id": "RES-002", "urn": bucket.urn, "reason": "moving", "owner": "ml", "expires": "2026-06-30"}

# What the rules find on the bucket (id, severity, URN, message).
bucket_findings := {
	["RES-002", "critical", bucket.urn, "models is placed in region \"eu-west-1\", outside jurisdiction AE"],
	["ENC-001", "high", bucket.urn, "bucket models has no SSE-KMS configuration (found none)"],
	["ENC-010", "high", bucket.urn, "bucket models has no policy denying non-TLS requests (0 bucket policies found)"],
	[
		"NET-003", "critical", bucket.urn,
		concat("", [
			"bucket models does not block public access (settings off or missing: ",
			"blockPublicAcls, blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets)",
		]),
	],
	["TAG-001", "low", bucket.urn, "models is missing tags data-classification, jurisdiction, owner"],
}

# The findings marked waived, by rule and resource.
waived(findings) := {[f.id, f.urn] | some f in findings; f.waived}

test_result_denies_unwaived if {
	found := report.result with input as t.plan([bucket]) with time.now_ns as now
	t.brief(found.findings) == bucket_findings
	waived(found.findings) == set()
	found.summary == {
		"stack": "uae-prod", "resources": 2, "findings": 5, "waived": 0, "denied": 5,
		"by_severity": {"critical": 2, "high": 2, "medium": 0, "low": 1}, "allow": false, "exceptions": [],
	}
}

test_result_marks_waived if {
	found := report.result with input as t.plan([bucket]) with data.waivers as [waiver] with time.now_ns as now
	t.brief(found.findings) == bucket_findings
	waived(found.findings) == {["RES-002", bucket.urn]}
	found.summary == {
		"stack": "uae-prod", "resources": 2, "findings": 5, "waived": 1, "denied": 4,
		"by_severity": {"critical": 1, "high": 2, "medium": 0, "low": 1}, "allow": false, "exceptions": [],
	}
}

test_result_reports_a_loosening_override_as_an_active_exception if {
	override := {"settings": {"max_canary_step": 50}}
	found := report.result with input as t.plan([]) with data.overrides as override with time.now_ns as now
	found.summary.allow
	found.summary.exceptions == ["setting max_canary_step raised from 25 to 50"]
}

test_result_allows_a_clean_plan if {
	found := report.result with input as t.plan([]) with time.now_ns as now
	found == {"findings": set(), "summary": {
		"stack": "uae-prod", "resources": 1, "findings": 0, "waived": 0, "denied": 0,
		"by_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0}, "allow": true, "exceptions": [],
	}}
}

# A finding as lib.result builds it, on a resource named name; each package's tests below get
# their own, so that one package's finding cannot pass for another's.
finding(id, name) := {
	"id": id,
	"severity": "high",
	"urn": t.resource("aws:s3/bucket:Bucket", name, {}).urn,
	"type": "aws:s3/bucket:Bucket",
	"message": sprintf("%s found on %s", [id, name]),
	"remediation": sprintf("fix %s", [name]),
}

# A plan on which no rule finds anything (test_result_allows_a_clean_plan): the finding a test
# puts in one package's deny is all the gate has to report.
clean := t.plan([])

# What the gate reports for finding f: f itself, unchanged, marked not waived.
reported(f) := {object.union(f, {"waived": false})}

placement := finding("RES-002", "placement")

artifacts := finding("RES-007", "artifacts")

at_rest := finding("ENC-001", "at-rest")

in_transit := finding("ENC-010", "in-transit")

exposure := finding("NET-002", "exposure")

access := finding("IDN-006", "access")

pods := finding("WL-001", "pods")

routing := finding("TRF-001", "routing")

logging := finding("AUD-003", "logging")

tags := finding("TAG-001", "tags")

waivers := finding("WAV-001", "waivers")

failover := finding("AVL-001", "failover")

integrity := finding("DOC-001", "integrity")

test_findings_from_residency_placement if {
	report.findings == reported(placement) with input as clean with data.residency.placement.deny as {placement}
}

test_findings_from_residency_artifacts if {
	report.findings == reported(artifacts) with input as clean with data.residency.artifacts.deny as {artifacts}
}

test_findings_from_encryption_at_rest if {
	report.findings == reported(at_rest) with input as clean with data.encryption.at_rest.deny as {at_rest}
}

test_findings_from_encryption_in_transit if {
	report.findings == reported(in_transit) with input as clean with data.encryption.in_transit.deny as {in_transit}
}

test_findings_from_network_exposure if {
	report.findings == reported(exposure) with input as clean with data.network.exposure.deny as {exposure}
}

test_findings_from_identity_access if {
	report.findings == reported(access) with input as clean with data.identity.access.deny as {access}
}

test_findings_from_workloads_pods if {
	report.findings == reported(pods) with input as clean with data.workloads.pods.deny as {pods}
}

test_findings_from_traffic_routing if {
	report.findings == reported(routing) with input as clean with data.traffic.routing.deny as {routing}
}

test_findings_from_audit_logging if {
	report.findings == reported(logging) with input as clean with data.audit.logging.deny as {logging}
}

test_findings_from_tagging_tags if {
	report.findings == reported(tags) with input as clean with data.tagging.tags.deny as {tags}
}

test_findings_from_availability_failover if {
	report.findings == reported(failover) with input as clean with data.availability.failover.deny as {failover}
}

test_findings_from_document_integrity if {
	report.findings == reported(integrity) with input as clean with data.document.integrity.deny as {integrity}
}

test_findings_from_exceptions_waivers if {
	report.findings == reported(waivers) with input as clean with data.exceptions.waivers.deny as {waivers}
}

test_findings_from_every_package_together if {
	everything := {
		placement, artifacts, at_rest, in_transit, exposure, access, pods, routing, logging, tags, failover,
		integrity, waivers,
	}
	found := report.findings with input as clean
		with data.residency.placement.deny as {placement}
		with data.residency.artifacts.deny as {artifacts}
		with data.encryption.at_rest.deny as {at_rest}
		with data.encryption.in_transit.deny as {in_transit}
		with data.network.exposure.deny as {exposure}
		with data.identity.access.deny as {access}
		with data.workloads.pods.deny as {pods}
		with data.traffic.routing.deny as {routing}
		with data.audit.logging.deny as {logging}
		with data.tagging.tags.deny as {tags}
		with data.availability.failover.deny as {failover}
		with data.document.integrity.deny as {integrity}
		with data.exceptions.waivers.deny as {waivers}
	found == {object.union(f, {"waived": false}) | some f in everything}
}
