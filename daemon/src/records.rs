//! The daemon's own stored records and where every record lives.
//!
//! Every value is a `secret_core::record` envelope (`varint(version) ‖ postcard(value)`), the
//! one encoding of the project. Keys come from [`crate::store::keys`] (numeric order = byte
//! order).
//!
//! | tree | key | value | written | removed |
//! | --- | --- | --- | --- | --- |
//! | Chats | chat, part 0/1/2/3 | secret-core's `AuthState` / `ConfigState` / `PfsState` / `SeqState` | when an output names the record | when the closed chat is forgotten (`ForgetChat`, see `chatstore::forget`: every key of the chat goes from Chats, Outbox, Gap, Inbox, Inbound, RequestIndex, its requests' records and handle indexes; what stays: the Meta `r` owners, and a result whose Response is still due until it goes out); a discarded chat keeps its closed state until then |
//! | Chats | chat, part 4 | [`ChatMeta`] | creation; each inbox event | when the chat is forgotten |
//! | Outbox | (chat, out_raw) | `OutboxEntry` (exact ciphertext; version 1), or [`OutboxWithRequest`] (version 2) for the first message of an open request | created before it leaves; when the server accepts it | acknowledged by the peer, or the chat closes |
//! | Gap | (chat, out_raw) | `QueuedMessage` | a peer message ahead of a hole | processed in order, or the chat closes |
//! | Inbox | (chat, index) | secret-core `Event` | with the output that produced it | pruned beyond [`INBOX_KEEP`] per chat; all when the chat is forgotten |
//! | Inbound | (chat, random_id) | [`InboundMessage`] | with the update batch it came in, before qts is acknowledged (insert-if-absent) | with the chat output that processed it |
//! | Meta | `u` ‖ seq | [`ChatUpdate`] | with its update batch | once the chat applied it |
//! | Meta | `c` ‖ chat ‖ seq | [`PendingCall`] | with the output that asked for it | when the server answered it (or it is moot) |
//! | Requests | id ([`message_request_id`]: chat, marker bit, out_raw of its first message) | [`RequestRecord`] | each change after its acceptance (a part's date, the final result, its announcement); when its first message leaves the outbox while it is open | kept (results stay queryable) until the chat is forgotten |
//! | RequestIndex | (chat, random_id) | request id | with the request's final result | kept (idempotent retries of finished requests) until the chat is forgotten |
//! | Meta | `a` ‖ id | (empty) | a request's result is final | its Response went out (then, if its chat was forgotten meanwhile, its record and handle index go too) |
//! | Meta | `h` ‖ handle path | request id | with the request's final result | kept (results by handle) until the chat is forgotten |
//! | Meta | `r` ‖ random_id | chat id (4 bytes) ‖ the request's digest (32 bytes; 4 bytes alone as first stored) | with the request that carried it, when the caller chose it (option or message) | kept: a caller's random_id stays its chat's, so another chat of the account never gets it (Telegram refuses a repeated random_id, RANDOM_ID_DUPLICATE, and a refused message closes its chat) |
//! | Session | `snapshot` | [`SessionRecord`] | login, DC changes; with each update batch (update state) | never |
//!
//! **An open request is one key: its first message's outbox entry.** Accepting a send writes
//! the message's outbox entry with the request record inside it ([`OutboxWithRequest`]) and
//! the chat records the send changed, nothing more. Every later write of the record goes to
//! `Requests` (a part's date, the final result with its two indexes, in the batch that makes
//! it final), and so does the record of an open request whose first message leaves the
//! outbox (the peer acknowledged it before a later chunk went out): **a record in `Requests`
//! wins over one inside an outbox entry**, which may be left behind, stale, until that entry
//! is written again or removed. While it is open a request is found without its indexes: its
//! id is its first message's outbox key (`chatstore::request_by_id`, `open_requests`), the
//! actor holds its random_ids and `Shared` its handle (rebuilt from the outbox at start).
//! Requests stored before this layout have sequence ids below 2^31 and were indexed (and
//! written to `Requests`) when accepted; they are still found through `RequestIndex`.

