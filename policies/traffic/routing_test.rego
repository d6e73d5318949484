package traffic.routing_test

import data.lib.testing_test as t
import data.traffic.routing

rule := t.k8s("DestinationRule", "iris", "models", {
	"host": "iris.models.svc.cluster.local",
	"subsets": [{"name": "v1"}, {"name": "v2"}],
})

dest(subset, weight) := {"destination": {"host": "iris", "subset": subset}, "weight": weight}

header_route(subset) := {
	"match": [{"headers": {"x-segment": {"exact": "enterprise"}}}],
	"route": [{"destination": {"host": "iris", "subset": subset}}],
}

service(routes) := t.k8s("VirtualService", "iris", "models", {"http": routes})

good := service([header_route("v2"), {"route": [dest("v1", 90), dest("v2", 10)]}])

check(vs) := found if {
	found := t.brief(routing.deny) with input as t.plan([rule, vs])
}

test_weights_passing if {
	check(good) == set()
}

test_weights_violating if {
	vs := service([{"route": [dest("v1", 80), dest("v2", 10)]}])
	check(vs) == {["TRF-001", "high", vs.urn, "route 0 of iris has weights [80, 10] that add up to 90, not 100"]}
}

test_weights_missing_field if {
	vs := service([{"route": [dest("v1", 90), {"destination": {"host": "iris", "subset": "v2"}}]}])
	check(vs) == {["TRF-001", "high", vs.urn, "route 0 of iris has weights [90, 0] that add up to 90, not 100"]}
}

test_subsets_passing if {
	check(service([{"route": [{"destination": {"host": "iris.models.svc.cluster.local", "subset": "v1"}}]}])) == set()
}

test_subsets_violating if {
	vs := service([{"route": [dest("v1", 90), dest("v9", 10)]}])
	check(vs) == {[
		"TRF-002", "high", vs.urn,
		"iris routes to subset \"v9\" of host iris, which no DestinationRule defines",
	]}
}

test_subsets_missing_field if {
	vs := service([{"route": [{"destination": {"subset": "v1"}}]}])
	check(vs) == {[
		"TRF-002", "high", vs.urn,
		"iris routes to subset \"v1\" of host unset, which no DestinationRule defines",
	]}
}

test_canary_passing if {
	check(service([{"route": [dest("v1", 75), dest("v2", 25)]}])) == set()
}

test_canary_violating if {
	vs := service([{"route": [dest("v1", 60), dest("v2", 40)]}])
	check(vs) == {[
		"TRF-003", "medium", vs.urn,
		"iris sends 40% to subset v2, more than the maximum canary step of 25%",
	]}
}

test_canary_step_not_from_the_plans_config if {
	# A plan that raises its own threshold is still judged by the policy data's (DOC-003 reports it).
	vs := service([{"route": [dest("v1", 60), dest("v2", 40)]}])
	doc := object.union(t.plan([rule, vs]), {"config": {"model-serving:maxCanaryStep": "50"}})
	t.brief(routing.deny) == {[
		"TRF-003", "medium", vs.urn,
		"iris sends 40% to subset v2, more than the maximum canary step of 25%",
	]} with input as doc
}

test_canary_step_from_an_override if {
	vs := service([{"route": [dest("v1", 60), dest("v2", 40)]}])
	routing.deny == set() with input as t.plan([rule, vs]) with data.overrides as {"settings": {"max_canary_step": 50}}
}

test_canary_missing_field if {
	vs := service([{"route": [{"destination": {"host": "iris"}, "weight": 50}, dest("v2", 50)]}])
	check(vs) == {[
		"TRF-003", "medium", vs.urn,
		"iris sends 50% to subset v2, more than the maximum canary step of 25%",
	]}
}

test_header_routes_passing if {
	check(good) == set()
}

test_header_routes_with_uri_routes_passing if {
	by_uri := {"match": [{"uri": {"prefix": "/v2/models/iris/versions/2"}}], "route": [dest("v2", 100)]}
	weighted := {"match": [{"uri": {"prefix": "/v2/models/iris"}}], "route": [dest("v1", 100)]}
	check(service([by_uri, header_route("v2"), weighted])) == set()
}

test_header_routes_violating if {
	vs := service([header_route("v1"), {"route": [dest("v2", 100)]}])
	check(vs) == {[
		"TRF-004", "medium", vs.urn,
		"iris matches headers to subset \"v1\", not one of the known versions v2",
	]}
}

test_header_routes_missing_field if {
	vs := service([header_route("v2")])
	check(vs) == {[
		"TRF-004", "medium", vs.urn,
		"iris matches headers to subset \"v2\", not one of the known versions none",
	]}
}
