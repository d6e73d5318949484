# METADATA
# title: Resource helpers
# description: Pure helpers over normalized resources; they take arguments and never read input.
package lib.resources

# METADATA
# scope: document
# description: |
#   Provider resources by URN, so a resource's provider reference resolves in one lookup. A URN
#   the document repeats (DOC-001, a deny) resolves to its first copy rather than stopping the
#   gate.
provider_index(resources) := {urn: copies[0] |
	some urn in {p.urn | some p in resources; startswith(p.type, "pulumi:providers:")}
	copies := [p | some p in resources; p.urn == urn]
}

# METADATA
# scope: document
# description: Resources by type.
by_type(resources, type) := [r | some r in resources; r.type == type]

# METADATA
# scope: document
# description: True for an AWS resource (not a provider, not a component).
is_aws(r) if startswith(r.type, "aws:")

# METADATA
# scope: document
# description: |
#   The Kubernetes kind of a resource, from its type token, which the engine derives from the
#   object it creates: a `kind` in the inputs never hides an object from its kind's rules (an
#   input that disagrees is DOC-002).
kind(r) := k if {
	startswith(r.type, "kubernetes:")
	parts := split(r.type, ":")
	k := parts[count(parts) - 1]
}

# METADATA
# scope: document
# description: Kubernetes objects of a kind.
of_kind(resources, k) := [r | some r in resources; startswith(r.type, "kubernetes:"); kind(r) == k]

# METADATA
# scope: document
# description: A Kubernetes object's namespace, "default" when unset.
namespace(r) := object.get(r.properties, ["metadata", "namespace"], "default")

# METADATA
# scope: document
# description: A Kubernetes object's name, or the Pulumi name when metadata.name is computed.
k8s_name(r) := object.get(r.properties, ["metadata", "name"], r.name)

# METADATA
# scope: document
# description: |
#   The region a resource runs in: its own region input (pulumi-aws v7 takes one per
#   resource), else its provider's region (explicit or default provider), else "unresolved".
region(r, provs) := reg if {
	reg := r.properties.region
	is_string(reg)
} else := reg if {
	reg := provs[r.provider].properties.region
	is_string(reg)
} else := "unresolved"

# METADATA
# description: |
#   What a companion resource points at: the URNs it depends on and the bucket, VPC,
#   cluster or role it names. Index companions by these keys, then look targets up by targets(t).
links(r) := {d | some d in object.get(r, "dependencies", [])} | {v |
	some key in ["bucket", "vpcId", "clusterName", "role"]
	v := r.properties[key]
	is_string(v)
}

# METADATA
# description: The keys under which companions of target are indexed (see links).
targets(target) := {target.urn} | ref_names(target)

# METADATA
# scope: document
# description: The names another resource may use to refer to target.
ref_names(target) := {n |
	some n in [target.name, object.get(target.properties, "bucket", null), object.get(target, "id", null)]
	is_string(n)
}

# METADATA
# scope: document
# description: The region inside an ARN, or "" for global ARNs (S3, IAM).
arn_region(arn) := parts[3] if {
	startswith(arn, "arn:")
	parts := split(arn, ":")
	count(parts) >= 5
}

# METADATA
# scope: document
# description: The first AWS region named inside a host name or URL, e.g. an ECR or ELB host.
host_region(host) := m[0][1] if {
	m := regex.find_all_string_submatch_n(`\.((?:[a-z]{2}|us-gov)-[a-z]+-[0-9]+)\.`, host, 1)
	count(m) > 0
}

# METADATA
# scope: document
# description: True for a value that counts as boolean true in provider inputs (some are strings).
truthy(true)

truthy("true")

# METADATA
# scope: document
# description: A policy document as an object, whether given as a JSON string or an object.
policy_doc(p) := json.unmarshal(p) if is_string(p)

policy_doc(p) := p if is_object(p)

# METADATA
# scope: document
# description: The statements of a policy document, always as an array.
statements(doc) := doc.Statement if is_array(doc.Statement)

