//! The persisted form of a chat, as small, separately keyed records.
//!
//! Like TDLib's secret-chat state (auth, config, PFS and seq-number records, each under its own
//! key), a chat is stored as four records plus two families of keyed entries, so that the update
//! that happens on every message stays a few dozen bytes:
//!
//! | record | changes | holds |
//! | --- | --- | --- |
//! | [`AuthState`] | at creation, acceptance, closure | ids, role, DH parameters, the [`Stage`] with its stage-specific data |
//! | [`ConfigState`] | when a layer or the TTL changes | layers, TTL |
//! | [`PfsState`] | when a re-key starts, ends or is abandoned | the key in use, the previous key, the exchange |
//! | [`SeqState`] | on almost every message | the three seq counters and our outstanding Resend request |
//! | [`OutboxEntry`] (by `out_raw`) | put when we create a message, removed when acknowledged | the exact ciphertext |
//! | [`QueuedMessage`] (by `out_raw`) | put when a peer message arrives ahead of a gap, removed when processed | the decrypted message |
//!
//! Every output of a [`super::Chat`] says which records changed ([`super::Changed`]) and which
//! entries to put or remove; a chat restored from any set of records that it once reported
//! continues exactly where it left off. The records are plain serde values; their stored form
//! (a versioned envelope) is [`crate::record`].

use serde::{Deserialize, Serialize};

use crate::Role;
use crate::crypto::{AuthKey, KeyFingerprint};
use crate::dh::{DhConfig, DhSecret};

/// Where the chat is in its life, as reported to the application (no secrets).
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

/// The chat's stage with the data that only that stage needs (persisted in [`AuthState`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// The peer asked us for a chat; we keep their `g_a` until we accept (or decline).
    Requested {
        /// The creator's `g_a` as received.
        g_a: Vec<u8>,
    },
    /// We asked for a chat; we keep our secret `a` until the peer's `g_b` arrives.
    Waiting {
        /// Our secret exponent (stored before `requestEncryption` leaves).
        secret: DhSecret,
        /// Peer messages that overtook the acceptance, processed once the key is known
        /// (at most [`super::MAX_EARLY`] of them, [`super::MAX_EARLY_BYTES`] in all).
        early: Vec<EarlyMessage>,
    },
    /// Keys are agreed.
    Ready,
    /// Closed for good; nothing of the chat's secrets is kept.
    Discarded(DiscardReason),
}

impl Stage {
    /// The status the application sees.
    pub fn status(&self) -> Status {
        match self {
            Stage::Requested { .. } => Status::Requested,
            Stage::Waiting { .. } => Status::Waiting,
            Stage::Ready => Status::Ready,
            Stage::Discarded(r) => Status::Discarded(r.clone()),
        }
    }

    /// A short lower-case name, as [`Status::name`].
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Requested { .. } => "requested",
            Stage::Waiting { .. } => "waiting",
            Stage::Ready => "ready",
            Stage::Discarded(_) => "discarded",
        }
    }

    /// True once the chat is closed.
    pub fn is_discarded(&self) -> bool {
        matches!(self, Stage::Discarded(_))
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
    /// The server refused a send with a fatal error (e.g. `USER_IS_BLOCKED`, `DATA_INVALID`).
    ServerRefused {
        /// The Telegram error name.
        error: String,
    },
    /// The peer broke the protocol; the chat cannot continue safely.
    Protocol(ProtocolViolation),
    /// A message the protocol requires of us (an answer to a Resend, AcceptKey, CommitKey, our
    /// own Resend request…) could not be created, so the chat cannot continue without a hole.
    CannotSend {
        /// The TL name of the action that could not be sent.
        action: String,
        /// Why (the [`super::SendError`] as text).
        error: String,
    },
    /// The account logged out (`auth.logOut`): Telegram discards every secret chat of the
    /// device, so the chat ended without a message from either side. (Added last: the
    /// variants before it keep their stored encoding.)
    LoggedOut,
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
    /// An authenticated message that is not exactly one valid `decryptedMessageLayer` holding a
    /// `DecryptedMessage` (bad length or padding, truncation, trailing bytes, a known
    /// constructor of the wrong type).
    MalformedMessage(String),
    /// The key the peer derived does not match ours (chat creation).
    KeyFingerprintMismatch,
    /// A DH value from the peer failed validation (chat creation).
    BadDhValue(String),
    /// A re-keying message that cannot be honoured (CommitKey for an unknown exchange, etc.).
    BadRekey(String),
}

