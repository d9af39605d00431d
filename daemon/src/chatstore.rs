//! A chat's records in the store: loading a chat, turning an [`Output`] into writes, and
//! finding a chat's open requests.
//!
//! The only place that knows the key layout of a chat (see [`crate::records`]).

use secret_core::chat::{Chat, ChatState, Event, OutboxEntry, Output, QueuedMessage};
use secret_core::record::{Record, RecordError};

use crate::error::DaemonError;
use crate::records::{
    self, ChatMeta, ChatPart, InboundMessage, PendingCall, RequestRecord, call_key, call_prefix,
    chat_key, decode_call_key,
};
use crate::shared::ChatView;
use crate::store::{Batch, Store, Tree, keys};

/// Everything stored about one chat, read back.
pub struct LoadedChat {
    /// The chat.
    pub chat: Chat,
    /// The daemon's facts.
    pub meta: ChatMeta,
    /// Calls still owed to the server, in order.
    pub calls: Vec<(u64, PendingCall)>,
    /// Incoming messages not processed yet, in arrival order, with their random_ids.
    pub inbound: Vec<(i64, InboundMessage)>,
}

fn get<T: Record>(store: &Store, tree: Tree, key: &[u8]) -> Result<Option<T>, DaemonError> {
    match store.get(tree, key)? {
        Some(b) => Ok(Some(records::decode(&b)?)),
        None => Ok(None),
    }
}

fn scan<T: Record>(
    store: &Store,
    tree: Tree,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, T)>, DaemonError> {
    store
        .scan_prefix(tree, prefix)
        .map(|e| {
            let (k, v) = e?;
            Ok((k, records::decode(&v)?))
        })
        .collect()
}

// ---- requests ----------------------------------------------------------------------------------

/// The request a message of `chat_id` belongs to, through the request index (written with a
/// request's final result; with its acceptance in stores older than the open-request layout).
pub fn request_of(
    store: &Store,
    chat_id: i32,
    random_id: i64,
) -> Result<Option<RequestRecord>, DaemonError> {
    let Some(id) = store.get(Tree::RequestIndex, &keys::key_i32_i64(chat_id, random_id))? else {
        return Ok(None);
    };
    let id = <[u8; 8]>::try_from(id.as_slice())
        .map(u64::from_be_bytes)
        .map_err(|_| DaemonError::Corrupt(format!("chat {chat_id}: bad request index entry")))?;
    get(store, Tree::Requests, &records::request_key(id))
}

/// The request a message of `chat_id` (its outbox slot and random_id) belongs to, if it is
/// still open (not final).
///
/// An open request has no index (see `records`): its id is its first message's slot
/// ([`records::message_request_id`]), and its later messages (the chunks of a long text) took
/// the slots after it in the same actor turn, so it is the request at this slot or the last
/// one below it in the chat. A request stored before that layout is found through the request
/// index, written when it was accepted.
fn open_request_of(
    store: &Store,
    chat_id: i32,
    out_raw: u32,
    random_id: i64,
) -> Result<Option<RequestRecord>, DaemonError> {
    let has = |r: &RequestRecord| r.parts.iter().any(|p| p.random_id == random_id);
    let key = records::request_key(records::message_request_id(chat_id, out_raw));
    let found: Option<RequestRecord> = match get(store, Tree::Requests, &key)? {
        Some(r) => Some(r),
        None => match store.last_before(Tree::Requests, &key, &key[..4])? {
            Some((_, v)) => Some(records::decode(&v)?),
            None => None,
        },
    };
    let found = match found.filter(has) {
        Some(r) => Some(r),
        None => request_of(store, chat_id, random_id)?,
    };
    Ok(found.filter(|r| !r.is_final()))
}

