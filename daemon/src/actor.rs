//! One actor per secret chat: it owns the chat (secret-core's [`Chat`]), applies every output
//! in the documented order, keeps one request to Telegram in flight, and answers the
//! application.
//!
//! # Order of effects
//!
//! An input (a send, an incoming message, a chat update, a server answer, a tick) is handled at
//! once: the chat computes its output, the actor turns it into one [`Batch`] (the chat's records,
//! request records, inbox events, owed calls, the inbound message it consumed) and queues it with
//! the store. What depends on that batch waits for it in the **commit pipeline**: batches become
//! durable in the order they were queued, and only then, in that order, the caller gets its
//! handle, results and events are announced, and the output's calls join the **call queue**.
//! The call queue performs one call at a time, in order; a server answer is a new input. So:
//!
//! * nothing leaves the process (a call, a handle, a signal) before what it depends on is durable;
//! * the pipeline never waits for Telegram: a send accepted during a long FLOOD_WAIT gets its
//!   handle as soon as it is stored;
//! * one request per chat is in flight, in seq order.
//!
//! # Retries
//!
//! A call is retried with the same request (same random_id and bytes) as long as its error's
//! class says so ([`tglink::ErrorClass`]): after the wait Telegram asked for, or with a backoff
//! (and a forced getDifference) for transient errors and lost connections. A terminal error is
//! an input for the chat: for a message, secret-core closes the chat (a seq slot that can never
//! be delivered is a permanent hole) and every open request of the chat fails with the error's
//! name; `ENCRYPTION_ALREADY_ACCEPTED` on a repeated acceptEncryption means our acceptance
//! stands (the server has it; the `updateEncryption` that confirms it is fetched).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use grammers_tl_types::functions;
use secret_core::chat::{
    Call, Chat, DiscardReason, Event, Output, RemoteChat, SendFailure, SendMethod, Status, Transmit,
};
use secret_core::rand::SystemRandom;
use secret_core::tl::enums::DecryptedMessage;
use tglink::convert::{self, SendRequest};
use tglink::{CallError, ErrorClass};
use tokio::sync::oneshot;

use crate::chatstore::{self, LoadedChat};
use crate::errors_api::ServiceError;
use crate::records::{
    self, ChatMeta, ChatUpdateKind, InboundMessage, PendingCall, RequestPart, RequestRecord,
    RequestStatus,
};
use crate::shared::{ChatView, Shared, now};
use crate::store::{Batch, CommitOutcome, StoreError, Tree, keys};

/// The longest pause between attempts of a transient failure.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first pause.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How long a call waits before it is tried again after the account was logged out (unless a
/// login completes first).
const LOGGED_OUT_PAUSE: Duration = Duration::from_secs(60);
/// An actor with nothing to do stops after this long (the registry starts it again on demand),
/// so memory goes only to active chats.
const IDLE_STOP: Duration = Duration::from_secs(600);

/// A request accepted by a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The request id.
    pub id: u64,
    /// The handle (D-Bus object path).
    pub handle: String,
    /// True if this is a retry of an earlier request (same random_id): nothing new was sent.
    pub existing: bool,
}

/// Send a message for the application: the command and where its answer goes.
///
/// The answer comes through the channel, never as the message's result, so the caller can
/// queue it without waiting for the actor (`Addr::try_send`): a refusal is sent at once, the
/// handle by the store's writer once the request is durable. Every handled command is
/// answered; a dropped sender means the command was never handled (the actor stopped with it
/// in its mailbox), so the caller may queue it again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit(pub SendCmd, pub AcceptedTx);

/// What the application asks to send.
pub struct SendCmd {
    /// The messages (one, or the chunks of a long text), in order.
    pub parts: Vec<DecryptedMessage>,
    /// The method.
    pub method: SendMethod,
    /// The random_id the caller chose, for idempotent retries (`None`: a fresh request).
    pub idempotency: Option<Idempotency>,
    /// The handle path to give the request.
    pub handle: String,
    /// Made through `Call`: the Response carries the result as JSON too.
    pub json: bool,
}

/// The random_id a caller chose for a send, and the request's digest
/// (`service::request_digest`), stored with the random_id's owner.
#[derive(Clone, Copy, Debug)]
pub struct Idempotency {
    /// The random_id.
    pub random_id: i64,
    /// What the request was: a retry must be the same.
    pub digest: [u8; 32],
}

/// Incoming messages of this chat are in the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InboundReady;

/// A chat update taken from Telegram (stored under `seq` in the Meta tree).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyUpdate {
    /// Its key in the Meta tree.
    pub seq: u64,
    /// What it says.
    pub kind: ChatUpdateKind,
}

/// Close the chat (or decline a request).
#[derive(Message)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct Discard {
    /// Ask the peer to delete the history.
    pub delete_history: bool,
}

/// Forget a closed chat: everything stored for it goes (`chatstore::forget`), then the actor
/// stops. Answered on the channel: `WrongState` for an open chat, or one that still owes
/// Telegram its `discardEncryption`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub oneshot::Sender<Result<(), ServiceError>>);

/// Accept a requested chat.
#[derive(Message)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct Accept;

/// Timer.
#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// A call owed to Telegram.
#[derive(Clone, Debug)]
enum CallJob {
    Send(Transmit),
    Owed { n: u64, call: PendingCall },
}

/// How a call ended.
enum CallResult {
    Sent(i32),
    Chat(grammers_tl_types::enums::EncryptedChat),
    Done,
    Failed(CallError),
}

/// A caller waiting for its handle, and the handle.
type Reply = (AcceptedTx, Accepted);

type Commit = BoxFuture<'static, Result<CommitOutcome, StoreError>>;

