//! TL (Type Language) for the end-to-end (secret chat) schema, layer [`LAYER`].
//!
//! The types are generated at build time from `schema/secret_api.tl` (TDLib's file):
//!
//! * [`types`]: one struct per constructor, e.g. [`types::DecryptedMessageService`];
//! * [`enums`]: one enum per TL type, e.g. [`enums::DecryptedMessage`], whose variants wrap the
//!   structs;
//! * [`ALL_CONSTRUCTORS`] / [`constructor_name`]: the constructor table.
//!
//! # Wire format
//!
//! [`Serializable::serialize`] always writes the *boxed* form (little-endian `u32` constructor
//! id, then the fields); structs also have an inherent `serialize_bare` (fields only). Inside a
//! struct, fields of boxed TL types are written boxed and `Vector<T>` is written boxed
//! (`0x1cb5c415`, `i32` count, elements; primitive elements bare, others boxed). `bytes` and
//! `string` are written as one length byte (length < 254) or `0xfe` plus a 3-byte little-endian
//! length, then the data, then zero padding up to a multiple of 4. `flags:#` fields are not stored
//! in the structs: they are computed from the `Option`/`bool` fields when writing.
//!
//! # Reading: strictness and leniency
//!
//! [`Deserializable::from_bytes`] requires the input to be consumed exactly. Reading never panics
//! and never allocates according to an untrusted count: a vector count is checked against the
//! bytes that remain before anything is allocated. The schema has no recursive types, so nesting
//! depth is bounded by the schema (the build script rejects a recursive schema).
//!
//! Like TDLib, the reader accepts three non-canonical encodings without error:
//! non-zero padding bytes after a `bytes`/`string`, the 4-byte length form for a length below 254,
//! and flag bits that the schema does not define (they are ignored and lost). Each of them clears
//! [`Reader::is_canonical`]. Hence the exact property: if a value decodes and the reader is still
//! canonical, serializing the value reproduces the input byte for byte; in every case,
//! serializing gives the canonical encoding, which decodes to the same value.
//!
//! JSON (MadelineProto style) lives in [`json`].

use std::fmt;

pub mod json;

pub use json::{JsonError, TlJson, boxed_to_json, json_to_boxed};

/// The schema layer this module implements (the highest layer in `secret_api.tl`).
pub const LAYER: i32 = 144;

/// The constructor id of the built-in `vector` type.
pub const VECTOR_CONSTRUCTOR_ID: u32 = 0x1cb5_c415;

/// The largest length a TL `bytes`/`string` can have (3-byte length prefix).
pub const MAX_BYTES_LEN: usize = 0x00ff_ffff;

/// A TL constructor: its id and its name as written in the schema.
pub trait Identifiable {
    /// The 32-bit constructor id (`decryptedMessageService#73164160` -> `0x73164160`).
    const CONSTRUCTOR_ID: u32;
    /// The constructor name exactly as in the schema, e.g. `"decryptedMessageService"`.
    const NAME: &'static str;
}

/// A value that can be written in the TL binary format.
pub trait Serializable {
    /// Appends the boxed encoding (constructor id, then the fields) to `out`.
    ///
    /// # Panics
    ///
    /// If a `bytes`/`string` field is longer than [`MAX_BYTES_LEN`] or a vector has more than
    /// `i32::MAX` elements: TL cannot represent them (secret-chat payloads are far smaller).
    fn serialize(&self, out: &mut Vec<u8>);

    /// The length of the boxed encoding, computed without encoding (saturating at
    /// `usize::MAX`). A value whose length is at most [`MAX_BYTES_LEN`] has no field too long
    /// for TL, so [`Serializable::serialize`] cannot panic on it: check this first whenever the
    /// value comes from outside.
    fn serialized_len(&self) -> usize;

    /// The boxed encoding as a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.serialized_len().min(MAX_BYTES_LEN));
        self.serialize(&mut out);
        out
    }
}