/// The method an outgoing message is sent with. Stored in its outbox entry, so that every
/// (re)send of a message uses the method it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SendMethod {
    /// `messages.sendEncrypted`: the peer's devices may show a notification.
    SendEncrypted,
    /// `messages.sendEncryptedService`: silent.
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
/// go) on the wire, so that a Resend is answered with the original ciphertext. Keyed by
/// `out_raw`; put when the message is created (before it can leave), put again when the server
/// accepted it, removed when the peer's in_seq_no passes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Raw out sequence number (`out_seq_no = 2 * out_raw + parity`); the record's key.
    pub out_raw: u32,
    /// Raw in sequence number carried by this message.
    pub in_raw: u32,
    /// The outer and inner random_id.
    pub random_id: i64,
    /// How it is sent (and re-sent).
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

/// A peer message received ahead of a gap, kept decrypted until the gap is filled. Keyed by
/// `out_raw`; put when it arrives, removed when it is processed in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The peer's raw out sequence number (`out_seq_no / 2`); the record's key.
    pub out_raw: u32,
    /// The outer random_id of the encrypted message.
    pub random_id: i64,
    /// The server date of the encrypted message.
    pub date: i32,
    /// The decrypted, authenticated `decryptedMessageLayer` (TL bytes; it parsed when it came).
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
    /// When we asked (injected clock); asked again after [`super::RESEND_RETRY_SECS`].
    pub at: u64,
}

/// The key in use and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The shared key.
    pub key: AuthKey,
    /// When it came into use (injected clock); survives restarts, so the 7-day rule does too.
    pub since: u64,
    /// `out_raw + in_raw` when it came into use: the messages (in + out) under this key are the
    /// growth of that sum since, so counting them costs no write per message.
    pub since_seq: u32,
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
        /// Our secret `a`, stored with the RequestKey that carries `g_a`.
        secret: DhSecret,
    },
    /// We sent AcceptKey and wait for CommitKey; the new key is already usable for decryption.
    Accepted {
        /// The peer's exchange_id.
        exchange_id: i64,
        /// The key we will switch to on CommitKey, stored with the AcceptKey that announces it.
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

    /// The running exchange, if any.
    pub fn exchange_id(&self) -> Option<i64> {
        match self {
            Rekey::Idle => None,
            Rekey::Requested { exchange_id, .. } | Rekey::Accepted { exchange_id, .. } => {
                Some(*exchange_id)
            }
        }
    }
}

/// Who the chat is with and where it stands. Written at creation, acceptance and closure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// The chat id (the `random_id` of `messages.requestEncryption`).
    pub(super) chat_id: i32,
    /// The chat's access_hash (0 until the server told us).
    pub(super) access_hash: i64,
    /// Our own user id.
    pub(super) self_user_id: i64,
    /// The peer's user id.
    pub(super) peer_user_id: i64,
    /// Our role: fixes the KDF offset and the parity of our seq numbers for the chat's life.
    pub(super) role: Role,
    /// The stage, with the data only that stage needs.
    pub(super) stage: Stage,
    /// The DH parameters the chat (and its re-keys) use.
    pub(super) dh: DhConfig,
    /// When the chat was created here (injected clock).
    pub(super) created_at: u64,
}

impl AuthState {
    /// The chat id.
    pub fn chat_id(&self) -> i32 {
        self.chat_id
    }
    /// The access_hash (0 until known).
    pub fn access_hash(&self) -> i64 {
        self.access_hash
    }
    /// Our user id.
    pub fn self_user_id(&self) -> i64 {
        self.self_user_id
    }
    /// The peer's user id.
    pub fn peer_user_id(&self) -> i64 {
        self.peer_user_id
    }
    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The stage.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }
    /// The DH parameters.
    pub fn dh(&self) -> &DhConfig {
        &self.dh
    }
    /// When the chat was created here.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }
}