/// What waits for a batch to become durable.
#[derive(Default)]
struct After {
    /// The callers answered when the batch is durable; taken when it is queued (see
    /// [`ChatActor::commit`]).
    replies: Vec<Reply>,
    done: Vec<RequestRecord>,
    events: Vec<Event>,
    calls: Vec<CallJob>,
    /// The chat as this commit leaves it, if the commit changed what the outside sees.
    view: Option<ChatView>,
    /// Noops that take the slots of cancelled messages: queued in seq order once durable.
    noops: Vec<Transmit>,
}

struct Pending {
    /// Taken by the pipeline when it starts waiting for it; the `after` stays here (and in
    /// reach of `Cancel`) until the batch is durable.
    commit: Option<Commit>,
    after: After,
}

/// Sends handled since the last commit, committed together as one batch once the mailbox is
/// drained ([`FlushStaged`]), or before any other input is handled.
struct Staged {
    out: Output,
    batch: Batch,
    replies: Vec<Reply>,
}

/// The most sends staged into one batch.
const MAX_STAGED: usize = 64;

/// Commits the staged sends (queued by the first send staged after a commit; handled once the
/// mailbox is empty, since actix drains the mailbox before the actor's own items).
struct FlushStaged;

impl Message for FlushStaged {
    type Result = ();
}

/// Where a send's answer goes: the store's writer answers the moment the request's batch is
/// durable (not the actor's commit pipeline, which may be behind).
pub type AcceptedTx = oneshot::Sender<Result<Accepted, ServiceError>>;

/// The actor of one secret chat.
pub struct ChatActor {
    shared: Arc<Shared>,
    chat: Chat,
    meta: ChatMeta,
    commits: VecDeque<Pending>,
    committing: bool,
    /// Sends not committed yet (see [`Staged`]).
    staged: Option<Staged>,
    calls: VecDeque<CallJob>,
    calling: bool,
    /// The call in flight (it may be sleeping through a FLOOD_WAIT): its future, and the
    /// number of its stored owed call if it is one. A logout cancels it.
    flight: Option<(SpawnHandle, Option<u64>)>,
    timer: Option<SpawnHandle>,
    /// Open requests of this chat, by id; random_id → request id.
    open: HashMap<u64, RequestRecord>,
    by_random: HashMap<i64, u64>,
    rng: SystemRandom,
    /// Calls and inbound messages found at start, handled in `started`.
    start: Option<(Vec<(u64, PendingCall)>, bool)>,
    /// When it last had something to do.
    last_active: std::time::Instant,
    /// random_ids of application messages created by this actor whose send was never
    /// attempted (their job still waits in `calls`, or their commit is not durable yet): only
    /// these can be cancelled (one restored from the store may have reached the server before
    /// a crash).
    untried: HashSet<i64>,
    /// The account's logout reached this actor ([`LoggedOut`]): the chat's calls are moot.
    logged_out_here: bool,
    /// [`Shared::login_epoch`] when the call in flight was made.
    call_epoch: u64,
    /// The chat is being or was forgotten ([`Forget`]): the actor stops, and what is still
    /// in its mailbox (actix handles it while stopping) finds no chat and writes nothing of it.
    forgotten: bool,
}

impl ChatActor {
    /// The actor of a chat read back from the store.
    pub fn new(
        shared: Arc<Shared>,
        loaded: LoadedChat,
    ) -> Result<ChatActor, crate::error::DaemonError> {
        let LoadedChat {
            chat,
            meta,
            calls,
            inbound,
            attached,
        } = loaded;
        // Every outbox message, not only `from_app` ones (see `chatstore::open_requests`).
        let messages: Vec<(u32, i64)> = chat.outbox().map(|e| (e.out_raw, e.random_id)).collect();
        let open = chatstore::open_requests(&shared.store, chat.id(), messages, attached)?;
        let by_random = open
            .values()
            .flat_map(|r| r.parts.iter().map(move |p| (p.random_id, r.id)))
            .collect();
        Ok(ChatActor {
            shared,
            chat,
            meta,
            commits: VecDeque::new(),
            committing: false,
            staged: None,
            calls: VecDeque::new(),
            calling: false,
            flight: None,
            timer: None,
            open,
            by_random,
            rng: SystemRandom::new(),
            start: Some((calls, !inbound.is_empty())),
            last_active: std::time::Instant::now(),
            untried: HashSet::new(),
            logged_out_here: false,
            call_epoch: 0,
            forgotten: false,
        })
    }

    fn id(&self) -> i32 {
        self.chat.id()
    }

    // ---------------------------------------------------------------------------------------
    // Applying outputs

    /// Turns an output (plus `batch`, the input's own writes) into one commit, and queues what
    /// depends on it.
    /// Stops if nothing happened for [`IDLE_STOP`] and nothing is pending or due soon.
    fn stop_if_idle(&mut self, ctx: &mut Context<Self>) {
        let busy = self.committing
            || self.calling
            || !self.commits.is_empty()
            || !self.calls.is_empty()
            || !self.open.is_empty();
        let due_soon = self
            .chat
            .next_deadline()
            .is_some_and(|at| at <= now().saturating_add(IDLE_STOP.as_secs()));
        if !busy && !due_soon && self.last_active.elapsed() >= IDLE_STOP {
            tracing::debug!(chat = self.id(), "idle: actor stopped");
            ctx.stop();
        }
    }

    /// The staged sends are committed first, so commits keep the order of the inputs.
    fn apply(&mut self, out: Output, batch: Batch, after: After, ctx: &mut Context<Self>) {
        self.flush_staged(ctx);
        self.apply_now(out, batch, after, ctx);
    }

