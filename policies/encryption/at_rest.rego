# METADATA
# title: Encryption at rest
# description: Buckets, volumes, cluster secrets and log groups are encrypted with KMS keys.
package encryption.at_rest

import data.lib.config
import data.lib.resources
import data.lib.result

buckets := [r | some r in input.resources; r.type in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}]

sse_types := {
	"aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
	"aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
}

sse_configs := [r | some r in input.resources; r.type in sse_types]

kms_algorithms := {"aws:kms", "aws:kms:dsse"}

# METADATA
# title: S3 SSE-KMS
# scope: rule
# description: Every bucket has a server-side encryption configuration using a KMS key.
# custom:
#   id: ENC-001
#   severity: high
#   message: "bucket %s has no SSE-KMS configuration (found %s)"
#   remediation: Add a BucketServerSideEncryptionConfiguration with sseAlgorithm aws:kms and the regional key.
deny contains result.finding(rego.metadata.rule(), b, [b.name, found]) if {
	some b in buckets
	not bucket_kms(b)
	found := resources.describe(bucket_algorithms(b))
}

# Only evaluated for buckets that fail, to name what was found.
bucket_algorithms(b) := {alg |
	some c in sse_configs
	some key in resources.links(c)
	key in resources.targets(b)
	some rule in object.get(c.properties, "rules", [])
	alg := object.get(rule, ["applyServerSideEncryptionByDefault", "sseAlgorithm"], "unset")
}

# What SSE configurations whose every rule uses KMS point at.
kms_targets contains key if {
	some c in sse_configs
	rules := object.get(c.properties, "rules", [])
	count(rules) > 0
	every rule in rules {
		object.get(rule, ["applyServerSideEncryptionByDefault", "sseAlgorithm"], "unset") in kms_algorithms
	}
	some key in resources.links(c)
}

bucket_kms(b) if {
	some key in resources.targets(b)
	key in kms_targets
}

# METADATA
# title: Encrypted volumes
# scope: rule
# description: |
#   Launch templates encrypt every block device, EBS volumes are encrypted, and node groups
#   use a launch template (otherwise their volumes take the account default).
# custom:
#   id: ENC-002
#   severity: high
#   message: "%s has an unencrypted or default volume: %s"
#   remediation: Encrypt every block device mapping (ebs.encrypted, kmsKeyId); give node groups a launch template.
deny contains result.finding(rego.metadata.rule(), r, [r.name, problem]) if {
	some r in input.resources
	some problem in volume_problems(r)
}

volume_problems(r) := {"no block device mappings"} if {
	r.type == "aws:ec2/launchTemplate:LaunchTemplate"
	count(object.get(r.properties, "blockDeviceMappings", [])) == 0
}

volume_problems(r) := {sprintf("%v encrypted=%v", [m.deviceName, object.get(m, ["ebs", "encrypted"], "unset")]) |
	some m in r.properties.blockDeviceMappings
	not resources.truthy(object.get(m, ["ebs", "encrypted"], false))
} if {
	r.type == "aws:ec2/launchTemplate:LaunchTemplate"
	count(object.get(r.properties, "blockDeviceMappings", [])) > 0
}

volume_problems(r) := {sprintf("encrypted=%v", [object.get(r.properties, "encrypted", "unset")])} if {
	r.type == "aws:ebs/volume:Volume"
	not resources.truthy(object.get(r.properties, "encrypted", false))
}

volume_problems(r) := {"node group without a launch template"} if {
	r.type == "aws:eks/nodeGroup:NodeGroup"
	not r.properties.launchTemplate
}

# METADATA
# title: EKS secrets encryption
# scope: rule
# description: EKS clusters encrypt Kubernetes secrets with a KMS key.
# custom:
#   id: ENC-003
#   severity: high
#   message: "EKS cluster %s does not encrypt secrets with KMS (encryptionConfig %s)"
#   remediation: Set encryptionConfig with resources ["secrets"] and provider.keyArn of the regional key.
deny contains result.finding(rego.metadata.rule(), r, [r.name, found]) if {
	some r in input.resources
	r.type == "aws:eks/cluster:Cluster"
	not secrets_encrypted(r.properties)
	found := json.marshal(object.get(r.properties, "encryptionConfig", null))
}

secrets_encrypted(p) if {
	some cfg in as_list(p.encryptionConfig)
	"secrets" in cfg.resources
	cfg.provider.keyArn != ""
}

