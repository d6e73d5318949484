# METADATA
# title: Identity and access
# description: |
#   Mesh traffic is mutually authenticated, every model route demands a valid token and
#   denies by default, serving pods get their own IAM role, and no policy grants wildcard
#   actions on data services.
package identity.access

import data.lib.config
import data.lib.resources
import data.lib.result

root_ns := config.settings.mesh_root_namespace

peer_authns := resources.of_kind(input.resources, "PeerAuthentication")

routes := resources.of_kind(input.resources, "VirtualService")

# METADATA
# title: Mesh-wide mTLS STRICT
# scope: rule
# description: |
#   A PeerAuthentication in the mesh root namespace, without selector, sets mTLS mode
#   STRICT. Checked on plans of the platform layer (the cluster's content).
# custom:
#   id: IDN-001
#   severity: critical
#   message: "stack %s has no mesh-wide PeerAuthentication with mode STRICT in namespace %s"
#   remediation: Create PeerAuthentication "default" in the mesh root namespace with spec.mtls.mode STRICT.
deny contains result.finding(rego.metadata.rule(), resources.stack_resource(input), [input.stack, root_ns]) if {
	config.platform_plan(input)
	not mesh_strict
}

mesh_strict if {
	some p in peer_authns
	resources.namespace(p) == root_ns
	not p.properties.spec.selector
	p.properties.spec.mtls.mode == "STRICT"
}

# METADATA
# title: No mTLS downgrade
# scope: rule
# description: No PeerAuthentication sets PERMISSIVE or DISABLE, for a workload or a port.
# custom:
#   id: IDN-002
#   severity: high
#   message: "PeerAuthentication %s sets mTLS mode %s"
#   remediation: Remove the override or set its mode to STRICT.
deny contains result.finding(rego.metadata.rule(), p, [resources.k8s_name(p), mode]) if {
	some p in peer_authns
	some mode in modes(p.properties.spec)
	mode in {"PERMISSIVE", "DISABLE"}
}

modes(spec) := {spec.mtls.mode | spec.mtls.mode} | {port.mode | some port in spec.portLevelMtls}

# METADATA
# title: Token required on model routes
# scope: rule
# description: Every model route's namespace, or the mesh root, has a RequestAuthentication with JWT rules.
# custom:
#   id: IDN-003
#   severity: critical
#   message: "route %s in namespace %s has no RequestAuthentication with jwtRules"
#   remediation: Add a RequestAuthentication (issuer and JWKS from config) to the route's namespace or the mesh root.
deny contains result.finding(rego.metadata.rule(), vs, [resources.k8s_name(vs), ns]) if {
	some vs in routes
	ns := resources.namespace(vs)
	not covered(ns, jwt_namespaces)
}

# A namespace's policy, or the mesh root's, applies to a route.
covered(ns, namespaces) if ns in namespaces

covered(_, namespaces) if root_ns in namespaces

jwt_namespaces contains resources.namespace(ra) if {
	some ra in resources.of_kind(input.resources, "RequestAuthentication")
	count(object.get(ra.properties, ["spec", "jwtRules"], [])) > 0
}

# METADATA
# title: Deny by default on model routes
# scope: rule
# description: |
#   Every model route's namespace, or the mesh root, has an AuthorizationPolicy that denies
#   what it does not allow: ALLOW rules that all require a request principal, a DENY of
#   requests without one, or allow-nothing.
# custom:
#   id: IDN-004
#   severity: critical
#   message: "route %s in namespace %s has no deny-by-default AuthorizationPolicy"
#   remediation: Add an AuthorizationPolicy whose rules all require requestPrincipals (and the route's scope).
deny contains result.finding(rego.metadata.rule(), vs, [resources.k8s_name(vs), ns]) if {
	some vs in routes
	ns := resources.namespace(vs)
	not covered(ns, deny_namespaces)
}

