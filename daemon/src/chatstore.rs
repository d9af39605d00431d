//! A chat's records in the store: loading a chat, turning an [`Output`] into writes, and
//! finding a chat's open requests.
//!
//! The only place that knows the key layout of a chat (see [`crate::records`]).

use secret_core::chat::{Chat, ChatState, Event, Output, QueuedMessage};
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
    /// The request records kept inside outbox entries, by the entry's out_raw (each maybe
    /// superseded by a record in `Requests`: see [`open_requests`]).
    pub attached: std::collections::HashMap<u32, RequestRecord>,
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

/// A request by id, open or final: its record in `Requests`, else the one inside its first
/// message's outbox entry (an open request of this layout).
///
/// Read in that order, and `Requests` once more when neither had it: the actor moves an open
/// request's record from its outbox entry to `Requests` in one batch (its first message left
/// the outbox), and sled reads are not a snapshot of both trees.
pub fn request_by_id(store: &Store, id: u64) -> Result<Option<RequestRecord>, DaemonError> {
    let key = records::request_key(id);
    if let Some(r) = get(store, Tree::Requests, &key)? {
        return Ok(Some(r));
    }
    let Some((chat_id, out_raw)) = records::request_slot(id) else {
        return Ok(None);
    };
    if let Some(r) = attached_request(store, chat_id, out_raw)? {
        return Ok(Some(r));
    }
    get(store, Tree::Requests, &key)
}

/// The request record inside the outbox entry at (chat, out_raw), if there is one.
fn attached_request(
    store: &Store,
    chat_id: i32,
    out_raw: u32,
) -> Result<Option<RequestRecord>, DaemonError> {
    let Some(b) = store.get(Tree::Outbox, &keys::key_i32_u32(chat_id, out_raw))? else {
        return Ok(None);
    };
    let (_, attached) = records::decode_outbox(&b)?;
    checked_attachment(chat_id, out_raw, attached)
}

/// An attached request must be the one its entry's slot names.
fn checked_attachment(
    chat_id: i32,
    out_raw: u32,
    attached: Option<RequestRecord>,
) -> Result<Option<RequestRecord>, DaemonError> {
    match attached {
        Some(r) if r.id != records::message_request_id(chat_id, out_raw) => {
            Err(DaemonError::Corrupt(format!(
                "chat {chat_id}: the outbox entry at {out_raw} carries request {}",
                r.id
            )))
        }
        other => Ok(other),
    }
}

/// The request a message of `chat_id` (its outbox slot, random_id and the request record its
/// entry carries, if any) belongs to, if it is still open (not final).
///
/// An open request has no index (see `records`): its id is its first message's slot
/// ([`records::message_request_id`]), and its later messages (the chunks of a long text) took
/// the slots after it in the same actor turn. So it is the record in `Requests` at this slot
/// (which wins), else the one inside this entry, else the last one in `Requests` below this
/// slot in the chat (a request whose first message left the outbox while it was open). A
/// request stored before that layout is found through the request index, written when it was
/// accepted.
fn open_request_of(
    store: &Store,
    chat_id: i32,
    out_raw: u32,
    random_id: i64,
    attached: Option<RequestRecord>,
) -> Result<Option<RequestRecord>, DaemonError> {
    let has = |r: &RequestRecord| r.parts.iter().any(|p| p.random_id == random_id);
    let key = records::request_key(records::message_request_id(chat_id, out_raw));
    let found: Option<RequestRecord> = match get(store, Tree::Requests, &key)? {
        Some(r) => Some(r),
        None => match checked_attachment(chat_id, out_raw, attached)? {
            Some(r) => Some(r),
            None => match store.last_before(Tree::Requests, &key, &key[..4])? {
                Some((_, v)) => Some(records::decode(&v)?),
                None => None,
            },
        },
    };
    let found = match found.filter(has) {
        Some(r) => Some(r),
        None => request_of(store, chat_id, random_id)?,
    };
    Ok(found.filter(|r| !r.is_final()))
}

/// The open (not final) requests among those of the given outbox messages (slot, random_id),
/// by id; `attached` holds the request records their entries carry, by slot.
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
    mut attached: std::collections::HashMap<u32, RequestRecord>,
) -> Result<std::collections::HashMap<u64, RequestRecord>, DaemonError> {
    let mut open = std::collections::HashMap::new();
    for (out_raw, random_id) in messages {
        let carried = attached.remove(&out_raw);
        if let Some(r) = open_request_of(store, chat_id, out_raw, random_id, carried)? {
            open.insert(r.id, r);
        }
    }
    Ok(open)
}

