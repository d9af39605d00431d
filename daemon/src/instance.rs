//! The whole daemon as one value: [`Daemon::start`] from [`Options`], [`Daemon::stop`].
//!
//! Start order: the store (a second daemon on it is [`StartError::AlreadyRunning`]), the
//! session (stored, or fresh for the configured server), the link, the actix system with the
//! registry and the actors of chats with pending work, the D-Bus service (the bus name last,
//! so a client that sees the name finds every object), then the update loop once the account
//! is known to be logged in. Stop order is the reverse; the store is closed last, after its
//! queued commits are durable.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures_util::future::BoxFuture;
use tglink::{Link, LinkConfig, LinkSession, SessionSnapshot, SessionStorage};
use tokio::sync::mpsc;

use crate::dbus::DbusAnnounce;
use crate::records::{self, SessionRecord};
use crate::registry::{self, Registry};
use crate::service::Service;
use crate::shared::{AcceptPolicy, Announce, Shared, Silent};
use crate::store::{Batch, Store, StoreError, StoreOptions, Tree};

/// Which Telegram to talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// Telegram's production data centres.
    Production,
    /// Telegram's test data centres.
    Test,
    /// One address with a provisioned auth key for every DC (a local server such as tgsim).
    Pinned {
        /// The address.
        addr: SocketAddrV4,
        /// The auth key.
        auth_key: Box<[u8; 256]>,
    },
}

/// Which bus to serve on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bus {
    /// The session bus (`DBUS_SESSION_BUS_ADDRESS`, else the user's bus).
    Session,
    /// A bus address.
    Address(String),
    /// None (tests of the core without D-Bus).
    None,
}

/// How to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the store lives (created 0700).
    pub state_dir: PathBuf,
    /// The server.
    pub server: Server,
    /// api_id.
    pub api_id: i32,
    /// api_hash.
    pub api_hash: String,
    /// The bus.
    pub bus: Bus,
    /// Incoming chats accepted at once.
    pub accept: AcceptPolicy,
    /// Longest wait for one call's answer.
    pub call_timeout: Duration,
}

