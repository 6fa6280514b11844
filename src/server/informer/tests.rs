//! The informer against a real SQLite store: initial list, live events, selectors.

use super::*;
use crate::api::resources;
use crate::server::registry::WriteOptions;
use crate::server::store::sqlite::{SqliteStore, StoreOptions};
use serde_json::json;

async fn registry(dir: &std::path::Path) -> Registry {
    let store = SqliteStore::open(&dir.join("state.db"), StoreOptions::default())
        .await
        .expect("open store");
    let reg = Registry::new(store);
    reg.ensure_system_namespaces().await.expect("namespaces");
    reg
}

fn cm(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "v"}})
}

async fn next_object(events: &mut EventStream) -> InformerEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an informer event within 5 s")
            .expect("informer running");
        if !matches!(ev, InformerEvent::Resync) {
            return ev;
        }
    }
}

#[tokio::test]
async fn cache_follows_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry(dir.path()).await;
    let res = resources::find("", "v1", "configmaps").expect("configmaps");
    let opts = WriteOptions::default();
    reg.create(res, "default", cm("before", "web"), &opts)
        .await
        .expect("create");
    let (_tx, shutdown) = watch::channel(false);
    let informers = Informers::new(reg.clone(), shutdown);
    let inf = informers.get(res);
    let mut events = inf.subscribe();
    inf.wait_synced().await;
    assert!(
        matches!(next_object(&mut events).await, InformerEvent::Added(o) if meta::name(&o) == "before")
    );
    assert!(inf.get("default", "before").is_some());

    reg.create(res, "default", cm("after", "db"), &opts)
        .await
        .expect("create");
    assert!(
        matches!(next_object(&mut events).await, InformerEvent::Added(o) if meta::name(&o) == "after")
    );
    let web = LabelSelector::parse("app=web").expect("selector");
    let names: Vec<String> = inf
        .list("default", &web)
        .iter()
        .map(|o| meta::name(o).to_string())
        .collect();
    assert_eq!(names, vec!["before".to_string()]);

    reg.delete(res, "default", "before", &Default::default())
        .await
        .expect("delete");
    assert!(
        matches!(next_object(&mut events).await, InformerEvent::Deleted(o) if meta::name(&o) == "before")
    );
    assert!(inf.get("default", "before").is_none());
    assert_eq!(inf.len(), 1);
    // The same informer is shared.
    assert_eq!(informers.get(res).len(), 1);
}
