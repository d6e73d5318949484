# METADATA
# title: Result helper
# description: |
#   Builds findings from the annotations of the rule that found them, so that each
#   message, severity and remediation is written once, in that rule's METADATA.
package lib.result

# METADATA
# title: Finding
# description: |
#   A finding for resource r. annotations is rego.metadata.rule() of the calling rule,
#   whose custom.message is a sprintf template filled with params.
finding(annotations, r, params) := {
	"id": annotations.custom.id,
	"severity": annotations.custom.severity,
	"urn": r.urn,
	"type": r.type,
	"message": sprintf(annotations.custom.message, params),
	"remediation": annotations.custom.remediation,
}
