package identity.access_test

import data.identity.access
import data.lib.testing_test as t

strict := t.k8s("PeerAuthentication", "default", "istio-system", {"mtls": {"mode": "STRICT"}})

route := t.k8s("VirtualService", "iris", "models", {})

jwt := t.k8s("RequestAuthentication", "jwt", "istio-system", {"jwtRules": [{"issuer": "i"}]})

token_rule := {"from": [{"source": {"requestPrincipals": ["i/*"]}}]}

allow_with_token := t.k8s("AuthorizationPolicy", "require", "models", {"rules": [token_rule]})

mesh := [strict, route, jwt, allow_with_token]

stack_urn := "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod"

test_mesh_strict_passing if {
	access.deny == set() with input as t.plan(mesh)
}

test_mesh_strict_violating if {
	spec := {"selector": {"app": "x"}, "mtls": {"mode": "STRICT"}}
	scoped := t.k8s("PeerAuthentication", "default", "istio-system", spec)
	t.brief(access.deny) == {[
		"IDN-001", "critical", stack_urn,
		"stack uae-prod has no mesh-wide PeerAuthentication with mode STRICT in namespace istio-system",
	]} with input as t.plan([scoped, route, jwt, allow_with_token])
}

test_mesh_strict_missing_field if {
	t.brief(access.deny) == {[
		"IDN-001", "critical", stack_urn,
		"stack uae-prod has no mesh-wide PeerAuthentication with mode STRICT in namespace istio-system",
	]} with input as t.plan([route, jwt, allow_with_token])
}

test_mesh_strict_by_layer if {
	# The platform layer's plan must carry the mesh policy even when it holds nothing else;
	# the infra layer's plan (AWS only) is not asked for it.
	project := "model-serving-platform"
	platform := object.union(t.plan([]), {"project": project})
	t.brief(access.deny) == {[
		"IDN-001", "critical", sprintf("urn:pulumi:uae-prod::%s::pulumi:pulumi:Stack::%s-uae-prod", [project, project]),
		"stack uae-prod has no mesh-wide PeerAuthentication with mode STRICT in namespace istio-system",
	]} with input as platform
	access.deny == set() with input as object.union(t.plan([]), {"project": "model-serving"})
	access.deny == set() with input as t.plan([])
}

test_no_downgrade_passing if {
	override := t.k8s("PeerAuthentication", "iris", "models", {"portLevelMtls": {"8080": {"mode": "STRICT"}}})
	access.deny == set() with input as t.plan(array.concat(mesh, [override]))
}

test_no_downgrade_violating if {
	override := t.k8s("PeerAuthentication", "iris", "models", {"portLevelMtls": {"8080": {"mode": "DISABLE"}}})
	t.brief(access.deny) == {[
		"IDN-002", "high", override.urn,
		"PeerAuthentication iris sets mTLS mode DISABLE",
	]} with input as t.plan(array.concat(mesh, [override]))
}

test_no_downgrade_missing_field if {
	# No mode at all inherits the mesh's STRICT.
	override := t.k8s("PeerAuthentication", "iris", "models", {})
	access.deny == set() with input as t.plan(array.concat(mesh, [override]))
}

test_token_required_passing if {
	local := t.k8s("RequestAuthentication", "jwt", "models", {"jwtRules": [{"issuer": "i"}]})
	access.deny == set() with input as t.plan([strict, route, local, allow_with_token])
}

test_token_required_violating if {
	other := t.k8s("RequestAuthentication", "jwt", "tenant-a", {"jwtRules": [{"issuer": "i"}]})
	t.brief(access.deny) == {[
		"IDN-003", "critical", route.urn,
		"route iris in namespace models has no RequestAuthentication with jwtRules",
	]} with input as t.plan([strict, route, other, allow_with_token])
}

test_token_required_missing_field if {
	empty := t.k8s("RequestAuthentication", "jwt", "models", {})
	t.brief(access.deny) == {[
		"IDN-003", "critical", route.urn,
		"route iris in namespace models has no RequestAuthentication with jwtRules",
	]} with input as t.plan([strict, route, empty, allow_with_token])
}

authz(spec) := t.k8s("AuthorizationPolicy", "authz", "models", spec)