use serde::{Deserialize, Serialize};

use secret_core::chat::{Call, OutboxEntry, RemoteChat, SendMethod};
use secret_core::record::{Record, RecordError};

use crate::store::keys;

/// Events kept per chat in the inbox (oldest pruned first).
pub const INBOX_KEEP: u64 = 1000;

secret_core::records! {
    ChatMeta => "chat meta", 1;
    InboundMessage => "inbound message", 1;
    ChatUpdate => "chat update", 1;
    PendingCall => "pending call", 1;
    RequestRecord => "request", 2;
    SessionRecord => "session", 1;
    OutboxWithRequest => "outbox entry", 2;
}

/// An outbox entry that carries the request its message opened (see the module doc): the
/// value of the first message of a request accepted under this layout, version 2 of the
/// Outbox tree's value (version 1 is secret-core's `OutboxEntry` alone). Any change to
/// `RequestRecord`'s layout changes this one's too: both versions go up together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxWithRequest {
    /// The message, as secret-core keeps it.
    pub entry: OutboxEntry,
    /// Its request, as accepted (stale once `Requests` holds a record of the same id).
    pub request: RequestRecord,
}

/// The stored value of an outbox entry: with `request` (its first message's open request) as
/// an [`OutboxWithRequest`], else the entry alone.
pub fn encode_outbox(
    entry: &OutboxEntry,
    request: Option<&RequestRecord>,
) -> Result<Vec<u8>, RecordError> {
    match request {
        None => encode(entry),
        Some(r) => encode(&OutboxWithRequest {
            entry: entry.clone(),
            request: r.clone(),
        }),
    }
}

/// Reads an outbox value of either version: the entry and the request inside it, if any.
pub fn decode_outbox(b: &[u8]) -> Result<(OutboxEntry, Option<RequestRecord>), RecordError> {
    match decode::<OutboxEntry>(b) {
        Ok(e) => Ok((e, None)),
        Err(RecordError::Version { found, .. }) if found == OutboxWithRequest::VERSION => {
            let w: OutboxWithRequest = decode(b)?;
            Ok((w.entry, Some(w.request)))
        }
        Err(e) => Err(e),
    }
}

/// Encodes a record (the core's envelope).
pub fn encode<T: Record>(v: &T) -> Result<Vec<u8>, RecordError> {
    secret_core::record::encode(v)
}

/// Decodes a record (the core's envelope).
pub fn decode<T: Record>(b: &[u8]) -> Result<T, RecordError> {
    secret_core::record::decode(b)
}

// ---- keys ---------------------------------------------------------------------------------------

/// The parts of a chat in the Chats tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChatPart {
    /// secret-core's `AuthState`.
    Auth = 0,
    /// secret-core's `ConfigState`.
    Config = 1,
    /// secret-core's `PfsState`.
    Pfs = 2,
    /// secret-core's `SeqState`.
    Seq = 3,
    /// The daemon's [`ChatMeta`].
    Meta = 4,
}

/// Key of a chat record.
pub fn chat_key(chat_id: i32, part: ChatPart) -> Vec<u8> {
    let mut k = keys::key_i32(chat_id).to_vec();
    k.push(part as u8);
    k
}

/// Key prefix of every chat record of one chat.
pub fn chat_prefix(chat_id: i32) -> [u8; 4] {
    keys::key_i32(chat_id)
}

