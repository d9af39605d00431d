//! JSON for TL values, in the MadelineProto style.
//!
//! Every struct and enum of [`super::types`] / [`super::enums`] implements [`TlJson`]. A
//! constructor is a JSON object whose `"_"` key is the constructor name exactly as in the schema
//! (TDLib's names, e.g. `"decryptedMessageService8"`), plus one key per field:
//!
//! ```json
//! {"_": "decryptedMessageService", "random_id": 7,
//!  "action": {"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 30}}
//! ```
//!
//! Field mapping (output / accepted input):
//!
//! * `int`: a JSON integer; input outside the `i32` range is [`JsonError::OutOfRange`].
//! * `long`: a JSON integer (serde_json keeps all 64 bits exact). Input: a JSON integer or a
//!   decimal string such as `"-5"` (for JavaScript callers); outside `i64` is `OutOfRange`.
//! * `double`: a JSON number, written in the shortest form that reads back to the same value
//!   and read with exact rounding (serde_json's `float_roundtrip`), so every finite double
//!   survives JSON *text* bit for bit (`-0.0` included). JSON has no NaN/infinities, so those are
//!   written as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, which are also accepted on
//!   input (a NaN's payload bits are not kept).
//! * `string`: a JSON string.
//! * `bytes`: standard base64 with padding. Input: standard or URL-safe base64 (padding
//!   optional); hex when the string is `0x` followed by an even number of hex digits; or the
//!   MadelineProto object `{"_": "bytes", "bytes": "<base64>"}`. Because a base64 string can
//!   itself look like such hex (it starts with `0x` about once in 4096 random values), output
//!   uses the object form exactly when the plain base64 string would be read back as hex, so
//!   every output reads back to the same bytes.
//! * `Vector<T>`: a JSON array.
//! * boxed types: a nested object with its own `"_"`.
//! * `flags.N?T`: omitted when `None`; on input, missing or `null` is `None`.
//! * `flags.N?true`: `true` when set, omitted otherwise; on input, missing, `null` or `false` is
//!   unset.
//! * the `flags:#` field itself is never written and is ignored on input (it is recomputed).
//!
//! Input is strict otherwise: an unknown key is [`JsonError::UnknownField`], a missing required
//! field [`JsonError::MissingField`], a `"_"` that is not a constructor of the expected type
//! [`JsonError::UnknownConstructor`]. Errors carry the JSON path of the offending value.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde_json::{Map, Value};

use super::{Reader, TlError};

/// Conversion between a TL value and its JSON form (see the [module docs](self)).
pub trait TlJson: Sized {
    /// The JSON form of the value.
    fn to_json(&self) -> Value;
    /// Reads the JSON form.
    fn from_json(v: &Value) -> Result<Self, JsonError>;
}

/// Why a JSON value could not be converted to TL.
///
/// Each variant has the `path` of the offending value, relative to the root: `""` is the root
/// itself, `".message.entities[1].offset"` a nested value. [`fmt::Display`] prints it as `$...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// The value has the wrong JSON type.
    WrongType {
        /// Where.
        path: String,
        /// What was expected, e.g. `"integer"`.
        expected: &'static str,
    },
    /// A number (or decimal string) does not fit the TL type.
    OutOfRange {
        /// Where.
        path: String,
        /// The TL type, e.g. `"int"`.
        expected: &'static str,
    },
    /// A required key is missing from the object at `path`.
    MissingField {
        /// The object.
        path: String,
        /// The missing key.
        field: &'static str,
    },
    /// The object at `path` has a key the constructor does not define.
    UnknownField {
        /// The object.
        path: String,
        /// The unknown key.
        field: String,
    },
    /// `"_"` names no constructor of the expected type (or of the expected constructor).
    UnknownConstructor {
        /// The object.
        path: String,
        /// The `"_"` that was found.
        name: String,
        /// The expected TL type, constructor, or `"any constructor"`.
        expected: &'static str,
    },
    /// A `bytes` value is neither valid base64 nor `0x` hex nor the `{"_": "bytes"}` object.
    InvalidBytes {
        /// Where.
        path: String,
    },
}

impl JsonError {
    /// The path of the offending value (`""` is the root).
    pub fn path(&self) -> &str {
        match self {
            JsonError::WrongType { path, .. }
            | JsonError::OutOfRange { path, .. }
            | JsonError::MissingField { path, .. }
            | JsonError::UnknownField { path, .. }
            | JsonError::UnknownConstructor { path, .. }
            | JsonError::InvalidBytes { path } => path,
        }
    }

