//! The daemon's API (what D-Bus, and later the CLI, call): validation before anything is
//! stored, the peer forms, splitting long texts, and the requests' results.
//!
//! `send_encrypted_service(peer, message, options)`:
//! 1. the peer is resolved to a chat (a secret chat id, an `inputEncryptedChat`, an
//!    `encryptedMessage*`, an `updateEncryption` / `updateNewEncryptedMessage`, in TL or in the
//!    project's MadelineProto-style JSON), the message is checked (a `DecryptedMessage`, at most
//!    [`MAX_INPUT_BYTES`]) — errors here are returned at once and nothing is stored;
//! 2. a text `decryptedMessage` over [`MAX_TEXT_CHARS`] characters (Unicode code points, as
//!    TDLib counts) is split into ordered chunks, entities clipped to their chunk;
//! 3. the chat's actor assigns the seq numbers, stores the request with the messages, and the
//!    handle is returned once that is durable; a retry with the same random_id returns the first
//!    handle and sends nothing.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Addr;
use secret_core::chat::{SendMethod, Status};
use secret_core::tl::enums::{self as e2e, DecryptedMessage};
use secret_core::tl::{Deserializable, TlJson};
use serde_json::Value;

use crate::actor::{self, Accepted};
use crate::chatstore;
use crate::errors_api::ServiceError;
use crate::records::{self, RequestRecord};
use crate::registry::{self, Registry};
use crate::shared::{ChatView, Shared};
use crate::store::{Batch, Store, Tree};

/// How many times `auth.logOut` is sent again after a transient failure.
const LOGOUT_RETRIES: u32 = 1;

/// The longest text sent as one message; longer ones are split.
pub const MAX_TEXT_CHARS: usize = 4096;
/// The largest message accepted from a caller (a long text, before it is split).
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// How to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// `messages.sendEncrypted` instead of `messages.sendEncryptedService`.
    pub notify: bool,
    /// The message's random_id (for idempotent retries); overrides the message's own.
    pub random_id: Option<i64>,
    /// The handle to give the request.
    pub handle: String,
    /// Made through `Call`: the Response carries the result as JSON too.
    pub json: bool,
}

/// The daemon's API.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
    registry: Addr<Registry>,
    /// The chat actors the registry handed out, so that a call finds a running actor without
    /// a round trip through the registry's thread. Only a hint: an address whose actor
    /// stopped is asked for again (the registry stays the one place that starts actors).
    actors: Arc<std::sync::Mutex<HashMap<i32, Addr<actor::ChatActor>>>>,
}

