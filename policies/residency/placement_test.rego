package residency.placement_test

import data.lib.testing_test as t
import data.residency.placement

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models"})

test_jurisdiction_known_passing if {
	placement.deny == set() with input as t.plan([bucket])
}

test_jurisdiction_known_violating if {
	# The stack map of the policy data names the stack with a code jurisdictions.json lacks.
	doc := t.plan([bucket])
	t.brief(placement.deny) == {
		[
			"RES-001", "critical", "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod",
			"stack uae-prod has jurisdiction \"XX\" in the policy data, which names no regions for it",
		],
		[
			"RES-014", "high", "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod",
			"stack uae-prod declares jurisdiction \"AE\"; the policy data gives it \"XX\"",
		],
	} with input as doc
		with data.stacks as {"uae-prod": {"jurisdiction": "XX", "kind": "aws", "registries": []}}
}

test_jurisdiction_known_missing_field if {
	doc := object.union(t.plan([bucket]), {"stack": "unknown-stack", "jurisdiction": ""})
	t.brief(placement.deny) == {[
		"RES-001", "critical", "urn:pulumi:unknown-stack::p::pulumi:pulumi:Stack::p-unknown-stack",
		"stack unknown-stack has jurisdiction \"\" in the policy data, which names no regions for it",
	]} with input as doc
}

test_jurisdiction_known_empty_export if {
	# A stack export with nothing deployed places nothing: no stack, no finding.
	doc := object.union(t.plan([]), {"stack": "", "jurisdiction": "", "resources": []})
	placement.deny == set() with input as doc
}

test_declared_jurisdiction_passing if {
	placement.deny == set() with input as t.plan([bucket])
}

test_declared_jurisdiction_violating if {
	# A UAE stack that declares itself US is judged as AE, and the claim is reported.
	doc := object.union(t.plan([bucket]), {"jurisdiction": "US"})
	t.brief(placement.deny) == {[
		"RES-014", "high", "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod",
		"stack uae-prod declares jurisdiction \"US\"; the policy data gives it \"AE\"",
	]} with input as doc
}

test_declared_jurisdiction_missing_field if {
	# A plan that declares none (no config, no stack file) is judged by the policy data alone.
	placement.deny == set() with input as object.remove(t.plan([bucket]), {"jurisdiction"})
}

test_jurisdiction_from_policy_data_not_plan if {
	# A plan claiming another jurisdiction changes nothing: uae-prod is AE in the policy data.
	own := object.union(bucket, {"properties": {"region": "eu-west-1"}})
	t.brief(placement.deny) == {
		[
			"RES-002", "critical", own.urn,
			"models is placed in region \"eu-west-1\", outside jurisdiction AE",
		],
		[
			"RES-014", "high", "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod",
			"stack uae-prod declares jurisdiction \"EU\"; the policy data gives it \"AE\"",
		],
	} with input as object.union(t.plan([own]), {"jurisdiction": "EU"})
}

test_region_passing if {
	placement.deny == set() with input as t.plan([bucket])
}

test_region_violating if {
	own := object.union(bucket, {"properties": {"region": "eu-west-1"}})
	t.brief(placement.deny) == {[
		"RES-002", "critical", bucket.urn,
		"models is placed in region \"eu-west-1\", outside jurisdiction AE",
	]} with input as t.plan([own])
}

test_region_missing_field if {
	orphan := object.union(bucket, {"provider": "urn:pulumi:uae-prod::p::pulumi:providers:aws::gone"})
	t.brief(placement.deny) == {[
		"RES-002", "critical", bucket.urn,
		"models is placed in region \"unresolved\", outside jurisdiction AE",
	]} with input as t.plan([orphan])
}

key_ref(arn) := t.resource("aws:cloudwatch/logGroup:LogGroup", "logs", {"kmsKeyId": arn})

test_arn_passing if {
	placement.deny == set() with input as t.plan([key_ref("arn:aws:kms:me-central-1:1:key/k")])
}

test_arn_violating if {
	r := key_ref("arn:aws:kms:us-east-1:1:key/k")
	t.brief(placement.deny) == {[
		"RES-003", "critical", r.urn,
		"logs refers to arn:aws:kms:us-east-1:1:key/k in region \"us-east-1\", outside the jurisdiction",
	]} with input as t.plan([r])
}

test_arn_missing_field if {
	# A global ARN (no region) is not a cross-region reference.
	placement.deny == set() with input as t.plan([key_ref("arn:aws:iam::1:role/r")])
}

