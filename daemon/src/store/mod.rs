//! The daemon's durable store: byte keys and values in named trees over sled 0.34.7, written
//! in atomic batches with durable group commit.
//!
//! [`Store`] is deliberately narrow: nine trees ([`Tree`]), point reads, prefix scans, and
//! writes only through a [`Batch`] handed to [`Store::commit`]. What the bytes mean is the
//! caller's business (records are `secret_core::record` envelopes; keys come from [`keys`],
//! whose byte order is the numeric order).
//!
//! # Rules
//!
//! 1. **Atomic.** Each batch is applied in one sled transaction over the trees it writes (all
//!    trees are in one sled `Db`): all of it or nothing, also across `kill -9` (the crash test
//!    in `tests/store_crash.rs` checks it). Ops apply in order and see the earlier ops of their
//!    batch; `put_if_absent` keeps an existing value and reports what it did in the
//!    [`CommitOutcome`]. A key or value over the [`StoreOptions`] limits fails the whole batch
//!    ([`StoreError::TooLarge`]) and nothing of it is applied.
//! 2. **Durable before acknowledged.** A commit resolves `Ok` only after its transaction, a
//!    sled flush *and* the syncs sled leaves out. sled's `flush()` is `pwrite` +
//!    `sync_file_range` with no fsync (upstream issue #1452), durable against a killed process
//!    but not against a power cut, so after each flush the writer fdatasyncs `db` (through a
//!    read-only handle opened at open), and fsyncs every blob file that appeared in `blobs/`
//!    since the last flush, then `blobs/` itself. sled puts any *page* larger than about
//!    `segment_size / 4` (~128 KiB with the default 512 KiB segment) in a blob file, and a page
//!    is a whole tree node, up to 16 entries: small values can land in a blob when their node
//!    is rewritten. So the writer lists `blobs/` after every flush (one `getdents` on an almost
//!    always empty directory) rather than guessing from value sizes. At open it fsyncs `conf`,
//!    the existing blob files, `blobs/`, the store directory (sled's snapshot rename) and `db`.
//! 3. **Group commit on one writer thread, off the caller's thread.** The writer
//!    (`tgsecretd-store`) takes the first queued batch and every batch queued behind it (at
//!    most [`StoreOptions::max_group`]), applies them, in queue order, in one sled
//!    transaction, makes them durable with one flush and one round of syncs, then answers each
//!    batch in queue order; the batches queued meanwhile make the next group. A flush covers
//!    every transaction completed before it started, so an answered batch is always inside a
//!    finished flush; each new blob file is fsynced in two consecutive rounds (a cheap
//!    safeguard kept from the pipelined writer, where a round could list a blob file while a
//!    later transaction was still writing it). The batch is queued when [`Store::commit`] is
//!    called; the returned future (`Send + 'static`, any executor) only waits for the answer,
//!    so commits from one caller apply in call order, and an answered batch means every batch
//!    queued before it is durable too. [`Store::commit_then`] also runs a closure with the
//!    result on the writer thread, before the future resolves (the daemon answers a send's
//!    caller from there, without a wake-up of the chat's actor). A failed flush or sync fails
//!    every batch of its round and **poisons** the store: what is durable is unknown, so every
//!    later commit and read fails with [`StoreError::Poisoned`] until the daemon restarts and
//!    sled recovers.
//!    A sled error inside a transaction poisons it too; a batch over the limits does not.
//!    Nothing in the writer panics on an error.
//! 4. **Files 0600 in a 0700 directory.** [`Store::open`] creates the directory and missing
//!    parents with 0700 (an existing store directory is set to 0700), and after sled opened
//!    it sets 0700 on `blobs/` and 0600 on every file in both. Blob files created later get
//!    0600 before they are fsynced. The store does not touch the process umask: the binary
//!    sets it (077) before opening, which closes the window between sled creating a file and
//!    the store's chmod.
//! 5. **One daemon per store.** The store takes `flock(dir, LOCK_EX | LOCK_NB)` on its
//!    directory before sled opens, and sled takes the same on `db`; a second open, from
//!    another process or this one, is [`StoreError::Locked`] ("another tgsecretd is already
//!    using DIR"). Only those lock failures (`EWOULDBLOCK`; sled's is `Io(Other, "could not
//!    acquire lock on …: WouldBlock")`) map to `Locked`; other I/O errors stay
//!    [`StoreError::Io`] / [`StoreError::Sled`]. Both locks are released when the store is
//!    closed or dropped (both join the writer's thread).
//! 8. **A kill during open is harmless.** sled writes its recovery snapshot at open as
//!    `snap.<lsn>.generating` and renames it; a kill before the rename leaves a file that
//!    sled 0.34.7 would then read as the newest snapshot and refuse as corrupt on every later
//!    open (upstream issue #1527). With the directory lock held, the store removes such
//!    files before sled opens (`files::remove_unfinished_snapshots`).
//! 6. **Typed errors, no panics.** No `unwrap`, `expect` or `panic` outside tests; every
//!    failure is a [`StoreError`].
//! 7. **sled's files are pinned.** sled writes `db`, `conf`, `snap.<16 hex>` and
//!    `blobs/<lsn>` and nothing else; `tests/store_layout.rs` fails if a sled version writes
//!    elsewhere, since such a file would not be synced.
//!
//! Reads ([`Store::get`], [`Store::scan_prefix`], [`Store::last_with_prefix`]) run on the
//! caller's thread and see every *applied* batch, including one whose commit has not resolved
//! yet (it is in memory, its flush pending). Callers must act on a write only after its commit
//! resolved; with one actor per chat that is the natural order.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub(crate) mod batch;
mod error;
mod files;
pub mod keys;
mod stats;
mod writer;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

