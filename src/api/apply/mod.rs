//! Server-side apply (`application/apply-patch+yaml`) and field ownership, after
//! sigs.k8s.io/structured-merge-diff (`merge.Updater`) and the field manager chain of
//! k8s.io/apimachinery `util/managedfields/internal`:
//!
//! - [`apply`] merges an applied configuration into the live object for one manager:
//!   fields it sets are merged in, fields it set last time and no longer sets are removed
//!   unless someone else owns them, and fields it changes that another manager owns are
//!   conflicts (409) unless `force` moves their ownership.
//! - [`track_update`] records in `metadata.managedFields` which fields an ordinary create,
//!   update or patch changed, under an `Update` entry of its manager.
//!
//! Pure functions over JSON; the registry (src/server/registry/update.rs) calls them.

mod fieldpath;
mod managed;
mod walk;

#[cfg(test)]
mod tests;

pub use fieldpath::{path_string, Path, PathElement, Set};
pub use managed::{Entry, Managed, ManagerId, Operation};
pub use walk::{compare, field_set, merge, remove, Comparison, Lists};

use super::status::ApiError;
use fieldpath::{canonical, compare_values, go_json};
use serde_json::{json, Value};
use std::cmp::Ordering;

/// The annotation client-side `kubectl apply` keeps its last configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Update managers kept before the oldest are folded into `ancient-changes`.
const MAX_UPDATE_MANAGERS: usize = 10;

/// Which part of the object the managers of a write own (upstream's reset fields: the
/// main endpoint of a kind with a status subresource does not write `status`, and the
/// status subresource writes nothing else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole object.
    Whole,
    /// Everything but `status`.
    NoStatus,
    /// Only `status`.
    StatusOnly,
}

/// What a write is about.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// API group of the kind.
    pub group: &'a str,
    /// The kind.
    pub kind: &'a str,
    /// `apps/v1`, recorded in managedFields.
    pub api_version: &'a str,
    /// `status`, `scale`, or empty.
    pub subresource: &'a str,
    /// The part of the object this write owns.
    pub part: Part,
}

impl Scope<'_> {
    fn lists(&self) -> Lists<'_> {
        Lists::new(self.group, self.kind)
    }

    fn keep(&self, s: &Set) -> Set {
        let status = PathElement::Field("status".into());
        match self.part {
            Part::Whole => s.clone(),
            Part::NoStatus => s.without(&status),
            Part::StatusOnly => s.only(&status),
        }
    }
}

/// Fields nobody owns: type and identity metadata the server sets.
fn strip(s: &Set) -> Set {
    let f = |n: &str| PathElement::Field(n.to_string());
    let mut paths: Vec<Path> = vec![vec![f("apiVersion")], vec![f("kind")], vec![f("metadata")]];
    for m in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        paths.push(vec![f("metadata"), f(m)]);
    }
    s.difference(&Set::from_paths(&paths))
}

/// Why an apply failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// Fields the applier would change that other managers own.
    Conflicts(Vec<(ManagerId, Path)>),
    /// A malformed request (400).
    BadRequest(String),
    /// Stored managedFields that cannot be read (500).
    Internal(String),
}

impl ApplyError {
    /// Upstream's message: `Apply failed with 1 conflict: conflict with "x" using v1: .a`.
    pub fn message(&self) -> String {
        match self {
            ApplyError::BadRequest(m) | ApplyError::Internal(m) => m.clone(),
            ApplyError::Conflicts(cs) => {
                let cs = sorted(cs);
                if let [(id, path)] = cs.as_slice() {
                    return format!(
                        "Apply failed with 1 conflict: conflict with {}: {}",
                        id.describe(),
                        path_string(path)
                    );
                }
                let mut lines: Vec<String> = Vec::new();
                let mut last: Option<&ManagerId> = None;
                for (id, path) in &cs {
                    if last != Some(id) {
                        lines.push(format!("conflicts with {}:", id.describe()));
                        last = Some(id);
                    }
                    lines.push(format!("- {}", path_string(path)));
                }
                format!(
                    "Apply failed with {} conflicts: {}",
                    cs.len(),
                    lines.join("\n")
                )
            }
        }
    }
}