deny_namespaces contains resources.namespace(ap) if {
	some ap in resources.of_kind(input.resources, "AuthorizationPolicy")
	deny_by_default(object.get(ap.properties, "spec", {}))
}

deny_by_default(spec) if {
	object.get(spec, "action", "ALLOW") == "ALLOW"
	rules := object.get(spec, "rules", [])
	every rule in rules {
		requires_principal(rule)
	}
}

deny_by_default(spec) if {
	spec.action == "DENY"
	some rule in spec.rules
	some src in rule.from
	"*" in src.source.notRequestPrincipals
}

requires_principal(rule) if {
	some src in rule.from
	count(object.get(src, ["source", "requestPrincipals"], [])) > 0
}

requires_principal(rule) if {
	some cond in rule.when
	startswith(cond.key, "request.auth.")
}

# METADATA
# title: IRSA for workloads that call AWS
# scope: rule
# description: |
#   On EKS, a workload that calls AWS (a container reads an s3:// location, as the model
#   pods' model-sync init container does) runs under a service account bound to its own IAM
#   role (IRSA), never the node's. Workloads that call no AWS API need none, and on premises
#   (the stack's kind in the policy data, not the plan's config) IRSA does not apply.
# custom:
#   id: IDN-005
#   severity: high
#   message: "workload %s runs as service account %q, which has no eks.amazonaws.com/role-arn"
#   remediation: Set serviceAccountName to a ServiceAccount annotated with the workload's IRSA role ARN.
deny contains result.finding(rego.metadata.rule(), w, [resources.k8s_name(w), sa]) if {
	config.kind(input) != "onprem"
	some w in input.resources
	spec := resources.pod_spec(w)
	calls_aws(spec)
	sa := object.get(spec, "serviceAccountName", "default")
	not sprintf("%s/%s", [resources.namespace(w), sa]) in irsa_accounts
}

calls_aws(spec) if {
	some c in array.concat(object.get(spec, "containers", []), object.get(spec, "initContainers", []))
	some v in container_strings(c)
	contains(v, "s3://")
}

# The strings a container is started with: command, args and literal env values.
container_strings(c) := array.flatten([
	object.get(c, "command", []),
	object.get(c, "args", []),
	[e.value | some e in object.get(c, "env", []); is_string(e.value)],
])

irsa_accounts contains sprintf("%s/%s", [resources.namespace(sa), resources.k8s_name(sa)]) if {
	some sa in resources.of_kind(input.resources, "ServiceAccount")
	object.get(sa.properties, ["metadata", "annotations", "eks.amazonaws.com/role-arn"], "") != ""
}

# METADATA
# title: No data access for node roles
# scope: rule
# description: |
#   Roles that EC2 nodes assume get no data-service access, managed or inline: serving
#   pods reach models and logs through their own IRSA role, not the node's.
# custom:
#   id: IDN-007
#   severity: high
#   message: "%s gives node role access to data: %s"
#   remediation: Remove the grant from the node role and give it to the workload's IRSA role.
deny contains result.finding(rego.metadata.rule(), grant, [grant.name, access]) if {
	some grant in input.resources
	some key in resources.links(grant)
	key in node_role_keys
	some access in data_grants(grant)
}

node_role_keys contains key if {
	some role in input.resources
	role.type == "aws:iam/role:Role"
	some s in resources.statements(resources.policy_doc(object.get(role.properties, "assumeRolePolicy", "{}")))
	"ec2.amazonaws.com" in resources.as_set(object.get(s, ["Principal", "Service"], []))
	some key in resources.targets(role)
}

data_grants(grant) := {arn} if {
	grant.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
	arn := object.get(grant.properties, "policyArn", "unset")
	data_policy(arn)
}

data_grants(grant) := {action |
	some action in allowed_actions(object.get(grant.properties, "policy", null))
	on_data_service(action)
} if {
	grant.type == "aws:iam/rolePolicy:RolePolicy"
}

