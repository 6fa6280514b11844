//! The generic store path every resource goes through: create, get, list, update,
//! patch, delete and delete-collection over raw JSON objects, with the per-resource
//! hooks of the resource table (defaulting, validation, status split) applied in one
//! place. This is the `k8s.io/apiserver` generic registry idea, small.
//!
//! Objects are stored in the form [`meta::to_stored_bytes`] produces; the store's
//! revision becomes `metadata.resourceVersion` on the way out.

use crate::api::meta;
use crate::api::patch::{self, PatchType};
use crate::api::resources::{self, Resource, StatusPolicy};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::status::{ApiError, FieldError};
use crate::api::validation;
use crate::server::store::{KeyValue, Revision, Store, StoreError};

mod create;
mod delete;
mod update;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Which part of an object a write targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The main endpoint (everything but `status` for resources with a status split).
    Main,
    /// The `status` subresource (only `status`).
    Status,
}

/// Options of create, update and patch.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run everything but the write.
    pub dry_run: bool,
    /// `fieldValidation`: what to do about unknown or duplicate fields.
    pub field_validation: FieldValidation,
    /// Warnings for the response (`Warning: 299 - "..."` headers).
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
    /// `fieldManager`: who makes the change, recorded in `metadata.managedFields`
    /// (required for server-side apply). Empty when not given.
    pub field_manager: String,
    /// The manager to record when `fieldManager` is empty: the User-Agent's prefix.
    pub user_agent_manager: String,
    /// `force` (server-side apply only): take over fields other managers own.
    pub force: Option<bool>,
    /// The subresource a write comes through (`scale`), recorded in managedFields.
    pub subresource: &'static str,
    /// The node name when the writer is a node identity: NodeRestriction admission
    /// ([`crate::server::rbac::node_restriction`]) applies.
    pub node: Option<String>,
}

impl WriteOptions {
    /// The manager of a non-apply write.
    fn manager(&self) -> &str {
        if self.field_manager.is_empty() {
            &self.user_agent_manager
        } else {
            &self.field_manager
        }
    }
}

/// The `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them and warn (the default).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

/// Checks an object for fields its kind does not have (and, given the raw JSON body,
/// duplicated fields). `baseline`: problems the old object already had are not reported
/// again (patches). Strict fails with upstream's 400; Warn records warnings.
pub fn check_fields(
    res: &Resource,
    obj: &Value,
    raw: Option<&[u8]>,
    baseline: Option<&Value>,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    if opts.field_validation == FieldValidation::Ignore {
        return Ok(());
    }
    let known_bad: Vec<String> = baseline
        .map(|old| crate::api::schema::unknown_fields(res.group, res.version, res.kind, old))
        .unwrap_or_default();
    let mut problems: Vec<String> =
        crate::api::schema::unknown_fields(res.group, res.version, res.kind, obj)
            .into_iter()
            .filter(|p| !known_bad.contains(p))
            .map(|p| format!("unknown field {p:?}"))
            .collect();
    if let Some(raw) = raw {
        problems.extend(
            crate::api::schema::duplicate_fields(raw)
                .into_iter()
                .map(|p| format!("duplicate field {p:?}")),
        );
    }
    if problems.is_empty() {
        return Ok(());
    }
    match opts.field_validation {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
            res.kind,
            res.version,
            res.kind,
            problems.join(", ")
        ))),
        _ => {
            if let Ok(mut w) = opts.warnings.lock() {
                w.extend(problems);
            }
            Ok(())
        }
    }
}

/// Options of delete (from the query and the `DeleteOptions` body).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `propagationPolicy`: Background, Foreground or Orphan.
    pub propagation: Option<String>,
}

/// Options of list (and of the initial state of a watch).
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = no limit).
    pub limit: usize,
    /// `continue` token from a previous page.
    pub continue_token: Option<String>,
}

/// One object as read from the store.
#[derive(Clone, Debug)]
pub struct StoredObject {
    /// Stored bytes (without resourceVersion).
    pub bytes: Arc<[u8]>,
    /// Its revision.
    pub revision: Revision,
}

