# METADATA
# title: Policy gate
# description: |
#   The one document servectl and the policy pack ask for: every finding of every rule
#   package, each marked waived or not, and a summary. The gate denies when any finding
#   is not waived.
package gate.report

import data.exceptions.overrides
import data.exceptions.waivers

raw contains f if some f in data.residency.placement.deny

raw contains f if some f in data.residency.artifacts.deny

raw contains f if some f in data.encryption.at_rest.deny

raw contains f if some f in data.encryption.in_transit.deny

raw contains f if some f in data.network.exposure.deny

raw contains f if some f in data.identity.access.deny

raw contains f if some f in data.workloads.pods.deny

raw contains f if some f in data.traffic.routing.deny

raw contains f if some f in data.audit.logging.deny

raw contains f if some f in data.tagging.tags.deny

raw contains f if some f in data.availability.failover.deny

raw contains f if some f in data.document.integrity.deny

raw contains f if some f in waivers.deny

now := time.now_ns()

# METADATA
# description: Every finding, with whether an active waiver suppresses it.
findings contains object.union(f, {"waived": waived(f)}) if some f in raw

waived(f) if waivers.waived(f, now)

else := false

severities := ["critical", "high", "medium", "low"]

# METADATA
# description: Counts for the report, and the decision.
summary := {
	"stack": input.stack,
	"resources": count(input.resources),
	"findings": count(findings),
	"waived": count([f | some f in findings; f.waived]),
	"denied": count(denied),
	"by_severity": {s: count([f | some f in denied; f.severity == s]) | some s in severities},
	"allow": count(denied) == 0,
	"exceptions": sort(overrides.active),
}

denied := [f | some f in findings; not f.waived]

# METADATA
# description: The gate's answer for one plan.
# entrypoint: true
result := {"findings": findings, "summary": summary}
