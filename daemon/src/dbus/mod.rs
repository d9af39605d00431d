//! The D-Bus face (zbus, session bus or any address), named in `ipc_proto` and checked in as
//! introspection XML (`ipc-proto/interfaces/`):
//!
//! | object | interface | module |
//! | --- | --- | --- |
//! | `/io/github/tgsecretd` | `io.github.tgsecretd.Manager1` | [`manager`] |
//! | `/io/github/tgsecretd/chat` | `org.freedesktop.DBus.ObjectManager` (zbus's) | [`DbusAnnounce::serve`] |
//! | `/io/github/tgsecretd/chat/<id>` (`_<id>` if negative) | `io.github.tgsecretd.SecretChat1` | [`chat`] |
//! | `/io/github/tgsecretd/request/<SENDER>/<TOKEN>` | `io.github.tgsecretd.Request1` | [`request`] |
//!
//! Invariants:
//! * a chat's object exists from the start when the store holds at most [`EXPORT_AT_START`]
//!   chats (a desktop's: a path kept from `ChatAdded` answers after a restart), else from its
//!   first durable change since the daemon started, or from the first `GetChat` / `ListChats`
//!   that names it, until the daemon stops or `ForgetChat` removes the chat (zbus spends about
//!   3 KB per object, 300 MB for 100,000 chats); it is exported before any signal of the chat,
//!   and a new chat's `Manager1.ChatAdded` follows its export; each export is an
//!   `InterfacesAdded` of the chats' ObjectManager (so the first `ListChats` of a store beyond
//!   `EXPORT_AT_START` emits one per chat not yet exported);
//! * what is announced is durable: a Response, an event signal or a `PropertiesChanged` goes out
//!   only after the commit it reports (the actor calls [`Announce`] from its durable step);
//! * a Response is recorded as announced after it went out; one whose result is final but not
//!   recorded (the daemon was killed in between) is announced again after a restart, with the
//!   same content, so clients take the first Response of a handle as final;
//! * every property is read-only: `Properties.Set` answers `PropertyReadOnly` ([`readonly`]);
//! * `PropertiesChanged` of a chat's properties is coalesced: at most one per chat every
//!   [`FLUSH_EVERY`], carrying the properties that changed since the last one.

pub mod chat;
pub mod convert;
pub mod manager;
pub mod readonly;
pub mod request;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ipc_proto::Error;
use secret_core::chat::{Event, Status};
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedVariant, Variant};

pub use chat::ChatObject;
pub use manager::Manager;
pub use readonly::ReadOnly;
pub use request::{Request, response_of};

use crate::chatstore;
use crate::errors_api::ServiceError;
use crate::records::{self, RequestRecord};
use crate::service::Service;
use crate::shared::{Announce, ChatView};
use crate::store::{Batch, Store, Tree};

/// Takes the bus name for good: without `ALLOW_REPLACEMENT` (no later process can take it
/// from us while we run, so a client never loses a daemon that still holds the chats' store)
/// and without `REPLACE_EXISTING` or queueing (a name already owned, e.g. by another
/// tgsecretd on another state directory, is [`zbus::Error::NameTaken`], and the start fails).
async fn take_name(conn: &Connection) -> Result<(), zbus::Error> {
    use zbus::fdo::{RequestNameFlags, RequestNameReply};
    match conn
        .request_name_with_flags(ipc_proto::BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await?
    {
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => Ok(()),
        RequestNameReply::Exists | RequestNameReply::InQueue => Err(zbus::Error::NameTaken),
    }
}

/// How long chat property changes are gathered into one `PropertiesChanged`.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Up to this many stored chats, every chat's object is exported at start (see the
/// invariants); a larger store exports them on first need.
pub const EXPORT_AT_START: usize = 1000;

/// Results of `Call`'s immediate methods kept for `GetResult` (the oldest go first).
const CALL_RESULTS_KEPT: usize = 10_000;

/// The daemon's errors as D-Bus errors.
pub fn to_dbus(e: ServiceError) -> Error {
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
        ServiceError::UnknownAction(_) => Error::UnknownAction(text),
        ServiceError::UnknownMethod(_) => Error::UnknownMethod(text),
        ServiceError::Telegram(_) => Error::Telegram(text),
        ServiceError::Internal(_) => Error::Internal(text),
    }
}

