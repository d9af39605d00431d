//! `io.github.tgsecretd.Manager1` at `/io/github/tgsecretd`: the send calls (Request pattern),
//! the seed's `Call(method, params)`, the chat lifecycle, login, status.
//!
//! Every method checks its arguments before anything is stored and returns a typed
//! `io.github.tgsecretd.Error.<Name>`. The send calls return the handle once the request is
//! durable; the Response follows once its result is (see [`super`]). `Call`'s methods other
//! than the two sends run after the handle is returned; their Response is emitted once their
//! effect is durable (the chat created, accepted or closed) and is kept in memory for
//! `GetResult` (a restart forgets it; the effect itself stays, as `ListChats` shows).

use std::collections::HashMap;
use std::sync::Arc;

use ipc_proto::{Error, methods, response, result_keys as rk};
use secret_core::tl::enums::DecryptedMessage;
use serde_json::Value as Json;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, ObjectServer, OwnedObjectPath, OwnedVariant, interface};

use super::chat::view_dict;
use super::convert::{self, Dict, SendArgs, string_variant, variant};
use super::request::{Request, response_of};
use super::{Hub, LoginStage, to_dbus};
use crate::errors_api::ServiceError;
use crate::service::{Peer, SendOptions, Service, message_from_json, message_from_tl};

/// The largest `params` `Call` reads.
pub const MAX_PARAMS_BYTES: usize = 2 << 20;

/// `io.github.tgsecretd.Manager1`.
pub struct Manager {
    pub(super) service: Service,
    pub(super) hub: Arc<Hub>,
}

type Results = HashMap<String, OwnedVariant>;

/// The login properties are read one by one (each is one value in memory).
impl super::readonly::AllProperties for Manager {}

impl Manager {
    /// The handle path of a new request: the caller's token, or a fresh one.
    fn handle_path(&self, sender: &str, token: Option<String>) -> String {
        let token = token.unwrap_or_else(|| format!("t{}", self.service.shared().token_seq()));
        ipc_proto::request_path(sender, &token)
    }

    /// Exports the handle's object; `Ok(false)` if a pending request already holds it.
    async fn export(&self, server: &ObjectServer, path: &str) -> Result<bool, Error> {
        let object =
            zbus::ObjectPath::try_from(path).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(server
            .at(
                object,
                Request {
                    hub: Arc::clone(&self.hub),
                    path: path.to_owned(),
                },
            )
            .await?
            .is_none())
    }

    async fn unexport(server: &ObjectServer, path: &str) {
        let _ = server.remove::<Request, _>(path).await;
    }

