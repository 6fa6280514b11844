//! Delete and delete-collection: preconditions, finalizers, the propagation policy
//! (recorded as upstream's `foregroundDeletion`/`orphan` finalizers for the garbage
//! collector), and pod grace periods (a pod on a node waits for its agent; a pod with no
//! node, a finished pod, or grace 0 goes at once).

use super::*;

/// Finalizer upstream's garbage collector uses for foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer upstream's garbage collector uses for orphaning dependents.
pub const ORPHAN: &str = "orphan";

/// The grace period a pod deletion waits for, or None to delete at once.
fn pod_grace(res: &Resource, pod: &Value, opts: &DeleteOptions) -> Option<i64> {
    if res.plural != "pods" || !res.group.is_empty() {
        return None;
    }
    let unscheduled = pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished {
        return None;
    }
    let grace = opts
        .grace_period
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    // Upstream turns a negative period into 1 s (0 means "force").
    let grace = if grace < 0 { 1 } else { grace };
    (grace > 0).then_some(grace)
}

fn precondition_failed(res: &Resource, name: &str, what: &str, want: &str, have: &str) -> ApiError {
    ApiError::conflict_msg(
        res.group,
        res.plural,
        name,
        &format!(
            "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
        ),
    )
}

impl Registry {
    /// Deletes an object, or marks it deleting when finalizers or a pod grace period hold it.
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
                    return Err(precondition_failed(res, name, "UID", uid, meta::uid(&obj)));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != current.revision.to_string() {
                    return Err(precondition_failed(
                        res,
                        name,
                        "ResourceVersion",
                        rv,
                        &current.revision.to_string(),
                    ));
                }
            }
            let is_ns = res.plural == "namespaces" && res.group.is_empty();
            let mut finalizers = meta::finalizers(&obj);
            let policy_finalizer = match opts.propagation.as_deref() {
                Some("Foreground") => Some(FOREGROUND),
                Some("Orphan") => Some(ORPHAN),
                _ => None,
            };
            let grace = pod_grace(res, &obj, opts);
            // An object with nothing to wait for goes now.
            let waits =
                !finalizers.is_empty() || (is_ns && has_spec_finalizers(&obj)) || grace.is_some();
            // Foreground/Orphan always leave their finalizer: the garbage collector, which
            // keeps the owner graph, removes it (at once when there are no dependents).
            if !waits && policy_finalizer.is_none() {
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
            let already = meta::is_deleting(&obj);
            let old_grace = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
            // A second delete may only shorten a pod's grace period.
            let shorten = matches!((grace, old_grace), (Some(g), Some(o)) if g < o);
            let add_finalizer = policy_finalizer.filter(|f| !finalizers.iter().any(|x| x == f));
            if already && !shorten && add_finalizer.is_none() {
                return Ok(Deleted {
                    object: obj,
                    removed: false,
                });
            }
            if let Some(f) = add_finalizer {
                finalizers.push(f.to_string());
            }
            let m = meta::metadata_mut(&mut obj);
            if !already || shorten {
                let g = grace.unwrap_or(0);
                m.insert("deletionTimestamp".into(), json!(meta::rfc3339_in(g)));
                m.insert("deletionGracePeriodSeconds".into(), json!(g));
            }
            if !finalizers.is_empty() {
                m.insert("finalizers".into(), json!(finalizers));
            }
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
}