/// A view as `Call`'s JSON result (`secretChat`, the keys of `ipc_proto::chat_keys`).
pub fn view_json(v: &ChatView) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("_".into(), "secretChat".into());
    for (k, val) in chat::view_values(v, false) {
        if let Ok(j) = convert::to_json(&val, 0) {
            m.insert(k.into(), j);
        }
    }
    serde_json::Value::Object(m)
}

/// Where a login stands, as far as this daemon saw it (`AuthorizationState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginStage {
    /// No login step was taken.
    None,
    /// A code was sent.
    WaitCode,
    /// A two-step password is asked for.
    WaitPassword,
    /// Logged in by a login here.
    Ready,
    /// The authorization ended: by `Logout`, or elsewhere (confirmed: see
    /// `Shared::confirm_ended`).
    LoggedOut,
}

#[derive(Default)]
struct Views {
    /// Views announced since the last flush.
    pending: HashMap<i32, ChatView>,
    /// The views of the last `PropertiesChanged` per chat.
    emitted: HashMap<i32, ChatView>,
    /// Chats with an object.
    exported: HashSet<i32>,
    /// Chats forgotten while the daemon runs (`ForgetChat`): never exported again (chat ids
    /// are not reused), whatever a flush or a listing that began before still holds.
    forgotten: HashSet<i32>,
}

/// `Call`'s immediate results by handle, and the handles oldest first.
type CallResults = (
    HashMap<String, (u32, HashMap<String, OwnedVariant>)>,
    Vec<String>,
);

/// What the D-Bus objects and the announcer share.
pub struct Hub {
    /// The API, while the daemon serves (`Request1.Close` needs it; cleared at stop so that
    /// no D-Bus object keeps the store open).
    service: Mutex<Option<Service>>,
    store: Weak<Store>,
    views: Mutex<Views>,
    wake: tokio::sync::Notify,
    calls: Mutex<CallResults>,
    login: Mutex<LoginStage>,
    /// The manager's login properties as last emitted (or as they were when the daemon began
    /// to serve): `PropertiesChanged` carries only what differs. Held while one is emitted,
    /// so that they go out in the order the values were read.
    login_emitted: tokio::sync::Mutex<Option<LoginProperties>>,
    /// The login state changed outside a login call ([`Announce::login_changed`]): the next
    /// flush emits the login properties.
    login_dirty: std::sync::atomic::AtomicBool,
}

