package network.exposure_test

import data.lib.testing_test as t
import data.network.exposure

cluster(vpc) := t.resource("aws:eks/cluster:Cluster", "eks", {"vpcConfig": vpc})

test_endpoint_passing if {
	private := cluster({"endpointPublicAccess": false})
	operators := cluster({"endpointPublicAccess": true, "publicAccessCidrs": ["203.0.113.0/24"]})
	limited := object.union(operators, {"urn": "u2"})
	exposure.deny == set() with input as t.plan([private, limited])
}

test_endpoint_violating if {
	c := cluster({"endpointPublicAccess": true, "publicAccessCidrs": ["0.0.0.0/0", "10.0.0.0/8"]})
	t.brief(exposure.deny) == {[
		"NET-001", "critical", c.urn,
		"EKS cluster eks exposes its API endpoint publicly to 0.0.0.0/0",
	]} with input as t.plan([c])
}

test_endpoint_violating_halves if {
	c := cluster({"endpointPublicAccess": true, "publicAccessCidrs": ["0.0.0.0/1", "128.0.0.0/1"]})
	t.brief(exposure.deny) == {[
		"NET-001", "critical", c.urn,
		"EKS cluster eks exposes its API endpoint publicly to 0.0.0.0/0",
	]} with input as t.plan([c])
}

test_endpoint_missing_field if {
	c := t.resource("aws:eks/cluster:Cluster", "eks", {})
	t.brief(exposure.deny) == {[
		"NET-001", "critical", c.urn,
		"EKS cluster eks exposes its API endpoint publicly to 0.0.0.0/0",
	]} with input as t.plan([c])
}

group(name, ingress) := t.resource("aws:ec2/securityGroup:SecurityGroup", name, {"ingress": ingress})

world_443 := [{"fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}]

edge := group("edge", world_443)

# An internet-facing NLB using the edge group, and its listener, as the stacks build them.
nlb(props) := object.union(
	t.resource("aws:lb/loadBalancer:LoadBalancer", "nlb", object.union(
		{"loadBalancerType": "network", "internal": false, "securityGroups": ["sg-0123456789abcdef0"]},
		props,
	)),
	{"dependencies": [edge.urn]},
)

listener(props) := object.union(
	t.resource("aws:lb/listener:Listener", "https", object.union(
		{"port": 443, "protocol": "TLS", "certificateArn": "arn:aws:acm:me-central-1:1:certificate/c"},
		props,
	)),
	{"dependencies": [nlb({}).urn]},
)

check(resources) := found if {
	found := t.brief(exposure.deny) with input as t.plan(resources)
}

test_ingress_passing if {
	nodes := group("nodes", [{"fromPort": 0, "toPort": 65535, "cidrBlocks": ["10.0.0.0/16"]}])
	check([edge, nlb({}), listener({}), nodes]) == set()
}

test_ingress_passing_through_ids_and_rules if {
	# An export: the balancer names the group by id, the listener the balancer by ARN, and
	# the world rule is its own resource naming the group by id.
	g := object.union(group("edge", []), {"id": "sg-0123456789abcdef0"})
	rule := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "https", {
		"securityGroupId": "sg-0123456789abcdef0", "fromPort": 443, "toPort": 443, "cidrIpv6": "::/0",
	})
	arn := "arn:aws:elasticloadbalancing:me-central-1:1:loadbalancer/net/nlb/1"
	lb := object.union(nlb({"arn": arn}), {"dependencies": []})
	l := object.union(listener({"loadBalancerArn": lb.properties.arn}), {"dependencies": []})
	check([g, rule, lb, l]) == set()
}

test_ingress_violating if {
	g := group("nodes", [{"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}])
	rule := t.resource("aws:ec2/securityGroupRule:SecurityGroupRule", "ssh", {
		"type": "ingress", "fromPort": 443, "toPort": 443, "ipv6CidrBlocks": ["::/0"],
	})
	ingress := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "all", {
		"fromPort": 80, "toPort": 80, "cidrIpv4": "0.0.0.0/0",
	})
	check([g, rule, ingress]) == {
		["NET-002", "critical", g.urn, "security group nodes admits 0.0.0.0/0 on ports 22-22"],
		["NET-002", "critical", rule.urn, "security group ssh admits ::/0 on ports 443-443"],
		["NET-002", "critical", ingress.urn, "security group all admits 0.0.0.0/0 on ports 80-80"],
	}
}

test_ingress_passing_half_the_internet if {
	# One half of the address space is not the internet (and not this rule's business).
	half := group("half", [{"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/1"]}])
	check([half]) == set()
}

test_ingress_violating_cidrs_that_add_up_to_the_internet if {
	# In one rule, over a group's inline rules for the same ports, and over rule resources.
	one := group("one", [{"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/1", "128.0.0.0/1"]}])
	spread := group("split", [
		{"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/1"]},
		{"fromPort": 22, "toPort": 22, "ipv6CidrBlocks": ["::/1"]},
		{"fromPort": 22, "toPort": 22, "cidrBlocks": ["128.0.0.0/1"]},
		{"fromPort": 22, "toPort": 22, "ipv6CidrBlocks": ["8000::/1"]},
	])
	low := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "low", {
		"securityGroupId": "sg-1", "fromPort": 3389, "toPort": 3389, "cidrIpv4": "0.0.0.0/1",
	})
	high := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "high", {
		"securityGroupId": "sg-1", "fromPort": 3389, "toPort": 3389, "cidrIpv4": "128.0.0.0/1",
	})
	check([one, spread, low, high]) == {
		["NET-002", "critical", one.urn, "security group one admits 0.0.0.0/0 on ports 22-22"],
		["NET-002", "critical", spread.urn, "security group split admits 0.0.0.0/0 on ports 22-22"],
		["NET-002", "critical", spread.urn, "security group split admits ::/0 on ports 22-22"],
		["NET-002", "critical", low.urn, "security group low admits 0.0.0.0/0 on ports 3389-3389"],
		["NET-002", "critical", high.urn, "security group high admits 0.0.0.0/0 on ports 3389-3389"],
	}
}

