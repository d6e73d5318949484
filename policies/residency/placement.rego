# METADATA
# title: Residency
# description: |
#   Data and compute stay inside the stack's jurisdiction: every AWS resource's region,
#   resolved through its provider, and every place data is copied, logged, routed,
#   pulled from or encrypted with.
package residency.placement

import data.lib.config
import data.lib.resources
import data.lib.result

provs := resources.provider_index(input.resources)

allowed := config.allowed_regions(input)

# METADATA
# title: Stack jurisdiction known
# scope: rule
# description: |
#   A plan whose stack the policy data does not place in a known jurisdiction cannot be
#   checked for residency, so it fails. The plan's own config is not trusted for it. An empty
#   stack export (nothing deployed) places nothing anywhere.
# custom:
#   id: RES-001
#   severity: critical
#   message: "stack %s has jurisdiction %q in the policy data, which names no regions for it"
#   remediation: Add the stack to policies/data/stacks.json (or an override) with a jurisdiction of jurisdictions.json.
deny contains result.finding(rego.metadata.rule(), resources.stack_resource(input), [input.stack, found]) if {
	count(input.resources) > 0
	count(allowed) == 0
	found := config.jurisdiction(input)
}

# METADATA
# title: Declared jurisdiction is the policy data's
# scope: rule
# description: |
#   The jurisdiction a plan declares (its config's, else its stack file's) is the one the
#   policy data gives its stack. The rules judge by the policy data either way; a plan that
#   declares another is misconfigured or asking to be judged by another jurisdiction's rules.
# custom:
#   id: RES-014
#   severity: high
#   message: "stack %s declares jurisdiction %q; the policy data gives it %q"
#   remediation: Declare the policy data's jurisdiction in the stack file, or change the stack map through review.
deny contains result.finding(rego.metadata.rule(), resources.stack_resource(input), [input.stack, said, found]) if {
	said := object.get(input, "jurisdiction", "")
	said != ""
	found := config.jurisdiction(input)
	said != found
}

# METADATA
# title: Resource region in jurisdiction
# scope: rule
# description: Every AWS resource runs in a region of the jurisdiction, resolved through its provider.
# custom:
#   id: RES-002
#   severity: critical
#   message: "%s is placed in region %q, outside jurisdiction %s"
#   remediation: Create the resource with a provider whose region belongs to the stack's jurisdiction.
deny contains result.finding(rego.metadata.rule(), r, [r.name, reg, jurisdiction]) if {
	count(allowed) > 0
	jurisdiction := config.jurisdiction(input)
	some r in input.resources
	resources.is_aws(r)
	reg := resources.region(r, provs)
	not reg in allowed
}

# METADATA
# title: Referenced ARNs in jurisdiction
# scope: rule
# description: |
#   KMS keys, log destinations, backup vaults and any other ARN a resource refers to
#   live in a region of the jurisdiction.
# custom:
#   id: RES-003
#   severity: critical
#   message: "%s refers to %s in region %q, outside the jurisdiction"
#   remediation: Point the resource at a key, log group or vault created in one of the jurisdiction's regions.
deny contains result.finding(rego.metadata.rule(), r, [r.name, arn, reg]) if {
	count(allowed) > 0
	some r in input.resources

	# One regex over the serialized properties is far cheaper than walking every value.
	some arn in regex.find_n(`arn:aws[a-z-]*:[a-z0-9-]*:[a-z0-9-]+:[^"\\]*`, json.marshal(r.properties), -1)
	reg := resources.arn_region(arn)
	reg != ""
	not reg in allowed
}

# METADATA
# title: S3 replication in jurisdiction
# scope: rule
# description: Replication targets a bucket of this plan that sits in the jurisdiction; an unknown target fails.
# custom:
#   id: RES-004
#   severity: critical
#   message: "%s replicates to %s, which is in region %q"
#   remediation: Replicate only to a bucket of the same stack whose provider region is in the jurisdiction.
deny contains result.finding(rego.metadata.rule(), r, [r.name, target, reg]) if {
	count(allowed) > 0
	some r in input.resources
	r.type == "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
	some rule in object.get(r.properties, "rules", [{}])
	target := object.get(rule, ["destination", "bucket"], "missing")
	reg := bucket_region(target)
	not reg in allowed
}