/// `AuthorizationState` and `SelfUserId`.
type LoginProperties = (&'static str, i64);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    fn service(&self) -> Option<Service> {
        lock(&self.service).clone()
    }

    fn authorization_state(&self, logged_out: bool) -> &'static str {
        match (logged_out, *lock(&self.login)) {
            (false, _) => "ready",
            (true, LoginStage::WaitCode) => "wait_code",
            (true, LoginStage::WaitPassword) => "wait_password",
            (true, LoginStage::LoggedOut) => "logged_out",
            (true, _) => "wait_phone",
        }
    }

    fn set_login(&self, s: LoginStage) {
        *lock(&self.login) = s;
    }

    /// The manager's login properties as they are now.
    fn login_properties(&self, shared: &crate::shared::Shared) -> LoginProperties {
        let logged_out = shared.logged_out();
        let user = if logged_out {
            0
        } else {
            shared.link.session().self_user().unwrap_or(0)
        };
        (self.authorization_state(logged_out), user)
    }

    /// Emits `PropertiesChanged` for the manager's login properties that changed since they
    /// were last emitted.
    async fn announce_login(&self, conn: &Connection) {
        let Some(service) = self.service() else {
            return;
        };
        let mut emitted = self.login_emitted.lock().await;
        let now = self.login_properties(service.shared());
        if *emitted == Some(now) {
            return;
        }
        let before = emitted.replace(now);
        let mut changed: HashMap<&str, Variant<'_>> = HashMap::new();
        if before.map(|b| b.0) != Some(now.0) {
            changed.insert("AuthorizationState", Variant::from(now.0));
        }
        if before.map(|b| b.1) != Some(now.1) {
            changed.insert("SelfUserId", Variant::from(now.1));
        }
        let (Ok(emitter), Ok(iface)) = (
            SignalEmitter::new(conn, ipc_proto::MANAGER_PATH),
            zbus::names::InterfaceName::try_from(ipc_proto::MANAGER_INTERFACE),
        ) else {
            return;
        };
        if let Err(e) =
            zbus::fdo::Properties::properties_changed(&emitter, iface, changed, (&[][..]).into())
                .await
        {
            tracing::debug!(error = %e, "the login properties' PropertiesChanged not emitted");
        }
    }

    fn call_result(&self, handle: &str) -> Option<(u32, HashMap<String, OwnedVariant>)> {
        let calls = lock(&self.calls);
        let (code, results) = calls.0.get(handle)?;
        let copy = results
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.try_clone().ok()?)))
            .collect();
        Some((*code, copy))
    }

    /// Emits the Response of one of `Call`'s immediate methods and keeps it for `GetResult`.
    async fn answer_call(
        &self,
        conn: &Connection,
        path: &str,
        code: u32,
        results: HashMap<String, OwnedVariant>,
    ) {
        {
            let mut calls = lock(&self.calls);
            let copy = results
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.try_clone().ok()?)))
                .collect();
            calls.0.insert(path.to_owned(), (code, copy));
            calls.1.push(path.to_owned());
            if calls.1.len() > CALL_RESULTS_KEPT {
                let old = calls.1.remove(0);
                calls.0.remove(&old);
            }
        }
        emit_response(conn, path, code, results).await;
    }

    /// Exports the chat's object if it has none yet (never a forgotten chat's). Whether the
    /// chat has its object.
    async fn export(&self, conn: &Connection, chat_id: i32) -> bool {
        {
            let mut views = lock(&self.views);
            if views.forgotten.contains(&chat_id) {
                return false;
            }
            if !views.exported.insert(chat_id) {
                return true;
            }
        }
        let path = ipc_proto::chat_path(chat_id);
        let object = ReadOnly(ChatObject {
            chat_id,
            store: Weak::clone(&self.store),
        });
        if let Err(e) = conn.object_server().at(path.as_str(), object).await {
            // Either the object is not there, or it is and its InterfacesAdded failed.
            tracing::warn!(chat_id, error = %e, "chat object export");
        }
        // A forget that ran meanwhile removed the object before it was there: again now.
        if lock(&self.views).forgotten.contains(&chat_id) {
            let _ = conn
                .object_server()
                .remove::<ReadOnly<ChatObject>, _>(path.as_str())
                .await;
            return false;
        }
        true
    }

    /// A forgotten chat: its object goes, with what was gathered for it.
    async fn unexport(&self, conn: &Connection, chat_id: i32) {
        {
            let mut v = lock(&self.views);
            v.pending.remove(&chat_id);
            v.emitted.remove(&chat_id);
            v.exported.remove(&chat_id);
            v.forgotten.insert(chat_id);
        }
        let path = ipc_proto::chat_path(chat_id);
        let _ = conn
            .object_server()
            .remove::<ReadOnly<ChatObject>, _>(path.as_str())
            .await;
    }

    /// Emits the gathered property changes (see [`FLUSH_EVERY`]).
    async fn flush(&self, conn: &Connection) {
        let changes: Vec<(ChatView, Option<ChatView>)> = {
            let mut v = lock(&self.views);
            let Views {
                pending,
                emitted,
                forgotten,
                ..
            } = &mut *v;
            pending
                .drain()
                .map(|(_, view)| view)
                .filter(|view| !forgotten.contains(&view.summary.chat_id))
                .map(|view| {
                    let old = emitted.insert(view.summary.chat_id, view.clone());
                    (view, old)
                })
                .collect()
        };
        for (new, old) in changes {
            if self.export(conn, new.summary.chat_id).await {
                emit_properties(conn, &new, old.as_ref()).await;
            }
        }
    }
}

