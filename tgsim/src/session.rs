//! The server side of MTProto 2.0 encrypted messages, sans-IO.
//!
//! [`Sessions`] owns the provisioned auth keys ([`AuthKeys`]), the server salts of each key and
//! the state of every `(auth key, session_id)` pair ([`Session`]). A connection hands it the
//! transport payload of each client packet ([`Sessions::handle_packet`]); the call decrypts and
//! checks the packet, answers the MTProto service messages itself (`ping`, `get_future_salts`,
//! `destroy_session`, ...) and reports everything else as [`Event`]s, API queries as
//! [`RpcCall`]s with the `invokeWithLayer` / `initConnection` / `invokeAfterMsg` /
//! `invokeWithoutUpdates` wrappers removed. The caller answers a call with
//! [`Session::rpc_result`] or [`Session::rpc_error`], may push server-initiated messages with
//! [`Session::push_update`], and collects the encrypted server packets with
//! [`Sessions::flush`].
//!
//! Nothing here reads a clock, draws randomness on its own or touches a socket: the time is
//! passed in as Unix milliseconds and randomness as a [`SecureRandom`].
//!
//! # Checks on client messages
//!
//! In the order they are applied (each refused message gets a `bad_msg_notification` with the
//! documented code, see [`BadMsgCode`], and is otherwise ignored: not recorded, not
//! acknowledged):
//!
//! 1. packet level ([`PacketError`], nothing is sent back): known auth key, ciphertext a
//!    non-empty multiple of 16 bytes, msg_key, `message_data_length` a multiple of 4 that fits,
//!    padding 12..=1024 bytes;
//! 2. `msg_id` divisible by 4 (18), not more than 300 s in the past (16) nor 30 s in the future
//!    (17) of the injected clock;
//! 3. server salt (48, `bad_server_salt` with the current salt). Salt 0 is accepted on the
//!    *first contact* of an auth key, i.e. until one message under that key has been accepted,
//!    when [`SessionConfig::accept_zero_salt_on_first_contact`] is set (the default); the
//!    session's `new_session_created` then tells the client the real salt;
//! 4. containers: the container's own msg_id must not repeat an earlier one (19), its seq_no
//!    must be even (34), it must parse, hold at most
//!    [`SessionConfig::max_container_messages`] messages, no nested container and only msg_ids
//!    lower than its own (64, the whole container is refused); then every inner message is
//!    checked on its own from step 2 on (the salt is the packet's);
//! 5. a msg_id already received is a *duplicate*: not processed again. If the answer to it was a
//!    content-related message the client has not acknowledged yet, that answer is re-sent (same
//!    msg_id and seq_no, which MTProto allows); otherwise the duplicate is ignored. Either way a
//!    content-related duplicate is acknowledged again and [`Event::Duplicate`] is reported;
//! 6. a msg_id at or below the oldest one the session has forgotten (the session remembers the
//!    last [`SessionConfig::remembered_msg_ids`] msg_ids) cannot be checked for duplication:
//!    message too old (20);
//! 7. seq_no parity: API queries (and `gzip_packed`) are content-related and need an odd seq_no
//!    (35), `msgs_ack` and `http_wait` are not and need an even one (34); the other service
//!    queries (`ping`, `get_future_salts`, ...) are accepted with either parity, since clients
//!    differ on whether they count as content-related;
//! 8. seq_no order against the remembered messages: a lower msg_id with a higher (or equal odd)
//!    seq_no means too low (32), a higher msg_id with a lower (or equal odd) seq_no too high (33).
//!
//! Client msg_ids need not arrive in increasing order (containers and re-sends reorder them);
//! only the checks above apply.
//!
//! # Service messages
//!
//! Handled by the session itself: `msgs_ack` (unacknowledged server messages are forgotten,
//! [`Event::Acked`]); `ping` → `pong`; `ping_delay_disconnect` → `pong` and a deadline
//! ([`Event::DisconnectDeadline`], [`Session::disconnect_deadline`]); `get_future_salts` → a bare
//! `future_salts` (at most 64, from the current salt on); `destroy_session` →
//! `destroy_session_ok` if another session of the same key existed (it is dropped), else
//! `destroy_session_none` (the current session is never destroyed this way);
//! `msg_resend_req` / `msg_resend_ans_req` → the kept content-related messages again, plus
//! `msgs_state_info` (1 = unknown, 4 = re-sent) if any is not kept; `msgs_state_req` →
//! `msgs_state_info`; `rpc_drop_answer` → `rpc_answer_dropped_running` for an unanswered query
//! (whose later answer is replaced by the same) or `rpc_answer_unknown`; `http_wait` is ignored;
//! `gzip_packed` is inflated (once, at most [`SessionConfig::max_inflated`] bytes) and its
//! content handled as if sent plainly. An authentic but unreadable content-related message gets
//! `rpc_error 400 INPUT_FETCH_ERROR` ([`Event::Malformed`]).
//!
//! # Server messages
//!
//! msg_ids come from the injected clock, are ≡ 1 (mod 4) for responses and ≡ 3 for
//! server-initiated messages (`new_session_created`, updates), and strictly increase per session (a re-sent message keeps its
//! msg_id and seq_no).
//! seq_no is `2 × (content-related messages sent before)`, plus one for a content-related message
//! (`rpc_result`, `new_session_created`, updates). Every accepted content-related client message
//! is acknowledged with `msgs_ack` in the next flush unless an answer to it goes out in the same
//! flush. Several messages are grouped in one `msg_container` per packet (up to about 1 MB).

mod salts;
pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use grammers_tl_types::{self as tl, Serializable};
use secret_core::crypto::{AuthKey, decrypt_packet, encrypt_packet, padding_len};
use secret_core::rand::SecureRandom;

pub use salts::MAX_FUTURE_SALTS;
use salts::SaltSchedule;
use wire::{Reader, WireError};

/// KDF offset for client→server messages.
pub const X_CLIENT: usize = 0;
/// KDF offset for server→client messages.
pub const X_SERVER: usize = 8;

/// Smallest plaintext: salt, session_id, msg_id, seq_no, length (32 bytes) and 12 bytes of
/// padding, rounded up to the AES block.
const MIN_PLAINTEXT: usize = 48;
/// Largest ciphertext accepted from a client (a 1 MiB message plus headers and padding).
const MAX_CIPHERTEXT: usize = (1 << 20) + 2048;
/// The largest body of one server message (grammers refuses 1 044 448 bytes and more).
pub const MAX_MESSAGE_BODY: usize = 1_044_000;
/// The most msg_ids put in one `msgs_ack`.
const MAX_ACKS_PER_MESSAGE: usize = 8192;
/// The most wrappers (`invokeWithLayer`, `initConnection`, ...) unwrapped around one query.
const MAX_WRAPPERS: usize = 8;

/// An account (user) id, as the API layer numbers them.
pub type AccountId = i64;

/// The MTProto `auth_key_id` of a key: `SHA1(key)[12..20]` as a little-endian `long`.
pub fn auth_key_id(key: &AuthKey) -> i64 {
    key.fingerprint().to_i64()
}

/// Converts a Unix time in milliseconds to the msg_id scale (seconds in the high 32 bits, the
/// fraction of the second in the low 32 bits), without the low-bit marking.
pub fn msg_id_at(unix_ms: u64) -> i64 {
    let secs = unix_ms / 1000;
    let frac = ((unix_ms % 1000) << 32) / 1000;
    let v = (secs << 32) | frac;
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Auth keys
// ---------------------------------------------------------------------------------------------

/// A provisioned auth key and the account it logs in.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    key: AuthKey,
    account: AccountId,
}

