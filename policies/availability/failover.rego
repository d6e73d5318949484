# METADATA
# title: Availability
# description: Stateful services that the platform cannot lose survive the loss of a node or a zone.
package availability.failover

import data.lib.resources
import data.lib.result

# METADATA
# title: ElastiCache Multi-AZ with automatic failover
# scope: rule
# description: |
#   Replication groups (the job queue: losing it loses every queued job) keep a replica in
#   another zone and promote it on their own: automatic failover and Multi-AZ on, and at
#   least two nodes per shard.
# custom:
#   id: AVL-001
#   severity: high
#   message: "replication group %s: no failover across zones (automaticFailover %v, multiAz %v, nodes %v)"
#   remediation: |
#     Set automaticFailoverEnabled and multiAzEnabled true with numCacheClusters 2 or more
#     (or replicasPerNodeGroup 1 or more).
deny contains result.finding(rego.metadata.rule(), r, [r.name, failover, multi_az, nodes]) if {
	some r in input.resources
	r.type == "aws:elasticache/replicationGroup:ReplicationGroup"
	p := r.properties
	failover := object.get(p, "automaticFailoverEnabled", "unset")
	multi_az := object.get(p, "multiAzEnabled", "unset")
	nodes := node_count(p)
	not fails_over(failover, multi_az, nodes)
}

# Nodes per shard: numCacheClusters (cluster mode off), or one primary plus its replicas.
node_count(p) := to_number(p.numCacheClusters) if {
	is_number(p.numCacheClusters)
} else := to_number(p.replicasPerNodeGroup) + 1 if {
	is_number(p.replicasPerNodeGroup)
} else := "unset"

fails_over(failover, multi_az, nodes) if {
	resources.truthy(failover)
	resources.truthy(multi_az)
	is_number(nodes)
	nodes >= 2
}

# METADATA
# title: DynamoDB point-in-time recovery
# scope: rule
# description: |
#   DynamoDB tables (the online feature store) keep point-in-time recovery on: a bad
#   materialization or a deletion of items is undone by restoring the table to a second of
#   the last 35 days, instead of rebuilding it from the offline store.
# custom:
#   id: AVL-002
#   severity: medium
#   message: "DynamoDB table %s has no point-in-time recovery (pointInTimeRecovery %s)"
#   remediation: Set pointInTimeRecovery enabled true.
deny contains result.finding(rego.metadata.rule(), r, [r.name, found]) if {
	some r in input.resources
	r.type == "aws:dynamodb/table:Table"
	not resources.truthy(object.get(r.properties, ["pointInTimeRecovery", "enabled"], false))
	found := json.marshal(object.get(r.properties, "pointInTimeRecovery", null))
}