/// Why the daemon did not start. Nothing is left running.
#[derive(Debug)]
pub enum StartError {
    /// Another tgsecretd uses the store.
    AlreadyRunning(String),
    /// The store could not be opened or read.
    Store(String),
    /// The bus could not be reached, or the service could not be exported.
    Bus(String),
    /// Another process owns `io.github.tgsecretd` on the bus (another tgsecretd, with another
    /// state directory). The name is never taken from its owner.
    NameTaken,
    /// The actix system did not start.
    Actors(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::AlreadyRunning(w) => write!(f, "{w}"),
            StartError::Store(w) => write!(f, "store: {w}"),
            StartError::Bus(w) => write!(f, "D-Bus: {w}"),
            StartError::NameTaken => write!(
                f,
                "D-Bus: {} is owned by another process on this bus (another tgsecretd?); \
                 stop it first, or use another bus",
                ipc_proto::BUS_NAME
            ),
            StartError::Actors(w) => write!(f, "actors: {w}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The session written to the store, one durable commit per change.
struct StoreSession(Arc<Store>);

impl SessionStorage for StoreSession {
    fn save(&self, snapshot: SessionSnapshot) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let rec = records::encode(&SessionRecord::from_snapshot(&snapshot))
                .map_err(|e| e.to_string())?;
            let mut b = Batch::new();
            b.put(Tree::Session, records::SESSION_KEY, rec);
            self.0
                .commit(b)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// The running daemon.
pub struct Daemon {
    service: Service,
    shared: Arc<Shared>,
    store: Arc<Store>,
    link: Arc<Link>,
    system: actix::System,
    actix_thread: Option<std::thread::JoinHandle<()>>,
    conn: Option<zbus::Connection>,
    /// The D-Bus announcer (its property flusher stops with the daemon).
    dbus: Option<Arc<DbusAnnounce>>,
    updates: Option<tokio::task::JoinHandle<()>>,
    fatal: Option<mpsc::UnboundedReceiver<String>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").finish_non_exhaustive()
    }
}

fn open_store(dir: &std::path::Path) -> Result<Store, StartError> {
    match Store::open(dir, StoreOptions::default()) {
        Ok(s) => Ok(s),
        Err(e @ StoreError::Locked { .. }) => Err(StartError::AlreadyRunning(e.to_string())),
        Err(e) => Err(StartError::Store(e.to_string())),
    }
}

fn session_snapshot(store: &Store, server: &Server) -> Result<SessionSnapshot, StartError> {
    let stored = store
        .get(Tree::Session, records::SESSION_KEY)
        .map_err(|e| StartError::Store(e.to_string()))?;
    let mut snap = match stored {
        Some(b) => records::decode::<SessionRecord>(&b)
            .map_err(|e| StartError::Store(e.to_string()))?
            .to_snapshot()
            .ok_or_else(|| StartError::Store("the stored session does not parse".into()))?,
        None => match server {
            Server::Production => SessionSnapshot::production(),
            Server::Test => SessionSnapshot::test_servers(),
            Server::Pinned { addr, auth_key } => SessionSnapshot::pinned(*addr, **auth_key),
        },
    };
    if let Server::Pinned { addr, .. } = server {
        // The local server may listen elsewhere now; the keys stay.
        let fresh = SessionSnapshot::pinned(*addr, [0; 256]);
        for d in &mut snap.dcs {
            if let Some(f) = fresh.dcs.iter().find(|f| f.id == d.id) {
                d.ipv4 = f.ipv4;
                d.ipv6 = f.ipv6;
            }
        }
        snap.pinned = true;
    }
    Ok(snap)
}

/// Starts the actix system on its own thread; returns it and the registry.
fn start_actors(
    shared: Arc<Shared>,
) -> Result<(actix::System, Addr<Registry>, std::thread::JoinHandle<()>), StartError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("tgsecretd-actors".into())
        .spawn(move || {
            let sys = actix::System::new();
            sys.block_on(async move {
                use actix::Actor;
                let reg = Registry::new(shared).start();
                let _ = tx.send((actix::System::current(), reg));
            });
            let _ = sys.run();
        })
        .map_err(|e| StartError::Actors(e.to_string()))?;
    let (system, reg) = rx
        .recv()
        .map_err(|_| StartError::Actors("the actor system did not start".into()))?;
    Ok((system, reg, thread))
}

impl Daemon {
    /// Starts the daemon on the current tokio runtime (multi-threaded).
    pub async fn start(opts: Options) -> Result<Daemon, StartError> {
        let store = Arc::new(open_store(&opts.state_dir.join("store"))?);
        match crate::chatstore::remove_stale_open_markers(&store) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                n,
                "removed the stale open-request markers of an older store"
            ),
            Err(e) => return Err(StartError::Store(e.to_string())),
        }
        let snap = session_snapshot(&store, &opts.server)?;
        let session = LinkSession::new(snap, Arc::new(StoreSession(Arc::clone(&store))));
        let link = Link::start(
            LinkConfig {
                api_id: opts.api_id,
                api_hash: opts.api_hash.clone(),
                call_timeout: opts.call_timeout,
            },
            session,
        );
        let conn = match &opts.bus {
            Bus::None => None,
            Bus::Session => Some(zbus::connection::Builder::session()),
            Bus::Address(a) => Some(zbus::connection::Builder::address(a.as_str())),
        };
        let conn = match conn {
            Some(b) => Some(
                b.build()
                    .await
                    .map_err(|e| StartError::Bus(e.to_string()))?,
            ),
            None => None,
        };
        let dbus = conn
            .as_ref()
            .map(|c| DbusAnnounce::new(c.clone(), Arc::clone(&store)));
        let announce: Arc<dyn Announce> = match &dbus {
            Some(d) => d.clone(),
            None => Arc::new(Silent),
        };
        let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
        let shared = Shared::new(
            Arc::clone(&store),
            Arc::clone(&link),
            announce,
            opts.accept.clone(),
            fatal_tx,
        )
        .map_err(|e| StartError::Store(e.to_string()))?;
        // The open requests' handles, before any actor can finish one (an open request has no
        // stored handle index: see `records`).
        let open = crate::chatstore::all_open_requests(&store)
            .map_err(|e| StartError::Store(e.to_string()))?;
        shared.hold_handles(open.into_iter().map(|r| (r.handle, r.id)));
        let (system, registry, actix_thread) = start_actors(Arc::clone(&shared))?;
        let service = Service::new(Arc::clone(&shared), registry.clone());
        let mut daemon = Daemon {
            service: service.clone(),
            shared: Arc::clone(&shared),
            store,
            link: Arc::clone(&link),
            system,
            actix_thread: Some(actix_thread),
            conn,
            dbus: dbus.clone(),
            updates: None,
            fatal: Some(fatal_rx),
        };
        match started(registry.send(registry::StartPending).await) {
            Ok(n) => tracing::info!(chats = n, "chats with pending work started"),
            Err(e) => {
                daemon.stop().await;
                return Err(e);
            }
        }
        if let Some(d) = &dbus
            && let Err(e) = d.serve(service.clone()).await
        {
            daemon.stop().await;
            return Err(match e {
                zbus::Error::NameTaken => StartError::NameTaken,
                e => StartError::Bus(e.to_string()),
            });
        }
        // The chat updates a stop left stored, now that clients can hear what they announce,
        // and before the update loop takes new ones.
        if let Err(e) = started(registry.send(registry::ApplyStoredUpdates).await) {
            daemon.stop().await;
            return Err(e);
        }
        if let Some(d) = dbus {
            tokio::spawn(async move { d.announce_pending().await });
        }
        daemon.updates = Some(tokio::spawn(async move {
            tokio::join!(
                run_updates(Arc::clone(&shared), Arc::clone(&link), registry.clone()),
                finish_ended_authorizations(shared, link, registry)
            );
        }));
        Ok(daemon)
    }

