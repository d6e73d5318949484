# METADATA
# title: Waivers
# description: |
#   A waiver (rule id, resource URN, reason, owner, expiry date) suppresses a finding until
#   it expires. An expired or incomplete waiver is itself a finding.
package exceptions.waivers

import data.lib.config
import data.lib.result

required := {"id", "urn", "reason", "owner", "expires"}

# Waivers for this plan's stack; the others belong to other plans.
stack_waivers contains w if {
	some w in config.waivers
	startswith(object.get(w, "urn", ""), sprintf("urn:pulumi:%s::", [input.stack]))
}

# METADATA
# description: True while waiver w is complete and not past its expiry date.
active(w, now) if {
	valid_date(w)
	w.expires >= today(now)
	every key in required {
		object.get(w, key, "") != ""
	}
}

# Dates compare as strings; a waiver holds through its expiry date (UTC).
today(now) := time.format([now, "UTC", "2006-01-02"])

# METADATA
# description: True when finding f is suppressed by an active waiver of this stack.
waived(f, now) if {
	some w in stack_waivers
	w.id == f.id
	w.urn == f.urn
	active(w, now)
}

subject(w) := {"urn": w.urn, "type": "waiver"}

# METADATA
# title: Waiver expired
# scope: rule
# description: An expired waiver no longer suppresses its finding and must be renewed or removed.
# custom:
#   id: WAV-001
#   severity: high
#   message: "waiver of %s for %s (owner %s) expired on %s"
#   remediation: Fix the finding and delete the waiver, or renew it with a new reason and expiry date.
deny contains result.finding(rego.metadata.rule(), subject(w), [w.id, w.urn, w.owner, w.expires]) if {
	some w in stack_waivers
	valid_date(w)
	w.expires < today(time.now_ns())
}

# METADATA
# title: Waiver complete
# scope: rule
# description: A waiver names the rule id, resource URN, reason, owner and an expiry date (YYYY-MM-DD).
# custom:
#   id: WAV-002
#   severity: medium
#   message: "waiver for %s lacks or garbles %s"
#   remediation: Give the waiver id, urn, reason, owner and expires (YYYY-MM-DD).
deny contains result.finding(rego.metadata.rule(), subject(w), [w.urn, fields]) if {
	some w in stack_waivers
	missing := {k | some k in required; object.get(w, k, "") == ""} | {"expires" | not valid_date(w)}
	count(missing) > 0
	fields := concat(", ", sort(missing))
}

valid_date(w) if regex.match(`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$`, w.expires)
