//! Auto-deploy, like k3s's: every `*.yaml`, `*.yml` and `*.json` file under
//! `<data-dir>/server/manifests` (sub-folders included) is applied when the server starts
//! and again whenever the file changes. A file is skipped when its name ends in `.skip`
//! or when a `<file>.skip` sits next to it (k3s's way to switch off one manifest).
//!
//! Changes are found by polling modification times and sizes every few seconds: no
//! inotify, and it works on any filesystem. Apply means: create the object, or replace
//! the live object's content (spec, data, ...) and labels with the file's, keeping its
//! uid, status and server-set metadata, with compare-and-swap on `resourceVersion` and a
//! retry on conflict. Each applied object carries the annotations [`MANIFEST_ANNOTATION`]
//! (the file) and [`HASH_ANNOTATION`] (a hash of the document), so an unchanged document
//! is not written again after a restart. Removing a file leaves its objects in place.

use crate::api::meta;
use crate::api::resources::{self, Resource};
use crate::server::registry::{Registry, Target, WriteOptions};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Annotation naming the manifest file (relative to the manifests folder) an object came
/// from.
pub const MANIFEST_ANNOTATION: &str = "k3rs.io/manifest";
/// Annotation holding the SHA-256 of the manifest document last applied to the object.
pub const HASH_ANNOTATION: &str = "k3rs.io/manifest-hash";

/// How often the folder is scanned for changed files.
const POLL: Duration = Duration::from_secs(2);
/// How long a file that failed to apply waits before the next attempt.
const RETRY: Duration = Duration::from_secs(10);
/// Compare-and-swap attempts per object before giving up until the next retry.
const CAS_ATTEMPTS: usize = 8;

/// Runs until `shutdown` flips, applying the manifests in `dir` (created when missing).
pub async fn run(registry: Registry, dir: PathBuf, mut shutdown: watch::Receiver<bool>) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the manifests folder; auto-deploy keeps trying");
    }
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    loop {
        sync(&registry, &dir, &mut seen).await;
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// What the controller knows about one file.
struct Seen {
    stamp: Stamp,
    ok: bool,
    at: Instant,
}

/// Modification time and size: a change in either means "apply again".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// One pass over the folder: applies new and changed files, and retries failed ones.
async fn sync(registry: &Registry, dir: &Path, seen: &mut HashMap<PathBuf, Seen>) {
    let files = manifest_files(dir);
    seen.retain(|p, _| files.contains(p));
    for path in files {
        // Stat before reading: a file still being written gets a newer stamp when the
        // writer finishes, so it is read again then.
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        let stamp = Stamp {
            modified: md.modified().ok(),
            len: md.len(),
        };
        let due = match seen.get(&path) {
            None => true,
            Some(s) if s.stamp != stamp => true,
            Some(s) => !s.ok && s.at.elapsed() >= RETRY,
        };
        if !due {
            continue;
        }
        let label = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let ok = match apply_file(registry, &path, &label).await {
            Ok(counts) => {
                if counts.created + counts.updated > 0 {
                    tracing::info!(
                        manifest = %label,
                        created = counts.created,
                        updated = counts.updated,
                        unchanged = counts.unchanged,
                        "applied manifest"
                    );
                } else {
                    tracing::debug!(manifest = %label, unchanged = counts.unchanged, "manifest unchanged");
                }
                true
            }
            Err(errors) => {
                for e in &errors {
                    tracing::warn!(manifest = %label, error = %e, "cannot apply manifest; retrying in {}s", RETRY.as_secs());
                }
                false
            }
        };
        seen.insert(
            path,
            Seen {
                stamp,
                ok,
                at: Instant::now(),
            },
        );
    }
}

/// The manifest files under `dir`, sorted by path, skips left out.
pub fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, &mut out, 0);
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    // Deep enough for any sane layout; stops symlink loops.
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden files are editors' temporaries and the like.
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out, depth + 1);
            continue;
        }
        let wanted = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if !wanted || skipped(&path) {
            continue;
        }
        out.push(path);
    }
}

/// `foo.yaml.skip` next to `foo.yaml` switches `foo.yaml` off.
fn skipped(path: &Path) -> bool {
    let mut s = path.as_os_str().to_owned();
    s.push(".skip");
    Path::new(&s).exists()
}

/// Counts of one file's apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects created.
    pub created: usize,
    /// Objects replaced.
    pub updated: usize,
    /// Objects that already matched the document.
    pub unchanged: usize,
}

enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Applies every document of one file. Documents are independent: one that fails does
/// not stop the others, and the file is retried as a whole.
async fn apply_file(registry: &Registry, path: &Path, label: &str) -> Result<Applied, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    let json = path.extension().is_some_and(|e| e == "json");
    let docs = parse_documents(&text, json).map_err(|e| vec![e])?;
    let mut counts = Applied::default();
    let mut errors = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let what = format!(
            "document {} ({} {})",
            i + 1,
            doc["kind"].as_str().unwrap_or("?"),
            meta::name(&doc)
        );
        match apply_object(registry, doc, label).await {
            Ok(Outcome::Created) => counts.created += 1,
            Ok(Outcome::Updated) => counts.updated += 1,
            Ok(Outcome::Unchanged) => counts.unchanged += 1,
            Err(e) => errors.push(format!("{what}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(counts)
    } else {
        Err(errors)
    }
}

/// Splits a file into objects: every YAML document (or the JSON value), with `List`s
/// expanded and empty documents dropped.
pub fn parse_documents(text: &str, json: bool) -> Result<Vec<Value>, String> {
    let mut values = Vec::new();
    if json {
        values.push(serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}"))?);
    } else {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(doc)
                .map_err(|e| format!("invalid YAML in document {}: {e}", i + 1))?;
            values.push(v);
        }
    }
    let mut out = Vec::new();
    for v in values {
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            Value::Object(_) => out.push(v),
            other => return Err(format!("a document is not an object: {other}")),
        }
    }
    Ok(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The resource a document's `apiVersion` and `kind` name.
fn resource_of(doc: &Value) -> Result<&'static Resource, String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        return Err("apiVersion and kind are required".into());
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let res = resources::find_kind(group, kind)
        .ok_or_else(|| format!("no kind \"{kind}\" is registered for version \"{api_version}\""))?;
    if res.version != version {
        return Err(format!(
            "no kind \"{kind}\" is registered for version \"{api_version}\" (this server serves {})",
            if res.group.is_empty() {
                res.version.to_string()
            } else {
                format!("{}/{}", res.group, res.version)
            }
        ));
    }
    if res.ephemeral || !res.verbs.contains(&"create") {
        return Err(format!("{kind} objects cannot be created"));
    }
    Ok(res)
}