statements(doc) := [doc.Statement] if is_object(doc.Statement)

# METADATA
# scope: document
# description: A string-or-array policy field as a set.
as_set(v) := {v} if is_string(v)

as_set(v) := {x | some x in v} if is_array(v)

# METADATA
# scope: document
# description: The pod spec of a workload object, whatever its kind.
pod_spec(r) := r.properties.spec.template.spec if {
	kind(r) in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
}

pod_spec(r) := r.properties.spec if kind(r) == "Pod"

pod_spec(r) := r.properties.spec.jobTemplate.spec.template.spec if kind(r) == "CronJob"

# Custom resources that carry a pod template: an Argo Rollout, a Knative Service (not the core
# Service: the type's API group tells them apart), a KServe InferenceService's predictor.
pod_spec(r) := r.properties.spec.template.spec if kind(r) == "Rollout"

pod_spec(r) := r.properties.spec.template.spec if {
	kind(r) == "Service"
	startswith(r.type, "kubernetes:serving.knative.dev/")
}

pod_spec(r) := r.properties.spec.predictor if kind(r) == "InferenceService"

# METADATA
# scope: document
# description: The metadata of a workload object's pod template (a Pod's own), {} when it has none.
pod_metadata(r) := object.get(r.properties, ["spec", "template", "metadata"], {}) if {
	kind(r) in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout", "Service"}
	pod_spec(r)
}

pod_metadata(r) := object.get(r.properties, "metadata", {}) if kind(r) == "Pod"

pod_metadata(r) := object.get(r.properties, ["spec", "jobTemplate", "spec", "template", "metadata"], {}) if {
	kind(r) == "CronJob"
}

# METADATA
# scope: document
# description: Every container of a workload object, init containers included.
containers(r) := array.concat(object.get(spec, "containers", []), object.get(spec, "initContainers", [])) if {
	spec := pod_spec(r)
}

# METADATA
# scope: document
# description: The stack's own resource, or a stand-in naming the stack, for findings about the whole stack.
stack_resource(doc) := r if {
	some r in doc.resources
	r.type == "pulumi:pulumi:Stack"
} else := {"urn": urn, "type": "pulumi:pulumi:Stack", "name": doc.stack} if {
	project := object.get(doc, "project", "unknown")
	urn := sprintf("urn:pulumi:%s::%s::pulumi:pulumi:Stack::%s-%s", [doc.stack, project, project, doc.stack])
}

# METADATA
# scope: document
# description: A set of found values for a message, "none" when empty.
describe(values) := "none" if count(values) == 0

describe(values) := concat(", ", sort(values)) if count(values) > 0

# METADATA
# scope: document
# description: |
#   True for an image or chart reference inside a registry location (a host, or a host and a
#   path prefix): "host/prefix/repo@sha256:..." is under "host" and "host/prefix", not "host/pre".
under(ref, location) if startswith(trim_prefix(ref, "oci://"), concat("", [location, "/"]))

# METADATA
# scope: document
# description: True for an image reference pinned by sha256 digest.
pinned(ref) if regex.match(`@sha256:[a-f0-9]{64}$`, ref)

# METADATA
# scope: document
# description: |
#   The AWS region of the EKS cluster a Kubernetes resource is deployed to, from the API
#   server host in its provider's kubeconfig; "unresolved" for any other cluster.
cluster_region(r, provs) := m[0][1] if {
	cfg := provs[r.provider].properties.kubeconfig
	text := kubeconfig_text(cfg)
	m := regex.find_all_string_submatch_n(`\.((?:[a-z]{2}|us-gov)-[a-z]+-[0-9]+)\.eks\.amazonaws\.com`, text, 1)
	count(m) > 0
} else := "unresolved"

kubeconfig_text(cfg) := cfg if is_string(cfg)

kubeconfig_text(cfg) := json.marshal(cfg) if not is_string(cfg)