/// Key of a pending chat update in the Meta tree.
pub fn update_key(seq: u64) -> Vec<u8> {
    let mut k = b"u".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of the pending chat updates.
pub const UPDATE_PREFIX: &[u8] = b"u";

/// The seq of an [`update_key`]; `None` for a key of another shape.
pub fn decode_update_key(k: &[u8]) -> Option<u64> {
    let b: [u8; 8] = k.strip_prefix(UPDATE_PREFIX)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Key of a pending call in the Meta tree.
pub fn call_key(chat_id: i32, seq: u64) -> Vec<u8> {
    let mut k = b"c".to_vec();
    k.extend_from_slice(&keys::key_i32_u64(chat_id, seq));
    k
}

/// Prefix of the pending calls (of one chat, or of all with `None`).
pub fn call_prefix(chat_id: Option<i32>) -> Vec<u8> {
    let mut k = b"c".to_vec();
    if let Some(c) = chat_id {
        k.extend_from_slice(&keys::key_i32(c));
    }
    k
}

/// The chat and sequence of a pending-call key.
pub fn decode_call_key(k: &[u8]) -> Option<(i32, u64)> {
    keys::decode_i32_u64(k.strip_prefix(b"c")?)
}

/// Set in the id of every request made since the open-request layout (bit 31: an `out_raw` is
/// below 2^30, and the sequence ids of older stores below 2^31).
const MESSAGE_ID_MARK: u64 = 1 << 31;

/// The id of a request whose first message has `out_raw` in `chat_id`: the chat (high 32
/// bits), [`MESSAGE_ID_MARK`], the out_raw. A chat's requests are adjacent in key order, in
/// the order their messages took their seq slots.
pub fn message_request_id(chat_id: i32, out_raw: u32) -> u64 {
    (u64::from(chat_id as u32) << 32) | MESSAGE_ID_MARK | u64::from(out_raw)
}

/// The chat and first out_raw of a request id made by [`message_request_id`] (`None` for the
/// sequence ids of older stores).
pub fn request_slot(id: u64) -> Option<(i32, u32)> {
    (id & MESSAGE_ID_MARK != 0).then_some(((id >> 32) as u32 as i32, (id & 0x7fff_ffff) as u32))
}

/// Key of a request.
pub fn request_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Key of a request whose result is final but not yet announced (Meta tree).
pub fn announce_key(id: u64) -> Vec<u8> {
    let mut k = b"a".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Prefix of the requests to announce.
pub const ANNOUNCE_PREFIX: &[u8] = b"a";

/// Key of the handle → request id index (Meta tree).
pub fn handle_key(handle: &str) -> Vec<u8> {
    let mut k = b"h".to_vec();
    k.extend_from_slice(handle.as_bytes());
    k
}

/// Key of the owner of a random_id a caller chose (Meta tree): `r` ‖ the random_id in numeric
/// order. Its value is [`random_id_owner`]'s.
pub fn random_id_owner_key(random_id: i64) -> Vec<u8> {
    let mut k = b"r".to_vec();
    k.extend_from_slice(&keys::key_i32_i64(0, random_id)[4..]);
    k
}

/// The value of a [`random_id_owner_key`]: the chat's id, 4 bytes big-endian, then the digest
/// of the request that carried the random_id (32 bytes; see `service::request_digest`), so
/// that a retry with another message under the same id is told from a real one.
pub fn random_id_owner(chat_id: i32, digest: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    v.extend_from_slice(&chat_id.to_be_bytes());
    v.extend_from_slice(digest);
    v
}

/// The chat a [`random_id_owner`] value names, and the request's digest (`None` in a value of
/// 4 bytes, as stored before the digest was); `None` if the value is neither 4 nor 36 bytes.
pub fn decode_random_id_owner(v: &[u8]) -> Option<(i32, Option<[u8; 32]>)> {
    let chat = i32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    match v.len() {
        4 => Some((chat, None)),
        36 => Some((chat, Some(v[4..].try_into().ok()?))),
        _ => None,
    }
}

/// Key of the session snapshot.
pub const SESSION_KEY: &[u8] = b"snapshot";

/// Key of the logout marker (Session tree). Its value is a state byte, [`LOGOUT_STARTED`] or
/// [`LOGOUT_CONFIRMED`], then the Unix time it was written (8 bytes big-endian).
///
/// `Started` is written durably before `auth.logOut` is sent, `Confirmed` once Telegram
/// answered it (or said the authorization ended already), and also when Telegram ends the
/// authorization of the key that worked ([`SIGNED_IN_KEY`]: the user terminated the session
/// from another device), once a second question confirmed it; it is removed once every chat is
/// closed after the logout, or when Telegram refused `auth.logOut` (a transient failure,
/// after one retry, leaves `Started`: the call may have arrived). A completed login finds
/// either state and closes the chats first (needing a login means the key was logged out).
/// A start that finds `Confirmed` closes the chats a stop left open (Telegram has discarded
/// them, even if the account logged in again since); a start that finds `Started` asks
/// Telegram (`updates.getState`): signed in, the marker goes; an answer that the
/// authorization ended (`tglink::authorization_ended`), the chats close; anything else leaves
/// it. Without a marker, a logged-out answer closes the chats only for the key named in
/// [`SIGNED_IN_KEY`] (another key may be a wrong key file, which the user can fix).
pub const LOGOUT_KEY: &[u8] = b"logout";

/// Key of the signed-in key record (Session tree): the first 8 bytes of the SHA-256 of the
/// home DC's auth key. Written (queued, not waited for) at the first authorized answer of a
/// run in which it was missing or named another key; removed in the batch that writes the
/// `Confirmed` logout marker (by `Logout`, a logout a stop interrupted, or an ended
/// authorization), before the chats close. It tells a logged-out answer for the key that
/// worked from one for another key: only an answer that the authorization ended
/// (`tglink::authorization_ended`) for this key, outside a `Logout`, confirmed by a second
/// `updates.getState`, closes the chats without a marker (even when the session was
/// terminated while the daemon was stopped).
pub const SIGNED_IN_KEY: &[u8] = b"signed-in-key";

/// [`LOGOUT_KEY`] state: `auth.logOut` is about to be sent.
pub const LOGOUT_STARTED: u8 = 0;

/// [`LOGOUT_KEY`] state: Telegram logged the key out; the chats still have to close.
pub const LOGOUT_CONFIRMED: u8 = 1;

/// The value of the logout marker in `state` at `now`.
pub fn logout_marker(state: u8, now: u64) -> Vec<u8> {
    let mut v = vec![state];
    v.extend_from_slice(&now.to_be_bytes());
    v
}

// ---- records ------------------------------------------------------------------------------------

/// The daemon's facts about a chat, beside secret-core's records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMeta {
    /// Index the next inbox event gets (events are numbered per chat from 0).
    pub next_event: u64,
    /// Index the next pending call gets.
    pub next_call: u64,
}

/// An encrypted message taken from Telegram, durable before its qts is acknowledged and until
/// the chat has processed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Arrival order (increasing across the daemon's life): messages are processed in it.
    pub seq: u64,
    /// Server date.
    pub date: i32,
    /// The encrypted bytes.
    pub data: Vec<u8>,
}

/// An `updateEncryption` taken from Telegram, durable before the update state moves past it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUpdate {
    /// The chat.
    pub chat_id: i32,
    /// What it says.
    pub kind: ChatUpdateKind,
}

