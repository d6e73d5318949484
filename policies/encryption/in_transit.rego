# METADATA
# title: Encryption in transit
# description: Buckets refuse plain HTTP and the gateway terminates TLS.
package encryption.in_transit

import data.lib.resources
import data.lib.result

buckets := [r | some r in input.resources; r.type in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}]

bucket_policies := [r | some r in input.resources; r.type == "aws:s3/bucketPolicy:BucketPolicy"]

# METADATA
# title: TLS-only bucket policy
# scope: rule
# description: Every bucket has a policy denying requests where aws:SecureTransport is false.
# custom:
#   id: ENC-010
#   severity: high
#   message: "bucket %s has no policy denying non-TLS requests (%d bucket policies found)"
#   remediation: Attach a BucketPolicy with a Deny statement on Condition Bool aws:SecureTransport "false".
deny contains result.finding(rego.metadata.rule(), b, [b.name, count(policies)]) if {
	some b in buckets
	not tls_only_target(b)
	policies := {p.urn | some p in bucket_policies; some key in resources.links(p); key in resources.targets(b)}
}

tls_only_target(b) if {
	some key in resources.targets(b)
	key in tls_only_keys
}

tls_only_keys contains key if {
	some p in bucket_policies
	tls_only([p])
	some key in resources.links(p)
}

tls_only(policies) if {
	some p in policies
	some s in resources.statements(resources.policy_doc(p.properties.policy))
	s.Effect == "Deny"
	lower(sprintf("%v", [s.Condition.Bool["aws:SecureTransport"]])) in {"false", "[\"false\"]", "[false]"}
}

# METADATA
# title: TLS at the gateway
# scope: rule
# description: |
#   Istio Gateways serve HTTPS with a certificate on 443, and plain HTTP servers only
#   redirect to HTTPS.
# custom:
#   id: ENC-011
#   severity: high
#   message: "gateway %s: %s"
#   remediation: Serve port 443 with tls.mode SIMPLE or MUTUAL and a credentialName; set tls.httpsRedirect on port 80.
deny contains result.finding(rego.metadata.rule(), g, [resources.k8s_name(g), problem]) if {
	some g in resources.of_kind(input.resources, "Gateway")
	some problem in gateway_problems(object.get(g.properties, ["spec", "servers"], []))
}

gateway_problems(servers) := {"no HTTPS server on 443"} if {
	not https_server(servers)
}

gateway_problems(servers) := {sprintf("server on port %v serves plain %v", [s.port.number, s.port.protocol]) |
	some s in servers
	upper(s.port.protocol) in {"HTTP", "HTTP2", "TCP"}
	not resources.truthy(object.get(s, ["tls", "httpsRedirect"], false))
} if {
	https_server(servers)
}

https_server(servers) if {
	some s in servers
	s.port.number == 443
	upper(s.port.protocol) == "HTTPS"
	s.tls.mode in {"SIMPLE", "MUTUAL"}
	s.tls.credentialName != ""
}

# METADATA
# title: ElastiCache TLS only
# scope: rule
# description: |
#   Replication groups encrypt in transit and refuse plain connections: transit encryption
#   on, in mode required (mode preferred still admits unencrypted clients).
# custom:
#   id: ENC-012
#   severity: high
#   message: "replication group %s admits plain connections (transitEncryptionEnabled %v, mode %v)"
#   remediation: Set transitEncryptionEnabled true and transitEncryptionMode required; clients use rediss://.
deny contains result.finding(rego.metadata.rule(), r, [r.name, enabled, mode]) if {
	some r in input.resources
	r.type == "aws:elasticache/replicationGroup:ReplicationGroup"
	enabled := object.get(r.properties, "transitEncryptionEnabled", "unset")
	mode := object.get(r.properties, "transitEncryptionMode", "unset")
	not tls_required(enabled, mode)
}

# Unset, the mode defaults to required when transit encryption is on at creation.
tls_required(enabled, mode) if {
	resources.truthy(enabled)
	mode in {"required", "unset"}
}

# METADATA
# title: TLS 1.2 or later on API custom domains
# scope: rule
# description: |
#   An API Gateway custom domain names a security policy of TLS 1.2 or later: HTTP APIs'
#   domainNameConfiguration.securityPolicy TLS_1_2, REST APIs' securityPolicy TLS_1_2 or an
#   enhanced SecurityPolicy_TLS12_/TLS13_ policy. Unset fails: the policy must be explicit.
# custom:
#   id: ENC-014
#   severity: high
#   message: "API domain %s allows TLS older than 1.2 (securityPolicy %v)"
#   remediation: Set the domain's securityPolicy to TLS_1_2 (or a SecurityPolicy_TLS13_ policy on a REST API).
deny contains result.finding(rego.metadata.rule(), r, [r.name, policy]) if {
	some r in input.resources
	some path in domain_policy_paths(r.type)
	policy := object.get(r.properties, path, "unset")
	not modern_tls(policy)
}

domain_policy_paths("aws:apigatewayv2/domainName:DomainName") := {["domainNameConfiguration", "securityPolicy"]}

domain_policy_paths("aws:apigateway/domainName:DomainName") := {["securityPolicy"]}

modern_tls(policy) if {
	is_string(policy)
	regex.match(`^(TLS_1_2|SecurityPolicy_TLS1[23]_[A-Za-z0-9_]+)$`, policy)
}

# METADATA
# title: Mesh TLS never disabled by a DestinationRule
# scope: rule
# description: |
#   No DestinationRule turns TLS off for its host or one of its subsets or ports
#   (trafficPolicy.tls.mode DISABLE): inside the mesh every hop is mutual TLS.
# custom:
#   id: ENC-016
#   severity: high
#   message: "DestinationRule %s disables TLS at %s"
#   remediation: Remove the tls block (ISTIO_MUTUAL is the mesh default) or set mode ISTIO_MUTUAL.
deny contains result.finding(rego.metadata.rule(), dr, [resources.k8s_name(dr), where]) if {
	some dr in resources.of_kind(input.resources, "DestinationRule")
	some [where, policy] in traffic_policies(dr.properties.spec)
	upper(object.get(policy, ["tls", "mode"], "")) == "DISABLE"
}

# Every traffic policy of a DestinationRule spec, with where it sits.
traffic_policies(spec) := {[w, p] |
	some [w, p] in array.concat(
		[["trafficPolicy", object.get(spec, "trafficPolicy", {})]],
		[[sprintf("subset %s", [object.get(s, "name", "?")]), object.get(s, "trafficPolicy", {})] |
			some s in object.get(spec, "subsets", [])
		],
	)
} | {[sprintf("port %v", [object.get(pl, ["port", "number"], "?")]), pl] |
	some pl in object.get(spec, ["trafficPolicy", "portLevelSettings"], [])
}
