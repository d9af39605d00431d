//! The offline demo: a real MTProto client (grammers' `Sender`) logs in to tgsim with a
//! provisioned auth key and holds a secret chat with a simulated peer, Bob, who echoes every
//! service action back. Everything runs in this one process on 127.0.0.1: no network, no
//! Telegram account.
//!
//! The client side is what tgsecretd's Telegram link will do, in miniature: getDhConfig,
//! requestEncryption, the key exchange, `messages.sendEncryptedService` for every application
//! service action (TTL, read, delete, screenshot, flush history, typing), updates by qts with
//! `updates.getDifference` for gaps and `messages.receivedQueue` for acknowledgements, re-keys
//! every 100 messages, retries of failed calls with the same bytes, a new connection when tgsim
//! closes one. Unless `--no-faults` is given, tgsim drops, duplicates, reorders and delays
//! updates, fails a share of calls and closes the client's connection before or after some calls
//! run.
//!
//! ```sh
//! cargo run --release -p tgsim --example offline_chat -- [--messages N] [--no-faults] [--quiet] [--seed N]
//! ```
//!
//! It exits non-zero if either transcript is incomplete, out of order or has duplicates, or if
//! what tgsim relayed is not exactly the bytes the client sent.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grammers_mtproto::mtp::Encrypted;
use grammers_mtproto::transport::Full;
use grammers_mtsender::{InvocationError, Sender, ServerAddr, connect_with_auth};
use grammers_session::updates::UpdatesLike;
use grammers_tl_types::{self as tl, RemoteCall};
use secret_core::chat::{Call, Chat, Event, Output, SendFailure, SendMethod};
use secret_core::dh::DhConfig;
use secret_core::rand::SystemRandom;
use secret_core::tl::TlJson;
use secret_core::tl::enums::DecryptedMessageAction as A;
use secret_core::tl::types as st;
use tglink::ErrorClass;
use tglink::convert::{encrypted_chat_id, incoming_encrypted, remote_chat};
use tgsim::faults::{CallFaults, Faults, InjectedError, UpdateFaults};
use tgsim::instance::{AccountSpec, Options, PeerSpec, Tgsim};
use tgsim::peer::Behaviour;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The client's account.
pub const ALICE: i64 = 1001;
/// The simulated peer.
pub const BOB: i64 = 2002;
const CALL_WAIT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Service actions the client sends (Bob echoes each).
    pub messages: usize,
    /// Whether tgsim injects faults.
    pub faults: bool,
    /// Print every message (else only the summary).
    pub verbose: bool,
    /// Seed of tgsim's faults and peers.
    pub seed: u64,
    /// Where tgsim keeps its state (a fresh temp dir if `None`).
    pub state_dir: Option<PathBuf>,
    /// How long the whole exchange may take.
    pub deadline: Duration,
    /// Whether the client also calls `updates.getDifference` when no update came for 150 ms (as a
    /// client does on a timer); without it, it does so only on a qts gap.
    pub poll_when_idle: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            messages: 150,
            faults: true,
            verbose: true,
            seed: 1,
            state_dir: None,
            deadline: Duration::from_secs(120),
            poll_when_idle: true,
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The chat id.
    pub chat_id: i32,
    /// The actions the client sent, in order.
    pub sent: Vec<A>,
    /// The actions the client received (Bob's echoes), in order.
    pub client_transcript: Vec<A>,
    /// The actions Bob received, in order.
    pub peer_transcript: Vec<A>,
    /// The client's key fingerprint at the end, and Bob's.
    pub fingerprints: (Option<i64>, Option<i64>),
    /// Re-keys seen by the client, and by Bob.
    pub rekeys: (usize, usize),
    /// Messages tgsim relayed in this chat from the client, and how many of them had exactly the
    /// bytes and the method the client sent for that random_id.
    pub relayed_from_client: (usize, usize),
    /// Distinct random_ids among the messages relayed in the chat, and all of them. A random_id
    /// is relayed again when it is sent again (a retry whose answer was lost, a Resend answer):
    /// the receiving chat drops the repeat by its seq numbers.
    pub relayed_ids: (usize, usize),
    /// (sender, random_id) pairs relayed in the chat with more than one byte string or method.
    pub relayed_conflicts: usize,
    /// Relays of the client's random_ids beyond the send calls the client made with them (tgsim
    /// relaying something it was not asked to).
    pub relayed_unasked: usize,
    /// Calls retried after an error, getDifference rounds, updates received.
    pub retries: usize,
    /// `updates.getDifference` calls.
    pub differences: usize,
    /// Times the client's call connection was lost and opened again.
    pub reconnects: usize,
    /// Connections tgsim closed on purpose: before a call ran, and instead of an answer.
    pub closed: (u64, u64),
    /// Encrypted messages the client took from pushed updates, and from getDifference.
    pub messages_pushed: usize,
    /// See `messages_pushed`.
    pub messages_fetched: usize,
    /// Updates fault stats: (pushed, dropped, duplicated, reordered, delayed).
    pub update_faults: (u64, u64, u64, u64, u64),
    /// Calls seen by tgsim, and how many it failed on purpose.
    pub call_faults: (u64, u64),
    /// Wall time of the exchange.
    pub elapsed: Duration,
}