pub use batch::{Batch, CommitOutcome, Tree};
pub use error::StoreError;
pub use stats::CommitStats;

use files::DurableFiles;
use stats::Counters;
use writer::{CommitResult, Failure, Job, Limits, Reply, Then, Writer};

/// A key and its value, as read.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Tunables of [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
    /// The longest key a batch may write.
    pub max_key_len: usize,
    /// The longest value a batch may write.
    pub max_value_len: usize,
    /// The most batches one group commit takes.
    pub max_group: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            cache_capacity: 64 * 1024 * 1024,
            max_key_len: 1024,
            max_value_len: 8 * 1024 * 1024,
            max_group: 1024,
        }
    }
}

/// One sled tree per [`Tree`], indexed by [`Tree::index`].
pub(crate) struct Trees([sled::Tree; Tree::ALL.len()]);

impl Trees {
    fn open(db: &sled::Db) -> Result<Trees, StoreError> {
        let trees = Tree::ALL.map(|t| db.open_tree(t.name()));
        let [a, b, c, d, e, f, g, h, i] = trees;
        let open = |r: sled::Result<sled::Tree>| r.map_err(StoreError::sled("open tree"));
        Ok(Trees([
            open(a)?,
            open(b)?,
            open(c)?,
            open(d)?,
            open(e)?,
            open(f)?,
            open(g)?,
            open(h)?,
            open(i)?,
        ]))
    }

    pub(crate) fn get(&self, tree: Tree) -> &sled::Tree {
        &self.0[tree.index()]
    }

    fn clone_all(&self) -> Trees {
        Trees(self.0.clone())
    }
}

/// The writer's thread (it reports the last flush).
type WriterThread = JoinHandle<Result<(), StoreError>>;

/// The durable store (see the module doc for its rules).
pub struct Store {
    dir: PathBuf,
    trees: Trees,
    jobs: Option<Sender<Job>>,
    /// The writer (see `writer`).
    writer: Option<WriterThread>,
    counters: Arc<Counters>,
    failure: Failure,
    /// The directory lock (released when dropped, after the writer and sled are gone).
    _dir_lock: std::fs::File,
}

