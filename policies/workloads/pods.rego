# METADATA
# title: Workload hardening
# description: |
#   Every container runs as non-root on a read-only root filesystem without privilege
#   escalation or capabilities, with limits and probes, from an image pinned by digest in
#   an approved registry; no pod shares the node's namespaces. The platform layer's admission
#   policies (stacks/manifests/admission.py) refuse WL-001, 003, 007, 008 and 009 in the cluster
#   too, with the same ids.
package workloads.pods

import data.lib.config
import data.lib.resources
import data.lib.result

# Every container of every workload object, with its pod-level security context.
containers contains {"r": r, "c": c, "pod": object.get(spec, "securityContext", {}), "init": init} if {
	some r in input.resources
	spec := resources.pod_spec(r)
	some key, init in {"containers": false, "initContainers": true}
	some c in object.get(spec, key, [])
}

label(x) := sprintf("%s/%s", [resources.k8s_name(x.r), object.get(x.c, "name", "unnamed")])

# METADATA
# title: Non-root
# scope: rule
# description: Containers run as a non-zero user with runAsNonRoot set (container or pod level).
# custom:
#   id: WL-001
#   severity: high
#   message: "container %s may run as root (runAsNonRoot=%v, runAsUser=%v)"
#   remediation: Set securityContext.runAsNonRoot true and runAsUser to the image's user (10001).
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), non_root, user]) if {
	some x in containers
	non_root := setting(x, "runAsNonRoot", "unset")
	user := setting(x, "runAsUser", "unset")
	not runs_non_root(non_root, user)
}

runs_non_root(non_root, user) if {
	non_root == true
	user != 0
}

# A security-context field, the container's value winning over the pod's.
setting(x, key, fallback) := object.get(x.c, ["securityContext", key], object.get(x.pod, key, fallback))

# METADATA
# title: Read-only root filesystem
# scope: rule
# description: Containers mount their root filesystem read-only.
# custom:
#   id: WL-002
#   severity: medium
#   message: "container %s has readOnlyRootFilesystem=%v"
#   remediation: Set securityContext.readOnlyRootFilesystem true and mount an emptyDir for scratch space.
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), value]) if {
	some x in containers
	value := object.get(x.c, ["securityContext", "readOnlyRootFilesystem"], "unset")
	value != true
}

# METADATA
# title: No privilege escalation
# scope: rule
# description: Containers set allowPrivilegeEscalation false and are not privileged.
# custom:
#   id: WL-003
#   severity: high
#   message: "container %s has allowPrivilegeEscalation=%v, privileged=%v"
#   remediation: Set securityContext.allowPrivilegeEscalation false and drop privileged.
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), escalation, privileged]) if {
	some x in containers
	escalation := object.get(x.c, ["securityContext", "allowPrivilegeEscalation"], "unset")
	privileged := object.get(x.c, ["securityContext", "privileged"], false)
	not no_escalation(escalation, privileged)
}

no_escalation(escalation, privileged) if {
	escalation == false
	privileged == false
}

# METADATA
# title: Capabilities dropped
# scope: rule
# description: Containers drop ALL capabilities and add none back.
# custom:
#   id: WL-004
#   severity: high
#   message: "container %s drops %v and adds %v"
#   remediation: Set securityContext.capabilities.drop to ["ALL"] and remove capabilities.add.
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), dropped, added]) if {
	some x in containers
	dropped := object.get(x.c, ["securityContext", "capabilities", "drop"], [])
	added := object.get(x.c, ["securityContext", "capabilities", "add"], [])
	not caps_dropped(dropped, added)
}

caps_dropped(dropped, added) if {
	"ALL" in dropped
	count(added) == 0
}

# METADATA
# title: Resource limits
# scope: rule
# description: Containers set CPU and memory limits.
# custom:
#   id: WL-005
#   severity: medium
#   message: "container %s has no %s limit"
#   remediation: Set resources.limits.cpu and resources.limits.memory (and requests).
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), res]) if {
	some x in containers
	some res in ["cpu", "memory"]
	not x.c.resources.limits[res]
}

# METADATA
# title: Health probes
# scope: rule
# description: Long-running containers (not init containers, which take no probes) have both probes.
# custom:
#   id: WL-006
#   severity: medium
#   message: "container %s has no %s"
#   remediation: Add readinessProbe and livenessProbe (the V2 /v2/health/ready and /v2/health/live endpoints).
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), probe]) if {
	some x in containers
	resources.kind(x.r) in {"Deployment", "StatefulSet", "DaemonSet"}
	not x.init
	some probe in ["readinessProbe", "livenessProbe"]
	not x.c[probe]
}

