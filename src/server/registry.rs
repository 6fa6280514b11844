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

/// Resources whose `metadata.generation` counts spec changes.
fn tracks_generation(res: &Resource) -> bool {
    res.status != StatusPolicy::None
        && !matches!(
            res.plural,
            "namespaces"
                | "nodes"
                | "services"
                | "persistentvolumes"
                | "persistentvolumeclaims"
                | "resourcequotas"
        )
}

/// Everything but `metadata` and `status`, to tell whether the spec changed.
fn spec_part(obj: &Value) -> Vec<(&String, &Value)> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a resourceVersion given by a client is a number.
fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// The pod QoS class upstream computes at create time.
fn pod_qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod["spec"][f].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        let has = |m: Option<&Map<String, Value>>, k: &str| {
            m.is_some_and(|m| m.get(k).is_some_and(|v| !v.is_null()))
        };
        for r in ["cpu", "memory"] {
            if has(req, r) || has(lim, r) {
                any = true;
            }
            if !has(lim, r) {
                guaranteed = false;
            } else if has(req, r) && req.and_then(|m| m.get(r)) != lim.and_then(|m| m.get(r)) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The `status` a new object starts with, for resources with a status split.
fn initial_status(res: &Resource, obj: &mut Value) {
    match res.status {
        StatusPolicy::None | StatusPolicy::SplitKeepOnCreate => {}
        StatusPolicy::Split => {
            let status = match res.plural {
                "pods" => json!({"phase": "Pending", "qosClass": pod_qos_class(obj)}),
                "namespaces" => json!({"phase": "Active"}),
                "persistentvolumeclaims" | "persistentvolumes" => json!({"phase": "Pending"}),
                "services" => json!({"loadBalancer": {}}),
                _ => json!({}),
            };
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), status);
            }
        }
    }
}