test_ingress_passing_halves_on_other_ports_or_groups if {
	# Halves for different ports, or on different groups, open nothing to the whole internet.
	ports_apart := group("apart", [
		{"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/1"]},
		{"fromPort": 23, "toPort": 23, "cidrBlocks": ["128.0.0.0/1"]},
	])
	a := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "a", {
		"securityGroupId": "sg-a", "fromPort": 22, "toPort": 22, "cidrIpv4": "0.0.0.0/1",
	})
	b := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "b", {
		"securityGroupId": "sg-b", "fromPort": 22, "toPort": 22, "cidrIpv4": "128.0.0.0/1",
	})
	check([ports_apart, a, b]) == set()
}

test_ingress_violating_edge_group_other_port if {
	g := group("edge", array.concat(world_443, [{"fromPort": 80, "toPort": 80, "cidrBlocks": ["0.0.0.0/0"]}]))
	check([g, nlb({}), listener({})]) == {[
		"NET-002", "critical", g.urn,
		"security group edge admits 0.0.0.0/0 on ports 80-80",
	]}
}

test_ingress_violating_group_not_only_on_balancers if {
	instance := object.union(t.resource("aws:ec2/instance:Instance", "bastion", {}), {"dependencies": [edge.urn]})
	check([edge, nlb({}), listener({}), instance]) == {[
		"NET-002", "critical", edge.urn,
		"security group edge admits 0.0.0.0/0 on ports 443-443",
	]}
}

test_ingress_violating_balancer_not_public_tls if {
	finding := {["NET-002", "critical", edge.urn, "security group edge admits 0.0.0.0/0 on ports 443-443"]}
	check([edge, nlb({"internal": true}), listener({})]) == finding
	check([edge, nlb({}), listener({"protocol": "TCP"})]) == finding
	check([edge, nlb({}), listener({"port": 8443})]) == finding
	check([edge, nlb({})]) == finding
	check([edge]) == finding
}

