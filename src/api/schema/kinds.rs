//! Which k8s-openapi type describes each kind, and the schema definitions generated from
//! those types (the crate's `schemars` impls), post-processed into the shape of upstream's
//! OpenAPI v3 documents: `x-kubernetes-group-version-kind` on kinds and their lists, the
//! strategic-merge-patch extensions upstream's Go types declare, `default: {}` on embedded
//! structs that can never be null.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// Prefix of every `$ref` in the documents.
pub(super) const REF_PREFIX: &str = "#/components/schemas/";

/// One kind and the generated type that describes it.
pub(super) struct KindType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Component name, e.g. `io.k8s.api.core.v1.Pod`.
    pub name: fn() -> Cow<'static, str>,
    add: fn(&mut SchemaGenerator) -> Schema,
}

impl KindType {
    /// Adds this kind's schema (and everything it references) to `generator`.
    pub fn add_to(&self, generator: &mut SchemaGenerator) {
        (self.add)(generator);
    }
}

const fn entry<T: JsonSchema + k8s_openapi::Resource>() -> KindType {
    KindType {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        name: T::schema_name,
        add: SchemaGenerator::subschema_for::<T>,
    }
}

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2,
    batch::v1 as batch, certificates::v1 as certificates, coordination::v1 as coordination,
    core::v1 as core, discovery::v1 as discovery, events::v1 as events,
    networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

/// Every kind with a schema: the served kinds of `resources::RESOURCES` plus the kinds
/// their subresources take or return (Scale, Binding, Eviction).
pub(super) static KINDS: &[KindType] = &[
    entry::<core::Pod>(),
    entry::<core::Namespace>(),
    entry::<core::Node>(),
    entry::<core::Service>(),
    entry::<core::Endpoints>(),
    entry::<core::ConfigMap>(),
    entry::<core::Secret>(),
    entry::<core::ServiceAccount>(),
    entry::<core::Event>(),
    entry::<core::ReplicationController>(),
    entry::<core::PersistentVolume>(),
    entry::<core::PersistentVolumeClaim>(),
    entry::<core::LimitRange>(),
    entry::<core::ResourceQuota>(),
    entry::<core::Binding>(),
    entry::<apps::Deployment>(),
    entry::<apps::ReplicaSet>(),
    entry::<apps::StatefulSet>(),
    entry::<apps::DaemonSet>(),
    entry::<apps::ControllerRevision>(),
    entry::<batch::Job>(),
    entry::<batch::CronJob>(),
    entry::<certificates::CertificateSigningRequest>(),
    entry::<autoscaling_v2::HorizontalPodAutoscaler>(),
    entry::<autoscaling_v1::HorizontalPodAutoscaler>(),
    entry::<autoscaling_v1::Scale>(),
    entry::<coordination::Lease>(),
    entry::<discovery::EndpointSlice>(),
    entry::<events::Event>(),
    entry::<networking::Ingress>(),
    entry::<networking::NetworkPolicy>(),
    entry::<policy::PodDisruptionBudget>(),
    entry::<policy::Eviction>(),
    entry::<rbac::ClusterRoleBinding>(),
    entry::<rbac::ClusterRole>(),
    entry::<rbac::RoleBinding>(),
    entry::<rbac::Role>(),
    entry::<scheduling::PriorityClass>(),
    entry::<storage::StorageClass>(),
    entry::<apiextensions::CustomResourceDefinition>(),
];

/// The type of a kind, if it has one.
pub(super) fn find(group: &str, version: &str, kind: &str) -> Option<&'static KindType> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// Patch strategies and merge keys as upstream's Go types declare them in struct tags
/// (`patchStrategy:"merge" patchMergeKey:"name"`): (component, property, strategy, key).
/// k8s-openapi encodes these only as code (its `DeepMerge` impls), so they are data here.
/// kubectl computes client-side apply patches from them.
#[rustfmt::skip]
const PATCH_META: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", ""),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", "merge", "name"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", ""),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", "type"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", "type"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", "replace", ""),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", "type"),
];

/// A generator whose `$ref`s point into `components.schemas` and whose transforms make
/// the output OpenAPI 3.0 (a `$ref` with a description becomes `allOf: [{$ref}]`).
pub(super) fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3().into_generator()
}

