//! [`StoreError`]: every way the store can fail, typed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Tree;

/// Why a store operation failed.
///
/// `Clone` because one failed group flush fails every batch of the group with the same error.
#[derive(Clone, Debug)]
pub enum StoreError {
    /// Another process (or another `Store` in this one) holds the store's lock.
    Locked {
        /// The store directory.
        dir: PathBuf,
    },
    /// A file operation of the store's own (create, permissions, fsync) failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// What the OS said.
        source: Arc<io::Error>,
    },
    /// sled failed (I/O inside sled, corruption found, an unsupported use).
    Sled {
        /// What was being done.
        op: &'static str,
        /// What sled said.
        source: sled::Error,
    },
    /// A key or value of a batch is over the store's limit; nothing of the batch was applied.
    TooLarge {
        /// The op's tree.
        tree: Tree,
        /// `"key"` or `"value"`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit ([`super::StoreOptions`]).
        limit: usize,
    },
    /// An earlier write could not be made durable, so the store refuses everything since: what
    /// is on disk is unknown until the daemon restarts and sled recovers.
    Poisoned {
        /// The first failure.
        cause: Arc<StoreError>,
    },
    /// The writer thread is gone (the store is closing, or the thread died).
    Stopped,
}

impl StoreError {
    /// An I/O error of the store's own file handling.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// A closure for `map_err` around a sled call.
    pub(crate) fn sled(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
        move |source| StoreError::Sled { op, source }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked { dir } => write!(
                f,
                "another tgsecretd is already using {} (its lock on the store is held)",
                dir.display()
            ),
            StoreError::Io { op, path, source } => {
                write!(f, "store: {op} {}: {source}", path.display())
            }
            StoreError::Sled { op, source } => write!(f, "store: sled {op}: {source}"),
            StoreError::TooLarge {
                tree,
                what,
                len,
                limit,
            } => write!(
                f,
                "store: a {what} of {len} bytes for tree {} is over the limit of {limit} bytes",
                tree.name()
            ),
            StoreError::Poisoned { cause } => write!(
                f,
                "store: refused because an earlier write could not be made durable ({cause}); \
                 restart tgsecretd"
            ),
            StoreError::Stopped => write!(f, "store: the writer thread has stopped"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source.as_ref()),
            StoreError::Sled { source, .. } => Some(source),
            StoreError::Poisoned { cause } => Some(cause.as_ref()),
            _ => None,
        }
    }
}
