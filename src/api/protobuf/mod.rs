//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into
//! the JSON object the rest of the API pipeline works on. kubectl's typed clients
//! (`kubectl create configmap|deployment|secret|...`, `kubectl run`, `expose`, drain's
//! eviction) send protobuf; responses stay JSON, which kubectl also accepts.
//!
//! A body is the prefix `k8s\0` and a `runtime.Unknown` {1 typeMeta {1 apiVersion, 2 kind},
//! 2 raw, 3 contentEncoding, 4 contentType}; `raw` is the object's own message, looked up in
//! the generated schema (`schema.rs`, from `scripts/gen-protobuf-schema.py`) by apiVersion
//! and kind.
//!
//! # Zero values (the omitempty rule)
//!
//! Go's gogo marshaller writes every non-pointer field, zero or not, and pointer fields only
//! when set; the wire does not say which was which. To come close to the JSON kubectl would
//! have sent, a *singular* field is left out when it is
//! - an empty string or empty bytes,
//! - a zero `meta.v1.Time` or `MicroTime`, which upstream writes as an empty message (so
//!   `metadata.creationTimestamp` of a new object is absent; an explicit `seconds: 0` is the
//!   Unix epoch, as upstream reads it),
//! - an all-zero `IntOrString` (type Int, value 0, no string),
//! - a `RawExtension`, `FieldsV1` or apiextensions `JSON` without bytes.
//!
//! Numbers (0 included) and booleans (false included) are kept as decoded, so pointer fields
//! such as `replicas: 0` survive; non-pointer ones show up as `hostPort: 0`, `nodePort: 0`,
//! `stdin: false`, `metadata.generation: 0`, which upstream also treats as unset. Nested
//! messages are kept even when empty (`{}`), as encoding/json keeps structs. Repeated fields
//! and maps appear only with elements, and their elements are never dropped
//! (`apiGroups: [""]`, `data: {"a": ""}`). The bodies kubectl 1.32 sends decode to exactly its
//! `--dry-run=client -o json` output but for these zero numbers and booleans and
//! `creationTimestamp: null` (tests: `testdata/kubectl-1.32`).
//!
//! Special JSON forms: `IntOrString` → number or string, `Quantity` → string, `Time` → RFC
//! 3339 in UTC with seconds (nanos ignored, as upstream), `MicroTime` → with 6 fractional
//! digits, `Duration` → Go duration string, `RawExtension`/`FieldsV1`/`JSON` → the embedded
//! JSON (a `RawExtension` holding a `k8s\0` document is decoded too), `bytes` → base64,
//! `ExtraValue`/`Verbs` → string arrays, the apiextensions `JSONSchemaPropsOr*` unions → their
//! one set member, Go structs embedded with `json:",inline"` (Probe's handler, Volume's
//! source, `LocalObjectReference` in key selectors) → merged into the parent. A singular field
//! sent twice keeps the last value (messages are not merged).
//!
//! # Unknown fields
//!
//! Fields the schema does not know (a newer kubectl) are skipped. Those carrying a value are
//! reported as JSON paths whose last segment is `#<field number>`, e.g.
//! `spec.template.spec.containers[0].#99`; zero ones (varint 0, empty bytes) are not, since
//! JSON would not have carried them either (kubectl < 1.25 still sends the removed
//! `ObjectMeta.clusterName` as "").

mod decode;
mod schema;
mod table;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::Value;

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// A decoded request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object, with `apiVersion` and `kind` from the envelope.
    pub object: Value,
    /// Paths of fields the schema does not know, skipped; the caller may warn about them.
    pub unknown_fields: Vec<String>,
}

/// Decodes a protobuf request body into a JSON object with apiVersion and kind set.
/// Err(String) carries a clear message for a 400 BadRequest.
pub fn decode(body: &[u8]) -> Result<Decoded, String> {
    let mut decoder = decode::Decoder::new();
    let object = decoder
        .document(body)
        .map_err(|e| format!("invalid protobuf body: {e}"))?;
    Ok(Decoded {
        object: Value::Object(object),
        unknown_fields: decoder.unknown,
    })
}

/// Whether a Content-Type header value names Kubernetes protobuf (parameters ignored).
pub fn is_media_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}