/// The open (not final) requests among those of the given outbox messages (slot, random_id),
/// by id.
///
/// There is no per-request "open" marker: a request is open only while one of its messages
/// waits for the server's answer (its date arrives in the same batch that marks the outbox
/// entry sent; a closed chat fails its requests in the batch that empties its outbox; a
/// cancelled message's slot is refilled in the batch that ends its request), and such a
/// message stays in the outbox until then. So the open requests of a chat are found from its
/// outbox's messages ([`open_request_of`]; every message, not only `from_app` ones: an
/// application's RequestKey or AbortKey is stored as the chat's own message).
pub fn open_requests(
    store: &Store,
    chat_id: i32,
    messages: impl IntoIterator<Item = (u32, i64)>,
) -> Result<std::collections::HashMap<u64, RequestRecord>, DaemonError> {
    let mut open = std::collections::HashMap::new();
    for (out_raw, random_id) in messages {
        if let Some(r) = open_request_of(store, chat_id, out_raw, random_id)? {
            open.insert(r.id, r);
        }
    }
    Ok(open)
}

/// Every open request of every chat (read once at start, for the handles to export and hold),
/// from the whole outbox (see [`open_requests`]).
pub fn all_open_requests(store: &Store) -> Result<Vec<RequestRecord>, DaemonError> {
    let mut open = std::collections::BTreeMap::new();
    for (k, e) in scan::<OutboxEntry>(store, Tree::Outbox, &[])? {
        let Some((chat_id, out_raw)) = keys::decode_i32_u32(&k) else {
            continue;
        };
        // Not only `from_app` entries: an application's RequestKey / AbortKey is stored as
        // the chat's own message, and it belongs to a request too.
        if let Some(r) = open_request_of(store, chat_id, out_raw, e.random_id)? {
            open.insert(r.id, r);
        }
    }
    Ok(open.into_values().collect())
}

/// Whether a chat exists in the store.
pub fn exists(store: &Store, chat_id: i32) -> Result<bool, DaemonError> {
    Ok(store
        .get(Tree::Chats, &chat_key(chat_id, ChatPart::Auth))?
        .is_some())
}

/// A chat's four records and its meta (`None` if the store has none by that id).
fn load_records(store: &Store, chat_id: i32) -> Result<Option<(ChatState, ChatMeta)>, DaemonError> {
    let part = |p| chat_key(chat_id, p);
    let Some(auth) = get(store, Tree::Chats, &part(ChatPart::Auth))? else {
        return Ok(None);
    };
    let missing = |w: &str| DaemonError::Corrupt(format!("chat {chat_id}: no {w} record"));
    let config =
        get(store, Tree::Chats, &part(ChatPart::Config))?.ok_or_else(|| missing("config"))?;
    let pfs = get(store, Tree::Chats, &part(ChatPart::Pfs))?.ok_or_else(|| missing("key"))?;
    let seq = get(store, Tree::Chats, &part(ChatPart::Seq))?.ok_or_else(|| missing("seq"))?;
    let meta = get(store, Tree::Chats, &part(ChatPart::Meta))?.unwrap_or_default();
    Ok(Some((ChatState::from_parts(auth, config, pfs, seq), meta)))
}

/// Loads a chat (`None` if the store has none by that id).
pub fn load(store: &Store, chat_id: i32) -> Result<Option<LoadedChat>, DaemonError> {
    let Some((state, meta)) = load_records(store, chat_id)? else {
        return Ok(None);
    };
    let prefix = keys::key_i32(chat_id);
    let outbox: Vec<OutboxEntry> = scan(store, Tree::Outbox, &prefix)?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let gap: Vec<QueuedMessage> = scan(store, Tree::Gap, &prefix)?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let chat = Chat::restore(state, outbox, gap)
        .map_err(|e| DaemonError::Corrupt(format!("chat {chat_id}: {e}")))?;
    let calls = scan::<PendingCall>(store, Tree::Meta, &call_prefix(Some(chat_id)))?
        .into_iter()
        .filter_map(|(k, c)| decode_call_key(&k).map(|(_, seq)| (seq, c)))
        .collect();
    let mut inbound: Vec<(i64, InboundMessage)> = scan(store, Tree::Inbound, &prefix)?
        .into_iter()
        .filter_map(|(k, m)| keys::decode_i32_i64(&k).map(|(_, rid)| (rid, m)))
        .collect();
    inbound.sort_by_key(|(_, m)| m.seq);
    Ok(Some(LoadedChat {
        chat,
        meta,
        calls,
        inbound,
    }))
}

