# METADATA
# title: Network exposure
# description: Nothing is open to the internet except the gateway's HTTPS port.
package network.exposure

import data.lib.resources
import data.lib.result

open_cidrs := {"0.0.0.0/0", "::/0"}

# METADATA
# title: EKS endpoint not public
# scope: rule
# description: The EKS API endpoint is private, or public only to listed CIDRs that exclude the internet.
# custom:
#   id: NET-001
#   severity: critical
#   message: "EKS cluster %s exposes its API endpoint publicly to %s"
#   remediation: Set vpcConfig.endpointPublicAccess to false, or list only the operator CIDRs in publicAccessCidrs.
deny contains result.finding(rego.metadata.rule(), r, [r.name, resources.describe(exposed)]) if {
	some r in input.resources
	r.type == "aws:eks/cluster:Cluster"
	vpc := object.get(r.properties, "vpcConfig", {})

	# AWS defaults: a public endpoint, open to 0.0.0.0/0.
	resources.truthy(object.get(vpc, "endpointPublicAccess", true))
	cidrs := {c | some c in object.get(vpc, "publicAccessCidrs", ["0.0.0.0/0"])}
	exposed := cidrs & open_cidrs
	count(exposed) > 0
}

# METADATA
# title: No ingress from the internet
# scope: rule
# description: Security groups admit 0.0.0.0/0 or ::/0 only on port 443 of the gateway's group.
# custom:
#   id: NET-002
#   severity: critical
#   message: "security group %s admits %s on ports %v-%v"
#   remediation: Restrict the rule to the VPC or load-balancer CIDRs; only the gateway may take 443 from anywhere.
deny contains result.finding(rego.metadata.rule(), r, [r.name, cidr, from, to]) if {
	some r in input.resources
	some rule in ingress_rules(r)
	some cidr in (rule.cidrs & open_cidrs)
	from := rule.fromPort
	to := rule.toPort
	not gateway_https(r, from, to)
}

ingress_rules(r) := [ports(i) |
	some i in object.get(r.properties, "ingress", [])
] if {
	r.type == "aws:ec2/securityGroup:SecurityGroup"
}

ingress_rules(r) := [ports(r.properties)] if {
	r.type == "aws:ec2/securityGroupRule:SecurityGroupRule"
	r.properties.type == "ingress"
}

ingress_rules(r) := [ports(r.properties)] if {
	r.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
}

ports(p) := {
	"cidrs": cidrs(p),
	"fromPort": object.get(p, "fromPort", "unset"),
	"toPort": object.get(p, "toPort", "unset"),
}

cidrs(p) := {c |
	some key in ["cidrBlocks", "ipv6CidrBlocks", "cidrIpv4", "cidrIpv6"]
	some c in resources.as_set(object.get(p, key, []))
}

gateway_https(r, from, to) if {
	from == 443
	to == 443
	contains(lower(r.name), "gateway")
}

# METADATA
# title: Bucket public access blocked
# scope: rule
# description: Every bucket has a public access block with all four settings on.
# custom:
#   id: NET-003
#   severity: critical
#   message: "bucket %s does not block public access (settings off or missing: %s)"
#   remediation: Add a BucketPublicAccessBlock with all four block and ignore settings true.
deny contains result.finding(rego.metadata.rule(), b, [b.name, resources.describe(missing)]) if {
	some b in input.resources
	b.type in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}
	missing := block_gaps(b, blocks_on, block_settings)
	count(missing) > 0
}

block_settings := {"blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"}

# [key, setting] for each setting switched on, by what the public access block points at.
blocks_on contains [key, s] if {
	some p in input.resources
	p.type == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
	some s in block_settings
	resources.truthy(object.get(p.properties, s, false))
	some key in resources.links(p)
}

block_gaps(b, on, settings) := settings - {s |
	some key in resources.targets(b)
	some s in settings
	[key, s] in on
}