async fn emit_properties(conn: &Connection, new: &ChatView, old: Option<&ChatView>) {
    let before: HashMap<&str, OwnedVariant> = old
        .map(|o| chat::view_values(o, true).into_iter().collect())
        .unwrap_or_default();
    let changed: HashMap<&str, Variant<'_>> = chat::view_values(new, true)
        .into_iter()
        .filter(|(k, _)| !chat::CONSTANT.contains(k))
        .filter(|(k, v)| before.get(k) != Some(v))
        .map(|(k, v)| (k, Variant::from(v)))
        .collect();
    if changed.is_empty() {
        return;
    }
    let path = ipc_proto::chat_path(new.summary.chat_id);
    let Ok(emitter) = SignalEmitter::new(conn, path.as_str()) else {
        return;
    };
    let Ok(iface) = zbus::names::InterfaceName::try_from(ipc_proto::CHAT_INTERFACE) else {
        return;
    };
    if let Err(e) =
        zbus::fdo::Properties::properties_changed(&emitter, iface, changed, (&[][..]).into()).await
    {
        tracing::debug!(error = %e, "PropertiesChanged not emitted");
    }
}

async fn emit_response(
    conn: &Connection,
    handle: &str,
    code: u32,
    results: HashMap<String, OwnedVariant>,
) -> bool {
    match SignalEmitter::new(conn, handle) {
        Ok(emitter) => {
            if let Err(e) = Request::response(&emitter, code, results).await {
                tracing::warn!(%handle, error = %e, "Response not emitted");
                return false;
            }
        }
        Err(e) => tracing::warn!(%handle, error = %e, "bad handle path"),
    }
    let _ = conn.object_server().remove::<Request, _>(handle).await;
    true
}

/// Announces on D-Bus: the Response of each request (then removes its object and records it
/// as announced), the signals of chat events, and the chats' `PropertiesChanged`.
pub struct DbusAnnounce {
    conn: Connection,
    store: Arc<Store>,
    hub: Arc<Hub>,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl DbusAnnounce {
    /// The announcer of a connection.
    pub fn new(conn: Connection, store: Arc<Store>) -> Arc<DbusAnnounce> {
        let hub = Arc::new(Hub {
            service: Mutex::new(None),
            store: Arc::downgrade(&store),
            views: Mutex::new(Views::default()),
            wake: tokio::sync::Notify::new(),
            calls: Mutex::new((HashMap::new(), Vec::new())),
            login: Mutex::new(LoginStage::None),
            login_emitted: tokio::sync::Mutex::new(None),
            login_dirty: std::sync::atomic::AtomicBool::new(false),
        });
        Arc::new(DbusAnnounce {
            conn,
            store,
            hub,
            flusher: Mutex::new(None),
        })
    }

    /// Serves the manager, an object per stored chat and the handles of open requests, then
    /// takes the bus name.
    pub async fn serve(&self, service: Service) -> Result<(), zbus::Error> {
        *lock(&self.hub.service) = Some(service.clone());
        *self.hub.login_emitted.lock().await = Some(self.hub.login_properties(service.shared()));
        let server = self.conn.object_server();
        server
            .at(
                ipc_proto::MANAGER_PATH,
                ReadOnly(Manager {
                    service: service.clone(),
                    hub: Arc::clone(&self.hub),
                }),
            )
            .await?;
        for path in service.shared().open_handle_paths() {
            let p = path.clone();
            let _ = server
                .at(
                    p.as_str(),
                    Request {
                        hub: Arc::clone(&self.hub),
                        path,
                    },
                )
                .await;
        }
        // The chats' object manager, before any chat object: zbus then emits InterfacesAdded
        // for each chat exported below it, and InterfacesRemoved when one goes.
        server
            .at(ipc_proto::CHATS_PATH, zbus::fdo::ObjectManager)
            .await?;
        // Every stored chat's object when there are few (a desktop's), so that a path a client
        // kept from `ChatAdded` or `ListChats` answers after a restart too; beyond
        // EXPORT_AT_START, on first need (zbus spends about 3 KB per object).
        match chatstore::chat_ids_upto(&service.shared().store, EXPORT_AT_START + 1) {
            Ok(ids) if ids.len() <= EXPORT_AT_START => {
                for id in ids {
                    self.hub.export(&self.conn, id).await;
                }
            }
            Ok(_) => tracing::info!(
                "more than {EXPORT_AT_START} chats: their objects are exported on first need"
            ),
            Err(e) => tracing::warn!(error = %e, "chat objects not exported at start"),
        }
        let (conn, hub) = (self.conn.clone(), Arc::clone(&self.hub));
        *lock(&self.flusher) = Some(tokio::spawn(async move {
            loop {
                hub.wake.notified().await;
                tokio::time::sleep(FLUSH_EVERY).await;
                hub.flush(&conn).await;
                if hub
                    .login_dirty
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    hub.announce_login(&conn).await;
                }
            }
        }));
        take_name(&self.conn).await
    }