/// What the outside world sees of a stored chat (`None` if there is none by that id): its
/// four records and its meta, without the outbox or the gap queue.
pub fn load_view(store: &Store, chat_id: i32) -> Result<Option<ChatView>, DaemonError> {
    let Some((state, meta)) = load_records(store, chat_id)? else {
        return Ok(None);
    };
    Ok(Some(ChatView {
        summary: state.summary(),
        next_event: meta.next_event,
    }))
}

/// The id of every stored chat, in key order.
pub fn chat_ids(store: &Store) -> Result<Vec<i32>, DaemonError> {
    let mut out = Vec::new();
    for e in store.scan_prefix(Tree::Chats, &[]) {
        let (k, _) = e?;
        if k.len() == 5 && k[4] == ChatPart::Auth as u8 {
            out.extend(keys::decode_i32(&k[..4]));
        }
    }
    Ok(out)
}

/// Length of a per-request open marker (`o` ‖ chat ‖ request id, Meta tree), written by the
/// daemon before open requests were found through the outbox; nothing reads them any more.
const STALE_OPEN_MARKER_LEN: usize = 1 + 4 + 8;

/// Removes the stale open markers a store from before that change still holds (in batches of
/// up to 1024 keys); how many.
pub fn remove_stale_open_markers(store: &Store) -> Result<usize, DaemonError> {
    let mut removed = 0;
    loop {
        let mut batch = Batch::new();
        for e in store.scan_prefix(Tree::Meta, b"o").take(1024) {
            let (k, _) = e?;
            if k.len() == STALE_OPEN_MARKER_LEN {
                batch.remove(Tree::Meta, k);
            }
        }
        if batch.is_empty() {
            return Ok(removed);
        }
        removed += batch.len();
        store.commit_blocking(batch)?;
    }
}

/// A chat's status from its stored auth record; `None` if there is no such chat.
pub fn chat_status(
    store: &Store,
    chat_id: i32,
) -> Result<Option<secret_core::chat::Status>, DaemonError> {
    let auth: Option<secret_core::chat::AuthState> =
        get(store, Tree::Chats, &chat_key(chat_id, ChatPart::Auth))?;
    Ok(auth.map(|a| a.stage().status()))
}

/// Up to `limit` inbox events of a chat numbered from `from`, in order.
pub fn inbox(
    store: &Store,
    chat_id: i32,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Event)>, DaemonError> {
    let mut out = Vec::new();
    let prefix = keys::key_i32(chat_id);
    for e in store.scan_range(Tree::Inbox, &keys::key_i32_u64(chat_id, from), &prefix) {
        if out.len() >= limit {
            break;
        }
        let (k, v) = e?;
        let Some((_, n)) = keys::decode_i32_u64(&k) else {
            continue;
        };
        out.push((n, records::decode(&v)?));
    }
    Ok(out)
}

