//! The registry: one [`ChatActor`] per chat, started on demand.
//!
//! Only chats with work get an actor: at start, those with unsent or unacknowledged messages,
//! held messages, owed calls or unprocessed inbound messages; later, a chat whose message
//! arrives or that the application addresses. A store with 100,000 chats therefore starts
//! without reading them, and spends memory only on active chats.
//!
//! It also creates chats: ours (`requestEncryption`, after `getDhConfig`) and the peer's
//! (`encryptedChatRequested`, accepted at once by the accept policy or kept requested).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use grammers_tl_types::functions;
use secret_core::Role;
use secret_core::chat::{Chat, ChatRequest, Output};
use secret_core::dh::DhConfig;
use secret_core::rand::SystemRandom;

use crate::actor::{self, ChatActor};
use crate::chatstore::{self, LoadedChat};
use crate::error::DaemonError;
use crate::errors_api::ServiceError;
use crate::records::{self, ChatMeta, ChatUpdate, ChatUpdateKind, PendingCall};
use crate::shared::{ChatView, Decision, Shared, now};
use crate::store::{Batch, Tree};

/// The registry actor.
pub struct Registry {
    shared: Arc<Shared>,
    chats: HashMap<i32, Addr<ChatActor>>,
    creating: HashSet<i32>,
}

impl Registry {
    /// A registry over the shared context.
    pub fn new(shared: Arc<Shared>) -> Registry {
        Registry {
            shared,
            chats: HashMap::new(),
            creating: HashSet::new(),
        }
    }

    fn actor(
        &mut self,
        chat_id: i32,
        ctx: &mut Context<Self>,
    ) -> Result<Option<Addr<ChatActor>>, DaemonError> {
        if let Some(a) = self.chats.get(&chat_id)
            && a.connected()
        {
            return Ok(Some(a.clone()));
        }
        let Some(loaded) = chatstore::load(&self.shared.store, chat_id)? else {
            return Ok(None);
        };
        Ok(Some(self.spawn(loaded, ctx)?))
    }

    fn spawn(
        &mut self,
        loaded: LoadedChat,
        _ctx: &mut Context<Self>,
    ) -> Result<Addr<ChatActor>, DaemonError> {
        let id = loaded.chat.id();
        let a = ChatActor::new(Arc::clone(&self.shared), loaded)?.start();
        self.chats.insert(id, a.clone());
        Ok(a)
    }

