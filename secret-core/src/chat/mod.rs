//! The per-chat state machine.
//!
//! A [`Chat`] takes inputs (an application send, an encrypted message from the server, a chat update,
//! a send result, a clock tick) and answers each with an [`Output`]: what to store, what to send and
//! what to tell the application. The caller must apply an output in this order:
//!
//! 1. persist: if `state_changed`, write [`Chat::state`]; apply `outbox_put` / `outbox_remove`;
//!    store the `events` (the application's inbox) — all in one durable batch;
//! 2. only then perform the `calls` (in order, per chat) and deliver the events.
//!
//! A chat rebuilt with [`Chat::restore`] from any state it once reported continues correctly:
//! seq numbers are never reused, the outbox keeps the exact bytes of every unacknowledged message,
//! and a new key is stored before AcceptKey or CommitKey can leave.

mod state;

use std::collections::BTreeMap;
use std::fmt;

pub use state::{
    ChatState, DiscardReason, EarlyMessage, KeyState, OutboxEntry, ProtocolViolation,
    QueuedMessage, Rekey, ResendRequest, STATE_VERSION, SendMethod, Status,
};

use crate::Role;
use crate::crypto::{self, AuthKey, DecryptError, KeyFingerprint};
use crate::dh::{self, DhConfig};
use crate::rand::SecureRandom;
use crate::tl::enums::{DecryptedMessage, DecryptedMessageAction};
use crate::tl::{self, Deserializable, Serializable, types};

/// The secret layer this implementation speaks.
pub const OUR_LAYER: i32 = tl::LAYER;
/// The lowest layer we ever write in `decryptedMessageLayer` (MTProto 2.0).
pub const MIN_LAYER: i32 = 73;
/// The peer layer assumed until the peer tells us more (the docs' starting value).
pub const INITIAL_PEER_LAYER: i32 = 46;
/// Re-key after this many messages (in + out) under one key.
pub const REKEY_AFTER_MESSAGES: u32 = 100;
/// Re-key after a key has been in use this long (seconds, injected clock).
pub const REKEY_AFTER_SECS: u64 = 7 * 24 * 3600;
/// Largest Resend range honoured (TDLib's MAX_RESEND_COUNT).
pub const MAX_RESEND_RANGE: u32 = 1000;
/// Most peer messages held ahead of a gap; further ones are dropped and asked for again later.
pub const MAX_GAP_QUEUE: usize = 1000;
/// Most messages held while waiting for the peer's acceptance.
pub const MAX_EARLY: usize = 64;
/// Largest outgoing message (serialized `DecryptedMessage`).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes of `random_bytes` in each message (the docs demand at least 15; TDLib sends 31).
pub const RANDOM_BYTES_LEN: usize = 31;
/// Fewest `random_bytes` accepted from the peer (docs: ignore messages with fewer).
pub const MIN_RANDOM_BYTES: usize = 15;
/// A Resend request without an answer is repeated after this long (seconds).
pub const RESEND_RETRY_SECS: u64 = 30;
/// How many random_ids of acknowledged messages are remembered to prevent reuse.
pub const RECENT_RANDOM_IDS: usize = 1024;
/// Largest raw seq number (so that `2 * raw + 1` fits an `int`).
const MAX_RAW_SEQ: u32 = (i32::MAX as u32 - 1) / 2;

/// Something for the daemon to send to Telegram, in order, after the output is persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The method.
    pub method: SendMethod,
    /// The outer random_id (equal to the inner one).
    pub random_id: i64,
    /// The `data` argument.
    pub data: Vec<u8>,
    /// The out_seq_no the message carries.
    pub out_seq_no: i32,
    /// True if this is an outbox entry (the daemon reports the result with [`Chat::on_sent`]).
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

impl Transmit {
    fn from_entry(e: &OutboxEntry, role: Role) -> Self {
        Transmit {
            method: e.method,
            random_id: e.random_id,
            data: e.data.clone(),
            out_seq_no: encode_seq(e.out_raw, role.out_parity()),
            in_outbox: true,
        }
    }
}

/// What the application is told (after the output is persisted).
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // transient values, handed over once
pub enum Event {
    /// The chat's status changed.
    StatusChanged(Status),
    /// The chat became ready.
    Ready {
        /// Fingerprint of the key.
        key_fingerprint: KeyFingerprint,
        /// The key visualization (SHA1(initial)[..16] || SHA256(key)[..20]).
        visualization: [u8; 36],
    },
    /// An ordinary (content) message from the peer, in order.
    Message {
        /// Its random_id.
        random_id: i64,
        /// Server date.
        date: i32,
        /// The message.
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
        action: DecryptedMessageAction,
    },
    /// An in-order peer message whose content this layer does not know (a newer peer).
    Unsupported {
        /// Outer random_id.
        random_id: i64,
        /// Layer the peer wrote.
        layer: i32,
        /// Constructor id of the unknown content, if it could be read.
        constructor: Option<u32>,
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
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use = "an Output must be persisted and its calls performed"]
pub struct Output {
    /// [`Chat::state`] changed and must be written.
    pub state_changed: bool,
    /// Outbox entries to write (new, or updated).
    pub outbox_put: Vec<OutboxEntry>,
    /// Outbox entries to delete, by raw out number.
    pub outbox_remove: Vec<u32>,
    /// What to send, in order, once persisted.
    pub calls: Vec<Call>,
    /// What to tell the application, once persisted.
    pub events: Vec<Event>,
}

impl Output {
    /// True if nothing needs doing.
    pub fn is_empty(&self) -> bool {
        !self.state_changed
            && self.outbox_put.is_empty()
            && self.outbox_remove.is_empty()
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

    fn merge(&mut self, other: Output) {
        self.state_changed |= other.state_changed;
        self.outbox_put.extend(other.outbox_put);
        self.outbox_remove.extend(other.outbox_remove);
        self.calls.extend(other.calls);
        self.events.extend(other.events);
    }
}

/// An encrypted message from the server (`encryptedMessage` / `encryptedMessageService`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingEncrypted {
    /// The outer random_id.
    pub random_id: i64,
    /// Server date.
    pub date: i32,
    /// The encrypted bytes.
    pub data: Vec<u8>,
}

/// The server's view of a chat (from `updateEncryption` or a method result).
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// What [`Chat::request`] asks the daemon to call: `messages.requestEncryption`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEncryption {
    /// The peer.
    pub user_id: i64,
    /// The int32 random_id, which becomes the chat id.
    pub random_id: i32,
    /// Our g_a.
    pub g_a: Vec<u8>,
}

