package audit.logging_test

import data.audit.logging
import data.lib.testing_test as t

monitoring := t.resource(
	"kubernetes:helm.sh/v3:Release", "monitoring",
	{"chart": "prometheus-community/kube-prometheus-stack"},
)

check(resources) := found if {
	found := t.brief(logging.deny) with input as t.plan(array.concat([monitoring], resources))
}

cluster(types) := t.resource("aws:eks/cluster:Cluster", "eks", {"enabledClusterLogTypes": types})

test_eks_logs_passing if {
	check([cluster(["api", "audit", "authenticator", "scheduler"])]) == set()
}

test_eks_logs_violating if {
	c := cluster(["api"])
	check([c]) == {["AUD-001", "high", c.urn, "EKS cluster eks does not enable log types audit, authenticator"]}
}

test_eks_logs_missing_field if {
	c := t.resource("aws:eks/cluster:Cluster", "eks", {})
	check([c]) == {["AUD-001", "high", c.urn, "EKS cluster eks does not enable log types api, audit, authenticator"]}
}

vpc := t.resource("aws:ec2/vpc:Vpc", "main", {})

test_flow_logs_passing if {
	flow := t.resource("aws:ec2/flowLog:FlowLog", "flow", {"vpcId": "main"})
	check([vpc, flow]) == set()
}

test_flow_logs_violating if {
	other := t.resource("aws:ec2/flowLog:FlowLog", "flow", {"vpcId": "vpc-other"})
	check([vpc, other]) == {["AUD-002", "high", vpc.urn, "VPC main has no flow log"]}
}

test_flow_logs_missing_field if {
	check([vpc]) == {["AUD-002", "high", vpc.urn, "VPC main has no flow log"]}
}

group(props) := t.resource("aws:cloudwatch/logGroup:LogGroup", "logs", props)

test_retention_passing if {
	check([group({"retentionInDays": 365})]) == set()
}

test_retention_violating if {
	g := group({"retentionInDays": 30})
	check([g]) == {["AUD-003", "medium", g.urn, "log group logs keeps logs for 30 days, less than the minimum 90"]}
}

test_retention_missing_field if {
	g := group({})
	check([g]) == {["AUD-003", "medium", g.urn, "log group logs keeps logs for unset days, less than the minimum 90"]}
}

test_monitoring_passing if {
	check([]) == set()
}

test_monitoring_violating if {
	other := t.resource("kubernetes:helm.sh/v3:Release", "istiod", {"chart": "istiod"})
	found := t.brief(logging.deny) with input as t.plan([other])
	found == {[
		"AUD-004", "high", "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod",
		"stack uae-prod installs none of the monitoring charts kube-prometheus-stack",
	]}
}

test_monitoring_missing_field if {
	release := t.resource("kubernetes:helm.sh/v3:Release", "monitoring", {})
	found := t.brief(logging.deny) with input as t.plan([release])
	found == {[
		"AUD-004", "high", "urn:pulumi:uae-prod::p::pulumi:pulumi:Stack::p-uae-prod",
		"stack uae-prod installs none of the monitoring charts kube-prometheus-stack",
	]}
}

test_monitoring_by_layer if {
	# Only the platform layer's plan installs charts; the infra layer's is not asked for one.
	infra := object.union(t.plan([cluster(["api", "audit", "authenticator"])]), {"project": "model-serving"})
	logging.deny == set() with input as infra
	project := "model-serving-platform"
	t.brief(logging.deny) == {[
		"AUD-004", "high", sprintf("urn:pulumi:uae-prod::%s::pulumi:pulumi:Stack::%s-uae-prod", [project, project]),
		"stack uae-prod installs none of the monitoring charts kube-prometheus-stack",
	]} with input as object.union(t.plan([]), {"project": project})
}