impl KeyEntry {
    /// The key.
    pub fn key(&self) -> &AuthKey {
        &self.key
    }

    /// The account the key belongs to.
    pub fn account(&self) -> AccountId {
        self.account
    }
}

/// The registry of provisioned auth keys, by `auth_key_id`.
///
/// There is no DH handshake: keys are provisioned (grammers connects with a known key).
#[derive(Clone, Debug, Default)]
pub struct AuthKeys {
    keys: HashMap<i64, KeyEntry>,
}

impl AuthKeys {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `key` for `account` and returns its `auth_key_id`. A key registered again
    /// replaces the earlier entry.
    pub fn insert(&mut self, key: AuthKey, account: AccountId) -> i64 {
        let id = auth_key_id(&key);
        self.keys.insert(id, KeyEntry { key, account });
        id
    }

    /// The entry of `auth_key_id`.
    pub fn get(&self, auth_key_id: i64) -> Option<&KeyEntry> {
        self.keys.get(&auth_key_id)
    }

    /// Forgets a key.
    pub fn remove(&mut self, auth_key_id: i64) -> Option<KeyEntry> {
        self.keys.remove(&auth_key_id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Tunables of the MTProto session layer. [`Default`] gives Telegram's documented values.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Accept salt 0 until the first message under an auth key has been accepted.
    pub accept_zero_salt_on_first_contact: bool,
    /// How far in the past a client msg_id may be, in seconds (300).
    pub max_past_secs: u64,
    /// How far in the future a client msg_id may be, in seconds (30).
    pub max_future_secs: u64,
    /// How many client msg_ids (with their seq_no) a session remembers for duplicate and
    /// seq_no checks; older ones are forgotten and messages below them are "too old" (20).
    pub remembered_msg_ids: usize,
    /// A new salt starts every this many seconds (1800).
    pub salt_period_secs: u32,
    /// A salt lives this many seconds (3600).
    pub salt_lifetime_secs: u32,
    /// `rpc_result` results of at least this many bytes are sent as `gzip_packed` when that is
    /// smaller. `None` never compresses.
    pub gzip_threshold: Option<usize>,
    /// The most messages a client container may hold (more is "invalid container", 64).
    pub max_container_messages: usize,
    /// The most bytes a client `gzip_packed` may inflate to.
    pub max_inflated: usize,
    /// How many content-related server messages a session keeps for re-sending until the
    /// client acknowledges them.
    pub max_unacked: usize,
    /// How many sessions one auth key may have; the least recently active one is dropped to
    /// make room for a new one.
    pub max_sessions_per_key: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            accept_zero_salt_on_first_contact: true,
            max_past_secs: 300,
            max_future_secs: 30,
            remembered_msg_ids: 2048,
            salt_period_secs: 1800,
            salt_lifetime_secs: 3600,
            gzip_threshold: Some(1024),
            max_container_messages: 1024,
            max_inflated: 1 << 20,
            max_unacked: 1024,
            max_sessions_per_key: 64,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a client packet was refused as a whole. Nothing is sent back for these; the connection
/// decides whether to close (see [`PacketError::transport_error`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than `auth_key_id`, `msg_key` and the smallest encrypted message.
    TooShort {
        /// The packet length.
        len: usize,
    },
    /// `auth_key_id` 0: an unencrypted message (DH handshake), which this server does not do.
    Unencrypted,
    /// No provisioned key has this `auth_key_id`.
    UnknownAuthKey {
        /// The id found in the packet.
        auth_key_id: i64,
    },
    /// The encrypted part is not a multiple of 16 bytes.
    NotBlockAligned {
        /// Its length.
        len: usize,
    },
    /// Larger than any message this server accepts.
    TooLong {
        /// The packet length.
        len: usize,
    },
    /// The msg_key does not match the decrypted data (forged, corrupted or another key).
    BadMsgKey {
        /// The key the packet named.
        auth_key_id: i64,
    },
    /// Authentic, but `message_data_length` is negative, not a multiple of 4, longer than the
    /// data, or leaves a padding outside 12..=1024 bytes.
    BadLength {
        /// The declared `message_data_length`.
        declared_len: i32,
        /// The decrypted plaintext length.
        plaintext_len: usize,
    },
}

impl PacketError {
    /// The transport error code the connection should send before closing, if any: -404 for a
    /// packet under an unknown auth key (or none at all), as Telegram does.
    pub fn transport_error(&self) -> Option<i32> {
        match self {
            PacketError::UnknownAuthKey { .. } | PacketError::Unencrypted => Some(-404),
            _ => None,
        }
    }
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::TooShort { len } => write!(f, "packet too short ({len} bytes)"),
            PacketError::Unencrypted => f.write_str("unencrypted packet (auth_key_id 0)"),
            PacketError::UnknownAuthKey { auth_key_id } => {
                write!(f, "unknown auth_key_id {auth_key_id:#018x}")
            }
            PacketError::NotBlockAligned { len } => {
                write!(
                    f,
                    "encrypted data of {len} bytes is not a multiple of 16 bytes"
                )
            }
            PacketError::TooLong { len } => write!(f, "packet too long ({len} bytes)"),
            PacketError::BadMsgKey { auth_key_id } => {
                write!(f, "msg_key mismatch under auth_key_id {auth_key_id:#018x}")
            }
            PacketError::BadLength {
                declared_len,
                plaintext_len,
            } => write!(
                f,
                "message_data_length {declared_len} does not fit a {plaintext_len}-byte \
                 plaintext with 12..=1024 bytes of padding"
            ),
        }
    }
}

impl std::error::Error for PacketError {}

