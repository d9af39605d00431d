//! A whole running tgsim in one value: the model with its state dir, the simulated peers, the
//! faults, the MTProto server and the admin socket, wired as the `tgsim` binary wires them.
//!
//! The binary is a command line around [`Tgsim::start`] and [`Tgsim::run_until`]; tests and the
//! offline demo start the same stack in their own process.
//!
//! The stack: model → [`FaultySink`] → [`PeerHost`] → (peers | [`LateSink`] → server); the
//! server and the peers call [`FaultyHandler`] → model. The model needs a sink when it is
//! created, but the server (the real sink) exists only once it is bound: hence the late sink.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use secret_core::crypto::AuthKey;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin, ProvisionedKey, Simulation};
use crate::api::{ApiHandler, LateSink, UpdateSink};
use crate::faults::{Faults, FaultyHandler, FaultySink};
use crate::keyfile;
use crate::model::Model;
use crate::peer::{Behaviour, PeerHost};
use crate::server::{Server, ServerHandle};
use crate::session::{AccountId, AuthKeys};

/// An account to create at start (kept if it exists with the same phone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSpec {
    /// The user id.
    pub id: AccountId,
    /// The phone number (digits are kept).
    pub phone: String,
    /// The first name.
    pub first_name: String,
}

/// A simulated peer to add at start (its account is created if missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer's account.
    pub account: AccountSpec,
    /// How it behaves.
    pub behaviour: Behaviour,
}

/// How to start a tgsim.
#[derive(Clone, Debug)]
pub struct Options {
    /// The MTProto listening address (loopback unless `allow_non_loopback`).
    pub listen: SocketAddr,
    /// Whether a non-loopback `listen` is allowed.
    pub allow_non_loopback: bool,
    /// The state dir (`world.bin`, `keys`, `admin.sock`); created with mode 0700.
    pub state_dir: PathBuf,
    /// Accounts to create.
    pub accounts: Vec<AccountSpec>,
    /// Simulated peers to add.
    pub peers: Vec<PeerSpec>,
    /// Extra auth keys, not written to the state dir.
    pub extra_keys: Vec<(AccountId, AuthKey)>,
    /// Faults from the start.
    pub faults: Faults,
    /// Seed of the peers' randomness.
    pub seed: u64,
    /// The admin socket (default `STATE_DIR/admin.sock`).
    pub admin_socket: Option<PathBuf>,
    /// How often the peers poll `updates.getDifference` (recovering dropped updates).
    pub peer_poll: Duration,
}

impl Options {
    /// Defaults: loopback with an ephemeral port, no accounts, no peers, no faults.
    pub fn new(state_dir: impl Into<PathBuf>) -> Options {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            state_dir: state_dir.into(),
            accounts: Vec::new(),
            peers: Vec::new(),
            extra_keys: Vec::new(),
            faults: Faults::none(),
            seed: 0,
            admin_socket: None,
            peer_poll: Duration::from_millis(500),
        }
    }
}

/// Why a tgsim did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// Bad options or state (the command line exits with 2).
    Usage(String),
    /// A socket could not be bound (the command line exits with 1).
    Bind(String),
    /// The system refused something else, e.g. a thread (the command line exits with 1).
    Io(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Usage(m) | StartError::Bind(m) | StartError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StartError {}

/// The shortest interval of the peers' getDifference poll.
pub const MIN_PEER_POLL: Duration = Duration::from_millis(10);

/// A running tgsim. Dropping it (or [`Tgsim::stop`]) shuts the server down, stops the peers and
/// their threads, removes the admin socket and breaks the stack's reference cycle, so that
/// everything is freed once the server's tasks have ended; the state dir stays.
pub struct Tgsim {
    addr: SocketAddr,
    admin_path: PathBuf,
    handle: ServerHandle,
    model: Arc<Model>,
    admin: Arc<Admin>,
    sim: Simulation,
    late: Arc<LateSink>,
    run: Option<JoinHandle<std::io::Result<()>>>,
    admin_task: JoinHandle<()>,
    /// Dropping the sender stops the poll thread at once.
    poll_stop: Option<mpsc::Sender<()>>,
    poll: Option<ThreadHandle<()>>,
}

impl std::fmt::Debug for Tgsim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tgsim")
            .field("addr", &self.addr)
            .field("admin_path", &self.admin_path)
            .finish_non_exhaustive()
    }
}

fn usage(msg: impl Into<String>) -> StartError {
    StartError::Usage(msg.into())
}

