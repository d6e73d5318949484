package exceptions.overrides_test

import data.exceptions.overrides

test_no_override_is_no_exception if {
	overrides.active == set()
}

test_stricter_overrides_are_no_exception if {
	stricter := {
		"settings": {"max_canary_step": 10, "min_log_retention_days": 365, "required_tags": [
			"owner", "data-classification", "jurisdiction", "cost-centre",
		]},
		"jurisdictions": {"EU": {"name": "EU, two regions", "regions": ["eu-central-1", "eu-west-1"]}},
	}
	overrides.active == set() with data.overrides as stricter
}

test_a_widened_jurisdiction_is_an_exception if {
	wider := {"jurisdictions": {"AE": {"name": "UAE", "regions": ["me-central-1", "eu-west-1"]}}}
	overrides.active == {"jurisdiction AE gains regions [\"eu-west-1\"]"} with data.overrides as wider
}

test_a_stack_moved_to_another_jurisdiction_is_an_exception if {
	moved := {"stacks": {"uae-prod": {"jurisdiction": "US", "kind": "aws", "registries": [
		"210987654321.dkr.ecr.me-central-1.amazonaws.com/uae-prod",
		"456789012345.dkr.ecr.us-east-1.amazonaws.com/uae-prod",
	]}}}
	overrides.active == {
		"stack uae-prod moves from jurisdiction \"AE\" to \"US\"",
		"stack uae-prod gains registries [\"456789012345.dkr.ecr.us-east-1.amazonaws.com/uae-prod\"]",
	} with data.overrides as moved
}

test_loosened_thresholds_are_exceptions if {
	looser := {"settings": {
		"max_canary_step": 50,
		"min_log_retention_days": 7,
		"public_routes": ["GET /ping", "GET /health", "GET /v2/health/live", "GET /v2/health/ready", "POST /admin"],
		"required_tags": ["owner"],
	}}
	overrides.active == {
		"setting max_canary_step raised from 25 to 50",
		"setting min_log_retention_days lowered from 90 to 7",
		"setting public_routes gains [\"POST /admin\"]",
		"setting required_tags loses [\"data-classification\", \"jurisdiction\"]",
	} with data.overrides as looser
}

test_a_setting_left_out_of_an_override_keeps_the_shipped_value if {
	# object.union keeps every shipped key the override does not name: nothing is lost.
	overrides.active == set() with data.overrides as {"settings": {"chart_mirror_path": "mirror/charts"}}
}
