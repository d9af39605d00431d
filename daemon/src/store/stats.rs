//! [`CommitStats`]: what the writer has done, counted since the store was opened.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A snapshot of the writer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches committed and acknowledged (applied, flushed, synced).
    pub batches_committed: u64,
    /// Batches that failed (limits, storage errors, a failed group flush, a poisoned store).
    pub batches_failed: u64,
    /// Group flushes done: one sled flush followed by the syncs, for a whole group.
    pub group_flushes: u64,
    /// The most batches one group held.
    pub largest_group: u64,
    /// fdatasyncs of `db` (one per group flush, one at open).
    pub fdatasyncs: u64,
    /// Blob files fsynced (sled's `blobs/`).
    pub blob_files_synced: u64,
    /// fsyncs of `blobs/` after new blob files.
    pub dir_syncs: u64,
    /// Microseconds, summed over the answered batches, from [`Store::commit`](super::Store::commit)
    /// until the writer had applied the batch's group: the wait for the round in progress,
    /// then the group's transaction.
    pub apply_wait_us: u64,
    /// Microseconds, summed over the answered batches, from the batch's group being applied
    /// until its answer: the batch's own round.
    pub sync_wait_us: u64,
    /// Microseconds, summed over the group flushes, of making a round durable (sled's flush
    /// and the syncs after it).
    pub flush_us: u64,
}

impl CommitStats {
    /// The mean (apply wait, sync wait, round) in microseconds of the batches answered and
    /// the rounds done between `earlier` and `self` (zero where nothing was done).
    pub fn latency_since(&self, earlier: &CommitStats) -> (f64, f64, f64) {
        let batches = (self.batches_committed + self.batches_failed)
            .saturating_sub(earlier.batches_committed + earlier.batches_failed)
            .max(1) as f64;
        let rounds = self
            .group_flushes
            .saturating_sub(earlier.group_flushes)
            .max(1) as f64;
        let per = |now: u64, then: u64, n: f64| now.saturating_sub(then) as f64 / n;
        (
            per(self.apply_wait_us, earlier.apply_wait_us, batches),
            per(self.sync_wait_us, earlier.sync_wait_us, batches),
            per(self.flush_us, earlier.flush_us, rounds),
        )
    }
}

/// The live counters, shared by the writer thread and the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    batches_committed: AtomicU64,
    batches_failed: AtomicU64,
    group_flushes: AtomicU64,
    largest_group: AtomicU64,
    fdatasyncs: AtomicU64,
    blob_files_synced: AtomicU64,
    dir_syncs: AtomicU64,
    apply_wait_us: AtomicU64,
    sync_wait_us: AtomicU64,
    flush_us: AtomicU64,
}

impl Counters {
    pub(crate) fn batch_done(&self, ok: bool) {
        let counter = if ok {
            &self.batches_committed
        } else {
            &self.batches_failed
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A batch answered: how long it waited for its group to be applied, then for its answer.
    pub(crate) fn batch_waited(&self, apply: Duration, sync: Duration) {
        self.apply_wait_us.fetch_add(micros(apply), Relaxed);
        self.sync_wait_us.fetch_add(micros(sync), Relaxed);
    }

    pub(crate) fn group_flushed(&self, batches: usize, took: Duration) {
        self.flush_us.fetch_add(micros(took), Relaxed);
        self.group_flushes.fetch_add(1, Relaxed);
        self.largest_group.fetch_max(batches as u64, Relaxed);
    }

    pub(crate) fn fdatasync(&self) {
        self.fdatasyncs.fetch_add(1, Relaxed);
    }

    pub(crate) fn blob_synced(&self) {
        self.blob_files_synced.fetch_add(1, Relaxed);
    }

    pub(crate) fn dir_sync(&self) {
        self.dir_syncs.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            batches_committed: self.batches_committed.load(Relaxed),
            batches_failed: self.batches_failed.load(Relaxed),
            group_flushes: self.group_flushes.load(Relaxed),
            largest_group: self.largest_group.load(Relaxed),
            fdatasyncs: self.fdatasyncs.load(Relaxed),
            blob_files_synced: self.blob_files_synced.load(Relaxed),
            dir_syncs: self.dir_syncs.load(Relaxed),
            apply_wait_us: self.apply_wait_us.load(Relaxed),
            sync_wait_us: self.sync_wait_us.load(Relaxed),
            flush_us: self.flush_us.load(Relaxed),
        }
    }
}