/// The kinds of `encryptedChat*` the daemon acts on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatUpdateKind {
    /// `encryptedChatRequested`: someone asks us for a chat.
    Requested {
        /// access_hash.
        access_hash: i64,
        /// The creator.
        admin_id: i64,
        /// Us.
        participant_id: i64,
        /// The creator's g_a.
        g_a: Vec<u8>,
    },
    /// `encryptedChatWaiting` / `encryptedChat` / `encryptedChatDiscarded`.
    Remote(RemoteChat),
}

impl ChatUpdateKind {
    /// A word for the logs.
    pub fn name(&self) -> &'static str {
        match self {
            ChatUpdateKind::Requested { .. } => "requested",
            ChatUpdateKind::Remote(_) => "remote",
        }
    }
}

/// A call that is not a message (those are the outbox's), kept until the server answered it:
/// `requestEncryption` (asked before the chat exists at the server), `acceptEncryption`,
/// `discardEncryption`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingCall {
    /// `messages.requestEncryption(user_id, random_id, g_a)`.
    RequestEncryption {
        /// The peer.
        user_id: i64,
        /// Its access hash, if known.
        access_hash: i64,
        /// The chat id we chose.
        random_id: i32,
        /// Our g_a.
        g_a: Vec<u8>,
    },
    /// `messages.acceptEncryption`.
    AcceptEncryption {
        /// g_b.
        g_b: Vec<u8>,
        /// The key's fingerprint.
        key_fingerprint: i64,
    },
    /// `messages.discardEncryption`.
    DiscardEncryption {
        /// Whether to ask for history deletion.
        delete_history: bool,
    },
}