/// Why an answer from the caller was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// There is no unanswered query with this msg_id in the session.
    NotPending {
        /// The msg_id given.
        req_msg_id: i64,
    },
    /// A TL object must be a non-empty multiple of 4 bytes.
    Misaligned {
        /// Its length.
        len: usize,
    },
    /// Larger than [`MAX_MESSAGE_BODY`] even compressed.
    TooLarge {
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::NotPending { req_msg_id } => {
                write!(f, "no unanswered query with msg_id {req_msg_id}")
            }
            AnswerError::Misaligned { len } => {
                write!(
                    f,
                    "a TL object of {len} bytes is not a non-empty multiple of 4"
                )
            }
            AnswerError::TooLarge { len } => {
                write!(f, "a {len}-byte message exceeds {MAX_MESSAGE_BODY} bytes")
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// The documented `bad_msg_notification` error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BadMsgCode {
    /// 16: msg_id too low (more than 300 s in the past).
    MsgIdTooLow,
    /// 17: msg_id too high (more than 30 s in the future).
    MsgIdTooHigh,
    /// 18: the two low bits of msg_id are not zero.
    MsgIdNotDivisibleBy4,
    /// 19: a container's msg_id repeats a message already received.
    ContainerMsgIdReused,
    /// 20: the message is too old to tell whether it was received.
    MessageTooOld,
    /// 32: seq_no too low.
    SeqNoTooLow,
    /// 33: seq_no too high.
    SeqNoTooHigh,
    /// 34: an even seq_no expected (not content-related), odd received.
    EvenSeqNoExpected,
    /// 35: an odd seq_no expected (content-related), even received.
    OddSeqNoExpected,
    /// 48: wrong server salt (sent as `bad_server_salt`).
    BadServerSalt,
    /// 64: invalid container.
    InvalidContainer,
}

impl BadMsgCode {
    /// The numeric `error_code`.
    pub fn code(self) -> i32 {
        match self {
            BadMsgCode::MsgIdTooLow => 16,
            BadMsgCode::MsgIdTooHigh => 17,
            BadMsgCode::MsgIdNotDivisibleBy4 => 18,
            BadMsgCode::ContainerMsgIdReused => 19,
            BadMsgCode::MessageTooOld => 20,
            BadMsgCode::SeqNoTooLow => 32,
            BadMsgCode::SeqNoTooHigh => 33,
            BadMsgCode::EvenSeqNoExpected => 34,
            BadMsgCode::OddSeqNoExpected => 35,
            BadMsgCode::BadServerSalt => 48,
            BadMsgCode::InvalidContainer => 64,
        }
    }
}

impl fmt::Display for BadMsgCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", self.code())
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// The `initConnection` fields of a query.
#[derive(Clone, Debug, PartialEq)]
pub struct InitConnection {
    /// `api_id`.
    pub api_id: i32,
    /// `device_model`.
    pub device_model: String,
    /// `system_version`.
    pub system_version: String,
    /// `app_version`.
    pub app_version: String,
    /// `system_lang_code`.
    pub system_lang_code: String,
    /// `lang_pack`.
    pub lang_pack: String,
    /// `lang_code`.
    pub lang_code: String,
    /// `proxy` as `(address, port)`, if given.
    pub proxy: Option<(String, i32)>,
    /// `params` (a boxed `JSONValue`) as raw TL, if given.
    pub params: Option<Vec<u8>>,
}

/// An API query for the caller to answer with [`Session::rpc_result`] or
/// [`Session::rpc_error`].
#[derive(Clone, Debug, PartialEq)]
pub struct RpcCall {
    /// The msg_id of the client message (the `req_msg_id` of the answer).
    pub msg_id: i64,
    /// Its seq_no.
    pub seq_no: i32,
    /// The constructor id of the inner query.
    pub constructor: u32,
    /// The inner query, constructor included, wrappers removed (and inflated if it came as
    /// `gzip_packed`).
    pub query: Vec<u8>,
    /// `invokeAfterMsg`: the query must run after this one.
    pub after_msg: Option<i64>,
    /// `invokeAfterMsgs`: the query must run after these.
    pub after_msgs: Vec<i64>,
    /// `invokeWithLayer`: the layer the client speaks.
    pub layer: Option<i32>,
    /// `initConnection`, if the query carried it.
    pub init_connection: Option<Box<InitConnection>>,
    /// `invokeWithoutUpdates`: send no updates for this query.
    pub without_updates: bool,
}

/// What the session reports about a packet it accepted.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The session's first message (or one with a lower msg_id than its first) arrived;
    /// `new_session_created` is queued.
    NewSession {
        /// The lowest msg_id seen in the session.
        first_msg_id: i64,
        /// The session's `unique_id`.
        unique_id: i64,
    },
    /// An API query to answer.
    RpcCall(RpcCall),
    /// The client acknowledged these server messages.
    Acked {
        /// The acknowledged server msg_ids.
        msg_ids: Vec<i64>,
    },
    /// `ping_delay_disconnect`: close the connection at this Unix time (ms) unless another such
    /// ping arrives first. Also readable with [`Session::disconnect_deadline`].
    DisconnectDeadline {
        /// The deadline, Unix milliseconds.
        at_ms: u64,
    },
    /// `destroy_session` was handled.
    SessionDestroyed {
        /// The session named.
        session_id: i64,
        /// Whether it existed (and was destroyed).
        existed: bool,
    },
    /// A message was refused with a `bad_msg_notification` / `bad_server_salt`.
    BadMessage {
        /// The refused msg_id.
        msg_id: i64,
        /// Why.
        code: BadMsgCode,
    },
    /// A msg_id already received came again.
    Duplicate {
        /// The msg_id.
        msg_id: i64,
        /// Whether the cached answer was queued again.
        resent: bool,
    },
    /// An authentic message whose TL could not be read. A content-related one (odd seq_no)
    /// is answered with `rpc_error 400 INPUT_FETCH_ERROR`; others are ignored.
    Malformed {
        /// The msg_id.
        msg_id: i64,
        /// What was wrong.
        error: WireError,
    },
}

/// The result of [`Sessions::handle_packet`].
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The session the packet belongs to.
    pub session: SessionKey,
    /// The account of its auth key.
    pub account: AccountId,
    /// What happened, in order.
    pub events: Vec<Event>,
}

/// Identifies a session: the auth key and the client's session_id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// The auth key's id.
    pub auth_key_id: i64,
    /// The client-chosen session_id.
    pub session_id: i64,
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

/// The state of a query the client sent, for answering and for duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Reported to the caller, not answered yet; `dropped` after `rpc_drop_answer`.
    Pending { dropped: bool },
    /// The answer is in the outbox.
    Queued,
    /// The answer went out with this msg_id.
    Sent { msg_id: i64 },
}

/// A message waiting in the outbox.
#[derive(Clone, Debug)]
struct OutMsg {
    body: Vec<u8>,
    content: bool,
    /// Server-initiated (msg_id ≡ 3 mod 4) rather than a response (≡ 1).
    notification: bool,
    /// The client msg_id this answers (an answer acknowledges it).
    answers: Option<i64>,
    /// Re-send of an earlier message: its msg_id and seq_no.
    resend: Option<(i64, i32)>,
}

/// A content-related server message kept until the client acknowledges it.
#[derive(Clone, Debug)]
struct SentMsg {
    seq_no: i32,
    body: Vec<u8>,
}

/// Seq_no parity rule of a client message, by constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parity {
    Content,
    NotContent,
    Either,
}

fn parity_of(constructor: u32) -> Parity {
    use wire::*;
    match constructor {
        MSGS_ACK | HTTP_WAIT | MSG_CONTAINER => Parity::NotContent,
        PING
        | PING_DELAY_DISCONNECT
        | GET_FUTURE_SALTS
        | DESTROY_SESSION
        | MSG_RESEND_REQ
        | MSG_RESEND_ANS_REQ
        | MSGS_STATE_REQ
        | RPC_DROP_ANSWER
        | MSG_COPY => Parity::Either,
        _ => Parity::Content,
    }
}

/// One `(auth key, session_id)` session.
#[derive(Debug)]
pub struct Session {
    key: AuthKey,
    id: SessionKey,
    account: AccountId,
    unique_id: i64,
    first_msg_id: Option<i64>,
    /// Accepted client messages: msg_id → seq_no.
    received: BTreeMap<i64, i32>,
    /// Client msg_ids at or below this were forgotten.
    forgotten_below: Option<i64>,
    answers: HashMap<i64, Answer>,
    pending_acks: Vec<i64>,
    last_msg_id: i64,
    content_sent: i32,
    outbox: Vec<OutMsg>,
    sent: BTreeMap<i64, SentMsg>,
    acked_total: u64,
    layer: Option<i32>,
    init_connection: Option<InitConnection>,
    disconnect_at_ms: Option<u64>,
    last_seen_ms: u64,
    remembered: usize,
    max_unacked: usize,
    gzip_threshold: Option<usize>,
}