impl Tgsim {
    /// Opens the state dir, binds the server and the admin socket, and starts serving (on the
    /// current tokio runtime).
    pub async fn start(opts: Options) -> Result<Tgsim, StartError> {
        if !opts.listen.ip().is_loopback() && !opts.allow_non_loopback {
            return Err(usage(format!(
                "refusing to listen on non-loopback address {} (use --allow-non-loopback)",
                opts.listen
            )));
        }
        let dir = &opts.state_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;

        let sink = Arc::new(LateSink::new());
        let peers = PeerHost::new(sink.clone(), opts.seed);
        let faulty_sink = Arc::new(FaultySink::new(peers.clone(), opts.faults.clone()));
        let model_sink: Arc<dyn UpdateSink> = faulty_sink.clone();
        let world = dir.join("world.bin");
        let model = Arc::new(
            Model::open(model_sink, world.clone())
                .map_err(|e| usage(format!("cannot open {}: {e}", world.display())))?,
        );
        for a in &opts.accounts {
            model
                .ensure_account(a.id, &a.phone, &a.first_name)
                .map_err(usage)?;
        }

        let handler = Arc::new(FaultyHandler::new(model.clone(), opts.faults.clone()));
        peers.attach(model.clone(), handler.clone());
        let sim = Simulation {
            peers: peers.clone(),
            sink: faulty_sink,
            handler: handler.clone(),
            peer_ids: Arc::default(),
        };
        for p in &opts.peers {
            let a = &p.account;
            if let Err(e) = sim.add_peer(&model, a.id, &a.phone, &a.first_name, p.behaviour) {
                peers.detach();
                return Err(usage(format!("cannot add peer {}: {e}", a.id)));
            }
        }

        let keys_path = dir.join("keys");
        let stored = match keyfile::load(&keys_path, true) {
            Ok(k) => k,
            Err(e) => {
                peers.detach();
                return Err(usage(e));
            }
        };
        let mut keys = AuthKeys::new();
        for (account, key) in stored.iter().chain(&opts.extra_keys) {
            keys.insert(key.clone(), *account);
        }

        let server_handler: Arc<dyn ApiHandler> = handler;
        let server = match Server::bind(opts.listen, keys, server_handler).await {
            Ok(s) => s,
            Err(e) => {
                peers.detach();
                return Err(StartError::Bind(format!(
                    "cannot listen on {}: {e}",
                    opts.listen
                )));
            }
        };
        let handle = server.handle();
        sink.set(Arc::new(handle.clone()));

        let admin_path = opts
            .admin_socket
            .clone()
            .unwrap_or_else(|| dir.join("admin.sock"));
        let listener = match admin::bind(&admin_path) {
            Ok(l) => l,
            Err(e) => {
                sink.clear();
                peers.detach();
                return Err(StartError::Bind(format!(
                    "cannot bind admin socket {}: {e}",
                    admin_path.display()
                )));
            }
        };
        let admin = Admin::with_simulation(
            model.clone(),
            handle.clone(),
            keys_path,
            stored,
            sim.clone(),
        );
        let admin_task = tokio::spawn(admin.clone().serve(listener));

        // Peers poll getDifference like real clients (recovers dropped updates).
        let (poll_stop, stop_rx) = mpsc::channel::<()>();
        let poll = {
            let sim = sim.clone();
            let every = opts.peer_poll.max(MIN_PEER_POLL);
            std::thread::Builder::new()
                .name("tgsim-peer-poll".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(every) {
                        sim.catch_up_all();
                    }
                })
        };
        let poll = match poll {
            Ok(t) => t,
            Err(e) => {
                admin_task.abort();
                handle.shutdown();
                sink.clear();
                peers.detach();
                let _ = std::fs::remove_file(&admin_path);
                return Err(StartError::Io(format!("cannot start the peer thread: {e}")));
            }
        };

        let addr = server.local_addr();
        let run = server.spawn();
        Ok(Tgsim {
            addr,
            admin_path,
            handle,
            model,
            admin,
            sim,
            late: sink,
            run: Some(run),
            admin_task,
            poll_stop: Some(poll_stop),
            poll: Some(poll),
        })
    }

    /// The MTProto address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin socket ([`crate::admin::AdminClient::connect`]).
    pub fn admin_path(&self) -> &Path {
        &self.admin_path
    }

    /// The server's handle (push updates, close connections, shut down).
    pub fn server(&self) -> &ServerHandle {
        &self.handle
    }

    /// The Telegram model (accounts, chats, every relayed message).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The simulated peers and the fault layers.
    pub fn simulation(&self) -> &Simulation {
        &self.sim
    }

    /// A fresh auth key for `account`, saved in the state dir and usable at once (what the admin
    /// command `provision_key` does).
    pub fn provision_key(&self, account: AccountId) -> Result<ProvisionedKey, String> {
        self.admin.provision_key(account)
    }

    /// Serves until the server stops, `interrupt` completes, or an admin `shutdown` arrives.
    pub async fn run_until(&mut self, interrupt: impl Future<Output = ()>) -> Result<(), String> {
        let Some(run) = self.run.as_mut() else {
            return Ok(());
        };
        let r = tokio::select! {
            r = run => {
                self.run = None;
                match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("server task failed: {e}")),
                }
            }
            () = interrupt => Ok(()),
            () = self.admin.shutdown_requested() => Ok(()),
        };
        self.stop();
        r
    }

    /// Stops serving (idempotent): closes the server and its connections, stops the peers and
    /// their threads (joined), removes the admin socket, and cuts the server off the model.
    pub fn stop(&mut self) {
        self.handle.shutdown();
        if let Some(run) = self.run.take() {
            run.abort();
        }
        self.admin_task.abort();
        self.poll_stop.take();
        if let Some(t) = self.poll.take() {
            let _ = t.join();
        }
        self.sim.peers.detach();
        self.late.clear();
        let _ = std::fs::remove_file(&self.admin_path);
    }
}

impl Drop for Tgsim {
    fn drop(&mut self) {
        self.stop();
    }
}
