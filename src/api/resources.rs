//! The one table of resources the API serves. Everything that differs between kinds is
//! data here (group, version, names, scope, verbs, subresources, supported field
//! selectors) plus small hooks (defaulting, validation). The generic request pipeline
//! reads this table; there is no per-kind handler.

use super::defaults::{self, DefaultFn};
use super::validation::{self, ValidateFn};

/// One subresource of a resource (`pods/status`, `deployments/scale`, ...).
#[derive(Debug)]
pub struct Subresource {
    /// Name after the slash, e.g. `status`.
    pub name: &'static str,
    /// Group of the kind the subresource returns (`""` = core).
    pub group: &'static str,
    /// Version of the kind it returns.
    pub version: &'static str,
    /// Kind it returns.
    pub kind: &'static str,
    /// Verbs it supports.
    pub verbs: &'static [&'static str],
}

/// How a resource's `status` relates to its main endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPolicy {
    /// No status subresource: the whole object is written through the main endpoint.
    None,
    /// A status subresource exists: the main endpoint ignores `status`, the status
    /// endpoint changes only `status`; create resets `status`.
    Split,
    /// Like `Split`, but create keeps the given `status` (nodes register with it).
    SplitKeepOnCreate,
}

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version served (one per resource).
    pub version: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Plural resource name used in URLs, e.g. `pods`.
    pub plural: &'static str,
    /// Singular name, e.g. `pod`.
    pub singular: &'static str,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl, e.g. `po`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Verbs on the main resource.
    pub verbs: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Subresource],
    /// Status split.
    pub status: StatusPolicy,
    /// Names are DNS-1123 labels (namespaces, services) instead of subdomains.
    pub name_is_label: bool,
    /// Names need only be valid path segments (RBAC objects such as `system:node`),
    /// like upstream's `ValidatePathSegmentName`.
    pub name_is_path_segment: bool,
    /// Field selectors supported besides `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// Defaulting hook.
    pub defaults: DefaultFn,
    /// Validation hook.
    pub validate: ValidateFn,
    /// `metadata.generation` counts changes outside metadata and status (kinds whose
    /// controllers report `status.observedGeneration`).
    pub generation: bool,
    /// Create computes an answer from the request (access reviews, whoami) and stores
    /// nothing.
    pub ephemeral: bool,
    /// Runs on create after defaulting, once uid and name are set (e.g. a Job's generated
    /// selector).
    pub on_create: fn(&mut serde_json::Value),
    /// Runs on update after defaulting with the old object (e.g. a Service keeps its
    /// allocated cluster IP and node ports).
    pub on_update: fn(&mut serde_json::Value, &serde_json::Value),
    /// Checks that the JSON decodes as the typed kind (field types), like upstream's decoder.
    pub typed: fn(&serde_json::Value) -> Result<(), String>,
    /// Served by converting to and from another version of the same resource, which is
    /// the one stored (and the one the server's own code uses); see `api::convert`.
    pub conversion: Option<&'static super::convert::Conversion>,
}

impl Resource {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The store key prefix of every object of this resource (ends with `/`).
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store key prefix of one namespace (or all objects when `namespace` is empty).
    pub fn key_prefix_in(&self, namespace: &str) -> String {
        let mut p = self.key_prefix();
        if self.namespaced && !namespace.is_empty() {
            p.push_str(namespace);
            p.push('/');
        }
        p
    }

    /// The store key of one object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        let mut k = self.key_prefix_in(namespace);
        k.push_str(name);
        k
    }

    /// The subresource named `name`.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether `verb` is allowed on the main resource.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// Whether `field` may be used in a field selector.
    pub fn supports_field(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace") || self.fields.contains(&field)
    }
}

const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const SUB_RW: &[&str] = &["get", "patch", "update"];

const fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        group,
        version,
        kind,
        verbs: SUB_RW,
    }
}

const fn scale() -> Subresource {
    Subresource {
        name: "scale",
        group: "autoscaling",
        version: "v1",
        kind: "Scale",
        verbs: SUB_RW,
    }
}

/// Builds a resource with the common defaults; the table overrides what differs.
const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names: NONE,
        categories: NONE,
        verbs: RW,
        subresources: &[],
        status: StatusPolicy::None,
        name_is_label: false,
        name_is_path_segment: false,
        fields: NONE,
        defaults: defaults::none,
        validate: validation::none,
        typed: untyped,
        on_create: |_| {},
        on_update: |_, _| {},
        ephemeral: false,
        generation: false,
        conversion: None,
    }
}

/// A create-only resource whose create computes an answer (reviews).
const fn review(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        verbs: &["create"],
        ephemeral: true,
        ..res(group, "v1", kind, plural, singular, namespaced)
    }
}