    /// Adds a send's output, writes and answer to the staged batch; the first one after a
    /// commit schedules [`FlushStaged`].
    fn stage(&mut self, out: Output, batch: Batch, reply: Reply, ctx: &mut Context<Self>) {
        match &mut self.staged {
            Some(st) => {
                st.out.merge(out);
                st.batch.append(batch);
                st.replies.push(reply);
            }
            None => {
                self.staged = Some(Staged {
                    out,
                    batch,
                    replies: vec![reply],
                });
                ctx.notify(FlushStaged);
            }
        }
        if self
            .staged
            .as_ref()
            .is_some_and(|st| st.replies.len() >= MAX_STAGED)
        {
            self.flush_staged(ctx);
        }
    }

    /// Commits the staged sends, if any.
    fn flush_staged(&mut self, ctx: &mut Context<Self>) {
        if let Some(st) = self.staged.take() {
            let after = After {
                replies: st.replies,
                ..Default::default()
            };
            self.apply_now(st.out, st.batch, after, ctx);
        }
    }

    fn apply_now(
        &mut self,
        out: Output,
        mut batch: Batch,
        mut after: After,
        ctx: &mut Context<Self>,
    ) {
        self.last_active = std::time::Instant::now();
        if let Err(e) = self.build(&out, &mut batch, &mut after) {
            // Answered, not dropped: a dropped answer means "never handled" to the caller.
            for (tx, _) in after.replies.drain(..) {
                let _gone = tx.send(Err(ServiceError::Internal(format!(
                    "cannot encode a record: {e}"
                ))));
            }
            self.shared
                .fatal(format!("chat {}: cannot encode a record: {e}", self.id()));
            return;
        }
        let commit = self.commit(batch, std::mem::take(&mut after.replies));
        self.commits.push_back(Pending {
            commit: Some(commit),
            after,
        });
        self.arm_timer(ctx);
        self.pump_commits(ctx);
    }

    /// Queue `batch`; a caller waiting for its handle is answered from the writer thread as
    /// soon as the batch is durable (everything queued before it is durable then too).
    fn commit(&self, batch: Batch, replies: Vec<Reply>) -> Commit {
        if replies.is_empty() {
            return Box::pin(self.shared.store.commit(batch));
        }
        Box::pin(self.shared.store.commit_then(batch, move |r| {
            for (tx, accepted) in replies {
                let answer = match r {
                    Ok(_) => Ok(accepted),
                    Err(e) => Err(ServiceError::from(e.clone())),
                };
                let _gone = tx.send(answer);
            }
        }))
    }

    fn build(
        &mut self,
        out: &Output,
        batch: &mut Batch,
        after: &mut After,
    ) -> Result<(), secret_core::record::RecordError> {
        let id = self.id();
        let meta_before = self.meta.clone();
        // The requests first: an outbox entry written below carries its request's record only
        // while the request is open (`chatstore::write_output`), so a request this output
        // makes final is out of `open` by then.
        for e in &out.events {
            match e {
                Event::Sent { random_id, date } => {
                    self.request_sent(*random_id, *date, batch, after)?
                }
                Event::StatusChanged(Status::Discarded(reason)) => {
                    self.requests_fail(reason, batch, after)?;
                }
                _ => {}
            }
        }
        chatstore::write_output(batch, &self.chat, out, &self.open)?;
        for call in &out.calls {
            match call {
                Call::Send(t) => after.calls.push(CallJob::Send(t.clone())),
                other => {
                    if let Some(p) = PendingCall::of(other) {
                        let n = chatstore::write_call(batch, id, &mut self.meta, &p)?;
                        after.calls.push(CallJob::Owed { n, call: p });
                    }
                }
            }
        }
        let events: Vec<Event> = out
            .events
            .iter()
            .filter(|e| !matches!(e, Event::Sent { .. }))
            .cloned()
            .collect();
        chatstore::write_events(batch, id, &mut self.meta, &events)?;
        if self.meta != meta_before {
            chatstore::write_meta(batch, id, &self.meta)?;
        }
        if out.changed.any() || self.meta != meta_before {
            after.view = Some(ChatView {
                summary: self.chat.summary(),
                next_event: self.meta.next_event,
            });
        }
        after.events.extend(events);
        Ok(())
    }

    fn request_sent(
        &mut self,
        random_id: i64,
        date: i32,
        batch: &mut Batch,
        after: &mut After,
    ) -> Result<(), secret_core::record::RecordError> {
        let Some(&rid) = self.by_random.get(&random_id) else {
            return Ok(());
        };
        let Some(r) = self.open.get_mut(&rid) else {
            return Ok(());
        };
        for p in r.parts.iter_mut().filter(|p| p.random_id == random_id) {
            p.date.get_or_insert(date);
        }
        if r.parts.iter().all(|p| p.date.is_some()) {
            r.status = RequestStatus::Sent;
        }
        batch.put(
            Tree::Requests,
            records::request_key(rid),
            records::encode(&*r)?,
        );
        if r.is_final() {
            self.finish_request(rid, batch, after);
        }
        Ok(())
    }

    fn requests_fail(
        &mut self,
        reason: &DiscardReason,
        batch: &mut Batch,
        after: &mut After,
    ) -> Result<(), secret_core::record::RecordError> {
        let (error, message) = failure_of(reason);
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for rid in ids {
            if let Some(r) = self.open.get_mut(&rid) {
                r.status = RequestStatus::Failed {
                    error: error.clone(),
                    message: message.clone(),
                };
                batch.put(
                    Tree::Requests,
                    records::request_key(rid),
                    records::encode(&*r)?,
                );
            }
            self.finish_request(rid, batch, after);
        }
        Ok(())
    }