replication(target) := t.resource(
	"aws:s3/bucketReplicationConfig:BucketReplicationConfig", "repl",
	{"rules": [{"destination": {"bucket": target}}]},
)

test_replication_passing if {
	placement.deny == set() with input as t.plan([bucket, replication("arn:aws:s3:::models")])
}

test_replication_violating if {
	far := object.union(bucket, {"properties": {"region": "eu-west-1"}})
	r := replication("arn:aws:s3:::models")
	t.brief(placement.deny) == {
		["RES-002", "critical", bucket.urn, "models is placed in region \"eu-west-1\", outside jurisdiction AE"],
		["RES-004", "critical", r.urn, "repl replicates to arn:aws:s3:::models, which is in region \"eu-west-1\""],
	} with input as t.plan([far, r])
}

test_replication_missing_field if {
	r := t.resource("aws:s3/bucketReplicationConfig:BucketReplicationConfig", "repl", {})
	t.brief(placement.deny) == {[
		"RES-004", "critical", r.urn,
		"repl replicates to missing, which is in region \"unresolved\"",
	]} with input as t.plan([r])
}

record(props) := t.resource("aws:route53/record:Record", "api", props)

test_route_passing if {
	r := record({
		"latencyRoutingPolicies": [{"region": "me-central-1"}],
		"aliases": [{"name": "gw.elb.me-central-1.amazonaws.com"}],
	})
	placement.deny == set() with input as t.plan([r])
}

test_route_violating if {
	r := record({
		"latencyRoutingPolicies": [{"region": "eu-west-1"}],
		"aliases": [{"name": "gw.elb.us-east-1.amazonaws.com"}],
	})
	t.brief(placement.deny) == {
		["RES-005", "high", r.urn, "api routes to eu-west-1 in region \"eu-west-1\", outside the jurisdiction"],
		[
			"RES-005", "high", r.urn,
			"api routes to gw.elb.us-east-1.amazonaws.com in region \"us-east-1\", outside the jurisdiction",
		],
	} with input as t.plan([r])
}

test_route_missing_field if {
	# A plain record with literal IPs names no region; nothing to check.
	placement.deny == set() with input as t.plan([record({"records": ["10.0.0.1"]})])
}

deployment(image) := t.k8s("Deployment", "iris", "models", {"template": {"spec": {"containers": [{
	"name": "s",
	"image": image,
}]}}})

test_registry_passing if {
	placement.deny == set() with input as t.plan([deployment("1.dkr.ecr.me-central-1.amazonaws.com/m@sha256:0")])
}

test_registry_violating if {
	image := "1.dkr.ecr.eu-west-1.amazonaws.com/m@sha256:0"
	d := deployment(image)
	t.brief(placement.deny) == {[
		"RES-006", "high", d.urn,
		sprintf("iris pulls image %s from region \"eu-west-1\", outside the jurisdiction", [image]),
	]} with input as t.plan([d])
}

test_registry_missing_field if {
	d := deployment("python")
	t.brief(placement.deny) == {[
		"RES-006", "high", d.urn,
		"iris pulls image python from region \"unresolved\", outside the jurisdiction",
	]} with input as t.plan([d])
}

test_registry_listed_for_stack_passing if {
	onprem := object.union(t.plan([deployment("registry.dc1.example.ae/mirror/redis@sha256:0")]), {"stack": "onprem-ae"})
	placement.deny == set() with input as onprem
}

test_registry_listed_for_other_stack_violating if {
	# The in-country registry is onprem-ae's, not uae-prod's: only its own list approves.
	d := deployment("registry.dc1.example.ae/mirror/redis@sha256:0")
	t.brief(placement.deny) == {[
		"RES-006", "high", d.urn,
		"iris pulls image registry.dc1.example.ae/mirror/redis@sha256:0 from region \"unresolved\", outside the jurisdiction",
	]} with input as t.plan([d])
}

test_stack_resource_from_plan if {
	stack := t.resource("pulumi:pulumi:Stack", "p-uae-prod", {})
	doc := object.union(t.plan([stack]), {"stack": "unknown-stack", "jurisdiction": ""})
	t.brief(placement.deny) == {[
		"RES-001", "critical", stack.urn,
		"stack unknown-stack has jurisdiction \"\" in the policy data, which names no regions for it",
	]} with input as doc
}

secret(props) := t.resource("aws:secretsmanager/secret:Secret", "token", props)