test_ingress_missing_field if {
	g := group("gateway-sg", [{"cidrBlocks": ["0.0.0.0/0"]}])
	l := listener({})
	no_protocol := object.union(object.remove(l, ["properties"]), {"properties": object.remove(
		l.properties,
		["protocol"],
	)})
	check([g, nlb({}), no_protocol, edge]) == {
		["NET-002", "critical", g.urn, "security group gateway-sg admits 0.0.0.0/0 on ports unset-unset"],
		["NET-002", "critical", edge.urn, "security group edge admits 0.0.0.0/0 on ports 443-443"],
	}
}

test_ingress_missing_group if {
	# A world rule on 443 that names no group of the plan cannot be shown to be the API's.
	rule := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "https", {
		"fromPort": 443, "toPort": 443, "cidrIpv4": "0.0.0.0/0",
	})
	check([rule]) == {["NET-002", "critical", rule.urn, "security group https admits 0.0.0.0/0 on ports 443-443"]}
}

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models"})

block(settings) := t.resource("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "pab", object.union(
	{"bucket": "models"},
	settings,
))

all_on := {"blockPublicAcls": true, "blockPublicPolicy": true, "ignorePublicAcls": true, "restrictPublicBuckets": true}

test_public_access_passing if {
	exposure.deny == set() with input as t.plan([bucket, block(all_on)])
}

test_public_access_violating if {
	t.brief(exposure.deny) == {[
		"NET-003", "critical", bucket.urn,
		"bucket models does not block public access (settings off or missing: blockPublicPolicy)",
	]} with input as t.plan([bucket, block(object.union(all_on, {"blockPublicPolicy": false}))])
}

test_public_access_missing_field if {
	every_setting := concat(", ", sort(object.keys(all_on)))
	t.brief(exposure.deny) == {[
		"NET-003", "critical", bucket.urn,
		sprintf("bucket models does not block public access (settings off or missing: %s)", [every_setting]),
	]} with input as t.plan([bucket])
}

replication_group(props) := t.resource("aws:elasticache/replicationGroup:ReplicationGroup", "queue", props)

test_elasticache_network_passing if {
	g := replication_group({"subnetGroupName": "queue-subnets", "securityGroupIds": ["sg-0123456789abcdef0"]})
	exposure.deny == set() with input as t.plan([g])
}

test_elasticache_network_violating if {
	g := replication_group({"subnetGroupName": "queue-subnets", "securityGroupIds": []})
	t.brief(exposure.deny) == {[
		"NET-004", "high", g.urn,
		"replication group queue is not placed in the stack's network (subnetGroupName queue-subnets, 0 security groups)",
	]} with input as t.plan([g])
}

test_elasticache_network_missing_field if {
	g := replication_group({"securityGroupIds": ["sg-0123456789abcdef0"]})
	t.brief(exposure.deny) == {[
		"NET-004", "high", g.urn,
		"replication group queue is not placed in the stack's network (subnetGroupName unset, 1 security groups)",
	]} with input as t.plan([g])
}

sm_model(props) := t.resource("aws:sagemaker/model:Model", "clf-v1", props)

model_vpc := {"subnets": ["subnet-0a"], "securityGroupIds": ["sg-0a"]}

test_model_network_passing if {
	exposure.deny == set() with input as t.plan([sm_model({"vpcConfig": model_vpc, "enableNetworkIsolation": true})])
}

test_model_network_violating if {
	m := sm_model({"vpcConfig": {"subnets": [], "securityGroupIds": ["sg-0a"]}, "enableNetworkIsolation": false})
	t.brief(exposure.deny) == {
		["NET-005", "high", m.urn, "SageMaker model clf-v1: no vpcConfig with subnets and security groups"],
		["NET-005", "high", m.urn, "SageMaker model clf-v1: enableNetworkIsolation is false"],
	} with input as t.plan([m])
}