bucket_region(arn) := resources.region(b, provs) if {
	some b in input.resources
	b.type in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}
	arn in bucket_arns(b)
} else := "unresolved"

bucket_arns(b) := {a |
	some a in [
		object.get(b.properties, "arn", null),
		sprintf("arn:aws:s3:::%v", [object.get(b.properties, "bucket", b.name)]),
	]
	is_string(a)
}

# METADATA
# title: Route53 targets in jurisdiction
# scope: rule
# description: Latency and failover records only point at regions of the jurisdiction.
# custom:
#   id: RES-005
#   severity: high
#   message: "%s routes to %s in region %q, outside the jurisdiction"
#   remediation: Route only between gateways of regions in the stack's jurisdiction.
deny contains result.finding(rego.metadata.rule(), r, [r.name, target, reg]) if {
	count(allowed) > 0
	some r in input.resources
	r.type in {"aws:route53/record:Record", "aws:route53/healthCheck:HealthCheck"}
	some target in route_targets(r.properties)
	reg := target_region(target)
	not reg in allowed
}

route_targets(p) := ({t |
	some t in array.concat(
		[policy.region | some policy in object.get(p, "latencyRoutingPolicies", [])],
		[alias.name | some alias in object.get(p, "aliases", [])],
	)
} | {t | some t in object.get(p, "records", [])}) | {p.fqdn | p.fqdn}

target_region(t) := t if regex.match(`^(?:[a-z]{2}|us-gov)-[a-z]+-[0-9]+$`, t)

target_region(t) := resources.host_region(t)

# METADATA
# title: Image registry in jurisdiction
# scope: rule
# description: |
#   Workload images are pulled from a registry in a region of the jurisdiction, or from one
#   the policy data lists for the stack (an in-country registry on premises).
# custom:
#   id: RES-006
#   severity: high
#   message: "%s pulls image %s from region %q, outside the jurisdiction"
#   remediation: Push the image to the stack region's ECR (or the stack's listed registry) and reference it there.
deny contains result.finding(rego.metadata.rule(), r, [r.name, image, reg]) if {
	count(allowed) > 0
	some r in input.resources
	some container in resources.containers(r)
	image := container.image
	not listed(image)
	reg := image_region(image)
	not reg in allowed
}

listed(image) if {
	some loc in config.registries(input)
	resources.under(image, loc)
}

image_region(image) := reg if {
	contains(image, "/")
	reg := resources.host_region(split(image, "/")[0])
} else := "unresolved"

# METADATA
# title: Secret replicas in jurisdiction
# scope: rule
# description: |
#   Secrets Manager copies a secret to each region its replicas name; every one is a region
#   of the jurisdiction (the secret's own region is RES-002's).
# custom:
#   id: RES-009
#   severity: critical
#   message: "secret %s replicates to region %q, outside jurisdiction %s"
#   remediation: Replicate the secret only to regions of the stack's jurisdiction, or not at all.
deny contains result.finding(rego.metadata.rule(), r, [r.name, reg, jurisdiction]) if {
	count(allowed) > 0
	jurisdiction := config.jurisdiction(input)
	some r in input.resources
	r.type == "aws:secretsmanager/secret:Secret"
	some replica in object.get(r.properties, "replicas", [])
	reg := object.get(replica, "region", "unset")
	not reg in allowed
}

# METADATA
# title: Async inference results in region
# scope: rule
# description: |
#   A SageMaker asynchronous endpoint writes its results and failures to buckets the plan
#   creates in the endpoint configuration's own region: an S3 path names no region, so a
#   bucket the plan does not hold (or holds elsewhere) could put results anywhere.
# custom:
#   id: RES-010
#   severity: critical
#   message: "endpoint configuration %s: %s %q is not a bucket of the plan in %s (found %s)"
#   remediation: Point the async output paths at the region's result bucket, created by the same stack.
deny contains result.finding(rego.metadata.rule(), r, [r.name, field, path, reg, found]) if {
	some r in input.resources
	r.type == "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
	out := object.get(r.properties, ["asyncInferenceConfig", "outputConfig"], null)
	out != null
	some field in output_fields(out)
	path := object.get(out, field, "unset")
	found := output_bucket_region(path)
	reg := resources.region(r, provs)
	found != reg
}