    /// The request's result is final (its record is in `batch`): its indexes go into the same
    /// batch, and it leaves the open requests. Until that batch is durable, a retry finds it
    /// among the commits' `done` records ([`ChatActor::existing_request`]) and its handle
    /// stays in the shared map (released in [`ChatActor::durable`]).
    fn finish_request(&mut self, rid: u64, batch: &mut Batch, after: &mut After) {
        // Until its Response went out (see `crate::dbus`): announced again after a restart.
        batch.put(Tree::Meta, records::announce_key(rid), []);
        if let Some(r) = self.open.remove(&rid) {
            batch.put(
                Tree::Meta,
                records::handle_key(&r.handle),
                rid.to_be_bytes(),
            );
            for p in &r.parts {
                self.by_random.remove(&p.random_id);
                batch.put(
                    Tree::RequestIndex,
                    keys::key_i32_i64(self.id(), p.random_id),
                    rid.to_be_bytes(),
                );
            }
            after.done.push(r);
        }
    }

    // ---------------------------------------------------------------------------------------
    // The commit pipeline

    fn pump_commits(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        let Some(commit) = self.commits.front_mut().and_then(|p| p.commit.take()) else {
            return;
        };
        self.committing = true;
        let fut = commit.into_actor(self).then(move |res, act, ctx| {
            let after = act.commits.pop_front().map(|p| p.after).unwrap_or_default();
            let announce: BoxFuture<'static, ()> = match res {
                Ok(_) => act.durable(after, ctx),
                Err(e) => {
                    act.shared
                        .fatal(format!("chat {}: commit failed: {e}", act.id()));
                    ctx.stop();
                    Box::pin(async {})
                }
            };
            announce.into_actor(act)
        });
        ctx.spawn(fut.map(|_, act, ctx| {
            act.committing = false;
            act.pump_commits(ctx);
        }));
    }

    /// A batch is durable: answer, queue its calls, and return the announcements to make.
    fn durable(&mut self, after: After, ctx: &mut Context<Self>) -> BoxFuture<'static, ()> {
        let After {
            replies: _answered_by_the_writer,
            done,
            events,
            calls,
            view,
            noops,
        } = after;
        if let Some(v) = view {
            self.shared.announce.chat_view(v);
        }
        self.calls.extend(calls);
        for t in noops {
            let at = self
                .calls
                .iter()
                .position(|j| matches!(j, CallJob::Send(q) if q.out_seq_no > t.out_seq_no));
            match at {
                Some(i) => self.calls.insert(i, CallJob::Send(t)),
                None => self.calls.push_back(CallJob::Send(t)),
            }
        }
        self.pump_calls(ctx);
        for r in &done {
            self.shared.release_handle(&r.handle, r.id);
        }
        let announce = Arc::clone(&self.shared.announce);
        let chat_id = self.id();
        Box::pin(async move {
            if !events.is_empty() {
                announce.chat_events(chat_id, events).await;
            }
            for r in done {
                announce.request_done(r).await;
            }
        })
    }

    // ---------------------------------------------------------------------------------------
    // The call queue

    fn pump_calls(&mut self, ctx: &mut Context<Self>) {
        if self.calling {
            return;
        }
        let Some(job) = self.calls.pop_front() else {
            return;
        };
        if let CallJob::Send(t) = &job {
            self.untried.remove(&t.random_id);
        }
        if self.chat.stage().is_discarded() && matches!(job, CallJob::Send(_)) {
            // The chat closed: its messages are moot.
            self.pump_calls(ctx);
            return;
        }
        self.calling = true;
        self.call_epoch = self.shared.login_epoch();
        let access_hash = self.chat.state().auth().access_hash();
        let fut = perform(
            Arc::clone(&self.shared),
            self.id(),
            access_hash,
            job.clone(),
            self.call_epoch,
        );
        let owed = match &job {
            CallJob::Owed { n, .. } => Some(*n),
            CallJob::Send(_) => None,
        };
        let handle = ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.calling = false;
            act.flight = None;
            act.call_done(job, res, ctx);
            act.pump_calls(ctx);
        }));
        self.flight = Some((handle, owed));
    }

    fn call_done(&mut self, job: CallJob, res: CallResult, ctx: &mut Context<Self>) {
        // Every input but a send commits the staged sends first (see `Staged`).
        self.flush_staged(ctx);
        let now = now();
        let mut batch = Batch::new();
        let out = match (job, res) {
            (CallJob::Send(t), CallResult::Sent(date)) => self.chat.on_sent(t.random_id, date),
            (CallJob::Send(_), CallResult::Failed(_)) if self.moot_after_logout() => {
                Output::default()
            }
            (CallJob::Send(t), CallResult::Failed(e)) if e.class == ErrorClass::LoggedOut => {
                self.calls.push_front(CallJob::Send(t));
                self.pause_logged_out(&e, ctx);
                return;
            }
            (CallJob::Send(t), CallResult::Failed(e)) => {
                tracing::warn!(chat = self.id(), error = %e, "send refused for good");
                self.chat
                    .on_send_failed(t.random_id, &SendFailure::Fatal { error: e.name })
            }
            (CallJob::Send(_), _) => Output::default(),
            (CallJob::Owed { n, call }, res) => {
                if let CallResult::Failed(e) = &res
                    && e.class == ErrorClass::LoggedOut
                    && !self.moot_after_logout()
                {
                    self.calls.push_front(CallJob::Owed { n, call });
                    self.pause_logged_out(e, ctx);
                    return;
                }
                chatstore::remove_call(&mut batch, self.id(), n);
                self.owed_done(&call, res, now)
            }
        };
        self.apply(out, batch, After::default(), ctx);
    }

    fn owed_done(&mut self, call: &PendingCall, res: CallResult, now: u64) -> Output {
        let rng = &mut self.rng;
        match (call, res) {
            (PendingCall::DiscardEncryption { .. }, _) => Output::default(),
            (_, CallResult::Chat(c)) => {
                self.shared.link.force_difference();
                match convert::remote_chat(&c) {
                    Some(remote) => self.chat.on_remote_update(&remote, now, rng),
                    None => Output::default(),
                }
            }
            (PendingCall::AcceptEncryption { .. }, CallResult::Failed(e))
                if e.name == "ENCRYPTION_ALREADY_ACCEPTED" =>
            {
                // Our acceptance reached the server and its answer was lost: it stands. The
                // updateEncryption that confirms it comes with the next getDifference.
                self.shared.link.force_difference();
                Output::default()
            }
            (_, CallResult::Failed(e)) if e.class == ErrorClass::TerminalChat => {
                self.chat.on_remote_update(
                    &RemoteChat::Discarded {
                        history_deleted: false,
                    },
                    now,
                    rng,
                )
            }
            (_, CallResult::Failed(e)) => self.chat.close_refused(&e.name),
            _ => Output::default(),
        }
    }

    /// Whether the account's logout made this chat's calls moot (it closed the chat, or
    /// reached it closed already).
    fn moot_after_logout(&self) -> bool {
        self.logged_out_here
            || matches!(
                self.chat.status(),
                Status::Discarded(DiscardReason::LoggedOut)
            )
    }

    fn pause_logged_out(&mut self, e: &CallError, ctx: &mut Context<Self>) {
        if !self.shared.logged_out_since(self.call_epoch, e) {
            // A login completed while the call was out: try again now.
            self.pump_calls(ctx);
            return;
        }
        self.calling = true;
        // A completed login (or the key answering again) ends the pause early.
        let shared = Arc::clone(&self.shared);
        let pause = async move {
            let _ = tokio::time::timeout(LOGGED_OUT_PAUSE, shared.until_logged_in()).await;
        };
        // Held as the call in flight: the account's logout ends it with the chat.
        let handle = ctx.spawn(pause.into_actor(self).map(|(), act, ctx| {
            act.calling = false;
            act.flight = None;
            act.pump_calls(ctx);
        }));
        self.flight = Some((handle, None));
    }

    // ---------------------------------------------------------------------------------------
    // Time

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let Some(at) = self.chat.next_deadline() else {
            return;
        };
        let wait = Duration::from_secs(at.saturating_sub(now()));
        self.timer = Some(ctx.notify_later(Tick, wait));
    }

    // ---------------------------------------------------------------------------------------
    // Inbound

    fn take_inbound(&mut self, ctx: &mut Context<Self>) {
        let prefix = keys::key_i32(self.id());
        let mut msgs: Vec<(i64, InboundMessage)> = Vec::new();
        for e in self.shared.store.scan_prefix(Tree::Inbound, &prefix) {
            let parsed = e.map_err(|e| e.to_string()).and_then(|(k, v)| {
                let rid = keys::decode_i32_i64(&k).map(|(_, r)| r);
                let m: InboundMessage = records::decode(&v).map_err(|e| e.to_string())?;
                Ok(rid.map(|r| (r, m)))
            });
            match parsed {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => {}
                Err(e) => {
                    self.shared
                        .fatal(format!("chat {}: inbound: {e}", self.id()));
                    return;
                }
            }
        }
        if msgs.is_empty() {
            return;
        }
        msgs.sort_by_key(|(_, m)| m.seq);
        let now = now();
        let mut out = Output::default();
        let mut batch = Batch::new();
        for (random_id, m) in msgs {
            chatstore::remove_inbound(&mut batch, self.id(), random_id);
            let incoming = secret_core::chat::IncomingEncrypted {
                random_id,
                date: m.date,
                data: m.data,
            };
            match self.chat.receive(&incoming, now, &mut self.rng) {
                Ok(o) => out.merge(o),
                Err(e) => {
                    tracing::debug!(chat = self.id(), random_id, %e, "incoming message dropped")
                }
            }
        }
        self.apply(out, batch, After::default(), ctx);
    }
}