data_policy("unset")

data_policy(arn) if {
	parts := split(arn, "/")
	some prefix in config.settings.data_access_policies
	startswith(parts[count(parts) - 1], prefix)
}

on_data_service("*")

on_data_service(action) if split(action, ":")[0] in config.settings.data_services

# METADATA
# title: No wildcard actions on data
# scope: rule
# description: IAM policies allow no "*" action and no service-wide wildcard on a data service.
# custom:
#   id: IDN-006
#   severity: high
#   message: "IAM policy %s allows wildcard action %s"
#   remediation: List the exact actions needed (e.g. s3:GetObject) instead of a wildcard.
deny contains result.finding(rego.metadata.rule(), r, [r.name, action]) if {
	some r in input.resources
	r.type in {"aws:iam/policy:Policy", "aws:iam/rolePolicy:RolePolicy", "aws:iam/userPolicy:UserPolicy"}
	some action in allowed_actions(object.get(r.properties, "policy", null))
	wildcard_on_data(action)
}

# A document that cannot be read is treated as allowing everything (fail closed).
allowed_actions(policy) := {"*"} if not resources.policy_doc(policy)

allowed_actions(policy) := {action |
	some s in resources.statements(doc)
	object.get(s, "Effect", "Allow") == "Allow"
	some action in resources.as_set(object.get(s, "Action", []))
} if {
	doc := resources.policy_doc(policy)
}

wildcard_on_data("*")

wildcard_on_data(action) if {
	parts := split(action, ":")
	parts[0] in config.settings.data_services
	contains(parts[1], "*")
}

# METADATA
# title: ElastiCache requires authentication
# scope: rule
# description: |
#   Replication groups require every client to authenticate: an AUTH token, or users of
#   a user group. Without it any pod that reaches the port reads and writes the queue.
# custom:
#   id: IDN-008
#   severity: high
#   message: "replication group %s accepts clients without authentication (authToken %s, %d user groups)"
#   remediation: Set authToken (kept in Secrets Manager) or userGroupIds; both need transit encryption.
deny contains result.finding(rego.metadata.rule(), r, [r.name, token_state(r.properties), count(groups)]) if {
	some r in input.resources
	r.type == "aws:elasticache/replicationGroup:ReplicationGroup"
	token_state(r.properties) != "set"
	groups := [g | some g in object.get(r.properties, "userGroupIds", []); is_string(g); g != ""]
	count(groups) == 0
}

# Never the token itself: only whether there is one.
token_state(p) := "set" if {
	is_string(p.authToken)
	p.authToken != ""
} else := "unset"

# METADATA
# title: DynamoDB access names its tables
# scope: rule
# description: |
#   An IAM statement that allows a DynamoDB action names each table it applies to by its
#   full ARN (an index of a named table too), never `*`, a wildcard table name or
#   NotResource: a role that reads one feature view's table must not read every table of
#   the account. (A wildcard action such as dynamodb:* is IDN-006's.)
# custom:
#   id: IDN-009
#   severity: high
#   message: "IAM policy %s allows %s on %s, not a named DynamoDB table"
#   remediation: List the table ARNs (arn:aws:dynamodb:<region>:<account>:table/<name>) the role needs.
deny contains result.finding(rego.metadata.rule(), r, [r.name, concat(", ", sort(actions)), target]) if {
	some r in input.resources
	r.type in {"aws:iam/policy:Policy", "aws:iam/rolePolicy:RolePolicy", "aws:iam/userPolicy:UserPolicy"}
	doc := resources.policy_doc(object.get(r.properties, "policy", null))
	some s in resources.statements(doc)
	object.get(s, "Effect", "Allow") == "Allow"
	actions := {a | some a in resources.as_set(object.get(s, "Action", [])); dynamodb_action(a)}
	count(actions) > 0
	some target in unnamed_tables(s)
}

dynamodb_action(action) if startswith(lower(action), "dynamodb:")