test_secret_replicas_passing if {
	s := secret({"replicas": [{"region": "me-central-1"}]})
	placement.deny == set() with input as t.plan([s])
}

test_secret_replicas_violating if {
	s := secret({"replicas": [{"region": "me-central-1"}, {"region": "eu-west-1", "kmsKeyId": "k"}]})
	t.brief(placement.deny) == {[
		"RES-009", "critical", s.urn,
		`secret token replicates to region "eu-west-1", outside jurisdiction AE`,
	]} with input as t.plan([s])
}

test_secret_replicas_missing_field if {
	s := secret({"replicas": [{"kmsKeyId": "k"}]})
	t.brief(placement.deny) == {[
		"RES-009", "critical", s.urn,
		`secret token replicates to region "unset", outside jurisdiction AE`,
	]} with input as t.plan([s])
}

results := t.resource("aws:s3/bucket:Bucket", "results", {"bucket": "acme-async"})

async_config(out) := t.resource(
	"aws:sagemaker/endpointConfiguration:EndpointConfiguration", "clf",
	{"asyncInferenceConfig": {"outputConfig": out}},
)

test_async_results_in_region_passing if {
	c := async_config({"s3OutputPath": "s3://acme-async/jobs/clf/results/", "s3FailurePath": "s3://acme-async/f/"})
	placement.deny == set() with input as t.plan([results, c])
}

test_async_results_in_region_violating if {
	elsewhere := object.union(results, {"properties": {"region": "me-south-1"}})
	c := async_config({"s3OutputPath": "s3://acme-async/r/", "s3FailurePath": "s3://other/f/"})
	t.brief(placement.deny) == {
		# A bucket outside the stack's one region is outside the jurisdiction too (AE has one region).
		[
			"RES-002", "critical", elsewhere.urn,
			"results is placed in region \"me-south-1\", outside jurisdiction AE",
		],
		[
			"RES-010", "critical", c.urn,
			concat("", [
				"endpoint configuration clf: s3OutputPath \"s3://acme-async/r/\" ",
				"is not a bucket of the plan in me-central-1 (found me-south-1)",
			]),
		],
		[
			"RES-010", "critical", c.urn,
			concat("", [
				"endpoint configuration clf: s3FailurePath \"s3://other/f/\" ",
				"is not a bucket of the plan in me-central-1 (found no such bucket)",
			]),
		],
	} with input as t.plan([elsewhere, c])
}

test_async_results_in_region_missing_field if {
	c := async_config({"s3FailurePath": "s3://acme-async/f/"})
	t.brief(placement.deny) == {[
		"RES-010", "critical", c.urn,
		concat("", [
			"endpoint configuration clf: s3OutputPath \"unset\" ",
			"is not a bucket of the plan in me-central-1 (found no such bucket)",
		]),
	]} with input as t.plan([results, c])
}

feature_table(props) := t.resource("aws:dynamodb/table:Table", "features", props)

test_table_replicas_passing if {
	placement.deny == set() with input as t.plan([
		feature_table({}),
		feature_table({"replicas": [{"regionName": "me-central-1"}]}),
	])
}

test_table_replicas_violating if {
	r := feature_table({"replicas": [{"regionName": "me-central-1"}, {"regionName": "eu-west-1"}]})
	t.brief(placement.deny) == {[
		"RES-011", "critical", r.urn,
		`DynamoDB table features replicates to region "eu-west-1", outside jurisdiction AE`,
	]} with input as t.plan([r])
}

test_table_replicas_missing_field if {
	r := feature_table({"replicas": [{"kmsKeyArn": "k"}]})
	t.brief(placement.deny) == {[
		"RES-011", "critical", r.urn,
		`DynamoDB table features replicates to region "unset", outside jurisdiction AE`,
	]} with input as t.plan([r])
}

prefix_object(name, props) := t.resource("aws:s3/bucketObjectv2:BucketObjectv2", name, props)

test_feature_prefixes_in_region_passing if {
	registry := prefix_object("registry", {"bucket": "models", "key": "feast/"})
	offline := prefix_object("offline", {"bucket": "models", "key": "features/"})
	elsewhere := prefix_object("unrelated", {"bucket": "other", "key": "models/m/1/model.onnx"})
	placement.deny == set() with input as t.plan([bucket, registry, offline, elsewhere])
}

