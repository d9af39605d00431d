//! The stored form of the records the daemon keeps for a chat: a versioned postcard envelope.
//!
//! ```text
//! record = varint(u16 version) || postcard(value)
//! ```
//!
//! postcard is a stable, documented format (integers as varints, enums as the varint index of
//! the variant, `Option` as a 0/1 tag, byte strings and sequences with a varint length). The
//! record types are append-only: new enum variants go at the end, and any change that old bytes
//! would misread bumps that type's [`Record::VERSION`], so an old binary refuses new records (and
//! a new one can migrate old ones) instead of misreading them. `tests/records.rs` pins the
//! bytes of every record type, so an accidental change of layout fails a test.
//!
//! TL values inside records (an event's message) are stored as their boxed TL bytes, whose
//! meaning the schema fixes.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::chat::{AuthState, ConfigState, Event, OutboxEntry, PfsState, QueuedMessage, SeqState};

/// A type stored as a record.
pub trait Record: Serialize + DeserializeOwned {
    /// What it is, for error messages.
    const KIND: &'static str;
    /// Its layout version.
    const VERSION: u16;
}

/// Declares record types with their kind and version (used here and by the daemon for its own
/// records): `records! { Type => "what it is", 1; ... }`.
#[macro_export]
macro_rules! records {
    ($($t:ty => $kind:literal, $version:literal;)*) => {
        $(impl $crate::record::Record for $t {
            const KIND: &'static str = $kind;
            const VERSION: u16 = $version;
        })*
    };
}

records! {
    AuthState => "chat auth state", 1;
    ConfigState => "chat config state", 1;
    PfsState => "chat key state", 1;
    SeqState => "chat seq state", 1;
    OutboxEntry => "outbox entry", 1;
    QueuedMessage => "gap-queue entry", 1;
    Event => "chat event", 1;
}

/// Why a stored record cannot be read (or, never in practice, written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Written by another layout version.
    Version {
        /// The record type.
        kind: &'static str,
        /// The version found.
        found: u16,
        /// The version this build reads.
        expected: u16,
    },
    /// Not a valid record of that type (truncated, trailing bytes, bad value).
    Corrupt {
        /// The record type.
        kind: &'static str,
        /// What postcard said.
        why: String,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Version {
                kind,
                found,
                expected,
            } => write!(
                f,
                "stored {kind} has layout version {found}, this build reads {expected}"
            ),
            RecordError::Corrupt { kind, why } => write!(f, "stored {kind} is corrupt: {why}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// The first allocation for an encoded record: enough for a request record or an outbox
/// entry of a service message.
const ENCODE_CAPACITY: usize = 256;

/// The stored bytes of a record.
pub fn encode<T: Record>(value: &T) -> Result<Vec<u8>, RecordError> {
    let corrupt = |e: postcard::Error| RecordError::Corrupt {
        kind: T::KIND,
        why: e.to_string(),
    };
    // One buffer, sized for the common records (a growing Vec reallocates four or five
    // times for a 200-byte record; this runs for every record of every batch).
    let out = Vec::with_capacity(ENCODE_CAPACITY);
    let out = postcard::to_extend(&T::VERSION, out).map_err(corrupt)?;
    postcard::to_extend(value, out).map_err(corrupt)
}

/// Reads a record written by [`encode`]: the version must match and the bytes must be exactly
/// one value.
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, RecordError> {
    let corrupt = |why: String| RecordError::Corrupt { kind: T::KIND, why };
    let (version, rest) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|e| corrupt(e.to_string()))?;
    if version != T::VERSION {
        return Err(RecordError::Version {
            kind: T::KIND,
            found: version,
            expected: T::VERSION,
        });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(rest).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}
