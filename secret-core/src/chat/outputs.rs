//! What a chat answers: [`Output`] (what to store, send and tell), and the values inside it.
//!
//! Every type here is serde, with a stable encoding: enums are encoded by variant index, so
//! variants and fields are only ever appended (a change of meaning bumps the record version in
//! [`crate::record`]); TL values inside events are encoded as their boxed TL bytes (stable by the
//! schema) in binary formats and as MadelineProto-style JSON in human-readable ones.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::state::{OutboxEntry, QueuedMessage, SendMethod, Status};
use crate::crypto::KeyFingerprint;
use crate::tl::enums::{DecryptedMessage, DecryptedMessageAction};

/// Which of a chat's records ([`super::ChatState`]) an output changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// [`super::AuthState`] (ids, stage, DH parameters).
    pub auth: bool,
    /// [`super::ConfigState`] (layers, TTL).
    pub config: bool,
    /// [`super::PfsState`] (keys, re-key exchange).
    pub pfs: bool,
    /// [`super::SeqState`] (seq counters, Resend request).
    pub seq: bool,
}

impl Changed {
    /// True if any record changed.
    pub fn any(&self) -> bool {
        self.auth || self.config || self.pfs || self.seq
    }

    /// Every record (for a chat that was just created).
    pub fn all() -> Changed {
        Changed {
            auth: true,
            config: true,
            pfs: true,
            seq: true,
        }
    }

    pub(super) fn include(&mut self, other: Changed) {
        self.auth |= other.auth;
        self.config |= other.config;
        self.pfs |= other.pfs;
        self.seq |= other.seq;
    }
}

/// Something for the daemon to send to Telegram, in order, after the output is persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `messages.acceptEncryption(peer, g_b, key_fingerprint)`.
    AcceptEncryption {
        /// Our public value.
        g_b: Vec<u8>,
        /// Fingerprint of the agreed key.
        key_fingerprint: i64,
    },
    /// `messages.discardEncryption(delete_history, chat_id)`.
    DiscardEncryption {
        /// Whether to ask for history deletion.
        delete_history: bool,
    },
    /// `messages.sendEncrypted` / `messages.sendEncryptedService`.
    Send(Transmit),
}

/// One encrypted message to send.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transmit {
    /// The method.
    pub method: SendMethod,
    /// The outer random_id (equal to the inner one).
    pub random_id: i64,
    /// The `data` argument.
    pub data: Vec<u8>,
    /// The out_seq_no the message carries.
    pub out_seq_no: i32,
    /// True if this is an outbox entry (report the server's answer with
    /// [`super::Chat::on_sent`] / [`super::Chat::on_send_failed`]); false for a Noop that fills
    /// a slot the peer asked for and we no longer hold.
    pub in_outbox: bool,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("method", &self.method)
            .field("random_id", &self.random_id)
            .field("out_seq_no", &self.out_seq_no)
            .field("data_len", &self.data.len())
            .field("in_outbox", &self.in_outbox)
            .finish()
    }
}

/// What the application is told (after the output is persisted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // transient values, handed over once
pub enum Event {
    /// The chat's status changed.
    StatusChanged(Status),
    /// The chat became ready.
    Ready {
        /// Fingerprint of the key.
        key_fingerprint: KeyFingerprint,
        /// The key visualization (SHA1(initial)[..16] || SHA256(key)[..20]).
        #[serde(with = "crate::crypto::fixed_bytes")]
        visualization: [u8; 36],
    },
    /// An ordinary (content) message from the peer, in order.
    Message {
        /// Its random_id.
        random_id: i64,
        /// Server date.
        date: i32,
        /// The message.
        #[serde(with = "crate::tl::serde_tl")]
        message: DecryptedMessage,
    },
    /// A service action from the peer that the application reacts to (TTL, read, delete,
    /// screenshot, flush, typing), in order.
    Action {
        /// random_id of the service message.
        random_id: i64,
        /// Server date.
        date: i32,
        /// The action.
        #[serde(with = "crate::tl::serde_tl")]
        action: DecryptedMessageAction,
    },
    /// An in-order peer message whose content this layer does not know: a well-formed
    /// `decryptedMessageLayer` whose message (or an object nested in it) has a constructor id
    /// that is in no layer of our schema. The slot is consumed; nothing else happens.
    Unsupported {
        /// Outer random_id.
        random_id: i64,
        /// Layer the peer wrote.
        layer: i32,
        /// The unknown constructor id (never one of [`crate::tl::ALL_CONSTRUCTORS`]).
        constructor: u32,
    },
    /// The peer's layer went up.
    PeerLayer(i32),
    /// The chat-wide TTL changed (by either side).
    TtlChanged(i32),
    /// Our outgoing messages with these random_ids were processed by the peer.
    Acknowledged(Vec<i64>),
    /// The server accepted an outgoing message.
    Sent {
        /// random_id.
        random_id: i64,
        /// Server date.
        date: i32,
    },
    /// A re-key finished; the new key is in use for sending.
    KeyChanged(KeyFingerprint),
    /// A re-key was abandoned (aborted by a side, or values failed validation).
    RekeyAborted {
        /// The exchange.
        exchange_id: i64,
    },
}

