# METADATA
# title: Audit and observability
# description: Control-plane and network activity is logged, kept long enough, and every stack is monitored.
package audit.logging

import data.lib.config
import data.lib.resources
import data.lib.result

# METADATA
# title: EKS control-plane logs
# scope: rule
# description: EKS clusters ship the api, audit and authenticator logs (the list is in settings).
# custom:
#   id: AUD-001
#   severity: high
#   message: "EKS cluster %s does not enable log types %s"
#   remediation: Add the missing types to enabledClusterLogTypes.
deny contains result.finding(rego.metadata.rule(), r, [r.name, resources.describe(missing)]) if {
	some r in input.resources
	r.type == "aws:eks/cluster:Cluster"
	enabled := {t | some t in object.get(r.properties, "enabledClusterLogTypes", [])}
	missing := {t | some t in config.settings.eks_log_types} - enabled
	count(missing) > 0
}

# METADATA
# title: VPC flow logs
# scope: rule
# description: Every VPC has a flow log.
# custom:
#   id: AUD-002
#   severity: high
#   message: "VPC %s has no flow log"
#   remediation: Add an aws.ec2.FlowLog for the VPC to a KMS-encrypted in-region log group.
deny contains result.finding(rego.metadata.rule(), vpc, [vpc.name]) if {
	some vpc in input.resources
	vpc.type == "aws:ec2/vpc:Vpc"
	not flow_logged(vpc)
}

flow_logged(vpc) if {
	some key in resources.targets(vpc)
	key in flow_log_targets
}

flow_log_targets contains key if {
	some f in input.resources
	f.type == "aws:ec2/flowLog:FlowLog"
	some key in resources.links(f)
}

# METADATA
# title: Log retention
# scope: rule
# description: Log groups keep logs for at least the configured number of days.
# custom:
#   id: AUD-003
#   severity: medium
#   message: "log group %s keeps logs for %v days, less than the minimum %v"
#   remediation: Set retentionInDays to at least settings.min_log_retention_days.
deny contains result.finding(rego.metadata.rule(), r, [r.name, days, minimum]) if {
	some r in input.resources
	r.type == "aws:cloudwatch/logGroup:LogGroup"
	minimum := config.settings.min_log_retention_days
	days := object.get(r.properties, "retentionInDays", "unset")
	not retained(days, minimum)
}

retained(days, minimum) if {
	is_number(days)
	days >= minimum
}

# METADATA
# title: Monitoring present
# scope: rule
# description: |
#   Every stack's platform layer installs the monitoring chart (the infra layer's plan
#   holds no cluster content, so the rule does not apply to it).
# custom:
#   id: AUD-004
#   severity: high
#   message: "stack %s installs none of the monitoring charts %s"
#   remediation: Deploy the pinned kube-prometheus-stack Helm release in the stack.
deny contains result.finding(rego.metadata.rule(), resources.stack_resource(input), [input.stack, charts]) if {
	config.platform_plan(input)
	charts := resources.describe({c | some c in config.settings.monitoring_charts})
	not monitored
}

monitored if {
	some r in input.resources
	startswith(r.type, "kubernetes:helm.sh/")
	chart := object.get(r.properties, "chart", "")
	parts := split(chart, "/")
	parts[count(parts) - 1] in config.settings.monitoring_charts
}
