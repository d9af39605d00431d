//! The admin interface: JSON lines on a Unix domain socket, and a blocking client for it.
//!
//! Each request is one JSON object on one line, `{"id": N, "cmd": "NAME", ...arguments}`; each
//! answer is one line, `{"id": N, "ok": true, "result": ...}` or
//! `{"id": N, "ok": false, "error": "..."}`, in request order. `id` is echoed as given (any JSON
//! value; `null` when the line was not a JSON object). Blank lines are ignored; a line longer
//! than [`MAX_LINE`] gets an error and closes the connection; anything else malformed gets an
//! error answer and the connection stays open.
//!
//! | cmd | arguments | result |
//! |---|---|---|
//! | `add_account` | `user_id`, `phone`, `first_name` | [`ProvisionedKey`]: the account plus a fresh auth key |
//! | `provision_key` | `account` | [`ProvisionedKey`]: another fresh auth key for an existing account |
//! | `accounts` | | `[`[`AccountInfo`]`]` |
//! | `set_password` | `account`, `password` (a string, or `null` to remove it), `hint` (optional) | `null`: the account's two-step password (SRP; the server keeps only the verifier) |
//! | `block` / `unblock` | `a`, `b` (`a` blocks / unblocks `b`) | `null` |
//! | `relayed` | `since` (optional, an index into the log, default 0) | `[`[`RelayedMessage`]`]` |
//! | `state` | `account` | [`AccountState`]: the account's qts, pts and queues, and the address the server listens on |
//! | `shutdown` | | `null`, then the server stops |
//! | `close_connections` | `account` | how many connections serving the account were closed |
//! | `log_out` | `account` | `null`: the account's device is signed out as if the user terminated its session from another device (its secret chats are discarded and the peers told; its key answers `401 AUTH_KEY_UNREGISTERED` to everything but the login calls) |
//! | `add_peer` | `user_id`, `phone`, `first_name`, `behaviour` (optional, default `echo`) | `null`: the account (created if missing) becomes a simulated peer |
//! | `set_behaviour` | `account`, `behaviour` | `null` |
//! | `request_chat` | `peer`, `user_id` | the chat id: the peer requests a secret chat with `user_id` |
//! | `peer_send` | `peer`, `chat_id`, `action` (a `DecryptedMessageAction` in MadelineProto JSON) | the message's random_id |
//! | `peer_chats` | `peer` | `[`[`PeerChat`]`]` |
//! | `catch_up` | `peer` | `null`: the peer polls `updates.getDifference` now |
//! | `set_faults` | `faults` (a [`Faults`] record) | `null` |
//! | `faults` | | [`FaultsReport`]: the configuration and the counters |
//!
//! Behaviours: `normal`, `echo`, `offline`, `never-accept`, `decline`, `block`, `silent`. The
//! peer and fault commands need a simulation ([`Admin::with_simulation`]); the `tgsim` binary
//! always has one.
//!
//! Provisioned keys are written to the key file (atomically) before they are answered, and
//! registered with the running server at once, so a client can `connect_with_auth` with them
//! immediately and after a restart.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secret_core::crypto::AuthKey;
use secret_core::rand::{SecureRandom, SystemRandom};
use secret_core::tl::TlJson;
use secret_core::tl::enums::DecryptedMessageAction;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::faults::{Faults, FaultyHandler, FaultySink};
use crate::keyfile;
use crate::model::Model;
use crate::peer::{Behaviour, PeerHost};
use crate::server::ServerHandle;
use crate::session::{AccountId, auth_key_id};

/// The longest request line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// A fresh auth key provisioned for an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedKey {
    /// The account (user id) the key logs in.
    pub account: AccountId,
    /// The key's MTProto `auth_key_id`.
    pub auth_key_id: i64,
    /// The 256-byte key, in hex.
    pub auth_key: String,
}