/// Addresses kept before the cache drops those of stopped actors.
const ACTOR_CACHE_PRUNE: usize = 4096;

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// The API over a running registry.
    pub fn new(shared: Arc<Shared>, registry: Addr<Registry>) -> Service {
        Service {
            shared,
            registry,
            actors: Arc::default(),
        }
    }

    /// The shared context.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sends a whole `DecryptedMessage` to the chat `peer` names (see the module docs).
    pub async fn send_encrypted_service(
        &self,
        peer: Peer,
        message: DecryptedMessage,
        options: SendOptions,
    ) -> Result<Accepted, ServiceError> {
        let chat_id = self.resolve(&peer)?;
        let method = if options.notify {
            SendMethod::SendEncrypted
        } else {
            SendMethod::SendEncryptedService
        };
        let (parts, idempotency) = prepare(message, options.random_id, method)?;
        // Held until the request is accepted (its owner key is then durable) or refused.
        let _claim = match idempotency {
            Some(i) => Some(
                self.shared
                    .claim_random_id(i.random_id, chat_id, i.digest)?,
            ),
            None => None,
        };
        let cmd = |parts| actor::SendCmd {
            parts,
            method,
            idempotency,
            handle: options.handle.clone(),
            json: options.json,
        };
        // Queued without waiting for the actor; the answer comes from the actor (a refusal) or
        // from the store's writer (the handle). A command the actor never handled (it stopped
        // for idleness with the command in its mailbox) is queued again to a started actor.
        for _ in 0..2 {
            let actor = self.chat_actor(chat_id).await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let queued = match actor.try_send(actor::Submit(cmd(parts.clone()), tx)) {
                Ok(()) => true,
                // A full mailbox: wait for room (backpressure).
                Err(actix::prelude::SendError::Full(m)) => actor.send(m).await.is_ok(),
                Err(actix::prelude::SendError::Closed(_)) => false,
            };
            if queued && let Ok(answer) = rx.await {
                return answer;
            }
            self.forget_actor(chat_id);
        }
        Err(ServiceError::Internal(
            "the chat's actor keeps stopping".into(),
        ))
    }

    /// Opens a secret chat with a user; the chat id once its creation is durable.
    pub async fn request_chat(
        &self,
        user_id: i64,
        access_hash: i64,
        chat_id: Option<i32>,
    ) -> Result<i32, ServiceError> {
        self.check_new_chat(user_id)?;
        if let Some(id) = chat_id {
            check_chosen_chat_id(id)?;
        }
        // A call asking again under a chosen chat id while another makes that chat waits for
        // it (then gets the chat, or makes it if the other failed).
        let deadline = std::time::Instant::now() + CHOSEN_ID_PATIENCE;
        loop {
            let made = self
                .registry
                .send(registry::RequestChat {
                    user_id,
                    access_hash,
                    chat_id,
                })
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))??;
            if let Some(id) = made {
                return Ok(id);
            }
            if std::time::Instant::now() > deadline {
                return Err(ServiceError::WrongState(format!(
                    "chat {} is still being made by another call: ask again",
                    chat_id.unwrap_or(0)
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Whether a chat with `user_id` may be requested: logged in, a user id (positive), not
    /// this account's own. Refused here rather than stored as a chat that Telegram discards a
    /// moment later (USER_ID_INVALID).
    pub fn check_new_chat(&self, user_id: i64) -> Result<(), ServiceError> {
        if self.shared.logged_out() {
            return Err(ServiceError::NotLoggedIn);
        }
        if user_id <= 0 {
            return Err(ServiceError::InvalidArgument(format!(
                "user_id {user_id}: Telegram's user ids are positive"
            )));
        }
        if self.shared.link.session().self_user() == Some(user_id) {
            return Err(ServiceError::InvalidArgument(format!(
                "user_id {user_id} is this account: a secret chat needs another user"
            )));
        }
        Ok(())
    }

    /// [`ServiceError::NoSuchChat`] unless the store has the chat.
    pub fn check_chat(&self, chat_id: i32) -> Result<(), ServiceError> {
        if chatstore::exists(&self.shared.store, chat_id)? {
            Ok(())
        } else {
            Err(ServiceError::NoSuchChat(chat_id))
        }
    }

    /// Closes a chat (or declines a request).
    pub async fn discard(&self, chat_id: i32, delete_history: bool) -> Result<(), ServiceError> {
        self.ask(chat_id, || actor::Discard { delete_history })
            .await?
    }

    /// Forgets a closed chat: everything stored for it goes (its records, events and request
    /// results; see `chatstore::forget`). `WrongState` for an open chat, or one that still owes
    /// Telegram its `discardEncryption`.
    pub async fn forget_chat(&self, chat_id: i32) -> Result<(), ServiceError> {
        for _ in 0..2 {
            let mut answer = None;
            self.ask(chat_id, || {
                let (tx, rx) = tokio::sync::oneshot::channel();
                answer = Some(rx);
                actor::Forget(tx)
            })
            .await?;
            // No answer: the actor stopped with the command in its mailbox; ask again.
            let Some(Ok(forgotten)) = (match answer {
                Some(rx) => Some(rx.await),
                None => None,
            }) else {
                self.forget_actor(chat_id);
                continue;
            };
            if forgotten.is_ok() {
                self.forget_actor(chat_id);
            }
            return forgotten;
        }
        Err(ServiceError::Internal(
            "the chat's actor keeps stopping".into(),
        ))
    }

    /// Accepts a requested chat.
    pub async fn accept(&self, chat_id: i32) -> Result<(), ServiceError> {
        self.ask(chat_id, || actor::Accept).await?
    }

    /// [`ServiceError::WrongState`] when the account is signed in: a login step then would
    /// only confuse Telegram's login flow (Logout comes first).
    fn check_not_logged_in(&self) -> Result<(), ServiceError> {
        if !self.shared.signed_in() {
            return Ok(());
        }
        Err(ServiceError::WrongState(
            match self.shared.link.session().self_user() {
                Some(user) => format!("already logged in as user {user}: Logout first"),
                None => "already logged in: Logout first".into(),
            },
        ))
    }

    /// Login, step 1: Telegram sends a code to `phone`.
    pub async fn login_request_code(&self, phone: &str) -> Result<tglink::LoginStep, ServiceError> {
        self.check_not_logged_in()?;
        self.shared
            .link
            .request_login_code(phone)
            .await
            .map_err(login_error)
    }

    /// Login, step 2: the code; then a password if the account has two-step verification.
    pub async fn login_code(&self, code: &str) -> Result<tglink::LoginStep, ServiceError> {
        self.check_not_logged_in()?;
        let step = self.shared.link.sign_in(code).await.map_err(login_error)?;
        self.logged_in(&step).await;
        Ok(step)
    }

    /// Login, step 3: the two-step password.
    pub async fn login_password(&self, password: &str) -> Result<tglink::LoginStep, ServiceError> {
        self.check_not_logged_in()?;
        let step = self
            .shared
            .link
            .check_password(password)
            .await
            .map_err(login_error)?;
        self.logged_in(&step).await;
        Ok(step)
    }

    /// After a completed login: the chats an unfinished logout left open close first
    /// (Telegram discarded them), then the daemon is logged in.
    async fn logged_in(&self, step: &tglink::LoginStep) {
        if !matches!(step, tglink::LoginStep::Done { .. }) {
            return;
        }
        let _login = self.shared.login_lock().await;
        // A login after a logout was started means the key was logged out: confirmed or
        // not, Telegram discarded the chats. So did an end of the authorization the daemon
        // recorded and had not finished yet.
        let ended = self.shared.take_ended();
        let marker = match logout_state(&self.shared) {
            Ok(m) => m.is_some(),
            Err(e) => {
                tracing::error!(error = %e, "the logout marker cannot be read");
                false
            }
        };
        if (ended || marker)
            && let Err(e) = close_chats_after_logout(&self.shared, &self.registry).await
        {
            tracing::error!(error = %e, "closing the chats of the last logout");
        }
        self.shared.set_logged_out(false);
        self.shared.set_signed_in();
    }

    /// Cancels the request whose handle is `handle` if none of its messages ever left the
    /// daemon (`Request1.Close`); whether it was cancelled.
    pub async fn cancel(&self, handle: &str) -> Result<bool, ServiceError> {
        let Some(r) = self.request_by_handle(handle)? else {
            return Ok(false);
        };
        if r.is_final() {
            return Ok(false);
        }
        let cancelled = self
            .ask(r.chat_id, || actor::Cancel {
                handle: handle.to_owned(),
            })
            .await?;
        if cancelled {
            // The actor queued the cancellation's batch before answering, and the store's
            // writer answers in queue order: once this empty batch is durable, so is the
            // cancellation, and `GetResult` says so from the moment `Close` returns.
            self.shared.store.commit(Batch::new()).await?;
        }
        Ok(cancelled)
    }

    /// Declines a requested chat that waits for the user (`messages.discardEncryption`).
    pub async fn decline(&self, chat_id: i32) -> Result<(), ServiceError> {
        match self.chat_status(chat_id)? {
            None => Err(ServiceError::NoSuchChat(chat_id)),
            Some(Status::Requested) => self.discard(chat_id, false).await,
            Some(s) => Err(ServiceError::WrongState(format!(
                "chat {chat_id} is {}: only a requested chat is declined (DiscardChat closes \
                 the others)",
                s.name()
            ))),
        }
    }

    /// Logs the account out (`auth.logOut`), then closes every chat (Telegram discards the
    /// device's secret chats with its authorization; see [`records::LOGOUT_KEY`]).
    pub async fn logout(&self) -> Result<(), ServiceError> {
        use grammers_tl_types::functions::auth::LogOut;
        if self.shared.logged_out() {
            return Err(ServiceError::NotLoggedIn);
        }
        if logout_state(&self.shared)? == Some(records::LOGOUT_CONFIRMED) {
            // The chats of an earlier logout are still closing (a start finishes them): finish
            // that first, so its marker is not overwritten.
            close_chats_after_logout(&self.shared, &self.registry).await?;
        }
        // The logged-out answers other calls get from now on are this logout's doing.
        let _logging_out = self.shared.logging_out();
        let epoch = self.shared.login_epoch();
        set_logout_marker(&self.shared, Some(records::LOGOUT_STARTED)).await?;
        let mut retries = LOGOUT_RETRIES;
        loop {
            match self.shared.link.invoke(&LogOut {}).await {
                // Logged out now, or already (a repeat after a lost answer lands here).
                Ok(_) => break,
                Err(e) if tglink::authorization_ended(e.class, &e.name) => break,
                Err(e) if e.class.is_retry() && retries > 0 => {
                    retries -= 1;
                    let wait = match e.class {
                        tglink::ErrorClass::RetryAfter(d) => {
                            d.min(std::time::Duration::from_secs(5))
                        }
                        _ => std::time::Duration::from_millis(500),
                    };
                    tokio::time::sleep(wait).await;
                }
                // Undecided (the call may have reached Telegram): the Started marker stays,
                // for the next login or start to settle.
                Err(e) if e.class.is_retry() => return Err(login_error(e)),
                // The key is unusable (unknown, duplicated…): the Started marker stays (a login
                // closes the chats first); nothing is signed in to log out.
                Err(e) if e.class == tglink::ErrorClass::LoggedOut => {
                    self.shared.logged_out_since(epoch, &e);
                    return Err(ServiceError::NotLoggedIn);
                }
                // Refused: still signed in, nothing to finish.
                Err(e) => {
                    set_logout_marker(&self.shared, None).await?;
                    return Err(login_error(e));
                }
            }
        }
        let _login = self.shared.login_lock().await;
        self.shared.set_logged_out(true);
        finish_logout(&self.shared, &self.registry).await
    }

    /// A chat as the outside world sees it (from the store: what is durable).
    pub fn chat_view(&self, chat_id: i32) -> Result<Option<ChatView>, ServiceError> {
        Ok(chatstore::load_view(&self.shared.store, chat_id)?)
    }

    /// Every chat as the outside world sees it, in id order.
    pub fn chat_views(&self) -> Result<Vec<ChatView>, ServiceError> {
        let mut out = Vec::new();
        for id in chatstore::chat_ids(&self.shared.store)? {
            out.extend(chatstore::load_view(&self.shared.store, id)?);
        }
        Ok(out)
    }

    /// The request whose handle is `path` (the latest one, if a token was reused): an open one
    /// from the shared handle map, a finished one through the handle index written with its
    /// final result.
    pub fn request_by_handle(&self, path: &str) -> Result<Option<RequestRecord>, ServiceError> {
        let id = match self.shared.open_handle(path) {
            Some(id) => Some(id),
            None => self
                .shared
                .store
                .get(Tree::Meta, &records::handle_key(path))?
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_be_bytes),
        };
        match id {
            Some(id) => self.request(id),
            None => Ok(None),
        }
    }

    /// The chat's status, if it exists.
    pub fn chat_status(&self, chat_id: i32) -> Result<Option<Status>, ServiceError> {
        Ok(chatstore::chat_status(&self.shared.store, chat_id)?)
    }

    /// A request by id, open or final (see `chatstore::request_by_id`).
    pub fn request(&self, id: u64) -> Result<Option<RequestRecord>, ServiceError> {
        chatstore::request_by_id(&self.shared.store, id)
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    fn resolve(&self, peer: &Peer) -> Result<i32, ServiceError> {
        // A running actor means a stored chat (a forgotten chat's actor answers NoSuchChat
        // to what it still gets, and leaves the cache when the forget is done).
        let exists = self.cached_actor(peer.chat_id).is_some()
            || chatstore::exists(&self.shared.store, peer.chat_id)?;
        if !exists {
            return Err(ServiceError::NoSuchChat(peer.chat_id));
        }
        if let Some(hash) = peer.access_hash
            && hash != 0
        {
            let b = self
                .shared
                .store
                .get(
                    Tree::Chats,
                    &records::chat_key(peer.chat_id, records::ChatPart::Auth),
                )
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            let known = b
                .and_then(|b| records::decode::<secret_core::chat::AuthState>(&b).ok())
                .map(|a| a.access_hash());
            if known.is_some_and(|k| k != 0 && k != hash) {
                return Err(ServiceError::InvalidArgument(format!(
                    "access_hash {hash} is not the chat's"
                )));
            }
        }
        Ok(peer.chat_id)
    }

    /// The chat's running actor: the cached address, or the registry's (which starts it).
    async fn chat_actor(&self, chat_id: i32) -> Result<Addr<actor::ChatActor>, ServiceError> {
        if let Some(a) = self.cached_actor(chat_id) {
            return Ok(a);
        }
        let a = self
            .registry
            .send(registry::Get(chat_id))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??
            .ok_or(ServiceError::NoSuchChat(chat_id))?;
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if actors.len() >= ACTOR_CACHE_PRUNE {
            actors.retain(|_, a| a.connected());
        }
        actors.insert(chat_id, a.clone());
        Ok(a)
    }

    /// Sends `make()` to the chat's actor and waits for its answer. An actor that stopped
    /// before it took the message (idle for 10 minutes, or forgotten) is asked for again once:
    /// the registry starts another, or finds no chat (`NoSuchChat`).
    async fn ask<M>(
        &self,
        chat_id: i32,
        mut make: impl FnMut() -> M,
    ) -> Result<M::Result, ServiceError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        actor::ChatActor: actix::Handler<M>,
    {
        for _ in 0..2 {
            let actor = self.chat_actor(chat_id).await?;
            match actor.send(make()).await {
                Ok(r) => return Ok(r),
                Err(actix::MailboxError::Closed) => self.forget_actor(chat_id),
                Err(e) => return Err(ServiceError::Internal(e.to_string())),
            }
        }
        Err(ServiceError::Internal(format!(
            "chat {chat_id}: its actor keeps stopping"
        )))
    }

    fn cached_actor(&self, chat_id: i32) -> Option<Addr<actor::ChatActor>> {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        actors.get(&chat_id).filter(|a| a.connected()).cloned()
    }

    fn forget_actor(&self, chat_id: i32) {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        actors.remove(&chat_id);
    }
}

/// A login step or logout Telegram refused: its error name first (`PHONE_NUMBER_INVALID`,
/// `PHONE_CODE_EXPIRED`, `FLOOD_WAIT_30`…); a step taken out of order (a code before the
/// phone, a password nobody asked for) is [`ServiceError::WrongState`].
fn login_error(e: tglink::CallError) -> ServiceError {
    if e.name == tglink::LOGIN_ORDER {
        return ServiceError::WrongState(e.message);
    }
    ServiceError::Telegram(e.to_string())
}

// ---- the peer forms ------------------------------------------------------------------------------

/// The chat a call addresses, from any of the forms the seed's API takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The secret chat id.
    pub chat_id: i32,
    /// The access_hash the caller gave, checked against the chat's.
    pub access_hash: Option<i64>,
}

impl Peer {
    /// A chat id.
    pub fn id(chat_id: i32) -> Peer {
        Peer {
            chat_id,
            access_hash: None,
        }
    }

    /// From MadelineProto-style JSON: a number (the chat id), or an object whose `"_"` is
    /// `inputEncryptedChat`, `encryptedChat*`, `encryptedMessage`, `encryptedMessageService`,
    /// `updateEncryption` or `updateNewEncryptedMessage`.
    pub fn from_json(v: &Value) -> Result<Peer, ServiceError> {
        let bad = |w: &str| ServiceError::InvalidArgument(format!("peer: {w}"));
        if let Some(n) = v.as_i64() {
            return i32::try_from(n)
                .map(Peer::id)
                .map_err(|_| bad("chat id out of range"));
        }
        let obj = v.as_object().ok_or_else(|| bad("a chat id or an object"))?;
        let name = obj
            .get("_")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no \"_\""))?;
        let int = |k: &str| -> Result<i64, ServiceError> {
            match obj.get(k) {
                Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad(k)),
                Some(Value::String(s)) => s.parse().map_err(|_| bad(k)),
                _ => Err(bad(&format!("missing {k}"))),
            }
        };
        let id = |k: &str| -> Result<i32, ServiceError> {
            i32::try_from(int(k)?).map_err(|_| bad(&format!("{k} out of range")))
        };
        match name {
            "inputEncryptedChat" => Ok(Peer {
                chat_id: id("chat_id")?,
                access_hash: Some(int("access_hash")?),
            }),
            "encryptedChat"
            | "encryptedChatWaiting"
            | "encryptedChatRequested"
            | "encryptedChatDiscarded"
            | "encryptedChatEmpty" => Ok(Peer::id(id("id")?)),
            "encryptedMessage" | "encryptedMessageService" => Ok(Peer::id(id("chat_id")?)),
            "updateEncryption" => Peer::from_json(obj.get("chat").ok_or_else(|| bad("no chat"))?),
            "updateNewEncryptedMessage" => {
                Peer::from_json(obj.get("message").ok_or_else(|| bad("no message"))?)
            }
            other => Err(bad(&format!("{other} does not name a secret chat"))),
        }
    }

    /// From boxed TL (the main API's schema, layer of grammers): `inputEncryptedChat`,
    /// `EncryptedChat`, `EncryptedMessage`, or an `Update` about a secret chat.
    pub fn from_tl(b: &[u8]) -> Result<Peer, ServiceError> {
        use grammers_tl_types::{Deserializable as _, enums};
        if let Ok(enums::InputEncryptedChat::Chat(c)) = enums::InputEncryptedChat::from_bytes(b) {
            return Ok(Peer {
                chat_id: c.chat_id,
                access_hash: Some(c.access_hash),
            });
        }
        if let Ok(c) = enums::EncryptedChat::from_bytes(b) {
            return Ok(Peer::id(tglink::convert::encrypted_chat_id(&c)));
        }
        if let Ok(m) = enums::EncryptedMessage::from_bytes(b) {
            return Ok(Peer::id(tglink::convert::incoming_encrypted(&m).0));
        }
        match enums::Update::from_bytes(b) {
            Ok(enums::Update::Encryption(u)) => {
                Ok(Peer::id(tglink::convert::encrypted_chat_id(&u.chat)))
            }
            Ok(enums::Update::NewEncryptedMessage(u)) => {
                Ok(Peer::id(tglink::convert::incoming_encrypted(&u.message).0))
            }
            _ => Err(ServiceError::InvalidArgument(
                "peer: not a TL object that names a secret chat".into(),
            )),
        }
    }
}

