//! Simulated peers: accounts whose client runs inside tgsim on secret-core's [`Chat`].
//!
//! A [`PeerHost`] is an [`UpdateSink`] wrapper. Updates for peer accounts are queued to a worker
//! thread (the model pushes while holding its lock, so the host never calls back into the model
//! from `push`); updates for every other account go to the inner sink. The worker, and the public
//! methods, drive the peers' chats by calling the model through an [`ApiHandler`] (the model
//! itself, or a [`crate::faults::FaultyHandler`] around it) with the peer account's
//! [`CallContext`]:
//!
//! - `updateEncryption(encryptedChatRequested)`: `messages.getDhConfig`, then, by
//!   [`Behaviour`], `messages.acceptEncryption`, `messages.discardEncryption`, a block, or
//!   nothing;
//! - `updateEncryption` for a chat it knows: [`Chat::on_remote_update`] (completes the chats it
//!   requested with [`PeerHost::request_chat`]; learns discards; the `encryptedChat` of its own
//!   acceptance, which the model sends the acceptor too, is a repeat for a chat that became
//!   ready when it accepted, and changes nothing);
//! - `updateNewEncryptedMessage`: processed in qts order with [`Chat::receive`]; a duplicate (qts
//!   already seen) is skipped, a gap (an update dropped or reordered) triggers
//!   `updates.getDifference` from the last processed qts. Processed messages are acknowledged
//!   with `messages.receivedQueue`.
//! - every [`Call`] of an [`secret_core::chat::Output`] is performed in order; send results are
//!   reported with [`Chat::on_sent`] / [`Chat::on_send_failed`]. Resend requests and re-keys are
//!   answered by the Chat itself.
//!
//! Calls failing with a retryable error (`420 FLOOD_WAIT_X`, `MSG_WAIT_FAILED`, 5xx) are retried
//! at once with the same bytes, up to [`MAX_ATTEMPTS`] times (a simulation does not wait out
//! FLOOD_WAIT); a send still failing is reported as `SendFailure::Retry` and sent again (same
//! bytes, from [`Chat::unsent`]) by the next [`PeerHost::catch_up`].
//!
//! Peers live in memory only. The host keeps an `Arc` of the handler, and the model keeps an
//! `Arc` of its sink: call [`PeerHost::detach`] to break that cycle when done.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;

use grammers_tl_types::{Deserializable, RemoteCall, enums, functions, types};
use secret_core::chat::{
    Call, Chat, ChatRequest, Event, Output, SendError, SendFailure, SendMethod, Status,
};
use secret_core::crypto::KeyFingerprint;
use secret_core::dh::DhConfig;
use secret_core::rand::SeededRandom;
use secret_core::tl::enums::DecryptedMessageAction;
use tglink::TgError;
use tglink::convert::{encrypted_chat_id, incoming_encrypted, remote_chat};

use crate::api::{ApiHandler, CallContext, RpcError, UpdateSink};
use crate::model::Model;
use crate::session::AccountId;

/// Most attempts of one call failing with a retryable error.
pub const MAX_ATTEMPTS: usize = 64;
/// Most `updates.getDifference` rounds (slices) per catch-up.
pub const MAX_DIFFERENCE_ROUNDS: usize = 64;
/// Processed messages left unacknowledged before `messages.receivedQueue` is called.
pub const ACK_EVERY: i32 = 32;

/// How a simulated peer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Behaviour {
    /// Accepts requests, takes part in chats.
    Normal,
    /// Like `Normal`, and sends back every application action it receives.
    Echo,
    /// Processes nothing; updates stay in the model's queues. Setting another behaviour brings
    /// the peer online and catches up with `updates.getDifference`.
    Offline,
    /// Records chat requests but never accepts them.
    NeverAccept,
    /// Declines chat requests (`messages.discardEncryption`).
    Decline,
    /// Blocks whoever requests a chat (the request stays unanswered).
    Block,
    /// Accepts requests and receives and decrypts messages, but never sends a message (not even
    /// the layer notice, Resend or re-key answers) nor calls `messages.receivedQueue`. (A
    /// [`PeerHost::catch_up`] still calls `updates.getDifference`, which acknowledges the qts it
    /// passes.)
    Silent,
}

