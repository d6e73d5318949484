# METADATA
# title: Network exposure
# description: Nothing is open to the internet except the public model API's TLS port on its load balancer.
package network.exposure

import data.lib.config
import data.lib.resources
import data.lib.result

open_cidrs := {"0.0.0.0/0", "::/0"}

# The open CIDRs that `cidrs` add up to, per address family: {"0.0.0.0/1", "128.0.0.0/1"} is the
# IPv4 internet as surely as 0.0.0.0/0. (Each family merged apart: net.cidr_merge folds a mixed
# list into the IPv6 space.)
internet(cidrs) := {m |
	some family in [{c | some c in cidrs; not contains(c, ":")}, {c | some c in cidrs; contains(c, ":")}]
	count(family) > 0
	some m in net.cidr_merge(family)
	m in open_cidrs
}

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
	exposed := internet(cidrs)
	count(exposed) > 0
}

# METADATA
# title: No ingress from the internet
# scope: rule
# description: |
#   Security groups admit 0.0.0.0/0 or ::/0 only on exactly port 443, and only on groups
#   that nothing uses but internet-facing load balancers whose every listener is TLS (or
#   HTTPS) on 443: the public model API. Groups and their users are joined through the
#   plan's URNs and ids. CIDRs that add up to the internet count as it, whether listed in one
#   rule or spread over a group's rules for the same ports.
# custom:
#   id: NET-002
#   severity: critical
#   message: "security group %s admits %s on ports %v-%v"
#   remediation: |
#     Restrict the rule to the VPC or load-balancer CIDRs; only a group used solely by
#     internet-facing load balancers with TLS listeners on 443 may take 443 from anywhere.
deny contains result.finding(rego.metadata.rule(), r, [r.name, cidr, from, to]) if {
	some r in input.resources
	some rule in ingress_rules(r)
	some cidr in internet(rule.cidrs)
	from := rule.fromPort
	to := rule.toPort
	not public_api_port(r, from, to)
}

# A group's inline rules, each with the CIDRs of every inline rule for the same ports.
ingress_rules(r) := [object.union(e, {"cidrs": same_ports(entries, e)}) | some e in entries] if {
	r.type == "aws:ec2/securityGroup:SecurityGroup"
	entries := [ports(i) | some i in object.get(r.properties, "ingress", [])]
}

# A rule resource, with the CIDRs of every rule resource for the same group and ports.
ingress_rules(r) := [object.union(e, {"cidrs": together})] if {
	standalone_ingress(r)
	e := ports(r.properties)
	together := e.cidrs | object.get(rule_cidrs, rule_key(r, e), set())
}

same_ports(entries, e) := union({x.cidrs | some x in entries; x.fromPort == e.fromPort; x.toPort == e.toPort})

standalone_ingress(r) if {
	r.type == "aws:ec2/securityGroupRule:SecurityGroupRule"
	r.properties.type == "ingress"
}

standalone_ingress(r) if r.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"

# The group a rule resource names (its id, or "" when computed) and its ports, as one string (an
# array key would be read by object.get as a path).
rule_key(r, e) := sprintf("%v|%v|%v", [object.get(r.properties, "securityGroupId", ""), e.fromPort, e.toPort])