impl StoredObject {
    fn from_kv(kv: KeyValue) -> Self {
        StoredObject {
            bytes: kv.value,
            revision: kv.mod_revision,
        }
    }

    /// The JSON bytes with `metadata.resourceVersion` set.
    pub fn json_bytes(&self) -> Vec<u8> {
        meta::inject_resource_version(&self.bytes, self.revision)
    }

    /// The decoded object with `metadata.resourceVersion` set.
    pub fn value(&self) -> Result<Value, ApiError> {
        meta::decode_stored(&self.bytes, self.revision)
            .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))
    }
}

/// A page of a list.
#[derive(Debug)]
pub struct ListResult {
    /// Matching objects in key order.
    pub items: Vec<StoredObject>,
    /// The list's resourceVersion.
    pub revision: Revision,
    /// Token for the next page.
    pub continue_token: Option<String>,
    /// Objects left after this page (when cut short, before filtering).
    pub remaining: Option<u64>,
}

/// What a delete did.
#[derive(Debug)]
pub struct Deleted {
    /// The object: its last state, or its state with `deletionTimestamp` when it waits
    /// for finalizers.
    pub object: Value,
    /// True when the object is gone from the store.
    pub removed: bool,
}

/// The generic registry over a store.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    /// ClusterIP and NodePort allocation for Services (set by the server at start; a
    /// registry without one stores Services as given).
    services: Arc<std::sync::OnceLock<Arc<crate::server::services::ServiceAllocator>>>,
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        other => ApiError::internal(other.to_string()),
    }
}

