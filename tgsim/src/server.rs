//! The TCP server: tokio connections over [`ServerCodec`] and the shared [`Sessions`].
//!
//! [`Server::bind`] listens on a socket; [`Server::run`] (or [`Server::spawn`]) accepts
//! connections until [`ServerHandle::shutdown`]. Each connection is one task with its own
//! [`ServerCodec`] (the transport is detected from the first bytes) feeding the one
//! [`Sessions`] shared by all connections, so a session (auth key + client session_id) survives
//! reconnects, as in Telegram: answers and updates queued while no connection served it go out
//! on the next connection that carries a packet of that session.
//!
//! # Calls
//!
//! Every [`RpcCall`] of a packet is handed to the [`ApiHandler`] *outside* the sessions lock (on
//! tokio's blocking pool, since the handler is synchronous), answered with
//! [`Session::rpc_result`](crate::session::Session::rpc_result) or
//! [`Session::rpc_error`](crate::session::Session::rpc_error), and the session is flushed to the
//! connection right away. The calls of one connection run **sequentially, in the order they
//! arrived** (a connection reads nothing while a call runs). That satisfies `invokeAfterMsg` /
//! `invokeAfterMsgs` for queries sent on the same connection, which is how clients use them;
//! there is no ordering between calls of different connections.
//!
//! The handler given to [`Server::bind`] is wrapped in a [`BuiltinHandler`] that answers
//! `help.getConfig` (with `dc_options` pointing at the bound address only) and
//! `help.getNearestDc` itself.
//!
//! # Updates
//!
//! [`ServerHandle`] (and [`Server`]) implement [`UpdateSink`]: `push(account, updates)` queues
//! the update on every session of the account and wakes the connection that last carried a
//! packet of each session, which flushes it. Sessions without a live connection keep the update
//! queued for their next connection. (An update flushed to a connection that the peer has just
//! closed is lost for that session, as with Telegram; clients recover with getDifference.) A
//! model that pushes updates gets its sink after binding: take [`Server::handle`] and hand it
//! to the model (e.g. through a `OnceLock`) before [`Server::run`].
//!
//! # Errors
//!
//! A packet under an unknown auth key (or an unencrypted one: this server does no DH handshake)
//! gets the transport error `-404`, then the connection is closed. A transport error (garbage,
//! bad CRC, bad length, ...) or a refused packet (bad msg_key, bad length, ...) closes only that
//! connection, logged with `tracing`; no input makes the server panic.
//!
//! Not done: quick acks (requests are ignored), an idle-session reaper, a connection limit.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grammers_tl_types::{self as tl, Deserializable, Identifiable, Serializable};
use secret_core::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::api::{ApiHandler, CallContext, RpcError, UpdateSink};
use crate::session::{AccountId, AuthKeys, Event, RpcCall, SessionConfig, SessionKey, Sessions};
use crate::transport::{ServerCodec, TransportKind};

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// The dc id tgsim says it is (`config.this_dc`, `nearestDc`).
pub const THIS_DC: i32 = 2;

/// The wall clock in Unix milliseconds (0 before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave `Sessions` half-updated in a way that matters
    // more than stopping the whole server would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which connection serves a session now, and how to wake it.
struct Route {
    conn: u64,
    wake: mpsc::UnboundedSender<SessionKey>,
}

struct Shared {
    sessions: Mutex<Sessions>,
    routes: Mutex<HashMap<SessionKey, Route>>,
    /// (session, connection) pairs asked to close (see [`ServerHandle::close_connections`]).
    closing: Mutex<HashSet<(SessionKey, u64)>>,
    handler: Arc<dyn ApiHandler>,
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
    local_addr: SocketAddr,
}

