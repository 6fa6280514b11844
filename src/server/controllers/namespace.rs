//! The namespace lifecycle: when a namespace is deleted (it then has a
//! `deletionTimestamp` and phase `Terminating`), delete everything in it, then drop the
//! `kubernetes` finalizer from `spec.finalizers` so the namespace itself goes away.

use crate::api::meta;
use crate::api::resources;
use crate::server::registry::{DeleteOptions, ListOptions, Registry};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::watch;

/// Runs until `shutdown` flips.
pub async fn run(registry: Registry, mut shutdown: watch::Receiver<bool>) {
    let ns_res = resources::namespaces();
    loop {
        let rev = registry.store().current_revision();
        if let Err(e) = sync_all(&registry).await {
            tracing::warn!(error = %e, "namespace controller: sync failed; retrying");
        }
        // Wake up on the next namespace change, or every 30 s as a resync.
        let mut events = match registry.store().watch(ns_res.key_prefix(), rev).await {
            Ok(w) => Some(w.events),
            Err(_) => None,
        };
        tokio::select! {
            _ = async {
                match events.as_mut() {
                    Some(rx) => { rx.recv().await; }
                    None => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            } => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn sync_all(registry: &Registry) -> Result<(), crate::api::ApiError> {
    let ns_res = resources::namespaces();
    let list = registry.list(ns_res, "", &ListOptions::default()).await?;
    for item in list.items {
        let ns = item.value()?;
        if meta::is_deleting(&ns) {
            finalize(registry, meta::name(&ns)).await?;
        }
    }
    Ok(())
}

/// Deletes the namespace's content, then removes the `kubernetes` finalizer.
async fn finalize(registry: &Registry, name: &str) -> Result<(), crate::api::ApiError> {
    let opts = DeleteOptions::default();
    let mut left = 0usize;
    for res in resources::RESOURCES.iter().filter(|r| r.namespaced) {
        let deleted = registry
            .delete_collection(res, name, &ListOptions::default(), &opts)
            .await?;
        // Objects held by their own finalizers stay until those are removed.
        left += deleted
            .iter()
            .filter(|o| meta::is_deleting(o) && !meta::finalizers(o).is_empty())
            .count();
    }
    if left > 0 {
        tracing::info!(
            namespace = name,
            remaining = left,
            "namespace is waiting for finalizers of its objects"
        );
        return Ok(());
    }
    let r = registry
        .update_with(resources::namespaces(), "", name, |ns: &mut Value| {
            let fins: Vec<Value> = ns["spec"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != "kubernetes")
                .collect();
            ns["spec"]["finalizers"] = json!(fins);
            if fins.is_empty() {
                if let Some(spec) = ns["spec"].as_object_mut() {
                    spec.remove("finalizers");
                }
            }
            Ok(())
        })
        .await;
    match r {
        Ok(_) => {
            tracing::info!(namespace = name, "namespace finalized");
            Ok(())
        }
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