/// A value that can be read from the TL binary format.
pub trait Deserializable: Sized {
    /// Reads the boxed encoding (constructor id, then the fields) from `r`.
    fn deserialize(r: &mut Reader<'_>) -> Result<Self, TlError>;

    /// Reads the boxed encoding from `bytes`, which must be consumed exactly.
    fn from_bytes(bytes: &[u8]) -> Result<Self, TlError> {
        let mut r = Reader::new(bytes);
        let value = Self::deserialize(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

/// Why TL bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlError {
    /// The input ended early: `needed` bytes were needed where only `remaining` were left.
    UnexpectedEnd {
        /// Bytes needed by the item being read.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// The constructor id is not one of the expected type: `type_name` is the TL type for an
    /// enum, the constructor name for a struct's boxed form, or `"any constructor"`.
    UnknownConstructor {
        /// The id that was read.
        id: u32,
        /// What was expected.
        type_name: &'static str,
    },
    /// The value ended before the end of the input.
    TrailingBytes {
        /// The number of bytes left over.
        count: usize,
    },
    /// A `string` is not valid UTF-8.
    InvalidUtf8,
    /// A vector count is negative or larger than the remaining input could hold.
    InvalidVectorLength {
        /// The count that was read.
        count: i32,
    },
    /// A `Vector` did not start with [`VECTOR_CONSTRUCTOR_ID`].
    BadVectorId {
        /// The id that was read instead.
        id: u32,
    },
    /// A `bytes`/`string` length prefix is `0xff`, which TL does not define.
    BadBytesLength,
}

impl fmt::Display for TlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlError::UnexpectedEnd { needed, remaining } => write!(
                f,
                "TL input ended early: {needed} bytes needed, {remaining} left"
            ),
            TlError::UnknownConstructor { id, type_name } => {
                write!(f, "unknown TL constructor {id:#010x} for {type_name}")
            }
            TlError::TrailingBytes { count } => write!(f, "{count} trailing bytes after TL value"),
            TlError::InvalidUtf8 => write!(f, "TL string is not valid UTF-8"),
            TlError::InvalidVectorLength { count } => {
                write!(f, "invalid TL vector length {count}")
            }
            TlError::BadVectorId { id } => {
                write!(f, "expected TL vector id 0x1cb5c415, found {id:#010x}")
            }
            TlError::BadBytesLength => write!(f, "invalid TL bytes length prefix 0xff"),
        }
    }
}

impl std::error::Error for TlError {}

/// A cursor over TL-encoded bytes. Reads never panic; on error the position is unchanged.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    canonical: bool,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            canonical: true,
        }
    }

    /// The number of bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The number of bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// `false` once a non-canonical encoding was accepted: non-zero padding after a
    /// `bytes`/`string`, the long length form for a length below 254, or undefined flag bits.
    pub fn is_canonical(&self) -> bool {
        self.canonical
    }

    /// Errors with [`TlError::TrailingBytes`] unless everything was consumed.
    pub fn finish(&self) -> Result<(), TlError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(TlError::TrailingBytes { count }),
        }
    }

    /// Records that a non-canonical (but accepted) encoding was read.
    fn note_noncanonical(&mut self) {
        self.canonical = false;
    }

    /// The next `n` bytes, without consuming them.
    fn peek(&self, n: usize) -> Result<&'a [u8], TlError> {
        let buf: &'a [u8] = self.buf;
        self.pos
            .checked_add(n)
            .and_then(|end| buf.get(self.pos..end))
            .ok_or(TlError::UnexpectedEnd {
                needed: n,
                remaining: self.remaining(),
            })
    }

    /// Consumes exactly `n` raw bytes.
    pub fn read_raw(&mut self, n: usize) -> Result<&'a [u8], TlError> {
        let out = self.peek(n)?;
        self.pos += n;
        Ok(out)
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], TlError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.read_raw(N)?);
        Ok(out)
    }

    /// Reads a little-endian `u32` (e.g. a constructor id).
    pub fn read_u32(&mut self) -> Result<u32, TlError> {
        self.read_array().map(u32::from_le_bytes)
    }

    /// Reads a TL `int`.
    pub fn read_i32(&mut self) -> Result<i32, TlError> {
        self.read_array().map(i32::from_le_bytes)
    }

    /// Reads a TL `long`.
    pub fn read_i64(&mut self) -> Result<i64, TlError> {
        self.read_array().map(i64::from_le_bytes)
    }

    /// Reads a TL `double` (bit-exact, NaN payloads included).
    pub fn read_f64(&mut self) -> Result<f64, TlError> {
        self.read_array().map(f64::from_le_bytes)
    }

    /// Reads a TL `bytes` (length prefix, data, padding) and returns the data.
    pub fn read_bytes(&mut self) -> Result<&'a [u8], TlError> {
        let first = self.peek(1)?[0];
        let (header, len) = match first {
            0..=253 => (1, usize::from(first)),
            254 => {
                let h = self.peek(4)?;
                let len = usize::from(h[1]) | usize::from(h[2]) << 8 | usize::from(h[3]) << 16;
                (4, len)
            }
            255 => return Err(TlError::BadBytesLength),
        };
        let padded = (header + len + 3) & !3;
        let all = self.peek(padded)?;
        let (data, padding) = all[header..].split_at(len);
        if (header == 4 && len < 254) || padding.iter().any(|&b| b != 0) {
            self.note_noncanonical();
        }
        self.pos += padded;
        Ok(data)
    }

    /// Reads a TL `string`: like [`Reader::read_bytes`], and the data must be UTF-8.
    pub fn read_string(&mut self) -> Result<String, TlError> {
        let start = self.pos;
        let data = self.read_bytes()?;
        match std::str::from_utf8(data) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                self.pos = start;
                Err(TlError::InvalidUtf8)
            }
        }
    }

    /// Reads a boxed `Vector` header (id and count) and checks that the remaining input can
    /// hold `count` elements of at least `min_element_size` bytes each.
    pub fn read_vector_len(&mut self, min_element_size: usize) -> Result<usize, TlError> {
        let head = self.peek(8)?;
        let id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if id != VECTOR_CONSTRUCTOR_ID {
            return Err(TlError::BadVectorId { id });
        }
        let count = i32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let n = usize::try_from(count).map_err(|_| TlError::InvalidVectorLength { count })?;
        let room = (self.remaining() - 8) / min_element_size.max(1);
        if n > room {
            return Err(TlError::InvalidVectorLength { count });
        }
        self.pos += 8;
        Ok(n)
    }
}