impl Report {
    /// Everything that must hold; the failures, described.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.peer_transcript != self.sent {
            p.push(format!(
                "Bob received {} actions, not the {} sent in order",
                self.peer_transcript.len(),
                self.sent.len()
            ));
        }
        if self.client_transcript != self.sent {
            p.push(format!(
                "the client received {} echoes, not the {} sent in order",
                self.client_transcript.len(),
                self.sent.len()
            ));
        }
        if self.fingerprints.0.is_none() || self.fingerprints.0 != self.fingerprints.1 {
            p.push(format!("key fingerprints differ: {:?}", self.fingerprints));
        }
        if self.relayed_from_client.0 != self.relayed_from_client.1 {
            p.push(format!(
                "{} of {} relayed messages were not the client's bytes",
                self.relayed_from_client.0 - self.relayed_from_client.1,
                self.relayed_from_client.0
            ));
        }
        if self.relayed_conflicts > 0 {
            p.push(format!(
                "{} random_ids were relayed with more than one byte string or method",
                self.relayed_conflicts
            ));
        }
        if self.relayed_unasked > 0 {
            p.push(format!(
                "tgsim relayed the client's messages {} times more than the client sent them",
                self.relayed_unasked
            ));
        }
        p
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn short_hex(b: &[u8]) -> String {
    let mut s = String::new();
    for x in b.iter().take(16) {
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > 16 {
        s.push('…');
    }
    s
}

/// The application service actions, in turn.
fn action(i: usize, recent: &[i64]) -> A {
    let ids = || recent.iter().rev().take(2).copied().collect::<Vec<_>>();
    match i % 6 {
        0 => A::SetMessageTTL(st::DecryptedMessageActionSetMessageTTL {
            ttl_seconds: i32::try_from(i).unwrap_or(i32::MAX),
        }),
        1 => A::Typing(st::DecryptedMessageActionTyping {
            action: secret_core::tl::enums::SendMessageAction::SendMessageTypingAction(
                st::SendMessageTypingAction {},
            ),
        }),
        2 => A::ReadMessages(st::DecryptedMessageActionReadMessages { random_ids: ids() }),
        3 => A::ScreenshotMessages(st::DecryptedMessageActionScreenshotMessages {
            random_ids: ids(),
        }),
        4 => A::DeleteMessages(st::DecryptedMessageActionDeleteMessages { random_ids: ids() }),
        _ => A::FlushHistory(st::DecryptedMessageActionFlushHistory {}),
    }
}

/// The client: one connection for calls, one whose updates come through a channel (grammers'
/// `Sender::invoke` drops the updates that arrive while it waits; tgsim pushes every update to
/// every session of the account).
struct Client {
    addr: SocketAddr,
    key: [u8; 256],
    calls: Sender<Full, Encrypted>,
    reconnects: usize,
    updates: mpsc::UnboundedReceiver<Vec<UpdatesLike>>,
    listener: tokio::task::JoinHandle<()>,
    pts: i32,
    qts: i32,
    acked_qts: i32,
    chat: Option<Chat>,
    transcript: Vec<A>,
    rekeys: usize,
    sent_bytes: BTreeMap<i64, (bool, Vec<u8>)>,
    /// Send calls made with each random_id (every attempt, retries included).
    send_attempts: BTreeMap<i64, usize>,
    /// Calls invoked (every attempt).
    attempts: usize,
    retries: usize,
    differences: usize,
    pushed: usize,
    fetched: usize,
    rng: SystemRandom,
    verbose: bool,
    printed: usize,
}

/// A new connection with the key, initialised like grammers' first request (invokeWithLayer,
/// initConnection, help.getConfig).
async fn open(addr: SocketAddr, key: [u8; 256]) -> Result<Sender<Full, Encrypted>, String> {
    let mut s = timeout(
        CALL_WAIT,
        connect_with_auth(Full::new(), ServerAddr::Tcp { address: addr }, key),
    )
    .await
    .map_err(|_| "connect: timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;
    let init = tl::functions::InvokeWithLayer {
        layer: tl::LAYER,
        query: tl::functions::InitConnection {
            api_id: 1,
            device_model: "tgsecretd demo".into(),
            system_version: "linux".into(),
            app_version: env!("CARGO_PKG_VERSION").into(),
            system_lang_code: "en".into(),
            lang_pack: String::new(),
            lang_code: "en".into(),
            proxy: None,
            params: None,
            query: tl::functions::help::GetConfig {},
        },
    };
    timeout(CALL_WAIT, s.invoke(&init))
        .await
        .map_err(|_| "initConnection: timed out".to_owned())?
        .map_err(|e| format!("initConnection: {e}"))?;
    Ok(s)
}

impl Drop for Client {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A call that did not succeed: its class by the shared rules ([`tglink::errors`]) and its
/// Telegram name.
#[derive(Debug)]
struct CallFailure {
    class: ErrorClass,
    name: String,
    text: String,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}): {}", self.name, self.class, self.text)
    }
}

