//! Update (PUT), patch, server-side apply and system writes: status split, system fields
//! kept, generation, field ownership (`metadata.managedFields`), compare-and-swap with
//! retries.

use super::*;
use crate::api::apply;

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

enum UpdateError {
    Conflict,
    Api(ApiError),
}

/// How a write fills `metadata.managedFields`.
enum Ownership {
    /// Record what this write changed under its manager's Update entry.
    Track,
    /// Server-side apply computed them already: keep these.
    Given(Option<Value>),
}

/// What managedFields record about a write to `res` through `target`.
fn scope<'a>(
    res: &'a Resource,
    target: Target,
    opts: &WriteOptions,
    api_version: &'a str,
) -> apply::Scope<'a> {
    let (subresource, part) = match target {
        Target::Status => ("status", apply::Part::StatusOnly),
        Target::Main if res.status == StatusPolicy::None => (opts.subresource, apply::Part::Whole),
        Target::Main => (opts.subresource, apply::Part::NoStatus),
    };
    apply::Scope {
        group: res.group,
        kind: res.kind,
        api_version,
        subresource,
        part,
    }
}

impl From<ApiError> for UpdateError {
    fn from(e: ApiError) -> Self {
        UpdateError::Api(e)
    }
}

impl Registry {
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
        check_type(res, &obj)?;
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
                    Ownership::Track,
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
    #[allow(clippy::too_many_arguments)]
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
        self.patch_or_create(res, ns, name, ptype, body, target, opts)
            .await
            .map(|(v, _)| v)
    }

    /// [`Registry::patch`], also telling whether the patch created the object (a
    /// server-side apply of a missing object does; the API answers 201 then).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_or_create(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        if ptype == PatchType::Apply {
            return self.apply(res, ns, name, body, target, opts).await;
        }
        if opts.force.is_some() {
            return Err(patch_options_invalid(FieldError::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )));
        }
        // Refuse unsupported patch types before looking the object up.
        if ptype == PatchType::Strategic && !crate::api::strategic::supports(res.group, res.kind) {
            return Err(ApiError::unsupported_media_type(&[
                patch::PATCH_MEDIA_TYPES[0],
                patch::PATCH_MEDIA_TYPES[1],
                patch::PATCH_MEDIA_TYPES[3],
            ]));
        }
        loop {
            let current = self.get(res, ns, name).await?;
            let old = current.value()?;
            let new = patch::apply(ptype, &old, body, res.group, res.kind)?;
            check_fields(res, &new, None, Some(&old), opts)?;
            // A resourceVersion in the patch is a precondition.
            let patched_rv = meta::meta_str(&new, "resourceVersion").to_string();
            let precondition = patched_rv != current.revision.to_string();
            if precondition {
                return Err(ApiError::conflict(res.group, res.plural, name));
            }
            let pinned = body.pointer("/metadata/resourceVersion").is_some();
            match self
                .write_update(
                    res,
                    ns,
                    name,
                    &old,
                    current.revision,
                    new,
                    target,
                    opts,
                    Ownership::Track,
                )
                .await
            {
                Err(UpdateError::Conflict) if !pinned => continue,
                Err(UpdateError::Conflict) => {
                    return Err(ApiError::conflict(res.group, res.plural, name))
                }
                Err(UpdateError::Api(e)) => return Err(e),
                Ok(v) => return Ok((v, false)),
            }
        }
    }

    /// Server-side apply (`application/apply-patch+yaml`): merges the applied configuration
    /// into the object for `fieldManager`, or creates the object from it.
    async fn apply(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        config: &Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        if opts.field_manager.is_empty() {
            return Err(patch_options_invalid(FieldError::required_msg(
                "fieldManager",
                "is required for apply patch",
            )));
        }
        let body_name = meta::name(config);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(config);
        if res.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({body_ns}) does not match the namespace on the request ({ns})"
            )));
        }
        let api_version = res.api_version();
        let scope = scope(res, target, opts, &api_version);
        let manager = opts.field_manager.as_str();
        let force = opts.force.unwrap_or(false);
        let given_rv = meta::meta_str(config, "resourceVersion").to_string();
        let expected = if given_rv.is_empty() {
            None
        } else {
            Some(parse_rv(&given_rv)?)
        };
        loop {
            let current = match self.get(res, ns, name).await {
                Ok(c) => c,
                Err(e) if e.code == 404 && target == Target::Main && expected.is_none() => {
                    let mut obj = apply::apply(
                        &json!({}),
                        config,
                        manager,
                        force,
                        &scope,
                        &meta::now_rfc3339(),
                    )?;
                    let m = meta::metadata_mut(&mut obj);
                    m.insert("name".into(), json!(name));
                    if res.namespaced {
                        m.insert("namespace".into(), json!(ns));
                    }
                    match self.create(res, ns, obj, opts).await {
                        // Someone created it meanwhile: apply to theirs.
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        other => return other.map(|v| (v, true)),
                    }
                }
                Err(e) => return Err(e),
            };
            if let Some(rv) = expected {
                if rv != current.revision {
                    return Err(ApiError::conflict(res.group, res.plural, name));
                }
            }
            let old = current.value()?;
            let new = apply::apply(&old, config, manager, force, &scope, &meta::now_rfc3339())?;
            let managed = new.pointer("/metadata/managedFields").cloned();
            match self
                .write_update(
                    res,
                    ns,
                    name,
                    &old,
                    current.revision,
                    new,
                    target,
                    opts,
                    Ownership::Given(managed),
                )
                .await
            {
                Err(UpdateError::Conflict) if expected.is_none() => continue,
                Err(UpdateError::Conflict) => {
                    return Err(ApiError::conflict(res.group, res.plural, name))
                }
                Err(UpdateError::Api(e)) => return Err(e),
                Ok(v) => return Ok((v, false)),
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
        ownership: Ownership,
    ) -> Result<Value, UpdateError> {
        check_type(res, &new)?;
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
        if res.group.is_empty() && res.plural == "pods" {
            crate::server::scheduler::priority::keep_on_update(&mut new, old);
        }
        if target == Target::Main
            && res.plural == "priorityclasses"
            && res.group == "scheduling.k8s.io"
        {
            crate::server::scheduler::priority::admit_class(self, &new).await?;
        }
        // Held until the write is done (see create).
        let _allocated = match self.service_allocator() {
            Some(a)
                if target == Target::Main && res.plural == "services" && res.group.is_empty() =>
            {
                Some(a.allocate(&self.store, ns, &mut new, Some(old)).await?)
            }
            _ => None,
        };
        match ownership {
            Ownership::Track => {
                let api_version = res.api_version();
                let scope = scope(res, target, opts, &api_version);
                apply::track_update(old, &mut new, opts.manager(), &scope, &meta::now_rfc3339());
            }
            Ownership::Given(fields) => {
                let m = meta::metadata_mut(&mut new);
                match fields {
                    Some(f) => m.insert("managedFields".into(), f),
                    None => m.shift_remove("managedFields"),
                };
            }
        }
        if res.generation && spec_part(&new) != spec_part(old) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta::metadata_mut(&mut new).insert("generation".into(), json!(g));
        }
        let mut errs = validation::object_meta(&new, Some(old), res.namespaced, res.name_is_label);
        if res.name_is_path_segment {
            validation::use_path_segment_names(&new, &mut errs);
        }
        if target == Target::Main {
            errs.extend((res.validate)(&new, Some(old)));
        }
        if let Some(node) = &opts.node {
            crate::server::rbac::node_restriction::admit_update(res, node, name, old, &new)?;
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
}

/// A 422 about the query parameters of a PATCH, as upstream words it.
fn patch_options_invalid(cause: FieldError) -> ApiError {
    ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![cause])
}