    /// Stores a new chat with its first output and owed call, then starts its actor.
    fn create(
        &mut self,
        chat: Chat,
        out: Output,
        call: Option<PendingCall>,
        update_seq: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<i32, ServiceError>> {
        let id = chat.id();
        let mut batch = Batch::new();
        let mut meta = ChatMeta::default();
        let built = (|| -> Result<Vec<(u64, PendingCall)>, secret_core::record::RecordError> {
            // A new chat has no request yet.
            chatstore::write_output(&mut batch, &chat, &out, &Default::default())?;
            let mut owed = Vec::new();
            if let Some(c) = call {
                let n = chatstore::write_call(&mut batch, id, &mut meta, &c)?;
                owed.push((n, c));
            }
            for c in &out.calls {
                if let Some(p) = PendingCall::of(c) {
                    let n = chatstore::write_call(&mut batch, id, &mut meta, &p)?;
                    owed.push((n, p));
                }
            }
            chatstore::write_events(&mut batch, id, &mut meta, &out.events)?;
            chatstore::write_meta(&mut batch, id, &meta)?;
            Ok(owed)
        })();
        let owed = match built {
            Ok(o) => o,
            Err(e) => return Box::pin(fut::ready(Err(ServiceError::Internal(e.to_string())))),
        };
        if let Some(seq) = update_seq {
            batch.remove(Tree::Meta, records::update_key(seq));
        }
        let commit = self.shared.store.commit(batch);
        let events = out.events.clone();
        let _ = ctx;
        Box::pin(commit.into_actor(self).map(move |res, act, ctx| {
            act.creating.remove(&id);
            if let Err(e) = res {
                act.shared.fatal(format!("creating chat {id}: {e}"));
                return Err(ServiceError::Internal(e.to_string()));
            }
            let loaded = LoadedChat {
                chat,
                meta,
                calls: owed,
                inbound: Vec::new(),
                attached: Default::default(),
            };
            let view = ChatView {
                summary: loaded.chat.summary(),
                next_event: loaded.meta.next_event,
            };
            act.spawn(loaded, ctx).map_err(ServiceError::from)?;
            let announce = Arc::clone(&act.shared.announce);
            announce.chat_view(view);
            actix::spawn(async move { announce.chat_events(id, events).await });
            Ok(id)
        }))
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
}

/// Start the actors of every chat with pending work.
#[derive(Message)]
#[rtype(result = "Result<usize, DaemonError>")]
pub struct StartPending;

impl Handler<StartPending> for Registry {
    type Result = Result<usize, DaemonError>;

    fn handle(&mut self, _: StartPending, ctx: &mut Context<Self>) -> Self::Result {
        let ids = chatstore::chats_with_work(&self.shared.store)?;
        for id in &ids {
            self.actor(*id, ctx)?;
        }
        Ok(ids.len())
    }
}

/// Applies the chat updates stored and not yet applied when the daemon stopped: Telegram will
/// not send them again (the batch that stored them also stored the update state past them).
/// Sent once at start, after the daemon owns its bus name (so that what they announce, such
/// as `ChatRequested`, reaches clients matching on it) and before the update loop starts (so
/// they come before any update it takes); the number applied.
#[derive(Message)]
#[rtype(result = "Result<usize, DaemonError>")]
pub struct ApplyStoredUpdates;

impl Handler<ApplyStoredUpdates> for Registry {
    type Result = Result<usize, DaemonError>;

    fn handle(&mut self, _: ApplyStoredUpdates, ctx: &mut Context<Self>) -> Self::Result {
        let stored = chatstore::stored_updates(&self.shared.store)?;
        let n = stored.len();
        if n > 0 {
            tracing::info!(updates = n, "applying chat updates stored before the stop");
            self.handle(Updates(stored), ctx);
        }
        Ok(n)
    }
}

/// How long an update about a chat being created waits before it is looked at again.
const WHILE_CREATING: std::time::Duration = std::time::Duration::from_millis(50);

/// The actor of a chat (`None`: no such chat).
#[derive(Message)]
#[rtype(result = "Result<Option<Addr<ChatActor>>, DaemonError>")]
pub struct Get(pub i32);

impl Handler<Get> for Registry {
    type Result = Result<Option<Addr<ChatActor>>, DaemonError>;

    fn handle(&mut self, g: Get, ctx: &mut Context<Self>) -> Self::Result {
        self.actor(g.0, ctx)
    }
}

/// Inbound messages of these chats are in the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub Vec<i32>);

impl Handler<Inbound> for Registry {
    type Result = ();

    fn handle(&mut self, m: Inbound, ctx: &mut Context<Self>) {
        for id in m.0 {
            match self.actor(id, ctx) {
                Ok(Some(a)) => a.do_send(actor::InboundReady),
                Ok(None) => {
                    // A message for a chat we do not have (never ours, or forgotten): drop it.
                    drop_inbound(&self.shared, id);
                }
                Err(e) => self.shared.fatal(format!("chat {id}: {e}")),
            }
        }
    }
}

/// Removes the inbound messages of a chat the daemon does not have (never ours, or forgotten).
pub(crate) fn drop_inbound(shared: &Shared, chat_id: i32) {
    let mut batch = Batch::new();
    for (k, _) in shared
        .store
        .scan_prefix(Tree::Inbound, &crate::store::keys::key_i32(chat_id))
        .flatten()
    {
        batch.remove(Tree::Inbound, k);
    }
    tracing::debug!(chat_id, "messages for an unknown chat dropped");
    remove_moot(shared, batch);
}

/// Commits a batch nothing waits for (removals of what is moot); a failure stops the daemon.
pub(crate) fn remove_moot(shared: &Shared, batch: Batch) {
    let commit = shared.store.commit(batch);
    let fatal = shared.fatal_sender();
    actix::spawn(async move {
        if let Err(e) = commit.await {
            fatal(format!("a removal was not stored: {e}"));
        }
    });
}

/// Chat updates taken from Telegram (stored in the Meta tree under their seq).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Updates(pub Vec<(u64, ChatUpdate)>);

impl Handler<Updates> for Registry {
    type Result = ();

    fn handle(&mut self, m: Updates, ctx: &mut Context<Self>) {
        for (seq, u) in m.0 {
            match self.actor(u.chat_id, ctx) {
                Ok(Some(a)) => a.do_send(actor::ApplyUpdate { seq, kind: u.kind }),
                Ok(None) => match u.kind {
                    ChatUpdateKind::Requested {
                        access_hash,
                        admin_id,
                        participant_id,
                        g_a,
                    } if !self.creating.contains(&u.chat_id) => {
                        let req = ChatRequest {
                            chat_id: u.chat_id,
                            access_hash,
                            admin_id,
                            participant_id,
                            g_a,
                        };
                        self.creating.insert(u.chat_id);
                        let f = self.incoming(req, seq, ctx);
                        ctx.spawn(f.map(|r, _, _| {
                            if let Err(e) = r {
                                tracing::warn!(%e, "incoming chat request not taken");
                            }
                        }));
                    }
                    _ if self.creating.contains(&u.chat_id) => {
                        // The chat is being created (its request waits for the DH parameters,
                        // or its batch for the store): this update (the peer's discard, say)
                        // is for the chat it becomes, so it waits; its record stays stored.
                        ctx.notify_later(Updates(vec![(seq, u)]), WHILE_CREATING);
                    }
                    _ => {
                        // About a chat we do not have: nothing to do.
                        let mut b = Batch::new();
                        b.remove(Tree::Meta, records::update_key(seq));
                        remove_moot(&self.shared, b);
                    }
                },
                Err(e) => self.shared.fatal(format!("chat {}: {e}", u.chat_id)),
            }
        }
    }
}

impl Registry {
    fn incoming(
        &mut self,
        req: ChatRequest,
        seq: u64,
        _ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<i32, ServiceError>> {
        let shared = Arc::clone(&self.shared);
        let dh = async move { dh_config(&shared).await };
        Box::pin(dh.into_actor(self).then(move |dh, act, ctx| {
            let fail = |e: ServiceError| -> ResponseActFuture<Self, Result<i32, ServiceError>> {
                Box::pin(fut::ready(Err(e)))
            };
            let (dh, random) = match dh {
                Ok(d) => d,
                Err(e) => {
                    act.creating.remove(&req.chat_id);
                    return fail(e);
                }
            };
            let self_id = act
                .shared
                .link
                .session()
                .self_user()
                .unwrap_or(req.participant_id);
            let (mut chat, mut out) = match Chat::from_request(&req, self_id, dh, now()) {
                Ok(c) => c,
                Err(e) => {
                    // A request that can never be taken (a bad g_a): its record goes, or every
                    // start would try it again.
                    act.creating.remove(&req.chat_id);
                    let mut b = Batch::new();
                    b.remove(Tree::Meta, records::update_key(seq));
                    remove_moot(&act.shared, b);
                    return fail(ServiceError::InvalidArgument(e.to_string()));
                }
            };
            match act.shared.accept.decide(req.admin_id) {
                Decision::Accept => match chat.accept(&random, now(), &mut SystemRandom::new()) {
                    Ok(o) => out.merge(o),
                    Err(e) => tracing::warn!(%e, "accept failed"),
                },
                // Declined with the chat's creation: the discardEncryption is an owed call.
                Decision::Decline => out.merge(chat.discard(false)),
                Decision::Ask => {}
            }
            act.create(chat, out, None, Some(seq), ctx)
        }))
    }
}

/// Open a chat with a user (`requestEncryption`): the chat's id, or `None` while another call
/// makes a chat under the same chosen id.
#[derive(Message)]
#[rtype(result = "Result<Option<i32>, ServiceError>")]
pub struct RequestChat {
    /// The user.
    pub user_id: i64,
    /// Their access hash (0 if unknown).
    pub access_hash: i64,
    /// The chat id the caller chose (`requestEncryption`'s `random_id`), so that a retry after
    /// a lost answer finds the chat it made instead of opening another; `None`: a fresh one.
    pub chat_id: Option<i32>,
}

/// What a chat id the caller chose is, before anything is created.
enum Chosen {
    /// No chat has it: this call makes the chat.
    Free,
    /// This caller's chat already (the same request again): its id.
    Made(i32),
    /// Another call is making a chat under it right now: ask again in a moment.
    Busy,
}

fn chosen_chat(act: &Registry, id: i32, user_id: i64) -> Result<Chosen, ServiceError> {
    if act.creating.contains(&id) {
        return Ok(Chosen::Busy);
    }
    let Some(view) = chatstore::load_view(&act.shared.store, id)? else {
        return Ok(Chosen::Free);
    };
    let s = &view.summary;
    if s.role == Role::Creator && s.peer_user_id == user_id {
        Ok(Chosen::Made(id))
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "chat id {id} is another chat's"
        )))
    }
}