    /// The API.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The shared context (for tests and tools).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits until something the daemon cannot continue after happens (its store failed);
    /// returns why.
    pub async fn failed(&mut self) -> String {
        match self.fatal.as_mut() {
            Some(rx) => rx.recv().await.unwrap_or_else(|| "stopped".into()),
            None => std::future::pending().await,
        }
    }

    /// Resolves when the daemon's bus connection has closed: the bus went away (the session
    /// ended) or dropped the daemon, so no client can reach it any more. Never without a bus.
    /// The returned future holds the connection, not the daemon.
    pub fn bus_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let conn = self.conn.clone();
        async move {
            match conn {
                Some(c) => c.closed().await,
                None => std::future::pending().await,
            }
        }
    }

    /// Stops everything; queued commits are made durable before the store closes.
    pub async fn stop(mut self) {
        if let Some(c) = self.conn.take() {
            // No new calls: the name goes first; the objects (and the service they hold) next.
            let _ = c.release_name(ipc_proto::BUS_NAME).await;
            let _ = c
                .object_server()
                .remove::<crate::dbus::ReadOnly<crate::dbus::Manager>, _>(ipc_proto::MANAGER_PATH)
                .await;
            if let Some(d) = self.dbus.take() {
                d.stop().await;
            }
            tracing::debug!("stop: off the bus");
        }
        if let Some(u) = self.updates.take() {
            u.abort();
            let _ = u.await;
        }
        tracing::debug!("stop: updates stopped");
        self.system.stop();
        if let Some(t) = self.actix_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        tracing::debug!("stop: actors stopped");
        self.link.shutdown().await;
        tracing::debug!("stop: link stopped");
        let Daemon {
            service,
            shared,
            store,
            link,
            ..
        } = self;
        drop((service, shared, link));
        // Closed here if this was the last handle (else when the last one goes: both make the
        // queued commits durable). Something that was ending as the daemon stopped may drop
        // its handle a moment later (twice in about 40 runs of `daemon_chat`, a start right
        // after a stop found the store still locked; the holder was not identified): wait for
        // it a little first.
        let patience = std::time::Instant::now() + STOP_PATIENCE;
        while Arc::strong_count(&store) > 1 && std::time::Instant::now() < patience {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match Arc::try_unwrap(store) {
            Ok(s) => {
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.close()).await {
                    tracing::error!(error = %e, "store close");
                }
            }
            // A clone of the service is still alive somewhere: the store closes with it.
            Err(s) => tracing::warn!(
                holders = Arc::strong_count(&s) - 1,
                "the store stays open until the last service handle goes"
            ),
        }
    }
}

/// What the registry answered a start step: its value, or the start error it means (the store
/// failed it, or the actors are gone).
fn started<T>(
    answer: Result<Result<T, crate::error::DaemonError>, actix::MailboxError>,
) -> Result<T, StartError> {
    match answer {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StartError::Store(e.to_string())),
        Err(e) => Err(StartError::Actors(e.to_string())),
    }
}

/// How long [`Daemon::stop`] waits for the last other holders of the store (something that
/// was ending as the daemon stopped) before it leaves the store to close with them.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// What Telegram says of the key, asked with `updates.getState` (retried while the answer is
/// transient), and the login epoch read before the answer that decided.
enum KeyState {
    /// Answered: the key is signed in.
    SignedIn,
    /// The authorization ended ([`tglink::authorization_ended`]).
    Ended(u64),
    /// Another logged-out answer (an unknown, duplicated or replaced key).
    Unusable(tglink::CallError),
}

