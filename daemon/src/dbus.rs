//! The D-Bus face (zbus, session bus or any address): `io.github.tgsecretd.Manager1` at
//! `/io/github/tgsecretd`, and one `io.github.tgsecretd.Request1` object per pending request.
//!
//! Every method checks its arguments before anything is stored and returns a typed
//! `io.github.tgsecretd.Error.<Name>` ([`ipc_proto::Error`]). `SendEncryptedService` follows
//! xdg-desktop-portal's Request pattern: the handle path is
//! `/io/github/tgsecretd/request/<SENDER>/<TOKEN>` (predictable from the caller's unique name
//! and `handle_token`, so the caller subscribes first); the object is exported before the
//! request is stored, and removed once its one `Response` went out.
//!
//! A Response is emitted only after the result is durable, and recorded as announced after it
//! went out; a request whose result is final but not recorded as announced (the daemon was
//! killed in between) is announced again after a restart, with the same content. Clients take
//! the first Response of a handle as final.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use ipc_proto::{Error, options, response};
use secret_core::chat::Event;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, ObjectServer, OwnedObjectPath, OwnedVariant, Str, interface};

use crate::errors_api::ServiceError;
use crate::records::{self, RequestRecord, RequestStatus};
use crate::service::{Peer, SendOptions, Service, message_from_tl};
use crate::shared::Announce;
use crate::store::{Batch, Store, Tree};

fn to_dbus(e: ServiceError) -> Error {
    let text = e.to_string();
    match e {
        ServiceError::NoSuchChat(_) => Error::NoSuchChat(text),
        ServiceError::InvalidMessage(_) => Error::InvalidMessage(text),
        ServiceError::NotAllowed(_) => Error::NotAllowed(text),
        ServiceError::WrongState(_) => Error::WrongState(text),
        ServiceError::TooLarge(_) => Error::TooLarge(text),
        ServiceError::InvalidArgument(_) => Error::InvalidArgument(text),
        ServiceError::BadRandomId(_) => Error::BadRandomId(text),
        ServiceError::NotLoggedIn => Error::NotLoggedIn(text),
        ServiceError::Internal(_) => Error::Internal(text),
    }
}

fn variant<T: Into<zbus::Variant<'static>>>(v: T) -> Option<OwnedVariant> {
    OwnedVariant::try_from(v.into()).ok()
}

fn string_variant(s: &str) -> Option<OwnedVariant> {
    OwnedVariant::try_from(zbus::Variant::from(Str::from(s.to_owned()))).ok()
}

/// The parsed options of `SendEncryptedService`.
struct SendArgs {
    token: Option<String>,
    random_id: Option<i64>,
    notify: bool,
}

fn send_args(options: &HashMap<String, OwnedVariant>) -> Result<SendArgs, Error> {
    let bad = |k: &str, w: &str| Error::InvalidArgument(format!("option {k}: {w}"));
    let mut a = SendArgs {
        token: None,
        random_id: None,
        notify: false,
    };
    for (k, v) in options {
        match k.as_str() {
            options::HANDLE_TOKEN => {
                let s = String::try_from(v.try_clone().map_err(|e| bad(k, &e.to_string()))?)
                    .map_err(|_| bad(k, "must be a string (s)"))?;
                if !ipc_proto::valid_token(&s) {
                    return Err(bad(k, "must be 1 to 255 of [A-Za-z0-9_]"));
                }
                a.token = Some(s);
            }
            options::RANDOM_ID => {
                a.random_id =
                    Some(i64::try_from(v).map_err(|_| bad(k, "must be a 64-bit integer (x)"))?);
            }
            options::NOTIFY => {
                a.notify = bool::try_from(v).map_err(|_| bad(k, "must be a boolean (b)"))?;
            }
            other => return Err(bad(other, "unknown option")),
        }
    }
    Ok(a)
}