/// Checks `apiVersion` and `kind` of a request body against the resource.
pub fn check_type(res: &Resource, obj: &Value, expected_kind: &str) -> Result<(), ApiError> {
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
        Registry { store }
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
            let revision = self.store.current_revision();
            let kv = self.store.get(res.key(ns, name)).await.map_err(store_err)?;
            let mut items = Vec::new();
            if let Some(kv) = kv {
                let obj = StoredObject::from_kv(kv);
                if self.matches(res, &obj, opts)? {
                    items.push(obj);
                }
            }
            return Ok(ListResult {
                items,
                revision: revision.max(self.store.current_revision()),
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

    /// Creates an object in `ns` (ignored for cluster-scoped resources).
    pub async fn create(
        &self,
        res: &Resource,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type(res, &obj, res.kind)?;
        let meta_map = meta::metadata_mut(&mut obj);
        let body_ns = meta_map
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if res.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            meta_map.insert("namespace".into(), json!(ns));
        } else {
            meta_map.remove("namespace");
        }
        if meta_map
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let generate_name = meta_map
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let explicit_name = meta_map
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if explicit_name.is_empty() && generate_name.is_empty() {
            return Err(ApiError::invalid(
                res.group,
                res.kind,
                "",
                vec![FieldError::required_msg(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta_map.remove(k);
        }
        (res.typed)(&obj).map_err(|e| decode_error(res, &e))?;
        initial_status(res, &mut obj);
        // Defaulting sees a new object (no uid yet), as upstream's does.
        (res.defaults)(&mut obj);
        let meta_map = meta::metadata_mut(&mut obj);
        meta_map.insert("uid".into(), json!(meta::new_uid()));
        meta_map.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        if tracks_generation(res) {
            meta_map.insert("generation".into(), json!(1));
        }
        (res.on_create)(&mut obj);
        if res.namespaced {
            self.check_namespace_open(ns).await?;
        }
        for attempt in 0..8 {
            if explicit_name.is_empty() {
                let name = format!("{generate_name}{}", meta::random_name_suffix());
                meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
            }
            let name = meta::name(&obj).to_string();
            let mut errs = validation::object_meta(&obj, None, res.namespaced, res.name_is_label);
            errs.extend((res.validate)(&obj, None));
            if !errs.is_empty() {
                return Err(ApiError::invalid(res.group, res.kind, &name, errs));
            }
            if opts.dry_run {
                return Ok(obj);
            }
            match self
                .store
                .create(res.key(ns, &name), meta::to_stored_bytes(&obj))
                .await
            {
                Ok(rev) => {
                    meta::metadata_mut(&mut obj)
                        .insert("resourceVersion".into(), json!(rev.to_string()));
                    return Ok(obj);
                }
                Err(StoreError::AlreadyExists(_)) if explicit_name.is_empty() && attempt < 7 => {
                    continue
                }
                Err(StoreError::AlreadyExists(_)) => {
                    return Err(ApiError::already_exists(res.group, res.plural, &name))
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ApiError::already_exists(
            res.group,
            res.plural,
            &generate_name,
        ))
    }

    /// Refuses writes into a namespace that does not exist or is terminating.
    async fn check_namespace_open(&self, ns: &str) -> Result<(), ApiError> {
        let nsres = namespaces();
        match self.store.get(nsres.key("", ns)).await.map_err(store_err)? {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(kv) => {
                let v = StoredObject::from_kv(kv).value()?;
                if meta::is_deleting(&v) || v["status"]["phase"] == "Terminating" {
                    let mut e = ApiError::forbidden("", "namespaces", ns, "");
                    e.message = format!("unable to create new content in namespace {ns} because it is being terminated");
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Replaces an object (PUT). `obj` is the full new object.
    pub async fn update(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        obj: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type(res, &obj, res.kind)?;
        let given_rv = meta::meta_str(&obj, "resourceVersion").to_string();
        let body_name = meta::name(&obj);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(&obj);
        if res.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        let expected = if given_rv.is_empty() {
            None
        } else {
            Some(parse_rv(&given_rv)?)
        };
        loop {
            let current = self.get(res, ns, name).await?;
            if let Some(rv) = expected {
                if rv != current.revision {
                    return Err(ApiError::conflict(res.group, res.plural, name));
                }
            }
            let old = current.value()?;
            match self
                .write_update(
                    res,
                    ns,
                    name,
                    &old,
                    current.revision,
                    obj.clone(),
                    target,
                    opts,
                )
                .await
            {
                Err(UpdateError::Conflict) if expected.is_none() => continue,
                Err(UpdateError::Conflict) => {
                    return Err(ApiError::conflict(res.group, res.plural, name))
                }
                Err(UpdateError::Api(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// Applies a patch (PATCH) to the current object and writes the result.
    pub async fn patch(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        // Refuse unsupported patch types before looking the object up, so clients take
        // their fallback path (kubectl: "server-side apply not available").
        if matches!(ptype, PatchType::Strategic | PatchType::Apply) {
            return Err(ApiError::unsupported_media_type(
                &patch::PATCH_MEDIA_TYPES[..2],
            ));
        }
        loop {
            let current = self.get(res, ns, name).await?;
            let old = current.value()?;
            let mut new = old.clone();
            match ptype {
                PatchType::Json => patch::apply_json_patch(&mut new, body)?,
                PatchType::Merge => patch::apply_merge_patch(&mut new, body)?,
                PatchType::Strategic | PatchType::Apply => {
                    return Err(ApiError::unsupported_media_type(
                        &patch::PATCH_MEDIA_TYPES[..2],
                    ));
                }
            }
            // A resourceVersion in the patch is a precondition.
            let patched_rv = meta::meta_str(&new, "resourceVersion").to_string();
            let precondition = patched_rv != current.revision.to_string();
            if precondition {
                return Err(ApiError::conflict(res.group, res.plural, name));
            }
            let pinned = body.pointer("/metadata/resourceVersion").is_some();
            match self
                .write_update(res, ns, name, &old, current.revision, new, target, opts)
                .await
            {
                Err(UpdateError::Conflict) if !pinned => continue,
                Err(UpdateError::Conflict) => {
                    return Err(ApiError::conflict(res.group, res.plural, name))
                }
                Err(UpdateError::Api(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// The shared tail of update and patch: merge with the old object according to the
    /// target, keep system fields, default, validate, write with compare-and-swap.
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        old: &Value,
        old_rev: Revision,
        new: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Value, UpdateError> {
        check_type(res, &new, res.kind)?;
        let mut new = match target {
            Target::Status => {
                let mut merged = old.clone();
                if let Some(m) = merged.as_object_mut() {
                    m.insert(
                        "status".into(),
                        new.get("status").cloned().unwrap_or(json!({})),
                    );
                }
                merged
            }
            Target::Main => {
                let mut n = new;
                if res.status != StatusPolicy::None {
                    if let Some(m) = n.as_object_mut() {
                        match old.get("status") {
                            Some(s) => m.insert("status".into(), s.clone()),
                            None => m.remove("status"),
                        };
                    }
                }
                n
            }
        };
        // System fields come from the stored object.
        let old_meta = meta::metadata(old).cloned().unwrap_or_default();
        let uid_given = meta::uid(&new).to_string();
        if !uid_given.is_empty() && uid_given != meta::uid(old) {
            return Err(UpdateError::Api(ApiError::conflict_msg(
                res.group,
                res.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid_given}, UID in object meta: {}",
                    meta::uid(old)
                ),
            )));
        }
        {
            let m = meta::metadata_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old_meta.get(k) {
                    Some(v) => m.insert(k.to_string(), v.clone()),
                    None => m.remove(k),
                };
            }
            m.remove("selfLink");
        }
        (res.typed)(&new).map_err(|e| decode_error(res, &e))?;
        (res.defaults)(&mut new);
        (res.on_update)(&mut new, old);
        if tracks_generation(res) && spec_part(&new) != spec_part(old) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta::metadata_mut(&mut new).insert("generation".into(), json!(g));
        }
        let mut errs = validation::object_meta(&new, Some(old), res.namespaced, res.name_is_label);
        if target == Target::Main {
            errs.extend((res.validate)(&new, Some(old)));
        }
        if !errs.is_empty() {
            return Err(UpdateError::Api(ApiError::invalid(
                res.group, res.kind, name, errs,
            )));
        }
        meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(old_rev.to_string()));
        if new == *old || opts.dry_run {
            return Ok(new);
        }
        let key = res.key(ns, name);
        // A deleting object whose last finalizer went away is removed now.
        if meta::is_deleting(&new)
            && meta::finalizers(&new).is_empty()
            && !(res.plural == "namespaces" && has_spec_finalizers(&new))
        {
            return match self.store.delete(key, Some(old_rev)).await {
                Ok(kv) => {
                    meta::metadata_mut(&mut new)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    Ok(new)
                }
                Err(StoreError::Conflict { .. }) => Err(UpdateError::Conflict),
                Err(StoreError::NotFound(_)) => Err(UpdateError::Api(ApiError::not_found(
                    res.group, res.plural, name,
                ))),
                Err(e) => Err(UpdateError::Api(store_err(e))),
            };
        }
        match self
            .store
            .update(key, meta::to_stored_bytes(&new), Some(old_rev))
            .await
        {
            Ok(rev) => {
                meta::metadata_mut(&mut new)
                    .insert("resourceVersion".into(), json!(rev.to_string()));
                Ok(new)
            }
            Err(StoreError::Conflict { .. }) => Err(UpdateError::Conflict),
            Err(StoreError::NotFound(_)) => Err(UpdateError::Api(ApiError::not_found(
                res.group, res.plural, name,
            ))),
            Err(e) => Err(UpdateError::Api(store_err(e))),
        }
    }

    /// A system write: reads the object, lets `change` edit it, and writes it back with
    /// compare-and-swap, retrying on conflicts. No per-kind validation runs (the caller
    /// is the server itself: bindings, finalizers, controllers). A deleting object left
    /// without finalizers is removed.
    pub async fn update_with<F>(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        change: F,
    ) -> Result<Value, ApiError>
    where
        F: Fn(&mut Value) -> Result<(), ApiError>,
    {
        loop {
            let current = self.get(res, ns, name).await?;
            let old = current.value()?;
            let mut new = old.clone();
            change(&mut new)?;
            if new == old {
                return Ok(new);
            }
            let key = res.key(ns, name);
            let done = meta::is_deleting(&new)
                && meta::finalizers(&new).is_empty()
                && !(res.plural == "namespaces" && has_spec_finalizers(&new));
            let result = if done {
                self.store
                    .delete(key, Some(current.revision))
                    .await
                    .map(|kv| kv.mod_revision)
            } else {
                self.store
                    .update(key, meta::to_stored_bytes(&new), Some(current.revision))
                    .await
            };
            match result {
                Ok(rev) => {
                    meta::metadata_mut(&mut new)
                        .insert("resourceVersion".into(), json!(rev.to_string()));
                    return Ok(new);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(res.group, res.plural, name))
                }
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    /// Deletes an object, or marks it deleting when finalizers hold it.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        loop {
            let current = self.get(res, ns, name).await?;
            let mut obj = current.value()?;
            if let Some(uid) = &opts.uid {
                if uid != meta::uid(&obj) {
                    return Err(ApiError::conflict_msg(
                        res.group,
                        res.plural,
                        name,
                        &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", meta::uid(&obj)),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != current.revision.to_string() {
                    return Err(ApiError::conflict_msg(
                        res.group,
                        res.plural,
                        name,
                        &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", current.revision),
                    ));
                }
            }
            let is_ns = res.plural == "namespaces";
            let held = !meta::finalizers(&obj).is_empty() || (is_ns && has_spec_finalizers(&obj));
            if !held {
                if opts.dry_run {
                    return Ok(Deleted {
                        object: obj,
                        removed: true,
                    });
                }
                match self
                    .store
                    .delete(res.key(ns, name), Some(current.revision))
                    .await
                {
                    Ok(kv) => {
                        meta::metadata_mut(&mut obj)
                            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                        return Ok(Deleted {
                            object: obj,
                            removed: true,
                        });
                    }
                    Err(StoreError::Conflict { .. }) if opts.resource_version.is_none() => continue,
                    Err(StoreError::Conflict { .. }) => {
                        return Err(ApiError::conflict(res.group, res.plural, name))
                    }
                    Err(StoreError::NotFound(_)) => {
                        return Err(ApiError::not_found(res.group, res.plural, name))
                    }
                    Err(e) => return Err(store_err(e)),
                }
            }
            if meta::is_deleting(&obj) {
                return Ok(Deleted {
                    object: obj,
                    removed: false,
                });
            }
            let m = meta::metadata_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            m.insert(
                "deletionGracePeriodSeconds".into(),
                json!(opts.grace_period.unwrap_or(0).max(0)),
            );
            if is_ns {
                if let Some(s) = obj.as_object_mut() {
                    s.insert("status".into(), json!({"phase": "Terminating"}));
                }
            }
            if opts.dry_run {
                return Ok(Deleted {
                    object: obj,
                    removed: false,
                });
            }
            match self
                .store
                .update(
                    res.key(ns, name),
                    meta::to_stored_bytes(&obj),
                    Some(current.revision),
                )
                .await
            {
                Ok(rev) => {
                    meta::metadata_mut(&mut obj)
                        .insert("resourceVersion".into(), json!(rev.to_string()));
                    return Ok(Deleted {
                        object: obj,
                        removed: false,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(res.group, res.plural, name))
                }
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    /// Deletes every object in `ns` matching the selectors; returns what it deleted.
    pub async fn delete_collection(
        &self,
        res: &Resource,
        ns: &str,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let listed = self
            .list(
                res,
                ns,
                &ListOptions {
                    limit: 0,
                    continue_token: None,
                    ..list.clone()
                },
            )
            .await?;
        let mut out = Vec::new();
        for item in listed.items {
            let v = item.value()?;
            match self
                .delete(res, meta::namespace(&v), meta::name(&v), opts)
                .await
            {
                Ok(d) => out.push(d.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Creates the system namespaces that every cluster has, if missing.
    pub async fn ensure_system_namespaces(&self) -> Result<(), ApiError> {
        let res = namespaces();
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

fn namespaces() -> &'static Resource {
    resources::find("", "v1", "namespaces").expect("namespaces are in the resource table")
}

/// The 400 upstream returns when a body does not decode as its kind.
fn decode_error(res: &Resource, err: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version {:?} cannot be handled as a {}: {err}",
        res.kind, res.version, res.kind
    ))
}

enum UpdateError {
    Conflict,
    Api(ApiError),
}

impl From<ApiError> for UpdateError {
    fn from(e: ApiError) -> Self {
        UpdateError::Api(e)
    }
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