impl ProvisionedKey {
    /// The key bytes, as grammers' `connect_with_auth` takes them.
    pub fn key_bytes(&self) -> Result<[u8; 256], AdminError> {
        let bytes = hex::decode(&self.auth_key)
            .map_err(|e| AdminError::Protocol(format!("bad hex key: {e}")))?;
        bytes
            .try_into()
            .map_err(|_| AdminError::Protocol("auth key is not 256 bytes".into()))
    }
}

/// An account, as `accounts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The user id (the account id).
    pub user_id: AccountId,
    /// Phone number, digits only.
    pub phone: String,
    /// First name.
    pub first_name: String,
    /// Last qts assigned.
    pub qts: i32,
    /// Last pts assigned.
    pub pts: i32,
    /// Unacknowledged encrypted messages.
    pub queued: usize,
    /// The `auth_key_id`s of the keys provisioned through the admin interface (keys from
    /// `--key-file` are not listed).
    pub auth_key_ids: Vec<i64>,
}

/// One delivery of an encrypted message (a random_id sent again is relayed again: one entry per
/// delivery, each with its own qts and date).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedMessage {
    /// Position in the relay log (pass `index + 1` as `since` to get only later messages).
    pub index: usize,
    /// Who sent it.
    pub sender: AccountId,
    /// Who gets it.
    pub recipient: AccountId,
    /// The secret chat.
    pub chat_id: i32,
    /// The sender's random_id.
    pub random_id: i64,
    /// Server date of this delivery.
    pub date: i32,
    /// The recipient's qts of it.
    pub qts: i32,
    /// Sent with `sendEncryptedService`.
    pub service: bool,
    /// The encrypted bytes, standard base64.
    pub bytes: String,
}

impl RelayedMessage {
    /// The encrypted bytes.
    pub fn data(&self) -> Result<Vec<u8>, AdminError> {
        BASE64
            .decode(&self.bytes)
            .map_err(|e| AdminError::Protocol(format!("bad base64: {e}")))
    }
}

/// An account's update state, as `state` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The account.
    pub account: AccountId,
    /// Last qts assigned.
    pub qts: i32,
    /// Last pts assigned.
    pub pts: i32,
    /// Unacknowledged encrypted messages (queue length).
    pub queued: usize,
    /// Unacknowledged `updateEncryption` events.
    pub chat_events: usize,
    /// The address the MTProto server listens on (the bound one: with `--listen
    /// 127.0.0.1:0`, the port the system chose).
    pub listen: SocketAddr,
}

/// One chat of a simulated peer, as `peer_chats` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerChat {
    /// The secret chat id.
    pub chat_id: i32,
    /// `requested`, `waiting`, `ready` or `discarded`.
    pub status: String,
    /// The fingerprint of the key in use (the TL `long`), if any.
    pub key_fingerprint: Option<i64>,
    /// Re-keys completed.
    pub rekeys: usize,
    /// Outgoing messages not yet acknowledged.
    pub outbox_len: usize,
    /// Application actions received, in order, in MadelineProto JSON.
    pub transcript: Vec<Value>,
    /// Slots `(key fingerprint as a TL long, out_seq_no)` in which the other side sent two
    /// different messages (a Noop filling a slot asked for again excepted): must be empty.
    #[serde(default)]
    pub reused_slots: Vec<(i64, i32)>,
}

/// Counters of the update faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Updates pushed.
    pub pushed: u64,
    /// Dropped.
    pub dropped: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Reordered.
    pub reordered: u64,
    /// Delayed.
    pub delayed: u64,
}

/// Counters of the call faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Calls seen (real clients and peers).
    pub calls: u64,
    /// Calls failed on purpose.
    pub failed: u64,
    /// Connections closed before a call ran.
    #[serde(default)]
    pub closed_before: u64,
    /// Connections closed instead of a call's answer (the call ran).
    #[serde(default)]
    pub closed_after: u64,
}

/// The answer of `faults`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultsReport {
    /// The current configuration.
    pub faults: Faults,
    /// What the update faults did.
    pub updates: UpdateStats,
    /// What the call faults did.
    pub calls: CallStats,
}