# METADATA
# title: No host namespaces
# scope: rule
# description: |
#   Pods keep their own network, process and IPC namespaces: a pod in the node's sees its traffic,
#   processes or shared memory, and the mesh cannot intercept its traffic.
# custom:
#   id: WL-009
#   severity: high
#   message: "workload %s shares the host's namespace (%s=true)"
#   remediation: Remove hostNetwork, hostPID and hostIPC from the pod spec.
deny contains result.finding(rego.metadata.rule(), r, [resources.k8s_name(r), field]) if {
	some r in input.resources
	spec := resources.pod_spec(r)
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	object.get(spec, field, false) != false
}

# METADATA
# title: Image pinned by digest
# scope: rule
# description: Images are referenced by sha256 digest, never by a mutable tag.
# custom:
#   id: WL-007
#   severity: high
#   message: "container %s uses image %q, which is not pinned by digest"
#   remediation: Reference the image as REGISTRY/REPO@sha256:<digest>.
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), image]) if {
	some x in containers
	image := object.get(x.c, "image", "unset")
	not regex.match(`@sha256:[a-f0-9]{64}$`, image)
}

# METADATA
# title: Approved registry
# scope: rule
# description: |
#   Images come from an approved registry: by default an account's ECR, or a registry the
#   policy data lists for the stack (an in-country registry on premises).
# custom:
#   id: WL-008
#   severity: high
#   message: "container %s uses image %q from a registry that is not approved"
#   remediation: |
#     Push the image to the stack region's ECR; add other registries to settings.approved_registries
#     or to the stack's registries in policies/data/stacks.json.
deny contains result.finding(rego.metadata.rule(), x.r, [label(x), image]) if {
	some x in containers
	image := object.get(x.c, "image", "unset")
	not approved(image)
}

approved(image) if {
	some pattern in config.settings.approved_registries
	regex.match(pattern, image)
}

approved(image) if {
	some loc in config.registries(input)
	resources.under(image, loc)
}

# METADATA
# title: No host paths
# scope: rule
# description: No pod mounts a directory of the node (a hostPath volume), which reaches past the container.
# custom:
#   id: WL-010
#   severity: high
#   message: "workload %s mounts the node's %s (volume %s)"
#   remediation: Use an emptyDir, a ConfigMap, a Secret or a PersistentVolumeClaim instead of hostPath.
deny contains result.finding(rego.metadata.rule(), r, [resources.k8s_name(r), path, name]) if {
	some r in input.resources
	some v in object.get(resources.pod_spec(r), "volumes", [])
	v.hostPath
	path := object.get(v.hostPath, "path", "unset")
	name := object.get(v, "name", "unnamed")
}

# METADATA
# title: Seccomp not unconfined
# scope: rule
# description: Neither a pod nor a container turns seccomp off (seccompProfile type Unconfined).
# custom:
#   id: WL-011
#   severity: high
#   message: "%s runs with seccomp Unconfined"
#   remediation: Use seccompProfile type RuntimeDefault (or a Localhost profile).
deny contains result.finding(rego.metadata.rule(), x.r, [where]) if {
	some x in containers
	some [where, context] in [
		[sprintf("pod of %s", [label(x)]), x.pod],
		[sprintf("container %s", [label(x)]), object.get(x.c, "securityContext", {})],
	]
	object.get(context, ["seccompProfile", "type"], "") == "Unconfined"
}

# METADATA
# title: Sidecar on model pods
# scope: rule
# description: |
#   A model version's pods (labelled `app` and `version`, the labels its routes and telemetry
#   select) keep the mesh sidecar: without it they take plaintext traffic past mTLS and the
#   AuthorizationPolicies.
# custom:
#   id: WL-012
#   severity: high
#   message: "model workload %s turns its sidecar off (%s)"
#   remediation: Remove sidecar.istio.io/inject "false" from the pod template.
deny contains result.finding(rego.metadata.rule(), r, [resources.k8s_name(r), where]) if {
	some r in input.resources
	meta := resources.pod_metadata(r)
	labels := object.get(meta, "labels", {})
	labels.app
	labels.version
	some where in injection_off(meta)
}

injection_off(meta) := {sprintf("%s sidecar.istio.io/inject=false", [part]) |
	some part in ["annotation", "label"]
	field := {"annotation": "annotations", "label": "labels"}[part]
	lower(sprintf("%v", [object.get(meta, [field, "sidecar.istio.io/inject"], "")])) == "false"
}
