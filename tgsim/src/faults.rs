//! Fault injection: wrappers around an [`UpdateSink`] and an [`ApiHandler`] that misbehave on
//! purpose, deterministically (seeded [`SeededRandom`]), configured by a [`Faults`] value that can
//! be replaced at run time.
//!
//! - [`FaultySink`] drops, duplicates, reorders and delays pushed updates, per account and per
//!   chat id (taken from `updateNewEncryptedMessage` / `updateEncryption` / the read and typing
//!   updates).
//! - [`FaultyHandler`] fails a share of calls (all methods, or some constructors) with chosen
//!   errors (`420 FLOOD_WAIT_X`, `400 MSG_WAIT_FAILED`, `500 INTERNAL`...) **before** the inner
//!   handler runs, so the world is unchanged and the client may retry with the same bytes.
//!
//! **Dropping a pushed update is safe** in Telegram's model: an encrypted message stays in the
//! recipient's qts queue (and a chat event in its pts queue) until acknowledged with
//! `messages.receivedQueue` or by the qts/pts passed to `updates.getDifference`. Pushes are only a
//! hint; a client that sees a qts gap, reconnects or polls recovers everything with
//! `updates.getDifference`. Duplicates are recognized by their qts, reordering by a qts gap.
//!
//! Probabilities are per mille (0..=1000). Decisions draw from one seeded generator per wrapper,
//! so a run is reproducible as long as the pushes / calls arrive in the same order.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use grammers_tl_types::{Deserializable, enums};
use secret_core::rand::{SecureRandom, SeededRandom};
use serde::{Deserialize, Serialize};

use crate::api::{ApiHandler, CallContext, RpcError, UpdateSink};
use crate::session::AccountId;

/// Faults on pushed updates. Probabilities per mille, drawn in this order: drop, duplicate,
/// reorder, delay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateFaults {
    /// Share of updates not delivered at all.
    pub drop: u16,
    /// Share of updates delivered twice.
    pub duplicate: u16,
    /// Share of updates held back and delivered after the next update for the same account (or
    /// after `delay_ms` if none comes).
    pub reorder: u16,
    /// Share of updates delivered after `delay_ms`.
    pub delay: u16,
    /// Delay of delayed updates, and longest hold of a reordered one (milliseconds).
    pub delay_ms: u64,
}

/// An error to inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedError {
    /// The error code.
    pub code: i32,
    /// The error name.
    pub message: String,
}

impl InjectedError {
    /// An error.
    pub fn new(code: i32, message: &str) -> Self {
        InjectedError {
            code,
            message: message.to_owned(),
        }
    }
}

/// Faults on API calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallFaults {
    /// Share of calls failed (per mille).
    pub fail: u16,
    /// Constructor ids of the methods affected; empty means all.
    pub methods: Vec<u32>,
    /// The errors, one chosen uniformly per failure; empty means `500 INTERNAL`.
    pub errors: Vec<InjectedError>,
    /// Share of calls (per mille, same `methods`) after which the caller's connection is closed
    /// **before** the call runs: nothing changed, no answer. Only for callers with a connection
    /// (not simulated peers).
    pub close_before: u16,
    /// Share of calls (per mille, same `methods`) that run — their effects stay — after which the
    /// caller's connection is closed **instead of answering**: the client cannot know the outcome
    /// and must retry: a send with the same random_id is relayed again and answered with the
    /// first date (the receiving chat drops the repeat); a repeated `acceptEncryption` answers
    /// `ENCRYPTION_ALREADY_ACCEPTED` (the acceptor's update queue holds its acceptance).
    pub close_after: u16,
}