fn write_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn write_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// The encoded length of a `bytes`/`string` of `len` bytes (length prefix and padding).
fn bytes_len(len: usize) -> usize {
    let header: usize = if len < 254 { 1 } else { 4 };
    header.saturating_add(len).saturating_add(3) & !3
}

// The two writers below panic on values TL cannot represent. No input reaches them: parsing and
// JSON bound every field, and values built by hand are measured with `serialized_len` first
// (`Chat::send_message` refuses anything over 64 KiB before serializing).
fn write_bytes(out: &mut Vec<u8>, data: &[u8]) {
    let len = data.len();
    assert!(
        len <= MAX_BYTES_LEN,
        "TL bytes/string of {len} bytes exceeds the TL limit of {MAX_BYTES_LEN}"
    );
    let header = if len < 254 {
        out.push(len as u8);
        1
    } else {
        out.push(254);
        out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        4
    };
    out.extend_from_slice(data);
    let pad = (4 - (header + len) % 4) % 4;
    out.extend_from_slice(&[0u8; 3][..pad]);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    write_bytes(out, s.as_bytes());
}

fn write_vector_len(out: &mut Vec<u8>, len: usize) {
    #[allow(clippy::panic)] // see above: unreachable from input
    let count = i32::try_from(len).unwrap_or_else(|_| panic!("TL vector of {len} elements"));
    write_u32(out, VECTOR_CONSTRUCTOR_ID);
    write_i32(out, count);
}

/// serde for TL values (`#[serde(with = "crate::tl::serde_tl")]`), used by the records and
/// events that carry a TL message.
///
/// Binary formats (postcard, the stored records) get the boxed TL bytes, whose meaning is fixed
/// by the schema and therefore stable across versions of this crate; human-readable formats
/// (JSON) get the MadelineProto-style JSON of [`json`].
pub mod serde_tl {
    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Deserializable, Serializable, TlJson};

    /// Writes `v` as TL bytes (binary formats) or JSON (human-readable formats).
    pub fn serialize<T: Serializable + TlJson, S: Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.to_json().serialize(s)
        } else {
            s.serialize_bytes(&v.to_bytes())
        }
    }

    /// Reads what [`serialize`] wrote; bytes must be exactly one value.
    pub fn deserialize<'de, T: Deserializable + TlJson, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        if d.is_human_readable() {
            let v = serde_json::Value::deserialize(d)?;
            T::from_json(&v).map_err(D::Error::custom)
        } else {
            let b = d.deserialize_bytes(ByteBuf)?;
            T::from_bytes(&b).map_err(D::Error::custom)
        }
    }

    struct ByteBuf;

    impl<'de> Visitor<'de> for ByteBuf {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("TL bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                if out.len() >= super::MAX_BYTES_LEN {
                    return Err(A::Error::custom("TL value too long"));
                }
                out.push(b);
            }
            Ok(out)
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/secret_api.rs"));

impl enums::DecryptedMessage {
    /// The message's `random_id` (every layer's constructor has one).
    pub fn random_id(&self) -> i64 {
        match self {
            enums::DecryptedMessage::DecryptedMessage8(x) => x.random_id,
            enums::DecryptedMessage::Service8(x) => x.random_id,
            enums::DecryptedMessage::DecryptedMessage23(x) => x.random_id,
            enums::DecryptedMessage::Service(x) => x.random_id,
            enums::DecryptedMessage::DecryptedMessage46(x) => x.random_id,
            enums::DecryptedMessage::DecryptedMessage(x) => x.random_id,
        }
    }
}