    fn path_mut(&mut self) -> &mut String {
        match self {
            JsonError::WrongType { path, .. }
            | JsonError::OutOfRange { path, .. }
            | JsonError::MissingField { path, .. }
            | JsonError::UnknownField { path, .. }
            | JsonError::UnknownConstructor { path, .. }
            | JsonError::InvalidBytes { path } => path,
        }
    }

    /// Prefixes the path with `.key`.
    fn in_field(mut self, key: &str) -> Self {
        let path = self.path_mut();
        path.insert_str(0, key);
        path.insert(0, '.');
        self
    }

    /// Prefixes the path with `[index]`.
    fn in_element(mut self, index: usize) -> Self {
        self.path_mut().insert_str(0, &format!("[{index}]"));
        self
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::WrongType { expected, .. } => write!(f, "expected {expected}")?,
            JsonError::OutOfRange { expected, .. } => {
                write!(f, "number out of range for {expected}")?
            }
            JsonError::MissingField { field, .. } => write!(f, "missing field {field:?}")?,
            JsonError::UnknownField { field, .. } => write!(f, "unknown field {field:?}")?,
            JsonError::UnknownConstructor { name, expected, .. } => {
                write!(f, "constructor {name:?} is not {expected}")?
            }
            JsonError::InvalidBytes { .. } => write!(
                f,
                "invalid bytes (expected base64, 0x hex or {{\"_\":\"bytes\"}})"
            )?,
        }
        write!(f, " at ${}", self.path())
    }
}

impl std::error::Error for JsonError {}

/// Converts the JSON form of any constructor (chosen by its `"_"`) to its boxed TL encoding.
pub fn json_to_boxed(v: &Value) -> Result<Vec<u8>, JsonError> {
    super::gen_json_to_boxed(v)
}

/// Converts the boxed TL encoding of any constructor (chosen by its id) to JSON. The input must
/// be consumed exactly.
pub fn boxed_to_json(bytes: &[u8]) -> Result<Value, TlError> {
    let mut r = Reader::new(bytes);
    let v = super::gen_boxed_to_json(&mut r)?;
    r.finish()?;
    Ok(v)
}

// ---- helpers used by the generated code -------------------------------------------------------

const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn wrong(expected: &'static str) -> JsonError {
    JsonError::WrongType {
        path: String::new(),
        expected,
    }
}

fn out_of_range(expected: &'static str) -> JsonError {
    JsonError::OutOfRange {
        path: String::new(),
        expected,
    }
}

/// The `"_"` of an object.
pub(crate) fn constructor_of(v: &Value) -> Result<&str, JsonError> {
    let m = v.as_object().ok_or_else(|| wrong("object"))?;
    match m.get("_") {
        None => Err(JsonError::MissingField {
            path: String::new(),
            field: "_",
        }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong("string").in_field("_")),
    }
}

/// Checks that `v` is the object of constructor `name` with only known keys.
pub(crate) fn check_struct<'v>(
    v: &'v Value,
    name: &'static str,
    fields: &[&str],
) -> Result<&'v Map<String, Value>, JsonError> {
    let found = constructor_of(v)?;
    if found != name {
        return Err(JsonError::UnknownConstructor {
            path: String::new(),
            name: found.to_owned(),
            expected: name,
        });
    }
    let m = v.as_object().ok_or_else(|| wrong("object"))?;
    for key in m.keys() {
        if key != "_" && key != "flags" && !fields.contains(&key.as_str()) {
            return Err(JsonError::UnknownField {
                path: String::new(),
                field: key.clone(),
            });
        }
    }
    Ok(m)
}

/// A required field.
pub(crate) fn req<T>(
    m: &Map<String, Value>,
    key: &'static str,
    f: impl FnOnce(&Value) -> Result<T, JsonError>,
) -> Result<T, JsonError> {
    match m.get(key) {
        None => Err(JsonError::MissingField {
            path: String::new(),
            field: key,
        }),
        Some(v) => f(v).map_err(|e| e.in_field(key)),
    }
}

/// A `flags.N?T` field: missing or `null` is `None`.
pub(crate) fn opt<T>(
    m: &Map<String, Value>,
    key: &'static str,
    f: impl FnOnce(&Value) -> Result<T, JsonError>,
) -> Result<Option<T>, JsonError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => f(v).map(Some).map_err(|e| e.in_field(key)),
    }
}

