# METADATA
# title: Artifacts from the in-region mirror
# description: |
#   Nothing a cluster pulls comes from outside the jurisdiction: every Helm chart is an OCI
#   reference into the stack's own registry in the cluster's region, under mirror/charts,
#   and every image its values name comes from that registry by digest. The registries are
#   the policy data's list for the stack: locations (a host and an optional path prefix) in
#   its ECRs, or its in-country registry on premises.
package residency.artifacts

import data.lib.config
import data.lib.resources
import data.lib.result

provs := resources.provider_index(input.resources)

releases := [r | some r in input.resources; startswith(r.type, "kubernetes:helm.sh/")]

# The stack's registry locations a resource may pull from: on EKS, those in its cluster's
# region (all of the stack's when the kubeconfig names no region); on premises, the listed ones.
allowed(r) := {loc |
	some loc in config.registries(input)
	not other_region(loc, resources.cluster_region(r, provs))
}

other_region(location, cluster) if {
	cluster != "unresolved"
	resources.host_region(split(location, "/")[0]) != cluster
}

# METADATA
# title: Helm charts from the in-region mirror
# scope: rule
# description: |
#   Every Helm release's chart is oci://<registry>/mirror/charts/<name> with a registry of
#   the stack in the cluster's region, and no repositoryOpts.repo names another repository.
# custom:
#   id: RES-007
#   severity: high
#   message: "Helm release %s takes its %s from %q, outside the stack's in-region chart mirror %s"
#   remediation: |
#     Copy the chart with `servectl mirror --stack S` and set chart to
#     oci://<registry>/mirror/charts/<name>, without repositoryOpts.repo.
deny contains result.finding(rego.metadata.rule(), r, [r.name, field, ref, resources.describe(mirrors)]) if {
	some r in releases
	mirrors := {sprintf("oci://%s/%s", [loc, config.settings.chart_mirror_path]) | some loc in allowed(r)}
	some field, ref in chart_refs(r.properties)
	not mirrored(ref, mirrors)
}

chart_refs(p) := object.union(
	{"chart": object.get(p, "chart", "unset")},
	{"repository": repo | repo := p.repositoryOpts.repo},
)

# The mirror itself, or one chart directly under it.
mirrored(ref, mirrors) if {
	some m in mirrors
	startswith(ref, m)
	regex.match(`^(/[a-z0-9][a-z0-9._-]*)?/?$`, trim_prefix(ref, m))
}

# METADATA
# title: Chart images from the in-region registry
# scope: rule
# description: |
#   Every image a Helm release's values name (a string `image`, or an object with a
#   `repository` and its registry, tag, digest or sha, with global.imageRegistry) comes from
#   a registry of the stack in the cluster's region and is pinned by sha256 digest; registry
#   prefixes (global.hub, global.imageRegistry) name such a registry too.
# custom:
#   id: RES-008
#   severity: high
#   message: "Helm release %s sets %s to %q: %s"
#   remediation: |
#     Copy the image with `servectl mirror --stack S` and point the value at
#     <registry>/mirror/...@sha256:<digest> from the lock file.
deny contains result.finding(rego.metadata.rule(), r, [r.name, path, ref, problem]) if {
	some r in releases
	locations := allowed(r)
	values := object.get(r.properties, "values", {})
	some [path, ref, is_image] in value_refs(values)
	some problem in problems(ref, is_image, locations)
}

problems(ref, is_image, locations) := {p |
	not placed(ref, locations)
	p := sprintf("it is outside the stack's in-region registry %s", [resources.describe(locations)])
} | {p |
	is_image
	not resources.pinned(ref)
	p := "the image is not pinned by sha256 digest"
}

# A reference inside one of the locations, or (a registry prefix) one of them.
placed(ref, locations) if ref in locations

placed(ref, locations) if {
	some loc in locations
	resources.under(ref, loc)
}

# [dotted path, reference, whether it is an image (else a registry prefix)] for each reference in values.
value_refs(values) := (string_images(values) | object_images(values)) | registry_prefixes(values)

string_images(values) := {[dotted(path), v, true] |
	walk(values, [path, v])
	last(path) == "image"
	is_string(v)
}

object_images(values) := {[dotted(path), object_ref(node, values), true] |
	walk(values, [path, node])
	is_string(node.repository)
}

registry_prefixes(values) := {[dotted(path), v, false] |
	walk(values, [path, v])
	last(path) in {"hub", "imageRegistry"}
	is_string(v)
}

last(path) := path[count(path) - 1]

dotted(path) := concat(".", [sprintf("%v", [p]) | some p in path])

# registry/repository:tag@sha256:digest, the registry from the object or global.imageRegistry.
object_ref(node, values) := concat("", [registry_prefix(node, values), node.repository, tag(node), digest(node)])

registry_prefix(node, values) := concat("", [node.registry, "/"]) if {
	is_string(node.registry)
	node.registry != ""
} else := concat("", [values.global.imageRegistry, "/"]) if {
	is_string(values.global.imageRegistry)
	values.global.imageRegistry != ""
} else := ""

tag(node) := concat("", [":", node.tag]) if {
	is_string(node.tag)
	node.tag != ""
} else := ""

digest(node) := concat("", ["@sha256:", trim_prefix(node.digest, "sha256:")]) if {
	is_string(node.digest)
	node.digest != ""
} else := concat("", ["@sha256:", trim_prefix(node.sha, "sha256:")]) if {
	is_string(node.sha)
	node.sha != ""
} else := ""