impl Session {
    fn new(
        key: AuthKey,
        id: SessionKey,
        account: AccountId,
        unique_id: i64,
        cfg: &SessionConfig,
    ) -> Self {
        Session {
            key,
            id,
            account,
            unique_id,
            first_msg_id: None,
            received: BTreeMap::new(),
            forgotten_below: None,
            answers: HashMap::new(),
            pending_acks: Vec::new(),
            last_msg_id: 0,
            content_sent: 0,
            outbox: Vec::new(),
            sent: BTreeMap::new(),
            acked_total: 0,
            layer: None,
            init_connection: None,
            disconnect_at_ms: None,
            last_seen_ms: 0,
            remembered: cfg.remembered_msg_ids.max(1),
            max_unacked: cfg.max_unacked,
            gzip_threshold: cfg.gzip_threshold,
        }
    }

    /// The session's key (auth key id and session_id).
    pub fn key(&self) -> SessionKey {
        self.id
    }

    /// The account logged in with the auth key.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The `unique_id` announced in `new_session_created`.
    pub fn unique_id(&self) -> i64 {
        self.unique_id
    }

    /// The lowest msg_id accepted in this session.
    pub fn first_msg_id(&self) -> Option<i64> {
        self.first_msg_id
    }

    /// The layer of the last `invokeWithLayer`.
    pub fn layer(&self) -> Option<i32> {
        self.layer
    }

    /// The fields of the last `initConnection`.
    pub fn init_connection(&self) -> Option<&InitConnection> {
        self.init_connection.as_ref()
    }

    /// The `ping_delay_disconnect` deadline (Unix ms), if one is running.
    pub fn disconnect_deadline(&self) -> Option<u64> {
        self.disconnect_at_ms
    }

