package encryption.in_transit_test

import data.encryption.in_transit
import data.lib.testing_test as t

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models"})

policy(doc) := t.resource("aws:s3/bucketPolicy:BucketPolicy", "tls", {"bucket": "models", "policy": doc})

deny_plain := {"Statement": [{"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}

test_tls_only_passing if {
	in_transit.deny == set() with input as t.plan([bucket, policy(json.marshal(deny_plain))])
}

test_tls_only_object_policy_passing if {
	in_transit.deny == set() with input as t.plan([bucket, policy(deny_plain)])
}

test_tls_only_violating if {
	allow := {"Statement": {"Effect": "Allow", "Action": "s3:GetObject"}}
	t.brief(in_transit.deny) == {[
		"ENC-010", "high", bucket.urn,
		"bucket models has no policy denying non-TLS requests (1 bucket policies found)",
	]} with input as t.plan([bucket, policy(json.marshal(allow))])
}

test_tls_only_missing_field if {
	t.brief(in_transit.deny) == {[
		"ENC-010", "high", bucket.urn,
		"bucket models has no policy denying non-TLS requests (0 bucket policies found)",
	]} with input as t.plan([bucket])
}

https := {"port": {"number": 443, "protocol": "HTTPS"}, "tls": {"mode": "SIMPLE", "credentialName": "c"}}

gateway(servers) := t.k8s("Gateway", "gw", "istio-system", {"servers": servers})

test_gateway_tls_passing if {
	redirect := {"port": {"number": 80, "protocol": "HTTP"}, "tls": {"httpsRedirect": true}}
	in_transit.deny == set() with input as t.plan([gateway([https, redirect])])
}

test_gateway_tls_violating if {
	g := gateway([https, {"port": {"number": 80, "protocol": "HTTP"}}])
	t.brief(in_transit.deny) == {[
		"ENC-011", "high", g.urn,
		"gateway gw: server on port 80 serves plain HTTP",
	]} with input as t.plan([g])
}

test_gateway_tls_missing_field if {
	g := gateway([{"port": {"number": 443, "protocol": "HTTPS"}}])
	t.brief(in_transit.deny) == {[
		"ENC-011", "high", g.urn,
		"gateway gw: no HTTPS server on 443",
	]} with input as t.plan([g])
}

replication_group(props) := t.resource("aws:elasticache/replicationGroup:ReplicationGroup", "queue", props)

test_elasticache_tls_passing if {
	g := replication_group({"transitEncryptionEnabled": true, "transitEncryptionMode": "required"})
	in_transit.deny == set() with input as t.plan([g])
}

test_elasticache_tls_mode_unset_passing if {
	in_transit.deny == set() with input as t.plan([replication_group({"transitEncryptionEnabled": "true"})])
}

test_elasticache_tls_violating if {
	g := replication_group({"transitEncryptionEnabled": true, "transitEncryptionMode": "preferred"})
	t.brief(in_transit.deny) == {[
		"ENC-012", "high", g.urn,
		"replication group queue admits plain connections (transitEncryptionEnabled true, mode preferred)",
	]} with input as t.plan([g])
}

test_elasticache_tls_missing_field if {
	g := replication_group({})
	t.brief(in_transit.deny) == {[
		"ENC-012", "high", g.urn,
		"replication group queue admits plain connections (transitEncryptionEnabled unset, mode unset)",
	]} with input as t.plan([g])
}

http_domain(policy) := t.resource("aws:apigatewayv2/domainName:DomainName", "api", {
	"domainName": "api.example.ae",
	"domainNameConfiguration": {"certificateArn": "arn:aws:acm:me-central-1:1:certificate/c", "securityPolicy": policy},
})

rest_domain(props) := t.resource("aws:apigateway/domainName:DomainName", "rest", props)

test_api_domain_tls_passing if {
	in_transit.deny == set() with input as t.plan([
		http_domain("TLS_1_2"),
		rest_domain({"securityPolicy": "TLS_1_2"}),
		rest_domain({"securityPolicy": "SecurityPolicy_TLS13_1_3_2025_09"}),
	])
}

test_api_domain_tls_violating if {
	d := rest_domain({"securityPolicy": "TLS_1_0"})
	t.brief(in_transit.deny) == {[
		"ENC-014", "high", d.urn, "API domain rest allows TLS older than 1.2 (securityPolicy TLS_1_0)",
	]} with input as t.plan([d, http_domain("TLS_1_2")])
}

test_api_domain_tls_missing_field if {
	h := t.resource("aws:apigatewayv2/domainName:DomainName", "api", {"domainNameConfiguration": {}})
	r := rest_domain({})
	t.brief(in_transit.deny) == {
		["ENC-014", "high", h.urn, "API domain api allows TLS older than 1.2 (securityPolicy unset)"],
		["ENC-014", "high", r.urn, "API domain rest allows TLS older than 1.2 (securityPolicy unset)"],
	} with input as t.plan([h, r])
}

rule(spec) := t.k8s("DestinationRule", "iris", "banking", spec)

test_mesh_tls_passing if {
	mutual := rule({"host": "iris", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}, "subsets": [{"name": "v1"}]})
	in_transit.deny == set() with input as t.plan([mutual])
}

test_mesh_tls_violating if {
	off := rule({
		"host": "iris",
		"trafficPolicy": {
			"tls": {"mode": "DISABLE"},
			"portLevelSettings": [{"port": {"number": 8080}, "tls": {"mode": "disable"}}],
		},
		"subsets": [{"name": "v2", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}],
	})
	t.brief(in_transit.deny) == {
		["ENC-016", "high", off.urn, "DestinationRule iris disables TLS at trafficPolicy"],
		["ENC-016", "high", off.urn, "DestinationRule iris disables TLS at port 8080"],
		["ENC-016", "high", off.urn, "DestinationRule iris disables TLS at subset v2"],
	} with input as t.plan([off])
}

test_mesh_tls_missing_field if {
	# No trafficPolicy: the mesh's mutual TLS applies.
	in_transit.deny == set() with input as t.plan([rule({"host": "iris"})])
}
