//! The writer: group commit on one thread (`tgsecretd-store`).
//!
//! It blocks for the first queued job and takes every job queued behind it (up to the group
//! limit), refuses the batches over the size limits, applies the others **in one sled
//! transaction** (in queue order: a later batch sees the earlier ones; each batch is still all
//! or nothing, the group being a larger atomic unit), makes the group durable with one sled
//! flush and one round of syncs, and only then answers each job, in queue order. The jobs
//! queued meanwhile make the next group. A flush covers every transaction that completed
//! before it started, so an answered batch is always inside the flush that preceded its
//! answer.
//!
//! One transaction and one round per group instead of per batch is what lets many concurrent
//! writers share the work (a sled transaction costs tens of microseconds whatever its size, a
//! round two trips to the disk). One thread rather than a pipeline (an applier applying the
//! next group while a syncer syncs the previous one, as this writer was until 2026-12-07):
//! on the two-core machine the pipeline's extra thread hand-off saved nothing measurable
//! (about a tenth more acceptance with sled's pool wake-ups patched out, within the noise
//! with sled as it is; see ARCHITECTURE.md, "One writer thread"). A failed transaction, flush or sync
//! poisons the store (see [`StoreError::Poisoned`]): the writer refuses every later batch and
//! fails every batch of the round.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tokio::sync::oneshot;

use super::batch::Batch;
use super::batch::{Op, OpKind};
use super::files::DurableFiles;
use super::stats::Counters;
use super::{CommitOutcome, StoreError, Tree, Trees};

/// What a commit resolves to.
pub(crate) type CommitResult = Result<CommitOutcome, StoreError>;

/// Where a job's result goes: an async waiter or a blocked thread.
pub(crate) enum Reply {
    Async(oneshot::Sender<CommitResult>),
    Blocking(SyncSender<CommitResult>),
}

impl Reply {
    /// Hand the result over; a waiter that went away no longer wants it.
    fn send(self, result: CommitResult) {
        match self {
            Reply::Async(tx) => drop(tx.send(result)),
            Reply::Blocking(tx) => drop(tx.send(result)),
        }
    }
}

/// Runs on the writer thread with a batch's result, before its future resolves.
pub(crate) type Then = Box<dyn FnOnce(&CommitResult) + Send>;

/// One batch to commit and where its result goes.
pub(crate) struct Job {
    pub(crate) batch: Batch,
    pub(crate) reply: Reply,
    pub(crate) then: Option<Then>,
    /// When [`Store::commit`](super::Store::commit) queued it (for [`Counters`]' waits).
    pub(crate) queued: Instant,
}

/// The size limits of keys and values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_key_len: usize,
    pub(crate) max_value_len: usize,
}

/// The first failure that made the store refuse everything, shared with the `Store`.
pub(crate) type Failure = Arc<OnceLock<Arc<StoreError>>>;

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) trees: Trees,
    pub(crate) db: sled::Db,
    pub(crate) files: DurableFiles,
    pub(crate) counters: Arc<Counters>,
    pub(crate) failure: Failure,
    pub(crate) limits: Limits,
    pub(crate) max_group: usize,
}

/// One applied (or refused) batch waiting for its round to be answered.
pub(crate) struct Applied {
    reply: Reply,
    then: Option<Then>,
    /// The batch's result so far: `Ok` = applied, not durable yet.
    result: CommitResult,
    /// How long it waited from its commit until its group was applied.
    apply_wait: Duration,
    /// When its group was applied.
    applied: Instant,
}

impl Writer {
    /// Commit groups until every sender is gone and the queue is empty; then flush and sync
    /// one last time.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) -> Result<(), StoreError> {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            group.extend(jobs.try_iter().take(self.max_group.saturating_sub(1)));
            let round = self.apply(group);
            self.sync_round(round);
        }
        check(&self.failure)?;
        self.make_durable()
    }

    /// Refuse what is over the limits (or everything, once poisoned), apply the rest in one
    /// transaction.
    fn apply(&self, group: Vec<Job>) -> Vec<Applied> {
        let mut waiting = Vec::with_capacity(group.len());
        let mut batches = Vec::with_capacity(group.len());
        for job in group {
            let refused = check(&self.failure).err().or_else(|| {
                job.batch
                    .ops()
                    .iter()
                    .find_map(|op| check_limits(op, self.limits).err())
            });
            if refused.is_none() {
                batches.push(job.batch);
            }
            waiting.push((job.reply, job.then, refused, job.queued));
        }
        let outcomes: Vec<CommitResult> = match apply_group(&self.trees, &batches) {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                let e = poison(&self.failure, e);
                vec![Err(e); batches.len()]
            }
        };
        let mut outcomes = outcomes.into_iter();
        let applied = Instant::now();
        waiting
            .into_iter()
            .map(|(reply, then, refused, queued)| Applied {
                reply,
                then,
                apply_wait: applied.saturating_duration_since(queued),
                applied,
                result: match refused {
                    Some(e) => Err(e),
                    None => outcomes.next().unwrap_or(Err(StoreError::Stopped)),
                },
            })
            .collect()
    }

    /// One flush and one round of syncs for the group just applied, then the answers, in queue
    /// order.
    ///
    /// A round after a failed one answers no batch `Ok`, even if its own flush would succeed:
    /// its groups may have been applied on top of writes that never became durable (and after
    /// an EIO, Linux reports the error once per file, so a later fsync can "succeed").
    fn sync_round(&mut self, round: Vec<Applied>) {
        let durable = if let Err(poisoned) = check(&self.failure) {
            Err(poisoned)
        } else if round.iter().any(|a| a.result.is_ok()) {
            let start = Instant::now();
            let done = self.make_durable().map_err(|e| poison(&self.failure, e));
            if done.is_ok() {
                self.counters.group_flushed(round.len(), start.elapsed());
            }
            done
        } else {
            Ok(())
        };
        let answered = Instant::now();
        for a in round {
            let result = match (a.result, &durable) {
                (Ok(_), Err(e)) => Err(e.clone()),
                (result, _) => result,
            };
            self.counters.batch_done(result.is_ok());
            self.counters
                .batch_waited(a.apply_wait, answered.saturating_duration_since(a.applied));
            if let Some(then) = a.then {
                then(&result);
            }
            a.reply.send(result);
        }
    }

    fn make_durable(&mut self) -> Result<(), StoreError> {
        self.db.flush().map_err(StoreError::sled("flush"))?;
        self.files.sync_after_flush(&self.counters)
    }
}