/// How a send failed at the server, as the daemon classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// Why a send was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The chat is not in a state that allows this (e.g. not ready, or discarded).
    WrongState {
        /// The status at the time.
        status: &'static str,
        /// What was attempted.
        what: &'static str,
    },
    /// The action is sent by the protocol itself and cannot be requested.
    NotAllowed {
        /// The TL name of the action or message.
        name: &'static str,
        /// Why.
        why: &'static str,
    },
    /// random_id 0 or one already used by a recent message of this chat.
    BadRandomId(i64),
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// A field has a value the protocol does not allow.
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// The chat used up its seq numbers (2^30 messages).
    SeqExhausted,
    /// No re-key can start now.
    RekeyBusy(&'static str),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::WrongState { status, what } => {
                write!(f, "cannot {what}: the chat is {status}")
            }
            SendError::NotAllowed { name, why } => write!(f, "{name} cannot be sent: {why}"),
            SendError::BadRandomId(id) => {
                write!(f, "random_id {id} is zero or already used in this chat")
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiveError {
    /// The chat is closed.
    ChatClosed,
    /// The chat is not ready for messages (and cannot hold them).
    NotReady(&'static str),
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

/// Why a state cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// Stored by an incompatible version.
    Version(u32),
    /// The state contradicts itself or its outbox.
    Inconsistent(&'static str),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Version(v) => {
                write!(f, "stored chat has version {v}, expected {STATE_VERSION}")
            }
            RestoreError::Inconsistent(w) => write!(f, "stored chat is inconsistent: {w}"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// Errors of the chat-creation steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The call does not fit the chat's status or role.
    WrongState(&'static str),
    /// DH failure on our side (parameters, key generation).
    Dh(dh::DhError),
    /// The request is not addressed to us or names no peer.
    BadRequest(&'static str),
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

fn encode_seq(raw: u32, parity: i32) -> i32 {
    // raw <= MAX_RAW_SEQ keeps this in range.
    (raw as i32).wrapping_mul(2).wrapping_add(parity)
}

/// One secret chat.
#[derive(Clone, Debug)]
pub struct Chat {
    state: ChatState,
    outbox: BTreeMap<u32, OutboxEntry>,
}

/// A decoded `decryptedMessageLayer` whose inner message may be of an unknown (newer) kind.
struct Layered {
    random_bytes_len: usize,
    layer: i32,
    in_seq_no: i32,
    out_seq_no: i32,
    message: Result<DecryptedMessage, Option<u32>>,
}

fn parse_layered(plaintext: &[u8]) -> Result<Layered, String> {
    let mut r = tl::Reader::new(plaintext);
    let id = r.read_u32().map_err(|e| e.to_string())?;
    if id != <types::DecryptedMessageLayer as tl::Identifiable>::CONSTRUCTOR_ID {
        return Err(format!(
            "expected decryptedMessageLayer, found constructor {id:#010x}"
        ));
    }
    let random_bytes = r.read_bytes().map_err(|e| e.to_string())?;
    let layer = r.read_i32().map_err(|e| e.to_string())?;
    let in_seq_no = r.read_i32().map_err(|e| e.to_string())?;
    let out_seq_no = r.read_i32().map_err(|e| e.to_string())?;
    let rest = r.read_raw(r.remaining()).map_err(|e| e.to_string())?;
    let message = match DecryptedMessage::from_bytes(rest) {
        Ok(m) => Ok(m),
        Err(_) => Err(rest
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)),
    };
    Ok(Layered {
        random_bytes_len: random_bytes.len(),
        layer,
        in_seq_no,
        out_seq_no,
        message,
    })
}

/// Whether the application may ask for `action`, and how it is sent.
fn app_action_method(action: &DecryptedMessageAction) -> Result<SendMethod, SendError> {
    use DecryptedMessageAction as A;
    match action {
        A::SetMessageTTL(a) => {
            if a.ttl_seconds < 0 {
                return Err(SendError::InvalidField {
                    field: "ttl_seconds",
                    why: format!("{} is negative", a.ttl_seconds),
                });
            }
            Ok(SendMethod::SendEncrypted)
        }
        A::ReadMessages(a) => check_ids("random_ids", &a.random_ids, SendMethod::SendEncrypted),
        A::DeleteMessages(a) => check_ids("random_ids", &a.random_ids, SendMethod::SendEncrypted),
        A::ScreenshotMessages(a) => {
            check_ids("random_ids", &a.random_ids, SendMethod::SendEncrypted)
        }
        A::FlushHistory(_) => Ok(SendMethod::SendEncrypted),
        A::Typing(_) | A::Noop(_) => Ok(SendMethod::SendEncryptedService),
        A::NotifyLayer(a) if a.layer == OUR_LAYER => Ok(SendMethod::SendEncryptedService),
        A::NotifyLayer(_) => Err(SendError::InvalidField {
            field: "layer",
            why: format!("only our own layer ({OUR_LAYER}) can be announced"),
        }),
        A::Resend(_) => Err(SendError::NotAllowed {
            name: "decryptedMessageActionResend",
            why: "the chat asks for missing messages itself",
        }),
        A::AcceptKey(_) => Err(SendError::NotAllowed {
            name: "decryptedMessageActionAcceptKey",
            why: "it is sent by the protocol in answer to the peer's RequestKey",
        }),
        A::CommitKey(_) => Err(SendError::NotAllowed {
            name: "decryptedMessageActionCommitKey",
            why: "it is sent by the protocol in answer to the peer's AcceptKey",
        }),
        // RequestKey and AbortKey are mapped to start_rekey / abort_rekey by send_message.
        A::RequestKey(_) | A::AbortKey(_) => Ok(SendMethod::SendEncryptedService),
    }
}

fn check_ids(field: &'static str, ids: &[i64], m: SendMethod) -> Result<SendMethod, SendError> {
    if ids.is_empty() {
        return Err(SendError::InvalidField {
            field,
            why: "empty list".into(),
        });
    }
    Ok(m)
}

fn is_app_action(action: &DecryptedMessageAction) -> bool {
    use DecryptedMessageAction as A;
    matches!(
        action,
        A::SetMessageTTL(_)
            | A::ReadMessages(_)
            | A::DeleteMessages(_)
            | A::ScreenshotMessages(_)
            | A::FlushHistory(_)
            | A::Typing(_)
    )
}

impl Chat {
    fn new_state(
        chat_id: i32,
        self_user_id: i64,
        peer_user_id: i64,
        role: Role,
        status: Status,
        dh: DhConfig,
        now: u64,
    ) -> ChatState {
        ChatState {
            version: STATE_VERSION,
            chat_id,
            access_hash: 0,
            self_user_id,
            peer_user_id,
            role,
            status,
            dh,
            handshake_secret: None,
            peer_g_a: None,
            key: None,
            old_key: None,
            initial_key_sha1_16: None,
            out_raw: 0,
            in_raw: 0,
            peer_in_raw: 0,
            peer_message_layer: 0,
            peer_layer: INITIAL_PEER_LAYER,
            announced_layer: 0,
            ttl_seconds: 0,
            rekey: Rekey::Idle,
            gap_queue: BTreeMap::new(),
            resend_request: None,
            early: Vec::new(),
            recent_random_ids: Default::default(),
            created_at: now,
        }
    }

    /// Starts a chat as its creator. The daemon calls `messages.requestEncryption` with the
    /// returned values and then feeds the result to [`Chat::on_remote_update`]. `chat_id` is the
    /// int32 random_id (use [`random_chat_id`] and make sure it is not in use locally);
    /// `server_random` is the `random` of `messages.getDhConfig`, mixed into ours.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        chat_id: i32,
        self_user_id: i64,
        peer_user_id: i64,
        dh: DhConfig,
        server_random: &[u8],
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<(Chat, RequestEncryption, Output), HandshakeError> {
        let pair = dh::generate_key_pair(&dh, rng, server_random).map_err(HandshakeError::Dh)?;
        let mut state = Self::new_state(
            chat_id,
            self_user_id,
            peer_user_id,
            Role::Creator,
            Status::Waiting,
            dh,
            now,
        );
        state.handshake_secret = Some(pair.secret);
        let chat = Chat {
            state,
            outbox: BTreeMap::new(),
        };
        let req = RequestEncryption {
            user_id: peer_user_id,
            random_id: chat_id,
            g_a: pair.public,
        };
        let out = Output {
            state_changed: true,
            events: vec![Event::StatusChanged(Status::Waiting)],
            ..Default::default()
        };
        Ok((chat, req, out))
    }

    /// Records an incoming chat request (`encryptedChatRequested`); accept it with [`Chat::accept`].
    pub fn from_request(
        req: &ChatRequest,
        self_user_id: i64,
        dh: DhConfig,
        now: u64,
    ) -> Result<(Chat, Output), HandshakeError> {
        if req.participant_id != self_user_id {
            return Err(HandshakeError::BadRequest("participant_id is not us"));
        }
        if req.admin_id == self_user_id {
            return Err(HandshakeError::BadRequest("admin_id is us"));
        }
        let mut state = Self::new_state(
            req.chat_id,
            self_user_id,
            req.admin_id,
            Role::Acceptor,
            Status::Requested,
            dh,
            now,
        );
        state.access_hash = req.access_hash;
        state.peer_g_a = Some(req.g_a.clone());
        let out = Output {
            state_changed: true,
            events: vec![Event::StatusChanged(Status::Requested)],
            ..Default::default()
        };
        Ok((
            Chat {
                state,
                outbox: BTreeMap::new(),
            },
            out,
        ))
    }

    /// Accepts a requested chat: computes the key, becomes ready, and asks the daemon to call
    /// `messages.acceptEncryption` and then to announce our layer. A g_a that fails validation
    /// discards the chat instead (the output then carries `DiscardEncryption`).
    pub fn accept(
        &mut self,
        server_random: &[u8],
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, HandshakeError> {
        if self.state.status != Status::Requested || self.state.role != Role::Acceptor {
            return Err(HandshakeError::WrongState(
                "only a requested chat can be accepted",
            ));
        }
        let g_a = self.state.peer_g_a.clone().unwrap_or_default();
        let dhc = self.state.dh.clone();
        let key = match dh::check_public_value(&dhc, &g_a) {
            Err(e) => {
                return Ok(self.fatal(ProtocolViolation::BadDhValue(e.to_string())));
            }
            Ok(()) => {
                let pair =
                    dh::generate_key_pair(&dhc, rng, server_random).map_err(HandshakeError::Dh)?;
                match dh::compute_shared_key(&dhc, &pair.secret, &g_a) {
                    Ok(k) => (k, pair.public),
                    Err(e) => return Ok(self.fatal(ProtocolViolation::BadDhValue(e.to_string()))),
                }
            }
        };
        let (key, g_b) = key;
        let fp = key.fingerprint();
        let mut out = Output {
            calls: vec![Call::AcceptEncryption {
                g_b,
                key_fingerprint: fp.to_i64(),
            }],
            ..Default::default()
        };
        self.state.peer_g_a = None;
        out.merge(self.become_ready(key, now, rng));
        Ok(out)
    }

    /// Applies the server's view of the chat (`updateEncryption`, or the result of
    /// requestEncryption / acceptEncryption).
    pub fn on_remote_update(
        &mut self,
        update: &RemoteChat,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        if matches!(self.state.status, Status::Discarded(_)) {
            return Output::default();
        }
        match update {
            RemoteChat::Waiting { access_hash } => {
                if self.state.access_hash != *access_hash {
                    self.state.access_hash = *access_hash;
                    return Output {
                        state_changed: true,
                        ..Default::default()
                    };
                }
                Output::default()
            }
            RemoteChat::Discarded { history_deleted } => self.close(
                DiscardReason::Remote {
                    history_deleted: *history_deleted,
                },
                None,
            ),
            RemoteChat::Accepted {
                access_hash,
                g_a_or_b,
                key_fingerprint,
            } => {
                if self.state.role == Role::Acceptor || self.state.status == Status::Ready {
                    // Our own acceptance echoed back, or a repeat: nothing to learn.
                    if self.state.access_hash != *access_hash && *access_hash != 0 {
                        self.state.access_hash = *access_hash;
                        return Output {
                            state_changed: true,
                            ..Default::default()
                        };
                    }
                    return Output::default();
                }
                let Some(secret) = self.state.handshake_secret.clone() else {
                    return Output::default();
                };
                self.state.access_hash = *access_hash;
                let key = match dh::compute_shared_key(&self.state.dh, &secret, g_a_or_b) {
                    Ok(k) => k,
                    Err(e) => return self.fatal(ProtocolViolation::BadDhValue(e.to_string())),
                };
                if key.fingerprint().to_i64() != *key_fingerprint {
                    return self.fatal(ProtocolViolation::KeyFingerprintMismatch);
                }
                self.state.handshake_secret = None;
                let mut out = self.become_ready(key, now, rng);
                // Messages that overtook the acceptance.
                let early = std::mem::take(&mut self.state.early);
                for m in early {
                    let msg = IncomingEncrypted {
                        random_id: m.random_id,
                        date: m.date,
                        data: m.data,
                    };
                    if let Ok(o) = self.receive(&msg, now, rng) {
                        out.merge(o);
                    }
                }
                out
            }
        }
    }

    fn become_ready(&mut self, key: AuthKey, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let fp = key.fingerprint();
        let sha1 = crypto::sha1(&[key.as_bytes()]);
        let mut initial = [0u8; 16];
        initial.copy_from_slice(&sha1[..16]);
        self.state.initial_key_sha1_16 = Some(initial);
        self.state.key = Some(KeyState {
            key,
            since: now,
            messages: 0,
        });
        self.state.status = Status::Ready;
        let mut out = Output {
            state_changed: true,
            events: vec![
                Event::StatusChanged(Status::Ready),
                Event::Ready {
                    key_fingerprint: fp,
                    visualization: self.visualization().unwrap_or([0; 36]),
                },
            ],
            ..Default::default()
        };
        out.merge(self.announce_layer(now, rng));
        out
    }

    fn announce_layer(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let action =
            DecryptedMessageAction::NotifyLayer(types::DecryptedMessageActionNotifyLayer {
                layer: OUR_LAYER,
            });
        let out = self.internal(action, now, rng);
        if !out.is_empty() {
            self.state.announced_layer = OUR_LAYER;
        }
        out
    }

    /// Restores a chat from what an earlier [`Output`] made the caller store.
    pub fn restore(
        state: ChatState,
        outbox: impl IntoIterator<Item = OutboxEntry>,
    ) -> Result<Chat, RestoreError> {
        if state.version != STATE_VERSION {
            return Err(RestoreError::Version(state.version));
        }
        if state.in_raw > MAX_RAW_SEQ || state.out_raw > MAX_RAW_SEQ {
            return Err(RestoreError::Inconsistent("seq counters out of range"));
        }
        if state.status == Status::Ready && state.key.is_none() {
            return Err(RestoreError::Inconsistent("ready chat without a key"));
        }
        let mut map = BTreeMap::new();
        for e in outbox {
            if e.out_raw >= state.out_raw {
                return Err(RestoreError::Inconsistent(
                    "outbox entry beyond out counter",
                ));
            }
            if e.out_raw < state.peer_in_raw {
                // Acknowledged while the removal was not yet applied: drop it.
                continue;
            }
            map.insert(e.out_raw, e);
        }
        Ok(Chat { state, outbox: map })
    }

    /// Work to do after a (re)start: announce a newer layer if this software gained one.
    /// Unsent outbox entries are in [`Chat::unsent`].
    pub fn after_restart(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        if self.state.status == Status::Ready && self.state.announced_layer < OUR_LAYER {
            return self.announce_layer(now, rng);
        }
        Output::default()
    }

    /// The persisted state (write it whenever an output says `state_changed`).
    pub fn state(&self) -> &ChatState {
        &self.state
    }

    /// The outbox: unacknowledged outgoing messages, by raw out number.
    pub fn outbox(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.outbox.values()
    }

    /// Outbox entries the server has not yet accepted, in seq order: send these (again) after a
    /// restart or a failed attempt.
    pub fn unsent(&self) -> Vec<Transmit> {
        self.outbox
            .values()
            .filter(|e| e.sent_date.is_none())
            .map(|e| Transmit::from_entry(e, self.state.role))
            .collect()
    }

    /// Looks up an outbox entry by random_id (for idempotent retries).
    pub fn outbox_entry(&self, random_id: i64) -> Option<&OutboxEntry> {
        self.outbox.values().find(|e| e.random_id == random_id)
    }

    /// The chat id.
    pub fn id(&self) -> i32 {
        self.state.chat_id
    }

    /// The status.
    pub fn status(&self) -> &Status {
        &self.state.status
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.state.role
    }

    /// Fingerprint of the key in use.
    pub fn key_fingerprint(&self) -> Option<KeyFingerprint> {
        self.state.key.as_ref().map(|k| k.key.fingerprint())
    }

    /// The key visualization: SHA1(initial key)[..16] || SHA256(key in use)[..20].
    pub fn visualization(&self) -> Option<[u8; 36]> {
        let initial = self.state.initial_key_sha1_16?;
        let key = &self.state.key.as_ref()?.key;
        let sha = crypto::sha256(&[key.as_bytes()]);
        let mut v = [0u8; 36];
        v[..16].copy_from_slice(&initial);
        v[16..].copy_from_slice(&sha[..20]);
        Some(v)
    }

    /// The layer written in our next message: min(ours, peer's), at least [`MIN_LAYER`].
    pub fn send_layer(&self) -> i32 {
        OUR_LAYER.min(self.state.peer_layer).max(MIN_LAYER)
    }

    // ------------------------------------------------------------------------------------------
    // Sending

    /// Sends a message on behalf of the application: normally a `decryptedMessageService`.
    /// `random_id` 0 in the message means "choose one". `decryptedMessageActionRequestKey`
    /// starts a re-key (its fields must be zero / empty: the chat chooses them) and
    /// `decryptedMessageActionAbortKey` aborts ours.
    pub fn send_message(
        &mut self,
        message: DecryptedMessage,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        match message {
            DecryptedMessage::Service(s) => {
                let rid = if s.random_id == 0 {
                    None
                } else {
                    Some(s.random_id)
                };
                self.send_service(s.action, rid, now, rng)
            }
            DecryptedMessage::DecryptedMessage(m) => {
                self.check_sendable("send a message")?;
                let rid = self.pick_random_id(Some(m.random_id).filter(|&r| r != 0), rng)?;
                let mut m = m;
                m.random_id = rid;
                self.queue(
                    DecryptedMessage::DecryptedMessage(m),
                    SendMethod::SendEncrypted,
                    true,
                    now,
                    rng,
                )
            }
            other => Err(SendError::NotAllowed {
                name: legacy_name(&other),
                why: "legacy constructors below layer 73 are not sent",
            }),
        }
    }

    /// Sends a service action on behalf of the application (see [`Chat::send_message`]).
    pub fn send_service(
        &mut self,
        action: DecryptedMessageAction,
        random_id: Option<i64>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let method = app_action_method(&action)?;
        match &action {
            DecryptedMessageAction::RequestKey(r) => {
                if r.exchange_id != 0 || !r.g_a.is_empty() {
                    return Err(SendError::InvalidField {
                        field: "exchange_id/g_a",
                        why: "chosen by the chat: leave them 0 and empty".into(),
                    });
                }
                return self.start_rekey(random_id, now, rng);
            }
            DecryptedMessageAction::AbortKey(a) => {
                return self.abort_rekey(a.exchange_id, random_id, now, rng);
            }
            _ => {}
        }
        self.check_sendable("send a service message")?;
        let ttl = match &action {
            DecryptedMessageAction::SetMessageTTL(t) => Some(t.ttl_seconds),
            _ => None,
        };
        let mut sent = self.queue_service(action, random_id, method, true, now, rng)?;
        if let Some(ttl) = ttl
            && ttl != self.state.ttl_seconds
        {
            self.state.ttl_seconds = ttl;
            sent.output.events.push(Event::TtlChanged(ttl));
        }
        Ok(sent)
    }

    fn check_sendable(&self, what: &'static str) -> Result<(), SendError> {
        if self.state.status != Status::Ready {
            return Err(SendError::WrongState {
                status: self.state.status.name(),
                what,
            });
        }
        Ok(())
    }

    fn pick_random_id(
        &self,
        wanted: Option<i64>,
        rng: &mut dyn SecureRandom,
    ) -> Result<i64, SendError> {
        let used = |id: i64| {
            id == 0
                || self.outbox.values().any(|e| e.random_id == id)
                || self.state.recent_random_ids.contains(&id)
        };
        match wanted {
            Some(id) if used(id) => Err(SendError::BadRandomId(id)),
            Some(id) => Ok(id),
            None => loop {
                let id = rng.next_i64();
                if !used(id) {
                    return Ok(id);
                }
            },
        }
    }

    fn queue_service(
        &mut self,
        action: DecryptedMessageAction,
        random_id: Option<i64>,
        method: SendMethod,
        from_app: bool,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let random_id = self.pick_random_id(random_id, rng)?;
        let msg = DecryptedMessage::Service(types::DecryptedMessageService { random_id, action });
        self.queue(msg, method, from_app, now, rng)
    }

    /// Assigns the next seq slot, wraps, encrypts with the current key, and puts the exact
    /// bytes in the outbox.
    fn queue(
        &mut self,
        message: DecryptedMessage,
        method: SendMethod,
        from_app: bool,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let random_id = message_random_id(&message);
        let size = message.to_bytes().len();
        if size > MAX_MESSAGE_BYTES {
            return Err(SendError::TooLarge { size });
        }
        if self.state.out_raw >= MAX_RAW_SEQ {
            return Err(SendError::SeqExhausted);
        }
        let Some(key) = self.state.key.as_ref().map(|k| k.key.clone()) else {
            return Err(SendError::WrongState {
                status: self.state.status.name(),
                what: "send",
            });
        };
        let role = self.state.role;
        let out_raw = self.state.out_raw;
        let in_raw = self.state.in_raw;
        let layer = self.send_layer();
        let out_seq_no = encode_seq(out_raw, role.out_parity());
        let in_seq_no = encode_seq(in_raw, role.peer().out_parity());
        let data = self.seal(&key, layer, in_seq_no, out_seq_no, message, rng);
        let entry = OutboxEntry {
            out_raw,
            in_raw,
            random_id,
            method,
            data,
            layer,
            from_app,
            created_at: now,
            sent_date: None,
        };
        self.state.out_raw += 1;
        if let Some(k) = self.state.key.as_mut() {
            k.messages = k.messages.saturating_add(1);
        }
        let transmit = Transmit::from_entry(&entry, role);
        self.outbox.insert(out_raw, entry.clone());
        let mut output = Output {
            state_changed: true,
            outbox_put: vec![entry],
            calls: vec![Call::Send(transmit)],
            ..Default::default()
        };
        if from_app {
            output.merge(self.after_action_sent(now, rng));
        }
        Ok(Sent {
            random_id,
            out_seq_no,
            in_seq_no,
            layer,
            output,
        })
    }

    fn seal(
        &self,
        key: &AuthKey,
        layer: i32,
        in_seq_no: i32,
        out_seq_no: i32,
        message: DecryptedMessage,
        rng: &mut dyn SecureRandom,
    ) -> Vec<u8> {
        let mut random_bytes = vec![0u8; RANDOM_BYTES_LEN];
        rng.fill(&mut random_bytes);
        let wrapped = types::DecryptedMessageLayer {
            random_bytes,
            layer,
            in_seq_no,
            out_seq_no,
            message,
        };
        let payload = wrapped.to_bytes();
        crypto::encrypt_message(key, self.state.role.kdf_x(), &payload, rng)
    }

    /// Bookkeeping after an application message: TTL and the re-key trigger.
    fn after_action_sent(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        self.maybe_start_rekey(now, rng)
    }

    /// Reports that the server accepted an outgoing message.
    pub fn on_sent(&mut self, random_id: i64, date: i32) -> Output {
        let Some(entry) = self.outbox.values_mut().find(|e| e.random_id == random_id) else {
            return Output::default();
        };
        if entry.sent_date.is_some() {
            return Output::default();
        }
        entry.sent_date = Some(date);
        Output {
            outbox_put: vec![entry.clone()],
            events: vec![Event::Sent { random_id, date }],
            ..Default::default()
        }
    }

    /// Reports that the server refused an outgoing message. `Retry` changes nothing (send the
    /// same bytes again later); `Fatal` closes the chat, since a used seq slot that can never be
    /// delivered leaves the peer with a permanent gap (digest §9).
    pub fn on_send_failed(&mut self, random_id: i64, failure: &SendFailure) -> Output {
        if self.outbox_entry(random_id).is_none() {
            return Output::default();
        }
        match failure {
            SendFailure::Retry => Output::default(),
            SendFailure::Fatal { error } => {
                let reason = if error == "ENCRYPTION_DECLINED" {
                    DiscardReason::Remote {
                        history_deleted: false,
                    }
                } else {
                    DiscardReason::ServerRefused {
                        error: error.clone(),
                    }
                };
                self.close(reason, None)
            }
        }
    }

    /// Closes the chat on the user's request.
    pub fn discard(&mut self, delete_history: bool) -> Output {
        if matches!(self.state.status, Status::Discarded(_)) {
            return Output::default();
        }
        self.close(
            DiscardReason::Local { delete_history },
            Some(Call::DiscardEncryption { delete_history }),
        )
    }

    fn close(&mut self, reason: DiscardReason, call: Option<Call>) -> Output {
        if matches!(self.state.status, Status::Discarded(_)) {
            return Output::default();
        }
        let status = Status::Discarded(reason);
        self.state.status = status.clone();
        self.state.handshake_secret = None;
        self.state.rekey = Rekey::Idle;
        self.state.gap_queue.clear();
        self.state.early.clear();
        self.state.resend_request = None;
        let removed: Vec<u32> = self.outbox.keys().copied().collect();
        self.outbox.clear();
        Output {
            state_changed: true,
            outbox_remove: removed,
            calls: call.into_iter().collect(),
            events: vec![Event::StatusChanged(status)],
            ..Default::default()
        }
    }

    fn fatal(&mut self, v: ProtocolViolation) -> Output {
        self.close(
            DiscardReason::Protocol(v),
            Some(Call::DiscardEncryption {
                delete_history: false,
            }),
        )
    }

    // ------------------------------------------------------------------------------------------
    // Re-keying (perfect forward secrecy)

    /// Starts a re-key now (normally automatic after 100 messages or 7 days).
    pub fn start_rekey(
        &mut self,
        random_id: Option<i64>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        self.check_sendable("start a re-key")?;
        if self.state.rekey != Rekey::Idle {
            return Err(SendError::RekeyBusy("an exchange is already running"));
        }
        if self.state.old_key.is_some() {
            return Err(SendError::RekeyBusy("the previous key is still needed"));
        }
        let pair = dh::generate_key_pair(&self.state.dh, rng, &[]).map_err(|e| {
            SendError::InvalidField {
                field: "dh",
                why: e.to_string(),
            }
        })?;
        let mut exchange_id = 0;
        while exchange_id == 0 {
            exchange_id = rng.next_i64();
        }
        let action = DecryptedMessageAction::RequestKey(types::DecryptedMessageActionRequestKey {
            exchange_id,
            g_a: pair.public,
        });
        // The secret is part of the state persisted with the RequestKey itself.
        let prev = std::mem::replace(
            &mut self.state.rekey,
            Rekey::Requested {
                exchange_id,
                secret: pair.secret,
            },
        );
        match self.queue_service(
            action,
            random_id,
            SendMethod::SendEncryptedService,
            false,
            now,
            rng,
        ) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.state.rekey = prev;
                Err(e)
            }
        }
    }

    /// Aborts our own re-key before the peer's AcceptKey has been processed. `exchange_id` 0
    /// means "the running one".
    pub fn abort_rekey(
        &mut self,
        exchange_id: i64,
        random_id: Option<i64>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        self.check_sendable("abort a re-key")?;
        let Rekey::Requested {
            exchange_id: ours, ..
        } = &self.state.rekey
        else {
            return Err(SendError::RekeyBusy(
                "no re-key of ours is waiting for the peer",
            ));
        };
        let ours = *ours;
        if exchange_id != 0 && exchange_id != ours {
            return Err(SendError::InvalidField {
                field: "exchange_id",
                why: format!("the running exchange is {ours}"),
            });
        }
        let action = DecryptedMessageAction::AbortKey(types::DecryptedMessageActionAbortKey {
            exchange_id: ours,
        });
        let prev = std::mem::replace(&mut self.state.rekey, Rekey::Idle);
        match self.queue_service(
            action,
            random_id,
            SendMethod::SendEncryptedService,
            false,
            now,
            rng,
        ) {
            Ok(mut s) => {
                s.output
                    .events
                    .push(Event::RekeyAborted { exchange_id: ours });
                Ok(s)
            }
            Err(e) => {
                self.state.rekey = prev;
                Err(e)
            }
        }
    }

    fn rekey_due(&self, now: u64) -> bool {
        let Some(k) = &self.state.key else {
            return false;
        };
        self.state.status == Status::Ready
            && self.state.rekey == Rekey::Idle
            && self.state.old_key.is_none()
            && (k.messages >= REKEY_AFTER_MESSAGES
                || now >= k.since.saturating_add(REKEY_AFTER_SECS))
    }

    fn maybe_start_rekey(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        if !self.rekey_due(now) {
            return Output::default();
        }
        match self.start_rekey(None, now, rng) {
            Ok(s) => s.output,
            Err(_) => Output::default(),
        }
    }

    /// Sends an internal service message; failures (seq exhaustion) close nothing but are rare.
    fn internal(
        &mut self,
        action: DecryptedMessageAction,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        match self.queue_service(
            action,
            None,
            SendMethod::SendEncryptedService,
            false,
            now,
            rng,
        ) {
            Ok(s) => s.output,
            Err(_) => Output::default(),
        }
    }

    fn switch_key(&mut self, new_key: AuthKey, now: u64) -> Output {
        let fp = new_key.fingerprint();
        let old = self.state.key.replace(KeyState {
            key: new_key,
            since: now,
            messages: 0,
        });
        self.state.old_key = old.map(|k| k.key);
        self.state.rekey = Rekey::Idle;
        Output {
            state_changed: true,
            events: vec![Event::KeyChanged(fp)],
            ..Default::default()
        }
    }

    fn on_request_key(
        &mut self,
        a: types::DecryptedMessageActionRequestKey,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let mut out = Output::default();
        match &self.state.rekey {
            Rekey::Requested {
                exchange_id: ours, ..
            } => {
                let ours = *ours;
                if ours > a.exchange_id {
                    // Ours wins; the peer will accept ours.
                    return out;
                }
                self.state.rekey = Rekey::Idle;
                out.state_changed = true;
                out.events.push(Event::RekeyAborted { exchange_id: ours });
                if ours == a.exchange_id {
                    // Both abandoned (digest §5.4).
                    return out;
                }
            }
            Rekey::Accepted { exchange_id, .. } => {
                if *exchange_id == a.exchange_id {
                    return out; // a repeat of the request we already answered
                }
                return self.fatal(ProtocolViolation::BadRekey(
                    "RequestKey while another exchange awaits CommitKey".into(),
                ));
            }
            Rekey::Idle => {}
        }
        if self.state.old_key.is_some() {
            // Still holding a previous key: refuse politely instead of killing the chat.
            out.merge(self.internal(
                DecryptedMessageAction::AbortKey(types::DecryptedMessageActionAbortKey {
                    exchange_id: a.exchange_id,
                }),
                now,
                rng,
            ));
            return out;
        }
        let dhc = self.state.dh.clone();
        let computed = dh::generate_key_pair(&dhc, rng, &[]).and_then(|pair| {
            dh::compute_shared_key(&dhc, &pair.secret, &a.g_a).map(|k| (k, pair.public))
        });
        match computed {
            Ok((key, g_b)) => {
                let fp = key.fingerprint();
                self.state.rekey = Rekey::Accepted {
                    exchange_id: a.exchange_id,
                    key,
                };
                out.state_changed = true;
                out.merge(self.internal(
                    DecryptedMessageAction::AcceptKey(types::DecryptedMessageActionAcceptKey {
                        exchange_id: a.exchange_id,
                        g_b,
                        key_fingerprint: fp.to_i64(),
                    }),
                    now,
                    rng,
                ));
            }
            Err(_) => {
                out.merge(self.internal(
                    DecryptedMessageAction::AbortKey(types::DecryptedMessageActionAbortKey {
                        exchange_id: a.exchange_id,
                    }),
                    now,
                    rng,
                ));
            }
        }
        out
    }

    fn on_accept_key(
        &mut self,
        a: types::DecryptedMessageActionAcceptKey,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let Rekey::Requested {
            exchange_id,
            secret,
        } = &self.state.rekey
        else {
            return Output::default(); // stale: an exchange we abandoned
        };
        if *exchange_id != a.exchange_id {
            return Output::default();
        }
        let exchange_id = *exchange_id;
        let key = dh::compute_shared_key(&self.state.dh, secret, &a.g_b);
        let key = match key {
            Ok(k) if k.fingerprint().to_i64() == a.key_fingerprint => k,
            _ => {
                // Bad g_b or fingerprint mismatch: abort the exchange, keep the chat.
                self.state.rekey = Rekey::Idle;
                let mut out = self.internal(
                    DecryptedMessageAction::AbortKey(types::DecryptedMessageActionAbortKey {
                        exchange_id,
                    }),
                    now,
                    rng,
                );
                out.state_changed = true;
                out.events.push(Event::RekeyAborted { exchange_id });
                return out;
            }
        };
        let fp = key.fingerprint();
        // CommitKey is the last message under the old key; the switch follows it.
        let mut out = self.internal(
            DecryptedMessageAction::CommitKey(types::DecryptedMessageActionCommitKey {
                exchange_id,
                key_fingerprint: fp.to_i64(),
            }),
            now,
            rng,
        );
        out.merge(self.switch_key(key, now));
        out
    }

    fn on_commit_key(
        &mut self,
        a: types::DecryptedMessageActionCommitKey,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let Rekey::Accepted { exchange_id, key } = &self.state.rekey else {
            return self.fatal(ProtocolViolation::BadRekey(
                "CommitKey without an accepted exchange".into(),
            ));
        };
        if *exchange_id != a.exchange_id || key.fingerprint().to_i64() != a.key_fingerprint {
            return self.fatal(ProtocolViolation::BadRekey(
                "CommitKey does not match the accepted exchange".into(),
            ));
        }
        let key = key.clone();
        let mut out = self.switch_key(key, now);
        // A message under the new key lets the initiator drop the old one (docs: send a Noop).
        out.merge(self.internal(
            DecryptedMessageAction::Noop(types::DecryptedMessageActionNoop {}),
            now,
            rng,
        ));
        out
    }

    fn on_abort_key(&mut self, a: types::DecryptedMessageActionAbortKey) -> Output {
        let matches = match &self.state.rekey {
            Rekey::Requested { exchange_id, .. } | Rekey::Accepted { exchange_id, .. } => {
                *exchange_id == a.exchange_id
            }
            Rekey::Idle => false,
        };
        if !matches {
            return Output::default();
        }
        self.state.rekey = Rekey::Idle;
        Output {
            state_changed: true,
            events: vec![Event::RekeyAborted {
                exchange_id: a.exchange_id,
            }],
            ..Default::default()
        }
    }

    // ------------------------------------------------------------------------------------------
    // Receiving

    fn key_for(&self, fp: &KeyFingerprint) -> Option<(AuthKey, bool)> {
        if let Some(k) = &self.state.key
            && k.key.fingerprint() == *fp
        {
            return Some((k.key.clone(), true));
        }
        if let Some(k) = &self.state.old_key
            && k.fingerprint() == *fp
        {
            return Some((k.clone(), false));
        }
        if let Rekey::Accepted { key, .. } = &self.state.rekey
            && key.fingerprint() == *fp
        {
            return Some((key.clone(), false));
        }
        None
    }

    /// Handles an encrypted message from the server. `Err` means it was dropped and nothing
    /// changed; `Ok` carries what to persist (and, for a peer that broke the protocol, the
    /// chat's closure).
    pub fn receive(
        &mut self,
        msg: &IncomingEncrypted,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, ReceiveError> {
        match &self.state.status {
            Status::Ready => {}
            Status::Discarded(_) => return Err(ReceiveError::ChatClosed),
            Status::Requested => return Err(ReceiveError::NotReady("requested")),
            Status::Waiting => {
                // The peer's first messages can overtake the update that tells us it accepted.
                if msg.data.len() > crypto::MAX_MESSAGE_DATA {
                    return Err(ReceiveError::Undecryptable);
                }
                if self.state.early.iter().any(|e| e.data == msg.data) {
                    return Err(ReceiveError::Duplicate { out_seq_no: -1 });
                }
                if self.state.early.len() >= MAX_EARLY {
                    return Err(ReceiveError::QueueFull);
                }
                self.state.early.push(EarlyMessage {
                    random_id: msg.random_id,
                    date: msg.date,
                    data: msg.data.clone(),
                });
                return Ok(Output {
                    state_changed: true,
                    ..Default::default()
                });
            }
        }
        let data = &msg.data;
        if data.len() < 8 || data.len() > crypto::MAX_MESSAGE_DATA {
            return Err(ReceiveError::Undecryptable);
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&data[..8]);
        let fp = KeyFingerprint(fp);
        let Some((key, is_current)) = self.key_for(&fp) else {
            return Err(ReceiveError::UnknownKey(fp));
        };
        let plaintext = match crypto::decrypt_message(&key, self.state.role.peer().kdf_x(), data) {
            Ok(p) => p,
            Err(DecryptError::BadLayout { .. }) => {
                return Ok(self.fatal(ProtocolViolation::MalformedMessage(
                    "authenticated message with a bad length or padding".into(),
                )));
            }
            Err(_) => return Err(ReceiveError::Undecryptable),
        };
        let parsed = match parse_layered(&plaintext) {
            Ok(p) => p,
            Err(why) => return Ok(self.fatal(ProtocolViolation::MalformedMessage(why))),
        };
        if parsed.random_bytes_len < MIN_RANDOM_BYTES {
            return Err(ReceiveError::TooFewRandomBytes(parsed.random_bytes_len));
        }
        if parsed.in_seq_no == -1 {
            return Err(ReceiveError::Unsequenced);
        }
        let peer = self.state.role.peer();
        if parsed.out_seq_no < 0
            || parsed.in_seq_no < 0
            || parsed.out_seq_no % 2 != peer.out_parity()
            || parsed.in_seq_no % 2 != self.state.role.out_parity()
        {
            return Ok(self.fatal(ProtocolViolation::BadSeqParity {
                in_seq_no: parsed.in_seq_no,
                out_seq_no: parsed.out_seq_no,
            }));
        }
        let r_out = (parsed.out_seq_no / 2) as u32;
        if r_out < self.state.in_raw || self.state.gap_queue.contains_key(&r_out) {
            return Err(ReceiveError::Duplicate {
                out_seq_no: parsed.out_seq_no,
            });
        }
        let mut out = Output::default();
        if r_out > self.state.in_raw {
            if self.state.gap_queue.len() >= MAX_GAP_QUEUE {
                return Err(ReceiveError::QueueFull);
            }
            let mut queued = QueuedMessage {
                random_id: msg.random_id,
                date: msg.date,
                plaintext,
                key_fingerprint: fp,
                resend_done: false,
            };
            // A Resend is acted on at once, even out of order (digest §4.3).
            if let Ok(DecryptedMessage::Service(s)) = &parsed.message
                && let DecryptedMessageAction::Resend(r) = &s.action
            {
                queued.resend_done = true;
                out.merge(self.on_resend(r, now, rng));
                if matches!(self.state.status, Status::Discarded(_)) {
                    return Ok(out);
                }
            }
            self.state.gap_queue.insert(r_out, queued);
            out.state_changed = true;
            out.merge(self.request_missing(now, rng, false));
            return Ok(out);
        }
        out.merge(self.process_in_order(
            parsed,
            msg.random_id,
            msg.date,
            is_current,
            false,
            now,
            rng,
        ));
        out.merge(self.drain_queue(now, rng));
        Ok(out)
    }

    fn drain_queue(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let mut out = Output::default();
        while self.state.status == Status::Ready {
            let Some(q) = self.state.gap_queue.remove(&self.state.in_raw) else {
                break;
            };
            out.state_changed = true;
            let is_current = self
                .state
                .key
                .as_ref()
                .is_some_and(|k| k.key.fingerprint() == q.key_fingerprint);
            match parse_layered(&q.plaintext) {
                Ok(p) => out.merge(self.process_in_order(
                    p,
                    q.random_id,
                    q.date,
                    is_current,
                    q.resend_done,
                    now,
                    rng,
                )),
                Err(why) => {
                    out.merge(self.fatal(ProtocolViolation::MalformedMessage(why)));
                    break;
                }
            }
        }
        if self.state.status == Status::Ready {
            // A filled gap ends our request; a remaining one needs asking for.
            if let Some(r) = &self.state.resend_request
                && self.state.in_raw > r.end_raw
            {
                self.state.resend_request = None;
                out.state_changed = true;
            }
            if !self.state.gap_queue.is_empty() {
                out.merge(self.request_missing(now, rng, false));
            }
        }
        out
    }

    /// Asks the peer for the hole before the first queued message, once per hole (again only
    /// after [`RESEND_RETRY_SECS`], or when `force`).
    fn request_missing(&mut self, now: u64, rng: &mut dyn SecureRandom, force: bool) -> Output {
        let Some((&first, _)) = self.state.gap_queue.iter().next() else {
            return Output::default();
        };
        let start = self.state.in_raw;
        if first <= start {
            return Output::default();
        }
        let end = first - 1;
        if let Some(r) = &self.state.resend_request {
            let pending = r.start_raw <= start && r.end_raw >= start;
            if pending && !force && now < r.at.saturating_add(RESEND_RETRY_SECS) {
                return Output::default();
            }
        }
        let parity = self.state.role.peer().out_parity();
        let action = DecryptedMessageAction::Resend(types::DecryptedMessageActionResend {
            start_seq_no: encode_seq(start, parity),
            end_seq_no: encode_seq(end, parity),
        });
        self.state.resend_request = Some(ResendRequest {
            start_raw: start,
            end_raw: end,
            at: now,
        });
        let mut out = self.internal(action, now, rng);
        out.state_changed = true;
        out
    }

    /// Answers the peer's Resend from the outbox with the original bytes; a slot no longer held
    /// (already acknowledged) is filled with a Noop under the same seq numbers.
    fn on_resend(
        &mut self,
        r: &types::DecryptedMessageActionResend,
        _now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let parity = self.state.role.out_parity();
        let bad = || ProtocolViolation::BadResend {
            start_seq_no: r.start_seq_no,
            end_seq_no: r.end_seq_no,
        };
        if r.start_seq_no < 0
            || r.end_seq_no < r.start_seq_no
            || r.start_seq_no % 2 != parity
            || r.end_seq_no % 2 != parity
        {
            return self.fatal(bad());
        }
        let (s, e) = ((r.start_seq_no / 2) as u32, (r.end_seq_no / 2) as u32);
        if e - s + 1 > MAX_RESEND_RANGE || e >= self.state.out_raw {
            return self.fatal(bad());
        }
        let Some(key) = self.state.key.as_ref().map(|k| k.key.clone()) else {
            return Output::default();
        };
        let role = self.state.role;
        let mut out = Output::default();
        for raw in s..=e {
            if let Some(entry) = self.outbox.get(&raw) {
                out.calls
                    .push(Call::Send(Transmit::from_entry(entry, role)));
                continue;
            }
            // Acknowledged already: fill the slot so the peer sees no hole. Its in_seq_no must lie
            // between those of its neighbours; the next held entry's (or our current) value does.
            let in_raw = self
                .outbox
                .range(raw..)
                .next()
                .map(|(_, e)| e.in_raw)
                .unwrap_or(self.state.in_raw);
            let Ok(random_id) = self.pick_random_id(None, rng) else {
                continue;
            };
            let out_seq_no = encode_seq(raw, role.out_parity());
            let noop = DecryptedMessage::Service(types::DecryptedMessageService {
                random_id,
                action: DecryptedMessageAction::Noop(types::DecryptedMessageActionNoop {}),
            });
            let data = self.seal(
                &key,
                self.send_layer(),
                encode_seq(in_raw, role.peer().out_parity()),
                out_seq_no,
                noop,
                rng,
            );
            out.calls.push(Call::Send(Transmit {
                method: SendMethod::SendEncryptedService,
                random_id,
                data,
                out_seq_no,
                in_outbox: false,
            }));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn process_in_order(
        &mut self,
        p: Layered,
        random_id: i64,
        date: i32,
        is_current_key: bool,
        resend_done: bool,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let r_in = (p.in_seq_no / 2) as u32;
        if r_in < self.state.peer_in_raw {
            return self.fatal(ProtocolViolation::InSeqNoDecreased {
                previous: self.state.peer_in_raw,
                received: r_in,
            });
        }
        if r_in > self.state.out_raw {
            return self.fatal(ProtocolViolation::InSeqNoAhead {
                received: r_in,
                sent: self.state.out_raw,
            });
        }
        if p.layer < self.state.peer_message_layer {
            return self.fatal(ProtocolViolation::LayerDecreased {
                previous: self.state.peer_message_layer,
                received: p.layer,
            });
        }
        let mut out = Output {
            state_changed: true,
            ..Default::default()
        };
        self.state.peer_message_layer = p.layer;
        self.raise_peer_layer(p.layer, &mut out);
        self.state.in_raw += 1;
        if let Some(k) = self.state.key.as_mut() {
            k.messages = k.messages.saturating_add(1);
        }
        // Acknowledgements.
        if r_in > self.state.peer_in_raw {
            self.state.peer_in_raw = r_in;
            let acked: Vec<u32> = self.outbox.range(..r_in).map(|(k, _)| *k).collect();
            let mut ids = Vec::new();
            for k in acked {
                if let Some(e) = self.outbox.remove(&k) {
                    out.outbox_remove.push(k);
                    if e.from_app {
                        ids.push(e.random_id);
                    }
                    self.state.recent_random_ids.push_back(e.random_id);
                    while self.state.recent_random_ids.len() > RECENT_RANDOM_IDS {
                        self.state.recent_random_ids.pop_front();
                    }
                }
            }
            if !ids.is_empty() {
                out.events.push(Event::Acknowledged(ids));
            }
        }
        // The peer used the new key in order: no earlier gap can need the old one.
        if is_current_key && self.state.old_key.is_some() {
            self.state.old_key = None;
        }
        match p.message {
            Err(constructor) => {
                out.events.push(Event::Unsupported {
                    random_id,
                    layer: p.layer,
                    constructor,
                });
            }
            Ok(DecryptedMessage::Service(s)) => {
                out.merge(self.on_action(s.action, s.random_id, date, resend_done, now, rng));
            }
            Ok(DecryptedMessage::Service8(s)) => {
                out.merge(self.on_action(s.action, s.random_id, date, resend_done, now, rng));
            }
            Ok(m) => {
                out.events.push(Event::Message {
                    random_id: message_random_id(&m),
                    date,
                    message: m,
                });
            }
        }
        if self.state.status == Status::Ready {
            out.merge(self.maybe_start_rekey(now, rng));
        }
        out
    }

    fn raise_peer_layer(&mut self, layer: i32, out: &mut Output) {
        if layer > self.state.peer_layer {
            self.state.peer_layer = layer;
            out.events.push(Event::PeerLayer(layer));
        }
    }

    fn on_action(
        &mut self,
        action: DecryptedMessageAction,
        random_id: i64,
        date: i32,
        resend_done: bool,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        use DecryptedMessageAction as A;
        let mut out = Output::default();
        match action {
            A::SetMessageTTL(ref t) => {
                let ttl = t.ttl_seconds.max(0);
                if ttl != self.state.ttl_seconds {
                    self.state.ttl_seconds = ttl;
                    out.events.push(Event::TtlChanged(ttl));
                }
            }
            A::NotifyLayer(ref n) => self.raise_peer_layer(n.layer, &mut out),
            A::Resend(ref r) if !resend_done => {
                out.merge(self.on_resend(r, now, rng));
            }
            A::RequestKey(r) => return self.on_request_key(r, now, rng),
            A::AcceptKey(a) => return self.on_accept_key(a, now, rng),
            A::CommitKey(c) => return self.on_commit_key(c, now, rng),
            A::AbortKey(a) => return self.on_abort_key(a),
            A::Noop(_) => {}
            _ => {}
        }
        if is_app_action(&action) {
            out.events.push(Event::Action {
                random_id,
                date,
                action,
            });
        }
        out
    }

    /// Time-driven work: the 7-day re-key and repeating an unanswered Resend request. Call it
    /// from a timer (e.g. every minute) and after a restart.
    pub fn tick(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        if self.state.status != Status::Ready {
            return Output::default();
        }
        let mut out = self.maybe_start_rekey(now, rng);
        if !self.state.gap_queue.is_empty() {
            out.merge(self.request_missing(now, rng, false));
        }
        out
    }
}

fn message_random_id(m: &DecryptedMessage) -> i64 {
    match m {
        DecryptedMessage::DecryptedMessage8(x) => x.random_id,
        DecryptedMessage::Service8(x) => x.random_id,
        DecryptedMessage::DecryptedMessage23(x) => x.random_id,
        DecryptedMessage::Service(x) => x.random_id,
        DecryptedMessage::DecryptedMessage46(x) => x.random_id,
        DecryptedMessage::DecryptedMessage(x) => x.random_id,
    }
}

fn legacy_name(m: &DecryptedMessage) -> &'static str {
    match m {
        DecryptedMessage::DecryptedMessage8(_) => "decryptedMessage8",
        DecryptedMessage::Service8(_) => "decryptedMessageService8",
        DecryptedMessage::DecryptedMessage23(_) => "decryptedMessage23",
        DecryptedMessage::DecryptedMessage46(_) => "decryptedMessage46",
        DecryptedMessage::Service(_) => "decryptedMessageService",
        DecryptedMessage::DecryptedMessage(_) => "decryptedMessage",
    }
}

/// A random positive chat id for `messages.requestEncryption` (check it is unused locally).
pub fn random_chat_id(rng: &mut dyn SecureRandom) -> i32 {
    loop {
        let v = (rng.next_u32() & 0x7fff_ffff) as i32;
        if v != 0 {
            return v;
        }
    }
}
