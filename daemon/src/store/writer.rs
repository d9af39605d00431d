//! The writer thread: group commit.
//!
//! It blocks for the first queued job, takes every job queued behind it (up to the group
//! limit), refuses the batches over the size limits, applies the others **in one sled
//! transaction** (in queue order: a later batch sees the earlier ones; each batch is still all
//! or nothing, the group being a larger atomic unit), then makes the group durable with one
//! flush and one round of syncs, and only then answers each job. One transaction per group
//! instead of per batch is what lets many concurrent writers share the work (a sled
//! transaction costs tens of microseconds whatever its size). A failed transaction, flush or
//! sync poisons the store (see [`StoreError::Poisoned`]).

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, OnceLock};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tokio::sync::oneshot;

use super::batch::{Op, OpKind};
use super::files::DurableFiles;
use super::stats::Counters;
use super::{Batch, CommitOutcome, StoreError, Tree, Trees};

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

/// One batch to commit and where its result goes.
pub(crate) struct Job {
    pub(crate) batch: Batch,
    pub(crate) reply: Reply,
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
    pub(crate) db: sled::Db,
    pub(crate) trees: Trees,
    pub(crate) files: DurableFiles,
    pub(crate) counters: Arc<Counters>,
    pub(crate) failure: Failure,
    pub(crate) limits: Limits,
    pub(crate) max_group: usize,
}

impl Writer {
    /// Commit groups until every sender is gone and the queue is empty, then flush and sync
    /// one last time.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) -> Result<(), StoreError> {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            group.extend(jobs.try_iter().take(self.max_group.saturating_sub(1)));
            self.commit_group(group);
        }
        self.check()?;
        self.make_durable()
    }

    fn commit_group(&mut self, group: Vec<Job>) {
        let size = group.len();
        let mut replies = Vec::with_capacity(size);
        let mut results: Vec<Option<CommitResult>> = Vec::with_capacity(size);
        let mut batches = Vec::with_capacity(size);
        for job in group {
            let refused = self.check().err().or_else(|| {
                job.batch
                    .ops()
                    .iter()
                    .find_map(|op| check_limits(op, self.limits).err())
            });
            replies.push(job.reply);
            match refused {
                Some(e) => results.push(Some(Err(e))),
                None => {
                    results.push(None);
                    batches.push(job.batch);
                }
            }
        }
        let applied = match apply_group(&self.trees, &batches) {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                let e = self.poison(e);
                vec![Err(e); batches.len()]
            }
        };
        let mut applied = applied.into_iter();
        let results: Vec<CommitResult> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| applied.next().unwrap_or(Err(StoreError::Stopped))))
            .collect();
        let durable = if results.iter().any(Result::is_ok) {
            let done = self.make_durable().map_err(|e| self.poison(e));
            if done.is_ok() {
                self.counters.group_flushed(size);
            }
            done
        } else {
            Ok(())
        };
        for (reply, result) in replies.into_iter().zip(results) {
            let result = match (result, &durable) {
                (Ok(_), Err(e)) => Err(e.clone()),
                (result, _) => result,
            };
            self.counters.batch_done(result.is_ok());
            reply.send(result);
        }
    }

    /// `Poisoned` once a write failed to become durable.
    fn check(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(cause) => Err(StoreError::Poisoned {
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    /// Record the first failure; hand the error back.
    fn poison(&self, error: StoreError) -> StoreError {
        let _first = self.failure.set(Arc::new(error.clone()));
        error
    }

    fn make_durable(&mut self) -> Result<(), StoreError> {
        self.db.flush().map_err(StoreError::sled("flush"))?;
        self.files.sync_after_flush(&self.counters)
    }
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