/// The Telegram-style error name and words for a person of why a chat closed (the failure of
/// the requests it still had, and the `Closed` signal's reason).
pub fn failure_of(reason: &DiscardReason) -> (String, String) {
    match reason {
        DiscardReason::Remote { .. } => (
            "ENCRYPTION_DECLINED".into(),
            "the peer closed the secret chat".into(),
        ),
        DiscardReason::ServerRefused { error } => (
            error.clone(),
            format!("Telegram refused the message: {error}"),
        ),
        DiscardReason::Local { .. } => (
            "CHAT_DISCARDED".into(),
            "the secret chat was closed here".into(),
        ),
        DiscardReason::Protocol(v) => (
            "PROTOCOL_VIOLATION".into(),
            format!("the peer broke the protocol: {v:?}"),
        ),
        DiscardReason::CannotSend { action, error } => (
            "CANNOT_SEND".into(),
            format!("{action} could not be sent: {error}"),
        ),
        DiscardReason::LoggedOut => (
            "LOGGED_OUT".into(),
            "the account logged out: Telegram discards its secret chats".into(),
        ),
    }
}

/// Performs one call, retrying by its error's class, until it succeeds or fails for good.
async fn perform(
    shared: Arc<Shared>,
    chat_id: i32,
    access_hash: i64,
    job: CallJob,
    epoch: u64,
) -> CallResult {
    let link = Arc::clone(&shared.link);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = match &job {
            CallJob::Send(t) => {
                match convert::send_request(convert::input_chat(chat_id, access_hash), t) {
                    SendRequest::Encrypted(r) => link
                        .invoke(&r)
                        .await
                        .map(|a| CallResult::Sent(convert::sent_date(&a))),
                    SendRequest::Service(r) => link
                        .invoke(&r)
                        .await
                        .map(|a| CallResult::Sent(convert::sent_date(&a))),
                }
            }
            CallJob::Owed { call, .. } => owed(&link, chat_id, access_hash, call).await,
        };
        let e = match attempt {
            Ok(r) => {
                shared.answered(epoch);
                return r;
            }
            Err(e) => e,
        };
        match e.class {
            ErrorClass::RetryAfter(wait) => {
                tracing::info!(chat_id, error = %e, "waiting {} s before trying again", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
            ErrorClass::RetryNow => {
                tracing::debug!(chat_id, error = %e, "trying again");
                link.force_difference();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            _ => return CallResult::Failed(e),
        }
    }
}

async fn owed(
    link: &tglink::Link,
    chat_id: i32,
    access_hash: i64,
    call: &PendingCall,
) -> Result<CallResult, CallError> {
    let peer = convert::input_chat(chat_id, access_hash);
    match call {
        PendingCall::AcceptEncryption {
            g_b,
            key_fingerprint,
        } => link
            .invoke(&functions::messages::AcceptEncryption {
                peer,
                g_b: g_b.clone(),
                key_fingerprint: *key_fingerprint,
            })
            .await
            .map(CallResult::Chat),
        PendingCall::DiscardEncryption { delete_history } => {
            let r = link
                .invoke(&functions::messages::DiscardEncryption {
                    delete_history: *delete_history,
                    chat_id,
                })
                .await;
            // Whatever the answer, the chat is closed here (as TDLib does).
            match r {
                Err(e) if e.class.is_retry() || e.class == ErrorClass::LoggedOut => Err(e),
                _ => Ok(CallResult::Done),
            }
        }
        PendingCall::RequestEncryption {
            user_id,
            access_hash: user_hash,
            random_id,
            g_a,
        } => link
            .invoke(&functions::messages::RequestEncryption {
                user_id: grammers_tl_types::enums::InputUser::User(
                    grammers_tl_types::types::InputUser {
                        user_id: *user_id,
                        access_hash: *user_hash,
                    },
                ),
                random_id: *random_id,
                g_a: g_a.clone(),
            })
            .await
            .map(CallResult::Chat),
    }
}

impl Actor for ChatActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(IDLE_STOP / 4, |act, ctx| act.stop_if_idle(ctx));
        let Some((owed, inbound)) = self.start.take() else {
            return;
        };
        // Owed calls first (an acceptance before the first message), then unsent messages.
        self.calls
            .extend(owed.into_iter().map(|(n, call)| CallJob::Owed { n, call }));
        self.calls
            .extend(self.chat.unsent().into_iter().map(CallJob::Send));
        let out = self.chat.after_restart(now(), &mut self.rng);
        self.apply(out, Batch::new(), After::default(), ctx);
        if inbound {
            self.take_inbound(ctx);
        }
        self.pump_calls(ctx);
    }
}