    /// Stores a send request and returns its handle (see `SendEncryptedService`).
    async fn submit(
        &self,
        hdr: &Header<'_>,
        server: &ObjectServer,
        peer: Peer,
        message: DecryptedMessage,
        args: SendArgs,
        json: bool,
    ) -> Result<OwnedObjectPath, Error> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let path = self.handle_path(&sender, args.token);
        let fresh = self.export(server, &path).await?;
        if !fresh {
            self.check_retry(&path, args.random_id)?;
        }
        let opts = SendOptions {
            notify: args.notify,
            random_id: args.random_id,
            handle: path.clone(),
            json,
        };
        let res = self
            .service
            .send_encrypted_service(peer, message, opts)
            .await;
        match res {
            Ok(a) => {
                if a.existing && a.handle != path && fresh {
                    Self::unexport(server, &path).await;
                }
                OwnedObjectPath::try_from(a.handle).map_err(|e| Error::Internal(e.to_string()))
            }
            Err(e) => {
                if fresh {
                    Self::unexport(server, &path).await;
                }
                Err(to_dbus(e))
            }
        }
    }

    /// A pending request holds `path`: only a retry of that same request may use it.
    fn check_retry(&self, path: &str, random_id: Option<i64>) -> Result<(), Error> {
        let pending = self.service.request_by_handle(path).map_err(to_dbus)?;
        let same = match (pending, random_id) {
            (Some(r), Some(rid)) => r.parts.first().is_some_and(|p| p.random_id == rid),
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "option handle_token: {path} belongs to a pending request"
            )))
        }
    }

    /// Runs one of `Call`'s immediate methods after the handle is returned, then emits its
    /// Response and keeps it for `GetResult`.
    async fn call_later(
        &self,
        hdr: &Header<'_>,
        server: &ObjectServer,
        conn: &Connection,
        token: Option<String>,
        job: CallJob,
    ) -> Result<OwnedObjectPath, Error> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let path = self.handle_path(&sender, token);
        if !self.export(server, &path).await? {
            return Err(Error::InvalidArgument(format!(
                "option handle_token: {path} belongs to a pending request"
            )));
        }
        let handle =
            OwnedObjectPath::try_from(path.clone()).map_err(|e| Error::Internal(e.to_string()))?;
        let (service, hub, conn) = (self.service.clone(), Arc::clone(&self.hub), conn.clone());
        tokio::spawn(async move {
            let (code, results) = match job.run(&service).await {
                Ok(json) => {
                    let mut d = Dict::default();
                    d.put(rk::JSON, string_variant(&json.to_string()));
                    (response::SENT, d.0)
                }
                Err(e) => {
                    let mut d = Dict::default();
                    d.put(rk::ERROR, string_variant(e.name()))
                        .put(rk::MESSAGE, string_variant(&e.to_string()));
                    (response::FAILED, d.0)
                }
            };
            hub.answer_call(&conn, &path, code, results).await;
        });
        Ok(handle)
    }
}

/// What `Call` runs after returning the handle.
enum CallJob {
    Request {
        user_id: i64,
        access_hash: i64,
        chat_id: Option<i32>,
    },
    Accept(Peer),
    Discard {
        chat_id: i32,
        delete_history: bool,
    },
}

impl CallJob {
    async fn run(self, service: &Service) -> Result<Json, ServiceError> {
        let chat_id = match self {
            CallJob::Request {
                user_id,
                access_hash,
                chat_id,
            } => service.request_chat(user_id, access_hash, chat_id).await?,
            CallJob::Accept(peer) => {
                service.accept(peer.chat_id).await?;
                peer.chat_id
            }
            CallJob::Discard {
                chat_id,
                delete_history,
            } => {
                service.discard(chat_id, delete_history).await?;
                return Ok(serde_json::json!({"_": "boolTrue"}));
            }
        };
        let view = service
            .chat_view(chat_id)?
            .ok_or(ServiceError::NoSuchChat(chat_id))?;
        Ok(super::view_json(&view))
    }
}

fn param<'a>(p: &'a Json, key: &str) -> Result<&'a Json, ServiceError> {
    p.get(key)
        .ok_or_else(|| ServiceError::InvalidArgument(format!("params: no \"{key}\"")))
}

fn int_param(p: &Json, key: &str) -> Result<i64, ServiceError> {
    let v = param(p, key)?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| {
            ServiceError::InvalidArgument(format!("params: \"{key}\" is not an integer"))
        })
}

/// `messages.requestEncryption`'s `user_id`: a number, or an `inputUser`.
fn user_param(p: &Json) -> Result<(i64, i64), ServiceError> {
    let u = param(p, "user_id")?;
    if u.is_object() {
        let hash = if u.get("access_hash").is_some() {
            int_param(u, "access_hash")?
        } else {
            0
        };
        return Ok((int_param(u, "user_id")?, hash));
    }
    Ok((int_param(p, "user_id")?, 0))
}

fn bool_param(p: &Json, key: &str) -> Result<bool, ServiceError> {
    match p.get(key) {
        None => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(o) if o.get("_").and_then(Json::as_str) == Some("boolTrue") => Ok(true),
        Some(o) if o.get("_").and_then(Json::as_str) == Some("boolFalse") => Ok(false),
        Some(_) => Err(ServiceError::InvalidArgument(format!(
            "params: \"{key}\" is not a boolean"
        ))),
    }
}

fn dict_of(d: Dict) -> Results {
    d.0
}