/// The simulation layers around the model: simulated peers and fault injection.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The simulated peers.
    pub peers: Arc<PeerHost>,
    /// Faults on pushed updates.
    pub sink: Arc<FaultySink>,
    /// Faults on calls.
    pub handler: Arc<FaultyHandler>,
    /// The peer accounts added so far.
    pub peer_ids: Arc<Mutex<std::collections::BTreeSet<AccountId>>>,
}

impl Simulation {
    /// Adds `account` (created if missing) as a simulated peer.
    pub fn add_peer(
        &self,
        model: &Model,
        user_id: AccountId,
        phone: &str,
        first_name: &str,
        behaviour: Behaviour,
    ) -> Result<(), String> {
        model.ensure_account(user_id, phone, first_name)?;
        self.peers
            .add_peer(user_id, behaviour)
            .map_err(|e| e.to_string())?;
        self.peer_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user_id);
        Ok(())
    }

    /// Every online peer polls `updates.getDifference` (recovers dropped updates); errors are
    /// ignored (the next round retries).
    pub fn catch_up_all(&self) {
        let ids: Vec<AccountId> = self
            .peer_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        for id in ids {
            if let Err(err) = self.peers.catch_up(id) {
                debug!(peer = id, %err, "peer catch-up failed");
            }
        }
    }
}

/// Parses a behaviour name: `normal`, `echo`, `offline`, `never-accept`, `decline`, `block`,
/// `silent` (case and `-`/`_` insensitive).
pub fn parse_behaviour(s: &str) -> Result<Behaviour, String> {
    Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "normal" => Behaviour::Normal,
        "echo" => Behaviour::Echo,
        "offline" => Behaviour::Offline,
        "never-accept" | "neveraccept" => Behaviour::NeverAccept,
        "decline" => Behaviour::Decline,
        "block" => Behaviour::Block,
        "silent" => Behaviour::Silent,
        _ => {
            return Err(format!(
                "unknown behaviour {s:?} (normal, echo, offline, never-accept, decline, \
                     block, silent)"
            ));
        }
    })
}

#[derive(Deserialize)]
struct AddPeerArgs {
    user_id: i64,
    phone: String,
    first_name: String,
    behaviour: Option<String>,
}

#[derive(Deserialize)]
struct BehaviourArgs {
    account: AccountId,
    behaviour: String,
}

#[derive(Deserialize)]
struct RequestChatArgs {
    peer: AccountId,
    user_id: AccountId,
}

#[derive(Deserialize)]
struct PeerSendArgs {
    peer: AccountId,
    chat_id: i32,
    action: Value,
}

#[derive(Deserialize)]
struct PeerArg {
    peer: AccountId,
}

#[derive(Deserialize)]
struct SetFaultsArgs {
    faults: Faults,
}

#[derive(Deserialize)]
struct AddAccountArgs {
    user_id: i64,
    phone: String,
    first_name: String,
}

#[derive(Deserialize)]
struct AccountArg {
    account: AccountId,
}

#[derive(Deserialize)]
struct PasswordArgs {
    account: AccountId,
    password: Option<String>,
    hint: Option<String>,
}

#[derive(Deserialize)]
struct PairArgs {
    a: AccountId,
    b: AccountId,
}

#[derive(Deserialize)]
struct RelayedArgs {
    since: Option<usize>,
}

/// The admin side of a running tgsim: the model, the server (for auth keys) and the key file.
pub struct Admin {
    model: Arc<Model>,
    server: ServerHandle,
    keys_path: PathBuf,
    keys: Mutex<Vec<(AccountId, AuthKey)>>,
    shutdown: Notify,
    sim: Option<Simulation>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("keys_path", &self.keys_path)
            .finish_non_exhaustive()
    }
}

fn args<T: DeserializeOwned>(req: &Value) -> Result<T, String> {
    T::deserialize(req).map_err(|e| format!("bad arguments: {e}"))
}

