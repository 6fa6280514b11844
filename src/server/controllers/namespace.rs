//! The namespace lifecycle: when a namespace is deleted (it then has a
//! `deletionTimestamp` and phase `Terminating`), delete everything in it, report progress
//! in the namespace's status conditions as upstream does (NamespaceContentRemaining,
//! NamespaceFinalizersRemaining, ...), and once nothing is left (pods finished their
//! grace period, finalizers ran) drop the `kubernetes` finalizer from `spec.finalizers`
//! so the namespace itself goes away.

use crate::api::meta;
use crate::api::resources;
use crate::server::registry::{DeleteOptions, ListOptions, Registry};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// How often a namespace whose content is still going away is looked at again.
const TERMINATING_RECHECK: Duration = Duration::from_secs(1);

/// Runs until `shutdown` flips.
pub async fn run(registry: Registry, mut shutdown: watch::Receiver<bool>) {
    let ns_res = resources::namespaces();
    loop {
        let rev = registry.store().current_revision();
        let pending = match sync_all(&registry).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "namespace controller: sync failed; retrying");
                true
            }
        };
        // Wake up on the next namespace change, every 30 s as a resync, or soon while a
        // namespace waits for its content to go.
        let mut events = match registry.store().watch(ns_res.key_prefix(), rev).await {
            Ok(w) => Some(w.events),
            Err(_) => None,
        };
        let resync = if pending {
            TERMINATING_RECHECK
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = async {
                match events.as_mut() {
                    Some(rx) => { rx.recv().await; }
                    None => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            } => {}
            _ = tokio::time::sleep(resync) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Finalizes every terminating namespace; true when one still waits for its content.
async fn sync_all(registry: &Registry) -> Result<bool, crate::api::ApiError> {
    let ns_res = resources::namespaces();
    let list = registry.list(ns_res, "", &ListOptions::default()).await?;
    let mut pending = false;
    for item in list.items {
        let ns = item.value()?;
        if meta::is_deleting(&ns) {
            pending |= !finalize(registry, &ns).await?;
        }
    }
    Ok(pending)
}

/// What is left in a namespace after a round of deletes.
#[derive(Default)]
struct Remaining {
    /// `<resource>.<group>` → instances left.
    resources: BTreeMap<String, usize>,
    /// finalizer → instances that still carry it.
    finalizers: BTreeMap<String, usize>,
}

/// A namespace condition as upstream writes it.
fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" },
        "reason": reason, "message": message})
}

/// Upstream's status conditions of a terminating namespace for `left`.
fn conditions(left: &Remaining) -> Vec<Value> {
    let counts = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, n)| format!("{k} has {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let content = if left.resources.is_empty() {
        condition(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed",
        )
    } else {
        let msg = format!("Some resources are remaining: {}", counts(&left.resources));
        condition(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            &msg,
        )
    };
    let fins = if left.finalizers.is_empty() {
        condition(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        )
    } else {
        let list = left
            .finalizers
            .iter()
            .map(|(k, n)| format!("{k} in {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ");
        let msg = format!("Some content in the namespace has finalizers remaining: {list}");
        condition(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            &msg,
        )
    };
    vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        condition(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        content,
        fins,
    ]
}

/// Sets `want` on the namespace's status, keeping the transition time of conditions
/// whose status did not change.
fn merge_conditions(ns: &mut Value, want: &[Value], now: &str) {
    let old: Vec<Value> = ns["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let merged: Vec<Value> = want
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let prev = old.iter().find(|o| o["type"] == c["type"]);
            c["lastTransitionTime"] = match prev {
                Some(p) if p["status"] == c["status"] => p["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            c
        })
        .collect();
    ns["status"]["phase"] = json!("Terminating");
    ns["status"]["conditions"] = json!(merged);
}

/// Deletes the namespace's content; removes the `kubernetes` finalizer once nothing is
/// left. Returns whether the namespace is done.
async fn finalize(registry: &Registry, ns: &Value) -> Result<bool, crate::api::ApiError> {
    let name = meta::name(ns);
    let opts = DeleteOptions::default();
    let mut left = Remaining::default();
    for res in resources::RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.conversion.is_none())
    {
        registry
            .delete_collection(res, name, &ListOptions::default(), &opts)
            .await?;
        // Pods in their grace period and objects held by finalizers are still there.
        let still = registry.list(res, name, &ListOptions::default()).await?;
        if still.items.is_empty() {
            continue;
        }
        let key = format!("{}.{}", res.plural, res.group);
        *left.resources.entry(key).or_default() += still.items.len();
        for item in still.items {
            for f in meta::finalizers(&item.value()?) {
                *left.finalizers.entry(f).or_default() += 1;
            }
        }
    }
    let want = conditions(&left);
    let now = meta::now_rfc3339();
    let done = left.resources.is_empty();
    if !done {
        tracing::debug!(
            namespace = name,
            remaining = left.resources.len(),
            "namespace is waiting for its content to go"
        );
    }
    let r = registry
        .update_with(resources::namespaces(), "", name, |ns: &mut Value| {
            merge_conditions(ns, &want, &now);
            if !done {
                return Ok(());
            }
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
        Ok(_) if done => {
            tracing::info!(namespace = name, "namespace finalized");
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.code == 404 => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_is_left_like_upstream() {
        let mut left = Remaining::default();
        left.resources.insert("pods.".into(), 2);
        left.finalizers.insert("foregroundDeletion".into(), 1);
        let c = conditions(&left);
        assert_eq!(c[3]["status"], "True");
        assert_eq!(
            c[3]["message"],
            "Some resources are remaining: pods. has 2 resource instances"
        );
        assert_eq!(
            c[4]["message"],
            "Some content in the namespace has finalizers remaining: foregroundDeletion in 1 resource instances"
        );
        let none = conditions(&Remaining::default());
        assert_eq!(none[3]["reason"], "ContentRemoved");
        assert_eq!(none[4]["status"], "False");
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let mut ns = json!({"status": {"phase": "Terminating"}});
        let want = conditions(&Remaining::default());
        merge_conditions(&mut ns, &want, "t1");
        merge_conditions(&mut ns, &want, "t2");
        assert_eq!(ns["status"]["conditions"][0]["lastTransitionTime"], "t1");
    }
}
