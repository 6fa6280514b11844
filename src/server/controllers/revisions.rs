//! ControllerRevisions of DaemonSets and StatefulSets, as upstream keeps them: one per
//! distinct pod template, named `<owner>-<hash>`, holding the template as the strategic
//! merge patch `kubectl rollout undo` applies (`{"spec":{"template":{..., "$patch":
//! "replace"}}}`), numbered so the current template always has the highest revision
//! (a template rolled back to gets its old revision renumbered, as upstream does).

use super::owned::{controller_ref, owned_by, ControllerError};
use crate::api::meta;
use crate::server::informer::Informer;
use crate::server::registry::{Registry, WriteOptions};
use serde_json::{json, Value};

/// The label of a revision (and of DaemonSet pods) with the template hash.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The revision's data for `template`.
pub fn revision_data(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision holds.
pub fn revision_template(revision: &Value) -> Option<Value> {
    let mut t = revision["data"]["spec"]["template"].clone();
    let m = t.as_object_mut()?;
    m.remove("$patch");
    Some(t)
}

/// Makes the ControllerRevision `name` (template hash `hash`) of `owner` its newest:
/// creates it after the newest existing one, or renumbers it when an older one is the
/// current template again. `revisions` is the ControllerRevision informer.
pub async fn ensure_revision(
    registry: &Registry,
    revisions: &Informer,
    owner: &Value,
    kind: &str,
    name: &str,
    hash: &str,
) -> Result<(), ControllerError> {
    let ns = meta::namespace(owner);
    let owned = owned_by(revisions, ns, meta::uid(owner));
    let newest = owned
        .iter()
        .filter_map(|r| r["revision"].as_i64())
        .max()
        .unwrap_or(0);
    let res = revisions.resource();
    if let Some(existing) = owned.iter().find(|r| meta::name(r) == name) {
        let number = existing["revision"].as_i64().unwrap_or(0);
        if number >= newest {
            return Ok(());
        }
        let r = registry
            .update_with(res, ns, name, |r| {
                r["revision"] = json!(newest + 1);
                Ok(())
            })
            .await;
        return match r {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(ControllerError::api("renumbering a controller revision", e)),
        };
    }
    let mut labels = owner["spec"]["selector"]["matchLabels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[REVISION_LABEL] = json!(hash);
    let rev = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
            "ownerReferences": [controller_ref(owner, "apps/v1", kind)]},
        "data": revision_data(&owner["spec"]["template"]),
        "revision": newest + 1,
    });
    match registry
        .create(res, ns, rev, &WriteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        // Created already; the informer has not shown it yet.
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(ControllerError::api("creating a controller revision", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_a_replacing_patch_and_gives_the_template_back() {
        let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}});
        let data = revision_data(&template);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = json!({"data": data});
        assert_eq!(revision_template(&rev), Some(template));
    }
}