test_feature_prefixes_in_region_violating if {
	far := object.union(
		t.resource("aws:s3/bucket:Bucket", "far", {"bucket": "far"}),
		{"properties": {"region": "me-south-1"}},
	)
	registry := prefix_object("registry", {"bucket": "far", "key": "feast/registry.db"})
	offline := prefix_object("offline", {"bucket": "somewhere", "key": "features/"})
	t.brief(placement.deny) == {
		["RES-002", "critical", far.urn, "far is placed in region \"me-south-1\", outside jurisdiction AE"],
		[
			"RES-012", "critical", registry.urn,
			concat("", [
				"registry puts feast/registry.db in bucket \"far\", which is not a bucket of the plan ",
				"in me-central-1 (found me-south-1)",
			]),
		],
		[
			"RES-012", "critical", offline.urn,
			concat("", [
				"offline puts features/ in bucket \"somewhere\", which is not a bucket of the plan ",
				"in me-central-1 (found no such bucket)",
			]),
		],
	} with input as t.plan([far, registry, offline])
}

test_feature_prefixes_in_region_missing_field if {
	registry := prefix_object("registry", {"key": "feast/"})
	t.brief(placement.deny) == {[
		"RES-012", "critical", registry.urn,
		concat("", [
			"registry puts feast/ in bucket \"unset\", which is not a bucket of the plan ",
			"in me-central-1 (found no such bucket)",
		]),
	]} with input as t.plan([bucket, registry])
}

captured(props) := t.resource(
	"aws:sagemaker/endpointConfiguration:EndpointConfiguration", "rt",
	{"dataCaptureConfig": props},
)

test_data_capture_in_region_passing if {
	c := captured({"destinationS3Uri": "s3://acme-async/capture/clf/", "initialSamplingPercentage": 10})
	plain := t.resource("aws:sagemaker/endpointConfiguration:EndpointConfiguration", "plain", {})
	placement.deny == set() with input as t.plan([results, c, plain])
}

test_data_capture_in_region_violating if {
	c := captured({"destinationS3Uri": "s3://someone-else/capture/"})
	t.brief(placement.deny) == {[
		"RES-013", "critical", c.urn,
		concat("", [
			"endpoint configuration rt captures data to \"s3://someone-else/capture/\", ",
			"which is not a bucket of the plan in me-central-1 (found no such bucket)",
		]),
	]} with input as t.plan([results, c])
}

test_data_capture_in_region_missing_field if {
	c := captured({"initialSamplingPercentage": 10})
	t.brief(placement.deny) == {[
		"RES-013", "critical", c.urn,
		concat("", [
			"endpoint configuration rt captures data to \"unset\", ",
			"which is not a bucket of the plan in me-central-1 (found no such bucket)",
		]),
	]} with input as t.plan([results, c])
}

# RES-002 and RES-003 already hold for the managed-services types (they match every aws:
# resource and every ARN): these cases pin that down for the SMB profile's types.
smb_types := [
	"aws:sagemaker/model:Model",
	"aws:sagemaker/endpoint:Endpoint",
	"aws:apigatewayv2/api:Api",
	"aws:apigatewayv2/stage:Stage",
	"aws:apigateway/restApi:RestApi",
	"aws:lambda/function:Function",
	"aws:cloudwatch/logGroup:LogGroup",
	"aws:cloudwatch/metricAlarm:MetricAlarm",
	"aws:ecr/repository:Repository",
]

test_managed_types_in_region_passing if {
	placement.deny == set() with input as t.plan([t.resource(type, "x", {}) | some type in smb_types])
}

test_managed_types_in_region_violating if {
	found := [t.resource(type, "x", {"region": "eu-west-1"}) | some type in smb_types]
	t.brief(placement.deny) == {[
		"RES-002", "critical", r.urn,
		"x is placed in region \"eu-west-1\", outside jurisdiction AE",
	] |
		some r in found
	} with input as t.plan(found)
}

test_access_log_destination_in_region_violating if {
	stage := t.resource("aws:apigatewayv2/stage:Stage", "api", {"accessLogSettings": {
		"destinationArn": "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/apigateway/api",
		"format": "$context.requestId",
	}})
	t.brief(placement.deny) == {[
		"RES-003", "critical", stage.urn,
		concat("", [
			"api refers to arn:aws:logs:eu-west-1:123456789012:log-group:/aws/apigateway/api ",
			"in region \"eu-west-1\", outside the jurisdiction",
		]),
	]} with input as t.plan([stage])
}
