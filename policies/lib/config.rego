# METADATA
# title: Configuration
# description: |
#   The policy data (jurisdictions, stacks, settings) merged with an organisation's
#   overrides, which are loaded under data.overrides and win key by key.
package lib.config

# METADATA
# scope: document
# description: An organisation's overrides, loaded as data.overrides; none by default.
default overrides := {}

overrides := data.overrides

# METADATA
# scope: document
# description: Jurisdiction code to its regions and name, overridable.
jurisdictions := object.union(data.jurisdictions, object.get(overrides, "jurisdictions", {}))

# METADATA
# scope: document
# description: Stack name to jurisdiction code, used when a plan does not carry the stack's config.
stacks := object.union(data.stacks, object.get(overrides, "stacks", {}))

# METADATA
# scope: document
# description: Thresholds and lists the rules use, overridable.
settings := object.union(data.settings, object.get(overrides, "settings", {}))

# METADATA
# scope: document
# description: The recorded exceptions, the shipped ones and the organisation's.
waivers := array.concat(data.waivers, object.get(overrides, "waivers", []))

# METADATA
# scope: document
# description: The jurisdiction of a plan, from its stack config or else from the stack name.
jurisdiction(doc) := doc.jurisdiction if {
	is_string(doc.jurisdiction)
	doc.jurisdiction != ""
} else := stacks[doc.stack]

# METADATA
# scope: document
# description: The set of regions a plan may use; empty when its jurisdiction is unknown.
allowed_regions(doc) := {reg | some reg in jurisdictions[jurisdiction(doc)].regions}
