//! [`CommitStats`]: what the writer has done, counted since the store was opened.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

    pub(crate) fn group_flushed(&self, batches: usize) {
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
        }
    }
}