test_model_network_missing_field if {
	m := sm_model({})
	t.brief(exposure.deny) == {
		["NET-005", "high", m.urn, "SageMaker model clf-v1: no vpcConfig with subnets and security groups"],
		["NET-005", "high", m.urn, "SageMaker model clf-v1: enableNetworkIsolation is unset"],
	} with input as t.plan([m])
}

lambda_fn(props) := t.resource("aws:lambda/function:Function", "proxy", props)

test_lambda_vpc_passing if {
	exposure.deny == set() with input as t.plan([lambda_fn({"vpcConfig": {
		"subnetIds": ["subnet-0a"],
		"securityGroupIds": ["sg-0a"],
	}})])
}

test_lambda_vpc_violating if {
	f := lambda_fn({"vpcConfig": {"subnetIds": ["subnet-0a"], "securityGroupIds": []}})
	t.brief(exposure.deny) == {[
		"NET-006", "high", f.urn,
		concat("", [
			"Lambda function proxy is not placed in the stack's VPC ",
			`(vpcConfig {"securityGroupIds":[],"subnetIds":["subnet-0a"]})`,
		]),
	]} with input as t.plan([f])
}

test_lambda_vpc_missing_field if {
	f := lambda_fn({})
	t.brief(exposure.deny) == {[
		"NET-006", "high", f.urn, "Lambda function proxy is not placed in the stack's VPC (vpcConfig null)",
	]} with input as t.plan([f])
}

http_route(name, props) := t.resource("aws:apigatewayv2/route:Route", name, props)

test_api_routes_authorized_passing if {
	exposure.deny == set() with input as t.plan([
		http_route("infer", {"routeKey": "POST /v2/models/{model}/infer", "authorizationType": "JWT"}),
		http_route("live", {"routeKey": "GET /v2/health/live", "authorizationType": "NONE"}),
		http_route("ready", {"routeKey": "GET /v2/health/ready"}),
		t.resource("aws:apigateway/method:Method", "post", {"httpMethod": "POST", "authorization": "CUSTOM"}),
	])
}

test_api_routes_authorized_violating if {
	open := http_route("infer", {"routeKey": "POST /v2/models/{model}/infer", "authorizationType": "NONE"})
	catch_all := http_route("default", {"routeKey": "$default", "authorizationType": "none"})
	method := t.resource("aws:apigateway/method:Method", "post", {"httpMethod": "POST", "authorization": "NONE"})
	t.brief(exposure.deny) == {
		[
			"NET-007", "critical", open.urn,
			concat("", ["API route infer (POST /v2/models/{model}/infer)", " is open without authorization (NONE)"]),
		],
		[
			"NET-007", "critical", catch_all.urn,
			concat("", ["API route default ($default)", " is open without authorization (none)"]),
		],
		[
			"NET-007", "critical", method.urn,
			concat("", ["API route post (POST)", " is open without authorization (NONE)"]),
		],
	} with input as t.plan([open, catch_all, method])
}

test_api_routes_authorized_missing_field if {
	# An HTTP API route defaults to NONE; a REST method without authorization fails closed.
	r := http_route("infer", {"routeKey": "POST /v2/models/{model}/infer"})
	m := t.resource("aws:apigateway/method:Method", "get", {"httpMethod": "GET"})
	t.brief(exposure.deny) == {
		[
			"NET-007", "critical", r.urn,
			concat("", ["API route infer (POST /v2/models/{model}/infer)", " is open without authorization (NONE)"]),
		],
		[
			"NET-007", "critical", m.urn,
			concat("", ["API route get (GET)", " is open without authorization (unset)"]),
		],
	} with input as t.plan([r, m])
}

template(options) := t.resource("aws:ec2/launchTemplate:LaunchTemplate", "nodes", {"metadataOptions": options})