/// A bound tgsim server, not accepting yet: see [`Server::run`] / [`Server::spawn`].
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// A cloneable handle on a server: shutdown, update delivery, access to the sessions.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) with the provisioned `keys` and default
    /// [`SessionConfig`]. `handler` answers API calls, behind a [`BuiltinHandler`] that knows
    /// the bound address.
    pub async fn bind(
        addr: SocketAddr,
        keys: AuthKeys,
        handler: Arc<dyn ApiHandler>,
    ) -> io::Result<Server> {
        Self::bind_with_config(addr, keys, SessionConfig::default(), handler).await
    }

    /// [`Server::bind`] with a session configuration.
    pub async fn bind_with_config(
        addr: SocketAddr,
        keys: AuthKeys,
        config: SessionConfig,
        handler: Arc<dyn ApiHandler>,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let handler: Arc<dyn ApiHandler> = Arc::new(BuiltinHandler::new(handler, local_addr));
        let (shutdown, _) = watch::channel(false);
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                sessions: Mutex::new(Sessions::new(keys, config)),
                routes: Mutex::new(HashMap::new()),
                closing: Mutex::new(HashSet::new()),
                handler,
                shutdown,
                next_conn: AtomicU64::new(1),
                local_addr,
            }),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle for shutdown, updates and the sessions.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs the server on a new task (needs a tokio runtime).
    pub fn spawn(self) -> JoinHandle<io::Result<()>> {
        tokio::spawn(self.run())
    }

    /// Accepts connections until [`ServerHandle::shutdown`]; each connection runs on its own
    /// task and ends at shutdown too.
    pub async fn run(self) -> io::Result<()> {
        let mut shutdown = self.shared.shutdown.subscribe();
        info!(addr = %self.shared.local_addr, "tgsim listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Answers go out in several writes; do not let Nagle hold them back.
                    if let Err(err) = stream.set_nodelay(true) {
                        debug!(%err, "cannot set TCP_NODELAY");
                    }
                    let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    debug!(conn = id, %peer, "connection accepted");
                    let conn = Conn::new(id, peer, stream, self.shared.clone());
                    tokio::spawn(conn.run());
                }
                Err(err) => {
                    // E.g. out of file descriptors: do not spin.
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        info!(addr = %self.shared.local_addr, "tgsim stopped");
        Ok(())
    }
}

impl UpdateSink for Server {
    fn push(&self, account: AccountId, updates: Vec<u8>) {
        self.shared.push(account, updates);
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Runs `f` on the sessions (to provision keys, inspect or drop sessions). Keep it short:
    /// every connection waits for this lock.
    pub fn with_sessions<R>(&self, f: impl FnOnce(&mut Sessions) -> R) -> R {
        f(&mut lock(&self.shared.sessions))
    }

    /// Closes every connection currently serving a session of `account` (the sessions stay;
    /// clients reconnect and resume). Returns how many connections were asked to close.
    pub fn close_connections(&self, account: AccountId) -> usize {
        let keys = lock(&self.shared.sessions).sessions_of(account);
        let routes = lock(&self.shared.routes);
        let mut closing = lock(&self.shared.closing);
        let mut conns = HashSet::new();
        for key in keys {
            if let Some(route) = routes.get(&key) {
                closing.insert((key, route.conn));
                if route.wake.send(key).is_ok() {
                    conns.insert(route.conn);
                }
            }
        }
        conns.len()
    }

    /// Number of sessions currently served by a live connection.
    pub fn routed_sessions(&self) -> usize {
        lock(&self.shared.routes).len()
    }
}

impl UpdateSink for ServerHandle {
    fn push(&self, account: AccountId, updates: Vec<u8>) {
        self.shared.push(account, updates);
    }
}

impl Shared {
    fn push(&self, account: AccountId, updates: Vec<u8>) {
        let keys = {
            let mut sessions = lock(&self.sessions);
            let keys = sessions.sessions_of(account);
            for key in &keys {
                if let Some(s) = sessions.session_mut(*key)
                    && let Err(err) = s.push_update(&updates)
                {
                    warn!(account, %err, "update refused");
                }
            }
            keys
        };
        let routes = lock(&self.routes);
        for key in keys {
            if let Some(route) = routes.get(&key) {
                // The connection may be gone already; its route is removed as it closes.
                let _ = route.wake.send(key);
            }
        }
    }
}

/// What woke a connection.
enum Step {
    Shutdown,
    Read(io::Result<usize>),
    Wake(Option<SessionKey>),
    Deadline,
}

struct Conn {
    id: u64,
    peer: SocketAddr,
    stream: TcpStream,
    codec: ServerCodec,
    shared: Arc<Shared>,
    rng: SystemRandom,
    wake_tx: mpsc::UnboundedSender<SessionKey>,
    wake_rx: mpsc::UnboundedReceiver<SessionKey>,
    served: HashSet<SessionKey>,
    deadline: Option<Instant>,
    out: Vec<u8>,
}

fn codec_rng(buf: &mut [u8]) {
    SystemRandom::new().fill(buf);
}

impl Conn {
    fn new(id: u64, peer: SocketAddr, stream: TcpStream, shared: Arc<Shared>) -> Self {
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        Conn {
            id,
            peer,
            stream,
            codec: ServerCodec::new(codec_rng),
            shared,
            rng: SystemRandom::new(),
            wake_tx,
            wake_rx,
            served: HashSet::new(),
            deadline: None,
            out: Vec::new(),
        }
    }

