//! Turns one protobuf message into the JSON value Go's encoding/json would have written for
//! the same Go object, guided by the generated schema; see the module docs of
//! `api::protobuf` for the omitempty rule this follows.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::table::{self, Field, Label, Message, Special, Type};
use super::wire::{Reader, WireType};

/// The prefix of every Kubernetes protobuf document.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Nesting limit: deeper input is refused rather than risking the stack.
const MAX_DEPTH: usize = 100;

/// One step of the JSON path to the value being decoded.
enum Seg {
    Field(&'static str),
    Index(usize),
    Key(String),
    Number(u32),
}

/// A decoded value and whether it is the zero value that a singular field leaves out.
enum Item {
    Value(Value),
    /// Left out when singular; this value stands in a list or map.
    Zero(Value),
}

/// Walks one document; collects the paths of unknown fields on the way.
pub struct Decoder {
    path: Vec<Seg>,
    depth: usize,
    pub unknown: Vec<String>,
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            path: Vec::new(),
            depth: 0,
            unknown: Vec::new(),
        }
    }

    fn path_string(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
                Seg::Key(k) => out.push_str(&format!("[{k}]")),
                Seg::Number(n) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&format!("#{n}"));
                }
            }
        }
        out
    }

    /// An error message naming where it happened.
    fn err(&self, msg: &Message, detail: impl std::fmt::Display) -> String {
        let path = self.path_string();
        if path.is_empty() {
            format!("{detail} (in {})", msg.name)
        } else {
            format!("{detail} at {path} (in {})", msg.name)
        }
    }

    /// Decodes a whole document: the `k8s\0` prefix and the `runtime.Unknown` envelope
    /// around the object's message. Returns the object with `apiVersion` and `kind` set.
    pub fn document(&mut self, body: &[u8]) -> Result<Map<String, Value>, String> {
        let Some(rest) = body.strip_prefix(MAGIC.as_slice()) else {
            return Err(
                "the body does not start with the Kubernetes protobuf prefix \
                        \"k8s\\x00\""
                    .to_string(),
            );
        };
        let envelope = Envelope::read(rest).map_err(|e| {
            let path = self.path_string();
            if path.is_empty() {
                format!("{e} (in the runtime.Unknown envelope)")
            } else {
                format!("{e} at {path} (in a nested runtime.Unknown envelope)")
            }
        })?;
        if !envelope.content_encoding.is_empty() {
            return Err(format!(
                "contentEncoding {:?} is not supported",
                envelope.content_encoding
            ));
        }
        if envelope.kind.is_empty() || envelope.api_version.is_empty() {
            return Err(format!(
                "the envelope has no {} (typeMeta is {:?}/{:?})",
                if envelope.kind.is_empty() {
                    "kind"
                } else {
                    "apiVersion"
                },
                envelope.api_version,
                envelope.kind
            ));
        }
        let Some(msg) = table::message_for_kind(&envelope.api_version, &envelope.kind) else {
            return Err(format!(
                "no protobuf schema for kind {:?} in apiVersion {:?}; send it as JSON",
                envelope.kind, envelope.api_version
            ));
        };
        let fields = self.object(msg, envelope.raw)?;
        let mut out = Map::with_capacity(fields.len() + 2);
        out.insert("apiVersion".into(), Value::String(envelope.api_version));
        out.insert("kind".into(), Value::String(envelope.kind));
        out.extend(fields);
        Ok(out)
    }

    /// Decodes a message as a JSON object of its fields (no special forms).
    pub fn object(
        &mut self,
        msg: &'static Message,
        bytes: &[u8],
    ) -> Result<Map<String, Value>, String> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(msg, format!("nested deeper than {MAX_DEPTH} messages")));
        }
        self.depth += 1;
        let result = self.object_fields(msg, bytes);
        self.depth -= 1;
        result
    }

    fn object_fields(
        &mut self,
        msg: &'static Message,
        bytes: &[u8],
    ) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (number, wire) = r.key().map_err(|e| self.err(msg, e))?;
            let Some(field) = msg.field(number) else {
                self.path.push(Seg::Number(number));
                let skipped = r.skip(wire).map_err(|e| self.err(msg, e));
                // A zero value is what every non-pointer field looks like when unset (like
                // ObjectMeta.clusterName from kubectl < 1.25): JSON would not carry it either.
                if skipped == Ok(true) {
                    self.unknown.push(self.path_string());
                }
                self.path.pop();
                skipped?;
                continue;
            };
            self.path.push(Seg::Field(field.name));
            let result = self.field(msg, field, wire, &mut r, &mut out);
            self.path.pop();
            result?;
        }
        Ok(out)
    }

    fn field(
        &mut self,
        msg: &'static Message,
        field: &'static Field,
        wire: WireType,
        r: &mut Reader<'_>,
        out: &mut Map<String, Value>,
    ) -> Result<(), String> {
        let expected = wire_type(field.ty, field.label);
        let packed = field.label == Label::Rep && wire == WireType::Len && is_packable(field.ty);
        if wire != expected && !packed {
            return Err(self.err(
                msg,
                format!(
                    "field {} has wire type {wire}, expected {expected}",
                    field.number
                ),
            ));
        }
        match field.label {
            Label::Opt => match self.single(msg, field.ty, r)? {
                Item::Value(v) => {
                    out.insert(field.name.into(), v);
                }
                // Last one wins, as in protobuf; a zero value clears an earlier one.
                Item::Zero(_) => {
                    out.remove(field.name);
                }
            },
            Label::Inline => match self.single(msg, field.ty, r)? {
                Item::Value(Value::Object(fields)) | Item::Zero(Value::Object(fields)) => {
                    out.extend(fields)
                }
                _ => {
                    return Err(self.err(msg, "inline field is not a message object"));
                }
            },
            Label::Rep => {
                let mut items = Vec::new();
                if packed {
                    let bytes = r.len_delimited().map_err(|e| self.err(msg, e))?;
                    let mut inner = Reader::new(bytes);
                    while !inner.is_empty() {
                        items.push(self.single(msg, field.ty, &mut inner)?);
                    }
                } else {
                    items.push(self.single_indexed(msg, field, r, out)?);
                }
                let items = items.into_iter().map(Item::into_value);
                // Elements arrive one field at a time; look the list up without allocating a key.
                match out.get_mut(field.name) {
                    Some(Value::Array(list)) => list.extend(items),
                    _ => {
                        // An empty packed list is an empty repeated field: absent.
                        let items: Vec<Value> = items.collect();
                        if !items.is_empty() {
                            out.insert(field.name.into(), Value::Array(items));
                        }
                    }
                }
            }
            Label::Map => {
                let entry = r.len_delimited().map_err(|e| self.err(msg, e))?;
                let (key, value) = self.map_entry(msg, field, entry)?;
                match out.get_mut(field.name) {
                    Some(Value::Object(map)) => {
                        map.insert(key, value);
                    }
                    _ => {
                        let mut map = Map::new();
                        map.insert(key, value);
                        out.insert(field.name.into(), Value::Object(map));
                    }
                }
            }
        }
        Ok(())
    }

    /// One element of a repeated field, with its index on the path.
    fn single_indexed(
        &mut self,
        msg: &'static Message,
        field: &'static Field,
        r: &mut Reader<'_>,
        out: &Map<String, Value>,
    ) -> Result<Item, String> {
        let index = match out.get(field.name) {
            Some(Value::Array(list)) => list.len(),
            _ => 0,
        };
        self.path.push(Seg::Index(index));
        let result = self.single(msg, field.ty, r);
        self.path.pop();
        result
    }

    /// A map entry message: key = 1 (string), value = 2.
    fn map_entry(
        &mut self,
        msg: &'static Message,
        field: &'static Field,
        bytes: &[u8],
    ) -> Result<(String, Value), String> {
        let mut key = String::new();
        let mut value = None;
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (number, wire) = r.key().map_err(|e| self.err(msg, e))?;
            match number {
                1 => {
                    if wire != WireType::Len {
                        return Err(self.err(msg, format!("map key has wire type {wire}")));
                    }
                    let bytes = r.len_delimited().map_err(|e| self.err(msg, e))?;
                    key = String::from_utf8_lossy(bytes).into_owned();
                }
                2 => {
                    let expected = wire_type(field.ty, Label::Opt);
                    if wire != expected {
                        return Err(self.err(
                            msg,
                            format!("map value has wire type {wire}, expected {expected}"),
                        ));
                    }
                    self.path.push(Seg::Key(key.clone()));
                    let item = self.single(msg, field.ty, &mut r);
                    self.path.pop();
                    value = Some(item?.into_value());
                }
                _ => {
                    if r.skip(wire).map_err(|e| self.err(msg, e))? {
                        self.path.push(Seg::Key(key.clone()));
                        self.path.push(Seg::Number(number));
                        self.unknown.push(self.path_string());
                        self.path.pop();
                        self.path.pop();
                    }
                }
            }
        }
        let value = match value {
            Some(v) => v,
            // An absent value is the type's zero value.
            None => match field.ty {
                Type::Msg(i) => self.message(table::message(i), &[])?.into_value(),
                ty => Self::zero_scalar(ty),
            },
        };
        Ok((key, value))
    }

    fn zero_scalar(ty: Type) -> Value {
        match ty {
            Type::Str | Type::Bytes => Value::String(String::new()),
            Type::Bool => Value::Bool(false),
            Type::I32 | Type::I64 => Value::Number(0.into()),
            Type::F64 => Value::Number(0.into()),
            Type::Msg(_) => Value::Null,
        }
    }

    /// One value of type `ty`; the wire type has been checked.
    fn single(
        &mut self,
        msg: &'static Message,
        ty: Type,
        r: &mut Reader<'_>,
    ) -> Result<Item, String> {
        let wire = |e| self.err(msg, e);
        Ok(match ty {
            Type::Str => {
                let bytes = r.len_delimited().map_err(wire)?;
                // Go strings may hold any bytes; encoding/json writes invalid UTF-8 as U+FFFD.
                let s = String::from_utf8_lossy(bytes).into_owned();
                if s.is_empty() {
                    Item::Zero(Value::String(s))
                } else {
                    Item::Value(Value::String(s))
                }
            }
            Type::Bytes => {
                let bytes = r.len_delimited().map_err(wire)?;
                let s = base64::engine::general_purpose::STANDARD.encode(bytes);
                if s.is_empty() {
                    Item::Zero(Value::String(s))
                } else {
                    Item::Value(Value::String(s))
                }
            }
            Type::Bool => Item::Value(Value::Bool(r.varint().map_err(wire)? != 0)),
            // int32 travels sign-extended to 64 bits; truncating is protobuf's rule.
            Type::I32 => Item::Value(Value::Number((r.varint().map_err(wire)? as i32).into())),
            Type::I64 => Item::Value(Value::Number((r.varint().map_err(wire)? as i64).into())),
            Type::F64 => {
                let f = f64::from_bits(r.fixed64().map_err(wire)?);
                Item::Value(Value::Number(self.float(msg, f)?))
            }
            Type::Msg(i) => {
                let bytes = r.len_delimited().map_err(wire)?;
                self.message(table::message(i), bytes)?
            }
        })
    }

    /// Go writes integral floats without a fraction (`5`, not `5.0`).
    fn float(&self, msg: &Message, f: f64) -> Result<Number, String> {
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            return Ok(Number::from(f as i64));
        }
        Number::from_f64(f).ok_or_else(|| self.err(msg, format!("{f} has no JSON form")))
    }

    /// A message value in its JSON form.
    fn message(&mut self, msg: &'static Message, bytes: &[u8]) -> Result<Item, String> {
        match msg.special {
            Special::None => Ok(Item::Value(Value::Object(self.object(msg, bytes)?))),
            Special::RawJson => self.raw_json(msg, bytes),
            special => {
                let fields = self.object(msg, bytes)?;
                self.special(msg, special, fields)
            }
        }
    }

    /// The special forms built from the message's decoded fields.
    fn special(
        &self,
        msg: &'static Message,
        special: Special,
        mut fields: Map<String, Value>,
    ) -> Result<Item, String> {
        // Upstream writes a zero Time as an empty message and reads only an empty message as
        // zero; an explicit `seconds: 0` is the Unix epoch.
        let empty = fields.is_empty();
        let mut take = |number: u32| -> Option<Value> {
            let field = msg.field(number)?;
            fields.remove(field.name)
        };
        let int = |v: Option<Value>| v.and_then(|v| v.as_i64()).unwrap_or(0);
        Ok(match special {
            Special::None | Special::RawJson => Item::Value(Value::Object(fields)),
            Special::IntOrString => {
                let kind = int(take(1));
                let int_val = int(take(2));
                let str_val = take(3);
                match kind {
                    0 if int_val == 0 && str_val.is_none() => Item::Zero(Value::Number(0.into())),
                    0 => Item::Value(Value::Number(int_val.into())),
                    1 => Item::Value(str_val.unwrap_or_else(|| Value::String(String::new()))),
                    other => {
                        return Err(self.err(msg, format!("IntOrString has invalid type {other}")))
                    }
                }
            }
            Special::Quantity => match take(1) {
                Some(s) => Item::Value(s),
                // The zero Quantity; Go writes it as "0".
                None => Item::Value(Value::String("0".into())),
            },
            Special::Time | Special::MicroTime => {
                let seconds = int(take(1));
                let nanos = int(take(2));
                if empty {
                    Item::Zero(Value::Null)
                } else {
                    let micro = special == Special::MicroTime;
                    Item::Value(Value::String(self.time(msg, seconds, nanos, micro)?))
                }
            }
            Special::Duration => Item::Value(Value::String(go_duration(int(take(1))))),
            Special::StringList => Item::Value(take(1).unwrap_or_else(|| Value::Array(Vec::new()))),
            Special::SchemaOrArray => {
                let schema = take(1);
                match take(2) {
                    Some(list @ Value::Array(_)) => Item::Value(list),
                    _ => schema.map_or(Item::Zero(Value::Null), Item::Value),
                }
            }
            Special::SchemaOrBool => {
                let allows = take(1);
                match take(2) {
                    Some(schema) => Item::Value(schema),
                    None => Item::Value(allows.unwrap_or(Value::Bool(false))),
                }
            }
            Special::SchemaOrStringArray => {
                let schema = take(1);
                match take(2) {
                    Some(list @ Value::Array(_)) => Item::Value(list),
                    _ => schema.map_or(Item::Zero(Value::Null), Item::Value),
                }
            }
        })
    }

    fn time(&self, msg: &Message, seconds: i64, nanos: i64, micro: bool) -> Result<String, String> {
        let out_of_range = || self.err(msg, format!("time {seconds}s {nanos}ns is out of range"));
        let nanos = i32::try_from(nanos)
            .ok()
            .filter(|n| (0..1_000_000_000).contains(n))
            .ok_or_else(out_of_range)?;
        let ts = jiff::Timestamp::new(seconds, if micro { nanos } else { 0 })
            .map_err(|_| out_of_range())?;
        let format = if micro {
            "%Y-%m-%dT%H:%M:%S.%6fZ"
        } else {
            "%Y-%m-%dT%H:%M:%SZ"
        };
        jiff::fmt::strtime::format(format, ts).map_err(|_| out_of_range())
    }

    /// {1 raw bytes} holding a JSON document (or, in a RawExtension, possibly a nested
    /// protobuf document).
    fn raw_json(&mut self, msg: &'static Message, bytes: &[u8]) -> Result<Item, String> {
        let mut raw: &[u8] = &[];
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (number, wire) = r.key().map_err(|e| self.err(msg, e))?;
            if number == 1 && wire == WireType::Len {
                raw = r.len_delimited().map_err(|e| self.err(msg, e))?;
            } else if number == 1 {
                return Err(self.err(
                    msg,
                    format!("field 1 has wire type {wire}, expected length-delimited"),
                ));
            } else if r.skip(wire).map_err(|e| self.err(msg, e))? {
                self.path.push(Seg::Number(number));
                self.unknown.push(self.path_string());
                self.path.pop();
            }
        }
        if raw.is_empty() {
            return Ok(Item::Zero(Value::Null));
        }
        if raw.starts_with(MAGIC) {
            if self.depth >= MAX_DEPTH {
                return Err(self.err(msg, format!("nested deeper than {MAX_DEPTH} messages")));
            }
            self.depth += 1;
            let result = self.document(raw);
            self.depth -= 1;
            return Ok(Item::Value(Value::Object(result?)));
        }
        serde_json::from_slice(raw)
            .map(Item::Value)
            .map_err(|e| self.err(msg, format!("raw bytes are not JSON: {e}")))
    }
}

