//! Object metadata helpers: reading names and labels from raw JSON objects, new UIDs and
//! timestamps, generated names, and the canonical stored form of an object.
//!
//! Objects are stored without `metadata.resourceVersion`, with `apiVersion`, `kind` and
//! `metadata` as their first three keys. That layout lets [`inject_resource_version`]
//! add the revision on the way out by splicing bytes instead of re-encoding.

use serde_json::{Map, Value};

/// `metadata` of an object, if it is an object.
pub fn metadata(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// `metadata` of an object, created when missing (replaced when not an object).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = ensure_object(obj);
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    ensure_object(meta)
}

/// Turns `v` into an empty object unless it already is one, and returns the map.
pub fn ensure_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// A string field of `metadata` (empty when missing).
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    metadata(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

/// `metadata.labels`.
pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    metadata(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    metadata(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    metadata(obj)
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
}

/// Reads a dotted path such as `spec.nodeName` as the string upstream's field selectors
/// compare against (`true`/`false` for booleans, decimal for numbers, "" when missing).
pub fn field_string(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// A random RFC 4122 version-4 UID, as upstream assigns to `metadata.uid`.
pub fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Cryptographically random bytes (the OS generator through ring).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    // SystemRandom only fails when the OS has no random source at all; fall back to
    // time-derived bytes rather than panicking in a request path.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

/// Upstream's alphabet for generated name suffixes (no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The 5-character random suffix appended to `metadata.generateName`.
pub fn random_name_suffix() -> String {
    random_bytes::<5>()
        .iter()
        .map(|b| NAME_ALPHABET[*b as usize % NAME_ALPHABET.len()] as char)
        .collect()
}

/// The current time as RFC 3339 with second precision, like `metav1.Time`.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    format!("{}", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

/// The time `secs` seconds from now, RFC 3339 with second precision.
pub fn rfc3339_in(secs: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    format!("{}", t.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

/// The current time with microseconds, like `metav1.MicroTime`.
pub fn now_rfc3339_micro() -> String {
    let now = jiff::Timestamp::now();
    format!("{}", now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"))
}

/// Serializes `obj` in the stored form: `apiVersion`, `kind`, `metadata` first and no
/// `metadata.resourceVersion`.
pub fn to_stored_bytes(obj: &Value) -> Vec<u8> {
    let Some(map) = obj.as_object() else {
        return serde_json::to_vec(obj).unwrap_or_default();
    };
    let mut out = Map::with_capacity(map.len());
    for k in ["apiVersion", "kind"] {
        out.insert(
            k.to_string(),
            map.get(k).cloned().unwrap_or(Value::String(String::new())),
        );
    }
    let mut meta = map
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.remove("resourceVersion");
    out.insert("metadata".to_string(), Value::Object(meta));
    for (k, v) in map {
        if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            out.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}

/// Adds `"resourceVersion":"<rv>"` to stored bytes (see [`to_stored_bytes`]).
pub fn inject_resource_version(stored: &[u8], rv: i64) -> Vec<u8> {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    // apiVersion and kind come first and are JSON strings, in which a quote is always
    // escaped, so the first unescaped `"metadata":{` is the top-level key.
    if let Some(pos) = stored.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let at = pos + NEEDLE.len();
        let field = format!("\"resourceVersion\":\"{rv}\"");
        let mut out = Vec::with_capacity(stored.len() + field.len() + 1);
        out.extend_from_slice(&stored[..at]);
        out.extend_from_slice(field.as_bytes());
        if stored.get(at) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(&stored[at..]);
        return out;
    }
    // Not in stored form (should not happen): decode, set, encode.
    match serde_json::from_slice::<Value>(stored) {
        Ok(mut v) => {
            metadata_mut(&mut v).insert("resourceVersion".into(), Value::String(rv.to_string()));
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Err(_) => stored.to_vec(),
    }
}

/// Decodes stored bytes and sets `metadata.resourceVersion`.
pub fn decode_stored(stored: &[u8], rv: i64) -> Result<Value, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(stored)?;
    metadata_mut(&mut v).insert("resourceVersion".into(), Value::String(rv.to_string()));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_form_round_trips_with_resource_version() {
        let obj = json!({"spec": {"template": {"metadata": {"x": 1}}}, "data": {"metadata": {"a": 1}}, "kind": "Thing", "apiVersion": "v1", "metadata": {"name": "a", "resourceVersion": "9"}});
        let stored = to_stored_bytes(&obj);
        assert!(stored.starts_with(br#"{"apiVersion":"v1","kind":"Thing","metadata":{"name":"a"}"#));
        let out: Value = serde_json::from_slice(&inject_resource_version(&stored, 42)).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "42");
        assert_eq!(out["data"]["metadata"], json!({"a": 1}));
        assert_eq!(out["spec"]["template"]["metadata"], json!({"x": 1}));
    }

    #[test]
    fn inject_into_empty_metadata() {
        let stored = to_stored_bytes(&json!({"apiVersion": "v1", "kind": "X"}));
        let out: Value = serde_json::from_slice(&inject_resource_version(&stored, 7)).unwrap();
        assert_eq!(out["metadata"], json!({"resourceVersion": "7"}));
    }

    #[test]
    fn uid_is_v4_shaped() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }

    #[test]
    fn field_strings() {
        let o = json!({"spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"replicas": 3}});
        assert_eq!(field_string(&o, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(
            field_string(&o, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(field_string(&o, "status.replicas").as_deref(), Some("3"));
        assert_eq!(field_string(&o, "status.phase"), None);
    }
}
