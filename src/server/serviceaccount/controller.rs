//! Two small namespace controllers of upstream's controller-manager in one loop: the
//! service-account controller (a `default` ServiceAccount in every active namespace,
//! recreated when deleted) and the root-CA publisher (the `kube-root-ca.crt` ConfigMap
//! with the cluster CA under `ca.crt` in every active namespace, put back when deleted
//! or changed). Pods' projected token volumes read that ConfigMap.

use super::admission::ROOT_CA_CONFIGMAP;
use crate::api::meta;
use crate::api::status::ApiError;
use crate::server::informer::{builtin, run_controller, InformerEvent, Informers, WorkQueue};
use crate::server::registry::{Registry, WriteOptions};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::watch;

/// Upstream's description annotation on the root-CA ConfigMap.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Runs until `shutdown` flips; `ca_pem` is the server CA bundle to publish.
pub async fn run(informers: Informers, ca_pem: String, mut shutdown: watch::Receiver<bool>) {
    let namespaces = informers.get(builtin("", "v1", "namespaces"));
    let accounts = informers.get(builtin("", "v1", "serviceaccounts"));
    let config_maps = informers.get(builtin("", "v1", "configmaps"));
    let queue: WorkQueue<String> = WorkQueue::new();
    // Namespaces trigger for themselves; accounts and ConfigMaps for their namespace
    // when the one we own changes or goes away.
    for (inf, owned) in [
        (namespaces.clone(), None),
        (accounts.clone(), Some("default")),
        (config_maps.clone(), Some(ROOT_CA_CONFIGMAP)),
    ] {
        let mut events = inf.subscribe();
        let (q, ns_cache) = (queue.clone(), namespaces.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(obj) = ev.object() else {
                    ns_cache
                        .list_all()
                        .iter()
                        .for_each(|n| q.add(meta::name(n).to_string()));
                    continue;
                };
                match owned {
                    None => q.add(meta::name(obj).to_string()),
                    Some(name) if meta::name(obj) == name => {
                        if matches!(ev, InformerEvent::Added(_)) {
                            continue;
                        }
                        q.add(meta::namespace(obj).to_string())
                    }
                    Some(_) => {}
                }
            }
        });
    }
    namespaces.wait_synced().await;
    accounts.wait_synced().await;
    config_maps.wait_synced().await;
    for n in namespaces.list_all() {
        queue.add(meta::name(&n).to_string());
    }
    let registry = informers.registry().clone();
    let ca = Arc::new(ca_pem);
    let (stop_queue, q) = (queue.clone(), queue);
    let controller = run_controller("serviceaccount", q, 2, move |ns: String| {
        let (registry, ca, namespaces) = (registry.clone(), ca.clone(), namespaces.clone());
        async move {
            let Some(n) = namespaces.get("", &ns) else {
                return Ok(());
            };
            if meta::is_deleting(&n) || n["status"]["phase"] == "Terminating" {
                return Ok(());
            }
            reconcile(&registry, &ns, &ca).await
        }
    });
    tokio::select! {
        _ = controller => {}
        _ = shutdown.changed() => stop_queue.shut_down(),
    }
}

/// Ensures the `default` account and the root-CA ConfigMap of namespace `ns`.
pub async fn reconcile(registry: &Registry, ns: &str, ca_pem: &str) -> Result<(), ApiError> {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    create_if_missing(registry, "serviceaccounts", ns, sa).await?;
    let cm_res = builtin("", "v1", "configmaps");
    let wanted = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {"kubernetes.io/description": DESCRIPTION}},
        "data": {"ca.crt": ca_pem},
    });
    if create_if_missing(registry, "configmaps", ns, wanted).await? {
        return Ok(());
    }
    let current = registry.get(cm_res, ns, ROOT_CA_CONFIGMAP).await?.value()?;
    if current["data"]["ca.crt"] != ca_pem
        || current["data"].as_object().map(|m| m.len()) != Some(1)
    {
        registry
            .update_with(cm_res, ns, ROOT_CA_CONFIGMAP, |cm: &mut Value| {
                cm["data"] = json!({"ca.crt": ca_pem});
                if let Some(m) = cm.as_object_mut() {
                    m.remove("binaryData");
                }
                Ok(())
            })
            .await?;
    }
    Ok(())
}

/// Creates `obj` in `ns` unless an object of that name exists; true when created.
async fn create_if_missing(
    registry: &Registry,
    plural: &str,
    ns: &str,
    obj: Value,
) -> Result<bool, ApiError> {
    let res = builtin("", "v1", plural);
    if registry.get(res, ns, meta::name(&obj)).await.is_ok() {
        return Ok(false);
    }
    match registry
        .create(res, ns, obj, &WriteOptions::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        // The namespace went away or is terminating meanwhile.
        Err(e) if e.code == 404 || e.code == 403 => Ok(false),
        Err(e) => Err(e),
    }
}
