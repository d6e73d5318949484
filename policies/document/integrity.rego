# METADATA
# title: Document integrity
# description: |
#   What a document can do to the gate rather than to the cloud: name a resource twice (only
#   one copy would be judged if the gate chose), give a Kubernetes object a kind its type
#   disagrees with (to slip past that kind's rules), or carry its own threshold for a rule.
#   The engine never writes such a document; a finding here means it was edited or forged.
package document.integrity

import data.lib.config
import data.lib.resources
import data.lib.result

# METADATA
# title: One resource per URN
# scope: rule
# description: |
#   Each URN appears once (a replacement's two steps are one resource). Every copy of a
#   repeated URN is judged, and the repetition itself is a finding.
# custom:
#   id: DOC-001
#   severity: high
#   message: "%s appears %d times in the document; the engine names each resource once"
#   remediation: Check the document as the engine wrote it (pulumi preview --json, pulumi stack export).
deny contains result.finding(rego.metadata.rule(), r, [r.urn, n]) if {
	some r in input.resources
	n := object.get(object.get(input, "duplicate_urns", {}), r.urn, 1)
	n > 1
}

# METADATA
# title: Kubernetes kind matches the type
# scope: rule
# description: |
#   A Kubernetes object's `kind` input is the kind of its type token. Rules take the kind from
#   the token, so a different `kind` hides nothing; it is reported all the same.
# custom:
#   id: DOC-002
#   severity: high
#   message: "%s is a %s by its type but says kind %q in its inputs"
#   remediation: Check the document as the engine wrote it; the provider sets kind from the type.
deny contains result.finding(rego.metadata.rule(), r, [r.name, resources.kind(r), said]) if {
	some r in input.resources
	said := r.properties.kind
	is_string(said)
	not r.type in opaque_types
	said != resources.kind(r)
}

# Types whose token names no object kind: their `kind` input means something else or nothing.
opaque_types := {"kubernetes:helm.sh/v3:Release", "kubernetes:yaml/v2:ConfigGroup", "kubernetes:yaml/v2:ConfigFile"}

# METADATA
# title: Thresholds from the policy data only
# scope: rule
# description: |
#   A plan's config does not set the gate's thresholds (the canary step, retention,
#   approved registries): those come from the policy data and organisation overrides,
#   which are reviewed apart from the plans they judge.
# custom:
#   id: DOC-003
#   severity: high
#   message: "stack %s sets %s=%v in its config; the gate's thresholds come from the policy data"
#   remediation: Remove the key from the stack config; change the threshold in an organisation override instead.
deny contains result.finding(rego.metadata.rule(), resources.stack_resource(input), [input.stack, key, value]) if {
	some key, value in object.get(input, "config", {})
	some name in config.settings.threshold_config_keys
	endswith(key, concat("", [":", name]))
}