impl Handler<FlushStaged> for ChatActor {
    type Result = ();

    fn handle(&mut self, _: FlushStaged, ctx: &mut Context<Self>) {
        if self.forgotten {
            return;
        }
        self.flush_staged(ctx);
    }
}

impl Handler<Submit> for ChatActor {
    type Result = ();

    fn handle(&mut self, Submit(cmd, tx): Submit, ctx: &mut Context<Self>) {
        if self.forgotten {
            let _gone = tx.send(Err(ServiceError::NoSuchChat(self.id())));
            return;
        }
        let mut tx = Some(tx);
        if let Err(e) = self.send(cmd, &mut tx, ctx)
            && let Some(tx) = tx
        {
            let _gone = tx.send(Err(e));
        }
    }
}

impl ChatActor {
    fn send(
        &mut self,
        cmd: SendCmd,
        tx: &mut Option<AcceptedTx>,
        ctx: &mut Context<Self>,
    ) -> Result<(), ServiceError> {
        let answer = || ServiceError::Internal("a send command answered twice".into());
        if let Some(Idempotency { random_id: rid, .. }) = cmd.idempotency
            && let Some(existing) = self.existing_request(rid)?
        {
            // A retry: nothing new is sent; the handle is returned once the first request is
            // durable (an empty batch behind it resolves after it).
            let tx = tx.take().ok_or_else(answer)?;
            self.flush_staged(ctx);
            let commit = self.commit(Batch::new(), vec![(tx, existing)]);
            self.commits.push_back(Pending {
                commit: Some(commit),
                after: After::default(),
            });
            self.pump_commits(ctx);
            return Ok(());
        }
        let now = now();
        let mut out = Output::default();
        let mut parts = Vec::new();
        for (i, m) in cmd.parts.into_iter().enumerate() {
            match self.chat.send_message(m, cmd.method, now, &mut self.rng) {
                Ok(s) => {
                    parts.push(RequestPart {
                        random_id: s.random_id,
                        out_seq_no: s.out_seq_no,
                        in_seq_no: s.in_seq_no,
                        layer: s.layer,
                        date: None,
                    });
                    out.merge(s.output);
                }
                // Nothing of the request was queued: refuse it.
                Err(e) if i == 0 => return Err(e.into()),
                // A later chunk: the first ones are queued already and go out; the request
                // ends with the error (the chunks are checked before, so this is rare).
                Err(e) => {
                    tracing::warn!(chat = self.id(), %e, "chunk refused");
                    break;
                }
            }
        }
        let Some(first) = parts.first() else {
            // The loop refuses the request when its first part is refused.
            return Err(ServiceError::Internal("a request without a message".into()));
        };
        // The first message's seq slot names the request (`out_seq_no = 2 * out_raw + parity`):
        // its outbox entry leads to it after a restart.
        let first_slot = (first.out_seq_no as u32) >> 1;
        let id = records::message_request_id(self.id(), first_slot);
        let record = RequestRecord {
            id,
            chat_id: self.id(),
            method: cmd.method,
            parts,
            status: RequestStatus::Pending,
            handle: cmd.handle.clone(),
            created_at: now,
            announced: false,
            json: cmd.json,
        };
        // One key: the record goes inside its first message's outbox entry, written with the
        // output (`chatstore::write_output`, as the request is in `open` by then); its indexes
        // are written with its final result (`finish_request`). Until then `by_random` and
        // the shared handle map find it. (Every send puts its message in the outbox; should
        // one not, the record goes to `Requests` as any later write of it does.)
        let mut batch = Batch::new();
        // A random_id the caller chose stays this chat's (`Shared::claim_random_id`).
        if let Some(Idempotency {
            random_id: rid,
            digest,
        }) = cmd.idempotency
        {
            batch.put(
                Tree::Meta,
                records::random_id_owner_key(rid),
                records::random_id_owner(self.id(), &digest),
            );
        }
        if !out.outbox_put.iter().any(|e| e.out_raw == first_slot) {
            let enc =
                records::encode(&record).map_err(|e| ServiceError::Internal(e.to_string()))?;
            batch.put(Tree::Requests, records::request_key(id), enc);
        }
        for p in &record.parts {
            self.by_random.insert(p.random_id, id);
            self.untried.insert(p.random_id);
        }
        self.shared.hold_handles([(record.handle.clone(), id)]);
        self.open.insert(id, record);
        let accepted = Accepted {
            id,
            handle: cmd.handle,
            existing: false,
        };
        self.stage(out, batch, (tx.take().ok_or_else(answer)?, accepted), ctx);
        Ok(())
    }