fn to_value<T: Serialize>(v: T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot encode result: {e}"))
}

impl Admin {
    /// Administers `model` served by `server`. `keys` are the keys already in `keys_path` (they
    /// must already be registered with the server); new keys are added to both.
    pub fn new(
        model: Arc<Model>,
        server: ServerHandle,
        keys_path: PathBuf,
        keys: Vec<(AccountId, AuthKey)>,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            model,
            server,
            keys_path,
            keys: Mutex::new(keys),
            shutdown: Notify::new(),
            sim: None,
        })
    }

    /// [`Admin::new`] with the simulation layers, for the peer and fault commands.
    pub fn with_simulation(
        model: Arc<Model>,
        server: ServerHandle,
        keys_path: PathBuf,
        keys: Vec<(AccountId, AuthKey)>,
        sim: Simulation,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            model,
            server,
            keys_path,
            keys: Mutex::new(keys),
            shutdown: Notify::new(),
            sim: Some(sim),
        })
    }

    fn sim(&self) -> Result<&Simulation, String> {
        self.sim
            .as_ref()
            .ok_or_else(|| "this server has no simulated peers nor faults".to_owned())
    }

    fn sim_dispatch(&self, cmd: &str, req: &Value) -> Result<Value, String> {
        let sim = self.sim()?;
        match cmd {
            "add_peer" => {
                let a: AddPeerArgs = args(req)?;
                let behaviour = parse_behaviour(a.behaviour.as_deref().unwrap_or("echo"))?;
                sim.add_peer(&self.model, a.user_id, &a.phone, &a.first_name, behaviour)?;
                Ok(Value::Null)
            }
            "set_behaviour" => {
                let a: BehaviourArgs = args(req)?;
                let behaviour = parse_behaviour(&a.behaviour)?;
                sim.peers
                    .set_behaviour(a.account, behaviour)
                    .map_err(|e| e.to_string())?;
                Ok(Value::Null)
            }
            "request_chat" => {
                let a: RequestChatArgs = args(req)?;
                self.existing(a.user_id)?;
                let id = sim
                    .peers
                    .request_chat(a.peer, a.user_id)
                    .map_err(|e| e.to_string())?;
                Ok(id.into())
            }
            "peer_send" => {
                let a: PeerSendArgs = args(req)?;
                let action = DecryptedMessageAction::from_json(&a.action)
                    .map_err(|e| format!("bad action: {e}"))?;
                let random_id = sim
                    .peers
                    .send_action(a.peer, a.chat_id, action)
                    .map_err(|e| e.to_string())?;
                Ok(random_id.into())
            }
            "peer_chats" => {
                let a: PeerArg = args(req)?;
                if sim.peers.behaviour(a.peer).is_none() {
                    return Err(format!("{} is not a simulated peer", a.peer));
                }
                let chats: Vec<PeerChat> = sim
                    .peers
                    .chats(a.peer)
                    .into_iter()
                    .filter_map(|chat_id| {
                        let i = sim.peers.chat_info(a.peer, chat_id)?;
                        Some(PeerChat {
                            chat_id,
                            status: i.status.name().to_owned(),
                            key_fingerprint: i.key_fingerprint.map(|f| f.to_i64()),
                            rekeys: i.rekeys,
                            outbox_len: i.outbox_len,
                            transcript: i.transcript.iter().map(TlJson::to_json).collect(),
                            reused_slots: i
                                .reused_slots
                                .iter()
                                .map(|(fp, seq)| (fp.to_i64(), *seq))
                                .collect(),
                        })
                    })
                    .collect();
                to_value(chats)
            }
            "catch_up" => {
                let a: PeerArg = args(req)?;
                sim.peers.catch_up(a.peer).map_err(|e| e.to_string())?;
                Ok(Value::Null)
            }
            "set_faults" => {
                let a: SetFaultsArgs = args(req)?;
                sim.sink.set_faults(a.faults.clone());
                sim.handler.set_faults(a.faults);
                Ok(Value::Null)
            }
            "faults" => {
                let s = sim.sink.stats();
                let (calls, failed) = sim.handler.stats();
                to_value(FaultsReport {
                    faults: sim.sink.faults(),
                    updates: UpdateStats {
                        pushed: s.pushed,
                        dropped: s.dropped,
                        duplicated: s.duplicated,
                        reordered: s.reordered,
                        delayed: s.delayed,
                    },
                    calls: CallStats {
                        calls,
                        failed,
                        closed_before: sim.handler.closed().0,
                        closed_after: sim.handler.closed().1,
                    },
                })
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    /// Waits until a `shutdown` command was answered.
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await;
    }

    /// Handles one request line: the answer, and whether it was an accepted `shutdown`.
    pub fn handle_line(&self, line: &[u8]) -> (Value, bool) {
        let req: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                return (
                    json!({"id": null, "ok": false, "error": format!("malformed JSON: {e}")}),
                    false,
                );
            }
        };
        let Some(obj) = req.as_object() else {
            return (
                json!({"id": null, "ok": false, "error": "a request is a JSON object"}),
                false,
            );
        };
        let id = obj.get("id").cloned().unwrap_or(Value::Null);
        let Some(cmd) = obj.get("cmd").and_then(Value::as_str) else {
            return (
                json!({"id": id, "ok": false, "error": "missing \"cmd\" (a string)"}),
                false,
            );
        };
        match self.dispatch(cmd, &req) {
            Ok(result) => (
                json!({"id": id, "ok": true, "result": result}),
                cmd == "shutdown",
            ),
            Err(error) => (json!({"id": id, "ok": false, "error": error}), false),
        }
    }

    /// Runs one command; `req` is the whole request object (the arguments are its fields).
    pub fn dispatch(&self, cmd: &str, req: &Value) -> Result<Value, String> {
        match cmd {
            "add_account" => {
                let a: AddAccountArgs = args(req)?;
                let account = self
                    .model
                    .add_account(a.user_id, &a.phone, &a.first_name)
                    .map_err(|e| e.to_string())?;
                to_value(self.provision_key(account)?)
            }
            "provision_key" => {
                let a: AccountArg = args(req)?;
                self.existing(a.account)?;
                to_value(self.provision_key(a.account)?)
            }
            "accounts" => to_value(self.accounts()),
            "set_password" => {
                let a: PasswordArgs = args(req)?;
                self.existing(a.account)?;
                let pw = a.password.as_deref();
                let hint = a.hint.as_deref().unwrap_or("");
                self.model
                    .set_password(a.account, pw.map(|p| (p, hint)))
                    .map_err(|e| format!("cannot save state: {e}"))?;
                Ok(Value::Null)
            }
            "block" | "unblock" => {
                let p: PairArgs = args(req)?;
                self.existing(p.a)?;
                self.existing(p.b)?;
                let r = if cmd == "block" {
                    self.model.block(p.a, p.b)
                } else {
                    self.model.unblock(p.a, p.b)
                };
                r.map_err(|e| format!("cannot save state: {e}"))?;
                Ok(Value::Null)
            }
            "relayed" => {
                let a: RelayedArgs = args(req)?;
                to_value(self.relayed(a.since.unwrap_or(0)))
            }
            "state" => {
                let a: AccountArg = args(req)?;
                to_value(self.state(a.account)?)
            }
            "shutdown" => Ok(Value::Null),
            "close_connections" => {
                let a: AccountArg = args(req)?;
                self.existing(a.account)?;
                Ok(self.server.close_connections(a.account).into())
            }
            "log_out" => {
                let a: AccountArg = args(req)?;
                self.existing(a.account)?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX));
                self.model
                    .log_out(a.account, now)
                    .map_err(|e| format!("cannot save state: {e}"))?;
                Ok(Value::Null)
            }
            "add_peer" | "set_behaviour" | "request_chat" | "peer_send" | "peer_chats"
            | "catch_up" | "set_faults" | "faults" => self.sim_dispatch(cmd, req),
            other => Err(format!("unknown command {other:?}")),
        }
    }

    fn existing(&self, account: AccountId) -> Result<(), String> {
        if self.model.snapshot().accounts.contains_key(&account) {
            Ok(())
        } else {
            Err(format!("no account {account}"))
        }
    }

    /// Makes a fresh random key for `account`, saves it in the key file, then registers it with
    /// the server.
    /// A fresh auth key for `account`: saved in the key file, then registered with the server.
    pub fn provision_key(&self, account: AccountId) -> Result<ProvisionedKey, String> {
        let mut bytes = [0u8; 256];
        SystemRandom::new().fill(&mut bytes);
        let key = AuthKey::from_array(bytes);
        let id = auth_key_id(&key);
        {
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.push((account, key.clone()));
            if let Err(e) = keyfile::save(&self.keys_path, &keys) {
                keys.pop();
                return Err(format!(
                    "cannot save key file {}: {e}",
                    self.keys_path.display()
                ));
            }
        }
        self.server
            .with_sessions(|s| s.keys_mut().insert(key.clone(), account));
        Ok(ProvisionedKey {
            account,
            auth_key_id: id,
            auth_key: hex::encode(key.as_bytes()),
        })
    }

    fn accounts(&self) -> Vec<AccountInfo> {
        let keys: Vec<(AccountId, i64)> = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(a, k)| (*a, auth_key_id(k)))
            .collect();
        self.model
            .snapshot()
            .accounts
            .values()
            .map(|a| AccountInfo {
                user_id: a.user_id,
                phone: a.phone.clone(),
                first_name: a.first_name.clone(),
                qts: a.qts,
                pts: a.pts,
                queued: a.queue.len(),
                auth_key_ids: keys
                    .iter()
                    .filter(|(acc, _)| *acc == a.user_id)
                    .map(|(_, id)| *id)
                    .collect(),
            })
            .collect()
    }

    fn relayed(&self, since: usize) -> Vec<RelayedMessage> {
        self.model
            .relayed()
            .into_iter()
            .enumerate()
            .skip(since)
            .map(|(index, r)| RelayedMessage {
                index,
                sender: r.sender,
                recipient: r.recipient,
                chat_id: r.chat_id,
                random_id: r.random_id,
                date: r.date,
                qts: r.qts,
                service: r.service,
                bytes: BASE64.encode(&r.data),
            })
            .collect()
    }

    fn state(&self, account: AccountId) -> Result<AccountState, String> {
        let world = self.model.snapshot();
        let a = world
            .accounts
            .get(&account)
            .ok_or_else(|| format!("no account {account}"))?;
        Ok(AccountState {
            account,
            qts: a.qts,
            pts: a.pts,
            queued: a.queue.len(),
            chat_events: a.chat_events.len(),
            listen: self.server.local_addr(),
        })
    }

    /// Serves connections on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let admin = self.clone();
                    tokio::spawn(async move {
                        if let Err(err) = admin.serve_conn(stream).await {
                            debug!(%err, "admin connection ended");
                        }
                    });
                }
                Err(err) => {
                    warn!(%err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_conn(&self, stream: UnixStream) -> io::Result<()> {
        let (rd, mut wr) = stream.into_split();
        let mut reader = tokio::io::BufReader::new(rd);
        loop {
            let mut line = Vec::new();
            let n = (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                return Ok(());
            }
            if line.len() >= MAX_LINE && !line.ends_with(b"\n") {
                let answer = json!({"id": null, "ok": false, "error": "request line too long"});
                wr.write_all(format!("{answer}\n").as_bytes()).await?;
                return Ok(());
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Model changes fsync; fine for an admin channel of a test server.
            let (answer, shutdown) = self.handle_line(&line);
            wr.write_all(format!("{answer}\n").as_bytes()).await?;
            wr.flush().await?;
            if shutdown {
                self.shutdown.notify_one();
            }
        }
    }
}

/// Binds the admin socket at `path`, with mode 0600. A stale socket file (nobody listening, e.g.
/// after `kill -9`) is replaced; a live one, or a file that is not a socket, is an error.
/// Needs a tokio runtime.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if StdUnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{}: another process serves this socket", path.display()),
        ));
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// An error from [`AdminClient`].
#[derive(Debug)]
pub enum AdminError {
    /// The socket failed.
    Io(io::Error),
    /// The server answered `ok: false` with this error.
    Server(String),
    /// The answer was not what the protocol says.
    Protocol(String),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Io(e) => write!(f, "admin socket: {e}"),
            AdminError::Server(e) => write!(f, "tgsim: {e}"),
            AdminError::Protocol(e) => write!(f, "admin protocol: {e}"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<io::Error> for AdminError {
    fn from(e: io::Error) -> Self {
        AdminError::Io(e)
    }
}

/// A blocking client of the admin socket.
#[derive(Debug)]
pub struct AdminClient {
    reader: BufReader<StdUnixStream>,
    writer: StdUnixStream,
    next_id: u64,
}

impl AdminClient {
    /// Connects to the admin socket at `path`. Answers are awaited for at most 30 s.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<AdminClient> {
        let stream = StdUnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(AdminClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
        })
    }