impl From<CallFailure> for String {
    fn from(f: CallFailure) -> String {
        f.to_string()
    }
}

/// Attempts of one call before it is left for the next catch-up (a send stays unsent and goes
/// again with the same bytes). Waits the server asks for are always waited out.
const MAX_ATTEMPTS: usize = 8;

impl Client {
    async fn connect(addr: SocketAddr, key: [u8; 256], verbose: bool) -> Result<Client, String> {
        let calls = open(addr, key).await?;
        let mut listener = open(addr, key).await?;
        let (tx, updates) = mpsc::unbounded_channel();
        let listener = tokio::spawn(async move {
            loop {
                match listener.step().await {
                    Ok(u) if u.is_empty() => {}
                    Ok(u) => {
                        if tx.send(u).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("update connection closed: {e}");
                        return;
                    }
                }
            }
        });
        let mut client = Client {
            addr,
            key,
            calls,
            reconnects: 0,
            updates,
            listener,
            pts: 0,
            qts: 0,
            acked_qts: 0,
            chat: None,
            transcript: Vec::new(),
            rekeys: 0,
            sent_bytes: BTreeMap::new(),
            send_attempts: BTreeMap::new(),
            attempts: 0,
            retries: 0,
            differences: 0,
            pushed: 0,
            fetched: 0,
            rng: SystemRandom::new(),
            verbose,
            printed: 0,
        };
        let tl::enums::updates::State::State(state) =
            client.call(&tl::functions::updates::GetState {}).await?;
        client.pts = state.pts;
        client.qts = state.qts;
        client.acked_qts = state.qts;
        Ok(client)
    }

    /// Invokes with retries (same request bytes) by the shared classification: a FLOOD_WAIT is
    /// waited out, a lost connection or a transient error is retried (over a new connection),
    /// anything else is final for this call.
    async fn call<R: RemoteCall>(&mut self, request: &R) -> Result<R::Return, CallFailure> {
        let mut last = CallFailure {
            class: ErrorClass::RetryNow,
            name: "TIMEOUT".into(),
            text: "no attempt".into(),
        };
        for _ in 0..MAX_ATTEMPTS {
            self.attempts += 1;
            let e = match timeout(CALL_WAIT, self.calls.invoke(request)).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => e,
                Err(_) => InvocationError::Dropped("call timed out"),
            };
            last = CallFailure {
                class: tglink::classify(&e),
                name: tglink::errors::error_name(&e),
                text: e.to_string(),
            };
            match last.class {
                ErrorClass::RetryAfter(wait) => tokio::time::sleep(wait).await,
                ErrorClass::RetryNow if matches!(e, InvocationError::Rpc(_)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                ErrorClass::RetryNow => {
                    // The connection is gone and the call may or may not have run: connect
                    // again and send the same request (same random_id, same bytes).
                    self.reconnects += 1;
                    match open(self.addr, self.key).await {
                        Ok(c) => self.calls = c,
                        Err(e) => last.text = e,
                    }
                }
                _ => return Err(last),
            }
            self.retries += 1;
        }
        Err(last)
    }