// ---- the message ---------------------------------------------------------------------------------

/// Parses a boxed TL `DecryptedMessage` from a caller.
pub fn message_from_tl(b: &[u8]) -> Result<DecryptedMessage, ServiceError> {
    if b.len() > MAX_INPUT_BYTES {
        return Err(ServiceError::TooLarge(format!(
            "{} bytes; at most {MAX_INPUT_BYTES}",
            b.len()
        )));
    }
    DecryptedMessage::from_bytes(b).map_err(|e| match e {
        // The same error as an unknown action name in SendServiceAction or in JSON.
        secret_core::tl::TlError::UnknownConstructor { id, type_name }
            if type_name == ACTION_TYPE =>
        {
            ServiceError::UnknownAction(format!("{id:#010x}"))
        }
        e => ServiceError::InvalidMessage(e.to_string()),
    })
}

/// Parses a `DecryptedMessage` in MadelineProto-style JSON.
pub fn message_from_json(v: &Value) -> Result<DecryptedMessage, ServiceError> {
    DecryptedMessage::from_json(v).map_err(|e| match e {
        secret_core::tl::JsonError::UnknownConstructor { name, expected, .. }
            if expected == ACTION_TYPE =>
        {
            ServiceError::UnknownAction(name)
        }
        e => ServiceError::InvalidMessage(e.to_string()),
    })
}