impl PendingCall {
    /// The pending form of a chat's non-message call (`None` for a message).
    pub fn of(call: &Call) -> Option<PendingCall> {
        match call {
            Call::AcceptEncryption {
                g_b,
                key_fingerprint,
            } => Some(PendingCall::AcceptEncryption {
                g_b: g_b.clone(),
                key_fingerprint: *key_fingerprint,
            }),
            Call::DiscardEncryption { delete_history } => Some(PendingCall::DiscardEncryption {
                delete_history: *delete_history,
            }),
            Call::Send(_) => None,
        }
    }
}

/// One message of a request and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPart {
    /// Its random_id.
    pub random_id: i64,
    /// Its out_seq_no.
    pub out_seq_no: i32,
    /// Its in_seq_no.
    pub in_seq_no: i32,
    /// The layer written in it.
    pub layer: i32,
    /// The server's date once it accepted the message.
    pub date: Option<i32>,
}

/// Where a request stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestStatus {
    /// Stored; not every part is accepted by the server yet.
    Pending,
    /// Every part was accepted by the server.
    Sent,
    /// It will not be sent (the chat closed, the server refused it).
    Failed {
        /// The Telegram error name (`ENCRYPTION_DECLINED`, `USER_IS_BLOCKED`…).
        error: String,
        /// Words for a person.
        message: String,
    },
    /// Cancelled by its caller (`Request1.Close`) before any of its messages left the daemon:
    /// each took its seq slot, now filled by a Noop.
    Cancelled,
}

/// An application's request (`SendEncryptedService`): stored before its handle is returned,
/// answered exactly once by a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request's id (also the key): [`message_request_id`] of its first message (a sequence
    /// number below 2^31 in a record stored before the open-request layout).
    pub id: u64,
    /// The chat.
    pub chat_id: i32,
    /// The method it goes out with.
    pub method: SendMethod,
    /// Its messages, in order (one, or the chunks of a long text).
    pub parts: Vec<RequestPart>,
    /// Where it stands.
    pub status: RequestStatus,
    /// The D-Bus object path of its handle.
    pub handle: String,
    /// When it was accepted (Unix seconds).
    pub created_at: u64,
    /// Whether its result was announced (the Response signal went out).
    pub announced: bool,
    /// Made through `Manager1.Call` (the seed's method + JSON form): its Response also carries
    /// the result as JSON (`json`). (Added in version 2.)
    pub json: bool,
}

impl RequestRecord {
    /// True once it has its final result.
    pub fn is_final(&self) -> bool {
        !matches!(self.status, RequestStatus::Pending)
    }
}

/// The Telegram session as stored (see `tglink::SessionSnapshot`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Home DC.
    pub home_dc: i32,
    /// DCs: (id, IPv4 address, IPv6 address, auth key).
    pub dcs: Vec<DcEntry>,
    /// Self user (id, access_hash).
    pub self_user: Option<(i64, i64)>,
    /// Whether the addresses are pinned (a local server).
    pub pinned: bool,
    /// pts, qts, date, seq.
    pub state: (i32, i32, i32, i32),
}

/// One DC in the session record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcEntry {
    /// DC id.
    pub id: i32,
    /// `ip:port`.
    pub ipv4: String,
    /// `[ip]:port`.
    pub ipv6: String,
    /// The permanent auth key.
    pub auth_key: Option<Vec<u8>>,
}

