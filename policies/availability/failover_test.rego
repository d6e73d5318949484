package availability.failover_test

import data.availability.failover
import data.lib.testing_test as t

replication_group(props) := t.resource("aws:elasticache/replicationGroup:ReplicationGroup", "queue", props)

test_failover_passing if {
	g := replication_group({"automaticFailoverEnabled": true, "multiAzEnabled": true, "numCacheClusters": 3})
	failover.deny == set() with input as t.plan([g])
}

test_failover_replicas_per_shard_passing if {
	g := replication_group({"automaticFailoverEnabled": "true", "multiAzEnabled": "true", "replicasPerNodeGroup": 1})
	failover.deny == set() with input as t.plan([g])
}

test_failover_violating if {
	g := replication_group({"automaticFailoverEnabled": true, "multiAzEnabled": false, "numCacheClusters": 3})
	t.brief(failover.deny) == {[
		"AVL-001", "high", g.urn,
		"replication group queue: no failover across zones (automaticFailover true, multiAz false, nodes 3)",
	]} with input as t.plan([g])
}

test_failover_single_node_violating if {
	g := replication_group({"automaticFailoverEnabled": true, "multiAzEnabled": true, "numCacheClusters": 1})
	t.brief(failover.deny) == {[
		"AVL-001", "high", g.urn,
		"replication group queue: no failover across zones (automaticFailover true, multiAz true, nodes 1)",
	]} with input as t.plan([g])
}

test_failover_off_violating if {
	g := replication_group({"automaticFailoverEnabled": false, "multiAzEnabled": true, "replicasPerNodeGroup": 2})
	t.brief(failover.deny) == {[
		"AVL-001", "high", g.urn,
		"replication group queue: no failover across zones (automaticFailover false, multiAz true, nodes 3)",
	]} with input as t.plan([g])
}

test_failover_missing_field if {
	g := replication_group({})
	t.brief(failover.deny) == {[
		"AVL-001", "high", g.urn,
		"replication group queue: no failover across zones (automaticFailover unset, multiAz unset, nodes unset)",
	]} with input as t.plan([g])
}

table(props) := t.resource("aws:dynamodb/table:Table", "features", props)

test_point_in_time_recovery_passing if {
	failover.deny == set() with input as t.plan([table({"pointInTimeRecovery": {"enabled": true}})])
}

test_point_in_time_recovery_violating if {
	r := table({"pointInTimeRecovery": {"enabled": false}})
	t.brief(failover.deny) == {[
		"AVL-002", "medium", r.urn,
		`DynamoDB table features has no point-in-time recovery (pointInTimeRecovery {"enabled":false})`,
	]} with input as t.plan([r])
}

test_point_in_time_recovery_missing_field if {
	r := table({})
	t.brief(failover.deny) == {[
		"AVL-002", "medium", r.urn,
		"DynamoDB table features has no point-in-time recovery (pointInTimeRecovery null)",
	]} with input as t.plan([r])
}