/// The Response of a final request: code and results.
pub fn response_of(r: &RequestRecord) -> (u32, HashMap<String, OwnedVariant>) {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: Option<OwnedVariant>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    match &r.status {
        RequestStatus::Failed { error, message } => {
            put("error", string_variant(error));
            put("message", string_variant(message));
            (response::FAILED, m)
        }
        RequestStatus::Pending | RequestStatus::Sent => {
            let part = |p: &records::RequestPart| -> HashMap<String, OwnedVariant> {
                let mut d = HashMap::new();
                let mut add = |k: &str, v: Option<OwnedVariant>| {
                    if let Some(v) = v {
                        d.insert(k.to_owned(), v);
                    }
                };
                add("date", variant(p.date.unwrap_or(0)));
                add("random_id", variant(p.random_id));
                add("out_seq_no", variant(p.out_seq_no));
                add("in_seq_no", variant(p.in_seq_no));
                add("layer", variant(p.layer));
                d
            };
            if let Some(first) = r.parts.first() {
                for (k, v) in part(first) {
                    put(&k, Some(v));
                }
            }
            let all: Vec<HashMap<String, OwnedVariant>> = r.parts.iter().map(part).collect();
            put("results", variant(all));
            let code = if matches!(r.status, RequestStatus::Sent) {
                response::SENT
            } else {
                3
            };
            (code, m)
        }
    }
}

/// `io.github.tgsecretd.Request1`.
pub struct Request {
    closed: Arc<Mutex<HashSet<String>>>,
    path: String,
}

#[interface(name = "io.github.tgsecretd.Request1")]
impl Request {
    /// Stops watching the request: no Response will be emitted. A message already stored still
    /// goes out (its seq slot is taken; skipping it would leave the peer a hole).
    async fn close(&self, #[zbus(object_server)] server: &ObjectServer) -> Result<(), Error> {
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.path.clone());
        let _ = server.remove::<Request, _>(self.path.as_str()).await;
        Ok(())
    }

    /// The request's one result.
    #[zbus(signal)]
    async fn response(
        emitter: &SignalEmitter<'_>,
        code: u32,
        results: HashMap<String, OwnedVariant>,
    ) -> zbus::Result<()>;
}

/// `io.github.tgsecretd.Manager1`.
pub struct Manager {
    service: Service,
    closed: Arc<Mutex<HashSet<String>>>,
}

#[interface(name = "io.github.tgsecretd.Manager1")]
impl Manager {
    /// Sends a boxed TL `DecryptedMessage` (normally `decryptedMessageService`) to a secret
    /// chat; returns the request's handle once it is durably stored. Options: `handle_token`
    /// (s), `random_id` (x: a retry with the same one returns the first handle), `notify` (b:
    /// through `messages.sendEncrypted`).
    async fn send_encrypted_service(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        chat_id: i32,
        message: Vec<u8>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, Error> {
        let args = send_args(&options)?;
        let message = message_from_tl(&message).map_err(to_dbus)?;
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let token = match args.token {
            Some(t) => t,
            None => format!("t{}", self.service.shared().request_id()),
        };
        let path = ipc_proto::request_path(&sender, &token);
        let object = OwnedObjectPath::try_from(path.clone())
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let fresh = server
            .at(
                object.as_ref(),
                Request {
                    closed: Arc::clone(&self.closed),
                    path: path.clone(),
                },
            )
            .await?
            .is_none();
        let opts = SendOptions {
            notify: args.notify,
            random_id: args.random_id,
            handle: path.clone(),
        };
        let res = self
            .service
            .send_encrypted_service(Peer::id(chat_id), message, opts)
            .await;
        match res {
            Ok(a) => {
                if a.existing && a.handle != path && fresh {
                    let _ = server.remove::<Request, _>(object.as_ref()).await;
                }
                OwnedObjectPath::try_from(a.handle).map_err(|e| Error::Internal(e.to_string()))
            }
            Err(e) => {
                if fresh {
                    let _ = server.remove::<Request, _>(object.as_ref()).await;
                }
                Err(to_dbus(e))
            }
        }
    }

    /// Opens a secret chat with a user (`access_hash` (x) option if known); returns its id.
    async fn request_chat(
        &self,
        user_id: i64,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<i32, Error> {
        let mut access_hash = 0;
        for (k, v) in &options {
            match k.as_str() {
                "access_hash" => {
                    access_hash = i64::try_from(v).map_err(|_| {
                        Error::InvalidArgument("option access_hash: must be x".into())
                    })?
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "option {other}: unknown option"
                    )));
                }
            }
        }
        self.service
            .request_chat(user_id, access_hash)
            .await
            .map_err(to_dbus)
    }

    /// Closes a secret chat (`discardEncryption`), or declines a requested one; with
    /// `delete_history` the peer is asked to delete the history. Requests not sent yet end with
    /// `CHAT_DISCARDED`.
    async fn discard_chat(&self, chat_id: i32, delete_history: bool) -> Result<(), Error> {
        self.service
            .discard(chat_id, delete_history)
            .await
            .map_err(to_dbus)
    }

    /// Accepts a requested secret chat (one the accept policy did not accept at once).
    async fn accept_chat(&self, chat_id: i32) -> Result<(), Error> {
        self.service.accept(chat_id).await.map_err(to_dbus)
    }

    /// Every chat: `chat_id` (i), `peer_user_id` (x), `role` (s), `state` (s), `peer_layer`
    /// (i), `ttl_seconds` (i).
    async fn list_chats(&self) -> Result<Vec<HashMap<String, OwnedVariant>>, Error> {
        let chats = self.service.list_chats().map_err(to_dbus)?;
        Ok(chats
            .into_iter()
            .map(|c| {
                let mut d = HashMap::new();
                let mut add = |k: &str, v: Option<OwnedVariant>| {
                    if let Some(v) = v {
                        d.insert(k.to_owned(), v);
                    }
                };
                add("chat_id", variant(c.chat_id));
                add("peer_user_id", variant(c.peer_user_id));
                add("role", string_variant(c.role));
                add("state", string_variant(c.state));
                add("peer_layer", variant(c.peer_layer));
                add("ttl_seconds", variant(c.ttl_seconds));
                d
            })
            .collect())
    }

    /// The daemon's status: `version` (s), `logged_in` (b), `self_user_id` (x, once known).
    async fn get_status(&self) -> Result<HashMap<String, OwnedVariant>, Error> {
        let shared = self.service.shared();
        let mut d = HashMap::new();
        if let Some(v) = string_variant(env!("CARGO_PKG_VERSION")) {
            d.insert("version".into(), v);
        }
        let self_user = shared.link.session().self_user();
        if let Some(v) = variant(self_user.is_some() && !shared.logged_out()) {
            d.insert("logged_in".into(), v);
        }
        if let Some(id) = self_user
            && let Some(v) = variant(id)
        {
            d.insert("self_user_id".into(), v);
        }
        Ok(d)
    }

    /// The result of a request by its handle: (code, results) as its Response carries them;
    /// code 3 while it is pending.
    async fn get_result(
        &self,
        handle: zbus::ObjectPath<'_>,
    ) -> Result<(u32, HashMap<String, OwnedVariant>), Error> {
        let shared = self.service.shared();
        let id = shared
            .store
            .get(Tree::Meta, &records::handle_key(handle.as_str()))
            .map_err(|e| Error::Internal(e.to_string()))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| Error::NoSuchRequest(format!("no request {}", handle.as_str())))?;
        let r = self
            .service
            .request(id)
            .map_err(to_dbus)?
            .ok_or_else(|| Error::NoSuchRequest(format!("no request {}", handle.as_str())))?;
        Ok(response_of(&r))
    }
}

