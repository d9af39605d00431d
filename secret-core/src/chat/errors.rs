//! Why an input was refused. A refused input never changes the chat (its stored records stay
//! byte-identical). Every error is serde, so the daemon can store and report it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::MAX_MESSAGE_BYTES;
use super::MIN_RANDOM_BYTES;
use crate::crypto::KeyFingerprint;
use crate::dh;

/// Why a send was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendError {
    /// The chat is not in a state that allows this (e.g. not ready, or discarded).
    WrongState {
        /// The status at the time.
        status: String,
        /// What was attempted.
        what: String,
    },
    /// The action is sent by the protocol itself and cannot be requested.
    NotAllowed {
        /// The TL name of the action or message.
        name: String,
        /// Why.
        why: String,
    },
    /// random_id 0 where one is required, or one still in use by a message of this chat.
    BadRandomId(i64),
    /// The serialized message is larger than [`MAX_MESSAGE_BYTES`] (checked before anything is
    /// serialized, so no size can make the TL writer fail).
    TooLarge {
        /// Its size in bytes (saturated).
        size: usize,
    },
    /// A field has a value the protocol does not allow.
    InvalidField {
        /// Field name.
        field: String,
        /// Why.
        why: String,
    },
    /// The chat used up its seq numbers (2^30 messages).
    SeqExhausted,
    /// No re-key can start (or be aborted) now.
    RekeyBusy(String),
}

impl SendError {
    pub(super) fn wrong_state(status: &str, what: &str) -> SendError {
        SendError::WrongState {
            status: status.into(),
            what: what.into(),
        }
    }

    pub(super) fn invalid(field: &str, why: impl Into<String>) -> SendError {
        SendError::InvalidField {
            field: field.into(),
            why: why.into(),
        }
    }

    pub(super) fn not_allowed(name: &str, why: &str) -> SendError {
        SendError::NotAllowed {
            name: name.into(),
            why: why.into(),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::WrongState { status, what } => {
                write!(f, "cannot {what}: the chat is {status}")
            }
            SendError::NotAllowed { name, why } => write!(f, "{name} cannot be sent: {why}"),
            SendError::BadRandomId(id) => {
                write!(f, "random_id {id} is zero or still in use in this chat")
            }
            SendError::TooLarge { size } => {
                write!(f, "message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
            }
            SendError::InvalidField { field, why } => write!(f, "invalid {field}: {why}"),
            SendError::SeqExhausted => write!(f, "the chat has used all its sequence numbers"),
            SendError::RekeyBusy(why) => write!(f, "cannot start a re-key: {why}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why an incoming message was dropped without any change of state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiveError {
    /// The chat is closed.
    ChatClosed,
    /// The chat is not ready for messages (and cannot hold them).
    NotReady(String),
    /// No key of this chat has that fingerprint.
    UnknownKey(KeyFingerprint),
    /// Not an authentic message under the key (every failure up to the msg_key check).
    Undecryptable,
    /// Authentic, but fewer than 15 random bytes (the docs say: ignore).
    TooFewRandomBytes(usize),
    /// Authentic, but an `in_seq_no` of -1 (a legacy, unsequenced message): tolerated, not used.
    Unsequenced,
    /// Already processed (or already waiting in the gap queue).
    Duplicate {
        /// Its out_seq_no.
        out_seq_no: i32,
    },
    /// Ahead of a gap, but the gap queue is full; it will be asked for again.
    QueueFull,
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::ChatClosed => write!(f, "the chat is closed"),
            ReceiveError::NotReady(s) => write!(f, "the chat is {s}, not ready for messages"),
            ReceiveError::UnknownKey(fp) => write!(f, "no key with fingerprint {fp:?}"),
            ReceiveError::Undecryptable => write!(f, "message cannot be decrypted"),
            ReceiveError::TooFewRandomBytes(n) => {
                write!(
                    f,
                    "message has {n} random bytes, fewer than {MIN_RANDOM_BYTES}"
                )
            }
            ReceiveError::Unsequenced => write!(f, "unsequenced legacy message (in_seq_no -1)"),
            ReceiveError::Duplicate { out_seq_no } => {
                write!(f, "duplicate message (out_seq_no {out_seq_no})")
            }
            ReceiveError::QueueFull => write!(f, "gap queue full"),
        }
    }
}

impl std::error::Error for ReceiveError {}

/// Why stored records cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreError {
    /// The records contradict themselves or each other.
    Inconsistent(String),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Inconsistent(w) => write!(f, "stored chat is inconsistent: {w}"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// Errors of the chat-creation steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeError {
    /// The call does not fit the chat's status or role.
    WrongState(String),
    /// DH failure on our side (parameters, key generation).
    Dh(dh::DhError),
    /// The request is not addressed to us or names no peer.
    BadRequest(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::WrongState(w) => write!(f, "wrong state: {w}"),
            HandshakeError::Dh(e) => write!(f, "Diffie-Hellman: {e}"),
            HandshakeError::BadRequest(w) => write!(f, "bad request: {w}"),
        }
    }
}

impl std::error::Error for HandshakeError {}