unnamed_tables(s) := {"NotResource"} if object.get(s, "NotResource", null) != null

unnamed_tables(s) := {res |
	some res in resources.as_set(object.get(s, "Resource", "unset"))
	not regex.match(`^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:[0-9]{12}:table/[A-Za-z0-9_.-]+(/index/[A-Za-z0-9_.-]+)?$`, res)
} if object.get(s, "NotResource", null) == null

# METADATA
# title: Service roles scoped to the stack's bucket and keys
# scope: rule
# description: |
#   The roles SageMaker and Lambda assume (execution roles of the models, the API's proxy
#   function) reach data only where the stack keeps it: every statement that allows an
#   action of a data service names its resources, never `*`, NotResource or a wildcard
#   bucket or key. S3 resources are buckets of the plan (a path under one may end in a
#   wildcard), KMS resources are key ARNs. Managed policies that grant data access are
#   refused on these roles too. (Wildcard actions are IDN-006's.)
# custom:
#   id: IDN-010
#   severity: high
#   message: "%s gives %s role %s %s on %s, not a bucket of the plan or a named key"
#   remediation: |
#     Name the model bucket (and its model's prefix) and the region's key ARN in the role's
#     inline policy; drop managed data-access policies from the role.
deny contains result.finding(rego.metadata.rule(), grant, [grant.name, service, role.name, what, target]) if {
	some grant in input.resources
	some role in service_roles
	grants_to(grant, role)
	service := role_service(role)
	some [what, target] in unscoped_grants(grant)
}

service_principals := {"sagemaker.amazonaws.com", "lambda.amazonaws.com"}

service_roles contains role if {
	some role in input.resources
	role.type == "aws:iam/role:Role"
	role_service(role) != ""
}

role_service(role) := concat(", ", sort({p |
	some s in resources.statements(resources.policy_doc(object.get(role.properties, "assumeRolePolicy", "{}")))
	some p in resources.as_set(object.get(s, ["Principal", "Service"], []))
	p in service_principals
})) if {
	role.type == "aws:iam/role:Role"
} else := ""

# A grant names its role by name: the role's own, or Pulumi's auto-name (the name, a dash,
# seven hex digits). When the name is still unknown in a preview, its dependencies decide.
grants_to(grant, role) if {
	grant.type in {"aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment"}
	named := object.get(grant.properties, "role", "")
	is_string(named)
	names_role(named, role)
}

grants_to(grant, role) if {
	grant.type in {"aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment"}
	object.get(grant.properties, "role", "") == unknown
	role.urn in object.get(grant, "dependencies", [])
}

# The placeholder `pulumi preview` writes for a value not known until the update.
unknown := "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

names_role(named, role) if named in (resources.ref_names(role) | {object.get(role.properties, "name", "")})

names_role(named, role) if regex.match(`^-[0-9a-f]{7}$`, trim_prefix(named, role.name))

unscoped_grants(grant) := {[arn, "its managed policy"] |
	arn := object.get(grant.properties, "policyArn", "unset")
	data_policy(arn)
} if {
	grant.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
}

unscoped_grants(grant) := {["every action (unreadable policy)", "*"]} if {
	grant.type == "aws:iam/rolePolicy:RolePolicy"
	not resources.policy_doc(object.get(grant.properties, "policy", null))
}

unscoped_grants(grant) := {[concat(", ", sort(actions)), target] |
	some s in resources.statements(doc)
	object.get(s, "Effect", "Allow") == "Allow"
	actions := {a | some a in resources.as_set(object.get(s, "Action", [])); on_data_service(a)}
	count(actions) > 0
	some target in unscoped_resources(s)
} if {
	grant.type == "aws:iam/rolePolicy:RolePolicy"
	doc := resources.policy_doc(object.get(grant.properties, "policy", null))
}

unscoped_resources(s) := {"NotResource"} if object.get(s, "NotResource", null) != null