#[interface(name = "io.github.tgsecretd.Manager1")]
impl Manager {
    /// Sends a boxed TL `DecryptedMessage` (normally `decryptedMessageService`) to a secret
    /// chat through `messages.sendEncryptedService`; returns the request's handle once it is
    /// durably stored. Options: `handle_token` (s), `random_id` (x: a retry with the same one
    /// and the same message and method returns the first handle and sends nothing; one used
    /// for another message, or by another chat of the account, is `Error.BadRandomId`, as
    /// Telegram takes a random_id once), `notify` (b: through
    /// `messages.sendEncrypted`, so the peer's devices notify).
    async fn send_encrypted_service(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        chat_id: i32,
        message: Vec<u8>,
        options: Results,
    ) -> Result<OwnedObjectPath, Error> {
        let args = convert::send_args(&options).map_err(to_dbus)?;
        let message = message_from_tl(&message).map_err(to_dbus)?;
        self.submit(&hdr, server, Peer::id(chat_id), message, args, false)
            .await
    }

    /// Sends a service action named by its TL name (`decryptedMessageActionSetMessageTTL`, or
    /// `SetMessageTTL`, any case) with its fields by their TL names in `params`; no TL
    /// encoding by the caller. Same options and handle as `SendEncryptedService`.
    async fn send_service_action(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        chat_id: i32,
        action: String,
        params: Results,
        options: Results,
    ) -> Result<OwnedObjectPath, Error> {
        let args = convert::send_args(&options).map_err(to_dbus)?;
        let message = convert::service_message(&action, &params).map_err(to_dbus)?;
        self.submit(&hdr, server, Peer::id(chat_id), message, args, false)
            .await
    }

    /// A Telegram method by name with its parameters as JSON, the seed's HTTP API form (see
    /// `ipc_proto::methods`); the Response carries the result as JSON (`json`). Options as
    /// for `SendEncryptedService`.
    async fn call(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        method: String,
        params: String,
        options: Results,
    ) -> Result<OwnedObjectPath, Error> {
        let mut args = convert::send_args(&options).map_err(to_dbus)?;
        if params.len() > MAX_PARAMS_BYTES {
            return Err(Error::TooLarge(format!(
                "params: {} bytes; at most {MAX_PARAMS_BYTES}",
                params.len()
            )));
        }
        if !methods::ALL.contains(&method.as_str()) {
            return Err(to_dbus(ServiceError::UnknownMethod(method)));
        }
        let p: Json = serde_json::from_str(&params)
            .map_err(|e| Error::InvalidArgument(format!("params: not JSON: {e}")))?;
        if !p.is_object() {
            return Err(Error::InvalidArgument("params: not a JSON object".into()));
        }
        let job = match method.as_str() {
            methods::SEND_ENCRYPTED_SERVICE | methods::SEND_ENCRYPTED => {
                let peer = Peer::from_json(param(&p, "peer").map_err(to_dbus)?).map_err(to_dbus)?;
                let message =
                    message_from_json(param(&p, "message").map_err(to_dbus)?).map_err(to_dbus)?;
                args.notify |= method == methods::SEND_ENCRYPTED;
                return self.submit(&hdr, server, peer, message, args, true).await;
            }
            methods::REQUEST_ENCRYPTION => {
                let (user_id, access_hash) = user_param(&p).map_err(to_dbus)?;
                // Telegram's random_id is the chat id the client chooses: given, a retry finds
                // the chat it made.
                let chat_id = match p.get("random_id") {
                    None => None,
                    Some(_) => Some(
                        i32::try_from(int_param(&p, "random_id").map_err(to_dbus)?).map_err(
                            |_| Error::InvalidArgument("params: random_id out of range".into()),
                        )?,
                    ),
                };
                CallJob::Request {
                    user_id,
                    access_hash,
                    chat_id,
                }
            }
            methods::ACCEPT_ENCRYPTION => CallJob::Accept(
                Peer::from_json(param(&p, "peer").map_err(to_dbus)?).map_err(to_dbus)?,
            ),
            _ => {
                let chat_id = i32::try_from(int_param(&p, "chat_id").map_err(to_dbus)?)
                    .map_err(|_| Error::InvalidArgument("params: chat_id out of range".into()))?;
                CallJob::Discard {
                    chat_id,
                    delete_history: bool_param(&p, "delete_history").map_err(to_dbus)?,
                }
            }
        };
        if args.random_id.is_some() || args.notify {
            return Err(Error::InvalidArgument(format!(
                "options random_id and notify are for the send methods, not {method}"
            )));
        }
        // What can be known at once is refused at once, as the other methods do; the
        // Response carries only what Telegram or the chat says later.
        match &job {
            CallJob::Request {
                user_id, chat_id, ..
            } => self
                .service
                .check_new_chat(*user_id)
                .and_then(|()| chat_id.map_or(Ok(()), crate::service::check_chosen_chat_id)),
            CallJob::Accept(peer) => self.service.check_chat(peer.chat_id),
            CallJob::Discard { chat_id, .. } => self.service.check_chat(*chat_id),
        }
        .map_err(to_dbus)?;
        self.call_later(&hdr, server, conn, args.token, job).await
    }

