package encryption.at_rest_test

import data.encryption.at_rest
import data.lib.testing_test as t

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models"})

sse(alg) := object.union(
	t.resource(
		"aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "sse",
		{"bucket": "other-name", "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": alg}}]},
	),
	{"dependencies": [bucket.urn]},
)

test_sse_passing if {
	at_rest.deny == set() with input as t.plan([bucket, sse("aws:kms")])
}

test_sse_violating if {
	t.brief(at_rest.deny) == {[
		"ENC-001", "high", bucket.urn,
		"bucket models has no SSE-KMS configuration (found AES256)",
	]} with input as t.plan([bucket, sse("AES256")])
}

test_sse_missing_field if {
	t.brief(at_rest.deny) == {[
		"ENC-001", "high", bucket.urn,
		"bucket models has no SSE-KMS configuration (found none)",
	]} with input as t.plan([bucket])
}

template(mappings) := t.resource("aws:ec2/launchTemplate:LaunchTemplate", "nodes", {"blockDeviceMappings": mappings})

test_volumes_passing if {
	volume := t.resource("aws:ebs/volume:Volume", "v", {"encrypted": true})
	group := t.resource("aws:eks/nodeGroup:NodeGroup", "ng", {"launchTemplate": {"name": "nodes"}})
	tmpl := template([{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true"}}])
	at_rest.deny == set() with input as t.plan([tmpl, volume, group])
}

test_volumes_violating if {
	tmpl := template([{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}])
	volume := t.resource("aws:ebs/volume:Volume", "v", {"encrypted": false})
	t.brief(at_rest.deny) == {
		["ENC-002", "high", tmpl.urn, "nodes has an unencrypted or default volume: /dev/xvda encrypted=false"],
		["ENC-002", "high", volume.urn, "v has an unencrypted or default volume: encrypted=false"],
	} with input as t.plan([tmpl, volume])
}

test_volumes_missing_field if {
	tmpl := template([])
	group := t.resource("aws:eks/nodeGroup:NodeGroup", "ng", {})
	volume := t.resource("aws:ebs/volume:Volume", "v", {})
	t.brief(at_rest.deny) == {
		["ENC-002", "high", tmpl.urn, "nodes has an unencrypted or default volume: no block device mappings"],
		["ENC-002", "high", group.urn, "ng has an unencrypted or default volume: node group without a launch template"],
		["ENC-002", "high", volume.urn, "v has an unencrypted or default volume: encrypted=unset"],
	} with input as t.plan([tmpl, group, volume])
}

cluster(props) := t.resource("aws:eks/cluster:Cluster", "eks", props)

test_secrets_passing if {
	key := "arn:aws:kms:me-central-1:1:key/k"
	c := cluster({"encryptionConfig": [{"resources": ["secrets"], "provider": {"keyArn": key}}]})
	at_rest.deny == set() with input as t.plan([c])
}

test_secrets_violating if {
	cfg := {"resources": ["configmaps"], "provider": {"keyArn": "k"}}
	c := cluster({"encryptionConfig": cfg})
	found := `{"provider":{"keyArn":"k"},"resources":["configmaps"]}`
	t.brief(at_rest.deny) == {[
		"ENC-003", "high", c.urn,
		sprintf("EKS cluster eks does not encrypt secrets with KMS (encryptionConfig %s)", [found]),
	]} with input as t.plan([c])
}

test_secrets_missing_field if {
	c := cluster({})
	t.brief(at_rest.deny) == {[
		"ENC-003", "high", c.urn,
		"EKS cluster eks does not encrypt secrets with KMS (encryptionConfig null)",
	]} with input as t.plan([c])
}

log_group(props) := t.resource("aws:cloudwatch/logGroup:LogGroup", "logs", props)

test_log_group_passing if {
	at_rest.deny == set() with input as t.plan([log_group({"kmsKeyId": "arn:aws:kms:me-central-1:1:key/k"})])
}

test_log_group_violating if {
	g := log_group({"kmsKeyId": ""})
	t.brief(at_rest.deny) == {["ENC-004", "medium", g.urn, "log group logs has no kmsKeyId"]} with input as t.plan([g])
}

test_log_group_missing_field if {
	g := log_group({})
	t.brief(at_rest.deny) == {["ENC-004", "medium", g.urn, "log group logs has no kmsKeyId"]} with input as t.plan([g])
}

replication_group(props) := t.resource("aws:elasticache/replicationGroup:ReplicationGroup", "queue", props)

test_elasticache_at_rest_passing if {
	g := replication_group({"atRestEncryptionEnabled": true, "kmsKeyId": "arn:aws:kms:me-central-1:1:key/k"})
	at_rest.deny == set() with input as t.plan([g])
}

test_elasticache_at_rest_violating if {
	g := replication_group({"atRestEncryptionEnabled": false, "kmsKeyId": "k"})
	t.brief(at_rest.deny) == {[
		"ENC-005", "high", g.urn,
		"replication group queue: no KMS encryption at rest (atRestEncryptionEnabled false, kmsKeyId k)",
	]} with input as t.plan([g])
}

test_elasticache_at_rest_default_key_violating if {
	g := replication_group({"atRestEncryptionEnabled": "true", "kmsKeyId": ""})
	t.brief(at_rest.deny) == {[
		"ENC-005", "high", g.urn,
		"replication group queue: no KMS encryption at rest (atRestEncryptionEnabled true, kmsKeyId )",
	]} with input as t.plan([g])
}

test_elasticache_at_rest_missing_field if {
	g := replication_group({})
	t.brief(at_rest.deny) == {[
		"ENC-005", "high", g.urn,
		"replication group queue: no KMS encryption at rest (atRestEncryptionEnabled unset, kmsKeyId unset)",
	]} with input as t.plan([g])
}

secret(props) := t.resource("aws:secretsmanager/secret:Secret", "token", props)

test_secret_key_passing if {
	at_rest.deny == set() with input as t.plan([secret({"kmsKeyId": "arn:aws:kms:me-central-1:1:key/k"})])
}

test_secret_key_violating if {
	s := secret({"kmsKeyId": "alias/aws/secretsmanager"})
	t.brief(at_rest.deny) == {[
		"ENC-006", "high", s.urn,
		"secret token is not encrypted with a customer managed KMS key (kmsKeyId alias/aws/secretsmanager)",
	]} with input as t.plan([s])
}

test_secret_key_missing_field if {
	s := secret({})
	t.brief(at_rest.deny) == {[
		"ENC-006", "high", s.urn,
		"secret token is not encrypted with a customer managed KMS key (kmsKeyId unset)",
	]} with input as t.plan([s])
}

endpoint_config(props) := t.resource("aws:sagemaker/endpointConfiguration:EndpointConfiguration", "clf", props)

key := "arn:aws:kms:me-central-1:1:key/k"

async_output(out) := {"asyncInferenceConfig": {"outputConfig": out}}

test_endpoint_config_key_passing if {
	c := endpoint_config(object.union({"kmsKeyArn": key}, async_output({"kmsKeyId": key})))
	at_rest.deny == set() with input as t.plan([c])
}

test_endpoint_config_key_synchronous_passing if {
	at_rest.deny == set() with input as t.plan([endpoint_config({"kmsKeyArn": key})])
}

test_endpoint_config_key_violating if {
	c := endpoint_config(object.union({"kmsKeyArn": ""}, async_output({"kmsKeyId": key})))
	t.brief(at_rest.deny) == {[
		"ENC-007", "high", c.urn, "endpoint configuration clf: no KMS key for its volumes (kmsKeyArn)",
	]} with input as t.plan([c])
}

test_endpoint_config_key_missing_field if {
	c := endpoint_config(async_output({}))
	t.brief(at_rest.deny) == {
		["ENC-007", "high", c.urn, "endpoint configuration clf: no KMS key for its volumes (kmsKeyArn)"],
		[
			"ENC-007", "high", c.urn,
			"endpoint configuration clf: no KMS key for async results (asyncInferenceConfig.outputConfig.kmsKeyId)",
		],
	} with input as t.plan([c])
}

topic(props) := t.resource("aws:sns/topic:Topic", "done", props)

test_topic_key_passing if {
	at_rest.deny == set() with input as t.plan([topic({"kmsMasterKeyId": key})])
}

test_topic_key_violating if {
	s := topic({"kmsMasterKeyId": "alias/aws/sns"})
	t.brief(at_rest.deny) == {[
		"ENC-008", "high", s.urn,
		"topic done is not encrypted with a customer managed KMS key (kmsMasterKeyId alias/aws/sns)",
	]} with input as t.plan([s])
}

test_topic_key_missing_field if {
	s := topic({})
	t.brief(at_rest.deny) == {[
		"ENC-008", "high", s.urn,
		"topic done is not encrypted with a customer managed KMS key (kmsMasterKeyId unset)",
	]} with input as t.plan([s])
}

table(props) := t.resource("aws:dynamodb/table:Table", "features", props)

test_table_key_passing if {
	sse := {"enabled": true, "kmsKeyArn": "arn:aws:kms:me-central-1:1:key/k"}
	at_rest.deny == set() with input as t.plan([table({"serverSideEncryption": sse})])
}

test_table_key_violating if {
	aws_managed := table({"serverSideEncryption": {"enabled": true, "kmsKeyArn": "alias/aws/dynamodb"}})
	off := object.union(
		table({"serverSideEncryption": {"enabled": false, "kmsKeyArn": "arn:aws:kms:me-central-1:1:key/k"}}),
		{"urn": "urn:off", "name": "off"},
	)
	t.brief(at_rest.deny) == {
		[
			"ENC-009", "high", aws_managed.urn,
			concat("", [
				"DynamoDB table features is not encrypted with a customer managed KMS key ",
				`(serverSideEncryption {"enabled":true,"kmsKeyArn":"alias/aws/dynamodb"})`,
			]),
		],
		[
			"ENC-009", "high", "urn:off",
			concat("", [
				"DynamoDB table off is not encrypted with a customer managed KMS key ",
				`(serverSideEncryption {"enabled":false,"kmsKeyArn":"arn:aws:kms:me-central-1:1:key/k"})`,
			]),
		],
	} with input as t.plan([aws_managed, off])
}

test_table_key_missing_field if {
	r := table({})
	t.brief(at_rest.deny) == {[
		"ENC-009", "high", r.urn,
		"DynamoDB table features is not encrypted with a customer managed KMS key (serverSideEncryption null)",
	]} with input as t.plan([r])
}

test_endpoint_config_capture_key_passing if {
	c := endpoint_config({"kmsKeyArn": key, "dataCaptureConfig": {"destinationS3Uri": "s3://m/capture/", "kmsKeyId": key}})
	at_rest.deny == set() with input as t.plan([c])
}

test_endpoint_config_capture_key_violating if {
	c := endpoint_config({"kmsKeyArn": key, "dataCaptureConfig": {"destinationS3Uri": "s3://m/capture/", "kmsKeyId": ""}})
	t.brief(at_rest.deny) == {[
		"ENC-007", "high", c.urn,
		"endpoint configuration clf: no KMS key for captured data (dataCaptureConfig.kmsKeyId)",
	]} with input as t.plan([c])
}

test_endpoint_config_capture_key_missing_field if {
	c := endpoint_config({"kmsKeyArn": key, "dataCaptureConfig": {"destinationS3Uri": "s3://m/capture/"}})
	t.brief(at_rest.deny) == {[
		"ENC-007", "high", c.urn,
		"endpoint configuration clf: no KMS key for captured data (dataCaptureConfig.kmsKeyId)",
	]} with input as t.plan([c])
}

function(props) := t.resource("aws:lambda/function:Function", "proxy", object.union(
	{"environment": {"variables": {"ENDPOINT_NAME": "clf"}}},
	props,
))

test_lambda_environment_key_passing if {
	at_rest.deny == set() with input as t.plan([
		function({"kmsKeyArn": key, "tags": {"data-classification": "confidential"}}),
		# Public data, or no environment at all, needs no key of the stack's own.
		function({"tags": {"data-classification": "public"}}),
		t.resource("aws:lambda/function:Function", "bare", {"tags": {"data-classification": "confidential"}}),
	])
}

test_lambda_environment_key_violating if {
	f := function({
		"kmsKeyArn": "arn:aws:kms:me-central-1:1:alias/aws/lambda",
		"tags": {"data-classification": "internal"},
	})
	t.brief(at_rest.deny) == {[
		"ENC-013", "high", f.urn,
		concat("", [
			"Lambda proxy: environment under arn:aws:kms:me-central-1:1:alias/aws/lambda, ",
			"not a customer managed KMS key (data-classification internal)",
		]),
	]} with input as t.plan([f])
}

test_lambda_environment_key_missing_field if {
	# No key and no classification anywhere: the function fails closed.
	f := function({})
	t.brief(at_rest.deny) == {[
		"ENC-013", "high", f.urn,
		"Lambda proxy: environment under aws/lambda, not a customer managed KMS key (data-classification unset)",
	]} with input as t.plan([f])
}

test_lambda_environment_key_provider_tags if {
	# The classification may come from the provider's defaultTags.
	f := function({})
	defaults := {"defaultTags": {"tags": {"data-classification": "public"}}}
	tagged := object.union(t.provider("me-central-1"), {"properties": defaults})
	at_rest.deny == set() with input as object.union(t.plan([f]), {"resources": [tagged, f]})
}

kms_key(props) := t.resource("aws:kms/key:Key", "data", props)

test_key_rotation_passing if {
	rotating := kms_key({"enableKeyRotation": true})
	signing := object.union(kms_key({"customerMasterKeySpec": "RSA_2048"}), {"urn": "u-signing"})
	at_rest.deny == set() with input as t.plan([rotating, signing])
}

test_key_rotation_violating if {
	still := kms_key({"enableKeyRotation": false})
	found := t.brief(at_rest.deny) with input as t.plan([still])
	found == {["ENC-015", "medium", still.urn, "KMS key data does not rotate its key material"]}
}

test_key_rotation_missing_field if {
	# AWS's default is no rotation.
	bare := kms_key({})
	found := t.brief(at_rest.deny) with input as t.plan([bare])
	found == {["ENC-015", "medium", bare.urn, "KMS key data does not rotate its key material"]}
}