# The results path is required; the failures path is checked when given.
output_fields(out) := {"s3OutputPath", "s3FailurePath"} if object.get(out, "s3FailurePath", null) != null

output_fields(out) := {"s3OutputPath"} if object.get(out, "s3FailurePath", null) == null

output_bucket_region(path) := resources.region(b, provs) if {
	is_string(path)
	startswith(path, "s3://")
	name := split(trim_prefix(path, "s3://"), "/")[0]
	some b in input.resources
	b.type in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}
	object.get(b.properties, "bucket", "") == name
} else := "no such bucket"

# METADATA
# title: DynamoDB replicas in jurisdiction
# scope: rule
# description: |
#   A DynamoDB global table copies every item to each region its replicas name; every one is
#   a region of the jurisdiction (the table's own region is RES-002's).
# custom:
#   id: RES-011
#   severity: critical
#   message: "DynamoDB table %s replicates to region %q, outside jurisdiction %s"
#   remediation: Keep one table per region, materialized in that region, or replicate only inside the jurisdiction.
deny contains result.finding(rego.metadata.rule(), r, [r.name, reg, jurisdiction]) if {
	count(allowed) > 0
	jurisdiction := config.jurisdiction(input)
	some r in input.resources
	r.type == "aws:dynamodb/table:Table"
	some replica in object.get(r.properties, "replicas", [])
	reg := object.get(replica, "regionName", "unset")
	not reg in allowed
}

feature_prefixes := {"feast/", "features/"}

# METADATA
# title: Feature store prefixes in an in-region bucket
# scope: rule
# description: |
#   The feature registry (feast/) and the offline store (features/) sit in a bucket the plan
#   creates in the object's own region: the online store there is materialized from them, so
#   a bucket elsewhere (or one the plan does not hold) would move feature data out of region.
# custom:
#   id: RES-012
#   severity: critical
#   message: "%s puts %s in bucket %q, which is not a bucket of the plan in %s (found %s)"
#   remediation: Create the feature store prefixes in the region's model bucket, by the same stack.
deny contains result.finding(rego.metadata.rule(), r, [r.name, key, bucket, reg, found]) if {
	some r in input.resources
	r.type in {"aws:s3/bucketObjectv2:BucketObjectv2", "aws:s3/bucketObject:BucketObject"}
	key := object.get(r.properties, "key", "")
	some prefix in feature_prefixes
	startswith(key, prefix)
	bucket := object.get(r.properties, "bucket", "unset")
	found := named_bucket_region(bucket)
	reg := resources.region(r, provs)
	found != reg
}

named_bucket_region(name) := resources.region(b, provs) if {
	some b in input.resources
	b.type in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}
	object.get(b.properties, "bucket", "") == name
} else := "no such bucket"

# METADATA
# title: Data capture in an in-region bucket
# scope: rule
# description: |
#   A SageMaker endpoint that captures requests and responses (kept for drift analysis)
#   writes them to a bucket the plan creates in the endpoint configuration's own region: an
#   S3 URI names no region, so a bucket the plan does not hold could be anywhere.
# custom:
#   id: RES-013
#   severity: critical
#   message: "endpoint configuration %s captures data to %q, which is not a bucket of the plan in %s (found %s)"
#   remediation: Set dataCaptureConfig.destinationS3Uri to the region's model bucket (capture/<model>/), same stack.
deny contains result.finding(rego.metadata.rule(), r, [r.name, path, reg, found]) if {
	some r in input.resources
	r.type == "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
	capture := object.get(r.properties, "dataCaptureConfig", null)
	capture != null
	path := object.get(capture, "destinationS3Uri", "unset")
	found := output_bucket_region(path)
	reg := resources.region(r, provs)
	found != reg
}