impl Item {
    fn into_value(self) -> Value {
        match self {
            Item::Value(v) | Item::Zero(v) => v,
        }
    }
}

/// What a (possibly nested) envelope carries.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    /// `runtime.Unknown`: 1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding,
    /// 4 contentType.
    fn read(bytes: &'a [u8]) -> Result<Self, String> {
        let mut out = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (number, wire) = r.key().map_err(|e| e.to_string())?;
            if !(1..=4).contains(&number) {
                r.skip(wire).map_err(|e| e.to_string())?;
                continue;
            }
            if wire != WireType::Len {
                return Err(format!(
                    "field {number} has wire type {wire}, expected length-delimited"
                ));
            }
            let value = r.len_delimited().map_err(|e| e.to_string())?;
            match number {
                1 => {
                    let mut t = Reader::new(value);
                    while !t.is_empty() {
                        let (n, w) = t.key().map_err(|e| format!("typeMeta: {e}"))?;
                        if (n == 1 || n == 2) && w == WireType::Len {
                            let s = t.len_delimited().map_err(|e| format!("typeMeta: {e}"))?;
                            let s = String::from_utf8_lossy(s).into_owned();
                            if n == 1 {
                                out.api_version = s;
                            } else {
                                out.kind = s;
                            }
                        } else if n == 1 || n == 2 {
                            return Err(format!(
                                "typeMeta field {n} has wire type {w}, expected length-delimited"
                            ));
                        } else {
                            t.skip(w).map_err(|e| format!("typeMeta: {e}"))?;
                        }
                    }
                }
                2 => out.raw = value,
                3 => out.content_encoding = String::from_utf8_lossy(value).into_owned(),
                _ => {} // contentType: the raw bytes are protobuf whatever it says
            }
        }
        Ok(out)
    }
}