unscoped_resources(s) := {res |
	some res in resources.as_set(object.get(s, "Resource", "unset"))
	not scoped_resource(res)
} if object.get(s, "NotResource", null) == null

plan_buckets contains b.properties.bucket if {
	some b in input.resources
	b.type in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}
	is_string(b.properties.bucket)
}

scoped_resource(res) if {
	m := regex.find_all_string_submatch_n(`^arn:aws[a-z-]*:s3:::([a-z0-9.-]+)(?:/.*)?$`, res, 1)
	count(m) == 1
	m[0][1] in plan_buckets
}

scoped_resource(res) if regex.match(`^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$`, res)

# Other data services (DynamoDB tables are IDN-009's): an ARN without a wildcard.
scoped_resource(res) if {
	startswith(res, "arn:")
	not contains(res, "*")
	not regex.match(`^arn:aws[a-z-]*:(s3|kms):`, res)
}

# METADATA
# title: No role anyone may assume
# scope: rule
# description: |
#   A role's trust policy never lets any principal assume it ("*", or {"AWS": "*"}) unless a
#   condition narrows who (an account, an organisation, a source).
# custom:
#   id: IDN-011
#   severity: critical
#   message: "role %s may be assumed by any principal (%v) without a condition"
#   remediation: Name the trusted accounts, roles or services, or add a Condition that restricts the caller.
deny contains result.finding(rego.metadata.rule(), r, [r.name, who]) if {
	some r in input.resources
	r.type == "aws:iam/role:Role"
	some s in resources.statements(resources.policy_doc(object.get(r.properties, "assumeRolePolicy", "{}")))
	object.get(s, "Effect", "Allow") == "Allow"
	who := object.get(s, "Principal", "unset")
	anyone(who)
	count(object.get(s, "Condition", {})) == 0
}

anyone("*")

anyone(principal) if "*" in resources.as_set(object.get(principal, "AWS", []))

# METADATA
# title: No cluster-admin or anonymous bindings
# scope: rule
# description: |
#   No RoleBinding or ClusterRoleBinding grants cluster-admin, and none binds the anonymous
#   user or the unauthenticated group: an admin is made outside the stacks, on purpose.
# custom:
#   id: IDN-012
#   severity: critical
#   message: "%s %s binds %s"
#   remediation: Bind a role that grants only what the subject needs, to named, authenticated subjects.
deny contains result.finding(rego.metadata.rule(), b, [resources.kind(b), resources.k8s_name(b), what]) if {
	some b in input.resources
	resources.kind(b) in {"RoleBinding", "ClusterRoleBinding"}
	some what in risky_binding(b)
}

risky_binding(b) := admin | anonymous if {
	admin := {"the cluster-admin role" | object.get(b.properties, ["roleRef", "name"], "") == "cluster-admin"}
	anonymous := {sprintf("subject %s", [name]) |
		some s in object.get(b.properties, "subjects", [])
		name := object.get(s, "name", "")
		name in {"system:anonymous", "system:unauthenticated"}
	}
}

# METADATA
# title: Token issuers and keys over HTTPS
# scope: rule
# description: |
#   A RequestAuthentication's issuer and JWKS URI are https: a key set fetched over plain HTTP
#   can be swapped in transit, and with it every token the mesh accepts.
# custom:
#   id: IDN-013
#   severity: critical
#   message: "RequestAuthentication %s takes %s %s over plain HTTP"
#   remediation: Serve the issuer and its JWKS over https and name them so.
deny contains result.finding(rego.metadata.rule(), ra, [resources.k8s_name(ra), field, url]) if {
	some ra in resources.of_kind(input.resources, "RequestAuthentication")
	some rule in object.get(ra.properties, ["spec", "jwtRules"], [])
	some field in ["issuer", "jwksUri"]
	url := object.get(rule, field, "")
	startswith(lower(url), "http://")
}
