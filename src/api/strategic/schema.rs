//! Patch metadata of the built-in kinds: which list fields merge and by which key, which
//! structs retain keys or are replaced whole, and which field of which type leads to which
//! type. This is the data upstream reads from the `patchStrategy` / `patchMergeKey` struct
//! tags of k8s.io/api and k8s.io/apimachinery meta/v1 (checked against 1.37).
//!
//! Only the paths that reach a field with a strategy are listed. Every other field behaves
//! like an untagged field upstream: objects merge key by key, lists are replaced whole. A list
//! without a strategy is replaced, so nothing below such a list needs describing.

/// Kinds that accept a strategic merge patch: (group, kind, type of the object).
const KINDS: &[(&str, &str, &str)] = &[
    // core/v1
    ("", "Pod", "Pod"),
    ("", "PodTemplate", "PodTemplate"),
    ("", "Namespace", "Namespace"),
    ("", "Node", "Node"),
    ("", "Service", "Service"),
    ("", "Endpoints", "Endpoints"),
    ("", "ConfigMap", "ConfigMap"),
    ("", "Secret", "Secret"),
    ("", "ServiceAccount", "ServiceAccount"),
    ("", "Event", "Event"),
    ("", "ReplicationController", "ReplicationController"),
    ("", "PersistentVolume", "PersistentVolume"),
    ("", "PersistentVolumeClaim", "PersistentVolumeClaim"),
    ("", "LimitRange", "LimitRange"),
    ("", "ResourceQuota", "ResourceQuota"),
    ("", "ComponentStatus", "ComponentStatus"),
    // apps/v1
    ("apps", "Deployment", "Deployment"),
    ("apps", "ReplicaSet", "ReplicaSet"),
    ("apps", "StatefulSet", "StatefulSet"),
    ("apps", "DaemonSet", "DaemonSet"),
    ("apps", "ControllerRevision", "ControllerRevision"),
    // batch/v1
    ("batch", "Job", "Job"),
    ("batch", "CronJob", "CronJob"),
    // autoscaling/v2 (and autoscaling/v1 Scale, the scale subresource)
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "HorizontalPodAutoscaler",
    ),
    ("autoscaling", "Scale", "Scale"),
    ("coordination.k8s.io", "Lease", "Lease"),
    ("discovery.k8s.io", "EndpointSlice", "EndpointSlice"),
    // events.k8s.io/v1 Event is a different type from core/v1 Event.
    ("events.k8s.io", "Event", "events.v1.Event"),
    ("networking.k8s.io", "Ingress", "Ingress"),
    ("networking.k8s.io", "IngressClass", "IngressClass"),
    ("networking.k8s.io", "NetworkPolicy", "NetworkPolicy"),
    ("policy", "PodDisruptionBudget", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io", "Role", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding", "RoleBinding"),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
    ),
    ("scheduling.k8s.io", "PriorityClass", "PriorityClass"),
    ("storage.k8s.io", "StorageClass", "StorageClass"),
];