fn wire_type(ty: Type, label: Label) -> WireType {
    if label == Label::Map {
        return WireType::Len;
    }
    match ty {
        Type::Str | Type::Bytes | Type::Msg(_) => WireType::Len,
        Type::Bool | Type::I32 | Type::I64 => WireType::Varint,
        Type::F64 => WireType::Fixed64,
    }
}

fn is_packable(ty: Type) -> bool {
    matches!(ty, Type::Bool | Type::I32 | Type::I64 | Type::F64)
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `150ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    // `whole` units plus a fraction of `digits` decimal digits, trailing zeros trimmed.
    let with_fraction = |whole: u64, frac: u64, digits: usize, unit: &str| {
        let frac = format!("{frac:0digits$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{sign}{whole}{unit}")
        } else {
            format!("{sign}{whole}.{frac}{unit}")
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return with_fraction(u / 1_000, u % 1_000, 3, "µs");
    }
    if u < 1_000_000_000 {
        return with_fraction(u / 1_000_000, u % 1_000_000, 6, "ms");
    }
    let secs = u / 1_000_000_000;
    let seconds = with_fraction(secs % 60, u % 1_000_000_000, 9, "s");
    let seconds = seconds.trim_start_matches('-');
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{seconds}")
    } else if m > 0 {
        format!("{sign}{m}m{seconds}")
    } else {
        format!("{sign}{seconds}")
    }
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(150_000_000), "150ms");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(12), "12ns");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
        assert_eq!(go_duration(-3_661_000_000_000), "-1h1m1s");
    }
}