# The CIDRs of all rule resources by group and ports, built once for the plan.
rule_cidrs[key] contains c if {
	some r in input.resources
	standalone_ingress(r)
	e := ports(r.properties)
	key := rule_key(r, e)
	some c in e.cidrs
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

group_types := {"aws:ec2/securityGroup:SecurityGroup", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"}

rule_types := {
	"aws:ec2/securityGroupRule:SecurityGroupRule",
	"aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
	"aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
}

lb_types := {"aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"}

listener_types := {"aws:lb/listener:Listener", "aws:alb/listener:Listener"}

# World ingress on 443 is the public API: every group the rule belongs to is an edge group.
public_api_port(r, 443, 443) if {
	groups := rule_groups(r)
	count(groups) > 0
	every g in groups {
		edge_group(g)
	}
}

rule_groups(r) := {r} if r.type == "aws:ec2/securityGroup:SecurityGroup"

# A rule resource belongs to the groups it names (securityGroupId) or depends on; when
# that is more than one, each must qualify (fail closed).
rule_groups(r) := {g |
	some key in refs(r, [object.get(r.properties, "securityGroupId", "")])
	some i in object.get(groups_by_key, key, set())
	g := input.resources[i]
} if {
	r.type in rule_types
}

# Indexes of positions in input.resources by the keys that refer to them, each built once
# for the whole plan (and read through object.get, which evaluates a rule in full once,
# where a lookup by key would scan the plan again each time: quadratic in the plan's size).
groups_by_key[key] contains i if {
	some i, g in input.resources
	g.type in group_types
	some key in resources.targets(g)
}

# A group used by something, and only by internet-facing load balancers with TLS listeners on 443.
edge_group(g) if {
	users := {i | some key in resources.targets(g); some i in object.get(group_users, key, set())}
	count(users) > 0
	every i in users {
		public_tls_balancer(input.resources[i])
	}
}

# Whatever depends on a group or names its id, except rules and other groups (which refer
# to it as a peer), counts as using it: an unknown user fails closed.
group_users[key] contains i if {
	some i, u in input.resources
	not u.type in group_types
	not u.type in rule_types
	some key in refs(u, group_ids(json.marshal(u.properties)))
	object.get(groups_by_key, key, false)
}

# The security group ids named as whole string values in serialized properties (one regular
# expression per resource, and only where "sg-" occurs at all).
group_ids(text) := {trim(id, `"`) | some id in regex.find_n(`"sg-[0-9a-f]{8,17}"`, text, -1)} if {
	contains(text, `"sg-`)
} else := set()

public_tls_balancer(lb) if {
	lb.type in lb_types
	not resources.truthy(object.get(lb.properties, "internal", false))
	found := {i | some key in balancer_keys(lb); some i in object.get(listeners_by_key, key, set())}
	count(found) > 0
	every i in found {
		tls_443(input.resources[i].properties)
	}
}

balancer_keys(lb) := resources.targets(lb) | {lb.properties.arn | is_string(lb.properties.arn)}

listeners_by_key[key] contains i if {
	some i, l in input.resources
	l.type in listener_types
	some key in refs(l, [object.get(l.properties, "loadBalancerArn", "")])
}

# The URNs a resource depends on and the ids or ARNs it names.
refs(r, named) := {d | some d in object.get(r, "dependencies", [])} | {n | some n in named; is_string(n); n != ""}

tls_443(listener) if {
	object.get(listener, "port", "unset") in {443, "443"}
	upper(object.get(listener, "protocol", "unset")) in {"TLS", "HTTPS"}
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

# METADATA
# title: ElastiCache in the stack's subnets
# scope: rule
# description: |
#   Replication groups sit in a subnet group of the stack (its private subnets) behind
#   security groups of their own; without either, ElastiCache places them in the default
#   VPC or behind its default security group.
# custom:
#   id: NET-004
#   severity: high
#   message: "replication group %s is not placed in the stack's network (subnetGroupName %v, %d security groups)"
#   remediation: |
#     Set subnetGroupName to a subnet group of the private subnets and securityGroupIds to a
#     group that admits only the cluster's nodes.
deny contains result.finding(rego.metadata.rule(), r, [r.name, subnets, count(groups)]) if {
	some r in input.resources
	r.type == "aws:elasticache/replicationGroup:ReplicationGroup"
	subnets := object.get(r.properties, "subnetGroupName", "unset")
	groups := [g | some g in object.get(r.properties, "securityGroupIds", []); is_string(g); g != ""]
	not placed_in_network(r.properties, groups)
}

placed_in_network(p, groups) if {
	is_string(p.subnetGroupName)
	p.subnetGroupName != ""
	count(groups) > 0
}

# METADATA
# title: SageMaker models in the VPC, network-isolated
# scope: rule
# description: |
#   A SageMaker model runs in the stack's private subnets behind its own security groups
#   (vpcConfig), and with network isolation, so the container can make no outbound call:
#   SageMaker alone fetches the model data and the image through the VPC endpoints.
# custom:
#   id: NET-005
#   severity: high
#   message: "SageMaker model %s: %s"
#   remediation: Set vpcConfig (private subnets, the model's security group) and enableNetworkIsolation true.
deny contains result.finding(rego.metadata.rule(), r, [r.name, problem]) if {
	some r in input.resources
	r.type == "aws:sagemaker/model:Model"
	some problem in model_network_problems(r.properties)
}

model_network_problems(p) := {problem |
	some problem, ok in {
		"no vpcConfig with subnets and security groups": in_vpc(object.get(p, "vpcConfig", {}), "subnets"),
		sprintf("enableNetworkIsolation is %v", [object.get(p, "enableNetworkIsolation", "unset")]): isolated(p),
	}
	not ok
}

# Both lists name at least one value; used as a boolean value (true, or false when not).
in_vpc(vpc, subnets_key) if {
	count(non_empty(object.get(vpc, subnets_key, []))) > 0
	count(non_empty(object.get(vpc, "securityGroupIds", []))) > 0
} else := false

isolated(p) if resources.truthy(object.get(p, "enableNetworkIsolation", false))

else := false

non_empty(values) := {v | some v in values; is_string(v); v != ""}

# METADATA
# title: Lambda functions in the VPC
# scope: rule
# description: |
#   A Lambda function runs in the stack's private subnets behind a security group of its
#   own (vpcConfig), so it reaches SageMaker through the VPC endpoint and the stack's egress
#   controls apply to it, not from Lambda's shared network.
# custom:
#   id: NET-006
#   severity: high
#   message: "Lambda function %s is not placed in the stack's VPC (vpcConfig %s)"
#   remediation: Set vpcConfig.subnetIds to the private subnets and securityGroupIds to the function's group.
deny contains result.finding(rego.metadata.rule(), r, [r.name, json.marshal(vpc)]) if {
	some r in input.resources
	r.type == "aws:lambda/function:Function"
	not in_vpc(object.get(r.properties, "vpcConfig", {}), "subnetIds")
	vpc := object.get(r.properties, "vpcConfig", null)
}

# METADATA
# title: No unauthenticated API routes
# scope: rule
# description: |
#   Every API Gateway route demands authorization (a JWT, IAM or custom authorizer), except
#   the health routes settings.public_routes names. An HTTP API route's authorizationType
#   defaults to NONE; a REST API method's authorization NONE is open whatever its path.
# custom:
#   id: NET-007
#   severity: critical
#   message: "API route %s (%s) is open without authorization (%s)"
#   remediation: Set authorizationType JWT and the API's JWT authorizer on the route (authorization on REST methods).
deny contains result.finding(rego.metadata.rule(), r, [r.name, route, found]) if {
	some r in input.resources
	some [route, found] in open_routes(r)
}

open_routes(r) := {[route, found]} if {
	r.type == "aws:apigatewayv2/route:Route"
	route := object.get(r.properties, "routeKey", "unset")
	found := object.get(r.properties, "authorizationType", "NONE")
	upper(found) == "NONE"
	not route in {k | some k in config.settings.public_routes}
}

open_routes(r) := {[route, found]} if {
	r.type == "aws:apigateway/method:Method"
	route := object.get(r.properties, "httpMethod", "unset")
	found := object.get(r.properties, "authorization", "unset")
	not upper(found) in {"AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS"}
}

# METADATA
# title: IMDSv2 with hop limit 1
# scope: rule
# description: |
#   Every launch template requires session tokens for the instance metadata service
#   (httpTokens required; AWS's default is optional, IMDSv1) with a response hop limit of 1,
#   so a pod cannot reach the node's credentials; or turns the service off.
# custom:
#   id: NET-008
#   severity: high
#   message: "launch template %s allows %s"
#   remediation: Set metadataOptions httpTokens "required" and httpPutResponseHopLimit 1.
deny contains result.finding(rego.metadata.rule(), r, [r.name, weakness]) if {
	some r in input.resources
	r.type == "aws:ec2/launchTemplate:LaunchTemplate"
	options := object.get(r.properties, "metadataOptions", {})
	object.get(options, "httpEndpoint", "enabled") != "disabled"
	some weakness in imds_weaknesses(options)
}

imds_weaknesses(options) := tokens | hops if {
	tokens := {"IMDSv1 (httpTokens optional)" | object.get(options, "httpTokens", "optional") != "required"}
	hops := {sprintf("a hop limit of %v", [n]) |
		n := object.get(options, "httpPutResponseHopLimit", 1)
		n != 1
	}
}

# METADATA
# title: No public IPs on nodes
# scope: rule
# description: |
#   Nodes and instances take no public address: no launch template interface or instance
#   associates one, and no subnet gives one to whatever starts in it.
# custom:
#   id: NET-009
#   severity: high
#   message: "%s gives instances a public IP (%s)"
#   remediation: |
#     Leave associatePublicIpAddress and mapPublicIpOnLaunch false; reach out through NAT,
#     in through the load balancer.
deny contains result.finding(rego.metadata.rule(), r, [r.name, setting]) if {
	some r in input.resources
	some setting in public_ip_settings(r)
}

public_ip_settings(r) := {"networkInterfaces[].associatePublicIpAddress" |
	some i in object.get(r.properties, "networkInterfaces", [])
	resources.truthy(object.get(i, "associatePublicIpAddress", false))
} if r.type == "aws:ec2/launchTemplate:LaunchTemplate"

public_ip_settings(r) := {"associatePublicIpAddress"} if {
	r.type == "aws:ec2/instance:Instance"
	resources.truthy(object.get(r.properties, "associatePublicIpAddress", false))
}

public_ip_settings(r) := {"mapPublicIpOnLaunch"} if {
	r.type == "aws:ec2/subnet:Subnet"
	resources.truthy(object.get(r.properties, "mapPublicIpOnLaunch", false))
}

# METADATA
# title: Default security group adopted and empty
# scope: rule
# description: |
#   Each VPC's default security group, which AWS creates allowing all traffic between its
#   members and all egress, is adopted by the plan (aws.ec2.DefaultSecurityGroup) with no
#   rules, so nothing that lands in it by default can talk.
# custom:
#   id: NET-010
#   severity: medium
#   message: "%s: %s"
#   remediation: Adopt each VPC's default group with aws.ec2.DefaultSecurityGroup and no ingress or egress.
deny contains result.finding(rego.metadata.rule(), r, [r.name, problem]) if {
	some r in input.resources
	some problem in default_group_problems(r)
}

default_group_problems(r) := {"the default security group keeps rules"} if {
	r.type == "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
	count(object.get(r.properties, "ingress", [])) + count(object.get(r.properties, "egress", [])) > 0
}

default_group_problems(r) := {"its default security group is not adopted"} if {
	r.type == "aws:ec2/vpc:Vpc"
	not adopted(r)
}

adopted(vpc) if {
	some g in input.resources
	g.type == "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
	vpc_of(g, vpc)
}

vpc_of(g, vpc) if vpc.urn in object.get(g, "dependencies", [])

vpc_of(g, vpc) if g.properties.vpcId == vpc.id