/// Every field that carries a strategy or leads to one:
/// (type, JSON field, strategy tag, merge key, type of the field or of its list elements).
///
/// Strategy tags are upstream's (`merge`, `retainKeys`, `merge,retainKeys`, `replace`) plus
/// `opaque` for `runtime.RawExtension` fields, whose content has no schema and is taken as sent.
/// The `metadata` of every kind above is an `ObjectMeta` without a row of its own.
#[rustfmt::skip]
const FIELDS: &[(&str, &str, &str, &str, &str)] = &[
    // meta/v1
    ("ObjectMeta", "ownerReferences", "merge", "uid", ""),
    ("ObjectMeta", "finalizers", "merge", "", ""),
    // core/v1: pods and pod templates
    ("Pod", "spec", "", "", "PodSpec"),
    ("Pod", "status", "", "", "PodStatus"),
    ("PodTemplate", "template", "", "", "PodTemplateSpec"),
    ("PodTemplateSpec", "metadata", "", "", "ObjectMeta"),
    ("PodTemplateSpec", "spec", "", "", "PodSpec"),
    ("PodSpec", "volumes", "merge,retainKeys", "name", "Volume"),
    ("PodSpec", "initContainers", "merge", "name", "Container"),
    ("PodSpec", "containers", "merge", "name", "Container"),
    // EphemeralContainer inlines EphemeralContainerCommon, whose tags equal Container's.
    ("PodSpec", "ephemeralContainers", "merge", "name", "Container"),
    ("PodSpec", "imagePullSecrets", "merge", "name", ""),
    ("PodSpec", "hostAliases", "merge", "ip", ""),
    ("PodSpec", "topologySpreadConstraints", "merge", "topologyKey", ""),
    ("PodSpec", "schedulingGates", "merge", "name", ""),
    ("PodSpec", "resourceClaims", "merge,retainKeys", "name", ""),
    ("PodSpec", "evictionResponders", "merge", "name", ""),
    ("Container", "ports", "merge", "containerPort", ""),
    ("Container", "env", "merge", "name", ""),
    ("Container", "volumeMounts", "merge", "mountPath", ""),
    ("Container", "volumeDevices", "merge", "devicePath", ""),
    // VolumeSource is inlined in Volume; its generic ephemeral volume embeds an ObjectMeta.
    ("Volume", "ephemeral", "", "", "EphemeralVolumeSource"),
    ("EphemeralVolumeSource", "volumeClaimTemplate", "", "", "PersistentVolumeClaimTemplate"),
    ("PersistentVolumeClaimTemplate", "metadata", "", "", "ObjectMeta"),
    ("PodStatus", "conditions", "merge", "type", ""),
    ("PodStatus", "podIPs", "merge", "ip", ""),
    ("PodStatus", "hostIPs", "merge", "ip", ""),
    ("PodStatus", "resourceClaimStatuses", "merge,retainKeys", "name", ""),
    ("PodStatus", "nodeAllocatableResourceClaimStatuses", "merge", "resourceClaimName", "NodeAllocatableResourceClaimStatus"),
    ("NodeAllocatableResourceClaimStatus", "mapping", "merge", "name", ""),
    ("NodeAllocatableResourceClaimStatus", "overhead", "merge", "name", ""),
    // core/v1: the rest
    ("Node", "spec", "", "", "NodeSpec"),
    ("Node", "status", "", "", "NodeStatus"),
    ("NodeSpec", "podCIDRs", "merge", "", ""),
    ("NodeStatus", "conditions", "merge", "type", ""),
    ("NodeStatus", "addresses", "merge", "type", ""),
    ("Namespace", "status", "", "", "NamespaceStatus"),
    ("NamespaceStatus", "conditions", "merge", "type", ""),
    ("Service", "spec", "", "", "ServiceSpec"),
    ("Service", "status", "", "", "ServiceStatus"),
    ("ServiceSpec", "ports", "merge", "port", ""),
    ("ServiceStatus", "conditions", "merge", "type", ""),
    ("ServiceAccount", "secrets", "merge", "name", ""),
    ("ReplicationController", "spec", "", "", "ReplicationControllerSpec"),
    ("ReplicationController", "status", "", "", "ReplicationControllerStatus"),
    ("ReplicationControllerSpec", "template", "", "", "PodTemplateSpec"),
    ("ReplicationControllerStatus", "conditions", "merge", "type", ""),
    ("PersistentVolumeClaim", "status", "", "", "PersistentVolumeClaimStatus"),
    ("PersistentVolumeClaimStatus", "conditions", "merge", "type", ""),
    ("ComponentStatus", "conditions", "merge", "type", ""),
    // apps/v1
    ("Deployment", "spec", "", "", "DeploymentSpec"),
    ("Deployment", "status", "", "", "DeploymentStatus"),
    ("DeploymentSpec", "template", "", "", "PodTemplateSpec"),
    ("DeploymentSpec", "strategy", "retainKeys", "", ""),
    ("DeploymentStatus", "conditions", "merge", "type", ""),
    ("ReplicaSet", "spec", "", "", "ReplicaSetSpec"),
    ("ReplicaSet", "status", "", "", "ReplicaSetStatus"),
    ("ReplicaSetSpec", "template", "", "", "PodTemplateSpec"),
    ("ReplicaSetStatus", "conditions", "merge", "type", ""),
    ("StatefulSet", "spec", "", "", "StatefulSetSpec"),
    ("StatefulSet", "status", "", "", "StatefulSetStatus"),
    ("StatefulSetSpec", "template", "", "", "PodTemplateSpec"),
    ("StatefulSetStatus", "conditions", "merge", "type", ""),
    ("DaemonSet", "spec", "", "", "DaemonSetSpec"),
    ("DaemonSet", "status", "", "", "DaemonSetStatus"),
    ("DaemonSetSpec", "template", "", "", "PodTemplateSpec"),
    ("DaemonSetStatus", "conditions", "merge", "type", ""),
    ("ControllerRevision", "data", "opaque", "", ""),
    // batch/v1
    ("Job", "spec", "", "", "JobSpec"),
    ("Job", "status", "", "", "JobStatus"),
    ("JobSpec", "template", "", "", "PodTemplateSpec"),
    ("JobSpec", "scheduling", "", "", "JobSchedulingConfiguration"),
    ("JobSchedulingConfiguration", "resourceClaims", "merge", "name", ""),
    ("JobStatus", "conditions", "merge", "type", ""),
    ("CronJob", "spec", "", "", "CronJobSpec"),
    ("CronJobSpec", "jobTemplate", "", "", "JobTemplateSpec"),
    ("JobTemplateSpec", "metadata", "", "", "ObjectMeta"),
    ("JobTemplateSpec", "spec", "", "", "JobSpec"),
    // autoscaling/v2
    ("HorizontalPodAutoscaler", "status", "", "", "HorizontalPodAutoscalerStatus"),
    ("HorizontalPodAutoscalerStatus", "conditions", "merge", "type", ""),
    // policy/v1
    ("PodDisruptionBudget", "spec", "", "", "PodDisruptionBudgetSpec"),
    ("PodDisruptionBudget", "status", "", "", "PodDisruptionBudgetStatus"),
    ("PodDisruptionBudgetSpec", "selector", "replace", "", ""),
    ("PodDisruptionBudgetStatus", "conditions", "merge", "type", ""),
];