as_list(v) := v if is_array(v)

as_list(v) := [v] if is_object(v)

# METADATA
# title: Log groups KMS-encrypted
# scope: rule
# description: CloudWatch log groups are encrypted with a KMS key.
# custom:
#   id: ENC-004
#   severity: medium
#   message: "log group %s has no kmsKeyId"
#   remediation: Set kmsKeyId to the stack's regional log key (whose policy allows the logs service).
deny contains result.finding(rego.metadata.rule(), r, [r.name]) if {
	some r in input.resources
	r.type == "aws:cloudwatch/logGroup:LogGroup"
	object.get(r.properties, "kmsKeyId", "") == ""
}

# METADATA
# title: ElastiCache encrypted at rest with KMS
# scope: rule
# description: |
#   Replication groups (the job queue) encrypt their disks, snapshots and swap at rest with a
#   customer managed KMS key, not the service's default key.
# custom:
#   id: ENC-005
#   severity: high
#   message: "replication group %s: no KMS encryption at rest (atRestEncryptionEnabled %v, kmsKeyId %v)"
#   remediation: |
#     Set atRestEncryptionEnabled true and kmsKeyId to the region's key (at creation: it
#     cannot be changed later).
deny contains result.finding(rego.metadata.rule(), r, [r.name, enabled, key]) if {
	some r in input.resources
	r.type == "aws:elasticache/replicationGroup:ReplicationGroup"
	not kms_at_rest(r.properties)
	enabled := object.get(r.properties, "atRestEncryptionEnabled", "unset")
	key := object.get(r.properties, "kmsKeyId", "unset")
}

kms_at_rest(p) if {
	resources.truthy(p.atRestEncryptionEnabled)
	is_string(p.kmsKeyId)
	p.kmsKeyId != ""
}

# METADATA
# title: Secrets encrypted with a customer managed key
# scope: rule
# description: |
#   Secrets Manager secrets name a customer managed KMS key: the default aws/secretsmanager
#   key cannot be restricted by a key policy nor kept to the stack.
# custom:
#   id: ENC-006
#   severity: high
#   message: "secret %s is not encrypted with a customer managed KMS key (kmsKeyId %v)"
#   remediation: Set kmsKeyId to the region's key; give its readers kms:Decrypt through Secrets Manager only.
deny contains result.finding(rego.metadata.rule(), r, [r.name, key]) if {
	some r in input.resources
	r.type == "aws:secretsmanager/secret:Secret"
	not customer_key(r.properties)
	key := object.get(r.properties, "kmsKeyId", "unset")
}

customer_key(p) if {
	is_string(p.kmsKeyId)
	p.kmsKeyId != ""
	not endswith(p.kmsKeyId, "alias/aws/secretsmanager")
}

# METADATA
# title: SageMaker endpoints encrypted with KMS
# scope: rule
# description: |
#   A SageMaker endpoint configuration encrypts its instances' storage volumes with a KMS
#   key, an asynchronous one also the results it writes to S3, and one that captures data
#   (for drift analysis) the captured requests and responses.
# custom:
#   id: ENC-007
#   severity: high
#   message: "endpoint configuration %s: no KMS key for %s"
#   remediation: |
#     Set kmsKeyArn, asyncInferenceConfig.outputConfig.kmsKeyId and dataCaptureConfig.kmsKeyId
#     to the region's key.
deny contains result.finding(rego.metadata.rule(), r, [r.name, what]) if {
	some r in input.resources
	r.type == "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
	some what in unkeyed_endpoint_parts(r.properties)
}

unkeyed_endpoint_parts(p) := {what |
	some what, path in {
		"its volumes (kmsKeyArn)": ["kmsKeyArn"],
		"async results (asyncInferenceConfig.outputConfig.kmsKeyId)": [
			"asyncInferenceConfig",
			"outputConfig",
			"kmsKeyId",
		],
		"captured data (dataCaptureConfig.kmsKeyId)": ["dataCaptureConfig", "kmsKeyId"],
	}
	applies(p, path)
	not named_key(object.get(p, path, ""))
}

# The async result key only matters on an asynchronous endpoint, the capture key where data
# is captured; the volume key always does.
applies(_, path) if count(path) == 1

applies(p, path) if {
	count(path) > 1
	object.get(p, path[0], null) != null
}

named_key(key) if {
	is_string(key)
	key != ""
}