/// Layers and the TTL. Written when one of them changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigState {
    /// Highest layer we know the peer supports (from its messages and NotifyLayer); our messages
    /// are written in `min(ours, this)`, at least [`super::MIN_LAYER`].
    pub(super) peer_layer: i32,
    /// Layer of the last in-order peer message: it must never decrease.
    pub(super) peer_message_layer: i32,
    /// The layer we last announced with NotifyLayer (0: never); a newer build announces again.
    pub(super) announced_layer: i32,
    /// Chat-wide self-destruct timer in seconds, as last set by either side.
    pub(super) ttl_seconds: i32,
}

impl ConfigState {
    /// Highest layer the peer supports, as far as we know.
    pub fn peer_layer(&self) -> i32 {
        self.peer_layer
    }
    /// Layer of the peer's last in-order message.
    pub fn peer_message_layer(&self) -> i32 {
        self.peer_message_layer
    }
    /// The layer we last announced (0: never).
    pub fn announced_layer(&self) -> i32 {
        self.announced_layer
    }
    /// The chat's TTL in seconds.
    pub fn ttl_seconds(&self) -> i32 {
        self.ttl_seconds
    }
}

/// The keys. Written when a key comes into use or is dropped and when a re-key changes state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PfsState {
    /// The key in use (None before the chat is ready and after it is discarded).
    pub(super) key: Option<KeyState>,
    /// The previous key, kept after a switch until the peer has used the new one (earlier
    /// messages still in flight may need it).
    pub(super) old_key: Option<AuthKey>,
    /// `SHA1(first key)[..16]`, for the key visualization after re-keys.
    pub(super) initial_key_sha1_16: Option<[u8; 16]>,
    /// The re-key exchange, if one is running.
    pub(super) rekey: Rekey,
}

impl PfsState {
    /// The key in use.
    pub fn key(&self) -> Option<&KeyState> {
        self.key.as_ref()
    }
    /// The previous key, while still held.
    pub fn old_key(&self) -> Option<&AuthKey> {
        self.old_key.as_ref()
    }
    /// The re-key exchange.
    pub fn rekey(&self) -> &Rekey {
        &self.rekey
    }
    /// `SHA1(first key)[..16]`.
    pub fn initial_key_sha1_16(&self) -> Option<[u8; 16]> {
        self.initial_key_sha1_16
    }
}

/// The seq counters. Written on almost every message (a few dozen bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqState {
    /// Messages we created: the next one gets this raw out number. Never decreases, so a seq
    /// slot is never reused under one key (the one exception is the Noop that fills a slot the
    /// peer asks for and we no longer hold, see [`super::Chat`]).
    pub(super) out_raw: u32,
    /// Peer messages processed in order: the next expected raw peer out number.
    pub(super) in_raw: u32,
    /// The peer's latest raw in number: all our messages below it are acknowledged.
    pub(super) peer_in_raw: u32,
    /// Our outstanding Resend request, if any.
    pub(super) resend_request: Option<ResendRequest>,
}

impl SeqState {
    /// The next raw out number.
    pub fn out_raw(&self) -> u32 {
        self.out_raw
    }
    /// The next expected raw peer out number.
    pub fn in_raw(&self) -> u32 {
        self.in_raw
    }
    /// The peer's latest raw in number.
    pub fn peer_in_raw(&self) -> u32 {
        self.peer_in_raw
    }
    /// Our outstanding Resend request.
    pub fn resend_request(&self) -> Option<&ResendRequest> {
        self.resend_request.as_ref()
    }
}

/// The four records of a chat, as one value (the outbox and the gap queue are stored apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatState {
    pub(super) auth: AuthState,
    pub(super) config: ConfigState,
    pub(super) pfs: PfsState,
    pub(super) seq: SeqState,
}