/// The TL type of a service message's action, as the TL and JSON decoders name it.
const ACTION_TYPE: &str = "DecryptedMessageAction";

/// The messages to send (chunks of a long text), and the idempotency key with the request's
/// digest ([`request_digest`]) when the caller chose a random_id.
type Prepared = (Vec<DecryptedMessage>, Option<actor::Idempotency>);

/// What to send for `message`: see [`Prepared`].
fn prepare(
    message: DecryptedMessage,
    random_id: Option<i64>,
    method: SendMethod,
) -> Result<Prepared, ServiceError> {
    let own = message.random_id();
    let rid = match (random_id, own) {
        (Some(0), _) => return Err(ServiceError::BadRandomId(0)),
        (Some(r), 0) => Some(r),
        (Some(r), o) if r == o => Some(r),
        (Some(r), o) => {
            return Err(ServiceError::InvalidArgument(format!(
                "random_id option {r} differs from the message's {o}"
            )));
        }
        (None, 0) => None,
        (None, o) => Some(o),
    };
    let message = with_random_id(message, rid.unwrap_or(0));
    let idempotency = match rid {
        Some(random_id) => Some(actor::Idempotency {
            random_id,
            digest: request_digest(&message, method)?,
        }),
        None => None,
    };
    let parts = match message {
        DecryptedMessage::DecryptedMessage(m)
            if m.media.is_none() && m.message.chars().count() > MAX_TEXT_CHARS =>
        {
            split_text(m)?
                .into_iter()
                .map(DecryptedMessage::DecryptedMessage)
                .collect()
        }
        other => vec![other],
    };
    Ok((parts, idempotency))
}

