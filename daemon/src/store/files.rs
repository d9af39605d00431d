//! The store directory on disk: creating it, the permissions, and the fsyncs sled leaves out.
//!
//! sled 0.34.7 writes `db` (the log; every flush), `conf` (once, at creation), `snap.<16 hex>`
//! (at open, fsynced by sled but not its directory entry) and `blobs/<lsn>` (a page too big for
//! the log: written at the transaction, never fsynced). [`DurableFiles`] makes each durable.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::StoreError;
use super::stats::Counters;

/// Mode of the store directory and `blobs/`.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in them.
pub const FILE_MODE: u32 = 0o600;

/// sled's blob directory, inside the store directory.
const BLOBS: &str = "blobs";
/// sled's log file, which also carries its lock.
const DB: &str = "db";

/// Create `dir` (and missing parents) with mode 0700; an existing `dir` is set to 0700.
pub fn create_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| StoreError::io("create directory", dir, e))?;
    set_mode(dir, DIR_MODE)
}

/// Lock the store directory itself (`flock(dir, LOCK_EX | LOCK_NB)`), held for the store's
/// life: it lets [`remove_unfinished_snapshots`] run before sled takes its own lock on `db`
/// without racing another daemon that is opening the same store.
pub fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let file = File::open(dir).map_err(|e| StoreError::io("open", dir, e))?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(Errno::WOULDBLOCK) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(StoreError::io("lock", dir, e.into())),
    }
}

/// Remove the `snap.*.generating` files a kill during sled's open left behind.
///
/// sled 0.34.7 writes its snapshot (at open, only then) to `snap.<lsn>.generating`, fsyncs
/// it and renames it to `snap.<lsn>`, and only then removes older snapshots. But its reader
/// takes the greatest `snap.*` name, `.generating` included, so a file left by a kill before
/// the rename makes every later open fail with `Corruption { at: None }` (upstream issue
/// #1527; seen here in the kill -9 test). Such a file is never needed: the previous snapshot
/// and the log it was made from are still there. Call with the directory lock held.
pub fn remove_unfinished_snapshots(dir: &Path) -> Result<(), StoreError> {
    for name in list(dir)? {
        let text = name.to_string_lossy();
        if text.starts_with("snap.") && text.ends_with(".generating") {
            let path = dir.join(&name);
            fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        }
    }
    Ok(())
}

/// What the writer syncs after each group flush.
pub struct DurableFiles {
    /// `db`, opened read-only: fdatasync works on any descriptor of the file.
    db: File,
    db_path: PathBuf,
    blobs: PathBuf,
    /// The blob files known durable.
    synced_blobs: HashSet<OsString>,
    /// The blob files first synced by the previous round: synced once more by the next one.
    /// A round may list a blob file while a transaction applied during the flush is still
    /// writing it; that transaction's batch is answered only after the *next* round, which
    /// runs after the transaction completed, so syncing each new blob in two consecutive
    /// rounds covers its whole content.
    fresh_blobs: HashSet<OsString>,
}

impl DurableFiles {
    /// After sled opened `dir`: set the modes, fsync what sled left unsynced (`conf`, the
    /// existing blobs, the directories, `db`) and keep a handle on `db`.
    pub fn open(dir: &Path, counters: &Counters) -> Result<DurableFiles, StoreError> {
        let blobs = dir.join(BLOBS);
        set_modes(dir)?;
        set_modes(&blobs)?;
        let db_path = dir.join(DB);
        let db = File::open(&db_path).map_err(|e| StoreError::io("open", &db_path, e))?;
        let mut files = DurableFiles {
            db,
            db_path,
            blobs,
            synced_blobs: HashSet::new(),
            fresh_blobs: HashSet::new(),
        };
        sync_file(&dir.join("conf"))?;
        files.sync_new_blobs(counters)?;
        sync_dir(&files.blobs)?;
        sync_dir(dir)?;
        files.sync_db(counters)?;
        Ok(files)
    }

    /// After a sled flush: fsync the blob files that appeared since the last call (0600 first)
    /// and, if there were any, `blobs/`; then fdatasync `db`.
    pub fn sync_after_flush(&mut self, counters: &Counters) -> Result<(), StoreError> {
        if self.sync_new_blobs(counters)? {
            sync_dir(&self.blobs)?;
            counters.dir_sync();
        }
        self.sync_db(counters)
    }

    fn sync_db(&self, counters: &Counters) -> Result<(), StoreError> {
        self.db
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync", &self.db_path, e))?;
        counters.fdatasync();
        Ok(())
    }

    /// fsync every blob file not synced yet, and again those first synced by the previous
    /// call (see `fresh_blobs`); whether there was one. Forgets removed ones.
    fn sync_new_blobs(&mut self, counters: &Counters) -> Result<bool, StoreError> {
        let names = list(&self.blobs)?;
        let mut any = false;
        let mut fresh = HashSet::new();
        for name in &names {
            let new = !self.synced_blobs.contains(name);
            if (new || self.fresh_blobs.contains(name)) && sync_blob(&self.blobs.join(name))? {
                counters.blob_synced();
                any = true;
                if new {
                    fresh.insert(name.clone());
                }
            }
        }
        self.synced_blobs = names;
        self.fresh_blobs = fresh;
        Ok(any)
    }
}

/// 0600 and fsync; `false` if sled removed the blob meanwhile.
fn sync_blob(path: &Path) -> Result<bool, StoreError> {
    match fs::set_permissions(path, Permissions::from_mode(FILE_MODE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("set permissions", path, e)),
        Ok(()) => sync_file(path).map(|()| true),
    }
}

/// The names in `dir`.
fn list(dir: &Path) -> Result<HashSet<OsString>, StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))?;
    entries
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::io("list", dir, e))
}

/// `dir` to 0700 and every file in it to 0600 (not recursive).
fn set_modes(dir: &Path) -> Result<(), StoreError> {
    set_mode(dir, DIR_MODE)?;
    for name in list(dir)? {
        let path = dir.join(name);
        let meta = fs::symlink_metadata(&path).map_err(|e| StoreError::io("stat", &path, e))?;
        if meta.is_file() {
            set_mode(&path, FILE_MODE)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| StoreError::io("set permissions", path, e))
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync", path, e))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    sync_file(dir)
}
