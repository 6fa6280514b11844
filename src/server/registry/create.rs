//! Create: system fields, initial status, defaulting, validation, the namespace check.

use super::*;

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
            // Guaranteed: a limit for both, and any request equal to it.
            let request_differs =
                has(req, r) && req.and_then(|m| m.get(r)) != lim.and_then(|m| m.get(r));
            if !has(lim, r) || request_differs {
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

impl Registry {
    /// Creates an object in `ns` (ignored for cluster-scoped resources).
    pub async fn create(
        &self,
        res: &Resource,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type(res, &obj)?;
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
        if let Some(node) = &opts.node {
            crate::server::rbac::node_restriction::admit_create(res, node, &obj)?;
        }
        // Defaulting sees a new object (no uid yet), as upstream's does.
        (res.defaults)(&mut obj);
        if res.plural == "pods" && res.group.is_empty() {
            crate::server::serviceaccount::admission::admit_pod(self, ns, &mut obj).await?;
            crate::server::scheduler::priority::admit_pod(self, &mut obj).await?;
        }
        if res.plural == "priorityclasses" && res.group == "scheduling.k8s.io" {
            crate::server::scheduler::priority::admit_class(self, &obj).await?;
        }
        let meta_map = meta::metadata_mut(&mut obj);
        meta_map.insert("uid".into(), json!(meta::new_uid()));
        meta_map.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        if res.generation {
            meta_map.insert("generation".into(), json!(1));
        }
        (res.on_create)(&mut obj);
        if res.namespaced {
            self.check_namespace_open(ns).await?;
        }
        // Held until the write is done, so two creates never pick the same address.
        let _allocated = match self.service_allocator() {
            Some(a) if res.plural == "services" && res.group.is_empty() => {
                Some(a.allocate(&self.store, ns, &mut obj, None).await?)
            }
            _ => None,
        };
        for attempt in 0..8 {
            if explicit_name.is_empty() {
                let name = format!("{generate_name}{}", meta::random_name_suffix());
                meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
            }
            let name = meta::name(&obj).to_string();
            let mut errs = validation::object_meta(&obj, None, res.namespaced, res.name_is_label);
            if res.name_is_path_segment {
                validation::use_path_segment_names(&obj, &mut errs);
            }
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
        let nsres = resources::namespaces();
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
}