impl Store {
    /// Open (or create) the store in `dir`. Blocking: sled recovers its log here.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        files::create_dir(dir)?;
        let dir_lock = files::lock_dir(dir)?;
        files::remove_unfinished_snapshots(dir)?;
        let db = open_sled(dir, &opts)?;
        let trees = Trees::open(&db)?;
        let counters = Arc::new(Counters::default());
        let files = DurableFiles::open(dir, &counters)?;
        let failure = Failure::default();
        let writer = Writer {
            trees: trees.clone_all(),
            db,
            files,
            counters: Arc::clone(&counters),
            failure: Arc::clone(&failure),
            limits: Limits {
                max_key_len: opts.max_key_len,
                max_value_len: opts.max_value_len,
            },
            max_group: opts.max_group.max(1),
        };
        let (jobs, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("tgsecretd-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io("start the writer thread for", dir, e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            trees,
            jobs: Some(jobs),
            writer: Some(writer),
            counters,
            failure,
            _dir_lock: dir_lock,
        })
    }

    /// Queue `batch` now; the future resolves once it is applied and durable (rule 2).
    pub fn commit(
        &self,
        batch: Batch,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send + 'static + use<> {
        self.commit_inner(batch, None)
    }

    /// [`Store::commit`], and `then` runs with the batch's result on the writer thread as soon
    /// as the result is known, before the future resolves (at once, with the error, if the
    /// batch cannot be queued). For an answer that needs nothing but this batch (and so every
    /// batch queued before it) to be durable: it skips a wake-up of the committing task.
    /// `then` must be quick and must not block: the writer runs it between syncs.
    pub fn commit_then<F>(
        &self,
        batch: Batch,
        then: F,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send + 'static + use<F>
    where
        F: FnOnce(&Result<CommitOutcome, StoreError>) + Send + 'static,
    {
        self.commit_inner(batch, Some(Box::new(then)))
    }

    fn commit_inner(
        &self,
        batch: Batch,
        then: Option<Then>,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send + 'static + use<> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.queue(batch, Reply::Async(tx), then);
        async move {
            queued?;
            rx.await.unwrap_or(Err(StoreError::Stopped))
        }
    }

    /// [`Store::commit`], blocking the calling thread until the batch is durable.
    pub fn commit_blocking(&self, batch: Batch) -> Result<CommitOutcome, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.queue(batch, Reply::Blocking(tx), None)?;
        rx.recv().unwrap_or(Err(StoreError::Stopped))
    }

    /// The value of `key` in `tree`.
    pub fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check()?;
        let value = self.tree(tree).get(key).map_err(StoreError::sled("get"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// The entries of `tree` whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'s>(
        &'s self,
        tree: Tree,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<Entry, StoreError>> + use<'s> {
        let (refused, entries) = match self.check() {
            Err(e) => (Some(e), None),
            Ok(()) => (None, Some(self.tree(tree).scan_prefix(prefix))),
        };
        refused
            .into_iter()
            .map(Err)
            .chain(entries.into_iter().flatten().map(entry))
    }

    /// The entries of `tree` from `start` (included) whose key starts with `prefix`, in key
    /// order.
    pub fn scan_range<'s>(
        &'s self,
        tree: Tree,
        start: &[u8],
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<Entry, StoreError>> + use<'s> {
        let prefix = prefix.to_vec();
        let (refused, entries) = match self.check() {
            Err(e) => (Some(e), None),
            Ok(()) => (None, Some(self.tree(tree).range(start.to_vec()..))),
        };
        refused.into_iter().map(Err).chain(
            entries
                .into_iter()
                .flatten()
                .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .map(entry),
        )
    }

    /// The entry of `tree` with the largest key that starts with `prefix`.
    pub fn last_with_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.check()?;
        self.tree(tree)
            .scan_prefix(prefix)
            .next_back()
            .map(entry)
            .transpose()
    }

    /// The entry of `tree` with the largest key below `key` (excluded) that starts with
    /// `prefix`.
    pub fn last_before(
        &self,
        tree: Tree,
        key: &[u8],
        prefix: &[u8],
    ) -> Result<Option<Entry>, StoreError> {
        self.check()?;
        let found = self
            .tree(tree)
            .get_lt(key)
            .map_err(StoreError::sled("get_lt"))?;
        Ok(found
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// The writer's counters.
    pub fn stats(&self) -> CommitStats {
        self.counters.snapshot()
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stop the writer after the batches already queued, with a final flush and sync; release
    /// the lock. A poisoned store reports its first failure.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StoreError> {
        drop(self.jobs.take());
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        // The writer stops after the queued batches' last round.
        writer.join().unwrap_or(Err(StoreError::Stopped))
    }

    /// Hand a job to the writer; a job that cannot be queued runs its `then` here.
    fn queue(&self, batch: Batch, reply: Reply, then: Option<Then>) -> Result<(), StoreError> {
        let sent = match (self.check(), self.jobs.as_ref()) {
            (Err(e), _) => Err((e, then)),
            (Ok(()), None) => Err((StoreError::Stopped, then)),
            (Ok(()), Some(jobs)) => jobs
                .send(Job {
                    batch,
                    reply,
                    then,
                    queued: std::time::Instant::now(),
                })
                .map_err(|e| (StoreError::Stopped, e.0.then)),
        };
        sent.map_err(|(e, then)| {
            if let Some(then) = then {
                let result: CommitResult = Err(e.clone());
                then(&result);
            }
            e
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(cause) => Err(StoreError::Poisoned {
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        self.trees.get(tree)
    }
}

impl Drop for Store {
    /// Like [`Store::close`], without the result.
    fn drop(&mut self) {
        let _result = self.stop();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How long [`open_sled`] waits for sled's own lock once the directory lock is ours.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled; called with the directory lock held ([`files::lock_dir`]), so a conflict on
/// sled's lock on `db` can only be a store this process just closed whose last sled thread
/// has not let go of the file yet (seen under load in `store_layout`): wait for it a little.
fn open_sled(dir: &Path, opts: &StoreOptions) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        match open_sled_once(dir, opts) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn open_sled_once(dir: &Path, opts: &StoreOptions) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(opts.cache_capacity)
        .flush_every_ms(None)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(io) if is_lock_conflict(&io) => StoreError::Locked {
                dir: dir.to_path_buf(),
            },
            other => StoreError::Sled {
                op: "open",
                source: other,
            },
        })
}

/// sled 0.34.7 reports a held lock as `Io(Other, "could not acquire lock on \"…/db\": Os {
/// code: 11, kind: WouldBlock, .. }")` (fs2's `try_lock_exclusive` error, formatted).
fn is_lock_conflict(error: &io::Error) -> bool {
    let text = error.to_string();
    match error.kind() {
        io::ErrorKind::WouldBlock => true,
        io::ErrorKind::Other => {
            text.starts_with("could not acquire lock on") && text.contains("WouldBlock")
        }
        _ => false,
    }
}

/// A sled entry as owned bytes.
fn entry(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry, StoreError> {
    let (k, v) = item.map_err(StoreError::sled("scan"))?;
    Ok((k.to_vec(), v.to_vec()))
}
