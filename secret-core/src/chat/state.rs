//! The persisted form of a chat: [`ChatState`] (one record) plus one [`OutboxEntry`] per
//! unacknowledged outgoing message.
//!
//! Every field that the protocol needs after a restart lives here; a [`super::Chat`] restored from
//! any `(ChatState, outbox)` pair that it once reported continues exactly where it left off.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::Role;
use crate::crypto::{AuthKey, KeyFingerprint};
use crate::dh::{DhConfig, DhSecret};

/// Version of the stored record layout. Bump on any incompatible change.
pub const STATE_VERSION: u32 = 1;

/// Where the chat is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The peer asked us for a chat (`encryptedChatRequested`); we have not accepted yet.
    Requested,
    /// We asked the peer for a chat and wait for their acceptance.
    Waiting,
    /// Keys are agreed; messages flow.
    Ready,
    /// Closed for good.
    Discarded(DiscardReason),
}

impl Status {
    /// A short lower-case name (`requested`, `waiting`, `ready`, `discarded`).
    pub fn name(&self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Waiting => "waiting",
            Status::Ready => "ready",
            Status::Discarded(_) => "discarded",
        }
    }
}

/// Why a chat was closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiscardReason {
    /// The local user closed it.
    Local {
        /// Whether history deletion was requested.
        delete_history: bool,
    },
    /// The peer (or the server on its behalf) closed it.
    Remote {
        /// Whether the peer asked to delete the history.
        history_deleted: bool,
    },
    /// The server refused a send with a fatal error (e.g. `ENCRYPTION_DECLINED`, `USER_IS_BLOCKED`).
    ServerRefused {
        /// The Telegram error name.
        error: String,
    },
    /// The peer broke the protocol; the chat cannot continue safely.
    Protocol(ProtocolViolation),
}

/// A peer behaviour that makes the chat unusable (digest §4.2, §4.3, §5, §6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProtocolViolation {
    /// `in_seq_no` / `out_seq_no` has the wrong parity (or is negative).
    BadSeqParity {
        /// The received in_seq_no.
        in_seq_no: i32,
        /// The received out_seq_no.
        out_seq_no: i32,
    },
    /// The peer's in_seq_no went backwards.
    InSeqNoDecreased {
        /// Raw value last seen.
        previous: u32,
        /// Raw value received.
        received: u32,
    },
    /// The peer acknowledged messages we never sent.
    InSeqNoAhead {
        /// Raw value received.
        received: u32,
        /// Raw count of messages we created.
        sent: u32,
    },
    /// The layer of the peer's messages went down.
    LayerDecreased {
        /// Layer last seen.
        previous: i32,
        /// Layer received.
        received: i32,
    },
    /// A Resend asked for too many messages, for messages we never sent, or had a bad range.
    BadResend {
        /// start_seq_no as received.
        start_seq_no: i32,
        /// end_seq_no as received.
        end_seq_no: i32,
    },
    /// An authenticated message that is not a valid `decryptedMessageLayer`.
    MalformedMessage(String),
    /// The key the peer derived does not match ours (chat creation).
    KeyFingerprintMismatch,
    /// A DH value from the peer failed validation (chat creation).
    BadDhValue(String),
    /// A re-keying message that cannot be honoured (CommitKey for an unknown exchange, etc.).
    BadRekey(String),
}

/// The method an outgoing message is sent with (TDLib's choice per action, digest §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendMethod {
    /// `messages.sendEncrypted` (push-notifying: content, read/delete/screenshot/flush/TTL).
    SendEncrypted,
    /// `messages.sendEncryptedService` (silent protocol messages: layer, resend, keys, noop, typing).
    SendEncryptedService,
}

impl SendMethod {
    /// The TL method name.
    pub fn tl_name(self) -> &'static str {
        match self {
            SendMethod::SendEncrypted => "messages.sendEncrypted",
            SendMethod::SendEncryptedService => "messages.sendEncryptedService",
        }
    }
}

/// One outgoing message kept until the peer acknowledges it: exactly the bytes that went (or will
/// go) on the wire, so that a Resend is answered with the original ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Raw out sequence number (`out_seq_no = 2 * out_raw + parity`).
    pub out_raw: u32,
    /// Raw in sequence number carried by this message.
    pub in_raw: u32,
    /// The outer and inner random_id.
    pub random_id: i64,
    /// How it is sent.
    pub method: SendMethod,
    /// The encrypted `data` argument (fingerprint, msg_key, ciphertext).
    pub data: Vec<u8>,
    /// The layer written in the message.
    pub layer: i32,
    /// Whether the message was created on behalf of the application (false: protocol-internal).
    pub from_app: bool,
    /// When it was created (injected clock, Unix seconds).
    pub created_at: u64,
    /// The server's `date` once the server accepted it; `None` while it still has to be sent.
    pub sent_date: Option<i32>,
}