/// `Poisoned` once a write failed to become durable.
fn check(failure: &Failure) -> Result<(), StoreError> {
    match failure.get() {
        Some(cause) => Err(StoreError::Poisoned {
            cause: Arc::clone(cause),
        }),
        None => Ok(()),
    }
}

/// Record the first failure; hand the error back.
fn poison(failure: &Failure, error: StoreError) -> StoreError {
    let _first = failure.set(Arc::new(error.clone()));
    error
}

/// Apply `batches`, in order, in one transaction over the trees they write; the outcome of
/// each.
fn apply_group(trees: &Trees, batches: &[Batch]) -> Result<Vec<CommitOutcome>, StoreError> {
    let mut touched: Vec<Tree> = batches.iter().flat_map(Batch::trees).collect();
    touched.sort_unstable();
    touched.dedup();
    if touched.is_empty() {
        return Ok(vec![CommitOutcome::default(); batches.len()]);
    }
    let handles: Vec<&sled::Tree> = touched.iter().map(|&t| trees.get(t)).collect();
    let mut view_of = [0usize; Tree::ALL.len()];
    for (i, t) in touched.iter().enumerate() {
        view_of[t.index()] = i;
    }
    let result = handles.as_slice().transaction(|views| {
        batches
            .iter()
            .map(|b| apply_ops(views, &view_of, b.ops()))
            .collect::<TxResult<Vec<CommitOutcome>>>()
    });
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled {
            op: "transaction",
            source: e,
        },
    })
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// The transaction body: pure apart from the transaction's own writes (sled may re-run it).
fn apply_ops(
    views: &[TransactionalTree],
    view_of: &[usize; Tree::ALL.len()],
    ops: &[Op],
) -> TxResult<CommitOutcome> {
    let mut inserted = Vec::new();
    for op in ops {
        let Some(view) = views.get(view_of[op.tree.index()]) else {
            return Err(ConflictableTransactionError::Storage(missing_view(op.tree)));
        };
        if let Some(was_absent) = apply_op(view, op)? {
            inserted.push(was_absent);
        }
    }
    Ok(CommitOutcome::new(inserted))
}

/// One op; for `put_if_absent`, whether it inserted.
fn apply_op(view: &TransactionalTree, op: &Op) -> TxResult<Option<bool>> {
    match &op.kind {
        OpKind::Put(value) => {
            view.insert(op.key.clone(), value.clone())?;
            Ok(None)
        }
        OpKind::Remove => {
            view.remove(op.key.clone())?;
            Ok(None)
        }
        OpKind::PutIfAbsent(value) => {
            let absent = view.get(&op.key)?.is_none();
            if absent {
                view.insert(op.key.clone(), value.clone())?;
            }
            Ok(Some(absent))
        }
    }
}

fn check_limits(op: &Op, limits: Limits) -> Result<(), StoreError> {
    let value_len = match &op.kind {
        OpKind::Put(v) | OpKind::PutIfAbsent(v) => v.len(),
        OpKind::Remove => 0,
    };
    let too_large = |what, len, limit| StoreError::TooLarge {
        tree: op.tree,
        what,
        len,
        limit,
    };
    if op.key.len() > limits.max_key_len {
        return Err(too_large("key", op.key.len(), limits.max_key_len));
    }
    if value_len > limits.max_value_len {
        return Err(too_large("value", value_len, limits.max_value_len));
    }
    Ok(())
}

/// Cannot happen: every tree of a batch has a view. Typed rather than a panic.
fn missing_view(tree: Tree) -> sled::Error {
    sled::Error::ReportableBug(format!(
        "tgsecretd store: no transaction view for tree {}",
        tree.name()
    ))
}