# METADATA
# title: SNS topics encrypted with a customer managed key
# scope: rule
# description: |
#   SNS topics (asynchronous inference notifications) name a customer managed KMS key: the
#   default alias/aws/sns key cannot grant SageMaker its use through a key policy.
# custom:
#   id: ENC-008
#   severity: high
#   message: "topic %s is not encrypted with a customer managed KMS key (kmsMasterKeyId %v)"
#   remediation: Set kmsMasterKeyId to the region's async key, whose policy lets SNS and SageMaker use it.
deny contains result.finding(rego.metadata.rule(), r, [r.name, key]) if {
	some r in input.resources
	r.type == "aws:sns/topic:Topic"
	not topic_key(r.properties)
	key := object.get(r.properties, "kmsMasterKeyId", "unset")
}

topic_key(p) if {
	named_key(p.kmsMasterKeyId)
	not endswith(p.kmsMasterKeyId, "alias/aws/sns")
}

# METADATA
# title: DynamoDB tables encrypted with a customer managed key
# scope: rule
# description: |
#   DynamoDB tables (the online feature store) encrypt with a customer managed KMS key: the
#   default AWS owned key, and the aws/dynamodb managed key, cannot be restricted by a key
#   policy nor kept to the stack.
# custom:
#   id: ENC-009
#   severity: high
#   message: "DynamoDB table %s is not encrypted with a customer managed KMS key (serverSideEncryption %s)"
#   remediation: Set serverSideEncryption enabled true and kmsKeyArn to the region's key.
deny contains result.finding(rego.metadata.rule(), r, [r.name, found]) if {
	some r in input.resources
	r.type == "aws:dynamodb/table:Table"
	sse := object.get(r.properties, "serverSideEncryption", null)
	not table_customer_key(sse)
	found := json.marshal(sse)
}

table_customer_key(sse) if {
	resources.truthy(sse.enabled)
	named_key(sse.kmsKeyArn)
	not endswith(sse.kmsKeyArn, "alias/aws/dynamodb")
}

provs := resources.provider_index(input.resources)

# METADATA
# title: Lambda environment under a customer managed key
# scope: rule
# description: |
#   A Lambda function whose environment variables hold data of a classification that
#   settings.cmk_classifications names (tags, or the provider's defaultTags; none counts as
#   needing one) encrypts them with a customer managed KMS key (kmsKeyArn): without it Lambda
#   uses aws/lambda, which no key policy of the stack restricts.
# custom:
#   id: ENC-013
#   severity: high
#   message: "Lambda %s: environment under %s, not a customer managed KMS key (data-classification %s)"
#   remediation: Set kmsKeyArn to the region's key and let the function's role kms:Decrypt with it.
deny contains result.finding(rego.metadata.rule(), r, [r.name, found, classification]) if {
	some r in input.resources
	r.type == "aws:lambda/function:Function"
	count(object.get(r.properties, ["environment", "variables"], {})) > 0
	classification := data_classification(r)
	classification in cmk_classifications
	not lambda_customer_key(r.properties)
	found := object.get(r.properties, "kmsKeyArn", "aws/lambda")
}

cmk_classifications := {c | some c in config.settings.cmk_classifications} | {"unset"}

data_classification(r) := object.get(
	object.union(
		object.get(provs, [r.provider, "properties", "defaultTags", "tags"], {}),
		object.get(r.properties, "tags", {}),
	),
	"data-classification",
	"unset",
)

lambda_customer_key(p) if {
	named_key(p.kmsKeyArn)
	not endswith(p.kmsKeyArn, "alias/aws/lambda")
}

# METADATA
# title: KMS key rotation
# scope: rule
# description: Every symmetric customer-managed KMS key rotates its key material (AWS's default is off).
# custom:
#   id: ENC-015
#   severity: medium
#   message: "KMS key %s does not rotate its key material"
#   remediation: Set enableKeyRotation true (asymmetric and HMAC keys cannot rotate; give them their own waiver).
deny contains result.finding(rego.metadata.rule(), r, [r.name]) if {
	some r in input.resources
	r.type == "aws:kms/key:Key"
	spec := object.get(r.properties, "customerMasterKeySpec", object.get(r.properties, "keySpec", "SYMMETRIC_DEFAULT"))
	spec == "SYMMETRIC_DEFAULT"
	not resources.truthy(object.get(r.properties, "enableKeyRotation", false))
}