/// Conflicts grouped by manager, managers in order, paths in set order within each.
fn sorted(cs: &[(ManagerId, Path)]) -> Vec<(ManagerId, Path)> {
    let mut out = cs.to_vec();
    out.sort_by(|a, b| {
        let (x, y) = (&a.0, &b.0);
        x.manager
            .cmp(&y.manager)
            .then_with(|| x.operation.cmp(&y.operation))
            .then_with(|| x.api_version.cmp(&y.api_version))
            .then_with(|| x.subresource.cmp(&y.subresource))
    });
    out
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        let message = e.message();
        match e {
            ApplyError::BadRequest(_) => ApiError::bad_request(message),
            ApplyError::Internal(m) => ApiError::internal(m),
            ApplyError::Conflicts(cs) => {
                let causes: Vec<Value> = sorted(&cs)
                    .iter()
                    .map(|(id, path)| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with {}", id.describe()),
                            "field": path_string(path),
                        })
                    })
                    .collect();
                ApiError {
                    code: 409,
                    reason: "Conflict",
                    message,
                    details: Some(json!({ "causes": causes })),
                    retry_after: None,
                }
            }
        }
    }
}

/// The manager of a request without `fieldManager`: the User-Agent up to its first `/`,
/// printable characters only, at most 128 bytes (upstream's `prefixFromUserAgent`).
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 128 {
            break;
        }
        out.push(c);
    }
    out
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    v
}

fn set_managed_fields(obj: &mut Value, managed: &Managed) {
    let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match managed.encode() {
        Some(list) => {
            m.insert("managedFields".into(), list);
        }
        None => {
            m.shift_remove("managedFields");
        }
    }
}

/// `group/version, Kind=kind`, as upstream prints a GroupVersionKind.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

/// Applies `config` as `manager` to `live` (`{}` when the object does not exist yet) and
/// returns the new object with its `metadata.managedFields`. The caller writes it through
/// its usual path (defaulting, validation, system fields).
pub fn apply(
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    scope: &Scope,
    now: &str,
) -> Result<Value, ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::BadRequest(
            "the body of the request must be a JSON or YAML object".into(),
        ));
    }
    let api_version = config["apiVersion"].as_str().unwrap_or("");
    let kind = config["kind"].as_str().unwrap_or("");
    if api_version != scope.api_version || kind != scope.kind {
        return Err(ApplyError::BadRequest(format!(
            "invalid object type: {}",
            gvk_string(api_version, kind)
        )));
    }
    if !config["metadata"]["managedFields"].is_null() {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let managed = Managed::decode(live.pointer("/metadata/managedFields"))
        .map_err(|e| ApplyError::Internal(format!("failed to decode managed fields: {e}")))?;
    let live = without_managed_fields(live);
    let attempt =
        |force: bool| apply_once(&live, managed.clone(), config, manager, force, scope, now);
    let (mut new, managed) = match attempt(force) {
        // kubectl moving from client-side apply: conflicts on fields whose live value is
        // still what its last-applied annotation says are taken over silently.
        Err(ApplyError::Conflicts(cs)) if manager == "kubectl" => {
            match allowed_by_last_applied(&live, scope) {
                None => return Err(ApplyError::Conflicts(cs)),
                Some(allowed) => {
                    let rest: Vec<_> = cs.into_iter().filter(|(_, p)| !allowed.has(p)).collect();
                    if !rest.is_empty() {
                        return Err(ApplyError::Conflicts(rest));
                    }
                    attempt(true)?
                }
            }
        }
        other => other?,
    };
    // kubectl's server-side apply keeps an existing last-applied annotation current, so a
    // later client-side apply computes its patches from what was applied.
    if manager == "kubectl" {
        if let Some(ann) = new
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            if ann
                .get(LAST_APPLIED)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                ann.insert(LAST_APPLIED.into(), json!(last_applied_of(config)));
            }
        }
    }
    set_managed_fields(&mut new, &managed);
    Ok(new)
}

