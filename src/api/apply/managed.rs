//! `metadata.managedFields`: decoding the entries into per-manager field sets and encoding
//! them back, as k8s.io/apimachinery `util/managedfields/internal` (managedfields.go) does.
//! A manager is identified by its name, operation, subresource and, for `Update` entries,
//! the API version; an `Apply` entry is one per manager whatever the version.

use super::fieldpath::Set;
use serde_json::{json, Map, Value};

/// `Apply` or `Update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// A server-side apply.
    Apply,
    /// Any other write (create, update, patch).
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who owns a set of fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerId {
    /// The `fieldManager` (or the User-Agent prefix).
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// Part of the identity of Update entries only.
    pub api_version: String,
    /// `status`, `scale`, or empty for the main resource.
    pub subresource: String,
}

impl ManagerId {
    /// An identity; `api_version` is dropped for Apply, as upstream does.
    pub fn new(manager: &str, operation: Operation, api_version: &str, sub: &str) -> ManagerId {
        ManagerId {
            manager: manager.to_string(),
            operation,
            api_version: match operation {
                Operation::Apply => String::new(),
                Operation::Update => api_version.to_string(),
            },
            subresource: sub.to_string(),
        }
    }

    /// How conflict messages name the manager: `"kubectl-scale" with subresource "scale"
    /// using apps/v1` (upstream's `printManager`).
    pub fn describe(&self) -> String {
        let mut s = quote(&self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {}", quote(&self.subresource)));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// One manager's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Who.
    pub id: ManagerId,
    /// The API version the set is expressed in.
    pub api_version: String,
    /// When the manager last changed the object (RFC 3339), if known.
    pub time: Option<String>,
    /// The owned fields.
    pub set: Set,
}

/// All managers of an object, in no particular order (encoding sorts them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Managed {
    /// The entries, at most one per identity.
    pub entries: Vec<Entry>,
}

impl Managed {
    /// Whether no manager owns anything.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `id`.
    pub fn get(&self, id: &ManagerId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == *id)
    }

    /// Sets (replaces) the entry of `entry.id`.
    pub fn put(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.id == entry.id) {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
    }

    /// Removes the entry of `id`.
    pub fn remove(&mut self, id: &ManagerId) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.id == *id)?;
        Some(self.entries.remove(i))
    }

    /// Drops managers left without fields.
    pub fn drop_empty(&mut self) {
        self.entries.retain(|e| !e.set.is_empty());
    }

    /// Decodes `metadata.managedFields` (absent or null: no managers).
    pub fn decode(list: Option<&Value>) -> Result<Managed, String> {
        let items = match list {
            None | Some(Value::Null) => return Ok(Managed::default()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(format!("managedFields must be a list, not {other}")),
        };
        let mut out = Managed::default();
        for (i, item) in items.iter().enumerate() {
            let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
            let operation = match s("operation") {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err("operation must be `Apply` or `Update`".into()),
            };
            let api_version = s("apiVersion");
            if api_version.is_empty() {
                return Err("apiVersion must not be empty".into());
            }
            match s("fieldsType") {
                "FieldsV1" => {}
                "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
                other => {
                    return Err(format!(
                        "invalid fieldsType {other:?} in managed fields entry {i}"
                    ))
                }
            }
            let set = match item.get("fieldsV1") {
                None | Some(Value::Null) => Set::new(),
                Some(f) => Set::from_fields_v1(f)
                    .map_err(|e| format!("error decoding versioned set from entry {i}: {e}"))?,
            };
            out.put(Entry {
                id: ManagerId::new(s("manager"), operation, api_version, s("subresource")),
                api_version: api_version.to_string(),
                time: item.get("time").and_then(Value::as_str).map(str::to_string),
                set,
            });
        }
        Ok(out)
    }

    /// Encodes the entries in upstream's order: Apply before Update, then by time, manager,
    /// API version and subresource. None when there are no managers.
    pub fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by(|a, b| {
            a.id.operation
                .cmp(&b.id.operation)
                .then_with(|| a.time.cmp(&b.time))
                .then_with(|| a.id.manager.cmp(&b.id.manager))
                .then_with(|| a.api_version.cmp(&b.api_version))
                .then_with(|| a.id.subresource.cmp(&b.id.subresource))
        });
        let list = entries
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), json!(e.id.manager));
                m.insert("operation".into(), json!(e.id.operation.as_str()));
                m.insert("apiVersion".into(), json!(e.api_version));
                if let Some(t) = &e.time {
                    m.insert("time".into(), json!(t));
                }
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !e.id.subresource.is_empty() {
                    m.insert("subresource".into(), json!(e.id.subresource));
                }
                Value::Object(m)
            })
            .collect();
        Some(Value::Array(list))
    }

    /// Folds the oldest Update managers into `ancient-changes` (one per API version) so that
    /// at most `max` Update entries remain, as upstream's capManagersManager does.
    pub fn cap_updates(&mut self, max: usize) {
        let mut updaters: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].id.operation == Operation::Update)
            .collect();
        if updaters.len() <= max {
            return;
        }
        updaters.sort_by(|&a, &b| {
            let (x, y) = (&self.entries[a], &self.entries[b]);
            x.time
                .cmp(&y.time)
                .then_with(|| x.id.manager.cmp(&y.id.manager))
        });
        let mut length = updaters.len();
        let mut first_of_version: Vec<(String, ManagerId)> = Vec::new();
        let mut gone: Vec<ManagerId> = Vec::new();
        for &i in &updaters {
            if length <= max {
                break;
            }
            let entry = self.entries[i].clone();
            let version = entry.api_version.clone();
            let bucket = ManagerId::new("ancient-changes", Operation::Update, &version, "");
            match first_of_version.iter().find(|(v, _)| *v == version) {
                Some((_, first)) => {
                    let base = match self.get(&bucket) {
                        Some(b) => b.set.clone(),
                        None => {
                            let f = first.clone();
                            let s = self.get(&f).map(|e| e.set.clone()).unwrap_or_default();
                            gone.push(f);
                            s
                        }
                    };
                    self.put(Entry {
                        id: bucket,
                        api_version: version,
                        time: entry.time.clone(),
                        set: entry.set.union(&base),
                    });
                    gone.push(entry.id);
                    length -= 1;
                }
                None => first_of_version.push((version, entry.id)),
            }
        }
        for id in gone {
            self.remove(&id);
        }
    }
}