    /// The request a retry names by its random_id: an open one from memory, one finished by a
    /// batch not yet durable from the commit pipeline (its index is in that batch), any other
    /// through the request index.
    fn existing_request(&self, random_id: i64) -> Result<Option<Accepted>, ServiceError> {
        let has = |r: &&RequestRecord| r.parts.iter().any(|p| p.random_id == random_id);
        let open = self
            .by_random
            .get(&random_id)
            .and_then(|id| self.open.get(id))
            .or_else(|| self.commits.iter().flat_map(|p| &p.after.done).find(has))
            .cloned();
        let record = match open {
            Some(r) => Some(r),
            None => chatstore::request_of(&self.shared.store, self.id(), random_id)?,
        };
        Ok(record.map(|r| Accepted {
            id: r.id,
            handle: r.handle,
            existing: true,
        }))
    }
}

impl Handler<InboundReady> for ChatActor {
    type Result = ();

    fn handle(&mut self, _: InboundReady, ctx: &mut Context<Self>) {
        if self.forgotten {
            crate::registry::drop_inbound(&self.shared, self.id());
            return;
        }
        self.flush_staged(ctx);
        self.take_inbound(ctx);
    }
}

impl Handler<ApplyUpdate> for ChatActor {
    type Result = ();

    fn handle(&mut self, u: ApplyUpdate, ctx: &mut Context<Self>) {
        let mut batch = Batch::new();
        batch.remove(Tree::Meta, records::update_key(u.seq));
        if self.forgotten {
            crate::registry::remove_moot(&self.shared, batch);
            return;
        }
        self.flush_staged(ctx);
        let out = match u.kind {
            ChatUpdateKind::Remote(remote) => {
                self.chat.on_remote_update(&remote, now(), &mut self.rng)
            }
            // A repeated request for a chat we have: nothing to learn.
            ChatUpdateKind::Requested { .. } => Output::default(),
        };
        self.apply(out, batch, After::default(), ctx);
    }
}

impl Handler<Discard> for ChatActor {
    type Result = Result<(), ServiceError>;

    fn handle(&mut self, d: Discard, ctx: &mut Context<Self>) -> Self::Result {
        if self.forgotten {
            return Err(ServiceError::NoSuchChat(self.id()));
        }
        self.flush_staged(ctx);
        if self.chat.stage().is_discarded() {
            return Err(ServiceError::WrongState(
                "the chat is closed already".into(),
            ));
        }
        let out = self.chat.discard(d.delete_history);
        self.apply(out, Batch::new(), After::default(), ctx);
        Ok(())
    }
}

impl Handler<Forget> for ChatActor {
    type Result = ();

    fn handle(&mut self, Forget(tx): Forget, ctx: &mut Context<Self>) {
        let id = self.id();
        if self.forgotten {
            let _gone = tx.send(Err(ServiceError::NoSuchChat(id)));
            return;
        }
        self.flush_staged(ctx);
        if !self.chat.stage().is_discarded() {
            let _gone = tx.send(Err(ServiceError::WrongState(format!(
                "chat {id} is open: only a closed chat is forgotten (DiscardChat first)"
            ))));
            return;
        }
        let owes = match chatstore::owes_calls(&self.shared.store, id) {
            Ok(o) => o || self.flight.is_some() || !self.calls.is_empty(),
            Err(e) => {
                let _gone = tx.send(Err(e.into()));
                return;
            }
        };
        if owes {
            let _gone = tx.send(Err(ServiceError::WrongState(format!(
                "chat {id} still owes Telegram a call (its discardEncryption, or a send in \
                 flight): forget it once that is done"
            ))));
            return;
        }
        if self.committing || !self.commits.is_empty() {
            // What it is storing goes first, and is announced.
            ctx.notify_later(Forget(tx), Duration::from_millis(10));
            return;
        }
        tracing::info!(chat = id, "forgetting the chat");
        self.forgotten = true;
        let shared = Arc::clone(&self.shared);
        // Nothing else is handled meanwhile, and the actor stops after it.
        ctx.wait(
            async move { chatstore::forget(&shared.store, id).await }
                .into_actor(self)
                .map(move |r, _, ctx: &mut Context<Self>| {
                    let _gone = tx.send(r.map_err(ServiceError::from));
                    ctx.stop();
                }),
        );
    }
}