/// Creates `doc`, or replaces the live object's content with it.
async fn apply_object(registry: &Registry, mut doc: Value, label: &str) -> Result<Outcome, String> {
    let res = resource_of(&doc)?;
    let name = meta::name(&doc).to_string();
    if name.is_empty() {
        return Err(
            "metadata.name is required (generateName would create a new object on every apply)"
                .into(),
        );
    }
    let ns = if res.namespaced {
        match meta::namespace(&doc) {
            "" => "default".to_string(),
            n => n.to_string(),
        }
    } else {
        String::new()
    };
    let hash = sha256_hex(&serde_json::to_vec(&doc).unwrap_or_default());
    {
        let m = meta::metadata_mut(&mut doc);
        m.remove("resourceVersion");
        let ann = m
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ann.is_object() {
            *ann = Value::Object(Map::new());
        }
        if let Some(a) = ann.as_object_mut() {
            a.insert(MANIFEST_ANNOTATION.into(), json!(label));
            a.insert(HASH_ANNOTATION.into(), json!(hash));
        }
    }
    let opts = WriteOptions::default();
    for _ in 0..CAS_ATTEMPTS {
        match registry.get(res, &ns, &name).await {
            Err(e) if e.code == 404 => match registry.create(res, &ns, doc.clone(), &opts).await {
                Ok(_) => return Ok(Outcome::Created),
                // Someone created it in between: replace it instead.
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => return Err(e.to_string()),
            Ok(stored) => {
                let live = stored.value().map_err(|e| e.to_string())?;
                let live_hash = live["metadata"]["annotations"][HASH_ANNOTATION].as_str();
                if live_hash == Some(hash.as_str()) {
                    return Ok(Outcome::Unchanged);
                }
                if meta::is_deleting(&live) {
                    return Err(
                        "the object is being deleted; applying again when it is gone".into(),
                    );
                }
                let new = replace_content(&live, &doc);
                match registry
                    .update(res, &ns, &name, new, Target::Main, &opts)
                    .await
                {
                    Ok(_) => return Ok(Outcome::Updated),
                    // Changed under us (resourceVersion no longer matches): read again.
                    Err(e) if e.code == 409 => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
    Err(format!(
        "the object kept changing during {CAS_ATTEMPTS} attempts to replace it"
    ))
}

/// The document's content on top of the live object's identity: top-level fields come
/// from the document; metadata keeps the live uid, resourceVersion (compare-and-swap),
/// timestamps, finalizers and owners; labels are the document's; annotations are the
/// live ones overlaid with the document's; status stays the live one.
fn replace_content(live: &Value, doc: &Value) -> Value {
    let mut new = doc.clone();
    let mut metadata = live["metadata"].as_object().cloned().unwrap_or_default();
    let desired = doc["metadata"].as_object().cloned().unwrap_or_default();
    match desired.get("labels") {
        Some(l) => {
            metadata.insert("labels".into(), l.clone());
        }
        None => {
            metadata.remove("labels");
        }
    }
    let mut annotations = metadata
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(a) = desired.get("annotations").and_then(Value::as_object) {
        for (k, v) in a {
            annotations.insert(k.clone(), v.clone());
        }
    }
    metadata.insert("annotations".into(), Value::Object(annotations));
    new["metadata"] = Value::Object(metadata);
    match live.get("status") {
        Some(s) => new["status"] = s.clone(),
        None => {
            if let Some(o) = new.as_object_mut() {
                o.remove("status");
            }
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_lists_and_empty_documents() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n\
                    - {apiVersion: v1, kind: Secret, metadata: {name: c}}\n";
        let docs = parse_documents(text, false).unwrap();
        let names: Vec<&str> = docs.iter().map(meta::name).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn json_file_and_errors() {
        let docs = parse_documents(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}"#,
            true,
        )
        .unwrap();
        assert_eq!(meta::name(&docs[0]), "j");
        assert!(parse_documents("{", true)
            .unwrap_err()
            .contains("invalid JSON"));
        assert!(parse_documents("a: [", false)
            .unwrap_err()
            .contains("invalid YAML in document 1"));
        assert!(parse_documents("- 1\n- 2\n", false)
            .unwrap_err()
            .contains("not an object"));
    }

    #[test]
    fn resources_are_found_by_api_version_and_kind() {
        let d = |v: &str, k: &str| json!({"apiVersion": v, "kind": k});
        assert_eq!(
            resource_of(&d("apps/v1", "Deployment")).unwrap().plural,
            "deployments"
        );
        assert_eq!(
            resource_of(&d("v1", "Namespace")).unwrap().plural,
            "namespaces"
        );
        let e = resource_of(&d("apps/v1beta1", "Deployment")).unwrap_err();
        assert!(e.contains("serves apps/v1"), "{e}");
        assert!(resource_of(&d("example.com/v1", "Widget")).is_err());
        assert!(resource_of(&json!({"kind": "Pod"})).is_err());
    }

    #[test]
    fn replace_keeps_identity_and_status_and_takes_content() {
        let live = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "t", "labels": {"old": "x"},
                         "annotations": {"other": "kept", HASH_ANNOTATION: "h1"}},
            "data": {"k": "old", "gone": "y"},
            "status": {"s": 1}
        });
        let doc = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"new": "z"}, "annotations": {HASH_ANNOTATION: "h2"}},
            "data": {"k": "new"}
        });
        let n = replace_content(&live, &doc);
        assert_eq!(n["metadata"]["uid"], "u1");
        assert_eq!(n["metadata"]["resourceVersion"], "7");
        assert_eq!(n["metadata"]["labels"], json!({"new": "z"}));
        assert_eq!(n["metadata"]["annotations"]["other"], "kept");
        assert_eq!(n["metadata"]["annotations"][HASH_ANNOTATION], "h2");
        assert_eq!(n["data"], json!({"k": "new"}));
        assert_eq!(n["status"], json!({"s": 1}));
    }

    #[test]
    fn files_are_listed_with_skips_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for f in [
            "a.yaml",
            "b.yml",
            "c.json",
            "d.txt",
            "e.yaml.skip",
            "f.yaml",
            "f.yaml.skip",
            ".g.yaml",
            "sub/h.yaml",
        ] {
            let path = p.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let names: Vec<String> = manifest_files(p)
            .iter()
            .map(|f| f.strip_prefix(p).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yaml", "b.yml", "c.json", "sub/h.yaml"]);
    }
}