/// A Job's generated selector and labels, which need the new uid.
fn job_on_create(obj: &mut serde_json::Value) {
    let uid = super::meta::uid(obj).to_string();
    defaults::job_selector(obj, &uid);
}

/// No typed check (kinds without a k8s-openapi type).
fn untyped(_: &serde_json::Value) -> Result<(), String> {
    Ok(())
}

/// Decodes the JSON as `T` to find type errors (a string where a number belongs, ...).
fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every served resource, core group first (discovery keeps this order).
pub static RESOURCES: &[Resource] = &[
    // core/v1
    Resource {
        short_names: &["po"],
        categories: ALL,
        subresources: &[
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
            Subresource {
                name: "attach",
                group: "",
                version: "v1",
                kind: "PodAttachOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "eviction",
                group: "policy",
                version: "v1",
                kind: "Eviction",
                verbs: &["create"],
            },
            Subresource {
                name: "exec",
                group: "",
                version: "v1",
                kind: "PodExecOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
            Subresource {
                name: "portforward",
                group: "",
                version: "v1",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"],
            },
            status("", "v1", "Pod"),
        ],
        status: StatusPolicy::Split,
        generation: true,
        fields: POD_FIELDS,
        typed: typed::<k8s_openapi::api::core::v1::Pod>,
        defaults: defaults::pod,
        validate: validation::pod,
        on_create: defaults::default_toleration_seconds,
        ..res("", "v1", "Pod", "pods", "pod", true)
    },
    Resource {
        short_names: &["ns"],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        subresources: &[
            Subresource {
                name: "finalize",
                group: "",
                version: "v1",
                kind: "Namespace",
                verbs: &["update"],
            },
            status("", "v1", "Namespace"),
        ],
        status: StatusPolicy::Split,
        name_is_label: true,
        fields: &["status.phase"],
        typed: typed::<k8s_openapi::api::core::v1::Namespace>,
        defaults: defaults::namespace,
        validate: validation::namespace,
        ..res("", "v1", "Namespace", "namespaces", "namespace", false)
    },
    Resource {
        short_names: &["no"],
        subresources: &[status("", "v1", "Node")],
        status: StatusPolicy::SplitKeepOnCreate,
        fields: &["spec.unschedulable"],
        typed: typed::<k8s_openapi::api::core::v1::Node>,
        defaults: defaults::node,
        validate: validation::node,
        ..res("", "v1", "Node", "nodes", "node", false)
    },
    Resource {
        short_names: &["svc"],
        categories: ALL,
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        subresources: &[status("", "v1", "Service")],
        status: StatusPolicy::Split,
        name_is_label: true,
        fields: &["spec.clusterIP", "spec.type"],
        typed: typed::<k8s_openapi::api::core::v1::Service>,
        on_update: defaults::service_keep_allocated,
        defaults: defaults::service,
        validate: validation::service,
        ..res("", "v1", "Service", "services", "service", true)
    },
    Resource {
        short_names: &["ep"],
        typed: typed::<k8s_openapi::api::core::v1::Endpoints>,
        ..res("", "v1", "Endpoints", "endpoints", "endpoints", true)
    },
    Resource {
        short_names: &["cm"],
        typed: typed::<k8s_openapi::api::core::v1::ConfigMap>,
        defaults: defaults::none,
        validate: validation::config_map,
        ..res("", "v1", "ConfigMap", "configmaps", "configmap", true)
    },
    Resource {
        fields: &["type"],
        typed: typed::<k8s_openapi::api::core::v1::Secret>,
        defaults: defaults::secret,
        validate: validation::secret,
        ..res("", "v1", "Secret", "secrets", "secret", true)
    },
    Resource {
        short_names: &["sa"],
        subresources: &[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        }],
        typed: typed::<k8s_openapi::api::core::v1::ServiceAccount>,
        ..res(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
        )
    },
    Resource {
        short_names: &["ev"],
        fields: EVENT_FIELDS,
        typed: typed::<k8s_openapi::api::core::v1::Event>,
        ..res("", "v1", "Event", "events", "event", true)
    },
    Resource {
        short_names: &["rc"],
        categories: ALL,
        subresources: &[scale(), status("", "v1", "ReplicationController")],
        status: StatusPolicy::Split,
        generation: true,
        fields: &["status.replicas"],
        defaults: defaults::replication_controller,
        validate: validation::replication_controller,
        typed: typed::<k8s_openapi::api::core::v1::ReplicationController>,
        ..res(
            "",
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            "replicationcontroller",
            true,
        )
    },
    Resource {
        short_names: &["pv"],
        subresources: &[status("", "v1", "PersistentVolume")],
        status: StatusPolicy::Split,
        defaults: defaults::persistent_volume,
        validate: validation::persistent_volume,
        typed: typed::<k8s_openapi::api::core::v1::PersistentVolume>,
        ..res(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            "persistentvolume",
            false,
        )
    },
    Resource {
        short_names: &["pvc"],
        subresources: &[status("", "v1", "PersistentVolumeClaim")],
        status: StatusPolicy::Split,
        defaults: defaults::persistent_volume_claim,
        validate: validation::persistent_volume_claim,
        typed: typed::<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
        ..res(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            true,
        )
    },
    Resource {
        short_names: &["limits"],
        typed: typed::<k8s_openapi::api::core::v1::LimitRange>,
        ..res("", "v1", "LimitRange", "limitranges", "limitrange", true)
    },
    Resource {
        short_names: &["quota"],
        subresources: &[status("", "v1", "ResourceQuota")],
        status: StatusPolicy::Split,
        typed: typed::<k8s_openapi::api::core::v1::ResourceQuota>,
        ..res(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            "resourcequota",
            true,
        )
    },
    // apps/v1
    Resource {
        short_names: &["deploy"],
        categories: ALL,
        subresources: &[scale(), status("apps", "v1", "Deployment")],
        status: StatusPolicy::Split,
        generation: true,
        defaults: defaults::deployment,
        validate: validation::deployment,
        typed: typed::<k8s_openapi::api::apps::v1::Deployment>,
        ..res(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            "deployment",
            true,
        )
    },
    Resource {
        short_names: &["rs"],
        categories: ALL,
        subresources: &[scale(), status("apps", "v1", "ReplicaSet")],
        status: StatusPolicy::Split,
        generation: true,
        fields: &["status.replicas"],
        defaults: defaults::replica_set,
        validate: validation::replica_set,
        typed: typed::<k8s_openapi::api::apps::v1::ReplicaSet>,
        ..res(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            true,
        )
    },
    Resource {
        short_names: &["sts"],
        categories: ALL,
        subresources: &[scale(), status("apps", "v1", "StatefulSet")],
        status: StatusPolicy::Split,
        generation: true,
        defaults: defaults::stateful_set,
        validate: validation::stateful_set,
        typed: typed::<k8s_openapi::api::apps::v1::StatefulSet>,
        name_is_label: true,
        ..res(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            "statefulset",
            true,
        )
    },
    Resource {
        short_names: &["ds"],
        categories: ALL,
        subresources: &[status("apps", "v1", "DaemonSet")],
        status: StatusPolicy::Split,
        generation: true,
        typed: typed::<k8s_openapi::api::apps::v1::DaemonSet>,
        defaults: defaults::daemon_set,
        validate: validation::daemon_set,
        ..res("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true)
    },
    Resource {
        typed: typed::<k8s_openapi::api::apps::v1::ControllerRevision>,
        ..res(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            "controllerrevision",
            true,
        )
    },
    // batch/v1
    Resource {
        categories: ALL,
        subresources: &[status("batch", "v1", "Job")],
        status: StatusPolicy::Split,
        generation: true,
        fields: &["status.successful"],
        typed: typed::<k8s_openapi::api::batch::v1::Job>,
        on_create: job_on_create,
        defaults: defaults::job,
        validate: validation::job,
        ..res("batch", "v1", "Job", "jobs", "job", true)
    },
    Resource {
        short_names: &["cj"],
        categories: ALL,
        subresources: &[status("batch", "v1", "CronJob")],
        status: StatusPolicy::Split,
        generation: true,
        typed: typed::<k8s_openapi::api::batch::v1::CronJob>,
        defaults: defaults::cron_job,
        validate: validation::cron_job,
        ..res("batch", "v1", "CronJob", "cronjobs", "cronjob", true)
    },
    // authentication.k8s.io/v1, authorization.k8s.io/v1
    review(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
        false,
    ),
    // Webhook token authentication (kubelets): answered by server::http::token_review.
    review(
        "authentication.k8s.io",
        "TokenReview",
        "tokenreviews",
        "tokenreview",
        false,
    ),
    // kubectl 1.27 asks the beta version for `auth whoami`.
    Resource {
        version: "v1beta1",
        ..review(
            "authentication.k8s.io",
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
            false,
        )
    },
    review(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true,
    ),
    review(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
        false,
    ),
    // certificates.k8s.io/v1
    Resource {
        short_names: &["csr"],
        subresources: &[
            Subresource {
                name: "approval",
                group: "certificates.k8s.io",
                version: "v1",
                kind: "CertificateSigningRequest",
                verbs: SUB_RW,
            },
            status("certificates.k8s.io", "v1", "CertificateSigningRequest"),
        ],
        status: StatusPolicy::Split,
        fields: &["spec.signerName"],
        typed: typed::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>,
        ..res(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            "certificatesigningrequest",
            false,
        )
    },
    // autoscaling/v2
    Resource {
        short_names: &["hpa"],
        categories: ALL,
        subresources: &[status("autoscaling", "v2", "HorizontalPodAutoscaler")],
        status: StatusPolicy::Split,
        generation: true,
        typed: typed::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
        ..res(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            true,
        )
    },
    // autoscaling/v1: the v2 objects, converted (kubectl up to 1.32 creates HPAs here)
    Resource {
        short_names: &["hpa"],
        categories: ALL,
        subresources: &[status("autoscaling", "v1", "HorizontalPodAutoscaler")],
        status: StatusPolicy::Split,
        generation: true,
        typed: typed::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>,
        conversion: Some(&super::convert::HPA_V1),
        ..res(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            true,
        )
    },
    // coordination.k8s.io/v1
    Resource {
        typed: typed::<k8s_openapi::api::coordination::v1::Lease>,
        ..res(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            "lease",
            true,
        )
    },
    // discovery.k8s.io/v1
    Resource {
        typed: typed::<k8s_openapi::api::discovery::v1::EndpointSlice>,
        ..res(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            true,
        )
    },
    // events.k8s.io/v1
    Resource {
        short_names: &["ev"],
        typed: typed::<k8s_openapi::api::events::v1::Event>,
        ..res("events.k8s.io", "v1", "Event", "events", "event", true)
    },
    // networking.k8s.io/v1
    Resource {
        short_names: &["ing"],
        subresources: &[status("networking.k8s.io", "v1", "Ingress")],
        status: StatusPolicy::Split,
        generation: true,
        typed: typed::<k8s_openapi::api::networking::v1::Ingress>,
        ..res(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            "ingress",
            true,
        )
    },
    Resource {
        short_names: &["netpol"],
        typed: typed::<k8s_openapi::api::networking::v1::NetworkPolicy>,
        ..res(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "networkpolicy",
            true,
        )
    },
    // policy/v1
    Resource {
        short_names: &["pdb"],
        subresources: &[status("policy", "v1", "PodDisruptionBudget")],
        status: StatusPolicy::Split,
        generation: true,
        typed: typed::<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
        ..res(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            true,
        )
    },
    // rbac.authorization.k8s.io/v1
    Resource {
        typed: typed::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>,
        name_is_path_segment: true,
        ..res(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            "clusterrolebinding",
            false,
        )
    },
    Resource {
        typed: typed::<k8s_openapi::api::rbac::v1::ClusterRole>,
        name_is_path_segment: true,
        ..res(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            "clusterrole",
            false,
        )
    },
    Resource {
        typed: typed::<k8s_openapi::api::rbac::v1::RoleBinding>,
        name_is_path_segment: true,
        ..res(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            "rolebinding",
            true,
        )
    },
    Resource {
        typed: typed::<k8s_openapi::api::rbac::v1::Role>,
        name_is_path_segment: true,
        ..res(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            "role",
            true,
        )
    },
    // storage.k8s.io/v1
    Resource {
        short_names: &["sc"],
        typed: typed::<k8s_openapi::api::storage::v1::StorageClass>,
        ..res(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            "storageclass",
            false,
        )
    },
    // scheduling.k8s.io/v1
    Resource {
        short_names: &["pc"],
        typed: typed::<k8s_openapi::api::scheduling::v1::PriorityClass>,
        defaults: defaults::priority_class,
        validate: validation::priority_class,
        ..res(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            "priorityclass",
            false,
        )
    },
    // apiextensions.k8s.io/v1
    Resource {
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        subresources: &[status(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )],
        status: StatusPolicy::Split,
        generation: true,
        ..res(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "customresourcedefinition",
            false,
        )
    },
];

/// The entry objects of `res` are stored under: `res` itself, or for a version served by
/// conversion, the stored version's entry.
pub fn stored(res: &'static Resource) -> &'static Resource {
    res.conversion
        .and_then(|c| find(res.group, c.stored_version, res.plural))
        .unwrap_or(res)
}

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by group and kind.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// Every served (group, version) pair, in table order (core first).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.iter().any(|(g, v)| *g == r.group && *v == r.version) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The served groups in discovery order, each with its versions (preferred first).
pub fn group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in groups() {
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

/// The core `namespaces` resource (the registry and the namespace controller need it).
pub fn namespaces() -> &'static Resource {
    find("", "v1", "namespaces").expect("namespaces are in the resource table")
}

/// The namespaces every cluster has from its first start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_group() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "duplicate {}/{}",
                    a.group,
                    a.plural
                );
            }
        }
    }

    #[test]
    fn keys_do_not_collide_across_prefixes() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key("default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pods.key_prefix_in(""), "/registry/core/pods/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key("", "default"), "/registry/core/namespaces/default");
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().api_version(),
            "apps/v1"
        );
    }
}