    /// Opens a secret chat with a user (options: `access_hash` (x); `chat_id` (i), the chat id
    /// to use: positive and drawn at random, since it is Telegram's requestEncryption
    /// `random_id` and unique across Telegram (one in use there, or of a forgotten chat, closes
    /// the chat at once); a retry with the same `chat_id` and user, after an answer that was
    /// lost, returns that chat in whatever state it is instead of opening another, and waits
    /// while another call is making it; another chat's id is refused); returns the chat id once
    /// the chat is durably created (the request to Telegram follows).
    async fn request_chat(&self, user_id: i64, options: Results) -> Result<i32, Error> {
        let mut access_hash = 0;
        let mut chat_id = None;
        for (k, v) in &options {
            match k.as_str() {
                "access_hash" => {
                    access_hash = i64::try_from(v).map_err(|_| {
                        Error::InvalidArgument("option access_hash: must be x".into())
                    })?
                }
                "chat_id" => {
                    chat_id =
                        Some(i32::try_from(v).map_err(|_| {
                            Error::InvalidArgument("option chat_id: must be i".into())
                        })?)
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "option {other}: unknown option"
                    )));
                }
            }
        }
        self.service
            .request_chat(user_id, access_hash, chat_id)
            .await
            .map_err(to_dbus)
    }

    /// Accepts a requested secret chat that waits for the user.
    async fn accept_chat(&self, chat_id: i32) -> Result<(), Error> {
        self.service.accept(chat_id).await.map_err(to_dbus)
    }

    /// Declines a requested secret chat that waits for the user.
    async fn decline_chat(&self, chat_id: i32) -> Result<(), Error> {
        self.service.decline(chat_id).await.map_err(to_dbus)
    }

    /// Closes a chat (`messages.discardEncryption`), or declines a requested one;
    /// `delete_history` asks the peer to delete the history too. Requests not sent yet end
    /// with `CHAT_DISCARDED`.
    async fn discard_chat(&self, chat_id: i32, delete_history: bool) -> Result<(), Error> {
        self.service
            .discard(chat_id, delete_history)
            .await
            .map_err(to_dbus)
    }

    /// Forgets a closed chat: everything the daemon stored for it goes (its state, events and
    /// request results), its object is removed and `ChatRemoved` goes out. `WrongState` for
    /// an open chat (DiscardChat first) or one whose `discardEncryption` Telegram has not
    /// taken yet; `NoSuchChat` for an unknown one.
    async fn forget_chat(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        chat_id: i32,
    ) -> Result<(), Error> {
        self.service.forget_chat(chat_id).await.map_err(to_dbus)?;
        self.hub.unexport(conn, chat_id).await;
        let path = ipc_proto::chat_path(chat_id);
        if let Ok(p) = zbus::ObjectPath::try_from(path.as_str()) {
            let _ = Self::chat_removed(&emitter, chat_id, p).await;
        }
        Ok(())
    }

    /// Every chat, as dictionaries with the keys of `ipc_proto::chat_keys` (the chat
    /// object's properties, and `path`: the object exists from now on).
    async fn list_chats(
        &self,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<Results>, Error> {
        // A whole-store read: off the runtime's threads (there may be a single one).
        let service = self.service.clone();
        let views = tokio::task::spawn_blocking(move || service.chat_views())
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(to_dbus)?;
        for v in &views {
            self.hub.export(conn, v.summary.chat_id).await;
        }
        Ok(views.iter().map(view_dict).collect())
    }

    /// One chat, as `ListChats` describes it (its object exists from now on).
    async fn get_chat(
        &self,
        #[zbus(connection)] conn: &Connection,
        chat_id: i32,
    ) -> Result<Results, Error> {
        let v = self
            .service
            .chat_view(chat_id)
            .map_err(to_dbus)?
            .ok_or_else(|| to_dbus(ServiceError::NoSuchChat(chat_id)))?;
        self.hub.export(conn, chat_id).await;
        Ok(view_dict(&v))
    }

    /// The daemon's status: `version` (s), `authorization_state` (s), `logged_in` (b),
    /// `self_user_id` (x, once known, while logged in), `accept_policy` (s), and the store's counters since
    /// the start (t each): `store_batches` (batches answered), `store_rounds` (group flushes),
    /// `store_apply_wait_us` and `store_sync_wait_us` (summed over the batches: queued until
    /// applied, applied until durable), `store_flush_us` (summed over the rounds: flush and
    /// syncs). Cheap: it reads no chat (a store of 100,000 chats answers at once).
    async fn get_status(&self) -> Result<Results, Error> {
        let shared = self.service.shared();
        let (state, self_user) = self.hub.login_properties(shared);
        let mut d = Dict::default();
        d.put("version", string_variant(env!("CARGO_PKG_VERSION")))
            .put("authorization_state", string_variant(state))
            .put("logged_in", variant(self_user != 0))
            .put(
                "self_user_id",
                (self_user != 0).then_some(self_user).and_then(variant),
            )
            .put("accept_policy", string_variant(&shared.accept.name()));
        let st = shared.store.stats();
        d.put(
            "store_batches",
            variant(st.batches_committed + st.batches_failed),
        )
        .put("store_rounds", variant(st.group_flushes))
        .put("store_apply_wait_us", variant(st.apply_wait_us))
        .put("store_sync_wait_us", variant(st.sync_wait_us))
        .put("store_flush_us", variant(st.flush_us));
        Ok(dict_of(d))
    }

    /// The result of a request by its handle, as its Response carries it; code 3 while it is
    /// pending.
    async fn get_result(&self, handle: zbus::ObjectPath<'_>) -> Result<(u32, Results), Error> {
        if let Some(r) = self.hub.call_result(handle.as_str()) {
            return Ok(r);
        }
        let r = self
            .service
            .request_by_handle(handle.as_str())
            .map_err(to_dbus)?
            .ok_or_else(|| Error::NoSuchRequest(format!("no request {}", handle.as_str())))?;
        Ok(response_of(&r))
    }

    /// Login, step 1: Telegram sends a code to the phone number. Returns `next` (s): `code`.
    /// Every login step is refused with `WrongState` while the account is logged in, and a
    /// step out of order (a code before the phone, a password nobody asked for) likewise.
    async fn login_phone(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        phone: String,
    ) -> Result<Results, Error> {
        let step = self
            .service
            .login_request_code(&phone)
            .await
            .map_err(to_dbus)?;
        self.login_answer(&emitter, step).await
    }

    /// Login, step 2: the code received. Returns `next` (s): `done` (with `user_id` (x)) or
    /// `password` (with `hint` (s)).
    async fn login_code(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        code: String,
    ) -> Result<Results, Error> {
        let step = self.service.login_code(&code).await.map_err(to_dbus)?;
        self.login_answer(&emitter, step).await
    }

    /// Login, step 3 (two-step verification): the password. Returns `next` (s): `done`.
    async fn login_password(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        password: String,
    ) -> Result<Results, Error> {
        let step = self
            .service
            .login_password(&password)
            .await
            .map_err(to_dbus)?;
        self.login_answer(&emitter, step).await
    }

    /// Logs the account out (`auth.logOut`); Telegram discards its secret chats, and so does
    /// the daemon: each closes (`Closed` by `logout`) and its open requests fail with
    /// `LOGGED_OUT`.
    async fn logout(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), Error> {
        self.service.logout().await.map_err(to_dbus)?;
        self.hub.set_login(LoginStage::LoggedOut);
        self.hub.announce_login(emitter.connection()).await;
        Ok(())
    }

    /// A secret chat request waits for `AcceptChat` / `DeclineChat` (the `ask` policy).
    #[zbus(signal)]
    pub async fn chat_requested(
        emitter: &SignalEmitter<'_>,
        chat_id: i32,
        user_id: i64,
    ) -> zbus::Result<()>;

    /// A chat object appeared (a chat we opened, or one someone opened with us).
    #[zbus(signal)]
    pub async fn chat_added(
        emitter: &SignalEmitter<'_>,
        chat_id: i32,
        path: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A forgotten chat's object went (`ForgetChat`).
    #[zbus(signal)]
    pub async fn chat_removed(
        emitter: &SignalEmitter<'_>,
        chat_id: i32,
        path: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }

    /// `ready` (signed in; at start, as the stored session says, until Telegram says
    /// otherwise), `wait_phone`, `wait_code`, `wait_password` (the next login step), or
    /// `logged_out`: the account's authorization ended, by `Logout` or from another device
    /// (the session terminated there, even while the daemon was stopped: `wait_phone` when the
    /// daemon first finds the key logged out, `logged_out` once Telegram confirmed the end);
    /// Telegram discarded its secret chats, and the daemon closes them (`Closed` by `logout`).
    /// After a restart a logged-out account says `wait_phone`. `LoginPhone` signs in again. Every change is
    /// signalled (`PropertiesChanged`, with `SelfUserId`).
    #[zbus(property)]
    async fn authorization_state(&self) -> String {
        self.hub.login_properties(self.service.shared()).0.into()
    }

    /// Our user id (0 until known, and while logged out).
    #[zbus(property)]
    async fn self_user_id(&self) -> i64 {
        self.hub.login_properties(self.service.shared()).1
    }

    /// What happens to a chat someone opens with us: `ask`, `never`, `always`, or the user
    /// ids accepted at once.
    #[zbus(property)]
    async fn accept_policy(&self) -> String {
        self.service.shared().accept.name()
    }
}

impl Manager {
    async fn login_answer(
        &self,
        emitter: &SignalEmitter<'_>,
        step: tglink::LoginStep,
    ) -> Result<Results, Error> {
        use tglink::LoginStep as S;
        let mut d = Dict::default();
        match step {
            S::CodeSent => {
                self.hub.set_login(LoginStage::WaitCode);
                d.put("next", string_variant("code"));
            }
            S::PasswordRequired { hint } => {
                self.hub.set_login(LoginStage::WaitPassword);
                d.put("next", string_variant("password"))
                    .put("hint", string_variant(hint.as_deref().unwrap_or("")));
            }
            S::Done { user_id } => {
                self.hub.set_login(LoginStage::Ready);
                d.put("next", string_variant("done"))
                    .put("user_id", variant(user_id));
            }
            S::Invalid => {
                let password = *super::lock(&self.hub.login) == LoginStage::WaitPassword;
                return Err(Error::Telegram(if password {
                    "PASSWORD_HASH_INVALID: the password is wrong; try again".into()
                } else {
                    "PHONE_CODE_INVALID: the code is wrong; try again".into()
                }));
            }
            S::SignUpRequired => {
                return Err(Error::Telegram(
                    "PHONE_NUMBER_UNOCCUPIED: no account has this number (sign up in an official app first)"
                        .into(),
                ));
            }
        }
        self.hub.announce_login(emitter.connection()).await;
        Ok(d.0)
    }
}