/// Why a peer command failed.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerError {
    /// The host has no handler (see [`PeerHost::attach`]).
    NotAttached,
    /// The account is not a peer of this host.
    NoPeer(AccountId),
    /// The peer has no such chat.
    NoChat(i32),
    /// The peer is offline.
    Offline,
    /// The server refused a call.
    Rpc(RpcError),
    /// The chat refused the send.
    Send(SendError),
    /// Chat creation failed locally.
    Handshake(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::NotAttached => write!(f, "the peer host is not attached to a handler"),
            PeerError::NoPeer(a) => write!(f, "{a} is not a simulated peer"),
            PeerError::NoChat(c) => write!(f, "no chat {c}"),
            PeerError::Offline => write!(f, "the peer is offline"),
            PeerError::Rpc(e) => write!(f, "rpc error {e}"),
            PeerError::Send(e) => write!(f, "send refused: {e}"),
            PeerError::Handshake(e) => write!(f, "handshake: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<RpcError> for PeerError {
    fn from(e: RpcError) -> Self {
        PeerError::Rpc(e)
    }
}

/// What a peer knows about one of its chats.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatInfo {
    /// The chat's status.
    pub status: Status,
    /// Fingerprint of the key in use.
    pub key_fingerprint: Option<KeyFingerprint>,
    /// Re-keys completed (`Event::KeyChanged`).
    pub rekeys: usize,
    /// Application actions received, in order.
    pub transcript: Vec<DecryptedMessageAction>,
    /// Outgoing messages not yet acknowledged by the peer.
    pub outbox_len: usize,
    /// Slots (key fingerprint, out_seq_no) in which the other side sent two different
    /// messages (neither of them the Noop that fills a slot asked for again): must stay empty.
    pub reused_slots: Vec<(KeyFingerprint, i32)>,
}

struct PeerChat {
    chat: Chat,
    transcript: Vec<DecryptedMessageAction>,
    rekeys: usize,
    /// Every authentic incoming message by slot.
    slots: BTreeMap<Slot, BTreeSet<Text>>,
}

/// A seq slot: (key fingerprint, out_seq_no).
type Slot = (KeyFingerprint, i32);
/// A message seen in a slot: (hash of its bytes, whether it is a Noop).
type Text = ([u8; 32], bool);

impl PeerChat {
    fn new(chat: Chat) -> PeerChat {
        PeerChat {
            chat,
            transcript: Vec::new(),
            rekeys: 0,
            slots: BTreeMap::new(),
        }
    }

    fn reused_slots(&self) -> Vec<Slot> {
        self.slots
            .iter()
            .filter(|(_, texts)| texts.iter().filter(|(_, noop)| !noop).count() > 1)
            .map(|(slot, _)| *slot)
            .collect()
    }
}

struct Peer {
    behaviour: Behaviour,
    pts: i32,
    qts: i32,
    acked_qts: i32,
    chats: BTreeMap<i32, PeerChat>,
}

struct Peers {
    peers: BTreeMap<AccountId, Peer>,
    rng: SeededRandom,
}

struct Shared {
    inner: Arc<dyn UpdateSink>,
    handler: Mutex<Option<Arc<dyn ApiHandler>>>,
    model: Mutex<Option<Arc<Model>>>,
    /// Lock order: `state` before `routing`; `push` takes only `routing`.
    state: Mutex<Peers>,
    /// Peer accounts and whether they are online.
    routing: Mutex<BTreeMap<AccountId, bool>>,
    /// Updates queued to the worker and not processed yet.
    pending: AtomicUsize,
    now_ms: AtomicU64,
    problems: Mutex<Vec<String>>,
}

/// An update queued to the worker.
type Job = (AccountId, Vec<u8>);