    fn input_chat(&self) -> Option<tl::enums::InputEncryptedChat> {
        let chat = self.chat.as_ref()?;
        Some(tl::enums::InputEncryptedChat::Chat(
            tl::types::InputEncryptedChat {
                chat_id: chat.id(),
                access_hash: chat.state().auth().access_hash(),
            },
        ))
    }

    async fn dh_config(&mut self) -> Result<(DhConfig, Vec<u8>), String> {
        let r = self
            .call(&tl::functions::messages::GetDhConfig {
                version: 0,
                random_length: 256,
            })
            .await?;
        let tl::enums::messages::DhConfig::Config(c) = r else {
            return Err("dhConfigNotModified for version 0".into());
        };
        let dh = DhConfig::validate(c.g, &c.p, c.version).map_err(|e| e.to_string())?;
        Ok((dh, c.random))
    }

    async fn request_chat(&mut self, user_id: i64) -> Result<i32, String> {
        let (dh, random) = self.dh_config().await?;
        let chat_id = secret_core::chat::random_chat_id(&mut self.rng);
        let now = now_s();
        let (mut chat, req, out) =
            Chat::request(chat_id, ALICE, user_id, dh, &random, now, &mut self.rng)
                .map_err(|e| e.to_string())?;
        let answer = self
            .call(&tl::functions::messages::RequestEncryption {
                user_id: tl::enums::InputUser::User(tl::types::InputUser {
                    user_id,
                    access_hash: 0,
                }),
                random_id: req.random_id,
                g_a: req.g_a,
            })
            .await?;
        // The server's chat id is the one that counts.
        let server_id = encrypted_chat_id(&answer);
        if server_id != chat_id {
            return Err(format!("tgsim answered chat {server_id}, not {chat_id}"));
        }
        let more = remote_chat(&answer)
            .map(|r| chat.on_remote_update(&r, now, &mut self.rng))
            .unwrap_or_default();
        self.chat = Some(chat);
        self.perform(out).await?;
        self.perform(more).await?;
        Ok(chat_id)
    }

