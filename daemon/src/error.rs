//! The daemon's internal errors (what the application sees is [`crate::service::ServiceError`]).

use std::fmt;

use secret_core::record::RecordError;

use crate::store::StoreError;

/// A failure inside the daemon.
#[derive(Clone, Debug)]
pub enum DaemonError {
    /// The store failed (the daemon cannot go on safely: what is durable is unknown).
    Store(StoreError),
    /// A stored record cannot be read.
    Record(RecordError),
    /// Stored records contradict each other.
    Corrupt(String),
    /// The daemon is shutting down.
    Stopping,
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Store(e) => write!(f, "store: {e}"),
            DaemonError::Record(e) => write!(f, "record: {e}"),
            DaemonError::Corrupt(w) => write!(f, "corrupt store: {w}"),
            DaemonError::Stopping => write!(f, "the daemon is stopping"),
        }
    }
}

impl std::error::Error for DaemonError {}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        DaemonError::Store(e)
    }
}

impl From<RecordError> for DaemonError {
    fn from(e: RecordError) -> Self {
        DaemonError::Record(e)
    }
}