/// Adds an output's records to `batch`: the chat records it names, outbox and gap entries.
pub fn write_output(batch: &mut Batch, chat: &Chat, out: &Output) -> Result<(), RecordError> {
    let id = chat.id();
    let st = chat.state();
    let c = out.changed;
    if c.auth {
        batch.put(
            Tree::Chats,
            chat_key(id, ChatPart::Auth),
            records::encode(st.auth())?,
        );
    }
    if c.config {
        batch.put(
            Tree::Chats,
            chat_key(id, ChatPart::Config),
            records::encode(st.config())?,
        );
    }
    if c.pfs {
        batch.put(
            Tree::Chats,
            chat_key(id, ChatPart::Pfs),
            records::encode(st.pfs())?,
        );
    }
    if c.seq {
        batch.put(
            Tree::Chats,
            chat_key(id, ChatPart::Seq),
            records::encode(st.seq())?,
        );
    }
    for e in &out.outbox_put {
        batch.put(
            Tree::Outbox,
            keys::key_i32_u32(id, e.out_raw),
            records::encode(e)?,
        );
    }
    for k in &out.outbox_remove {
        batch.remove(Tree::Outbox, keys::key_i32_u32(id, *k));
    }
    for q in &out.gap_put {
        batch.put(
            Tree::Gap,
            keys::key_i32_u32(id, q.out_raw),
            records::encode(q)?,
        );
    }
    for k in &out.gap_remove {
        batch.remove(Tree::Gap, keys::key_i32_u32(id, *k));
    }
    Ok(())
}

/// Adds events to the chat's inbox (numbered from `meta.next_event`), pruning beyond
/// [`records::INBOX_KEEP`]; the caller writes `meta`.
pub fn write_events(
    batch: &mut Batch,
    chat_id: i32,
    meta: &mut ChatMeta,
    events: &[Event],
) -> Result<(), RecordError> {
    for e in events {
        let n = meta.next_event;
        batch.put(
            Tree::Inbox,
            keys::key_i32_u64(chat_id, n),
            records::encode(e)?,
        );
        if n >= records::INBOX_KEEP {
            batch.remove(
                Tree::Inbox,
                keys::key_i32_u64(chat_id, n - records::INBOX_KEEP),
            );
        }
        meta.next_event = n + 1;
    }
    Ok(())
}

/// Adds the daemon's facts of a chat to `batch`.
pub fn write_meta(batch: &mut Batch, chat_id: i32, meta: &ChatMeta) -> Result<(), RecordError> {
    batch.put(
        Tree::Chats,
        chat_key(chat_id, ChatPart::Meta),
        records::encode(meta)?,
    );
    Ok(())
}

/// Adds a pending call (numbered from `meta.next_call`); returns its number.
pub fn write_call(
    batch: &mut Batch,
    chat_id: i32,
    meta: &mut ChatMeta,
    call: &PendingCall,
) -> Result<u64, RecordError> {
    let n = meta.next_call;
    batch.put(Tree::Meta, call_key(chat_id, n), records::encode(call)?);
    meta.next_call = n + 1;
    Ok(n)
}

/// Removes a pending call.
pub fn remove_call(batch: &mut Batch, chat_id: i32, n: u64) {
    batch.remove(Tree::Meta, call_key(chat_id, n));
}

/// Removes a processed inbound message.
pub fn remove_inbound(batch: &mut Batch, chat_id: i32, random_id: i64) {
    batch.remove(Tree::Inbound, keys::key_i32_i64(chat_id, random_id));
}

/// The ids of chats that owe Telegram a call.
pub fn chats_with_owed_calls(store: &Store) -> Result<std::collections::HashSet<i32>, DaemonError> {
    let mut ids = std::collections::HashSet::new();
    for e in store.scan_prefix(Tree::Meta, &call_prefix(None)) {
        let (k, _) = e?;
        if let Some((id, _)) = decode_call_key(&k) {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// The ids of chats with work pending at startup: unsent or unacknowledged messages, held
/// messages (a Resend to repeat), owed calls, unprocessed inbound messages.
pub fn chats_with_work(store: &Store) -> Result<Vec<i32>, DaemonError> {
    let mut ids = std::collections::BTreeSet::new();
    for tree in [Tree::Outbox, Tree::Gap, Tree::Inbound] {
        let mut last: Option<i32> = None;
        for e in store.scan_prefix(tree, &[]) {
            let (k, _) = e?;
            if let Some(id) = k.get(..4).and_then(keys::decode_i32)
                && last != Some(id)
            {
                ids.insert(id);
                last = Some(id);
            }
        }
    }
    ids.extend(chats_with_owed_calls(store)?);
    Ok(ids.into_iter().collect())
}