test_deny_by_default_passing if {
	deny_anonymous := authz({"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}]})
	claims := authz({"rules": [{"when": [{"key": "request.auth.claims[scope]", "values": ["infer"]}]}]})
	allow_nothing := authz({})
	every ap in [deny_anonymous, claims, allow_nothing] {
		access.deny == set() with input as t.plan([strict, route, jwt, ap])
	}
}

test_deny_by_default_violating if {
	allow_all := authz({"action": "ALLOW", "rules": [{}]})
	t.brief(access.deny) == {[
		"IDN-004", "critical", route.urn,
		"route iris in namespace models has no deny-by-default AuthorizationPolicy",
	]} with input as t.plan([strict, route, jwt, allow_all])
}

test_deny_by_default_missing_field if {
	t.brief(access.deny) == {[
		"IDN-004", "critical", route.urn,
		"route iris in namespace models has no deny-by-default AuthorizationPolicy",
	]} with input as t.plan([strict, route, jwt])
}

account(annotations) := t.resource("kubernetes:core/v1:ServiceAccount", "sa", {
	"kind": "ServiceAccount",
	"metadata": {"name": "iris", "namespace": "models", "annotations": annotations},
})

workload(pod) := t.k8s("Deployment", "iris", "models", {"template": {"spec": pod}})

# The model pods' init container, which copies the model from the bucket.
model_sync := {"name": "model-sync", "args": ["s3://$(MODEL_BUCKET)/models/iris/1", "/models/iris/1"]}

model_pod(pod) := object.union({"initContainers": [model_sync], "containers": [{"name": "server"}]}, pod)

test_irsa_passing if {
	sa := account({"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/iris"})
	w := workload(model_pod({"serviceAccountName": "iris"}))
	access.deny == set() with input as t.plan(array.concat(mesh, [sa, w]))
}

test_irsa_not_needed_without_aws_calls_passing if {
	redis := workload({"serviceAccountName": "redis", "containers": [{"name": "redis", "args": ["--port", "6379"]}]})
	access.deny == set() with input as t.plan(array.concat(mesh, [account({}), redis]))
}

test_irsa_not_applicable_on_premises_passing if {
	# onprem-ae is "onprem" in the policy data: its model pods read an in-country store.
	w := workload(model_pod({"serviceAccountName": "iris"}))
	doc := object.union(t.plan(array.concat(mesh, [account({}), w])), {"stack": "onprem-ae"})
	access.deny == set() with input as doc
}

test_irsa_violating if {
	w := workload(model_pod({"serviceAccountName": "iris"}))
	t.brief(access.deny) == {[
		"IDN-005", "high", w.urn,
		"workload iris runs as service account \"iris\", which has no eks.amazonaws.com/role-arn",
	]} with input as t.plan(array.concat(mesh, [account({}), w]))
}

test_irsa_violating_env_and_unknown_stack if {
	# The plan's own config cannot make a stack on-premises: an unknown stack counts as AWS.
	env := {"name": "sync", "env": [{"name": "SOURCE", "value": "s3://models/iris"}]}
	w := workload({"serviceAccountName": "iris", "containers": [env]})
	doc := object.union(t.plan(array.concat(mesh, [account({}), w])), {"stack": "dc2", "config": {"kind": "onprem"}})
	t.brief(access.deny) == {[
		"IDN-005", "high", w.urn,
		"workload iris runs as service account \"iris\", which has no eks.amazonaws.com/role-arn",
	]} with input as doc
}

test_irsa_missing_field if {
	w := workload(model_pod({}))
	t.brief(access.deny) == {[
		"IDN-005", "high", w.urn,
		"workload iris runs as service account \"default\", which has no eks.amazonaws.com/role-arn",
	]} with input as t.plan(array.concat(mesh, [w]))
}

iam(doc) := t.resource("aws:iam/policy:Policy", "read", {"policy": doc})

test_wildcard_passing if {
	doc := {"Statement": [
		{"Effect": "Allow", "Action": ["s3:GetObject", "ec2:Describe*"]},
		{"Effect": "Deny", "Action": "*"},
	]}
	access.deny == set() with input as t.plan([iam(json.marshal(doc))])
}

test_wildcard_violating if {
	p := iam({"Statement": {"Effect": "Allow", "Action": ["s3:*", "kms:Decrypt", "*"]}})
	t.brief(access.deny) == {
		["IDN-006", "high", p.urn, "IAM policy read allows wildcard action s3:*"],
		["IDN-006", "high", p.urn, "IAM policy read allows wildcard action *"],
	} with input as t.plan([p])
}

test_wildcard_missing_field if {
	p := t.resource("aws:iam/rolePolicy:RolePolicy", "read", {})
	t.brief(access.deny) == {[
		"IDN-006", "high", p.urn,
		"IAM policy read allows wildcard action *",
	]} with input as t.plan([p])
}

node_role := t.resource("aws:iam/role:Role", "nodes", {"assumeRolePolicy": json.marshal({"Statement": [{
	"Effect": "Allow",
	"Principal": {"Service": "ec2.amazonaws.com"},
	"Action": "sts:AssumeRole",
}]})})

attach(name, arn) := object.union(
	t.resource("aws:iam/rolePolicyAttachment:RolePolicyAttachment", name, {"role": "nodes-1a2b", "policyArn": arn}),
	{"dependencies": [node_role.urn]},
)

test_node_role_data_passing if {
	worker := attach("worker", "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy")
	ecr := attach("ecr", "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly")
	logs := t.resource("aws:iam/rolePolicy:RolePolicy", "logs", {
		"role": "nodes",
		"policy": {"Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents"}]},
	})
	access.deny == set() with input as t.plan([node_role, worker, ecr, logs])
}