    /// Does what an output says: the calls (with their results fed back), the events.
    async fn perform(&mut self, out: Output) -> Result<(), String> {
        let mut work = std::collections::VecDeque::from([out]);
        while let Some(out) = work.pop_front() {
            for e in out.events {
                match e {
                    Event::Action { action, .. } => {
                        if self.verbose {
                            println!("  ← Bob: {}", action.to_json());
                        }
                        self.transcript.push(action);
                    }
                    Event::Ready {
                        key_fingerprint,
                        visualization,
                    } => {
                        println!(
                            "chat ready: key fingerprint {:016x}, visualization {}",
                            key_fingerprint.to_i64(),
                            hex::encode(visualization)
                        );
                    }
                    Event::KeyChanged(fp) => {
                        self.rekeys += 1;
                        println!(
                            "re-key #{}: new key fingerprint {:016x}",
                            self.rekeys,
                            fp.to_i64()
                        );
                    }
                    Event::StatusChanged(s) if self.verbose => println!("chat status: {s:?}"),
                    _ => {}
                }
            }
            let Some(input) = self.input_chat() else {
                continue;
            };
            for call in out.calls {
                let next = match call {
                    Call::Send(t) => {
                        self.sent_bytes.insert(
                            t.random_id,
                            (t.method == SendMethod::SendEncryptedService, t.data.clone()),
                        );
                        if self.verbose && self.printed < 3 {
                            self.printed += 1;
                            println!(
                                "  → {:?} random_id {} out_seq_no {}: {} bytes {}",
                                t.method,
                                t.random_id,
                                t.out_seq_no,
                                t.data.len(),
                                short_hex(&t.data)
                            );
                        }
                        let attempts = self.attempts;
                        let r = match t.method {
                            SendMethod::SendEncryptedService => {
                                self.call(&tl::functions::messages::SendEncryptedService {
                                    peer: input.clone(),
                                    random_id: t.random_id,
                                    data: t.data,
                                })
                                .await
                            }
                            SendMethod::SendEncrypted => {
                                self.call(&tl::functions::messages::SendEncrypted {
                                    silent: false,
                                    peer: input.clone(),
                                    random_id: t.random_id,
                                    data: t.data,
                                })
                                .await
                            }
                        };
                        *self.send_attempts.entry(t.random_id).or_default() +=
                            self.attempts - attempts;
                        let Some(chat) = self.chat.as_mut() else {
                            continue;
                        };
                        match r {
                            Ok(tl::enums::messages::SentEncryptedMessage::Message(m)) => {
                                chat.on_sent(t.random_id, m.date)
                            }
                            Ok(tl::enums::messages::SentEncryptedMessage::SentEncryptedFile(m)) => {
                                chat.on_sent(t.random_id, m.date)
                            }
                            // Kept unsent; the next catch-up sends the same bytes again.
                            Err(f) if f.class.is_retry() => {
                                chat.on_send_failed(t.random_id, &SendFailure::Retry)
                            }
                            Err(f) => chat
                                .on_send_failed(t.random_id, &SendFailure::Fatal { error: f.name }),
                        }
                    }
                    Call::AcceptEncryption {
                        g_b,
                        key_fingerprint,
                    } => {
                        let c = self
                            .call(&tl::functions::messages::AcceptEncryption {
                                peer: input.clone(),
                                g_b,
                                key_fingerprint,
                            })
                            .await?;
                        let now = now_s();
                        match (remote_chat(&c), self.chat.as_mut()) {
                            (Some(r), Some(chat)) => chat.on_remote_update(&r, now, &mut self.rng),
                            _ => Output::default(),
                        }
                    }
                    Call::DiscardEncryption { delete_history } => {
                        let chat_id = self.chat.as_ref().map_or(0, Chat::id);
                        self.call(&tl::functions::messages::DiscardEncryption {
                            delete_history,
                            chat_id,
                        })
                        .await?;
                        Output::default()
                    }
                };
                work.push_back(next);
            }
        }
        Ok(())
    }

    async fn on_updates(&mut self, batch: Vec<UpdatesLike>) -> Result<(), String> {
        for u in batch {
            let list = match u {
                UpdatesLike::Updates(tl::enums::Updates::UpdateShort(s)) => vec![s.update],
                UpdatesLike::Updates(tl::enums::Updates::Updates(u)) => u.updates,
                UpdatesLike::Updates(tl::enums::Updates::Combined(u)) => u.updates,
                _ => continue,
            };
            for update in list {
                match update {
                    tl::enums::Update::NewEncryptedMessage(m) => {
                        if m.qts <= self.qts {
                            continue; // a duplicate, or fetched already
                        }
                        if m.qts > self.qts + 1 {
                            self.catch_up().await?; // a gap: the queue has it all
                            continue;
                        }
                        self.pushed += 1;
                        self.deliver(&m.message).await?;
                        self.qts = m.qts;
                    }
                    tl::enums::Update::Encryption(e) => self.on_chat(&e.chat).await?,
                    _ => {}
                }
            }
        }
        if self.qts - self.acked_qts >= 20 {
            self.ack().await?;
        }
        Ok(())
    }

    async fn on_chat(&mut self, c: &tl::enums::EncryptedChat) -> Result<(), String> {
        let now = now_s();
        let out = match (self.chat.as_mut(), remote_chat(c)) {
            (Some(chat), Some(r)) if chat.id() == encrypted_chat_id(c) => {
                chat.on_remote_update(&r, now, &mut self.rng)
            }
            _ => return Ok(()),
        };
        self.perform(out).await
    }

    async fn deliver(&mut self, m: &tl::enums::EncryptedMessage) -> Result<(), String> {
        let (chat_id, incoming) = incoming_encrypted(m);
        let now = now_s();
        let out = match self.chat.as_mut() {
            Some(chat) if chat.id() == chat_id => match chat.receive(&incoming, now, &mut self.rng)
            {
                Ok(out) => out,
                Err(e) => {
                    if self.verbose {
                        println!("  (dropped an incoming message: {e})");
                    }
                    return Ok(());
                }
            },
            _ => return Ok(()),
        };
        self.perform(out).await
    }