/// The chat made (its id), or `None` while another call makes a chat under the same chosen id
/// (the caller asks again: [`crate::service::Service::request_chat`] does).
type Requested = Result<Option<i32>, ServiceError>;

impl Handler<RequestChat> for Registry {
    type Result = ResponseActFuture<Self, Requested>;

    fn handle(&mut self, r: RequestChat, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(id) = r.chat_id {
            match chosen_chat(self, id, r.user_id) {
                // Reserved from now on, so that a call asking again meanwhile waits for this
                // one rather than making a second chat.
                Ok(Chosen::Free) => {
                    self.creating.insert(id);
                }
                Ok(Chosen::Made(id)) => return Box::pin(fut::ready(Ok(Some(id)))),
                Ok(Chosen::Busy) => return Box::pin(fut::ready(Ok(None))),
                Err(e) => return Box::pin(fut::ready(Err(e))),
            }
        }
        let shared = Arc::clone(&self.shared);
        let dh = async move {
            let self_id = who_am_i(&shared).await?;
            dh_config(&shared).await.map(|d| (self_id, d))
        };
        Box::pin(dh.into_actor(self).then(move |dh, act, ctx| {
            let fail =
                |act: &mut Registry, e: ServiceError| -> ResponseActFuture<Self, Requested> {
                    if let Some(id) = r.chat_id {
                        act.creating.remove(&id);
                    }
                    Box::pin(fut::ready(Err(e)))
                };
            let (self_id, (dh, random)) = match dh {
                Ok(d) => d,
                Err(e) => return fail(act, e),
            };
            let mut rng = SystemRandom::new();
            let id = match r.chat_id {
                Some(id) => id,
                None => {
                    let mut id = secret_core::chat::random_chat_id(&mut rng);
                    while act.chats.contains_key(&id)
                        || act.creating.contains(&id)
                        || chatstore::exists(&act.shared.store, id).unwrap_or(true)
                    {
                        id = secret_core::chat::random_chat_id(&mut rng);
                    }
                    id
                }
            };
            let created = Chat::request(id, self_id, r.user_id, dh, &random, now(), &mut rng);
            let (chat, req, out) = match created {
                Ok(c) => c,
                Err(e) => return fail(act, ServiceError::Internal(e.to_string())),
            };
            act.creating.insert(id);
            let call = PendingCall::RequestEncryption {
                user_id: req.user_id,
                access_hash: r.access_hash,
                random_id: req.random_id,
                g_a: req.g_a,
            };
            Box::pin(
                act.create(chat, out, Some(call), None, ctx)
                    .map(|r, _, _| r.map(Some)),
            )
        }))
    }
}