    /// When the session last received a packet (Unix ms).
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms
    }

    /// The msg_ids of queries reported and not answered yet.
    pub fn pending_calls(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .answers
            .iter()
            .filter(|(_, a)| matches!(a, Answer::Pending { .. }))
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }

    /// How many content-related server messages await the client's acknowledgment.
    pub fn unacked_count(&self) -> usize {
        self.sent.len()
    }

    /// How many server messages the client has acknowledged so far.
    pub fn acked_total(&self) -> u64 {
        self.acked_total
    }

    /// Whether [`Sessions::flush`] would produce a packet.
    pub fn has_outgoing(&self) -> bool {
        !self.outbox.is_empty() || !self.pending_acks.is_empty()
    }

    /// Answers the query `req_msg_id` with `result` (a serialised boxed TL object), as
    /// `rpc_result`, gzip-compressed when large. After `rpc_drop_answer` the client gets
    /// `rpc_answer_dropped_running` instead.
    pub fn rpc_result(&mut self, req_msg_id: i64, result: &[u8]) -> Result<(), AnswerError> {
        if result.is_empty() || !result.len().is_multiple_of(4) {
            return Err(AnswerError::Misaligned { len: result.len() });
        }
        let dropped = match self.answers.get(&req_msg_id) {
            Some(Answer::Pending { dropped }) => *dropped,
            _ => return Err(AnswerError::NotPending { req_msg_id }),
        };
        let body = if dropped {
            wire::rpc_result(
                req_msg_id,
                &tl::enums::RpcDropAnswer::RpcAnswerDroppedRunning.to_bytes(),
            )
        } else {
            let packed = self
                .gzip_threshold
                .filter(|&t| result.len() >= t)
                .and_then(|_| wire::gzip_packed(result))
                .filter(|p| p.len() < result.len());
            wire::rpc_result(req_msg_id, packed.as_deref().unwrap_or(result))
        };
        if body.len() > MAX_MESSAGE_BODY {
            return Err(AnswerError::TooLarge { len: body.len() });
        }
        self.answers.insert(req_msg_id, Answer::Queued);
        self.outbox.push(OutMsg {
            body,
            content: true,
            notification: false,
            answers: Some(req_msg_id),
            resend: None,
        });
        Ok(())
    }

    /// Answers the query `req_msg_id` with `rpc_error error_code error_message` (e.g.
    /// `420, "FLOOD_WAIT_5"`).
    pub fn rpc_error(
        &mut self,
        req_msg_id: i64,
        error_code: i32,
        error_message: &str,
    ) -> Result<(), AnswerError> {
        let err = tl::enums::RpcError::Error(tl::types::RpcError {
            error_code,
            error_message: error_message.to_owned(),
        })
        .to_bytes();
        // Errors are never compressed (clients do not expect that).
        let threshold = self.gzip_threshold.take();
        let r = self.rpc_result(req_msg_id, &err);
        self.gzip_threshold = threshold;
        r
    }

    /// Queues a server-initiated content-related message (an `Updates` object, serialised).
    pub fn push_update(&mut self, update: &[u8]) -> Result<(), AnswerError> {
        if update.is_empty() || !update.len().is_multiple_of(4) {
            return Err(AnswerError::Misaligned { len: update.len() });
        }
        if update.len() > MAX_MESSAGE_BODY {
            return Err(AnswerError::TooLarge { len: update.len() });
        }
        self.outbox.push(OutMsg {
            body: update.to_vec(),
            content: true,
            notification: true,
            answers: None,
            resend: None,
        });
        Ok(())
    }

    fn queue_response(&mut self, req_msg_id: Option<i64>, body: Vec<u8>, content: bool) {
        self.outbox.push(OutMsg {
            body,
            content,
            notification: false,
            answers: req_msg_id,
            resend: None,
        });
    }

    fn next_msg_id(&mut self, now_ms: u64, notification: bool) -> i64 {
        let low = if notification { 3 } else { 1 };
        let mut id = (msg_id_at(now_ms) & !3) | low;
        if id <= self.last_msg_id {
            id = ((self.last_msg_id & !3).saturating_add(4)) | low;
        }
        self.last_msg_id = id;
        id
    }

    fn next_seq_no(&mut self, content: bool) -> i32 {
        let base = self.content_sent.saturating_mul(2);
        if content {
            self.content_sent = self.content_sent.saturating_add(1);
            base.saturating_add(1)
        } else {
            base
        }
    }

    fn record(&mut self, msg_id: i64, seq_no: i32) {
        self.received.insert(msg_id, seq_no);
        while self.received.len() > self.remembered {
            let Some((old, _)) = self.received.pop_first() else {
                break;
            };
            self.forgotten_below = Some(self.forgotten_below.map_or(old, |f| f.max(old)));
            if !matches!(self.answers.get(&old), Some(Answer::Pending { .. })) {
                self.answers.remove(&old);
            }
        }
    }

    fn seq_order(&self, msg_id: i64, seq_no: i32) -> Option<BadMsgCode> {
        let odd = seq_no & 1 == 1;
        if let Some((_, &lower)) = self.received.range(..msg_id).next_back()
            && (lower > seq_no || (lower == seq_no && odd))
        {
            return Some(BadMsgCode::SeqNoTooLow);
        }
        if let Some((_, &higher)) = self.received.range(msg_id.saturating_add(1)..).next()
            && (higher < seq_no || (higher == seq_no && odd))
        {
            return Some(BadMsgCode::SeqNoTooHigh);
        }
        None
    }

    /// Builds the encrypted packets for everything queued.
    fn flush(&mut self, salt: i64, now_ms: u64, rng: &mut dyn SecureRandom) -> Vec<Vec<u8>> {
        let outbox = std::mem::take(&mut self.outbox);
        let answered: HashSet<i64> = outbox.iter().filter_map(|m| m.answers).collect();
        let mut acks: Vec<i64> = std::mem::take(&mut self.pending_acks)
            .into_iter()
            .filter(|id| !answered.contains(id))
            .collect();
        acks.sort_unstable();
        acks.dedup();

        let mut queue: Vec<OutMsg> = acks
            .chunks(MAX_ACKS_PER_MESSAGE)
            .map(|chunk| OutMsg {
                body: tl::enums::MsgsAck::Ack(tl::types::MsgsAck {
                    msg_ids: chunk.to_vec(),
                })
                .to_bytes(),
                content: false,
                notification: false,
                answers: None,
                resend: None,
            })
            .collect();
        queue.extend(outbox);

        // Group into packets of at most ~1 MB and 1000 messages.
        let mut groups: Vec<Vec<OutMsg>> = Vec::new();
        let mut size = 0usize;
        for m in queue {
            let need = m.body.len() + 16;
            match groups.last_mut() {
                Some(g) if g.len() < 1000 && size + need <= MAX_MESSAGE_BODY - 8 => {
                    size += need;
                    g.push(m);
                }
                _ => {
                    size = need;
                    groups.push(vec![m]);
                }
            }
        }

        let mut packets = Vec::with_capacity(groups.len());
        for group in groups {
            let mut numbered: Vec<(i64, i32, Vec<u8>)> = Vec::with_capacity(group.len());
            let mut any_response = false;
            for m in group {
                any_response |= !m.notification;
                let (msg_id, seq_no) = match m.resend {
                    Some(x) => x,
                    None => (
                        self.next_msg_id(now_ms, m.notification),
                        self.next_seq_no(m.content),
                    ),
                };
                if m.content && m.resend.is_none() {
                    self.sent.insert(
                        msg_id,
                        SentMsg {
                            seq_no,
                            body: m.body.clone(),
                        },
                    );
                    while self.sent.len() > self.max_unacked {
                        self.sent.pop_first();
                    }
                }
                if let Some(req) = m.answers
                    && let Some(a) = self.answers.get_mut(&req)
                    && *a == Answer::Queued
                {
                    *a = Answer::Sent { msg_id };
                }
                numbered.push((msg_id, seq_no, m.body));
            }
            let (msg_id, seq_no, body) = if numbered.len() == 1 {
                match numbered.pop() {
                    Some(one) => one,
                    None => continue,
                }
            } else {
                let refs: Vec<(i64, i32, &[u8])> = numbered
                    .iter()
                    .map(|(a, b, c)| (*a, *b, c.as_slice()))
                    .collect();
                let body = wire::write_container(&refs);
                (
                    self.next_msg_id(now_ms, !any_response),
                    self.next_seq_no(false),
                    body,
                )
            };
            if let Some(p) = self.encrypt(salt, msg_id, seq_no, &body, rng) {
                packets.push(p);
            }
        }
        packets
    }

    fn encrypt(
        &self,
        salt: i64,
        msg_id: i64,
        seq_no: i32,
        body: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Option<Vec<u8>> {
        let len = i32::try_from(body.len()).ok()?;
        let mut plain = Vec::with_capacity(32 + body.len() + 1024);
        plain.extend_from_slice(&salt.to_le_bytes());
        plain.extend_from_slice(&self.id.session_id.to_le_bytes());
        plain.extend_from_slice(&msg_id.to_le_bytes());
        plain.extend_from_slice(&seq_no.to_le_bytes());
        plain.extend_from_slice(&len.to_le_bytes());
        plain.extend_from_slice(body);
        let pad = padding_len(plain.len());
        let start = plain.len();
        plain.resize(start + pad, 0);
        rng.fill(&mut plain[start..]);
        let (msg_key, ct) = encrypt_packet(&self.key, X_SERVER, &plain).ok()?;
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&self.id.auth_key_id.to_le_bytes());
        out.extend_from_slice(&msg_key);
        out.extend_from_slice(&ct);
        Some(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Processing of one packet
// ---------------------------------------------------------------------------------------------

struct Proc<'a> {
    s: &'a mut Session,
    cfg: &'a SessionConfig,
    salts: &'a mut SaltSchedule,
    rng: &'a mut dyn SecureRandom,
    now_ms: u64,
    events: Vec<Event>,
    /// `destroy_session` requests: (request msg_id, session to destroy).
    destroy: Vec<(i64, i64)>,
}

impl Proc<'_> {
    fn now_s(&self) -> i64 {
        i64::try_from(self.now_ms / 1000).unwrap_or(i64::MAX)
    }

    fn current_salt(&mut self) -> i64 {
        let now = self.now_s();
        self.salts.current(
            now,
            i64::from(self.cfg.salt_period_secs),
            i64::from(self.cfg.salt_lifetime_secs),
            self.rng,
        )
    }

    fn time_check(&self, msg_id: i64) -> Option<BadMsgCode> {
        if msg_id & 3 != 0 {
            return Some(BadMsgCode::MsgIdNotDivisibleBy4);
        }
        let low = msg_id_at(
            self.now_ms
                .saturating_sub(self.cfg.max_past_secs.saturating_mul(1000)),
        );
        let high = msg_id_at(
            self.now_ms
                .saturating_add(self.cfg.max_future_secs.saturating_mul(1000)),
        );
        if msg_id < low {
            Some(BadMsgCode::MsgIdTooLow)
        } else if msg_id > high {
            Some(BadMsgCode::MsgIdTooHigh)
        } else {
            None
        }
    }

    fn bad_msg(&mut self, msg_id: i64, seq_no: i32, code: BadMsgCode) {
        let body = tl::enums::BadMsgNotification::Notification(tl::types::BadMsgNotification {
            bad_msg_id: msg_id,
            bad_msg_seqno: seq_no,
            error_code: code.code(),
        })
        .to_bytes();
        self.s.queue_response(None, body, false);
        self.events.push(Event::BadMessage { msg_id, code });
    }

    fn note_first(&mut self, msg_id: i64) {
        if self.s.first_msg_id.is_some_and(|f| f <= msg_id) {
            return;
        }
        self.s.first_msg_id = Some(msg_id);
        let server_salt = self.current_salt();
        let body = tl::enums::NewSession::Created(tl::types::NewSessionCreated {
            first_msg_id: msg_id,
            unique_id: self.s.unique_id,
            server_salt,
        })
        .to_bytes();
        self.s.outbox.push(OutMsg {
            body,
            content: true,
            notification: true,
            answers: None,
            resend: None,
        });
        self.events.push(Event::NewSession {
            first_msg_id: msg_id,
            unique_id: self.s.unique_id,
        });
    }

    fn top_level(&mut self, salt: i64, msg_id: i64, seq_no: i32, body: &[u8]) {
        if let Some(code) = self.time_check(msg_id) {
            self.bad_msg(msg_id, seq_no, code);
            return;
        }
        let first_contact =
            salt == 0 && self.cfg.accept_zero_salt_on_first_contact && !self.salts.contacted;
        let now = self.now_s();
        if !first_contact && !self.salts.is_valid(salt, now) {
            let new_server_salt = self.current_salt();
            let body = tl::enums::BadMsgNotification::BadServerSalt(tl::types::BadServerSalt {
                bad_msg_id: msg_id,
                bad_msg_seqno: seq_no,
                error_code: BadMsgCode::BadServerSalt.code(),
                new_server_salt,
            })
            .to_bytes();
            self.s.queue_response(None, body, false);
            self.events.push(Event::BadMessage {
                msg_id,
                code: BadMsgCode::BadServerSalt,
            });
            return;
        }
        self.salts.contacted = true;
        if wire::constructor_of(body) == Ok(wire::MSG_CONTAINER) {
            self.container(msg_id, seq_no, body);
        } else {
            self.note_first(msg_id);
            self.message(msg_id, seq_no, body);
        }
    }

    fn container(&mut self, msg_id: i64, seq_no: i32, body: &[u8]) {
        if self.s.received.contains_key(&msg_id) {
            self.bad_msg(msg_id, seq_no, BadMsgCode::ContainerMsgIdReused);
            return;
        }
        if self.s.forgotten_below.is_some_and(|f| msg_id <= f) {
            self.bad_msg(msg_id, seq_no, BadMsgCode::MessageTooOld);
            return;
        }
        if seq_no & 1 == 1 {
            self.bad_msg(msg_id, seq_no, BadMsgCode::EvenSeqNoExpected);
            return;
        }
        if let Some(code) = self.s.seq_order(msg_id, seq_no) {
            self.bad_msg(msg_id, seq_no, code);
            return;
        }
        let messages = match wire::parse_container(body, self.cfg.max_container_messages) {
            Ok(m) => m,
            Err(_) => {
                self.bad_msg(msg_id, seq_no, BadMsgCode::InvalidContainer);
                return;
            }
        };
        let invalid = messages
            .iter()
            .any(|m| m.msg_id >= msg_id || wire::constructor_of(m.body) == Ok(wire::MSG_CONTAINER));
        if invalid {
            self.bad_msg(msg_id, seq_no, BadMsgCode::InvalidContainer);
            return;
        }
        self.s.record(msg_id, seq_no);
        let first = messages.iter().map(|m| m.msg_id).min().unwrap_or(msg_id);
        self.note_first(first);
        for m in messages {
            if let Some(code) = self.time_check(m.msg_id) {
                self.bad_msg(m.msg_id, m.seq_no, code);
                continue;
            }
            self.message(m.msg_id, m.seq_no, m.body);
        }
    }

    fn duplicate(&mut self, msg_id: i64, seq_no: i32) {
        let mut resent = false;
        if let Some(Answer::Sent { msg_id: answer }) = self.s.answers.get(&msg_id).copied()
            && let Some(sent) = self.s.sent.get(&answer)
        {
            let msg = OutMsg {
                body: sent.body.clone(),
                content: true,
                notification: false,
                answers: None,
                resend: Some((answer, sent.seq_no)),
            };
            self.s.outbox.push(msg);
            resent = true;
        }
        if seq_no & 1 == 1 {
            self.s.pending_acks.push(msg_id);
        }
        self.events.push(Event::Duplicate { msg_id, resent });
    }

    fn message(&mut self, msg_id: i64, seq_no: i32, body: &[u8]) {
        if self.s.received.contains_key(&msg_id) {
            self.duplicate(msg_id, seq_no);
            return;
        }
        if self.s.forgotten_below.is_some_and(|f| msg_id <= f) {
            self.bad_msg(msg_id, seq_no, BadMsgCode::MessageTooOld);
            return;
        }
        let constructor = match wire::constructor_of(body) {
            Ok(c) => c,
            Err(error) => {
                self.events.push(Event::Malformed { msg_id, error });
                return;
            }
        };
        let odd = seq_no & 1 == 1;
        match parity_of(constructor) {
            Parity::Content if !odd => {
                self.bad_msg(msg_id, seq_no, BadMsgCode::OddSeqNoExpected);
                return;
            }
            Parity::NotContent if odd => {
                self.bad_msg(msg_id, seq_no, BadMsgCode::EvenSeqNoExpected);
                return;
            }
            _ => {}
        }
        if let Some(code) = self.s.seq_order(msg_id, seq_no) {
            self.bad_msg(msg_id, seq_no, code);
            return;
        }
        self.s.record(msg_id, seq_no);
        if odd {
            self.s.pending_acks.push(msg_id);
        }
        if let Err(error) = self.dispatch(msg_id, seq_no, body, false) {
            // A content-related message expects an answer: tell the client it was unreadable.
            if odd && !self.s.answers.contains_key(&msg_id) {
                self.s
                    .answers
                    .insert(msg_id, Answer::Pending { dropped: false });
                // Cannot fail: the query was just marked pending and the error is aligned.
                let _ = self.s.rpc_error(msg_id, 400, "INPUT_FETCH_ERROR");
            }
            self.events.push(Event::Malformed { msg_id, error });
        }
    }

    fn dispatch(
        &mut self,
        msg_id: i64,
        seq_no: i32,
        body: &[u8],
        inflated: bool,
    ) -> Result<(), WireError> {
        use wire::*;
        let mut r = Reader::new(body);
        let constructor = r.u32()?;
        match constructor {
            MSGS_ACK => {
                let ids = r.vec_i64()?;
                for id in &ids {
                    if self.s.sent.remove(id).is_some() {
                        self.s.acked_total += 1;
                    }
                }
                self.events.push(Event::Acked { msg_ids: ids });
            }
            PING => {
                let ping_id = r.i64()?;
                self.pong(msg_id, ping_id);
            }
            PING_DELAY_DISCONNECT => {
                let ping_id = r.i64()?;
                let delay = r.i32()?;
                let delay_ms = u64::try_from(delay).unwrap_or(0).saturating_mul(1000);
                let at_ms = self.now_ms.saturating_add(delay_ms);
                self.s.disconnect_at_ms = Some(at_ms);
                self.events.push(Event::DisconnectDeadline { at_ms });
                self.pong(msg_id, ping_id);
            }
            GET_FUTURE_SALTS => {
                let num = usize::try_from(r.i32()?).unwrap_or(1);
                let now = self.now_s();
                let salts = self.salts.future(
                    now,
                    num,
                    i64::from(self.cfg.salt_period_secs),
                    i64::from(self.cfg.salt_lifetime_secs),
                    self.rng,
                );
                let body = tl::enums::FutureSalts::Salts(tl::types::FutureSalts {
                    req_msg_id: msg_id,
                    now: i32::try_from(now).unwrap_or(i32::MAX),
                    salts: tl::RawVec(
                        salts
                            .iter()
                            .map(|s| tl::types::FutureSalt {
                                valid_since: i32::try_from(s.valid_since).unwrap_or(i32::MAX),
                                valid_until: i32::try_from(s.valid_until).unwrap_or(i32::MAX),
                                salt: s.salt,
                            })
                            .collect(),
                    ),
                })
                .to_bytes();
                self.s.queue_response(Some(msg_id), body, false);
            }
            DESTROY_SESSION => {
                let target = r.i64()?;
                self.destroy.push((msg_id, target));
            }
            MSG_RESEND_REQ | MSG_RESEND_ANS_REQ => {
                let ids = r.vec_i64()?;
                self.resend(msg_id, &ids);
            }
            MSGS_STATE_REQ => {
                let ids = r.vec_i64()?;
                let info: Vec<u8> = ids.iter().map(|&id| self.state_of(id)).collect();
                self.state_info(msg_id, info);
            }
            HTTP_WAIT => {}
            RPC_DROP_ANSWER => {
                let req = r.i64()?;
                let answer = match self.s.answers.get_mut(&req) {
                    Some(Answer::Pending { dropped }) => {
                        *dropped = true;
                        tl::enums::RpcDropAnswer::RpcAnswerDroppedRunning
                    }
                    _ => tl::enums::RpcDropAnswer::RpcAnswerUnknown,
                };
                let body = wire::rpc_result(msg_id, &answer.to_bytes());
                self.s.answers.insert(msg_id, Answer::Queued);
                self.s.queue_response(Some(msg_id), body, true);
            }
            GZIP_PACKED => {
                if inflated {
                    return Err(WireError::TooDeep);
                }
                let inner = gunzip_packed(body, self.cfg.max_inflated)?;
                if constructor_of(&inner)? == MSG_CONTAINER {
                    return Err(WireError::UnexpectedConstructor { id: MSG_CONTAINER });
                }
                return self.dispatch(msg_id, seq_no, &inner, true);
            }
            MSG_COPY | MSG_CONTAINER => {
                return Err(WireError::UnexpectedConstructor { id: constructor });
            }
            _ => self.rpc_call(msg_id, seq_no, body, inflated)?,
        }
        Ok(())
    }

    fn pong(&mut self, msg_id: i64, ping_id: i64) {
        let body = tl::enums::Pong::Pong(tl::types::Pong { msg_id, ping_id }).to_bytes();
        self.s.queue_response(Some(msg_id), body, false);
    }

    fn state_info(&mut self, req_msg_id: i64, info: Vec<u8>) {
        let body = tl::enums::MsgsStateInfo::Info(tl::types::MsgsStateInfo { req_msg_id, info })
            .to_bytes();
        self.s.queue_response(Some(req_msg_id), body, false);
    }

    /// The `msgs_state_info` status byte of a client msg_id.
    fn state_of(&self, id: i64) -> u8 {
        if self.s.received.contains_key(&id) {
            let mut v = 4u8;
            match self.s.answers.get(&id) {
                Some(Answer::Pending { .. }) => v |= 32,
                Some(Answer::Queued | Answer::Sent { .. }) => v |= 32 | 64,
                None => {}
            }
            v
        } else if self.time_check(id) == Some(BadMsgCode::MsgIdTooHigh)
            || self
                .s
                .received
                .last_key_value()
                .is_some_and(|(&k, _)| id > k)
        {
            3
        } else if self.s.forgotten_below.is_some_and(|f| id <= f)
            || self.time_check(id) == Some(BadMsgCode::MsgIdTooLow)
        {
            1
        } else {
            2
        }
    }

    /// `msg_resend_req`: re-sends the server messages still kept; when some are not,
    /// `msgs_state_info` tells the status of all (1 = unknown, 4 = re-sent), as documented.
    fn resend(&mut self, req_msg_id: i64, ids: &[i64]) {
        let mut info = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(sent) = self.s.sent.get(id) {
                let msg = OutMsg {
                    body: sent.body.clone(),
                    content: true,
                    notification: false,
                    answers: None,
                    resend: Some((*id, sent.seq_no)),
                };
                self.s.outbox.push(msg);
                info.push(4);
            } else {
                info.push(1);
            }
        }
        if info.contains(&1) {
            self.state_info(req_msg_id, info);
        }
    }

    fn rpc_call(
        &mut self,
        msg_id: i64,
        seq_no: i32,
        body: &[u8],
        mut inflated: bool,
    ) -> Result<(), WireError> {
        use wire::*;
        let mut call = RpcCall {
            msg_id,
            seq_no,
            constructor: 0,
            query: Vec::new(),
            after_msg: None,
            after_msgs: Vec::new(),
            layer: None,
            init_connection: None,
            without_updates: false,
        };
        let mut buf: Vec<u8> = body.to_vec();
        let mut pos = 0usize;
        let mut done = false;
        for _ in 0..=MAX_WRAPPERS {
            let rest = buf.get(pos..).unwrap_or(&[]);
            let mut r = Reader::new(rest);
            match r.u32()? {
                INVOKE_WITH_LAYER => call.layer = Some(r.i32()?),
                INIT_CONNECTION => {
                    call.init_connection = Some(Box::new(read_init_connection(&mut r)?))
                }
                INVOKE_AFTER_MSG => call.after_msg = Some(r.i64()?),
                INVOKE_AFTER_MSGS => call.after_msgs = r.vec_i64()?,
                INVOKE_WITHOUT_UPDATES => call.without_updates = true,
                GZIP_PACKED => {
                    if inflated {
                        return Err(WireError::TooDeep);
                    }
                    inflated = true;
                    buf = gunzip_packed(rest, self.cfg.max_inflated)?;
                    pos = 0;
                    continue;
                }
                constructor => {
                    call.constructor = constructor;
                    call.query = rest.to_vec();
                    done = true;
                    break;
                }
            }
            pos += rest.len() - r.remaining();
        }
        if !done {
            return Err(WireError::TooDeep);
        }
        if let Some(layer) = call.layer {
            self.s.layer = Some(layer);
        }
        if let Some(init) = &call.init_connection {
            self.s.init_connection = Some(InitConnection::clone(init));
        }
        self.s
            .answers
            .insert(msg_id, Answer::Pending { dropped: false });
        self.events.push(Event::RpcCall(call));
        Ok(())
    }
}