    /// Sends one raw line (a newline is added) and reads one raw answer line, parsed as JSON.
    pub fn raw(&mut self, line: &str) -> Result<Value, AdminError> {
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        self.writer.flush()?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(AdminError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        serde_json::from_str(&answer).map_err(|e| AdminError::Protocol(e.to_string()))
    }

    /// Runs `cmd` with the fields of `args` (a JSON object, or null) and returns its result.
    pub fn call(&mut self, cmd: &str, args: Value) -> Result<Value, AdminError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = match args {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            _ => return Err(AdminError::Protocol("arguments must be an object".into())),
        };
        req.insert("id".into(), id.into());
        req.insert("cmd".into(), cmd.into());
        let answer = self.raw(&Value::Object(req).to_string())?;
        if answer.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(AdminError::Protocol(format!(
                "answer to another request: {answer}"
            )));
        }
        match answer.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
            Some(false) => Err(AdminError::Server(
                answer
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("(no error message)")
                    .to_owned(),
            )),
            None => Err(AdminError::Protocol(format!("no \"ok\" in {answer}"))),
        }
    }

    fn typed<T: DeserializeOwned>(&mut self, cmd: &str, args: Value) -> Result<T, AdminError> {
        let v = self.call(cmd, args)?;
        serde_json::from_value(v).map_err(|e| AdminError::Protocol(format!("{cmd}: {e}")))
    }

    /// Creates an account and provisions an auth key for it.
    pub fn add_account(
        &mut self,
        user_id: AccountId,
        phone: &str,
        first_name: &str,
    ) -> Result<ProvisionedKey, AdminError> {
        self.typed(
            "add_account",
            json!({"user_id": user_id, "phone": phone, "first_name": first_name}),
        )
    }

    /// Provisions another auth key for an existing account.
    pub fn provision_key(&mut self, account: AccountId) -> Result<ProvisionedKey, AdminError> {
        self.typed("provision_key", json!({ "account": account }))
    }

    /// Every account.
    pub fn accounts(&mut self) -> Result<Vec<AccountInfo>, AdminError> {
        self.typed("accounts", Value::Null)
    }

    /// Sets (`Some((password, hint))`) or removes an account's two-step password.
    pub fn set_password(
        &mut self,
        account: AccountId,
        password: Option<(&str, &str)>,
    ) -> Result<(), AdminError> {
        let (password, hint) = password.unzip();
        self.call(
            "set_password",
            json!({"account": account, "password": password, "hint": hint}),
        )
        .map(drop)
    }

    /// `a` blocks `b`.
    pub fn block(&mut self, a: AccountId, b: AccountId) -> Result<(), AdminError> {
        self.call("block", json!({"a": a, "b": b})).map(drop)
    }

    /// `a` unblocks `b`.
    pub fn unblock(&mut self, a: AccountId, b: AccountId) -> Result<(), AdminError> {
        self.call("unblock", json!({"a": a, "b": b})).map(drop)
    }

    /// The relayed messages from index `since` (all with `None`), in order.
    pub fn relayed(&mut self, since: Option<usize>) -> Result<Vec<RelayedMessage>, AdminError> {
        self.typed("relayed", json!({ "since": since }))
    }

    /// An account's qts, pts and queue lengths, and the server's listening address.
    pub fn state(&mut self, account: AccountId) -> Result<AccountState, AdminError> {
        self.typed("state", json!({ "account": account }))
    }

    /// Makes `user_id` (created if missing) a simulated peer with `behaviour` (see
    /// [`parse_behaviour`]).
    pub fn add_peer(
        &mut self,
        user_id: AccountId,
        phone: &str,
        first_name: &str,
        behaviour: &str,
    ) -> Result<(), AdminError> {
        self.call(
            "add_peer",
            json!({"user_id": user_id, "phone": phone, "first_name": first_name,
                   "behaviour": behaviour}),
        )
        .map(drop)
    }

    /// Changes a peer's behaviour (leaving `offline` catches up).
    pub fn set_behaviour(&mut self, account: AccountId, behaviour: &str) -> Result<(), AdminError> {
        self.call(
            "set_behaviour",
            json!({"account": account, "behaviour": behaviour}),
        )
        .map(drop)
    }

    /// The peer requests a secret chat with `user_id`; the chat id.
    pub fn request_chat(&mut self, peer: AccountId, user_id: AccountId) -> Result<i32, AdminError> {
        self.typed("request_chat", json!({"peer": peer, "user_id": user_id}))
    }

    /// The peer sends a service action (MadelineProto JSON of a `DecryptedMessageAction`);
    /// its random_id.
    pub fn peer_send(
        &mut self,
        peer: AccountId,
        chat_id: i32,
        action: Value,
    ) -> Result<i64, AdminError> {
        self.typed(
            "peer_send",
            json!({"peer": peer, "chat_id": chat_id, "action": action}),
        )
    }

    /// A peer's chats.
    pub fn peer_chats(&mut self, peer: AccountId) -> Result<Vec<PeerChat>, AdminError> {
        self.typed("peer_chats", json!({ "peer": peer }))
    }

    /// The peer polls `updates.getDifference` now.
    pub fn catch_up(&mut self, peer: AccountId) -> Result<(), AdminError> {
        self.call("catch_up", json!({ "peer": peer })).map(drop)
    }

    /// Replaces the fault configuration (updates and calls).
    pub fn set_faults(&mut self, faults: &Faults) -> Result<(), AdminError> {
        self.call("set_faults", json!({ "faults": faults }))
            .map(drop)
    }

    /// The fault configuration and counters.
    pub fn faults(&mut self) -> Result<FaultsReport, AdminError> {
        self.typed("faults", Value::Null)
    }

    /// Signs the device of `account` out, as the user does by terminating its session from
    /// another device: its secret chats are discarded and the peers told.
    pub fn log_out(&mut self, account: AccountId) -> Result<(), AdminError> {
        self.call("log_out", json!({ "account": account }))
            .map(drop)
    }

    /// Closes the connections serving `account` (clients reconnect); how many.
    pub fn close_connections(&mut self, account: AccountId) -> Result<usize, AdminError> {
        self.typed("close_connections", json!({ "account": account }))
    }

    /// Stops the server (after answering).
    pub fn shutdown(&mut self) -> Result<(), AdminError> {
        self.call("shutdown", Value::Null).map(drop)
    }
}