/// What makes two sends with one random_id the same request: SHA-256 of the method's TL name
/// and the message's TL encoding (its random_id set, before a long text is split), so the same
/// message given as TL or as JSON, as an option's random_id or the message's own, is the same.
pub fn request_digest(
    message: &DecryptedMessage,
    method: SendMethod,
) -> Result<[u8; 32], ServiceError> {
    use secret_core::tl::Serializable;
    let len = message.serialized_len();
    if len > secret_core::tl::MAX_BYTES_LEN {
        return Err(ServiceError::TooLarge(format!(
            "{len} bytes; at most {}",
            secret_core::tl::MAX_BYTES_LEN
        )));
    }
    Ok(secret_core::crypto::sha256(&[
        method.tl_name().as_bytes(),
        &message.to_bytes(),
    ]))
}

fn with_random_id(m: DecryptedMessage, random_id: i64) -> DecryptedMessage {
    match m {
        DecryptedMessage::Service(mut s) => {
            s.random_id = random_id;
            DecryptedMessage::Service(s)
        }
        DecryptedMessage::DecryptedMessage(mut s) => {
            s.random_id = random_id;
            DecryptedMessage::DecryptedMessage(s)
        }
        other => other,
    }
}

/// Splits a long text into chunks of at most [`MAX_TEXT_CHARS`] code points; the first keeps
/// the random_id and the reply, the others get fresh random_ids; entities (UTF-16 offsets) are
/// clipped to the chunk they fall in.
fn split_text(
    m: secret_core::tl::types::DecryptedMessage,
) -> Result<Vec<secret_core::tl::types::DecryptedMessage>, ServiceError> {
    let chars: Vec<char> = m.message.chars().collect();
    let mut out = Vec::new();
    let mut utf16_start = 0i64;
    for (i, chunk) in chars.chunks(MAX_TEXT_CHARS).enumerate() {
        let text: String = chunk.iter().collect();
        let len16: i64 = chunk.iter().map(|c| c.len_utf16() as i64).sum();
        let entities = match &m.entities {
            Some(es) => Some(clip_entities(es, utf16_start, utf16_start + len16)?),
            None => None,
        };
        let mut part = m.clone();
        part.message = text;
        part.entities = entities.filter(|e| !e.is_empty());
        if i > 0 {
            part.random_id = 0;
            part.reply_to_random_id = None;
        }
        out.push(part);
        utf16_start += len16;
    }
    Ok(out)
}