    /// Stops the property flusher (the daemon stops).
    pub async fn stop(&self) {
        lock(&self.hub.service).take();
        let task = lock(&self.flusher).take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
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
                respond(&self.conn, &self.store, r).await;
            }
        }
    }
}

async fn respond(conn: &Connection, store: &Store, mut r: RequestRecord) {
    let (code, results) = response_of(&r);
    if !emit_response(conn, &r.handle, code, results).await {
        return;
    }
    r.announced = true;
    let mut b = Batch::new();
    b.remove(Tree::Meta, records::announce_key(r.id));
    if matches!(chatstore::exists(store, r.chat_id), Ok(false)) {
        // Its chat was forgotten while this Response was due (`chatstore::forget` leaves
        // such a result): now it goes too.
        b.remove(Tree::Requests, records::request_key(r.id));
        b.remove(Tree::Meta, records::handle_key(&r.handle));
    } else if let Ok(enc) = records::encode(&r) {
        b.put(Tree::Requests, records::request_key(r.id), enc);
    }
    if let Err(e) = store.commit(b).await {
        tracing::error!(error = %e, "announcement not recorded");
    }
}

impl Announce for DbusAnnounce {
    fn request_done(&self, request: RequestRecord) -> BoxFuture<'static, ()> {
        let (conn, store) = (self.conn.clone(), Arc::clone(&self.store));
        Box::pin(async move { respond(&conn, &store, request).await })
    }

    fn chat_events(&self, chat_id: i32, events: Vec<Event>) -> BoxFuture<'static, ()> {
        let (conn, store, hub) = (
            self.conn.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.hub),
        );
        Box::pin(async move {
            hub.export(&conn, chat_id).await;
            let created = events
                .iter()
                .any(|e| matches!(e, Event::StatusChanged(Status::Waiting | Status::Requested)));
            if created {
                chat_added(&conn, chat_id).await;
            }
            let path = ipc_proto::chat_path(chat_id);
            let Ok(emitter) = SignalEmitter::new(&conn, path.as_str()) else {
                return;
            };
            for e in events {
                if matches!(e, Event::StatusChanged(Status::Requested)) {
                    ask_user(&conn, &store, chat_id).await;
                }
                if let Err(err) = chat::emit_event(&emitter, e).await {
                    tracing::debug!(chat_id, error = %err, "event signal not emitted");
                }
            }
        })
    }

    fn chat_view(&self, view: ChatView) {
        lock(&self.hub.views)
            .pending
            .insert(view.summary.chat_id, view);
        self.hub.wake.notify_one();
    }

    fn login_changed(&self, ended: bool) {
        if ended {
            self.hub.set_login(LoginStage::LoggedOut);
        }
        self.hub
            .login_dirty
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.hub.wake.notify_one();
    }
}

/// `ChatAdded` of a new chat (its object exists).
async fn chat_added(conn: &Connection, chat_id: i32) {
    let path = ipc_proto::chat_path(chat_id);
    let Ok(p) = zbus::ObjectPath::try_from(path.as_str()) else {
        return;
    };
    if let Ok(emitter) = SignalEmitter::new(conn, ipc_proto::MANAGER_PATH) {
        let _ = Manager::chat_added(&emitter, chat_id, p).await;
    }
}

/// `ChatRequested`, if the chat still waits for the user (the policy did not decide).
async fn ask_user(conn: &Connection, store: &Store, chat_id: i32) {
    let Ok(Some(view)) = chatstore::load_view(store, chat_id) else {
        return;
    };
    if view.summary.state != "requested" {
        return;
    }
    if let Ok(emitter) = SignalEmitter::new(conn, ipc_proto::MANAGER_PATH) {
        let _ = Manager::chat_requested(&emitter, chat_id, view.summary.peer_user_id).await;
    }
}