/// Every open request of every chat (read once at start, for the handles to export and hold),
/// from the whole outbox (see [`open_requests`]).
pub fn all_open_requests(store: &Store) -> Result<Vec<RequestRecord>, DaemonError> {
    let mut open = std::collections::BTreeMap::new();
    for e in store.scan_prefix(Tree::Outbox, &[]) {
        let (k, v) = e?;
        let Some((chat_id, out_raw)) = keys::decode_i32_u32(&k) else {
            continue;
        };
        let (entry, attached) = records::decode_outbox(&v)?;
        // Not only `from_app` entries: an application's RequestKey / AbortKey is stored as
        // the chat's own message, and it belongs to a request too.
        if let Some(r) = open_request_of(store, chat_id, out_raw, entry.random_id, attached)? {
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
    let mut outbox = Vec::new();
    let mut attached = std::collections::HashMap::new();
    for e in store.scan_prefix(Tree::Outbox, &prefix) {
        let (_, v) = e?;
        let (entry, request) = records::decode_outbox(&v)?;
        if let Some(r) = checked_attachment(chat_id, entry.out_raw, request)? {
            attached.insert(entry.out_raw, r);
        }
        outbox.push(entry);
    }
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
        attached,
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
    chat_ids_upto(store, usize::MAX)
}

/// The first `limit` stored chat ids, in numeric order (the scan stops there).
pub fn chat_ids_upto(store: &Store, limit: usize) -> Result<Vec<i32>, DaemonError> {
    let mut out = Vec::new();
    for e in store.scan_prefix(Tree::Chats, &[]) {
        if out.len() >= limit {
            break;
        }
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
///
/// `open` are the chat's open requests, by id: the outbox entry of an open request's first
/// message carries the request's record, and when that entry leaves the outbox while the
/// request is open, the record moves to `Requests` in the same batch (see `records`).
pub fn write_output(
    batch: &mut Batch,
    chat: &Chat,
    out: &Output,
    open: &std::collections::HashMap<u64, RequestRecord>,
) -> Result<(), RecordError> {
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
    write_outbox(batch, id, out, open)?;
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

/// The outbox part of [`write_output`]: an entry of an open request's first message carries
/// the request's record; removing such an entry moves the record to `Requests`.
fn write_outbox(
    batch: &mut Batch,
    id: i32,
    out: &Output,
    open: &std::collections::HashMap<u64, RequestRecord>,
) -> Result<(), RecordError> {
    let opened_at = |out_raw: u32| open.get(&records::message_request_id(id, out_raw));
    for e in &out.outbox_put {
        batch.put(
            Tree::Outbox,
            keys::key_i32_u32(id, e.out_raw),
            records::encode_outbox(e, opened_at(e.out_raw))?,
        );
    }
    for k in &out.outbox_remove {
        if let Some(r) = opened_at(*k) {
            batch.put(
                Tree::Requests,
                records::request_key(r.id),
                records::encode(r)?,
            );
        }
        batch.remove(Tree::Outbox, keys::key_i32_u32(id, *k));
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

/// Batches of at most this many removals when a chat is forgotten.
const FORGET_CHUNK: usize = 1024;

/// Whether the chat owes Telegram a call (stored).
pub fn owes_calls(store: &Store, chat_id: i32) -> Result<bool, DaemonError> {
    match store
        .scan_prefix(Tree::Meta, &call_prefix(Some(chat_id)))
        .next()
    {
        Some(e) => e.map(|_| true).map_err(DaemonError::from),
        None => Ok(false),
    }
}

/// Removes everything stored for a chat (`Manager1.ForgetChat`; its actor checked that it is
/// closed and owes Telegram nothing, and stops after this). First its requests (each record,
/// its random_id index entries and its handle index; a result not announced yet stays), in
/// batches of [`FORGET_CHUNK`]; then, in one last batch, the chat's own records (Chats,
/// Outbox, Gap, Inbox, Inbound), so the chat is gone at once. A crash in between leaves the
/// chat with fewer of its results, and a repeat finishes. The owners of the random_ids its
/// callers chose stay (Meta `r`): Telegram still refuses them.
pub async fn forget(store: &std::sync::Arc<Store>, chat_id: i32) -> Result<(), DaemonError> {
    // The reads go off the runtime's threads (a chat may have many results).
    let reader = std::sync::Arc::clone(store);
    let (requests, own) = tokio::task::spawn_blocking(move || forget_keys(&reader, chat_id))
        .await
        .map_err(|_| DaemonError::Stopping)??;
    for chunk in requests.chunks(FORGET_CHUNK) {
        let mut batch = Batch::new();
        for (tree, k) in chunk {
            batch.remove(*tree, k);
        }
        store.commit(batch).await?;
    }
    let mut batch = Batch::new();
    for (tree, k) in &own {
        batch.remove(*tree, k);
    }
    store.commit(batch).await?;
    Ok(())
}

/// What [`forget`] removes: the keys of the chat's requests, then those of the chat itself.
type ForgetKeys = (Vec<(Tree, Vec<u8>)>, Vec<(Tree, Vec<u8>)>);

fn forget_keys(store: &Store, chat_id: i32) -> Result<ForgetKeys, DaemonError> {
    let prefix = keys::key_i32(chat_id);
    let mut ids = std::collections::BTreeSet::new();
    let mut requests: Vec<(Tree, Vec<u8>)> = Vec::new();
    for e in store.scan_prefix(Tree::RequestIndex, &prefix) {
        let (k, v) = e?;
        if let Ok(id) = <[u8; 8]>::try_from(v.as_slice()) {
            ids.insert(u64::from_be_bytes(id));
        }
        requests.push((Tree::RequestIndex, k));
    }
    // This layout's ids start with the chat (see `records::message_request_id`).
    for e in store.scan_prefix(Tree::Requests, &(chat_id as u32).to_be_bytes()) {
        let (k, _) = e?;
        if let Some(id) = <[u8; 8]>::try_from(k.as_slice())
            .ok()
            .map(u64::from_be_bytes)
            && records::request_slot(id).is_some_and(|(c, _)| c == chat_id)
        {
            ids.insert(id);
        }
    }
    for id in ids {
        // A result whose Response has not gone out yet stays (with its handle index), so
        // that its one Response still goes out; the announcer removes it then (the chat is
        // gone: see `dbus::respond`).
        if store.get(Tree::Meta, &records::announce_key(id))?.is_some() {
            continue;
        }
        if let Some(r) = get::<RequestRecord>(store, Tree::Requests, &records::request_key(id))?
            && r.chat_id == chat_id
        {
            requests.push((Tree::Meta, records::handle_key(&r.handle)));
        }
        requests.push((Tree::Requests, records::request_key(id).to_vec()));
    }
    let mut own = Vec::new();
    for tree in [
        Tree::Outbox,
        Tree::Gap,
        Tree::Inbox,
        Tree::Inbound,
        Tree::Chats,
    ] {
        for e in store.scan_prefix(tree, &prefix) {
            own.push((tree, e?.0));
        }
    }
    Ok((requests, own))
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

/// The chat updates the update loop stored and no chat has applied yet (each is removed in the
/// batch that applies it), in the order they came: `(update seq, update)`. Their batch also
/// stored the update state past them, so Telegram will not send them again: a stop between
/// storing and applying leaves them to the next start. A key of another length, or a value
/// that does not decode, is skipped (and logged): one bad record must not keep the daemon from
/// starting. A store that cannot be read is an error.
pub fn stored_updates(store: &Store) -> Result<Vec<(u64, records::ChatUpdate)>, DaemonError> {
    let mut out = Vec::new();
    for e in store.scan_prefix(Tree::Meta, records::UPDATE_PREFIX) {
        let (k, v) = e?;
        let Some(seq) = records::decode_update_key(&k) else {
            continue;
        };
        match records::decode::<records::ChatUpdate>(&v) {
            Ok(u) => out.push((seq, u)),
            Err(e) => tracing::error!(update = seq, error = %e, "a stored chat update skipped"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secret_core::chat::{OutboxEntry, SendMethod};

    use super::*;
    use crate::records::{RequestPart, RequestStatus};
    use crate::store::batch::OpKind;

    const CHAT: i32 = -5;

    fn entry(out_raw: u32, random_id: i64) -> OutboxEntry {
        OutboxEntry {
            out_raw,
            in_raw: 0,
            random_id,
            method: SendMethod::SendEncryptedService,
            data: vec![1, 2, 3],
            layer: 144,
            from_app: true,
            created_at: 1,
            sent_date: None,
        }
    }

    /// An open request of two messages, at slots 7 and 8.
    fn request() -> RequestRecord {
        let part = |out_raw: u32, random_id| RequestPart {
            random_id,
            out_seq_no: (out_raw * 2) as i32,
            in_seq_no: 0,
            layer: 144,
            date: None,
        };
        RequestRecord {
            id: records::message_request_id(CHAT, 7),
            chat_id: CHAT,
            method: SendMethod::SendEncryptedService,
            parts: vec![part(7, 70), part(8, 80)],
            status: RequestStatus::Pending,
            handle: "/h".into(),
            created_at: 1,
            announced: false,
            json: false,
        }
    }

    /// The batch's writes: (tree, key, value; `None` for a removal).
    fn writes(b: &Batch) -> Vec<(Tree, Vec<u8>, Option<Vec<u8>>)> {
        b.ops()
            .iter()
            .map(|op| {
                let v = match &op.kind {
                    OpKind::Put(v) | OpKind::PutIfAbsent(v) => Some(v.to_vec()),
                    OpKind::Remove => None,
                };
                (op.tree, op.key.to_vec(), v)
            })
            .collect()
    }

    #[test]
    fn the_first_entry_of_an_open_request_carries_it_and_no_other_does() {
        let r = request();
        let open = HashMap::from([(r.id, r.clone())]);
        let out = Output {
            outbox_put: vec![entry(7, 70), entry(8, 80), entry(9, 90)],
            ..Output::default()
        };
        let mut b = Batch::new();
        write_outbox(&mut b, CHAT, &out, &open).expect("written");
        let w = writes(&b);
        assert_eq!(
            w.len(),
            3,
            "three outbox entries, nothing in Requests: {w:?}"
        );
        let read = |i: usize| {
            assert_eq!(w[i].0, Tree::Outbox);
            records::decode_outbox(w[i].2.as_deref().expect("a put")).expect("an outbox value")
        };
        assert_eq!(read(0), (entry(7, 70), Some(r.clone())));
        // Version 2's bytes: the version, then the entry's and the request's postcard bodies
        // (each after its own one-byte version in a record of its own).
        let body = |v: Vec<u8>| v.get(1..).map(<[u8]>::to_vec).expect("a versioned record");
        let mut v2 = vec![2u8];
        v2.extend(body(records::encode(&entry(7, 70)).expect("encoded")));
        v2.extend(body(records::encode(&r).expect("encoded")));
        assert_eq!(w[0].2.as_deref(), Some(v2.as_slice()));
        assert_eq!(read(1), (entry(8, 80), None));
        assert_eq!(read(2), (entry(9, 90), None));
        // An entry alone keeps the old layout's bytes.
        assert_eq!(
            w[1].2.as_deref(),
            Some(records::encode(&entry(8, 80)).expect("encoded").as_slice())
        );
        // Nothing open: nothing carried.
        let mut b = Batch::new();
        write_outbox(&mut b, CHAT, &out, &HashMap::new()).expect("written");
        assert!(writes(&b).iter().all(|(_, _, v)| {
            records::decode_outbox(v.as_deref().expect("a put"))
                .expect("an outbox value")
                .1
                .is_none()
        }));
    }

    #[test]
    fn removing_the_first_entry_of_an_open_request_moves_it_to_requests() {
        let r = request();
        let open = HashMap::from([(r.id, r.clone())]);
        let out = Output {
            outbox_remove: vec![7, 8],
            ..Output::default()
        };
        let mut b = Batch::new();
        write_outbox(&mut b, CHAT, &out, &open).expect("written");
        let moved = (
            Tree::Requests,
            records::request_key(r.id).to_vec(),
            Some(records::encode(&r).expect("encoded")),
        );
        let gone = |slot| (Tree::Outbox, keys::key_i32_u32(CHAT, slot).to_vec(), None);
        assert_eq!(writes(&b), vec![moved, gone(7), gone(8)]);
        // Not open (final, or never this layout's): a removal only.
        let mut b = Batch::new();
        write_outbox(&mut b, CHAT, &out, &HashMap::new()).expect("written");
        assert_eq!(writes(&b), vec![gone(7), gone(8)]);
    }

    #[test]
    fn an_outbox_value_of_an_unknown_version_or_a_misplaced_request_is_refused() {
        let mut v = records::encode(&entry(7, 70)).expect("encoded");
        v[0] = 9;
        assert!(matches!(
            records::decode_outbox(&v),
            Err(RecordError::Version { found: 9, .. })
        ));
        let r = request();
        assert!(checked_attachment(CHAT, 7, Some(r.clone())).is_ok());
        assert!(matches!(
            checked_attachment(CHAT, 8, Some(r)),
            Err(DaemonError::Corrupt(_))
        ));
    }
}