test_imds_passing if {
	strict := template({"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1})
	off := object.union(template({"httpEndpoint": "disabled"}), {"urn": "u-off"})
	check([strict, off]) == set()
}

test_imds_violating if {
	loose := template({"httpTokens": "optional", "httpPutResponseHopLimit": 2})
	check([loose]) == {
		["NET-008", "high", loose.urn, "launch template nodes allows IMDSv1 (httpTokens optional)"],
		["NET-008", "high", loose.urn, "launch template nodes allows a hop limit of 2"],
	}
}

test_imds_missing_field if {
	# No metadataOptions: AWS's defaults, IMDSv1 allowed.
	bare := t.resource("aws:ec2/launchTemplate:LaunchTemplate", "nodes", {})
	check([bare]) == {["NET-008", "high", bare.urn, "launch template nodes allows IMDSv1 (httpTokens optional)"]}
}

imds_ok := {"httpTokens": "required", "httpPutResponseHopLimit": 1}

test_public_ip_passing if {
	nodes := t.resource("aws:ec2/launchTemplate:LaunchTemplate", "lt", {
		"metadataOptions": imds_ok, "networkInterfaces": [{"associatePublicIpAddress": false}],
	})
	subnet := t.resource("aws:ec2/subnet:Subnet", "private", {"mapPublicIpOnLaunch": false})
	check([nodes, subnet]) == set()
}

test_public_ip_violating if {
	nodes := t.resource("aws:ec2/launchTemplate:LaunchTemplate", "lt", {
		"metadataOptions": imds_ok, "networkInterfaces": [{"associatePublicIpAddress": "true"}],
	})
	vm := t.resource("aws:ec2/instance:Instance", "vm", {"associatePublicIpAddress": true})
	subnet := t.resource("aws:ec2/subnet:Subnet", "public", {"mapPublicIpOnLaunch": true})
	check([nodes, vm, subnet]) == {
		["NET-009", "high", nodes.urn, "lt gives instances a public IP (networkInterfaces[].associatePublicIpAddress)"],
		["NET-009", "high", vm.urn, "vm gives instances a public IP (associatePublicIpAddress)"],
		["NET-009", "high", subnet.urn, "public gives instances a public IP (mapPublicIpOnLaunch)"],
	}
}

test_public_ip_missing_field if {
	# Unset is AWS's default, false, for each of the three.
	nodes := t.resource("aws:ec2/launchTemplate:LaunchTemplate", "lt", {"metadataOptions": imds_ok})
	vm := t.resource("aws:ec2/instance:Instance", "vm", {})
	subnet := t.resource("aws:ec2/subnet:Subnet", "s", {})
	check([nodes, vm, subnet]) == set()
}

vpc := object.union(t.resource("aws:ec2/vpc:Vpc", "vpc", {}), {"id": "vpc-1"})

default_group(props, dependencies) := object.union(
	t.resource("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "default-sg", props),
	{"dependencies": dependencies},
)

test_default_group_passing if {
	# Adopted through the dependency (a preview) or the VPC's id (an export), with no rules.
	check([vpc, default_group({}, [vpc.urn])]) == set()
	check([vpc, default_group({"vpcId": "vpc-1", "ingress": [], "egress": []}, [])]) == set()
}

test_default_group_violating if {
	rules := {"egress": [{"fromPort": 0, "toPort": 0, "protocol": "-1", "cidrBlocks": ["10.0.0.0/8"]}]}
	g := default_group(rules, [vpc.urn])
	other := object.union(t.resource("aws:ec2/vpc:Vpc", "other", {}), {"id": "vpc-2"})
	check([vpc, g, other]) == {
		["NET-010", "medium", g.urn, "default-sg: the default security group keeps rules"],
		["NET-010", "medium", other.urn, "other: its default security group is not adopted"],
	}
}

test_default_group_missing_field if {
	# A VPC with no adopted group at all.
	check([vpc]) == {["NET-010", "medium", vpc.urn, "vpc: its default security group is not adopted"]}
}