async fn key_state(shared: &Shared, link: &Link) -> KeyState {
    let mut backoff = Duration::from_millis(200);
    loop {
        let epoch = shared.login_epoch();
        match link
            .invoke(&grammers_tl_types::functions::updates::GetState {})
            .await
        {
            Ok(_) => return KeyState::SignedIn,
            Err(e) if tglink::authorization_ended(e.class, &e.name) => {
                return KeyState::Ended(epoch);
            }
            Err(e) if e.class == tglink::ErrorClass::LoggedOut => return KeyState::Unusable(e),
            Err(e) => {
                tracing::debug!(error = %e, "is the key signed in: trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// A logout was not finished before the daemon stopped (see [`crate::records::LOGOUT_KEY`]).
/// Confirmed: close the chats the stop left open. Started: ask Telegram whether the key is
/// still signed in (the session's cached self user would not tell): signed in, the logout
/// never happened; the authorization ended, finish the logout (unless a login completed
/// meanwhile: it found the marker and closed the chats); any other logged-out answer (a key
/// Telegram does not know: perhaps a wrong key file) leaves the marker and closes nothing.
async fn settle_unfinished_logout(shared: &Shared, link: &Link, registry: &Addr<Registry>) {
    use crate::service::{close_chats_after_logout, finish_logout, forget_logout, logout_state};
    let state = match logout_state(shared) {
        Ok(None) => return,
        Ok(Some(state)) => state,
        Err(e) => {
            tracing::error!(error = %e, "the logout marker cannot be read");
            return;
        }
    };
    tracing::info!("finishing a logout a stop interrupted");
    let answer = match state {
        crate::records::LOGOUT_CONFIRMED => None,
        _ => Some(key_state(shared, link).await),
    };
    let _login = shared.login_lock().await;
    let done = match answer {
        None => close_chats_after_logout(shared, registry).await,
        Some(KeyState::SignedIn) => forget_logout(shared).await,
        Some(KeyState::Ended(epoch)) => {
            if !shared.confirm_logout_since(epoch) {
                return;
            }
            finish_logout(shared, registry).await
        }
        Some(KeyState::Unusable(e)) => {
            tracing::warn!(error = %e, "an unfinished logout stays undecided");
            return;
        }
    };
    if let Err(e) = done {
        tracing::error!(error = %e, "the unfinished logout stays");
    }
}

/// How long the daemon waits before it asks Telegram again whether an authorization ended (a
/// logged-out answer of a moment is not an end).
const ENDED_RECHECK_AFTER: Duration = Duration::from_secs(2);

/// Finishes each authorization Telegram ends for the key that worked (the user terminated the
/// session from another device: see [`Shared::logged_out_since`]) as a confirmed logout: every
/// chat closes (Telegram discarded them with the authorization), their open requests fail with
/// `LOGGED_OUT`, and the account waits for a login. Telegram is asked again first
/// (`updates.getState`, after [`ENDED_RECHECK_AFTER`]): one answer is not enough for something
/// this final. TDLib destroys all its data on the first 401 (`AuthManager::on_authorization_lost`).
/// A login that completes first closes the chats itself (`Service::logged_in`).
async fn finish_ended_authorizations(
    shared: Arc<Shared>,
    link: Arc<Link>,
    registry: Addr<Registry>,
) {
    loop {
        shared.until_authorization_ended().await;
        tokio::time::sleep(ENDED_RECHECK_AFTER).await;
        let answer = key_state(&shared, &link).await;
        let _login = shared.login_lock().await;
        if !shared.take_ended() {
            continue; // a login completed first and closed the chats
        }
        match answer {
            KeyState::Ended(_) => {}
            KeyState::SignedIn => {
                tracing::warn!("the key answers again: not logged out");
                shared.set_logged_out(false);
                shared.set_signed_in();
                continue;
            }
            KeyState::Unusable(e) => {
                tracing::warn!(error = %e, "the key is unusable, not ended: the chats stay");
                shared.forget_key_worked();
                continue;
            }
        }
        tracing::warn!("the account's authorization ended elsewhere: closing its chats");
        shared.confirm_ended();
        if let Err(e) = crate::service::finish_logout(&shared, &registry).await {
            tracing::error!(error = %e, "closing the chats of the ended authorization");
        }
    }
}

/// Learns who we are (a provisioned key has no sign-in), then runs the update loop.
async fn run_updates(shared: Arc<Shared>, link: Arc<Link>, registry: Addr<Registry>) {
    settle_unfinished_logout(&shared, &link, &registry).await;
    let mut backoff = Duration::from_millis(200);
    loop {
        let epoch = shared.login_epoch();
        // One authorized call first: the cached self user says nothing about a key that was
        // logged out (by us before a restart, or from another device).
        let learnt = match link
            .invoke(&grammers_tl_types::functions::updates::GetState {})
            .await
        {
            Ok(_) => link.learn_self().await,
            Err(e) => Err(e),
        };
        match learnt {
            Ok(_) => {
                shared.answered(epoch);
                // The user id is known now (an actor's answer may have come first).
                shared.announce.login_changed(false);
                break;
            }
            Err(e) if e.class == tglink::ErrorClass::LoggedOut => {
                if shared.logged_out_since(epoch, &e) {
                    tracing::warn!(error = %e, "not logged in: no updates until login");
                }
                shared.until_logged_in().await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "who am I: trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    match link.updates().await {
        Ok(Some(u)) => crate::updates::run(shared, u, registry).await,
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "the update stream did not start"),
    }
}
