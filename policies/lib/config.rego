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
# description: |
#   Stack name to its facts: {jurisdiction, kind ("aws" or "onprem"), registries (locations)}.
#   The gate takes these from the policy data, never from the plan, which its author controls.
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
# description: The policy data's facts about a plan's stack; {} for a stack it does not name.
stack(doc) := object.get(stacks, doc.stack, {})

# METADATA
# scope: document
# description: |
#   The jurisdiction of a plan's stack, from the policy data's stack map ("" when the stack
#   is not there). The plan's own config is not trusted for it.
jurisdiction(doc) := object.get(stack(doc), "jurisdiction", "")

# METADATA
# scope: document
# description: |
#   Where a plan's stack runs: "aws" (EKS) or "onprem" (an existing cluster, no AWS). A stack
#   the data does not name is treated as "aws", the kind with more rules (fail closed).
kind(doc) := object.get(stack(doc), "kind", "aws")

# METADATA
# scope: document
# description: |
#   The registry locations (a host, or a host and a path prefix) the policy data approves and
#   places in the jurisdiction for a plan's stack.
registries(doc) := {h | some h in object.get(stack(doc), "registries", [])}

# METADATA
# scope: document
# description: The set of regions a plan may use; empty when its jurisdiction is unknown.
allowed_regions(doc) := {reg | some reg in object.get(jurisdictions, [jurisdiction(doc), "regions"], [])}

# METADATA
# scope: document
# description: |
#   The layer a plan belongs to, from its project (taken from its URNs): "infra",
#   "platform", or "unknown" for a project that settings.layers does not name.
layer(doc) := object.get(settings.layers, object.get(doc, "project", ""), "unknown")

# METADATA
# scope: document
# description: |
#   Whether stack-level rules about cluster content apply to a plan: the platform layer's
#   plans, and plans of an unknown project that hold Kubernetes objects.
platform_plan(doc) if layer(doc) == "platform"

platform_plan(doc) if {
	layer(doc) == "unknown"
	some r in doc.resources
	startswith(r.type, "kubernetes:")
}