/// Announces on D-Bus: the Response of each request (then removes its object and records it as
/// announced), and nothing else yet for chat events.
pub struct DbusAnnounce {
    conn: Connection,
    store: Arc<Store>,
    closed: Arc<Mutex<HashSet<String>>>,
}

impl DbusAnnounce {
    /// The announcer of a connection.
    pub fn new(conn: Connection, store: Arc<Store>) -> Arc<DbusAnnounce> {
        Arc::new(DbusAnnounce {
            conn,
            store,
            closed: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Serves the manager (and the handles of open requests) and takes the bus name.
    pub async fn serve(&self, service: Service) -> Result<(), zbus::Error> {
        let server = self.conn.object_server();
        server
            .at(
                ipc_proto::MANAGER_PATH,
                Manager {
                    service: service.clone(),
                    closed: Arc::clone(&self.closed),
                },
            )
            .await?;
        for path in open_handles(&service) {
            let p = path.clone();
            let _ = server
                .at(
                    p.as_str(),
                    Request {
                        closed: Arc::clone(&self.closed),
                        path,
                    },
                )
                .await;
        }
        self.conn.request_name(ipc_proto::BUS_NAME).await?;
        Ok(())
    }

    /// Announces every final request not yet announced (after a restart).
    pub async fn announce_pending(&self) {
        let ids: Vec<u64> = self
            .store
            .scan_prefix(Tree::Meta, records::ANNOUNCE_PREFIX)
            .flatten()
            .filter_map(|(k, _)| k.get(1..).and_then(|b| <[u8; 8]>::try_from(b).ok()))
            .map(u64::from_be_bytes)
            .collect();
        for id in ids {
            let rec = self
                .store
                .get(Tree::Requests, &records::request_key(id))
                .ok()
                .flatten()
                .and_then(|b| records::decode::<RequestRecord>(&b).ok());
            if let Some(r) = rec {
                self.respond(r).await;
            }
        }
    }

    async fn respond(&self, mut r: RequestRecord) {
        let closed = self
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&r.handle);
        if !closed {
            let (code, results) = response_of(&r);
            match SignalEmitter::new(&self.conn, r.handle.as_str()) {
                Ok(emitter) => {
                    if let Err(e) = Request::response(&emitter, code, results).await {
                        tracing::warn!(handle = %r.handle, error = %e, "Response not emitted");
                        return;
                    }
                }
                Err(e) => tracing::warn!(handle = %r.handle, error = %e, "bad handle path"),
            }
            let _ = self
                .conn
                .object_server()
                .remove::<Request, _>(r.handle.as_str())
                .await;
        }
        r.announced = true;
        let mut b = Batch::new();
        b.remove(Tree::Meta, records::announce_key(r.id));
        if let Ok(enc) = records::encode(&r) {
            b.put(Tree::Requests, records::request_key(r.id), enc);
        }
        if let Err(e) = self.store.commit(b).await {
            tracing::error!(error = %e, "announcement not recorded");
        }
    }
}

/// The signals of `io.github.tgsecretd.SecretChat1` (on `/io/github/tgsecretd/chat/<id>`).
pub struct ChatSignals;

#[interface(name = "io.github.tgsecretd.SecretChat1")]
impl ChatSignals {
    /// A service action from the peer, in order: its random_id, the server date, the action's
    /// TL name (`decryptedMessageActionTyping`, `...SetMessageTTL`, `...ReadMessages`,
    /// `...DeleteMessages`, `...ScreenshotMessages`, `...FlushHistory`) and the action in
    /// MadelineProto-style JSON.
    #[zbus(signal)]
    async fn service_action(
        emitter: &SignalEmitter<'_>,
        random_id: i64,
        date: i32,
        action: &str,
        json: &str,
    ) -> zbus::Result<()>;

    /// A content message from the peer, in order (MadelineProto-style JSON).
    #[zbus(signal)]
    async fn message(
        emitter: &SignalEmitter<'_>,
        random_id: i64,
        date: i32,
        json: &str,
    ) -> zbus::Result<()>;

    /// The chat's state changed (`requested`, `waiting`, `ready`, `discarded`).
    #[zbus(signal)]
    async fn state_changed(emitter: &SignalEmitter<'_>, state: &str) -> zbus::Result<()>;
}

async fn emit_event(emitter: &SignalEmitter<'_>, e: Event) -> zbus::Result<()> {
    use secret_core::tl::TlJson;
    match e {
        Event::Action {
            random_id,
            date,
            action,
        } => {
            let json = action.to_json().to_string();
            ChatSignals::service_action(emitter, random_id, date, action.constructor_name(), &json)
                .await
        }
        Event::Message {
            random_id,
            date,
            message,
        } => {
            let json = message.to_json().to_string();
            ChatSignals::message(emitter, random_id, date, &json).await
        }
        Event::StatusChanged(s) => ChatSignals::state_changed(emitter, s.name()).await,
        _ => Ok(()),
    }
}

fn open_handles(service: &Service) -> Vec<String> {
    let store = &service.shared().store;
    store
        .scan_prefix(Tree::Meta, records::OPEN_PREFIX)
        .flatten()
        .filter_map(|(k, _)| k.get(5..).and_then(|b| <[u8; 8]>::try_from(b).ok()))
        .map(u64::from_be_bytes)
        .filter_map(|id| service.request(id).ok().flatten())
        .map(|r| r.handle)
        .collect()
}

impl Announce for DbusAnnounce {
    fn request_done(&self, request: RequestRecord) -> BoxFuture<'static, ()> {
        let this = DbusAnnounce {
            conn: self.conn.clone(),
            store: Arc::clone(&self.store),
            closed: Arc::clone(&self.closed),
        };
        Box::pin(async move { this.respond(request).await })
    }

    fn chat_events(&self, chat_id: i32, events: Vec<Event>) -> BoxFuture<'static, ()> {
        let conn = self.conn.clone();
        Box::pin(async move {
            let path = ipc_proto::chat_path(chat_id);
            let Ok(emitter) = SignalEmitter::new(&conn, path.as_str()) else {
                return;
            };
            for e in events {
                if let Err(err) = emit_event(&emitter, e).await {
                    tracing::debug!(chat_id, error = %err, "event signal not emitted");
                }
            }
        })
    }
}