/// The simulated peers (see the module documentation).
pub struct PeerHost {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for PeerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHost").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms_system() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether an error is worth retrying with the same bytes: the shared classification
/// ([`tglink::errors`]), plus tgsim's own close-connection marker.
pub fn retryable(e: &RpcError) -> bool {
    e.is_close_connection() || TgError::parse(e.code, &e.message).class().is_retry()
}

impl PeerHost {
    /// A host forwarding non-peer updates to `inner`; `seed` seeds the peers' randomness.
    /// Attach a handler with [`PeerHost::attach`] before adding peers.
    pub fn new(inner: Arc<dyn UpdateSink>, seed: u64) -> Arc<PeerHost> {
        let shared = Arc::new(Shared {
            inner,
            handler: Mutex::new(None),
            model: Mutex::new(None),
            state: Mutex::new(Peers {
                peers: BTreeMap::new(),
                rng: SeededRandom::new(seed),
            }),
            routing: Mutex::new(BTreeMap::new()),
            pending: AtomicUsize::new(0),
            now_ms: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let s = shared.clone();
        let worker = thread::Builder::new()
            .name("tgsim-peers".into())
            .spawn(move || {
                for (account, bytes) in rx {
                    s.handle_update(account, &bytes);
                    s.pending.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .ok();
        Arc::new(PeerHost {
            shared,
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(worker),
        })
    }

    /// Connects the host to the model: `handler` answers the peers' calls (the model, or a
    /// faulty wrapper of it); `model` is used for administration (blocking).
    pub fn attach(&self, model: Arc<Model>, handler: Arc<dyn ApiHandler>) {
        *lock(&self.shared.model) = Some(model);
        *lock(&self.shared.handler) = Some(handler);
    }

    /// Drops the handler and the model (breaks the model → sink → host → model cycle) and stops
    /// the worker.
    pub fn detach(&self) {
        *lock(&self.shared.handler) = None;
        *lock(&self.shared.model) = None;
        lock(&self.tx).take();
        if let Some(w) = lock(&self.worker).take() {
            let _ = w.join();
        }
    }

    /// Fixes the clock (Unix milliseconds); 0 (the default) means the system clock.
    pub fn set_now_ms(&self, now_ms: u64) {
        self.shared.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Makes `account` a simulated peer. Its pts and qts start from `updates.getState`.
    pub fn add_peer(&self, account: AccountId, behaviour: Behaviour) -> Result<(), PeerError> {
        let enums::updates::State::State(st) = self
            .shared
            .call(account, &functions::updates::GetState {})?;
        let mut p = lock(&self.shared.state);
        p.peers.insert(
            account,
            Peer {
                behaviour,
                pts: st.pts,
                qts: st.qts,
                acked_qts: st.qts,
                chats: BTreeMap::new(),
            },
        );
        lock(&self.shared.routing).insert(account, behaviour != Behaviour::Offline);
        Ok(())
    }

    /// Changes a peer's behaviour. Leaving `Offline` catches up with `updates.getDifference`.
    pub fn set_behaviour(&self, account: AccountId, behaviour: Behaviour) -> Result<(), PeerError> {
        let mut p = lock(&self.shared.state);
        let peer = p
            .peers
            .get_mut(&account)
            .ok_or(PeerError::NoPeer(account))?;
        let was = std::mem::replace(&mut peer.behaviour, behaviour);
        lock(&self.shared.routing).insert(account, behaviour != Behaviour::Offline);
        if was == Behaviour::Offline && behaviour != Behaviour::Offline {
            self.shared.catch_up(&mut p, account)?;
        }
        Ok(())
    }

    /// A peer's behaviour.
    pub fn behaviour(&self, account: AccountId) -> Option<Behaviour> {
        lock(&self.shared.state)
            .peers
            .get(&account)
            .map(|p| p.behaviour)
    }

    /// Starts a secret chat from `account` to `user_id` (getDhConfig, requestEncryption). The
    /// chat completes when the acceptance arrives (pushed, or found by [`PeerHost::catch_up`]).
    pub fn request_chat(&self, account: AccountId, user_id: i64) -> Result<i32, PeerError> {
        let mut p = lock(&self.shared.state);
        let p = &mut *p;
        let peer = p.peers.get(&account).ok_or(PeerError::NoPeer(account))?;
        if peer.behaviour == Behaviour::Offline {
            return Err(PeerError::Offline);
        }
        let (dh, random) = self.shared.dh_config(account)?;
        let mut chat_id = secret_core::chat::random_chat_id(&mut p.rng);
        while peer.chats.contains_key(&chat_id) {
            chat_id = secret_core::chat::random_chat_id(&mut p.rng);
        }
        let now = self.shared.now_s();
        let (mut chat, req, _) =
            Chat::request(chat_id, account, user_id, dh, &random, now, &mut p.rng)
                .map_err(|e| PeerError::Handshake(e.to_string()))?;
        let answer = self.shared.call(
            account,
            &functions::messages::RequestEncryption {
                user_id: enums::InputUser::User(types::InputUser {
                    user_id,
                    access_hash: 0,
                }),
                random_id: req.random_id,
                g_a: req.g_a,
            },
        )?;
        let out = remote_chat(&answer)
            .map(|r| chat.on_remote_update(&r, now, &mut p.rng))
            .unwrap_or_default();
        if let Some(peer) = p.peers.get_mut(&account) {
            peer.chats.insert(chat_id, PeerChat::new(chat));
        }
        self.shared.perform(p, account, chat_id, out);
        Ok(chat_id)
    }

    /// Sends an application service action in a chat; returns its random_id.
    pub fn send_action(
        &self,
        account: AccountId,
        chat_id: i32,
        action: DecryptedMessageAction,
    ) -> Result<i64, PeerError> {
        let mut p = lock(&self.shared.state);
        let p = &mut *p;
        let now = self.shared.now_s();
        let peer = p
            .peers
            .get_mut(&account)
            .ok_or(PeerError::NoPeer(account))?;
        if peer.behaviour == Behaviour::Offline {
            return Err(PeerError::Offline);
        }
        let pc = peer
            .chats
            .get_mut(&chat_id)
            .ok_or(PeerError::NoChat(chat_id))?;
        let sent = pc
            .chat
            .send_action(action, now, &mut p.rng)
            .map_err(PeerError::Send)?;
        self.shared.perform(p, account, chat_id, sent.output);
        Ok(sent.random_id)
    }

    /// Catches up like a reconnecting client: `updates.getDifference` from the peer's last pts
    /// and qts, `messages.receivedQueue`, the chats' timers and unsent messages. Does nothing
    /// for an offline peer.
    pub fn catch_up(&self, account: AccountId) -> Result<(), PeerError> {
        let mut p = lock(&self.shared.state);
        self.shared.catch_up(&mut p, account)
    }

    /// The application actions `account` received in a chat, in order.
    pub fn transcript(&self, account: AccountId, chat_id: i32) -> Vec<DecryptedMessageAction> {
        self.chat_info(account, chat_id)
            .map(|i| i.transcript)
            .unwrap_or_default()
    }

    /// What `account` knows about a chat.
    pub fn chat_info(&self, account: AccountId, chat_id: i32) -> Option<ChatInfo> {
        let p = lock(&self.shared.state);
        let pc = p.peers.get(&account)?.chats.get(&chat_id)?;
        Some(ChatInfo {
            status: pc.chat.status().clone(),
            key_fingerprint: pc.chat.key_fingerprint(),
            rekeys: pc.rekeys,
            transcript: pc.transcript.clone(),
            outbox_len: pc.chat.outbox().count(),
            reused_slots: pc.reused_slots(),
        })
    }

    /// The ids of `account`'s chats.
    pub fn chats(&self, account: AccountId) -> Vec<i32> {
        lock(&self.shared.state)
            .peers
            .get(&account)
            .map(|p| p.chats.keys().copied().collect())
            .unwrap_or_default()
    }

    /// True if the worker has nothing queued.
    pub fn idle(&self) -> bool {
        self.shared.pending.load(Ordering::SeqCst) == 0
    }

    /// Things that went wrong while processing (unexpected errors), for inspection.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.shared.problems).clone()
    }
}

impl Drop for PeerHost {
    fn drop(&mut self) {
        lock(&self.tx).take();
        if let Some(w) = lock(&self.worker).take() {
            let _ = w.join();
        }
    }
}

impl UpdateSink for PeerHost {
    fn push(&self, account: AccountId, updates: Vec<u8>) {
        // Called with the model's lock held: only the routing lock and the channel here.
        let online = lock(&self.shared.routing).get(&account).copied();
        match online {
            None => self.shared.inner.push(account, updates),
            // Offline: the update stays in the model's qts / pts queue.
            Some(false) => {}
            Some(true) => {
                if let Some(tx) = &*lock(&self.tx) {
                    self.shared.pending.fetch_add(1, Ordering::SeqCst);
                    if tx.send((account, updates)).is_err() {
                        self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        match self.now_ms.load(Ordering::SeqCst) {
            0 => now_ms_system(),
            t => t,
        }
    }

    fn now_s(&self) -> u64 {
        self.now_ms() / 1000
    }

    fn problem(&self, what: String) {
        tracing::debug!(target: "tgsim::peer", "{what}");
        lock(&self.problems).push(what);
    }

    /// One attempt.
    fn call_once<F: RemoteCall>(&self, account: AccountId, f: &F) -> Result<F::Return, RpcError> {
        let handler = lock(&self.handler)
            .clone()
            .ok_or_else(|| RpcError::new(500, "PEER_HOST_DETACHED"))?;
        let ctx = CallContext {
            account,
            layer: Some(grammers_tl_types::LAYER),
            now_ms: self.now_ms(),
            connection: None,
        };
        let bytes = f.to_bytes();
        let ctor = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let answer = handler.call(&ctx, ctor, &bytes)?;
        F::Return::from_bytes(&answer).map_err(|_| RpcError::new(500, "PEER_BAD_ANSWER"))
    }

    /// Retries retryable errors with the same bytes.
    fn call<F: RemoteCall>(&self, account: AccountId, f: &F) -> Result<F::Return, RpcError> {
        let mut last = RpcError::new(500, "PEER_NO_ATTEMPT");
        for _ in 0..MAX_ATTEMPTS {
            match self.call_once(account, f) {
                Err(e) if retryable(&e) => last = e,
                r => return r,
            }
        }
        Err(last)
    }

    fn dh_config(&self, account: AccountId) -> Result<(DhConfig, Vec<u8>), PeerError> {
        let r = self.call(
            account,
            &functions::messages::GetDhConfig {
                version: 0,
                random_length: 256,
            },
        )?;
        let enums::messages::DhConfig::Config(c) = r else {
            return Err(PeerError::Handshake(
                "dhConfigNotModified for version 0".into(),
            ));
        };
        let dh = DhConfig::validate(c.g, &c.p, c.version)
            .map_err(|e| PeerError::Handshake(e.to_string()))?;
        Ok((dh, c.random))
    }

    fn behaviour(p: &Peers, account: AccountId) -> Option<Behaviour> {
        p.peers.get(&account).map(|x| x.behaviour)
    }

    fn handle_update(&self, account: AccountId, bytes: &[u8]) {
        let mut p = lock(&self.state);
        match Self::behaviour(&p, account) {
            None | Some(Behaviour::Offline) => return,
            Some(_) => {}
        }
        let updates = match enums::Updates::from_bytes(bytes) {
            Ok(enums::Updates::Updates(u)) => u.updates,
            Ok(enums::Updates::UpdateShort(u)) => vec![u.update],
            _ => return,
        };
        for u in updates {
            match u {
                enums::Update::NewEncryptedMessage(m) => {
                    self.on_message(&mut p, account, &m.message, m.qts)
                }
                enums::Update::Encryption(e) => self.on_chat(&mut p, account, &e.chat),
                _ => {}
            }
        }
    }

    fn on_message(
        &self,
        p: &mut Peers,
        account: AccountId,
        msg: &enums::EncryptedMessage,
        qts: i32,
    ) {
        let Some(last) = p.peers.get(&account).map(|x| x.qts) else {
            return;
        };
        if qts <= last {
            return; // a duplicate, or already fetched by getDifference
        }
        if qts > last + 1 {
            // A gap: something was dropped or is late. The queue has it all.
            if let Err(e) = self.catch_up(p, account) {
                self.problem(format!("{account}: getDifference after a gap: {e}"));
            }
            return;
        }
        self.deliver(p, account, msg);
        if let Some(peer) = p.peers.get_mut(&account) {
            peer.qts = qts;
        }
        self.maybe_ack(p, account, false);
    }

    fn maybe_ack(&self, p: &mut Peers, account: AccountId, force: bool) {
        let Some(peer) = p.peers.get(&account) else {
            return;
        };
        if peer.behaviour == Behaviour::Silent || peer.qts <= peer.acked_qts {
            return;
        }
        if !force && peer.qts - peer.acked_qts < ACK_EVERY {
            return;
        }
        let max_qts = peer.qts;
        match self.call(account, &functions::messages::ReceivedQueue { max_qts }) {
            Ok(_) => {
                if let Some(peer) = p.peers.get_mut(&account) {
                    peer.acked_qts = peer.acked_qts.max(max_qts);
                }
            }
            Err(e) => self.problem(format!("{account}: receivedQueue: {e}")),
        }
    }

    fn deliver(&self, p: &mut Peers, account: AccountId, msg: &enums::EncryptedMessage) {
        let (chat_id, incoming) = incoming_encrypted(msg);
        let now = self.now_s();
        let Some(pc) = p
            .peers
            .get_mut(&account)
            .and_then(|x| x.chats.get_mut(&chat_id))
        else {
            return; // a chat we do not know (or not yet): nothing to decrypt with
        };
        if let Some(k) = pc.chat.peek(&incoming) {
            let text = secret_core::crypto::sha256(&[&incoming.data]);
            pc.slots
                .entry((k.key_fingerprint, k.out_seq_no))
                .or_default()
                .insert((text, k.noop));
        }
        match pc.chat.receive(&incoming, now, &mut p.rng) {
            Ok(out) => self.perform(p, account, chat_id, out),
            Err(e) => {
                tracing::debug!(target: "tgsim::peer", "{account}: chat {chat_id}: dropped: {e}")
            }
        }
    }

    fn on_chat(&self, p: &mut Peers, account: AccountId, chat: &enums::EncryptedChat) {
        let chat_id = encrypted_chat_id(chat);
        let known = p
            .peers
            .get(&account)
            .is_some_and(|x| x.chats.contains_key(&chat_id));
        if let (enums::EncryptedChat::Requested(r), false) = (chat, known) {
            if r.participant_id == account
                && let Err(e) = self.on_request(p, account, r)
            {
                self.problem(format!("{account}: chat request {chat_id}: {e}"));
            }
            return;
        }
        let Some(remote) = remote_chat(chat) else {
            return;
        };
        let now = self.now_s();
        let Some(pc) = p
            .peers
            .get_mut(&account)
            .and_then(|x| x.chats.get_mut(&chat_id))
        else {
            return;
        };
        let out = pc.chat.on_remote_update(&remote, now, &mut p.rng);
        self.perform(p, account, chat_id, out);
    }

    fn on_request(
        &self,
        p: &mut Peers,
        account: AccountId,
        r: &types::EncryptedChatRequested,
    ) -> Result<(), PeerError> {
        let behaviour = Self::behaviour(p, account).ok_or(PeerError::NoPeer(account))?;
        let (dh, random) = self.dh_config(account)?;
        let now = self.now_s();
        let req = ChatRequest {
            chat_id: r.id,
            access_hash: r.access_hash,
            admin_id: r.admin_id,
            participant_id: r.participant_id,
            g_a: r.g_a.clone(),
        };
        let (mut chat, _) = Chat::from_request(&req, account, dh, now)
            .map_err(|e| PeerError::Handshake(e.to_string()))?;
        let out = match behaviour {
            Behaviour::NeverAccept | Behaviour::Offline => Output::default(),
            Behaviour::Block => {
                let model = lock(&self.model).clone().ok_or(PeerError::NotAttached)?;
                model
                    .block(account, r.admin_id)
                    .map_err(|e| PeerError::Handshake(format!("block: {e}")))?;
                Output::default()
            }
            Behaviour::Decline => chat.discard(false),
            Behaviour::Normal | Behaviour::Echo | Behaviour::Silent => chat
                .accept(&random, now, &mut p.rng)
                .map_err(|e| PeerError::Handshake(e.to_string()))?,
        };
        if let Some(peer) = p.peers.get_mut(&account) {
            peer.chats.insert(r.id, PeerChat::new(chat));
        }
        self.perform(p, account, r.id, out);
        Ok(())
    }

    /// Performs an output and everything that follows from it (send results, echoes).
    fn perform(&self, p: &mut Peers, account: AccountId, chat_id: i32, out: Output) {
        let Some(behaviour) = Self::behaviour(p, account) else {
            return;
        };
        let mut work = VecDeque::from([out]);
        let mut rounds = 0usize;
        while let Some(out) = work.pop_front() {
            rounds += 1;
            if rounds > 100_000 {
                self.problem(format!("{account}: chat {chat_id}: runaway output loop"));
                return;
            }
            let now = self.now_s();
            let Some(pc) = p
                .peers
                .get_mut(&account)
                .and_then(|x| x.chats.get_mut(&chat_id))
            else {
                return;
            };
            let mut echoes = Vec::new();
            for e in out.events {
                match e {
                    Event::Action { action, .. } => {
                        if behaviour == Behaviour::Echo {
                            echoes.push(action.clone());
                        }
                        pc.transcript.push(action);
                    }
                    Event::KeyChanged(_) => pc.rekeys += 1,
                    _ => {}
                }
            }
            let access_hash = pc.chat.state().auth().access_hash();
            let input = enums::InputEncryptedChat::Chat(types::InputEncryptedChat {
                chat_id,
                access_hash,
            });
            for call in out.calls {
                match call {
                    Call::Send(t) => {
                        if behaviour == Behaviour::Silent {
                            continue;
                        }
                        let r = match t.method {
                            SendMethod::SendEncrypted => self.call(
                                account,
                                &functions::messages::SendEncrypted {
                                    silent: false,
                                    peer: input.clone(),
                                    random_id: t.random_id,
                                    data: t.data,
                                },
                            ),
                            SendMethod::SendEncryptedService => self.call(
                                account,
                                &functions::messages::SendEncryptedService {
                                    peer: input.clone(),
                                    random_id: t.random_id,
                                    data: t.data,
                                },
                            ),
                        };
                        let o = match r {
                            Ok(enums::messages::SentEncryptedMessage::Message(m)) => {
                                pc.chat.on_sent(t.random_id, m.date)
                            }
                            Ok(enums::messages::SentEncryptedMessage::SentEncryptedFile(m)) => {
                                pc.chat.on_sent(t.random_id, m.date)
                            }
                            Err(e) if retryable(&e) => {
                                self.problem(format!("{account}: send gave up for now: {e}"));
                                pc.chat.on_send_failed(t.random_id, &SendFailure::Retry)
                            }
                            Err(e) => pc.chat.on_send_failed(
                                t.random_id,
                                &SendFailure::Fatal {
                                    error: TgError::parse(e.code, &e.message).name,
                                },
                            ),
                        };
                        work.push_back(o);
                    }
                    Call::AcceptEncryption {
                        g_b,
                        key_fingerprint,
                    } => {
                        let r = self.call(
                            account,
                            &functions::messages::AcceptEncryption {
                                peer: input.clone(),
                                g_b,
                                key_fingerprint,
                            },
                        );
                        match r {
                            Ok(c) => {
                                if let Some(remote) = remote_chat(&c) {
                                    work.push_back(
                                        pc.chat.on_remote_update(&remote, now, &mut p.rng),
                                    );
                                }
                            }
                            Err(e) => self.problem(format!("{account}: acceptEncryption: {e}")),
                        }
                    }
                    Call::DiscardEncryption { delete_history } => {
                        let r = self.call(
                            account,
                            &functions::messages::DiscardEncryption {
                                delete_history,
                                chat_id,
                            },
                        );
                        if let Err(e) = r {
                            self.problem(format!("{account}: discardEncryption: {e}"));
                        }
                    }
                }
            }
            for a in echoes {
                match pc.chat.send_action(a, now, &mut p.rng) {
                    Ok(s) => work.push_back(s.output),
                    Err(e) => self.problem(format!("{account}: echo refused: {e}")),
                }
            }
        }
    }

    fn catch_up(&self, p: &mut Peers, account: AccountId) -> Result<(), PeerError> {
        let behaviour = Self::behaviour(p, account).ok_or(PeerError::NoPeer(account))?;
        if behaviour == Behaviour::Offline {
            return Ok(());
        }
        for _ in 0..MAX_DIFFERENCE_ROUNDS {
            let Some(peer) = p.peers.get(&account) else {
                break;
            };
            let (pts, qts) = (peer.pts, peer.qts);
            let d = self.call(
                account,
                &functions::updates::GetDifference {
                    pts,
                    pts_limit: None,
                    pts_total_limit: None,
                    date: self.now_s() as i32,
                    qts,
                    qts_limit: None,
                },
            )?;
            let (others, messages, state, more) = match d {
                enums::updates::Difference::Empty(_) | enums::updates::Difference::TooLong(_) => {
                    break;
                }
                enums::updates::Difference::Difference(d) => {
                    (d.other_updates, d.new_encrypted_messages, d.state, false)
                }
                enums::updates::Difference::Slice(s) => (
                    s.other_updates,
                    s.new_encrypted_messages,
                    s.intermediate_state,
                    true,
                ),
            };
            for u in &others {
                if let enums::Update::Encryption(e) = u {
                    self.on_chat(p, account, &e.chat);
                }
            }
            for m in &messages {
                self.deliver(p, account, m);
            }
            let enums::updates::State::State(st) = state;
            if let Some(peer) = p.peers.get_mut(&account) {
                peer.pts = peer.pts.max(st.pts);
                peer.qts = peer.qts.max(st.qts);
                // getDifference acknowledged what we passed.
                peer.acked_qts = peer.acked_qts.max(qts);
            }
            if !more {
                break;
            }
        }
        self.maybe_ack(p, account, true);
        // The chats' timers, and sends that gave up earlier (same bytes).
        if behaviour != Behaviour::Silent {
            let now = self.now_s();
            let ids: Vec<i32> = p
                .peers
                .get(&account)
                .map(|x| x.chats.keys().copied().collect())
                .unwrap_or_default();
            for chat_id in ids {
                let Some(pc) = p
                    .peers
                    .get_mut(&account)
                    .and_then(|x| x.chats.get_mut(&chat_id))
                else {
                    continue;
                };
                let mut out = Output {
                    calls: pc.chat.unsent().into_iter().map(Call::Send).collect(),
                    ..Default::default()
                };
                let tick = pc.chat.tick(now, &mut p.rng);
                out.events.extend(tick.events);
                out.calls.extend(tick.calls);
                self.perform(p, account, chat_id, out);
            }
        }
        Ok(())
    }
}