/// A `flags.N?true` field: missing, `null` or `false` is unset.
pub(crate) fn flag(m: &Map<String, Value>, key: &'static str) -> Result<bool, JsonError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(wrong("boolean").in_field(key)),
    }
}

pub(crate) fn int_from_json(v: &Value) -> Result<i32, JsonError> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i32::try_from(i).map_err(|_| out_of_range("int"))
            } else if n.is_u64() {
                Err(out_of_range("int"))
            } else {
                Err(wrong("integer"))
            }
        }
        _ => Err(wrong("integer")),
    }
}

pub(crate) fn long_from_json(v: &Value) -> Result<i64, JsonError> {
    use std::num::IntErrorKind;
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(i),
            None if n.is_u64() => Err(out_of_range("long")),
            None => Err(wrong("integer or decimal string")),
        },
        Value::String(s) => s.parse::<i64>().map_err(|e| match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => out_of_range("long"),
            _ => wrong("integer or decimal string"),
        }),
        _ => Err(wrong("integer or decimal string")),
    }
}

pub(crate) fn long_to_json(v: i64) -> Value {
    Value::from(v)
}

pub(crate) fn double_from_json(v: &Value) -> Result<f64, JsonError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| wrong("number")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(wrong("number")),
        },
        _ => Err(wrong("number")),
    }
}

pub(crate) fn double_to_json(v: f64) -> Value {
    if v.is_nan() {
        Value::from("NaN")
    } else if v.is_infinite() {
        Value::from(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        Value::from(v)
    }
}

pub(crate) fn string_from_json(v: &Value) -> Result<String, JsonError> {
    let s = v.as_str().ok_or_else(|| wrong("string"))?;
    if s.len() > super::MAX_BYTES_LEN {
        return Err(wrong("string of at most 16 MiB - 1 bytes (the TL limit)"));
    }
    Ok(s.to_owned())
}

/// `Some(hex digits)` when `s` is `0x` followed by an even number of hex digits.
fn hex_digits(s: &str) -> Option<&str> {
    s.strip_prefix("0x")
        .filter(|h| h.len() % 2 == 0 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD_LENIENT
        .decode(s)
        .or_else(|_| URL_SAFE_LENIENT.decode(s))
        .ok()
}

pub(crate) fn bytes_from_json(v: &Value) -> Result<Vec<u8>, JsonError> {
    let b = bytes_from_json_unbounded(v)?;
    if b.len() > super::MAX_BYTES_LEN {
        // TL cannot encode it; refusing here keeps every JSON-built value serializable.
        return Err(JsonError::InvalidBytes {
            path: String::new(),
        });
    }
    Ok(b)
}

fn bytes_from_json_unbounded(v: &Value) -> Result<Vec<u8>, JsonError> {
    let invalid = || JsonError::InvalidBytes {
        path: String::new(),
    };
    match v {
        Value::String(s) => match hex_digits(s) {
            Some(h) => hex::decode(h).map_err(|_| invalid()),
            None => base64_decode(s).ok_or_else(invalid),
        },
        Value::Object(m) => {
            if m.get("_").and_then(Value::as_str) != Some("bytes") {
                return Err(invalid());
            }
            if let Some(key) = m.keys().find(|k| *k != "_" && *k != "bytes") {
                return Err(JsonError::UnknownField {
                    path: String::new(),
                    field: key.clone(),
                });
            }
            req(m, "bytes", |b| {
                b.as_str().and_then(base64_decode).ok_or_else(invalid)
            })
        }
        _ => Err(wrong("base64 string")),
    }
}

pub(crate) fn bytes_to_json(v: &[u8]) -> Value {
    let s = general_purpose::STANDARD.encode(v);
    if hex_digits(&s).is_some() {
        let mut m = Map::new();
        m.insert("_".to_owned(), Value::from("bytes"));
        m.insert("bytes".to_owned(), Value::String(s));
        Value::Object(m)
    } else {
        Value::String(s)
    }
}

pub(crate) fn vec_from_json<T>(
    v: &Value,
    f: impl Fn(&Value) -> Result<T, JsonError>,
) -> Result<Vec<T>, JsonError> {
    let items = v.as_array().ok_or_else(|| wrong("array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| f(item).map_err(|e| e.in_element(i)))
        .collect()
}
