package network.exposure_test

import data.lib.testing_test as t
import data.network.exposure

cluster(vpc) := t.resource("aws:eks/cluster:Cluster", "eks", {"vpcConfig": vpc})

test_endpoint_passing if {
	private := cluster({"endpointPublicAccess": false})
	operators := cluster({"endpointPublicAccess": true, "publicAccessCidrs": ["203.0.113.0/24"]})
	limited := object.union(operators, {"urn": "u2"})
	count(exposure.deny) == 0 with input as t.plan([private, limited])
}

test_endpoint_violating if {
	c := cluster({"endpointPublicAccess": true, "publicAccessCidrs": ["0.0.0.0/0", "10.0.0.0/8"]})
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

test_ingress_passing if {
	gw := group("gateway-sg", [{"fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}])
	nodes := group("nodes", [{"fromPort": 0, "toPort": 65535, "cidrBlocks": ["10.0.0.0/16"]}])
	count(exposure.deny) == 0 with input as t.plan([gw, nodes])
}

test_ingress_violating if {
	g := group("nodes", [{"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}])
	rule := t.resource("aws:ec2/securityGroupRule:SecurityGroupRule", "ssh", {
		"type": "ingress", "fromPort": 443, "toPort": 443, "ipv6CidrBlocks": ["::/0"],
	})
	ingress := t.resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "all", {
		"fromPort": 80, "toPort": 80, "cidrIpv4": "0.0.0.0/0",
	})
	t.brief(exposure.deny) == {
		["NET-002", "critical", g.urn, "security group nodes admits 0.0.0.0/0 on ports 22-22"],
		["NET-002", "critical", rule.urn, "security group ssh admits ::/0 on ports 443-443"],
		["NET-002", "critical", ingress.urn, "security group all admits 0.0.0.0/0 on ports 80-80"],
	} with input as t.plan([g, rule, ingress])
}

test_ingress_missing_field if {
	g := group("gateway-sg", [{"cidrBlocks": ["0.0.0.0/0"]}])
	t.brief(exposure.deny) == {[
		"NET-002", "critical", g.urn,
		"security group gateway-sg admits 0.0.0.0/0 on ports unset-unset",
	]} with input as t.plan([g])
}

bucket := t.resource("aws:s3/bucket:Bucket", "models", {"bucket": "models"})

block(settings) := t.resource("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "pab", object.union(
	{"bucket": "models"},
	settings,
))

all_on := {"blockPublicAcls": true, "blockPublicPolicy": true, "ignorePublicAcls": true, "restrictPublicBuckets": true}

test_public_access_passing if {
	count(exposure.deny) == 0 with input as t.plan([bucket, block(all_on)])
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