impl ChatState {
    /// Reassembles the records read back from a store (checked by [`super::Chat::restore`]).
    pub fn from_parts(
        auth: AuthState,
        config: ConfigState,
        pfs: PfsState,
        seq: SeqState,
    ) -> ChatState {
        ChatState {
            auth,
            config,
            pfs,
            seq,
        }
    }

    /// Who and where.
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }
    /// Layers and TTL.
    pub fn config(&self) -> &ConfigState {
        &self.config
    }
    /// Keys.
    pub fn pfs(&self) -> &PfsState {
        &self.pfs
    }
    /// Seq counters.
    pub fn seq(&self) -> &SeqState {
        &self.seq
    }
}

/// What a chat shows the outside world (the daemon's D-Bus properties), computed from its
/// records alone: never the key. The same value for a live chat ([`super::Chat::summary`]) and
/// for one read back from a store ([`ChatState::summary`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSummary {
    /// The chat id.
    pub chat_id: i32,
    /// The peer's user id.
    pub peer_user_id: i64,
    /// Our role.
    pub role: Role,
    /// `requested`, `waiting`, `ready`, `discarded` ([`Status::name`]).
    pub state: &'static str,
    /// The layer our next message is written in: min(ours, the peer's), at least
    /// [`super::MIN_LAYER`].
    pub layer: i32,
    /// The peer's layer (as it announced).
    pub peer_layer: i32,
    /// Messages we created (the raw out counter).
    pub out_seq_no: u32,
    /// Peer messages processed in order (the raw in counter).
    pub in_seq_no: u32,
    /// Our messages the peer acknowledged (raw).
    pub acked_seq_no: u32,
    /// Our messages the peer has not acknowledged yet.
    pub pending: u32,
    /// Fingerprint of the key in use.
    pub key_fingerprint: Option<KeyFingerprint>,
    /// SHA1(first key)[..16] || SHA256(key in use)[..20].
    pub visualization: Option<[u8; 36]>,
    /// The chat's message TTL in seconds.
    pub ttl_seconds: i32,
    /// The re-key exchange ([`Rekey::name`]).
    pub rekey: &'static str,
    /// Messages (in + out) under the key in use.
    pub messages_since_rekey: u32,
    /// When the chat was created (Unix seconds, the injected clock).
    pub created_at: u64,
}

impl ChatState {
    /// The chat as the outside world sees it.
    pub fn summary(&self) -> ChatSummary {
        let seq = &self.seq;
        let key = self.pfs.key.as_ref();
        let under_key = key.map_or(0, |k| {
            seq.out_raw
                .saturating_add(seq.in_raw)
                .saturating_sub(k.since_seq)
        });
        ChatSummary {
            chat_id: self.auth.chat_id,
            peer_user_id: self.auth.peer_user_id,
            role: self.auth.role,
            state: self.auth.stage.name(),
            layer: super::OUR_LAYER
                .min(self.config.peer_layer)
                .max(super::MIN_LAYER),
            peer_layer: self.config.peer_layer,
            out_seq_no: seq.out_raw,
            in_seq_no: seq.in_raw,
            acked_seq_no: seq.peer_in_raw,
            pending: seq.out_raw.saturating_sub(seq.peer_in_raw),
            key_fingerprint: key.map(|k| k.key.fingerprint()),
            visualization: self.visualization(),
            ttl_seconds: self.config.ttl_seconds,
            rekey: self.pfs.rekey.name(),
            messages_since_rekey: under_key,
            created_at: self.auth.created_at,
        }
    }

    /// The key visualization: SHA1(initial key)[..16] || SHA256(key in use)[..20].
    pub fn visualization(&self) -> Option<[u8; 36]> {
        let initial = self.pfs.initial_key_sha1_16?;
        let key = &self.pfs.key.as_ref()?.key;
        let sha = crate::crypto::sha256(&[key.as_bytes()]);
        let mut v = [0u8; 36];
        v[..16].copy_from_slice(&initial);
        v[16..].copy_from_slice(&sha[..20]);
        Some(v)
    }
}
