# METADATA
# title: Traffic routing
# description: |
#   VirtualService routes are consistent with their DestinationRules and the stack's
#   variant config: weights add up, subsets exist, canary steps are bounded.
package traffic.routing

import data.lib.config
import data.lib.resources
import data.lib.result

services := resources.of_kind(input.resources, "VirtualService")

# Subset names per short host name, from every DestinationRule.
subsets[host] contains s.name if {
	some dr in resources.of_kind(input.resources, "DestinationRule")
	host := short(dr.properties.spec.host)
	some s in object.get(dr.properties.spec, "subsets", [])
}

short(host) := split(host, ".")[0]

http_routes contains {"vs": vs, "index": i, "http": h} if {
	some vs in services
	some i, h in object.get(vs.properties, ["spec", "http"], [])
}

# The largest share one canary step may take: the policy settings' (an organisation may override
# it), never the plan's own config, whose author the gate judges (a plan that sets one is DOC-003).
max_step := config.settings.max_canary_step

# METADATA
# title: Weights sum to 100
# scope: rule
# description: A route with several destinations gives each a weight, and the weights add up to 100.
# custom:
#   id: TRF-001
#   severity: high
#   message: "route %d of %s has weights %v that add up to %v, not 100"
#   remediation: Take the weights from the variant config and make them add up to 100.
deny contains result.finding(rego.metadata.rule(), x.vs, [x.index, resources.k8s_name(x.vs), weights, total]) if {
	some x in http_routes
	dests := object.get(x.http, "route", [])
	count(dests) > 1
	weights := [object.get(d, "weight", 0) | some d in dests]
	total := sum(weights)
	total != 100
}

# METADATA
# title: Subsets exist
# scope: rule
# description: Every subset a route sends traffic to is defined by a DestinationRule for that host.
# custom:
#   id: TRF-002
#   severity: high
#   message: "%s routes to subset %q of host %s, which no DestinationRule defines"
#   remediation: Add the subset (v<version>) to the host's DestinationRule, or route to an existing one.
deny contains result.finding(rego.metadata.rule(), x.vs, [resources.k8s_name(x.vs), subset, host]) if {
	some x in http_routes
	some d in object.get(x.http, "route", [])
	subset := d.destination.subset
	host := short(object.get(d, ["destination", "host"], "unset"))
	not subset in object.get(subsets, host, set())
}

# METADATA
# title: Canary step bounded
# scope: rule
# description: No version other than the main one gets more than the configured maximum share.
# custom:
#   id: TRF-003
#   severity: medium
#   message: "%s sends %v%% to subset %v, more than the maximum canary step of %v%%"
#   remediation: Shift traffic in smaller steps, or raise max_canary_step in an organisation override.
deny contains result.finding(rego.metadata.rule(), x.vs, [resources.k8s_name(x.vs), w, subset, max_step]) if {
	some x in http_routes
	dests := object.get(x.http, "route", [])
	count(dests) > 1
	weights := [object.get(d, "weight", 0) | some d in dests]
	main := max(weights)

	# The first destination with the largest weight is the main version; the others are canaries.
	some i, d in dests
	w := weights[i]
	i != [j | some j, v in weights; v == main][0]
	w > max_step
	subset := object.get(d, ["destination", "subset"], "unset")
}

# METADATA
# title: Header routes name known versions
# scope: rule
# description: A header-matched route only targets versions that routes without header matches serve.
# custom:
#   id: TRF-004
#   severity: medium
#   message: "%s matches headers to subset %q, not one of the known versions %s"
#   remediation: Route header matches to a version listed in variants.weights.
deny contains result.finding(rego.metadata.rule(), x.vs, [resources.k8s_name(x.vs), subset, versions]) if {
	some x in http_routes
	matches_headers(x.http)
	known := known_versions(x.vs)
	some d in x.http.route
	subset := object.get(d, ["destination", "subset"], "unset")
	not subset in known
	versions := resources.describe(known)
}

# The versions a route serves without a header match: its weighted and per-version routes.
known_versions(vs) := {d.destination.subset |
	some h in vs.properties.spec.http
	not matches_headers(h)
	some d in h.route
}

matches_headers(h) if {
	some m in h.match
	m.headers
}