    async fn ack(&mut self) -> Result<(), String> {
        let max_qts = self.qts;
        self.call(&tl::functions::messages::ReceivedQueue { max_qts })
            .await?;
        self.acked_qts = self.acked_qts.max(max_qts);
        Ok(())
    }

    /// What a reconnecting client does: getDifference from its pts / qts, receivedQueue, the
    /// chat's timers and its unsent messages (same bytes).
    async fn catch_up(&mut self) -> Result<(), String> {
        for _ in 0..100 {
            self.differences += 1;
            let d = self
                .call(&tl::functions::updates::GetDifference {
                    pts: self.pts,
                    pts_limit: None,
                    pts_total_limit: None,
                    date: i32::try_from(now_s()).unwrap_or(i32::MAX),
                    qts: self.qts,
                    qts_limit: None,
                })
                .await?;
            let (others, messages, state, more) = match d {
                tl::enums::updates::Difference::Empty(_)
                | tl::enums::updates::Difference::TooLong(_) => break,
                tl::enums::updates::Difference::Difference(d) => {
                    (d.other_updates, d.new_encrypted_messages, d.state, false)
                }
                tl::enums::updates::Difference::Slice(s) => (
                    s.other_updates,
                    s.new_encrypted_messages,
                    s.intermediate_state,
                    true,
                ),
            };
            for u in &others {
                if let tl::enums::Update::Encryption(e) = u {
                    self.on_chat(&e.chat).await?;
                }
            }
            for m in &messages {
                self.fetched += 1;
                self.deliver(m).await?;
            }
            let tl::enums::updates::State::State(st) = state;
            // getDifference acknowledges the qts it was given.
            self.acked_qts = self.acked_qts.max(self.qts);
            self.pts = self.pts.max(st.pts);
            self.qts = self.qts.max(st.qts);
            if !more {
                break;
            }
        }
        if self.qts > self.acked_qts {
            self.ack().await?;
        }
        let now = now_s();
        let Some(chat) = self.chat.as_mut() else {
            return Ok(());
        };
        let mut out = Output {
            calls: chat.unsent().into_iter().map(Call::Send).collect(),
            ..Default::default()
        };
        let tick = chat.tick(now, &mut self.rng);
        out.events.extend(tick.events);
        out.calls.extend(tick.calls);
        self.perform(out).await
    }

    /// Handles updates until `done` holds or `deadline` passes; catches up after 150 ms with no
    /// update.
    async fn run_until(
        &mut self,
        deadline: Instant,
        poll_when_idle: bool,
        mut done: impl FnMut(&Client) -> bool,
    ) -> Result<(), String> {
        while !done(self) {
            if Instant::now() >= deadline {
                return Err("deadline passed".into());
            }
            match timeout(Duration::from_millis(150), self.updates.recv()).await {
                Ok(Some(batch)) => self.on_updates(batch).await?,
                Ok(None) => return Err("the update connection closed".into()),
                Err(_) if poll_when_idle => self.catch_up().await?,
                Err(_) => {}
            }
        }
        Ok(())
    }
}

fn demo_faults(seed: u64) -> Faults {
    Faults {
        seed,
        updates: UpdateFaults {
            drop: 100,
            duplicate: 100,
            reorder: 100,
            delay: 50,
            delay_ms: 20,
        },
        calls: CallFaults {
            fail: 60,
            methods: Vec::new(),
            errors: vec![
                InjectedError::new(500, "INTERNAL"),
                InjectedError::new(400, "MSG_WAIT_FAILED"),
                InjectedError::new(420, "FLOOD_WAIT_1"),
            ],
            close_before: 40,
            close_after: 40,
        },
        ..Faults::default()
    }
}

/// Starts tgsim with Bob as an echoing peer, runs the client, and reports. A state dir of its
/// own is removed afterwards.
pub async fn run(opts: &DemoOptions) -> Result<Report, String> {
    let Some(dir) = &opts.state_dir else {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("tgsim-demo-{}-{nanos}", std::process::id()));
        let r = run_in(opts, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        return r;
    };
    run_in(opts, dir).await
}

