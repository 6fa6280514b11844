//! Delete and delete-collection: preconditions, finalizers, propagation policy, pod grace periods.

use super::*;

impl Registry {
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
}
