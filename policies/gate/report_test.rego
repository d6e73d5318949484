package gate.report_test

import data.gate.report
import data.lib.testing_test as t

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models", "region": "eu-west-1"})

# 2026-01-01T00:00:00Z
now := 1767225600000000000

waiver := {"id": "RES-002", "urn": bucket.urn, "reason": "moving", "owner": "ml", "expires": "2026-06-30"}

test_result_denies_unwaived if {
	ids := {[f.id, f.waived] | some f in report.result.findings} with input as t.plan([bucket])
		with time.now_ns as now
	ids == {
		["RES-002", false], ["ENC-001", false], ["ENC-010", false], ["NET-003", false],
		["TAG-001", false],
	}
	s := report.summary with input as t.plan([bucket]) with time.now_ns as now
	s == {
		"stack": "uae-prod", "resources": 2, "findings": 5, "waived": 0, "denied": 5,
		"by_severity": {"critical": 2, "high": 2, "medium": 0, "low": 1}, "allow": false,
	}
}

test_result_marks_waived if {
	ids := {[f.id, f.waived] | some f in report.result.findings} with input as t.plan([bucket])
		with data.waivers as [waiver]
		with time.now_ns as now
	["RES-002", true] in ids
	not ["RES-002", false] in ids
	s := report.summary with input as t.plan([bucket]) with data.waivers as [waiver] with time.now_ns as now
	s.waived == 1
	s.denied == 4
}