/// A peer message received ahead of a gap, kept decrypted until the gap is filled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The outer random_id of the encrypted message.
    pub random_id: i64,
    /// The server date of the encrypted message.
    pub date: i32,
    /// The decrypted, authenticated `decryptedMessageLayer` (TL bytes).
    pub plaintext: Vec<u8>,
    /// Fingerprint of the key it was encrypted with.
    pub key_fingerprint: KeyFingerprint,
    /// True once a Resend it carried has been acted upon (it must not be acted on twice).
    pub resend_done: bool,
}

/// An encrypted message that arrived while we were still waiting for the peer's acceptance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyMessage {
    /// random_id of the encrypted message.
    pub random_id: i64,
    /// Server date.
    pub date: i32,
    /// The encrypted bytes.
    pub data: Vec<u8>,
}

/// An outstanding Resend request of ours (raw peer out numbers, inclusive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResendRequest {
    /// First raw seq asked for.
    pub start_raw: u32,
    /// Last raw seq asked for.
    pub end_raw: u32,
    /// When we asked (injected clock).
    pub at: u64,
}

/// Perfect-forward-secrecy exchange in progress (digest §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rekey {
    /// No exchange running.
    Idle,
    /// We sent RequestKey and wait for AcceptKey.
    Requested {
        /// Our exchange_id.
        exchange_id: i64,
        /// Our secret `a`.
        secret: DhSecret,
    },
    /// We sent AcceptKey and wait for CommitKey; the new key is already usable for decryption.
    Accepted {
        /// The peer's exchange_id.
        exchange_id: i64,
        /// The key we will switch to on CommitKey.
        key: AuthKey,
    },
}

impl Rekey {
    /// A short name for logs and D-Bus properties.
    pub fn name(&self) -> &'static str {
        match self {
            Rekey::Idle => "idle",
            Rekey::Requested { .. } => "requested",
            Rekey::Accepted { .. } => "accepted",
        }
    }
}

/// The key in use and how much it has been used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The shared key.
    pub key: AuthKey,
    /// When it came into use (injected clock); survives restarts, so the 7-day rule does too.
    pub since: u64,
    /// Messages (in + out) processed with it since it came into use.
    pub messages: u32,
}

/// Everything a chat needs to continue after a restart, apart from the outbox entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatState {
    /// Record layout version ([`STATE_VERSION`]).
    pub version: u32,
    /// The chat id (the `random_id` of `messages.requestEncryption`).
    pub chat_id: i32,
    /// The chat's access_hash (0 until the server told us).
    pub access_hash: i64,
    /// Our own user id.
    pub self_user_id: i64,
    /// The peer's user id.
    pub peer_user_id: i64,
    /// Our role.
    pub role: Role,
    /// Lifecycle.
    pub status: Status,
    /// The DH parameters the chat (and its re-keys) use.
    pub dh: DhConfig,
    /// The creator's secret `a` while waiting for acceptance.
    pub handshake_secret: Option<DhSecret>,
    /// The creator's `g_a` as received, while our acceptance is pending (acceptor).
    pub peer_g_a: Option<Vec<u8>>,
    /// The key in use.
    pub key: Option<KeyState>,
    /// The previous key, kept during and after a switch until the peer has used the new one.
    pub old_key: Option<AuthKey>,
    /// Fingerprint of the first key (for key visualization).
    pub initial_key_sha1_16: Option<[u8; 16]>,
    /// Messages we created (the next one gets this raw out number).
    pub out_raw: u32,
    /// Peer messages processed in order (the next expected raw peer out number).
    pub in_raw: u32,
    /// The peer's latest raw in number: all our messages below it are acknowledged.
    pub peer_in_raw: u32,
    /// Layer of the last in-order peer message (must not decrease).
    pub peer_message_layer: i32,
    /// Highest layer we know the peer supports.
    pub peer_layer: i32,
    /// The layer we last announced with NotifyLayer (0: never).
    pub announced_layer: i32,
    /// Chat-wide self-destruct timer in seconds.
    pub ttl_seconds: i32,
    /// Re-keying state.
    pub rekey: Rekey,
    /// Peer messages received ahead of a gap, by raw out number.
    pub gap_queue: BTreeMap<u32, QueuedMessage>,
    /// Our outstanding Resend request.
    pub resend_request: Option<ResendRequest>,
    /// Messages that arrived before the chat was ready (creator only).
    pub early: Vec<EarlyMessage>,
    /// random_ids of recent outgoing messages no longer in the outbox (bounded), so that a new
    /// message never reuses one.
    pub recent_random_ids: VecDeque<i64>,
    /// When the chat was created here (injected clock).
    pub created_at: u64,
}