async fn run_in(opts: &DemoOptions, state_dir: &std::path::Path) -> Result<Report, String> {
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let mut tg_opts = Options::new(state_dir);
    tg_opts.accounts.push(AccountSpec {
        id: ALICE,
        phone: "9996611001".into(),
        first_name: "Alice".into(),
    });
    tg_opts.peers.push(PeerSpec {
        account: AccountSpec {
            id: BOB,
            phone: "9996622002".into(),
            first_name: "Bob".into(),
        },
        behaviour: Behaviour::Echo,
    });
    tg_opts.seed = opts.seed;
    // Unix socket paths are limited to 108 bytes; a deep TMPDIR must not break the demo.
    tg_opts.admin_socket = Some(PathBuf::from(format!(
        "/tmp/tgsim-demo-{}-{}.sock",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    )));
    tg_opts.peer_poll = Duration::from_millis(200);
    if opts.faults {
        tg_opts.faults = demo_faults(opts.seed);
    }
    let tgsim = Tgsim::start(tg_opts).await.map_err(|e| e.to_string())?;
    let key = tgsim.provision_key(ALICE)?;
    let key_bytes = key.key_bytes().map_err(|e| e.to_string())?;
    println!(
        "tgsim on {} (state in {}); Alice logs in with auth key id {:016x}",
        tgsim.local_addr(),
        state_dir.display(),
        key.auth_key_id
    );
    if opts.faults {
        println!(
            "faults on: 10% of updates dropped, 10% duplicated, 10% reordered, 5% delayed; 6% of calls fail, 4% lose the connection before the call runs, 4% after it ran"
        );
    }

    let mut client = Client::connect(tgsim.local_addr(), key_bytes, opts.verbose).await?;
    let chat_id = client.request_chat(BOB).await?;
    println!("Alice asked Bob for secret chat {chat_id}");
    client
        .run_until(deadline, opts.poll_when_idle, |c| {
            c.chat
                .as_ref()
                .is_some_and(|c| c.key_fingerprint().is_some())
        })
        .await?;

    let mut sent = Vec::new();
    let mut recent: Vec<i64> = Vec::new();
    for i in 0..opts.messages {
        let a = action(i, &recent);
        if opts.verbose {
            println!("  → Alice: {}", a.to_json());
        }
        let now = now_s();
        let chat = client.chat.as_mut().ok_or("no chat")?;
        let s = chat
            .send_action(a.clone(), now, &mut client.rng)
            .map_err(|e| e.to_string())?;
        recent.push(s.random_id);
        sent.push(a);
        client.perform(s.output).await?;
        // Take what arrived meanwhile.
        while let Ok(batch) = client.updates.try_recv() {
            client.on_updates(batch).await?;
        }
    }
    let want = sent.len();
    let peers = tgsim.simulation().peers.clone();
    client
        .run_until(deadline, opts.poll_when_idle, |c| {
            c.transcript.len() >= want && peers.transcript(BOB, chat_id).len() >= want
        })
        .await?;
    // Let late duplicates arrive before the transcripts are compared.
    let settle = Instant::now() + Duration::from_millis(300);
    client
        .run_until(settle, opts.poll_when_idle, |_| false)
        .await
        .ok();

    let peer_info = peers.chat_info(BOB, chat_id);
    let relayed: Vec<_> = tgsim
        .model()
        .relayed()
        .into_iter()
        .filter(|r| r.chat_id == chat_id)
        .collect();
    let from_client: Vec<_> = relayed.iter().filter(|r| r.sender == ALICE).collect();
    let same = from_client
        .iter()
        .filter(|r| {
            client
                .sent_bytes
                .get(&r.random_id)
                .is_some_and(|(service, data)| *service == r.service && *data == r.data)
        })
        .count();
    let mut ids: Vec<i64> = relayed.iter().map(|r| r.random_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Each (sender, random_id) carries one byte string and one method, however often it is
    // relayed; the client's are relayed at most once per send call.
    let forms: BTreeSet<(i64, i64, bool, &[u8])> = relayed
        .iter()
        .map(|r| (r.sender, r.random_id, r.service, &r.data[..]))
        .collect();
    let mut forms_of: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    for (sender, random_id, _, _) in &forms {
        *forms_of.entry((*sender, *random_id)).or_default() += 1;
    }
    let conflicts = forms_of.values().filter(|&&n| n > 1).count();
    let mut relays_of: BTreeMap<i64, usize> = BTreeMap::new();
    for r in relayed.iter().filter(|r| r.sender == ALICE) {
        *relays_of.entry(r.random_id).or_default() += 1;
    }
    let unasked = relays_of
        .iter()
        .map(|(id, n)| n.saturating_sub(client.send_attempts.get(id).copied().unwrap_or(0)))
        .sum();
    let s = tgsim.simulation().sink.stats();
    let (calls, failed) = tgsim.simulation().handler.stats();
    Ok(Report {
        chat_id,
        client_transcript: client.transcript.clone(),
        peer_transcript: peers.transcript(BOB, chat_id),
        sent,
        fingerprints: (
            client
                .chat
                .as_ref()
                .and_then(Chat::key_fingerprint)
                .map(|f| f.to_i64()),
            peer_info
                .as_ref()
                .and_then(|i| i.key_fingerprint)
                .map(|f| f.to_i64()),
        ),
        rekeys: (client.rekeys, peer_info.map_or(0, |i| i.rekeys)),
        relayed_from_client: (from_client.len(), same),
        relayed_ids: (ids.len(), relayed.len()),
        relayed_conflicts: conflicts,
        relayed_unasked: unasked,
        retries: client.retries,
        differences: client.differences,
        messages_pushed: client.pushed,
        reconnects: client.reconnects,
        closed: tgsim.simulation().handler.closed(),
        messages_fetched: client.fetched,
        update_faults: (s.pushed, s.dropped, s.duplicated, s.reordered, s.delayed),
        call_faults: (calls, failed),
        elapsed: started.elapsed(),
    })
}

#[allow(dead_code)] // the tests include this file for `run`
fn main() -> std::process::ExitCode {
    let mut opts = DemoOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => opts.messages = n,
                None => {
                    eprintln!("--messages takes a number");
                    return std::process::ExitCode::from(2);
                }
            },
            "--no-faults" => opts.faults = false,
            "--quiet" => opts.verbose = false,
            "--seed" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => opts.seed = n,
                None => {
                    eprintln!("--seed takes a number");
                    return std::process::ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!(
                    "offline_chat [--messages N] [--no-faults] [--quiet] [--seed N]\n\
                     A grammers MTProto client holds a secret chat with an echoing simulated \
                     peer through an in-process tgsim."
                );
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?} (see --help)");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let report = match rt.block_on(run(&opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo failed: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!();
    println!(
        "sent {} service actions; Bob received {}, the client received {} echoes",
        report.sent.len(),
        report.peer_transcript.len(),
        report.client_transcript.len()
    );
    println!(
        "re-keys: client {}, Bob {}; key fingerprints {:016x?} / {:016x?}",
        report.rekeys.0, report.rekeys.1, report.fingerprints.0, report.fingerprints.1
    );
    println!(
        "tgsim relayed {} messages in the chat ({} distinct random_ids, the rest sent again: retries and Resend answers); {} from the client, {} byte-identical to what it sent",
        report.relayed_ids.1,
        report.relayed_ids.0,
        report.relayed_from_client.0,
        report.relayed_from_client.1
    );
    let (pushed, dropped, dup, reord, delayed) = report.update_faults;
    println!(
        "faults: {pushed} updates pushed, {dropped} dropped, {dup} duplicated, {reord} reordered, {delayed} delayed; {} of {} calls failed on purpose; client retried {} calls, ran getDifference {} times",
        report.call_faults.1, report.call_faults.0, report.retries, report.differences
    );
    println!(
        "tgsim closed the client's connection {} times before a call ran and {} times instead of an answer; the client reconnected {} times",
        report.closed.0, report.closed.1, report.reconnects
    );
    println!(
        "the client took {} encrypted messages from pushed updates and {} from getDifference",
        report.messages_pushed, report.messages_fetched
    );
    println!("took {:.1} s", report.elapsed.as_secs_f64());
    let problems = report.problems();
    if problems.is_empty() {
        println!("OK: both transcripts complete, in order, no duplicates");
        std::process::ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        std::process::ExitCode::from(1)
    }
}