/// Whether a resourceVersion given by a client is a number.
fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// Checks `apiVersion` and `kind` of a request body against the resource.
pub fn check_type(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    let expected_kind = res.kind;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON or YAML object",
        ));
    }
    let kind = obj["kind"].as_str().unwrap_or("");
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&obj.to_string(), 200)
        )));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{}'",
            truncate(&obj.to_string(), 200)
        )));
    }
    let expected_gv = res.api_version();
    if api_version != expected_gv {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected_gv})"
        )));
    }
    if kind != expected_kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({expected_kind})"
        )));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Registry {
            store,
            services: Default::default(),
        }
    }

    /// Makes Service creates and updates allocate ClusterIPs and NodePorts with `alloc`
    /// (once; later calls are ignored).
    pub fn set_service_allocator(&self, alloc: Arc<crate::server::services::ServiceAllocator>) {
        let _ = self.services.set(alloc);
    }

    /// The Service allocator, when the server set one.
    pub fn service_allocator(&self) -> Option<&Arc<crate::server::services::ServiceAllocator>> {
        self.services.get()
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object.
    pub async fn get(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
    ) -> Result<StoredObject, ApiError> {
        match self.store.get(res.key(ns, name)).await.map_err(store_err)? {
            Some(kv) => Ok(StoredObject::from_kv(kv)),
            None => Err(ApiError::not_found(res.group, res.plural, name)),
        }
    }

    /// Lists objects in `ns` (all namespaces when empty) matching the selectors.
    pub async fn list(
        &self,
        res: &Resource,
        ns: &str,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let prefix = res.key_prefix_in(ns);
        let mut start_after = match &opts.continue_token {
            Some(t) => Some(decode_continue(t, &prefix)?),
            None => None,
        };
        let filtering = !opts.labels.is_empty() || !opts.fields.fields().is_empty();
        // Fast path: an exact metadata.name is a point read.
        if let Some(name) = opts
            .fields
            .exact("metadata.name")
            .filter(|_| !ns.is_empty() || !res.namespaced)
        {
            // The list's revision must not be newer than the state read: a watch from
            // it has to replay every change after the read (a later revision would hide
            // a deletion that lands between the read and the answer, and a client
            // waiting for that deletion would wait forever). The revision before the
            // read, or the object's own if newer, is exact for this one key.
            let mut revision = self.store.current_revision();
            let kv = self.store.get(res.key(ns, name)).await.map_err(store_err)?;
            let mut items = Vec::new();
            if let Some(kv) = kv {
                let obj = StoredObject::from_kv(kv);
                revision = revision.max(obj.revision);
                if self.matches(res, &obj, opts)? {
                    items.push(obj);
                }
            }
            return Ok(ListResult {
                items,
                revision,
                continue_token: None,
                remaining: None,
            });
        }
        // Filtering may drop items, so read bigger pages and stop once `limit` matched.
        let page = if opts.limit > 0 && filtering {
            opts.limit.max(500)
        } else {
            opts.limit
        };
        let mut items = Vec::new();
        let mut revision: Option<Revision> = None;
        loop {
            let listed = self
                .store
                .list(prefix.clone(), start_after.clone(), page)
                .await
                .map_err(store_err)?;
            let revision = *revision.get_or_insert(listed.revision);
            let n = listed.items.len();
            let more_in_store = listed.continue_after.is_some();
            for (i, kv) in listed.items.into_iter().enumerate() {
                let key = kv.key.clone();
                let obj = StoredObject::from_kv(kv);
                if !filtering || self.matches(res, &obj, opts)? {
                    items.push(obj);
                }
                if opts.limit > 0 && items.len() == opts.limit {
                    let left_in_page = (n - i - 1) as u64;
                    if left_in_page == 0 && !more_in_store {
                        return Ok(ListResult {
                            items,
                            revision,
                            continue_token: None,
                            remaining: None,
                        });
                    }
                    let remaining = if filtering {
                        None
                    } else {
                        Some(left_in_page + listed.remaining.unwrap_or(0))
                    };
                    let token = encode_continue(&key, &prefix, revision);
                    return Ok(ListResult {
                        items,
                        revision,
                        continue_token: Some(token),
                        remaining,
                    });
                }
            }
            match listed.continue_after {
                Some(last) => start_after = Some(last),
                None => {
                    return Ok(ListResult {
                        items,
                        revision,
                        continue_token: None,
                        remaining: None,
                    })
                }
            }
        }
    }

    /// Whether a stored object matches the list's selectors.
    pub fn matches(
        &self,
        res: &Resource,
        obj: &StoredObject,
        opts: &ListOptions,
    ) -> Result<bool, ApiError> {
        if opts.labels.is_empty() && opts.fields.fields().is_empty() {
            return Ok(true);
        }
        let v = obj.value()?;
        Ok(matches_value(res, &v, opts))
    }

    /// Creates the system namespaces that every cluster has, if missing.
    pub async fn ensure_system_namespaces(&self) -> Result<(), ApiError> {
        let res = resources::namespaces();
        for ns in resources::SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(res, "", obj, &WriteOptions::default()).await {
                Ok(_) => tracing::info!(namespace = ns, "created system namespace"),
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether a decoded object matches label and field selectors.
pub fn matches_value(res: &Resource, v: &Value, opts: &ListOptions) -> bool {
    if !opts.labels.matches(meta::labels(v)) {
        return false;
    }
    if opts.fields.fields().is_empty() {
        return true;
    }
    let _ = res;
    opts.fields.matches(&|f: &str| meta::field_string(v, f))
}

fn has_spec_finalizers(ns: &Value) -> bool {
    ns["spec"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

/// The 400 upstream returns when a body does not decode as its kind.
fn decode_error(res: &Resource, err: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version {:?} cannot be handled as a {}: {err}",
        res.kind, res.version, res.kind
    ))
}

fn encode_continue(last_key: &str, prefix: &str, rev: Revision) -> String {
    use base64::Engine;
    let rel = last_key.strip_prefix(prefix).unwrap_or(last_key);
    let doc = json!({"v": "k3rs.continue/v1", "rv": rev, "start": rel});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<String, ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = doc["start"].as_str().ok_or_else(bad)?;
    if start.contains("..") {
        return Err(bad());
    }
    Ok(format!("{prefix}{start}"))
}