test_node_role_data_violating if {
	s3 := attach("s3", "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess")
	inline := t.resource("aws:iam/rolePolicy:RolePolicy", "read", {
		"role": "nodes",
		"policy": {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "logs:PutLogEvents"]}]},
	})
	t.brief(access.deny) == {
		["IDN-007", "high", s3.urn, sprintf("s3 gives node role access to data: %s", [s3.properties.policyArn])],
		["IDN-007", "high", inline.urn, "read gives node role access to data: s3:GetObject"],
	} with input as t.plan([node_role, s3, inline])
}

test_node_role_data_missing_field if {
	bare := t.resource("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "a", {})
	a := object.union(bare, {"dependencies": [node_role.urn]})
	pod_role := t.resource("aws:iam/role:Role", "pods", {})
	s3 := t.resource("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "s3", {
		"role": "pods",
		"policyArn": "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
	})
	t.brief(access.deny) == {[
		"IDN-007", "high", a.urn,
		"a gives node role access to data: unset",
	]} with input as t.plan([node_role, a, pod_role, s3])
}

replication_group(props) := t.resource("aws:elasticache/replicationGroup:ReplicationGroup", "queue", props)

test_elasticache_auth_passing if {
	access.deny == set() with input as t.plan([replication_group({"authToken": "[secret]"})])
}

test_elasticache_auth_user_groups_passing if {
	access.deny == set() with input as t.plan([replication_group({"userGroupIds": ["queue-users"]})])
}

test_elasticache_auth_violating if {
	g := replication_group({"authToken": "", "userGroupIds": []})
	t.brief(access.deny) == {[
		"IDN-008", "high", g.urn,
		"replication group queue accepts clients without authentication (authToken unset, 0 user groups)",
	]} with input as t.plan([g])
}

test_elasticache_auth_missing_field if {
	g := replication_group({})
	t.brief(access.deny) == {[
		"IDN-008", "high", g.urn,
		"replication group queue accepts clients without authentication (authToken unset, 0 user groups)",
	]} with input as t.plan([g])
}

table_arn := "arn:aws:dynamodb:me-central-1:123456789012:table/model_serving.tumour_measurements"

test_dynamodb_tables_named_passing if {
	doc := {"Statement": [
		{"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem"], "Resource": [table_arn]},
		{"Effect": "Allow", "Action": "dynamodb:Query", "Resource": sprintf("%s/index/by_day", [table_arn])},
		{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::models/feast/registry.db"},
		{"Effect": "Deny", "Action": "dynamodb:DeleteTable", "Resource": "*"},
	]}
	access.deny == set() with input as t.plan([iam(json.marshal(doc))])
}

test_dynamodb_tables_named_violating if {
	doc := {"Statement": [
		{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"},
		{
			"Effect": "Allow",
			"Action": ["dynamodb:BatchWriteItem", "dynamodb:DescribeTable"],
			"Resource": [table_arn, "arn:aws:dynamodb:me-central-1:123456789012:table/model_serving.*"],
		},
		{"Effect": "Allow", "Action": "dynamodb:Scan", "NotResource": table_arn},
	]}
	p := iam(json.marshal(doc))
	t.brief(access.deny) == {
		["IDN-009", "high", p.urn, "IAM policy read allows dynamodb:GetItem on *, not a named DynamoDB table"],
		[
			"IDN-009", "high", p.urn,
			concat("", [
				"IAM policy read allows dynamodb:BatchWriteItem, dynamodb:DescribeTable on ",
				"arn:aws:dynamodb:me-central-1:123456789012:table/model_serving.*, not a named DynamoDB table",
			]),
		],
		["IDN-009", "high", p.urn, "IAM policy read allows dynamodb:Scan on NotResource, not a named DynamoDB table"],
	} with input as t.plan([p])
}

test_dynamodb_tables_named_missing_field if {
	p := iam(json.marshal({"Statement": {"Effect": "Allow", "Action": "dynamodb:GetItem"}}))
	t.brief(access.deny) == {[
		"IDN-009", "high", p.urn,
		"IAM policy read allows dynamodb:GetItem on unset, not a named DynamoDB table",
	]} with input as t.plan([p])
}

test_dynamodb_wildcard_action_is_both_rules if {
	p := iam(json.marshal({"Statement": {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}}))
	t.brief(access.deny) == {
		["IDN-006", "high", p.urn, "IAM policy read allows wildcard action dynamodb:*"],
		["IDN-009", "high", p.urn, "IAM policy read allows dynamodb:* on *, not a named DynamoDB table"],
	} with input as t.plan([p])
}

model_bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "acme-models"})