fn clip_entities(
    es: &[e2e::MessageEntity],
    start: i64,
    end: i64,
) -> Result<Vec<e2e::MessageEntity>, ServiceError> {
    let mut out = Vec::new();
    for e in es {
        let mut v = e.to_json();
        let (Some(off), Some(len)) = (v["offset"].as_i64(), v["length"].as_i64()) else {
            continue;
        };
        let (a, b) = (off.max(start), (off + len).min(end));
        if a >= b {
            continue;
        }
        v["offset"] = Value::from(a - start);
        v["length"] = Value::from(b - a);
        out.push(
            e2e::MessageEntity::from_json(&v)
                .map_err(|e| ServiceError::InvalidMessage(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Finishes a logout Telegram confirmed, by `Logout` or by ending the authorization
/// ([`Shared::logged_out_since`]): the confirmed marker (with it, the chat updates still
/// stored go), then every chat closes and the marker goes (a stop in between is finished by
/// the next start).
pub(crate) async fn finish_logout(
    shared: &Shared,
    registry: &Addr<Registry>,
) -> Result<(), ServiceError> {
    let mut b = Batch::new();
    b.put(
        Tree::Session,
        records::LOGOUT_KEY,
        records::logout_marker(records::LOGOUT_CONFIRMED, crate::shared::now()),
    );
    // The key's authorization is over: until it works again (a login), a logged-out answer
    // says nothing more about the chats.
    b.remove(Tree::Session, records::SIGNED_IN_KEY);
    // Chat updates stored and not yet applied belong to the authorization that ended: the
    // chats they are about close now, and a request among them could only become a chat that
    // Telegram has already discarded. (At most 512 in this batch, within the store's batch
    // limits; there are seldom any.)
    for e in shared
        .store
        .scan_prefix(Tree::Meta, records::UPDATE_PREFIX)
        .take(512)
    {
        let (k, _) = e.map_err(crate::error::DaemonError::from)?;
        b.remove(Tree::Meta, k);
    }
    shared.store.commit(b).await?;
    close_chats_after_logout(shared, registry).await
}

/// How many chats a logout closes at a time.
const LOGOUT_CLOSING_AT_ONCE: usize = 32;

/// Closes every open chat after a logout (each actor's close fails its open requests with
/// `LOGGED_OUT`) and drops the owed calls of those closed before (moot without the key), then
/// removes the logout marker in a commit queued after those closes.
pub(crate) async fn close_chats_after_logout(
    shared: &Shared,
    registry: &Addr<Registry>,
) -> Result<(), ServiceError> {
    use futures_util::{StreamExt, TryStreamExt};
    // A whole-store read: off the runtime's threads (there may be a single one).
    let store = Arc::clone(&shared.store);
    let concerned = tokio::task::spawn_blocking(move || chats_to_close(&store))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
    // Several at a time: each waits for the registry to start its chat's actor.
    futures_util::stream::iter(concerned)
        .map(|id| tell_logged_out(registry, id))
        .buffer_unordered(LOGOUT_CLOSING_AT_ONCE)
        .try_collect::<()>()
        .await?;
    // Queued behind every chat's closing batch: durable only after all of them.
    set_logout_marker(shared, None).await
}

/// The chats a logout closes: the open ones, and the closed ones that still owe a call.
fn chats_to_close(store: &Store) -> Result<Vec<i32>, ServiceError> {
    let with_calls: std::collections::HashSet<i32> = chatstore::chats_with_owed_calls(store)?;
    let mut concerned = Vec::new();
    for id in chatstore::chat_ids(store)? {
        let open = !matches!(
            chatstore::chat_status(store, id)?,
            None | Some(Status::Discarded(_))
        );
        if open || with_calls.contains(&id) {
            concerned.push(id);
        }
    }
    Ok(concerned)
}

/// Hands `LoggedOut` to a chat's actor (asked for again once if it stopped meanwhile, as a
/// send does).
async fn tell_logged_out(registry: &Addr<Registry>, id: i32) -> Result<(), ServiceError> {
    let internal = |e: actix::MailboxError| ServiceError::Internal(e.to_string());
    for _ in 0..2 {
        let Some(chat) = registry.send(registry::Get(id)).await.map_err(internal)?? else {
            return Ok(());
        };
        match chat.send(actor::LoggedOut).await {
            Ok(()) => return Ok(()),
            Err(actix::MailboxError::Closed) => continue,
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ServiceError::Internal(format!(
        "chat {id}: its actor keeps stopping"
    )))
}

/// Writes the logout marker in `state`, or removes it with `None`; durable on return.
async fn set_logout_marker(shared: &Shared, state: Option<u8>) -> Result<(), ServiceError> {
    let mut b = Batch::new();
    match state {
        Some(st) => b.put(
            Tree::Session,
            records::LOGOUT_KEY,
            records::logout_marker(st, crate::shared::now()),
        ),
        None => b.remove(Tree::Session, records::LOGOUT_KEY),
    };
    shared.store.commit(b).await?;
    Ok(())
}

/// The state of an unfinished logout ([`records::LOGOUT_STARTED`] or
/// [`records::LOGOUT_CONFIRMED`]), if there is one.
pub(crate) fn logout_state(shared: &Shared) -> Result<Option<u8>, ServiceError> {
    Ok(shared
        .store
        .get(Tree::Session, records::LOGOUT_KEY)?
        .and_then(|v| v.first().copied()))
}

/// Forgets a logout that never happened (Telegram still knows the key).
pub(crate) async fn forget_logout(shared: &Shared) -> Result<(), ServiceError> {
    set_logout_marker(shared, None).await
}

/// How long a `RequestChat` under a chosen chat id waits for another call making that chat
/// (below the 20 s call timeout, itself below D-Bus's 25 s).
const CHOSEN_ID_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// A chat id a caller chose for `RequestChat` (`requestEncryption`'s `random_id`): positive, as
/// the daemon's own (31 random bits, not 0).
pub fn check_chosen_chat_id(id: i32) -> Result<(), ServiceError> {
    if id > 0 {
        Ok(())
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "chat_id {id}: a chat id the caller chooses is positive (1 to 2147483647)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::tl::types;

    fn text(s: &str, entities: Option<Vec<e2e::MessageEntity>>) -> DecryptedMessage {
        DecryptedMessage::DecryptedMessage(types::DecryptedMessage {
            silent: false,
            random_id: 0,
            ttl: 0,
            message: s.into(),
            media: None,
            entities,
            via_bot_name: None,
            reply_to_random_id: Some(9),
            grouped_id: None,
        })
    }

    #[test]
    fn a_long_text_is_split_by_code_points_in_order() {
        let s: String = "é".repeat(4096) + &"x".repeat(10);
        let bold = e2e::MessageEntity::Bold(types::MessageEntityBold {
            offset: 4090,
            length: 10,
        });
        let (parts, rid) =
            prepare(text(&s, Some(vec![bold])), Some(77), SERVICE).expect("prepared");
        assert_eq!(rid.map(|i| i.random_id), Some(77));
        assert_eq!(parts.len(), 2);
        let DecryptedMessage::DecryptedMessage(a) = &parts[0] else {
            panic!()
        };
        let DecryptedMessage::DecryptedMessage(b) = &parts[1] else {
            panic!()
        };
        assert_eq!((a.random_id, a.message.chars().count()), (77, 4096));
        assert_eq!((b.random_id, b.message.as_str()), (0, "xxxxxxxxxx"));
        assert_eq!(a.reply_to_random_id, Some(9));
        assert_eq!(b.reply_to_random_id, None);
        // The bold run crossing the boundary is clipped into both chunks.
        let off_len = |m: &types::DecryptedMessage| {
            m.entities.as_ref().map(|es| {
                es.iter()
                    .map(|e| {
                        let v = e.to_json();
                        (v["offset"].as_i64(), v["length"].as_i64())
                    })
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(off_len(a), Some(vec![(Some(4090), Some(6))]));
        assert_eq!(off_len(b), Some(vec![(Some(0), Some(4))]));
    }

    #[test]
    fn a_short_text_and_a_service_message_are_one_message() {
        let (p, rid) = prepare(text("hi", None), None, SERVICE).expect("ok");
        assert_eq!((p.len(), rid.map(|i| i.random_id)), (1, None));
        assert_eq!(
            prepare(text("hi", None), Some(0), SERVICE).err(),
            Some(ServiceError::BadRandomId(0))
        );
    }

    const SERVICE: SendMethod = SendMethod::SendEncryptedService;

    #[test]
    fn a_request_digest_is_its_message_and_method_whatever_the_form() {
        let digest = |m: DecryptedMessage, rid: Option<i64>, method| {
            prepare(m, rid, method)
                .expect("prepared")
                .1
                .expect("a random_id")
                .digest
        };
        let with_own_id = with_random_id(text("hi", None), 9);
        let first = digest(text("hi", None), Some(9), SERVICE);
        // The random_id as an option or inside the message; the message as TL or JSON.
        assert_eq!(digest(with_own_id.clone(), None, SERVICE), first);
        assert!(
            prepare(text("hi", None), None, SERVICE)
                .expect("prepared")
                .1
                .is_none()
        );
        assert_eq!(digest(with_own_id.clone(), Some(9), SERVICE), first);
        let json = message_from_json(&with_own_id.to_json()).expect("json");
        assert_eq!(digest(json, None, SERVICE), first);
        // Another text, another id, another method: another request.
        assert_ne!(digest(text("ho", None), Some(9), SERVICE), first);
        assert_ne!(digest(text("hi", None), Some(10), SERVICE), first);
        assert_ne!(
            digest(text("hi", None), Some(9), SendMethod::SendEncrypted),
            first
        );
    }

    #[test]
    fn every_peer_form_names_the_chat() {
        let j = |s: &str| Peer::from_json(&serde_json::from_str(s).expect("json"));
        assert_eq!(j("42").expect("id").chat_id, 42);
        assert_eq!(
            j(r#"{"_":"inputEncryptedChat","chat_id":42,"access_hash":"-5"}"#).expect("input"),
            Peer {
                chat_id: 42,
                access_hash: Some(-5)
            }
        );
        assert_eq!(
            j(r#"{"_":"updateNewEncryptedMessage","qts":1,"message":{"_":"encryptedMessage","random_id":1,"chat_id":42,"date":1,"bytes":""}}"#)
                .expect("update")
                .chat_id,
            42
        );
        assert!(j(r#"{"_":"user","id":1}"#).is_err());
        assert!(j("5000000000").is_err());
        use grammers_tl_types::Serializable as _;
        let tl = grammers_tl_types::enums::InputEncryptedChat::Chat(
            grammers_tl_types::types::InputEncryptedChat {
                chat_id: 42,
                access_hash: 3,
            },
        )
        .to_bytes();
        assert_eq!(
            Peer::from_tl(&tl).expect("tl"),
            Peer {
                chat_id: 42,
                access_hash: Some(3)
            }
        );
        assert!(Peer::from_tl(&[1, 2, 3, 4]).is_err());
    }
}
