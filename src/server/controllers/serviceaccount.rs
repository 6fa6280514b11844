//! The ServiceAccount controller, as upstream's: every namespace that is not terminating
//! has a `default` ServiceAccount, created with the namespace and again when deleted.

use super::owned::ControllerError;
use crate::api::meta;
use crate::server::informer::{builtin, run_controller, InformerEvent, Informers, WorkQueue};
use crate::server::registry::WriteOptions;
use serde_json::json;
use tokio::sync::watch;

/// The account every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Runs the controller until `shutdown` flips.
pub async fn run(informers: Informers, mut shutdown: watch::Receiver<bool>) {
    let namespaces = informers.get(builtin("", "v1", "namespaces"));
    let accounts = informers.get(builtin("", "v1", "serviceaccounts"));
    let queue: WorkQueue<String> = WorkQueue::new();
    let (mut ns_events, mut sa_events) = (namespaces.subscribe(), accounts.subscribe());
    let (q, all) = (queue.clone(), namespaces.clone());
    super::owned::spawn_until(&shutdown, async move {
        loop {
            let ev = tokio::select! {
                Some(ev) = ns_events.recv() => ev,
                Some(ev) = sa_events.recv() => match &ev {
                    // Only a deleted default account needs a look at its namespace.
                    InformerEvent::Deleted(sa) if meta::name(sa) == DEFAULT_ACCOUNT => {
                        q.add(meta::namespace(sa).to_string());
                        continue;
                    }
                    InformerEvent::Resync => ev,
                    _ => continue,
                },
                else => return,
            };
            match ev.object() {
                Some(ns) => q.add(meta::name(ns).to_string()),
                None => all
                    .list_all()
                    .iter()
                    .for_each(|ns| q.add(meta::name(ns).to_string())),
            }
        }
    });
    namespaces.wait_synced().await;
    accounts.wait_synced().await;
    for ns in namespaces.list_all() {
        queue.add(meta::name(&ns).to_string());
    }
    let registry = informers.registry().clone();
    let q = queue.clone();
    tokio::spawn(async move {
        let _ = shutdown.changed().await;
        q.shut_down();
    });
    run_controller("serviceaccount", queue, 1, move |ns: String| {
        let (registry, namespaces, accounts) =
            (registry.clone(), namespaces.clone(), accounts.clone());
        async move {
            let open = namespaces
                .get("", &ns)
                .is_some_and(|n| !meta::is_deleting(&n) && n["status"]["phase"] != "Terminating");
            if !open || accounts.get(&ns, DEFAULT_ACCOUNT).is_some() {
                return Ok::<(), ControllerError>(());
            }
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_ACCOUNT, "namespace": ns}});
            let res = accounts.resource();
            match registry
                .create(res, &ns, sa, &WriteOptions::default())
                .await
            {
                Ok(_) => Ok(()),
                // Exists already, or the namespace started terminating meanwhile.
                Err(e) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(()),
                Err(e) => Err(ControllerError::api(
                    format!("creating the default service account in {ns}"),
                    e,
                )),
            }
        }
    })
    .await;
}