fn read_init_connection(r: &mut Reader<'_>) -> Result<InitConnection, WireError> {
    let flags = r.u32()?;
    let api_id = r.i32()?;
    let device_model = r.string()?;
    let system_version = r.string()?;
    let app_version = r.string()?;
    let system_lang_code = r.string()?;
    let lang_pack = r.string()?;
    let lang_code = r.string()?;
    let proxy = if flags & 1 != 0 {
        Some(r.input_client_proxy()?)
    } else {
        None
    };
    let params = if flags & 2 != 0 {
        let before = r.rest();
        r.skip_json_value(0)?;
        let used = before.len() - r.remaining();
        Some(before.get(..used).unwrap_or(&[]).to_vec())
    } else {
        None
    };
    Ok(InitConnection {
        api_id,
        device_model,
        system_version,
        app_version,
        system_lang_code,
        lang_pack,
        lang_code,
        proxy,
        params,
    })
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

/// All MTProto sessions of the server, with the auth keys and their salts.
#[derive(Debug)]
pub struct Sessions {
    config: SessionConfig,
    keys: AuthKeys,
    salts: HashMap<i64, SaltSchedule>,
    sessions: HashMap<SessionKey, Session>,
}

impl Sessions {
    /// A server with these keys.
    pub fn new(keys: AuthKeys, config: SessionConfig) -> Self {
        Sessions {
            config,
            keys,
            salts: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The key registry.
    pub fn keys(&self) -> &AuthKeys {
        &self.keys
    }

    /// The key registry, to provision or revoke keys. Revoking a key does not drop its
    /// sessions (see [`Sessions::remove_session`]).
    pub fn keys_mut(&mut self) -> &mut AuthKeys {
        &mut self.keys
    }

    /// A session.
    pub fn session(&self, key: SessionKey) -> Option<&Session> {
        self.sessions.get(&key)
    }

    /// A session, to answer its queries or push updates.
    pub fn session_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.sessions.get_mut(&key)
    }

    /// The sessions of an account (all its auth keys).
    pub fn sessions_of(&self, account: AccountId) -> Vec<SessionKey> {
        let mut v: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| s.account == account)
            .map(|s| s.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Forgets a session.
    pub fn remove_session(&mut self, key: SessionKey) -> Option<Session> {
        self.sessions.remove(&key)
    }

    /// Forgets the sessions that received nothing for `idle_ms`; returns them.
    pub fn expire_idle(&mut self, now_ms: u64, idle_ms: u64) -> Vec<SessionKey> {
        let mut gone: Vec<SessionKey> = self
            .sessions
            .values()
            .filter(|s| now_ms.saturating_sub(s.last_seen_ms) >= idle_ms)
            .map(|s| s.id)
            .collect();
        gone.sort_unstable();
        for k in &gone {
            self.sessions.remove(k);
        }
        gone
    }

    /// The salt the server currently announces for an auth key.
    pub fn current_salt(
        &mut self,
        auth_key_id: i64,
        now_ms: u64,
        rng: &mut dyn SecureRandom,
    ) -> i64 {
        let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        self.salts.entry(auth_key_id).or_default().current(
            now,
            i64::from(self.config.salt_period_secs),
            i64::from(self.config.salt_lifetime_secs),
            rng,
        )
    }

    /// Decrypts and processes one client packet (the transport payload:
    /// `auth_key_id:8 | msg_key:16 | encrypted`) received at `now_ms` (Unix ms).
    ///
    /// Service messages are answered in the session's outbox; collect the answers with
    /// [`Sessions::flush`]. A refused packet changes no state.
    pub fn handle_packet(
        &mut self,
        packet: &[u8],
        now_ms: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Received, PacketError> {
        let len = packet.len();
        let Some((header, ciphertext)) = packet.split_first_chunk::<24>() else {
            return Err(PacketError::TooShort { len });
        };
        let (id_bytes, msg_key) = header.split_at(8);
        let mut id = [0u8; 8];
        id.copy_from_slice(id_bytes);
        let auth_key_id = i64::from_le_bytes(id);
        if auth_key_id == 0 {
            return Err(PacketError::Unencrypted);
        }
        let Some(entry) = self.keys.get(auth_key_id) else {
            return Err(PacketError::UnknownAuthKey { auth_key_id });
        };
        if !ciphertext.len().is_multiple_of(16) {
            return Err(PacketError::NotBlockAligned {
                len: ciphertext.len(),
            });
        }
        if ciphertext.len() < MIN_PLAINTEXT {
            return Err(PacketError::TooShort { len });
        }
        if ciphertext.len() > MAX_CIPHERTEXT {
            return Err(PacketError::TooLong { len });
        }
        let mut mk = [0u8; 16];
        mk.copy_from_slice(msg_key);
        let plain = decrypt_packet(&entry.key, X_CLIENT, &mk, ciphertext)
            .map_err(|_| PacketError::BadMsgKey { auth_key_id })?;

        let mut r = Reader::new(&plain);
        let header = (|| -> Result<(i64, i64, i64, i32, i32), WireError> {
            Ok((r.i64()?, r.i64()?, r.i64()?, r.i32()?, r.i32()?))
        })();
        let plaintext_len = plain.len();
        let Ok((salt, session_id, msg_id, seq_no, declared_len)) = header else {
            return Err(PacketError::BadLength {
                declared_len: 0,
                plaintext_len,
            });
        };
        let body = usize::try_from(declared_len)
            .ok()
            .filter(|&l| l.is_multiple_of(4))
            .and_then(|l| {
                let padding = plaintext_len.checked_sub(32)?.checked_sub(l)?;
                (12..=1024).contains(&padding).then(|| &plain[32..32 + l])
            })
            .ok_or(PacketError::BadLength {
                declared_len,
                plaintext_len,
            })?;

        let account = entry.account;
        let skey = SessionKey {
            auth_key_id,
            session_id,
        };
        if !self.sessions.contains_key(&skey) {
            let key = entry.key.clone();
            self.make_room(auth_key_id);
            let unique_id = rng.next_i64();
            let session = Session::new(key, skey, account, unique_id, &self.config);
            self.sessions.insert(skey, session);
        }
        let Some(session) = self.sessions.get_mut(&skey) else {
            return Err(PacketError::UnknownAuthKey { auth_key_id });
        };
        session.last_seen_ms = now_ms;
        let mut p = Proc {
            s: session,
            cfg: &self.config,
            salts: self.salts.entry(auth_key_id).or_default(),
            rng,
            now_ms,
            events: Vec::new(),
            destroy: Vec::new(),
        };
        p.top_level(salt, msg_id, seq_no, body);
        let Proc {
            mut events,
            destroy,
            ..
        } = p;

        for (req_msg_id, target) in destroy {
            let target_key = SessionKey {
                auth_key_id,
                session_id: target,
            };
            let existed = target != session_id && self.sessions.remove(&target_key).is_some();
            let res = if existed {
                tl::enums::DestroySessionRes::DestroySessionOk(tl::types::DestroySessionOk {
                    session_id: target,
                })
            } else {
                tl::enums::DestroySessionRes::DestroySessionNone(tl::types::DestroySessionNone {
                    session_id: target,
                })
            };
            if let Some(s) = self.sessions.get_mut(&skey) {
                s.queue_response(Some(req_msg_id), res.to_bytes(), false);
            }
            events.push(Event::SessionDestroyed {
                session_id: target,
                existed,
            });
        }

        Ok(Received {
            session: skey,
            account,
            events,
        })
    }

    /// Drops the least recently active session of `auth_key_id` while it has too many.
    fn make_room(&mut self, auth_key_id: i64) {
        loop {
            let of_key: Vec<(u64, SessionKey)> = self
                .sessions
                .values()
                .filter(|s| s.id.auth_key_id == auth_key_id)
                .map(|s| (s.last_seen_ms, s.id))
                .collect();
            if of_key.len() < self.config.max_sessions_per_key.max(1) {
                return;
            }
            match of_key.iter().min() {
                Some((_, k)) => {
                    self.sessions.remove(k);
                }
                None => return,
            }
        }
    }

    /// The encrypted packets (transport payloads) for everything queued in a session, at most
    /// ~1 MB each, in order. Empty when there is nothing to send or no such session.
    pub fn flush(
        &mut self,
        key: SessionKey,
        now_ms: u64,
        rng: &mut dyn SecureRandom,
    ) -> Vec<Vec<u8>> {
        match self.sessions.get(&key) {
            Some(s) if s.has_outgoing() => {}
            _ => return Vec::new(),
        }
        let salt = self.current_salt(key.auth_key_id, now_ms, rng);
        match self.sessions.get_mut(&key) {
            Some(s) => s.flush(salt, now_ms, rng),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_id_scale() {
        assert_eq!(msg_id_at(1_000), 1 << 32);
        assert_eq!(msg_id_at(1_500), (1 << 32) | (1 << 31));
        assert!(msg_id_at(1_999) < msg_id_at(2_000));
    }

    #[test]
    fn server_msg_ids_increase_with_the_right_low_bits() {
        let key = AuthKey::from_array([3u8; 256]);
        let cfg = SessionConfig::default();
        let id = SessionKey {
            auth_key_id: auth_key_id(&key),
            session_id: 1,
        };
        let mut s = Session::new(key, id, 1, 1, &cfg);
        let mut last = 0;
        for i in 0..100 {
            let notification = i % 3 == 0;
            let m = s.next_msg_id(1_700_000_000_000, notification);
            assert!(m > last);
            assert_eq!(m & 3, if notification { 3 } else { 1 });
            last = m;
        }
        assert_eq!(s.next_seq_no(false), 0);
        assert_eq!(s.next_seq_no(true), 1);
        assert_eq!(s.next_seq_no(true), 3);
        assert_eq!(s.next_seq_no(false), 4);
    }
}