/// The account logged out: close the chat without a call (Telegram discarded it with the
/// device's authorization; a closed chat stays as it is) and drop its owed calls, moot
/// without the key; its open requests fail with `LOGGED_OUT`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LoggedOut;

impl Handler<LoggedOut> for ChatActor {
    type Result = ();

    fn handle(&mut self, _: LoggedOut, ctx: &mut Context<Self>) {
        if self.forgotten {
            return;
        }
        self.flush_staged(ctx);
        self.logged_out_here = true;
        let mut batch = Batch::new();
        let id = self.id();
        // The call in flight is moot too, and may sleep through an hour's FLOOD_WAIT: end it
        // now (whatever it would have achieved, the chat's requests fail with LOGGED_OUT), and
        // forget its owed call with the queued ones.
        if let Some((handle, owed)) = self.flight.take() {
            ctx.cancel_future(handle);
            self.calling = false;
            if let Some(n) = owed {
                chatstore::remove_call(&mut batch, id, n);
            }
        }
        self.calls.retain(|j| match j {
            CallJob::Owed { n, .. } => {
                chatstore::remove_call(&mut batch, id, *n);
                false
            }
            CallJob::Send(_) => true,
        });
        let out = self.chat.close_logged_out();
        self.apply(out, batch, After::default(), ctx);
    }
}

/// Cancel the request with this handle if none of its messages was ever sent; `true` if it
/// is cancelled (its Response, code 1, follows once that is durable).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Cancel {
    /// The request's handle path.
    pub handle: String,
}

impl ChatActor {
    /// Whether every message of the request can still be cancelled: never tried, still queued,
    /// and the chat agrees (unsent, the application's, under the key in use).
    fn cancellable(&self, ids: &[i64]) -> bool {
        let fp = self.chat.key_fingerprint();
        ids.iter().all(|id| {
            // In the call queue, or still waiting for its batch to be durable (the caller has
            // its handle as soon as the batch is durable, before the job reaches the queue).
            let is_job = |j: &CallJob| matches!(j, CallJob::Send(t) if t.random_id == *id);
            let queued = self.calls.iter().any(is_job)
                || self
                    .commits
                    .iter()
                    .any(|p| p.after.calls.iter().any(is_job));
            let entry_ok = self.chat.outbox_entry(*id).is_some_and(|e| {
                e.sent_date.is_none()
                    && e.from_app
                    && fp.is_some_and(|f| e.data.get(..8) == Some(&f.0[..]))
            });
            self.untried.contains(id) && queued && entry_ok
        })
    }
}

impl Handler<Cancel> for ChatActor {
    type Result = bool;

    fn handle(&mut self, c: Cancel, ctx: &mut Context<Self>) -> bool {
        if self.forgotten {
            return false;
        }
        self.flush_staged(ctx);
        let Some((&rid, r)) = self.open.iter().find(|(_, r)| r.handle == c.handle) else {
            return false;
        };
        let ids: Vec<i64> = r.parts.iter().map(|p| p.random_id).collect();
        if !self.cancellable(&ids) {
            return false;
        }
        // Not sent, from now on: out of the queue at once (a crash before the commit below
        // leaves the original stored and untried, sent after the restart).
        let keep = |j: &CallJob| !matches!(j, CallJob::Send(t) if ids.contains(&t.random_id));
        self.calls.retain(keep);
        for p in &mut self.commits {
            p.after.calls.retain(keep);
        }
        let mut out = Output::default();
        let mut after = After::default();
        for id in &ids {
            self.untried.remove(id);
            match self.chat.cancel_unsent(*id, &mut self.rng) {
                Ok((o, t)) => {
                    out.merge(o);
                    after.noops.push(t);
                }
                Err(e) => {
                    // Checked just above: cannot happen; the message keeps its slot unsent.
                    tracing::error!(chat = self.id(), %e, "cancel refused after the check");
                }
            }
        }
        let mut batch = Batch::new();
        if let Some(r) = self.open.get_mut(&rid) {
            r.status = RequestStatus::Cancelled;
            match records::encode(&*r) {
                Ok(enc) => {
                    batch.put(Tree::Requests, records::request_key(rid), enc);
                }
                Err(e) => {
                    self.shared
                        .fatal(format!("chat {}: cannot encode a record: {e}", self.id()));
                    return false;
                }
            }
        }
        for id in &ids {
            self.by_random.remove(id);
        }
        self.finish_request(rid, &mut batch, &mut after);
        self.apply(out, batch, after, ctx);
        true
    }
}

impl Handler<Accept> for ChatActor {
    type Result = Result<(), ServiceError>;

    fn handle(&mut self, _: Accept, ctx: &mut Context<Self>) -> Self::Result {
        if self.forgotten {
            return Err(ServiceError::NoSuchChat(self.id()));
        }
        self.flush_staged(ctx);
        let random = vec![0u8; 0];
        let out = self
            .chat
            .accept(&random, now(), &mut self.rng)
            .map_err(|e| match e {
                // Its text alone: the error's name already says "wrong state".
                secret_core::chat::HandshakeError::WrongState(why) => ServiceError::WrongState(why),
                other => ServiceError::WrongState(other.to_string()),
            })?;
        self.apply(out, Batch::new(), After::default(), ctx);
        Ok(())
    }
}

impl Handler<Tick> for ChatActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if self.forgotten {
            return;
        }
        self.flush_staged(ctx);
        self.timer = None;
        let out = self.chat.tick(now(), &mut self.rng);
        if out.is_empty() {
            self.arm_timer(ctx);
            return;
        }
        self.apply(out, Batch::new(), After::default(), ctx);
    }
}
