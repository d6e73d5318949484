# METADATA
# title: Tagging
# description: |
#   Taggable AWS resources carry owner, data-classification and jurisdiction, from their
#   own tags or their provider's defaultTags, and the jurisdiction tag tells the truth.
package tagging.tags

import data.lib.config
import data.lib.resources
import data.lib.result

provs := resources.provider_index(input.resources)

taggable_types := {t | some t in config.settings.taggable_types}

taggable(r) if r.type in taggable_types

taggable(r) if {
	resources.is_aws(r)
	is_object(r.properties.tags)
}

effective_tags(r) := object.union(
	object.get(provs, [r.provider, "properties", "defaultTags", "tags"], {}),
	object.get(r.properties, "tags", {}),
)

# METADATA
# title: Required tags
# scope: rule
# description: Taggable AWS resources carry every required tag with a non-empty value.
# custom:
#   id: TAG-001
#   severity: low
#   message: "%s is missing tags %s"
#   remediation: Add the tags to the resource or to the provider's defaultTags.
deny contains result.finding(rego.metadata.rule(), r, [r.name, resources.describe(missing)]) if {
	some r in input.resources
	taggable(r)
	t := effective_tags(r)
	missing := {k | some k in config.settings.required_tags; object.get(t, k, "") == ""}
	count(missing) > 0
}

# METADATA
# title: Jurisdiction tag matches
# scope: rule
# description: The jurisdiction tag names the stack's jurisdiction.
# custom:
#   id: TAG-002
#   severity: medium
#   message: "%s is tagged jurisdiction=%s in a stack of jurisdiction %s"
#   remediation: Derive the jurisdiction tag from the stack config.
deny contains result.finding(rego.metadata.rule(), r, [r.name, tagged, expected]) if {
	expected := config.jurisdiction(input)
	some r in input.resources
	taggable(r)
	tagged := object.get(effective_tags(r), "jurisdiction", "")
	tagged != ""
	tagged != expected
}