fn apply_once(
    live: &Value,
    mut managed: Managed,
    config: &Value,
    manager: &str,
    force: bool,
    scope: &Scope,
    now: &str,
) -> Result<(Value, Managed), ApplyError> {
    let lists = scope.lists();
    if managed.is_empty() {
        // Fields set before anyone tracked them belong to a stand-in manager, so that an
        // apply conflicts with them like with any other owner.
        update_into(
            &mut managed,
            &json!({}),
            live,
            "before-first-apply",
            scope,
            now,
        );
    }
    let id = ManagerId::new(
        manager,
        Operation::Apply,
        scope.api_version,
        scope.subresource,
    );
    let mut new = merge(live, config, &lists);
    let previous = managed.get(&id).cloned();
    managed.put(Entry {
        id: id.clone(),
        api_version: scope.api_version.to_string(),
        time: previous.as_ref().and_then(|e| e.time.clone()),
        set: scope.keep(&field_set(config, &lists)),
    });
    if let Some(last) = previous {
        prune(&mut new, &managed, &last.set, &lists);
    }
    let cmp = compare(live, &new, &lists).filter(|s| scope.keep(s));
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    for e in managed.entries.iter().filter(|e| e.id != id) {
        for p in e.set.intersection(&changed).paths() {
            conflicts.push((e.id.clone(), p));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for e in managed.entries.iter_mut().filter(|e| e.id != id) {
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }
    let touched = compare_values(live, &new) != Ordering::Equal;
    if let Some(mut e) = managed.remove(&id) {
        e.set = strip(&e.set);
        if touched {
            e.time = Some(now.to_string());
        }
        managed.put(e);
    }
    managed.drop_empty();
    Ok((new, managed))
}

/// Removes what the applier owned last time and no longer sets, unless another manager
/// owns it or something below it.
fn prune(new: &mut Value, managed: &Managed, last: &Set, lists: &Lists) {
    let owned = managed
        .entries
        .iter()
        .fold(Set::new(), |acc, e| acc.union(&e.set));
    let gone: Vec<Path> = last
        .difference(&owned)
        .paths()
        .into_iter()
        .filter(|p| !owned.has_at_or_below(p))
        .collect();
    if !gone.is_empty() {
        remove(new, &Set::from_paths(&gone), lists);
    }
}

/// Records a non-apply change from `old` to `new` as made by `manager`: it takes the fields
/// it added or changed from everyone else, removed fields are nobody's.
fn update_into(
    managed: &mut Managed,
    old: &Value,
    new: &Value,
    manager: &str,
    scope: &Scope,
    now: &str,
) {
    let id = ManagerId::new(
        manager,
        Operation::Update,
        scope.api_version,
        scope.subresource,
    );
    let cmp = compare(old, new, &scope.lists()).filter(|s| scope.keep(s));
    let changed = cmp.changed();
    for e in managed.entries.iter_mut() {
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }
    let set = strip(&changed);
    if !set.is_empty() {
        let set = match managed.get(&id) {
            Some(prev) => set.union(&prev.set),
            None => set,
        };
        managed.put(Entry {
            id,
            api_version: scope.api_version.to_string(),
            time: Some(now.to_string()),
            set,
        });
    }
    managed.drop_empty();
}

/// Records field ownership for a create, update or patch by `manager` (empty: `unknown`).
/// `new` is the object about to be written; its `metadata.managedFields` is replaced. As
/// upstream, an existing object nobody tracks stays untracked, `managedFields: []` in the
/// request resets tracking, and managedFields in a subresource request are ignored.
pub fn track_update(old: &Value, new: &mut Value, manager: &str, scope: &Scope, now: &str) {
    let from_old = || Managed::decode(old.pointer("/metadata/managedFields")).unwrap_or_default();
    let requested = new.pointer("/metadata/managedFields").cloned();
    let mut managed = if !scope.subresource.is_empty() {
        from_old()
    } else if is_reset(requested.as_ref()) {
        Managed::default()
    } else {
        match Managed::decode(requested.as_ref()) {
            Ok(m) if !m.is_empty() => m,
            _ => from_old(),
        }
    };
    let mut clean = without_managed_fields(new);
    let exists = !old["metadata"]["uid"].as_str().unwrap_or("").is_empty();
    if managed.is_empty() && exists {
        *new = clean;
        return;
    }
    let manager = if manager.is_empty() {
        "unknown"
    } else {
        manager
    };
    update_into(
        &mut managed,
        &without_managed_fields(old),
        &clean,
        manager,
        scope,
        now,
    );
    managed.cap_updates(MAX_UPDATE_MANAGERS);
    set_managed_fields(&mut clean, &managed);
    *new = clean;
}

/// `managedFields: []` or `[{}]`: the request asks to forget all ownership.
fn is_reset(list: Option<&Value>) -> bool {
    match list.and_then(Value::as_array).map(Vec::as_slice) {
        Some([]) => true,
        Some([only]) => only.as_object().is_some_and(|m| m.is_empty()),
        _ => false,
    }
}

/// Fields of the last-applied annotation whose live value is still the one applied.
fn allowed_by_last_applied(live: &Value, scope: &Scope) -> Option<Set> {
    let raw = live["metadata"]["annotations"][LAST_APPLIED].as_str()?;
    let last: Value = serde_json::from_str(raw).ok()?;
    if !last.is_object() || last["apiVersion"].as_str() != Some(scope.api_version) {
        return None;
    }
    let lists = scope.lists();
    let cmp = compare(&last, live, &lists);
    Some(
        field_set(&last, &lists)
            .difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// The last-applied annotation kubectl's server-side apply leaves: the applied object
/// without the annotation, as Go's JSON encoder writes it (sorted keys, final newline).
pub fn last_applied_of(config: &Value) -> String {
    let mut c = config.clone();
    if let Some(a) = c
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.shift_remove(LAST_APPLIED);
    }
    format!("{}\n", go_json(&canonical(&c)))
}