/// The component schemas for `kinds`, the `<Kind>List`s of `lists`, and `extra` (schemas
/// the operations reference), post-processed like upstream's documents.
pub(super) fn definitions(
    kinds: &[&KindType],
    lists: &[&KindType],
    extra: &[fn(&mut SchemaGenerator) -> Schema],
) -> Map<String, Value> {
    let mut generator = generator();
    for k in kinds {
        k.add_to(&mut generator);
    }
    if !lists.is_empty() {
        generator.subschema_for::<meta::ListMeta>();
    }
    for add in extra {
        add(&mut generator);
    }
    let mut defs = generator.take_definitions(true);
    for k in kinds {
        if let Some(Value::Object(schema)) = defs.get_mut((k.name)().as_ref()) {
            schema.insert(GVK.into(), json!([gvk(k.group, k.version, k.kind)]));
            // k8s-openapi's `metadata` is not an `Option`, so it lists it as required;
            // upstream does not (and `kubectl explain` would print `-required-`).
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                required.retain(|r| r != "metadata");
                if required.is_empty() {
                    schema.remove("required");
                }
            }
        }
    }
    for k in lists {
        let list = list_schema(k, &defs);
        defs.insert(format!("{}List", (k.name)()), list);
    }
    for (component, property, strategy, key) in PATCH_META {
        let Some(p) = defs
            .get_mut(*component)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !strategy.is_empty() {
            p.insert("x-kubernetes-patch-strategy".into(), (*strategy).into());
        }
        if !key.is_empty() {
            p.insert("x-kubernetes-patch-merge-key".into(), (*key).into());
        }
    }
    add_defaults(&mut defs);
    let mut sorted: Vec<(String, Value)> = defs.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

/// The extension naming the kind(s) a schema or an operation belongs to.
pub(super) const GVK: &str = "x-kubernetes-group-version-kind";

/// `{"group": .., "kind": .., "version": ..}` (upstream's key order).
pub(super) fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

/// `<Kind>List`, shaped like upstream's: apiVersion, items, kind, metadata.
fn list_schema(k: &KindType, defs: &Map<String, Value>) -> Value {
    let name = (k.name)();
    let prop = |p: &str| {
        defs.get(name.as_ref())
            .and_then(|s| s.get("properties"))
            .and_then(|s| s.get(p))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{}List is a list of {} objects.", k.kind, k.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": prop("apiVersion"),
            "items": {
                "description": format!("List of {} objects.", k.kind),
                "type": "array",
                "items": {"allOf": [{"$ref": format!("{REF_PREFIX}{name}")}], "default": {}},
            },
            "kind": prop("kind"),
            "metadata": {
                "allOf": [{"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}],
                "default": {},
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        GVK: [gvk(k.group, k.version, &format!("{}List", k.kind))],
    })
}

/// Upstream marks embedded structs that cannot be null (Go non-pointer fields: list items
/// and `metadata`) with `default: {}`; do the same where that is certain, wrapping bare
/// `$ref`s in `allOf` as upstream does.
fn add_defaults(defs: &mut Map<String, Value>) {
    let is_object: std::collections::HashSet<String> = defs
        .iter()
        .filter(|(_, s)| s.get("type").and_then(Value::as_str) == Some("object"))
        .map(|(n, _)| n.clone())
        .collect();
    let target = |s: &Value| -> Option<String> {
        let r = s
            .get("$ref")
            .or_else(|| s.get("allOf")?.get(0)?.get("$ref"))?
            .as_str()?;
        let name = r.strip_prefix(REF_PREFIX)?;
        is_object.contains(name).then(|| r.to_string())
    };
    for schema in defs.values_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (name, prop) in props.iter_mut() {
            if name == "metadata" {
                if let Some(r) = target(prop) {
                    // A bare `$ref` (no description, e.g. CertificateSigningRequest's)
                    // may have no siblings in OpenAPI 3.0: wrap it first.
                    if prop.get("$ref").is_some() {
                        *prop = json!({"allOf": [{"$ref": r}]});
                    }
                    if let Some(p) = prop.as_object_mut() {
                        p.entry("default").or_insert(json!({}));
                    }
                }
            }
            let Some(items) = prop.get_mut("items") else {
                continue;
            };
            if let Some(r) = target(items) {
                if items.get("$ref").is_some() {
                    *items = json!({"allOf": [{"$ref": r}], "default": {}});
                } else if let Some(i) = items.as_object_mut() {
                    i.entry("default").or_insert(json!({}));
                }
            }
        }
    }
}