service_role(name, service) := t.resource("aws:iam/role:Role", name, {"assumeRolePolicy": json.marshal({
	"Version": "2012-10-17",
	"Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
})})

inline_policy(name, role, statements) := t.resource("aws:iam/rolePolicy:RolePolicy", name, {
	"role": role,
	"policy": json.marshal({"Version": "2012-10-17", "Statement": statements}),
})

scoped_statements := [
	{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::acme-models/models/clf/*"},
	{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::acme-models"},
	{"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "arn:aws:kms:me-central-1:123456789012:key/1234-ab"},
	{"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
	{"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": "*"},
]

test_service_roles_scoped_passing if {
	access.deny == set() with input as t.plan([
		model_bucket,
		service_role("clf-exec", "sagemaker.amazonaws.com"),
		service_role("proxy", ["lambda.amazonaws.com"]),
		inline_policy("clf-exec", "clf-exec-3097ea8", scoped_statements),
		inline_policy("proxy", "proxy", scoped_statements),
	])
}

test_service_roles_scoped_violating if {
	p := inline_policy("clf-exec", "clf-exec-3097ea8", [
		{"Effect": "Allow", "Action": "s3:GetObject", "Resource": ["arn:aws:s3:::acme-models/*", "arn:aws:s3:::other/*"]},
		{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*"},
		{"Effect": "Allow", "Action": "s3:PutObject", "NotResource": "arn:aws:s3:::acme-models/*"},
		{"Effect": "Deny", "Action": "s3:*", "Resource": "*"},
	])
	a := t.resource("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "clf-full", {
		"role": "clf-exec",
		"policyArn": "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess",
	})

	# A role other services assume is not this rule's (node roles are IDN-007's).
	read_x := {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::x/*"}
	other := inline_policy("runner", "runner", [read_x])
	t.brief(access.deny) == {
		[
			"IDN-010", "high", p.urn,
			concat("", [
				"clf-exec gives sagemaker.amazonaws.com role clf-exec s3:GetObject on arn:aws:s3:::other/*",
				", not a bucket of the plan or a named key",
			]),
		],
		[
			"IDN-010", "high", p.urn,
			concat("", [
				"clf-exec gives sagemaker.amazonaws.com role clf-exec kms:Decrypt, kms:GenerateDataKey on *",
				", not a bucket of the plan or a named key",
			]),
		],
		[
			"IDN-010", "high", p.urn,
			concat("", [
				"clf-exec gives sagemaker.amazonaws.com role clf-exec s3:PutObject on NotResource",
				", not a bucket of the plan or a named key",
			]),
		],
		[
			"IDN-010", "high", a.urn,
			concat("", [
				"clf-full gives sagemaker.amazonaws.com role clf-exec ",
				"arn:aws:iam::aws:policy/AmazonSageMakerFullAccess on its managed policy",
				", not a bucket of the plan or a named key",
			]),
		],
	} with input as t.plan([
		model_bucket, service_role("clf-exec", "sagemaker.amazonaws.com"),
		service_role("runner", "codebuild.amazonaws.com"), p, a, other,
	])
}

test_service_roles_scoped_missing_field if {
	# An unreadable policy, and a role still unknown in a preview (joined by dependency).
	role := service_role("proxy", "lambda.amazonaws.com")
	p := object.union(
		t.resource("aws:iam/rolePolicy:RolePolicy", "proxy", {"role": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}),
		{"dependencies": [role.urn]},
	)
	t.brief(access.deny) == {
		["IDN-006", "high", p.urn, "IAM policy proxy allows wildcard action *"],
		[
			"IDN-010", "high", p.urn,
			concat("", [
				"proxy gives lambda.amazonaws.com role proxy every action (unreadable policy) on *",
				", not a bucket of the plan or a named key",
			]),
		],
	} with input as t.plan([model_bucket, role, p])
}