/// The whole fault configuration. Per-account (and, for updates, per-chat) entries replace the
/// defaults; a per-chat entry wins over a per-account one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Seed of the decisions (used when the wrapper is created or the config is replaced).
    pub seed: u64,
    /// Update faults for every account without an entry below.
    pub updates: UpdateFaults,
    /// Update faults by recipient account.
    pub account_updates: BTreeMap<AccountId, UpdateFaults>,
    /// Update faults by secret chat id.
    pub chat_updates: BTreeMap<i32, UpdateFaults>,
    /// Call faults for every account without an entry below.
    pub calls: CallFaults,
    /// Call faults by calling account.
    pub account_calls: BTreeMap<AccountId, CallFaults>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Faults {
        Faults::default()
    }

    fn updates_for(&self, account: AccountId, chat: Option<i32>) -> &UpdateFaults {
        chat.and_then(|c| self.chat_updates.get(&c))
            .or_else(|| self.account_updates.get(&account))
            .unwrap_or(&self.updates)
    }

    fn calls_for(&self, account: AccountId) -> &CallFaults {
        self.account_calls.get(&account).unwrap_or(&self.calls)
    }
}

fn hit(rng: &mut SeededRandom, per_mille: u16) -> bool {
    per_mille > 0 && rng.below(1000) < u64::from(per_mille.min(1000))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The secret chat an update is about, if any.
pub fn update_chat_id(updates: &[u8]) -> Option<i32> {
    let one = |u: &enums::Update| match u {
        enums::Update::NewEncryptedMessage(m) => Some(match &m.message {
            enums::EncryptedMessage::Message(m) => m.chat_id,
            enums::EncryptedMessage::Service(m) => m.chat_id,
        }),
        enums::Update::Encryption(e) => Some(match &e.chat {
            enums::EncryptedChat::Empty(c) => c.id,
            enums::EncryptedChat::Waiting(c) => c.id,
            enums::EncryptedChat::Requested(c) => c.id,
            enums::EncryptedChat::Chat(c) => c.id,
            enums::EncryptedChat::Discarded(c) => c.id,
        }),
        enums::Update::EncryptedMessagesRead(r) => Some(r.chat_id),
        enums::Update::EncryptedChatTyping(t) => Some(t.chat_id),
        _ => None,
    };
    match enums::Updates::from_bytes(updates).ok()? {
        enums::Updates::Updates(u) => u.updates.iter().find_map(one),
        enums::Updates::UpdateShort(u) => one(&u.update),
        _ => None,
    }
}

/// Counters of what a [`FaultySink`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Updates pushed to the wrapper.
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

struct Timed {
    due: Instant,
    seq: u64,
    account: AccountId,
    bytes: Vec<u8>,
    /// Some(hold id) for a reordered update (delivered only if still held).
    hold: Option<u64>,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

struct SinkState {
    faults: Faults,
    rng: SeededRandom,
    stats: SinkStats,
    timers: BinaryHeap<Timed>,
    /// Reordered updates held per account: (hold id, bytes).
    held: BTreeMap<AccountId, (u64, Vec<u8>)>,
    seq: u64,
    stop: bool,
}

struct SinkShared {
    inner: Arc<dyn UpdateSink>,
    state: Mutex<SinkState>,
    wake: Condvar,
    /// Updates accepted but not yet handed to the inner sink (held or timed).
    pending: AtomicUsize,
}

/// An [`UpdateSink`] that drops, duplicates, reorders and delays updates before handing them to
/// the inner sink. Delayed updates are delivered by a timer thread (stopped when the sink is
/// dropped).
pub struct FaultySink {
    shared: Arc<SinkShared>,
    timer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for FaultySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultySink").finish_non_exhaustive()
    }
}

impl FaultySink {
    /// Wraps `inner` with the given faults.
    pub fn new(inner: Arc<dyn UpdateSink>, faults: Faults) -> FaultySink {
        let shared = Arc::new(SinkShared {
            inner,
            state: Mutex::new(SinkState {
                rng: SeededRandom::new(faults.seed),
                faults,
                stats: SinkStats::default(),
                timers: BinaryHeap::new(),
                held: BTreeMap::new(),
                seq: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            pending: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let timer = thread::Builder::new()
            .name("tgsim-faulty-sink".into())
            .spawn(move || timer_loop(&s))
            .ok();
        FaultySink {
            shared,
            timer: Mutex::new(timer),
        }
    }

    /// Replaces the configuration (and reseeds with its seed).
    pub fn set_faults(&self, faults: Faults) {
        let mut st = lock(&self.shared.state);
        st.rng = SeededRandom::new(faults.seed);
        st.faults = faults;
    }

    /// The current configuration.
    pub fn faults(&self) -> Faults {
        lock(&self.shared.state).faults.clone()
    }

    /// What was done so far.
    pub fn stats(&self) -> SinkStats {
        lock(&self.shared.state).stats
    }

    /// True if no update is held or waiting for its delay.
    pub fn idle(&self) -> bool {
        self.shared.pending.load(Ordering::SeqCst) == 0
    }

    /// Delivers every held and delayed update now.
    pub fn flush(&self) {
        let out: Vec<(AccountId, Vec<u8>)> = {
            let mut st = lock(&self.shared.state);
            let mut out: Vec<_> = std::mem::take(&mut st.held)
                .into_iter()
                .map(|(a, (_, b))| (a, b))
                .collect();
            let mut timers: Vec<Timed> = std::mem::take(&mut st.timers).into_vec();
            timers.sort_by_key(|t| (t.due, t.seq));
            out.extend(
                timers
                    .into_iter()
                    .filter(|t| t.hold.is_none())
                    .map(|t| (t.account, t.bytes)),
            );
            out
        };
        self.shared.pending.store(0, Ordering::SeqCst);
        for (a, b) in out {
            self.shared.inner.push(a, b);
        }
    }
}

impl Drop for FaultySink {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = lock(&self.timer).take() {
            let _ = t.join();
        }
    }
}

fn timer_loop(shared: &SinkShared) {
    let mut st = lock(&shared.state);
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while st.timers.peek().is_some_and(|t| t.due <= now) {
            if let Some(t) = st.timers.pop() {
                match t.hold {
                    None => due.push((t.account, t.bytes)),
                    Some(id) => {
                        // Still held (no later update released it): deliver it now.
                        if st.held.get(&t.account).is_some_and(|(h, _)| *h == id)
                            && let Some((_, b)) = st.held.remove(&t.account)
                        {
                            due.push((t.account, b));
                        }
                    }
                }
            }
        }
        let wait = st.timers.peek().map_or(Duration::from_millis(100), |t| {
            t.due.saturating_duration_since(now)
        });
        if !due.is_empty() {
            drop(st);
            for (a, b) in due {
                shared.inner.push(a, b);
                shared.pending.fetch_sub(1, Ordering::SeqCst);
            }
            st = lock(&shared.state);
            continue;
        }
        st = shared
            .wake
            .wait_timeout(st, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

impl UpdateSink for FaultySink {
    fn push(&self, account: AccountId, updates: Vec<u8>) {
        let chat = update_chat_id(&updates);
        let mut out = Vec::new();
        {
            let mut st = lock(&self.shared.state);
            let st = &mut *st;
            st.stats.pushed += 1;
            let f = st.faults.updates_for(account, chat).clone();
            // A held (reordered) update goes right after this one.
            let released = st.held.remove(&account);
            if hit(&mut st.rng, f.drop) {
                st.stats.dropped += 1;
            } else {
                let copies = if hit(&mut st.rng, f.duplicate) {
                    st.stats.duplicated += 1;
                    2
                } else {
                    1
                };
                if released.is_none() && hit(&mut st.rng, f.reorder) {
                    st.stats.reordered += 1;
                    st.seq += 1;
                    let id = st.seq;
                    st.held.insert(account, (id, updates.clone()));
                    self.shared.pending.fetch_add(1, Ordering::SeqCst);
                    st.timers.push(Timed {
                        due: Instant::now() + Duration::from_millis(f.delay_ms.max(1)),
                        seq: id,
                        account,
                        bytes: Vec::new(),
                        hold: Some(id),
                    });
                    if copies == 2 {
                        out.push(updates);
                    }
                } else if hit(&mut st.rng, f.delay) {
                    st.stats.delayed += 1;
                    for _ in 0..copies {
                        st.seq += 1;
                        self.shared.pending.fetch_add(1, Ordering::SeqCst);
                        st.timers.push(Timed {
                            due: Instant::now() + Duration::from_millis(f.delay_ms),
                            seq: st.seq,
                            account,
                            bytes: updates.clone(),
                            hold: None,
                        });
                    }
                } else {
                    for _ in 0..copies {
                        out.push(updates.clone());
                    }
                }
            }
            if let Some((_, b)) = released {
                out.push(b);
                self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.shared.wake.notify_all();
        for b in out {
            self.shared.inner.push(account, b);
        }
    }
}

/// Counters of a [`FaultyHandler`].
#[derive(Debug, Default)]
pub struct HandlerStats {
    /// Calls seen.
    pub calls: AtomicU64,
    /// Calls failed on purpose.
    pub failed: AtomicU64,
    /// Connections closed before a call ran.
    pub closed_before: AtomicU64,
    /// Connections closed after a call ran, instead of its answer.
    pub closed_after: AtomicU64,
}

/// An [`ApiHandler`] that fails a share of calls before the inner handler sees them.
pub struct FaultyHandler {
    inner: Arc<dyn ApiHandler>,
    state: Mutex<(Faults, SeededRandom)>,
    stats: HandlerStats,
}

impl std::fmt::Debug for FaultyHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyHandler").finish_non_exhaustive()
    }
}

impl FaultyHandler {
    /// Wraps `inner` with the given faults.
    pub fn new(inner: Arc<dyn ApiHandler>, faults: Faults) -> FaultyHandler {
        FaultyHandler {
            inner,
            state: Mutex::new((faults.clone(), SeededRandom::new(faults.seed ^ 0x6361_6c6c))),
            stats: HandlerStats::default(),
        }
    }

    /// Replaces the configuration (and reseeds).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.state) = (faults.clone(), SeededRandom::new(faults.seed ^ 0x6361_6c6c));
    }

    /// The current configuration.
    pub fn faults(&self) -> Faults {
        lock(&self.state).0.clone()
    }

    /// (calls seen, calls failed on purpose).
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.calls.load(Ordering::SeqCst),
            self.stats.failed.load(Ordering::SeqCst),
        )
    }

    /// (connections closed before a call ran, connections closed instead of an answer).
    pub fn closed(&self) -> (u64, u64) {
        (
            self.stats.closed_before.load(Ordering::SeqCst),
            self.stats.closed_after.load(Ordering::SeqCst),
        )
    }
}

impl ApiHandler for FaultyHandler {
    fn call(&self, ctx: &CallContext, constructor: u32, query: &[u8]) -> Result<Vec<u8>, RpcError> {
        self.stats.calls.fetch_add(1, Ordering::SeqCst);
        enum Fault {
            None,
            Fail(RpcError),
            CloseBefore,
            CloseAfter,
        }
        let fault = {
            let mut g = lock(&self.state);
            let (faults, rng) = &mut *g;
            let f = faults.calls_for(ctx.account);
            let networked = ctx.connection.is_some();
            if !(f.methods.is_empty() || f.methods.contains(&constructor)) {
                Fault::None
            } else if networked && hit(rng, f.close_before) {
                Fault::CloseBefore
            } else if hit(rng, f.fail) {
                Fault::Fail(if f.errors.is_empty() {
                    RpcError::new(500, "INTERNAL")
                } else {
                    let e = &f.errors[rng.below(f.errors.len() as u64) as usize];
                    RpcError::new(e.code, e.message.clone())
                })
            } else if networked && hit(rng, f.close_after) {
                Fault::CloseAfter
            } else {
                Fault::None
            }
        };
        match fault {
            Fault::None => self.inner.call(ctx, constructor, query),
            Fault::Fail(e) => {
                self.stats.failed.fetch_add(1, Ordering::SeqCst);
                Err(e)
            }
            Fault::CloseBefore => {
                self.stats.closed_before.fetch_add(1, Ordering::SeqCst);
                Err(RpcError::close_connection())
            }
            Fault::CloseAfter => {
                // The effects stay; only the answer is lost.
                let _ = self.inner.call(ctx, constructor, query);
                self.stats.closed_after.fetch_add(1, Ordering::SeqCst);
                Err(RpcError::close_connection())
            }
        }
    }
}
