//! The boundary between the MTProto server (connections, sessions) and the Telegram model that
//! answers API calls. The server hands every unwrapped API query to an [`ApiHandler`]; the model
//! pushes updates for an account through an [`UpdateSink`], which the server routes to that
//! account's live sessions.

use crate::session::AccountId;

/// An RPC error as Telegram sends it (`rpc_error error_code error_message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// The error code (400, 403, 420, 500, ...).
    pub code: i32,
    /// The error name, e.g. `ENCRYPTION_DECLINED` or `FLOOD_WAIT_5`.
    pub message: String,
}

impl RpcError {
    /// An error with a code and a name.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

/// The name of the marker error by which a handler asks the server to close the caller's
/// connection instead of answering (fault injection: a lost connection). Never sent to a client.
pub const CLOSE_CONNECTION: &str = "TGSIM_CLOSE_CONNECTION";

impl RpcError {
    /// The marker error: the server closes the caller's connection and sends no answer; an
    /// in-process caller (a simulated peer) sees a call whose outcome is unknown.
    pub fn close_connection() -> Self {
        RpcError::new(-1, CLOSE_CONNECTION)
    }

    /// Whether this is [`RpcError::close_connection`].
    pub fn is_close_connection(&self) -> bool {
        self.code == -1 && self.message == CLOSE_CONNECTION
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

/// Who is calling, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The account the auth key belongs to.
    pub account: AccountId,
    /// The layer from `invokeWithLayer`, if the client sent one on this connection.
    pub layer: Option<i32>,
    /// The server clock, Unix milliseconds.
    pub now_ms: u64,
    /// The server's id of the caller's TCP connection; `None` for in-process callers (simulated
    /// peers), which have no connection to lose.
    pub connection: Option<u64>,
}

/// Answers API calls. `query` is the boxed TL function (constructor id first, wrappers removed);
/// the answer is the boxed TL result that goes into `rpc_result`.
pub trait ApiHandler: Send + Sync {
    /// Handles one call.
    fn call(&self, ctx: &CallContext, constructor: u32, query: &[u8]) -> Result<Vec<u8>, RpcError>;
}

/// Receives updates (boxed TL `Updates`) for an account, to deliver to its live sessions.
pub trait UpdateSink: Send + Sync {
    /// Queues an update for every live session of `account`.
    fn push(&self, account: AccountId, updates: Vec<u8>);
}

/// An [`UpdateSink`] set after construction: the model needs a sink when it is created, but the
/// server's handle (the real sink) exists only once the server is bound, and the server needs the
/// model. Updates pushed before [`LateSink::set`] or after [`LateSink::clear`] are dropped (the
/// model keeps them queued, so a client still gets them through `updates.getDifference`).
///
/// [`LateSink::clear`] breaks the reference cycle model → sink → server → model when the stack
/// is taken down.
#[derive(Default)]
pub struct LateSink {
    inner: std::sync::RwLock<Option<std::sync::Arc<dyn UpdateSink>>>,
}

impl LateSink {
    /// A sink with no target yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the target; false (and no change) if one is set already.
    pub fn set(&self, sink: std::sync::Arc<dyn UpdateSink>) -> bool {
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.is_some() {
            return false;
        }
        *inner = Some(sink);
        true
    }

    /// Forgets the target (later updates are dropped); a new one may be set.
    pub fn clear(&self) {
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Whether a target is set.
    pub fn is_set(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

impl std::fmt::Debug for LateSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateSink")
            .field("set", &self.is_set())
            .finish()
    }
}

impl UpdateSink for LateSink {
    fn push(&self, account: AccountId, updates: Vec<u8>) {
        let target = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(sink) = target {
            sink.push(account, updates);
        }
    }
}
