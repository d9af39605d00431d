//! The errors the daemon's callers see (D-Bus maps each to `io.github.tgsecretd.Error.<Name>`).

use std::fmt;

use secret_core::chat::SendError;

/// Why a call of the daemon's API was refused. Nothing was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceError {
    /// No secret chat by that id.
    NoSuchChat(i32),
    /// The message (TL or JSON) or the peer does not parse, or names something else.
    InvalidMessage(String),
    /// The action is the protocol's own and cannot be requested.
    NotAllowed(String),
    /// The chat is not in a state that allows this (not ready yet, closed).
    WrongState(String),
    /// The message is larger than a secret-chat message can be.
    TooLarge(String),
    /// An option or argument is wrong (unknown key, wrong type, bad value).
    InvalidArgument(String),
    /// The random_id is 0 where one is needed, or used by another message of the account
    /// (of this chat, or of another chat: Telegram takes a random_id once per account).
    BadRandomId(i64),
    /// The account is not logged in.
    NotLoggedIn,
    /// `SendServiceAction` names no action of the secret-chat schema.
    UnknownAction(String),
    /// `Call` names a method the daemon does not take.
    UnknownMethod(String),
    /// Telegram refused a call made at once (a login step, logout): its error name first.
    Telegram(String),
    /// The daemon failed (its store): try again after it restarted.
    Internal(String),
}

impl ServiceError {
    /// The D-Bus error name's last part (`io.github.tgsecretd.Error.<this>`).
    pub fn name(&self) -> &'static str {
        match self {
            ServiceError::NoSuchChat(_) => "NoSuchChat",
            ServiceError::InvalidMessage(_) => "InvalidMessage",
            ServiceError::NotAllowed(_) => "NotAllowed",
            ServiceError::WrongState(_) => "WrongState",
            ServiceError::TooLarge(_) => "TooLarge",
            ServiceError::InvalidArgument(_) => "InvalidArgument",
            ServiceError::BadRandomId(_) => "BadRandomId",
            ServiceError::NotLoggedIn => "NotLoggedIn",
            ServiceError::UnknownAction(_) => "UnknownAction",
            ServiceError::UnknownMethod(_) => "UnknownMethod",
            ServiceError::Telegram(_) => "Telegram",
            ServiceError::Internal(_) => "Internal",
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::NoSuchChat(id) => write!(f, "no secret chat with id {id}"),
            ServiceError::InvalidMessage(w) => write!(f, "invalid message: {w}"),
            ServiceError::NotAllowed(w) => write!(f, "not allowed: {w}"),
            ServiceError::WrongState(w) => write!(f, "wrong state: {w}"),
            ServiceError::TooLarge(w) => write!(f, "too large: {w}"),
            ServiceError::InvalidArgument(w) => write!(f, "invalid argument: {w}"),
            ServiceError::BadRandomId(id) => {
                write!(
                    f,
                    "random_id {id} is 0 or used by another message (of this chat, or of \
                     another secret chat of the account)"
                )
            }
            ServiceError::NotLoggedIn => write!(f, "the account is not logged in"),
            ServiceError::UnknownAction(a) => write!(
                f,
                "unknown action {a:?}: not a decryptedMessageAction of the secret-chat schema"
            ),
            ServiceError::UnknownMethod(m) => write!(f, "unknown method {m:?}"),
            ServiceError::Telegram(w) => write!(f, "{w}"),
            ServiceError::Internal(w) => write!(f, "internal error: {w}"),
        }
    }
}

impl std::error::Error for ServiceError {}

impl From<SendError> for ServiceError {
    fn from(e: SendError) -> Self {
        let text = e.to_string();
        match e {
            SendError::WrongState { .. } | SendError::RekeyBusy(_) => {
                ServiceError::WrongState(text)
            }
            SendError::NotAllowed { .. } => ServiceError::NotAllowed(text),
            SendError::BadRandomId(id) => ServiceError::BadRandomId(id),
            SendError::TooLarge { .. } => ServiceError::TooLarge(text),
            SendError::InvalidField { .. } => ServiceError::InvalidMessage(text),
            SendError::SeqExhausted => ServiceError::WrongState(text),
        }
    }
}

impl From<crate::error::DaemonError> for ServiceError {
    fn from(e: crate::error::DaemonError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}