impl SessionRecord {
    /// From the link's snapshot.
    pub fn from_snapshot(s: &tglink::SessionSnapshot) -> SessionRecord {
        SessionRecord {
            home_dc: s.home_dc,
            dcs: s
                .dcs
                .iter()
                .map(|d| DcEntry {
                    id: d.id,
                    ipv4: d.ipv4.to_string(),
                    ipv6: d.ipv6.to_string(),
                    auth_key: d.auth_key.map(|k| k.to_vec()),
                })
                .collect(),
            self_user: s.self_user,
            pinned: s.pinned,
            state: (s.pts, s.qts, s.date, s.seq),
        }
    }

    /// Back to the link's snapshot; `None` if an address or a key does not parse.
    pub fn to_snapshot(&self) -> Option<tglink::SessionSnapshot> {
        let dcs = self
            .dcs
            .iter()
            .map(|d| {
                Some(tglink::session::DcRecord {
                    id: d.id,
                    ipv4: d.ipv4.parse().ok()?,
                    ipv6: d.ipv6.parse().ok()?,
                    auth_key: match &d.auth_key {
                        Some(k) => Some(<[u8; 256]>::try_from(k.as_slice()).ok()?),
                        None => None,
                    },
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let (pts, qts, date, seq) = self.state;
        Some(tglink::SessionSnapshot {
            home_dc: self.home_dc,
            dcs,
            self_user: self.self_user,
            pinned: self.pinned,
            pts,
            qts,
            date,
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_key_decodes_to_its_seq_and_sorts_in_arrival_order() {
        for seq in [0, 1, 255, 256, u64::MAX] {
            assert_eq!(decode_update_key(&update_key(seq)), Some(seq));
        }
        assert!(update_key(255) < update_key(256));
        assert_eq!(decode_update_key(b"u1234567"), None);
        assert_eq!(decode_update_key(b"u123456789"), None);
        assert_eq!(decode_update_key(&call_key(1, 2)), None);
    }

    #[test]
    fn a_random_id_owner_reads_with_its_digest_or_without_one_as_first_stored() {
        let digest = [7u8; 32];
        let v = random_id_owner(-5, &digest);
        assert_eq!(v.len(), 36);
        assert_eq!(v[..4], [0xff, 0xff, 0xff, 0xfb]);
        assert_eq!(decode_random_id_owner(&v), Some((-5, Some(digest))));
        assert_eq!(
            decode_random_id_owner(&(-5i32).to_be_bytes()),
            Some((-5, None))
        );
        for bad in [
            &v[..3],
            &v[..5],
            &v[..35],
            &[v.clone(), vec![0]].concat()[..],
        ] {
            assert_eq!(decode_random_id_owner(bad), None, "{} bytes", bad.len());
        }
    }

    #[test]
    fn pending_call_keys_sort_by_chat_then_sequence() {
        let mut ks = [
            call_key(5, 2),
            call_key(-3, 9),
            call_key(5, 1),
            call_key(i32::MIN, 0),
        ];
        ks.sort();
        let decoded: Vec<_> = ks.iter().filter_map(|k| decode_call_key(k)).collect();
        assert_eq!(decoded, vec![(i32::MIN, 0), (-3, 9), (5, 1), (5, 2)]);
        assert!(call_key(5, 1).starts_with(&call_prefix(Some(5))));
    }

    #[test]
    fn the_session_record_round_trips_through_the_snapshot() {
        let addr: std::net::SocketAddrV4 = "127.0.0.1:5555".parse().expect("addr");
        let mut s = tglink::SessionSnapshot::pinned(addr, [3; 256]);
        s.self_user = Some((7, 8));
        s.qts = 44;
        let r = SessionRecord::from_snapshot(&s);
        let back: SessionRecord = decode(&encode(&r).expect("enc")).expect("dec");
        assert_eq!(back.to_snapshot(), Some(s));
    }
}