    async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut buf = vec![0u8; READ_CHUNK];
        let result: Result<(), String> = loop {
            let deadline = self.deadline;
            // Biased: a shutdown or a close asked for before the client's next bytes arrived
            // wins over reading them (an unbiased select picks at random among ready branches).
            let step = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => Step::Shutdown,
                key = self.wake_rx.recv() => Step::Wake(key),
                n = self.stream.read(&mut buf) => Step::Read(n),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => Step::Deadline,
            };
            match step {
                Step::Shutdown => break Ok(()),
                Step::Read(Ok(0)) => break Ok(()),
                Step::Read(Ok(n)) => {
                    self.codec.feed(buf.get(..n).unwrap_or(&[]));
                    if let Err(err) = self.drain_frames().await {
                        break Err(err);
                    }
                }
                Step::Read(Err(err)) => break Err(format!("read failed: {err}")),
                Step::Wake(Some(key)) => {
                    if lock(&self.shared.closing).remove(&(key, self.id)) {
                        break Ok(());
                    }
                    let ours = lock(&self.shared.routes)
                        .get(&key)
                        .is_some_and(|r| r.conn == self.id);
                    if ours && let Err(err) = self.flush(key).await {
                        break Err(err);
                    }
                }
                // We hold a sender ourselves: cannot happen.
                Step::Wake(None) => break Ok(()),
                Step::Deadline => break Err("ping_delay_disconnect deadline passed".into()),
            }
        };
        {
            let mut routes = lock(&self.shared.routes);
            for key in &self.served {
                if routes.get(key).is_some_and(|r| r.conn == self.id) {
                    routes.remove(key);
                }
            }
        }
        match result {
            Ok(()) => debug!(conn = self.id, peer = %self.peer, "connection closed"),
            Err(reason) => {
                warn!(conn = self.id, peer = %self.peer, %reason, "closing connection")
            }
        }
        let _ = self.stream.shutdown().await;
    }

    async fn drain_frames(&mut self) -> Result<(), String> {
        loop {
            match self.codec.next_frame() {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => {
                    if frame.quick_ack {
                        trace!(conn = self.id, "quick ack requested (not supported)");
                    }
                    let mut payload = frame.payload;
                    if self.codec.transport() == Some(TransportKind::PaddedIntermediate)
                        && payload.len() > 24
                    {
                        // The padding is inside the frame: keep auth_key_id, msg_key and
                        // whole AES blocks (see the transport module docs).
                        let len = 24 + (payload.len() - 24) / 16 * 16;
                        payload.truncate(len);
                    }
                    self.handle_packet(&payload).await?;
                }
                Err(err) => return Err(format!("transport error: {err}")),
            }
        }
    }

    async fn handle_packet(&mut self, packet: &[u8]) -> Result<(), String> {
        let now = unix_ms();
        let received = lock(&self.shared.sessions).handle_packet(packet, now, &mut self.rng);
        let received = match received {
            Ok(r) => r,
            Err(err) => {
                if let Some(code) = err.transport_error() {
                    self.out.clear();
                    if self.codec.encode_error(code, &mut self.out).is_ok() {
                        // Best effort: the connection closes either way.
                        let _ = self.stream.write_all(&self.out).await;
                        let _ = self.stream.flush().await;
                    }
                }
                return Err(format!("packet refused: {err}"));
            }
        };
        let key = received.session;
        if self.served.insert(key) {
            debug!(conn = self.id, session = key.session_id, "serving session");
        }
        lock(&self.shared.routes).insert(
            key,
            Route {
                conn: self.id,
                wake: self.wake_tx.clone(),
            },
        );
        let mut calls = Vec::new();
        for event in received.events {
            match event {
                Event::RpcCall(call) => calls.push(call),
                Event::DisconnectDeadline { at_ms } => {
                    let wait = Duration::from_millis(at_ms.saturating_sub(unix_ms()));
                    self.deadline = Some(Instant::now() + wait);
                }
                Event::BadMessage { msg_id, code } => {
                    debug!(conn = self.id, msg_id, %code, "bad message")
                }
                other => trace!(conn = self.id, event = ?other, "session event"),
            }
        }
        // Service answers (pong, new_session_created, acks, ...) go out now if there is no
        // call, else together with the first call's answer.
        if calls.is_empty() {
            self.flush(key).await?;
        }
        for call in calls {
            if !self.answer(key, received.account, call).await {
                return Err("closed by an injected fault".into());
            }
            self.flush(key).await?;
        }
        Ok(())
    }

    /// Runs one call through the handler and queues its answer; false if the handler asked for
    /// the connection to be closed instead ([`RpcError::close_connection`]).
    async fn answer(&mut self, key: SessionKey, account: AccountId, call: RpcCall) -> bool {
        let layer = call.layer.or_else(|| {
            lock(&self.shared.sessions)
                .session(key)
                .and_then(|s| s.layer())
        });
        let ctx = CallContext {
            account,
            layer,
            now_ms: unix_ms(),
            connection: Some(self.id),
        };
        let handler = self.shared.handler.clone();
        let constructor = call.constructor;
        let query = call.query;
        trace!(
            conn = self.id,
            method = tl::name_for_id(constructor),
            "calling handler"
        );
        let result = tokio::task::spawn_blocking(move || handler.call(&ctx, constructor, &query))
            .await
            .unwrap_or_else(|err| {
                warn!(%err, method = tl::name_for_id(constructor), "handler failed");
                Err(RpcError::new(500, "INTERNAL_SERVER_ERROR"))
            });
        if matches!(&result, Err(e) if e.is_close_connection()) {
            return false;
        }
        let mut sessions = lock(&self.shared.sessions);
        let Some(session) = sessions.session_mut(key) else {
            debug!(conn = self.id, "session gone before its answer");
            return true;
        };
        let queued = match &result {
            Ok(bytes) => session.rpc_result(call.msg_id, bytes).or_else(|err| {
                warn!(%err, method = tl::name_for_id(constructor), "bad handler result");
                session.rpc_error(call.msg_id, 500, "INTERNAL_SERVER_ERROR")
            }),
            Err(e) => session.rpc_error(call.msg_id, e.code, &e.message),
        };
        if let Err(err) = queued {
            debug!(conn = self.id, %err, "answer not queued");
        }
        true
    }

    /// Sends everything queued in session `key` on this connection.
    async fn flush(&mut self, key: SessionKey) -> Result<(), String> {
        let packets = lock(&self.shared.sessions).flush(key, unix_ms(), &mut self.rng);
        if packets.is_empty() {
            return Ok(());
        }
        self.out.clear();
        for packet in &packets {
            self.codec
                .encode(packet, &mut self.out)
                .map_err(|err| format!("cannot frame a packet: {err}"))?;
        }
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|err| format!("write failed: {err}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Builtin methods
// ---------------------------------------------------------------------------------------------

/// An [`ApiHandler`] that answers the methods about the server itself (`help.getConfig`,
/// `help.getNearestDc`) and forwards everything else to an inner handler.
pub struct BuiltinHandler {
    inner: Arc<dyn ApiHandler>,
    addr: SocketAddr,
}

impl BuiltinHandler {
    /// Answers for a server reachable at `addr`; the rest goes to `inner`.
    pub fn new(inner: Arc<dyn ApiHandler>, addr: SocketAddr) -> Self {
        BuiltinHandler { inner, addr }
    }

    /// The `dc_options`: dc 1..=5, each static and not, all at `addr`.
    pub fn dc_options(&self) -> Vec<tl::enums::DcOption> {
        let ipv6 = self.addr.is_ipv6();
        let ip_address = self.addr.ip().to_string();
        let port = i32::from(self.addr.port());
        (1..=5)
            .flat_map(|id| {
                [false, true].map(|is_static| {
                    tl::enums::DcOption::Option(tl::types::DcOption {
                        ipv6,
                        media_only: false,
                        tcpo_only: false,
                        cdn: false,
                        r#static: is_static,
                        this_port_only: false,
                        id,
                        ip_address: ip_address.clone(),
                        port,
                        secret: None,
                    })
                })
            })
            .collect()
    }

    /// The `config` answered to `help.getConfig` at `now_ms`.
    pub fn config(&self, now_ms: u64) -> tl::enums::Config {
        let date = i32::try_from(now_ms / 1000).unwrap_or(i32::MAX);
        tl::enums::Config::Config(tl::types::Config {
            default_p2p_contacts: false,
            preload_featured_stickers: false,
            revoke_pm_inbox: true,
            blocked_mode: false,
            force_try_ipv6: false,
            date,
            expires: date.saturating_add(3600),
            test_mode: false,
            this_dc: THIS_DC,
            dc_options: self.dc_options(),
            dc_txt_domain_name: "tgsim.invalid".into(),
            chat_size_max: 200,
            megagroup_size_max: 200_000,
            forwarded_count_max: 100,
            online_update_period_ms: 210_000,
            offline_blur_timeout_ms: 5_000,
            offline_idle_timeout_ms: 30_000,
            online_cloud_timeout_ms: 300_000,
            notify_cloud_delay_ms: 30_000,
            notify_default_delay_ms: 1_500,
            push_chat_period_ms: 60_000,
            push_chat_limit: 2,
            edit_time_limit: 172_800,
            revoke_time_limit: i32::MAX,
            revoke_pm_time_limit: i32::MAX,
            rating_e_decay: 2_419_200,
            stickers_recent_limit: 200,
            channels_read_media_period: 604_800,
            tmp_sessions: None,
            call_receive_timeout_ms: 20_000,
            call_ring_timeout_ms: 90_000,
            call_connect_timeout_ms: 30_000,
            call_packet_timeout_ms: 10_000,
            me_url_prefix: "https://t.me/".into(),
            autoupdate_url_prefix: None,
            gif_search_username: None,
            venue_search_username: None,
            img_search_username: None,
            static_maps_provider: None,
            caption_length_max: 1024,
            message_length_max: 4096,
            webfile_dc_id: 4,
            suggested_lang_code: None,
            lang_pack_version: None,
            base_lang_pack_version: None,
            reactions_default: None,
            autologin_token: None,
        })
    }
}

/// Checks that `query` is a well-formed `F` (constructor id first).
fn parse<F: Identifiable + Deserializable>(query: &[u8]) -> Result<F, RpcError> {
    let mut cursor = tl::Cursor::from_slice(query);
    match u32::deserialize(&mut cursor) {
        Ok(id) if id == F::CONSTRUCTOR_ID => {
            F::deserialize(&mut cursor).map_err(|_| RpcError::new(400, "INPUT_FETCH_ERROR"))
        }
        _ => Err(RpcError::new(400, "INPUT_FETCH_ERROR")),
    }
}

impl ApiHandler for BuiltinHandler {
    fn call(&self, ctx: &CallContext, constructor: u32, query: &[u8]) -> Result<Vec<u8>, RpcError> {
        use tl::functions::help;
        match constructor {
            help::GetConfig::CONSTRUCTOR_ID => {
                parse::<help::GetConfig>(query)?;
                Ok(self.config(ctx.now_ms).to_bytes())
            }
            help::GetNearestDc::CONSTRUCTOR_ID => {
                parse::<help::GetNearestDc>(query)?;
                Ok(tl::enums::NearestDc::Dc(tl::types::NearestDc {
                    country: "ZZ".into(),
                    this_dc: THIS_DC,
                    nearest_dc: THIS_DC,
                })
                .to_bytes())
            }
            _ => self.inner.call(ctx, constructor, query),
        }
    }
}

/// A handler that knows no method: every call gets `400 INPUT_METHOD_INVALID_<constructor>`,
/// as Telegram answers methods it does not know. For a server without a model yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMethods;

impl ApiHandler for NoMethods {
    fn call(
        &self,
        _ctx: &CallContext,
        constructor: u32,
        _query: &[u8],
    ) -> Result<Vec<u8>, RpcError> {
        Err(RpcError::new(
            400,
            format!("INPUT_METHOD_INVALID_{constructor}"),
        ))
    }
}
