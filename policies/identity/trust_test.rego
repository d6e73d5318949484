package identity.access_test

# The trust, binding and issuer rules (IDN-011..013), apart from access_test.rego for its length.

import data.identity.access
import data.lib.testing_test as t

strict_mtls := t.k8s("PeerAuthentication", "default", "istio-system", {"mtls": {"mode": "STRICT"}})

jwt_rules := t.k8s("RequestAuthentication", "jwt", "istio-system", {"jwtRules": [{"issuer": "https://i"}]})

assumable(statement) := t.resource("aws:iam/role:Role", "open", {"assumeRolePolicy": json.marshal({
	"Version": "2012-10-17",
	"Statement": [object.union({"Effect": "Allow", "Action": "sts:AssumeRole"}, statement)],
})})

test_trust_anyone_passing if {
	service := assumable({"Principal": {"Service": "ec2.amazonaws.com"}})
	narrowed := object.union(
		assumable({"Principal": {"AWS": "*"}, "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-1"}}}),
		{"urn": "u-narrowed"},
	)
	access.deny == set() with input as t.plan([service, narrowed])
}

test_trust_anyone_violating if {
	star := assumable({"Principal": "*"})
	aws_star := object.union(assumable({"Principal": {"AWS": ["arn:aws:iam::1:root", "*"]}}), {"urn": "u2"})
	t.brief(access.deny) == {
		["IDN-011", "critical", star.urn, "role open may be assumed by any principal (*) without a condition"],
		[
			"IDN-011", "critical", "u2",
			concat("", [
				"role open may be assumed by any principal ",
				"({\"AWS\": [\"arn:aws:iam::1:root\", \"*\"]}) without a condition",
			]),
		],
	} with input as t.plan([star, aws_star])
}

test_trust_anyone_missing_field if {
	# No Principal at all is no grant to anyone.
	access.deny == set() with input as t.plan([assumable({})])
}

bound(kind, role, subjects) := object.union(t.k8s(kind, "b", "banking", {}), {"properties": {
	"kind": kind, "metadata": {"name": "b", "namespace": "banking"},
	"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
	"subjects": subjects,
}})

test_bindings_passing if {
	viewer := bound("RoleBinding", "view", [{"kind": "Group", "name": "banking-viewers"}])
	access.deny == set() with input as t.plan([jwt_rules, strict_mtls, viewer])
}

test_bindings_violating if {
	admin := bound("ClusterRoleBinding", "cluster-admin", [{"kind": "Group", "name": "ops"}])
	anonymous := [{"kind": "User", "name": "system:anonymous"}]
	anon := object.union(bound("RoleBinding", "view", anonymous), {"urn": "u-anon"})
	t.brief(access.deny) == {
		["IDN-012", "critical", admin.urn, "ClusterRoleBinding b binds the cluster-admin role"],
		["IDN-012", "critical", "u-anon", "RoleBinding b binds subject system:anonymous"],
	} with input as t.plan([jwt_rules, strict_mtls, admin, anon])
}

test_bindings_missing_field if {
	# No roleRef, no subjects: binds nothing.
	access.deny == set() with input as t.plan([jwt_rules, strict_mtls, t.k8s("RoleBinding", "b", "banking", {})])
}

issuer(rules) := t.k8s("RequestAuthentication", "jwt", "istio-system", {"jwtRules": rules})

test_https_issuer_passing if {
	https := issuer([{"issuer": "https://idp.example", "jwksUri": "https://idp.example/certs"}])
	access.deny == set() with input as t.plan([strict_mtls, https])
}

test_https_issuer_violating if {
	plain := issuer([{"issuer": "HTTP://idp.example", "jwksUri": "http://idp.example/certs"}])
	t.brief(access.deny) == {
		[
			"IDN-013", "critical", plain.urn,
			"RequestAuthentication jwt takes issuer HTTP://idp.example over plain HTTP",
		],
		[
			"IDN-013", "critical", plain.urn,
			"RequestAuthentication jwt takes jwksUri http://idp.example/certs over plain HTTP",
		],
	} with input as t.plan([strict_mtls, plain])
}

test_https_issuer_missing_field if {
	# No jwksUri: Istio discovers it from the https issuer.
	access.deny == set() with input as t.plan([strict_mtls, issuer([{"issuer": "https://idp.example"}])])
}
