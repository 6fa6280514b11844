//! The shape of the generated schema (`schema.rs`) and look-ups in it: messages by full proto
//! name, fields by number, and the message for an (apiVersion, kind).

use super::schema::{KINDS, MESSAGES};

/// One protobuf message of the Kubernetes API.
#[derive(Debug)]
pub struct Message {
    /// Full proto name, e.g. `k8s.io.api.core.v1.ConfigMap`.
    pub name: &'static str,
    /// How the message is written in JSON when that is not an object of its fields.
    pub special: Special,
    /// Sorted by number.
    pub fields: &'static [Field],
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    pub number: u32,
    /// The JSON name (for `Inline` fields, the proto name, which never reaches JSON).
    pub name: &'static str,
    pub label: Label,
    pub ty: Type,
}

/// Cardinality of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// Singular (proto2 `optional`).
    Opt,
    /// `repeated`: a JSON array.
    Rep,
    /// `map<string, ty>` (repeated entries with key = 1, value = 2): a JSON object.
    Map,
    /// A Go struct embedded with `json:",inline"`: its fields are merged into the parent.
    Inline,
}

/// Value type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Str,
    /// A JSON base64 string, as `[]byte` is in Go's encoding/json.
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    /// Index into `MESSAGES`.
    Msg(u16),
}

/// Messages with a custom JSON form upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    None,
    /// `intstr.IntOrString` {1 type, 2 intVal, 3 strVal}: a number or a string.
    IntOrString,
    /// `resource.Quantity` {1 string}: the string.
    Quantity,
    /// `meta.v1.Time` {1 seconds, 2 nanos}: RFC 3339, seconds precision, UTC.
    Time,
    /// `meta.v1.MicroTime`: RFC 3339 with 6 fractional digits, UTC.
    MicroTime,
    /// `meta.v1.Duration` {1 nanoseconds}: Go's duration string (`1h0m0s`).
    Duration,
    /// {1 raw bytes} holding JSON: `runtime.RawExtension`, `meta.v1.FieldsV1`, apiextensions
    /// `JSON`. The bytes are the value.
    RawJson,
    /// apiextensions `JSONSchemaPropsOrArray` {1 schema, 2 jSONSchemas}.
    SchemaOrArray,
    /// apiextensions `JSONSchemaPropsOrBool` {1 allows, 2 schema}.
    SchemaOrBool,
    /// apiextensions `JSONSchemaPropsOrStringArray` {1 schema, 2 property}.
    SchemaOrStringArray,
    /// A Go `[]string` type wrapped in a message {1 items}: `ExtraValue`, `meta.v1.Verbs`.
    StringList,
}

/// (apiVersion, kind) of a top-level type.
#[derive(Debug)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub message: u16,
}

/// Builds a field; keeps the generated table short.
pub const fn f(number: u32, name: &'static str, label: Label, ty: Type) -> Field {
    Field {
        number,
        name,
        label,
        ty,
    }
}

impl Message {
    /// The field with this number, if the schema knows it.
    pub fn field(&self, number: u32) -> Option<&'static Field> {
        let fields: &'static [Field] = self.fields;
        fields
            .binary_search_by_key(&number, |f| f.number)
            .ok()
            .map(|i| &fields[i])
    }
}

/// The message at an index taken from the table itself.
pub fn message(index: u16) -> &'static Message {
    &MESSAGES[usize::from(index)]
}

/// The message with this full proto name.
pub fn message_by_name(name: &str) -> Option<&'static Message> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &MESSAGES[i])
}

/// Kinds of `meta.k8s.io/v1` that client-go sends under any group version (they are
/// registered in every group, e.g. `DeleteOptions` as `apps/v1`).
const META_OPTIONS: &[&str] = &[
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "UpdateOptions",
];

/// The message for a top-level object, from its apiVersion and kind.
pub fn message_for_kind(api_version: &str, kind: &str) -> Option<&'static Message> {
    if let Ok(i) = KINDS.binary_search_by(|k| (k.api_version, k.kind).cmp(&(api_version, kind))) {
        return Some(message(KINDS[i].message));
    }
    if META_OPTIONS.contains(&kind) {
        return message_by_name(&format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}"));
    }
    // Types that are not resources (subresource bodies, lists): the package of a known kind
    // of the same apiVersion. "v1" names two packages (core, and meta's unversioned kinds).
    KINDS
        .iter()
        .filter(|k| k.api_version == api_version)
        .filter_map(|k| message(k.message).name.rsplit_once('.'))
        .find_map(|(package, _)| message_by_name(&format!("{package}.{kind}")))
}
