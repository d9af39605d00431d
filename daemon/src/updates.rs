//! The update loop: Telegram's updates made durable before they are acknowledged.
//!
//! Per batch (one pushed `Updates` or one getDifference answer): the encrypted messages go to
//! the Inbound tree (insert-if-absent by (chat, random_id), so a message that comes twice is
//! stored once), the chat updates to the Meta tree, and grammers' update state (staged, see
//! `tglink::session`) into **the same** commit; only once it is durable is the qts acknowledged
//! (`messages.receivedQueue`) and the next batch read. A crash before the commit replays the
//! batch; after it, nothing repeats and nothing is lost. Then the chats are told: each chat
//! update's record is removed in the batch that applies it, and a record a stop left is
//! applied at the next start (`registry::StartPending`), since the stored update state is past
//! it and Telegram will not send it again.
//!
//! `updateEncryption` has no sequence number, so a lost one is only found through
//! getDifference: the loop forces one when it has been idle for [`IDLE_DIFFERENCE`] (and the
//! chats force one after request / accept / discard answers and after I/O errors).

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use grammers_tl_types::{enums, functions};
use tglink::convert;
use tglink::{CallError, ErrorClass, Updates};

use crate::records::{self, ChatUpdate, ChatUpdateKind, InboundMessage, SessionRecord};
use crate::registry::{self, Registry};
use crate::shared::Shared;
use crate::store::{Batch, Tree, keys};

/// A getDifference is forced after this long without updates.
pub const IDLE_DIFFERENCE: Duration = Duration::from_secs(20);

/// Runs until the link stops (a logged-out account pauses it until a login completes).
pub async fn run(shared: Arc<Shared>, mut updates: Updates, registry: Addr<Registry>) {
    let mut acked_qts = 0;
    let mut backoff = Duration::from_millis(200);
    let mut update_seq = next_update_seq(&shared);
    loop {
        let epoch = shared.login_epoch();
        let batch = match tokio::time::timeout(IDLE_DIFFERENCE, updates.next()).await {
            Err(_) => {
                shared.link.force_difference();
                continue;
            }
            Ok(Ok(b)) => {
                backoff = Duration::from_millis(200);
                shared.answered(epoch);
                b
            }
            Ok(Err(e)) => {
                if !wait_after(&shared, &e, epoch, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let staged = match updates.stage_state().await {
            // An unchanged state (an empty difference while idle) is not written again.
            Ok(Some(s)) if s == shared.link.session().snapshot() => None,
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "update state not staged");
                None
            }
        };
        let taken = take(&shared, &batch, &mut update_seq);
        let mut write = taken.batch;
        if let Some(s) = &staged {
            match records::encode(&SessionRecord::from_snapshot(s)) {
                Ok(b) => {
                    write.put(Tree::Session, records::SESSION_KEY, b);
                }
                Err(e) => {
                    shared.fatal(format!("session record: {e}"));
                    return;
                }
            }
        }
        if !write.is_empty()
            && let Err(e) = shared.store.commit(write).await
        {
            shared.fatal(format!("update batch not stored: {e}"));
            return;
        }
        if let Some(s) = &staged {
            shared.link.session().committed(s);
            if s.qts > acked_qts {
                acked_qts = s.qts;
                acknowledge(&shared, s.qts).await;
            }
        }
        if !taken.chats.is_empty() {
            registry.do_send(registry::Inbound(taken.chats));
        }
        if !taken.updates.is_empty() {
            registry.do_send(registry::Updates(taken.updates));
        }
    }
}

/// What a batch gave.
struct Taken {
    batch: Batch,
    chats: Vec<i32>,
    updates: Vec<(u64, ChatUpdate)>,
}

fn take(shared: &Shared, updates: &[enums::Update], update_seq: &mut u64) -> Taken {
    let mut t = Taken {
        batch: Batch::new(),
        chats: Vec::new(),
        updates: Vec::new(),
    };
    for u in updates {
        match u {
            enums::Update::NewEncryptedMessage(m) => {
                let (chat_id, msg) = convert::incoming_encrypted(&m.message);
                let rec = InboundMessage {
                    seq: shared.inbound_seq(),
                    date: msg.date,
                    data: msg.data,
                };
                if let Ok(b) = records::encode(&rec) {
                    t.batch.put_if_absent(
                        Tree::Inbound,
                        keys::key_i32_i64(chat_id, msg.random_id),
                        b,
                    );
                    if !t.chats.contains(&chat_id) {
                        t.chats.push(chat_id);
                    }
                }
            }
            enums::Update::Encryption(e) => {
                let Some(kind) = update_kind(&e.chat) else {
                    continue;
                };
                let cu = ChatUpdate {
                    chat_id: convert::encrypted_chat_id(&e.chat),
                    kind,
                };
                if let Ok(b) = records::encode(&cu) {
                    tracing::debug!(
                        chat = cu.chat_id,
                        update = *update_seq,
                        kind = cu.kind.name(),
                        "chat update taken"
                    );
                    t.batch.put(Tree::Meta, records::update_key(*update_seq), b);
                    t.updates.push((*update_seq, cu));
                    *update_seq += 1;
                }
            }
            _ => {}
        }
    }
    t
}

fn update_kind(chat: &enums::EncryptedChat) -> Option<ChatUpdateKind> {
    if let Some(r) = convert::chat_request(chat) {
        return Some(ChatUpdateKind::Requested {
            access_hash: r.access_hash,
            admin_id: r.admin_id,
            participant_id: r.participant_id,
            g_a: r.g_a,
        });
    }
    convert::remote_chat(chat).map(ChatUpdateKind::Remote)
}

fn next_update_seq(shared: &Shared) -> u64 {
    shared
        .store
        .last_with_prefix(Tree::Meta, records::UPDATE_PREFIX)
        .ok()
        .flatten()
        .and_then(|(k, _)| k.get(1..).and_then(|b| <[u8; 8]>::try_from(b).ok()))
        .map_or(0, |b| u64::from_be_bytes(b) + 1)
}

/// `messages.receivedQueue(max_qts)`: Telegram may drop what we have stored. Failures are
/// harmless (the messages come again and are stored once), so they are only logged.
async fn acknowledge(shared: &Shared, qts: i32) {
    if let Err(e) = shared
        .link
        .invoke(&functions::messages::ReceivedQueue { max_qts: qts })
        .await
    {
        tracing::debug!(error = %e, "receivedQueue");
    }
}

/// After a failed `next()`: waits as the error's class says; false if the loop must end.
///
/// A logged-out answer to a call made before a login completed (`epoch`) is stale: the loop
/// goes on at once.
async fn wait_after(shared: &Shared, e: &CallError, epoch: u64, backoff: &mut Duration) -> bool {
    match e.class {
        ErrorClass::RetryAfter(d) => tokio::time::sleep(d).await,
        ErrorClass::LoggedOut => {
            if shared.logged_out_since(epoch, e) {
                tracing::warn!(error = %e, "the account is logged out: updates wait for a login");
                shared.until_logged_in().await;
                tracing::info!("logged in again: updates go on");
            }
        }
        _ => {
            tracing::debug!(error = %e, "updates: trying again");
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(Duration::from_secs(30));
        }
    }
    true
}