/// Where in the type graph a JSON value sits; `None` for values without patch metadata
/// (unknown fields, maps, structs without tagged fields below them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Schema(Option<&'static str>);

/// The patch metadata of one field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FieldMeta {
    /// `patchStrategy:"merge"`: a list merged element by element.
    pub merge: bool,
    /// `patchStrategy:"replace"`: an object replaced whole.
    pub replace: bool,
    /// A `runtime.RawExtension`: taken as sent, directives and all.
    pub opaque: bool,
    /// `patchMergeKey`; empty for lists of primitives.
    pub merge_key: &'static str,
}

impl Schema {
    /// The schema of an object of the given kind, if the kind takes strategic merge patches.
    pub(super) fn root(group: &str, kind: &str) -> Option<Schema> {
        KINDS
            .iter()
            .find(|(g, k, _)| *g == group && *k == kind)
            .map(|(_, _, ty)| Schema(Some(ty)))
    }

    /// Metadata of `field` and the schema of its value (of its elements for lists).
    pub(super) fn field(self, field: &str) -> (Schema, FieldMeta) {
        let Some(ty) = self.0 else {
            return (Schema(None), FieldMeta::default());
        };
        if let Some(&(_, _, strategy, key, field_ty)) =
            FIELDS.iter().find(|(t, f, ..)| *t == ty && *f == field)
        {
            let strategies: Vec<&str> = strategy.split(',').collect();
            let meta = FieldMeta {
                merge: strategies.contains(&"merge"),
                replace: strategies.contains(&"replace"),
                opaque: strategies.contains(&"opaque"),
                merge_key: key,
            };
            let sub = if field_ty.is_empty() {
                None
            } else {
                Some(field_ty)
            };
            return (Schema(sub), meta);
        }
        if field == "metadata" && KINDS.iter().any(|(_, _, root)| *root == ty) {
            return (Schema(Some("ObjectMeta")), FieldMeta::default());
        }
        (Schema(None), FieldMeta::default())
    }

    /// Go's name for the kind of the elements (`schema.Name()` upstream), used in the
    /// error for a merge list without a merge key: the only such lists hold strings.
    pub(super) fn go_kind(self) -> &'static str {
        if self.0.is_some() {
            "struct"
        } else {
            "string"
        }
    }
}

/// How a list field merges, for server-side apply (src/api/apply): `Some(key)` for a list
/// merged element by element by `key`, `Some("")` for a merged list of primitives (a set),
/// `None` for a list replaced whole (atomic). `path` is the chain of field names from the
/// object's root, list elements skipped (`["spec", "template", "spec", "containers"]`).
/// Apply reads the same `patchMergeKey` knowledge strategic merge patch uses, so the two
/// agree on which lists are associative.
pub(crate) fn list_key(group: &str, kind: &str, path: &[&str]) -> Option<&'static str> {
    let (last, parents) = path.split_last()?;
    let mut schema = Schema::root(group, kind)?;
    for field in parents {
        schema = schema.field(field).0;
        schema.0?;
    }
    let (_, meta) = schema.field(last);
    meta.merge.then_some(meta.merge_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_type_is_reachable_or_a_root() {
        for (ty, field, ..) in FIELDS {
            let reachable = KINDS.iter().any(|(_, _, root)| root == ty)
                || *ty == "ObjectMeta"
                || FIELDS.iter().any(|(.., sub)| sub == ty);
            assert!(reachable, "{ty}.{field} cannot be reached from any kind");
        }
    }

    #[test]
    fn pod_template_paths_resolve() {
        let d = Schema::root("apps", "Deployment").unwrap();
        let (spec, _) = d.field("spec");
        let (tpl, _) = spec.field("template");
        let (pod, _) = tpl.field("spec");
        let (container, meta) = pod.field("containers");
        assert!(meta.merge);
        assert_eq!(meta.merge_key, "name");
        let (_, env) = container.field("env");
        assert_eq!(env.merge_key, "name");
        let (_, strategy) = spec.field("strategy");
        assert!(!strategy.merge && !strategy.replace);
        let (meta_schema, _) = d.field("metadata");
        let (_, fin) = meta_schema.field("finalizers");
        assert!(fin.merge);
        assert_eq!(fin.merge_key, "");
    }

    #[test]
    fn list_key_walks_field_paths() {
        let c = ["spec", "template", "spec", "containers"];
        assert_eq!(list_key("apps", "Deployment", &c), Some("name"));
        let ports = ["spec", "template", "spec", "containers", "ports"];
        assert_eq!(
            list_key("apps", "Deployment", &ports),
            Some("containerPort")
        );
        assert_eq!(list_key("", "Pod", &["metadata", "finalizers"]), Some(""));
        assert_eq!(list_key("", "Pod", &["spec", "containers", "args"]), None);
        assert_eq!(list_key("", "ConfigMap", &["data"]), None);
        assert_eq!(list_key("example.com", "Widget", &["spec", "items"]), None);
    }
}