/// The answer to every input.
///
/// Apply it in this order: (1) persist, in one durable batch: the records named in `changed`
/// (read them from [`super::Chat::state`]), the `outbox_*` and `gap_*` entries (puts and removes
/// never name the same key: [`Output::merge`] keeps them disjoint), and the events if the
/// application's inbox is stored; (2) only then perform the `calls`, in order; (3) deliver the
/// `events`.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use = "an Output must be persisted and its calls performed"]
pub struct Output {
    /// Which records of [`super::Chat::state`] changed and must be written.
    pub changed: Changed,
    /// Outbox entries to write (new, or updated), by `out_raw`.
    pub outbox_put: Vec<OutboxEntry>,
    /// Outbox entries to delete, by `out_raw`.
    pub outbox_remove: Vec<u32>,
    /// Gap-queue entries to write, by `out_raw`.
    pub gap_put: Vec<QueuedMessage>,
    /// Gap-queue entries to delete, by `out_raw`.
    pub gap_remove: Vec<u32>,
    /// What to send, in order, once persisted.
    pub calls: Vec<Call>,
    /// What to tell the application, once persisted.
    pub events: Vec<Event>,
}

impl Output {
    /// True if nothing needs doing.
    pub fn is_empty(&self) -> bool {
        !self.changed.any()
            && self.outbox_put.is_empty()
            && self.outbox_remove.is_empty()
            && self.gap_put.is_empty()
            && self.gap_remove.is_empty()
            && self.calls.is_empty()
            && self.events.is_empty()
    }

    /// The transmits among the calls.
    pub fn transmits(&self) -> impl Iterator<Item = &Transmit> {
        self.calls.iter().filter_map(|c| match c {
            Call::Send(t) => Some(t),
            _ => None,
        })
    }

    /// Appends `later` (what happened after `self`): calls and events are concatenated; for the
    /// keyed entries the later operation on a key wins, so puts and removes stay disjoint and
    /// each key appears at most once.
    pub fn merge(&mut self, later: Output) {
        self.changed.include(later.changed);
        merge_keyed(
            &mut self.outbox_put,
            &mut self.outbox_remove,
            later.outbox_put,
            later.outbox_remove,
            |e| e.out_raw,
        );
        merge_keyed(
            &mut self.gap_put,
            &mut self.gap_remove,
            later.gap_put,
            later.gap_remove,
            |q| q.out_raw,
        );
        self.calls.extend(later.calls);
        self.events.extend(later.events);
    }
}

fn merge_keyed<T>(
    puts: &mut Vec<T>,
    removes: &mut Vec<u32>,
    later_puts: Vec<T>,
    later_removes: Vec<u32>,
    key: impl Fn(&T) -> u32,
) {
    for k in later_removes {
        puts.retain(|p| key(p) != k);
        if !removes.contains(&k) {
            removes.push(k);
        }
    }
    for p in later_puts {
        let k = key(&p);
        removes.retain(|&r| r != k);
        puts.retain(|q| key(q) != k);
        puts.push(p);
    }
}

/// An encrypted message from the server (`encryptedMessage` / `encryptedMessageService`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingEncrypted {
    /// The outer random_id.
    pub random_id: i64,
    /// Server date.
    pub date: i32,
    /// The encrypted bytes.
    pub data: Vec<u8>,
}

/// The server's view of a chat (from `updateEncryption` or a method result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteChat {
    /// `encryptedChatWaiting`: our request reached the server.
    Waiting {
        /// The chat's access_hash.
        access_hash: i64,
    },
    /// `encryptedChat`: the peer accepted (for the creator, `g_a_or_b` is g_b).
    Accepted {
        /// The chat's access_hash.
        access_hash: i64,
        /// g_b (creator) or g_a (acceptor, ignored).
        g_a_or_b: Vec<u8>,
        /// The fingerprint the peer computed.
        key_fingerprint: i64,
    },
    /// `encryptedChatDiscarded`.
    Discarded {
        /// Whether the peer asked to delete history.
        history_deleted: bool,
    },
}

/// An incoming chat request (`encryptedChatRequested`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The chat id.
    pub chat_id: i32,
    /// The access_hash.
    pub access_hash: i64,
    /// The creator (`admin_id`).
    pub admin_id: i64,
    /// Us (`participant_id`).
    pub participant_id: i64,
    /// The creator's g_a.
    pub g_a: Vec<u8>,
}

/// What [`super::Chat::request`] asks the daemon to call: `messages.requestEncryption`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEncryption {
    /// The peer.
    pub user_id: i64,
    /// The int32 random_id, which becomes the chat id.
    pub random_id: i32,
    /// Our g_a.
    pub g_a: Vec<u8>,
}

/// How a send failed at the server, as the daemon classifies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendFailure {
    /// Worth retrying with the same bytes later (FLOOD_WAIT, MSG_WAIT_FAILED, 5xx, network).
    Retry,
    /// Final: the chat cannot deliver this message (digest §9: fatal for service messages).
    Fatal {
        /// The Telegram error name, e.g. `ENCRYPTION_DECLINED`.
        error: String,
    },
}

/// The result of a successful send: the numbers the message carries, and what to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// The random_id.
    pub random_id: i64,
    /// Its out_seq_no.
    pub out_seq_no: i32,
    /// Its in_seq_no.
    pub in_seq_no: i32,
    /// The layer written in it.
    pub layer: i32,
    /// What to persist and send.
    pub output: Output,
}

/// Explicit randomness for one message, for interoperability tests that compare `data` byte for
/// byte with another implementation (production code draws both from its `SecureRandom`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageEntropy {
    /// The `random_bytes` of `decryptedMessageLayer` (at least [`super::MIN_RANDOM_BYTES`]).
    pub random_bytes: Vec<u8>,
    /// The padding after the payload: 12 to 1024 bytes making the plaintext a multiple of 16.
    pub padding: Vec<u8>,
}