/// Our user id (learned from Telegram if the session does not have it yet).
async fn who_am_i(shared: &Shared) -> Result<i64, ServiceError> {
    if let Some(id) = shared.link.session().self_user() {
        return Ok(id);
    }
    shared.link.learn_self().await.map_err(|e| match e.class {
        tglink::ErrorClass::LoggedOut => ServiceError::NotLoggedIn,
        _ => ServiceError::Internal(format!("cannot reach Telegram: {e}")),
    })
}

/// `messages.getDhConfig`, validated and cached; the parameters and the server's random.
async fn dh_config(shared: &Shared) -> Result<(DhConfig, Vec<u8>), ServiceError> {
    let version = shared.dh().latest().map_or(0, |c| c.version);
    let mut backoff = std::time::Duration::from_millis(200);
    let answer = loop {
        match shared
            .link
            .invoke(&functions::messages::GetDhConfig {
                version,
                random_length: 256,
            })
            .await
        {
            Ok(a) => break a,
            Err(e) if e.class.is_retry() => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) if e.class == tglink::ErrorClass::LoggedOut => {
                return Err(ServiceError::NotLoggedIn);
            }
            Err(e) => return Err(ServiceError::Internal(e.to_string())),
        }
    };
    let mut cache = shared.dh();
    tglink::convert::dh_config(&answer, &mut cache)
        .map_err(|e| ServiceError::Internal(format!("Telegram's DH parameters: {e}")))
}
