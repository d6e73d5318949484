# METADATA
# title: Active exceptions from organisation overrides
# description: |
#   An organisation override that widens a jurisdiction, moves a stack, or loosens a
#   threshold changes what every plan is judged by. It is allowed (that is what overrides are
#   for), but never silent: each such difference from the shipped policy data is listed here,
#   and every output of the gate (text, JSON, SARIF) reports it as an active exception.
package exceptions.overrides

import data.lib.config

# Settings where a larger number is looser.
looser_when_higher := {"max_canary_step"}

# Settings where a smaller number is looser.
looser_when_lower := {"min_log_retention_days"}

# List settings where an added entry is looser (more is allowed).
looser_when_added := {"approved_registries", "public_routes"}

# List settings where a removed entry is looser (less is required or checked).
looser_when_removed := {
	"cmk_classifications", "data_services", "data_access_policies", "required_tags",
	"taggable_types", "eks_log_types", "monitoring_charts", "threshold_config_keys",
}

shipped_settings := data.settings

shipped_jurisdictions := data.jurisdictions

shipped_stacks := data.stacks

# METADATA
# scope: document
# description: Each override that loosens the shipped policy data, as one sentence.
active contains sprintf("jurisdiction %s gains regions %v", [code, sort(added)]) if {
	some code, j in config.jurisdictions
	shipped := {r | some r in object.get(shipped_jurisdictions, [code, "regions"], [])}
	added := {r | some r in object.get(j, "regions", [])} - shipped
	count(added) > 0
}

active contains sprintf("stack %s moves from jurisdiction %q to %q", [name, was, now]) if {
	some name, s in config.stacks
	was := object.get(shipped_stacks, [name, "jurisdiction"], "")
	now := object.get(s, "jurisdiction", "")
	was != now
}

active contains sprintf("stack %s gains registries %v", [name, sort(added)]) if {
	some name, s in config.stacks
	shipped := {r | some r in object.get(shipped_stacks, [name, "registries"], [])}
	added := {r | some r in object.get(s, "registries", [])} - shipped
	count(added) > 0
}

active contains sprintf("setting %s raised from %v to %v", [key, was, value]) if {
	some key in looser_when_higher
	value := config.settings[key]
	was := shipped_settings[key]
	value > was
}

active contains sprintf("setting %s lowered from %v to %v", [key, was, value]) if {
	some key in looser_when_lower
	value := config.settings[key]
	was := shipped_settings[key]
	value < was
}

active contains sprintf("setting %s gains %v", [key, sort(added)]) if {
	some key in looser_when_added
	added := {v | some v in config.settings[key]} - {v | some v in shipped_settings[key]}
	count(added) > 0
}

active contains sprintf("setting %s loses %v", [key, sort(removed)]) if {
	some key in looser_when_removed
	removed := {v | some v in shipped_settings[key]} - {v | some v in object.get(config.settings, key, [])}
	count(removed) > 0
}
