//! The D-Bus contract of tgsecretd: the fixed names, the option keys, the typed errors, the
//! Response codes and the zbus proxies that the daemon, the CLI, the tests and any Rust
//! desktop app share. The contract itself is written in `../shared/design/dbus-api.md` and in
//! the project's ARCHITECTURE.md.
#![warn(missing_docs)]

mod proxies;

pub use proxies::{ManagerProxy, RequestProxy};

/// Well-known bus name on the session bus.
pub const BUS_NAME: &str = "io.github.tgsecretd";
/// Object path of the manager.
pub const MANAGER_PATH: &str = "/io/github/tgsecretd";
/// Manager interface.
pub const MANAGER_INTERFACE: &str = "io.github.tgsecretd.Manager1";
/// Per-chat interface.
pub const CHAT_INTERFACE: &str = "io.github.tgsecretd.SecretChat1";
/// Request interface (one object per pending call).
pub const REQUEST_INTERFACE: &str = "io.github.tgsecretd.Request1";
/// Prefix of every D-Bus error name.
pub const ERROR_PREFIX: &str = "io.github.tgsecretd.Error";

/// Object path of one secret chat: negative ids are written as `_` followed by the absolute value.
pub fn chat_path(chat_id: i32) -> String {
    if chat_id < 0 {
        format!("{MANAGER_PATH}/chat/_{}", chat_id.unsigned_abs())
    } else {
        format!("{MANAGER_PATH}/chat/{chat_id}")
    }
}

/// Object path of a request: `/io/github/tgsecretd/request/<SENDER>/<TOKEN>`, where SENDER is the
/// caller's unique name without the leading `:` and with every `.` written `_` (as
/// xdg-desktop-portal does), so a caller can predict it and subscribe before calling.
pub fn request_path(sender: &str, token: &str) -> String {
    let sender: String = sender
        .trim_start_matches(':')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{MANAGER_PATH}/request/{sender}/{token}")
}

/// Whether `token` can be a `handle_token` (one object path element: `[A-Za-z0-9_]`, 1 to 255
/// characters).
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 255
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Option keys of `SendEncryptedService` (`a{sv}`).
pub mod options {
    /// `s`: the last element of the request's object path.
    pub const HANDLE_TOKEN: &str = "handle_token";
    /// `x`: the message's random_id; a retry with the same one returns the first handle.
    pub const RANDOM_ID: &str = "random_id";
    /// `b`: send through `messages.sendEncrypted` (the peer's devices notify) instead of
    /// `messages.sendEncryptedService`.
    pub const NOTIFY: &str = "notify";
}

/// `Response` codes of a request, as xdg-desktop-portal's Request.
pub mod response {
    /// Sent: the results carry `date`, `random_id`, `out_seq_no`, `in_seq_no`, `layer` (and
    /// `results`, one dictionary per message of a split text).
    pub const SENT: u32 = 0;
    /// Cancelled before it left the daemon.
    pub const CANCELLED: u32 = 1;
    /// Failed: the results carry `error` (the Telegram error name) and `message`.
    pub const FAILED: u32 = 2;
}

/// Every error the service returns, named `io.github.tgsecretd.Error.<Variant>`; the string is
/// words for a person.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.github.tgsecretd.Error")]
pub enum Error {
    /// A D-Bus-level failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No secret chat by that id.
    NoSuchChat(String),
    /// The message or the peer does not parse, or is not of the right kind.
    InvalidMessage(String),
    /// The action is the protocol's own and cannot be requested.
    NotAllowed(String),
    /// The chat is not in a state that allows this.
    WrongState(String),
    /// The message is larger than a secret-chat message can be.
    TooLarge(String),
    /// An option or argument is wrong (unknown key, wrong type, bad value).
    InvalidArgument(String),
    /// The random_id is 0 where one is needed, or used by another message.
    BadRandomId(String),
    /// The account is not logged in.
    NotLoggedIn(String),
    /// No request by that handle.
    NoSuchRequest(String),
    /// The daemon failed; try again after it restarted.
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_paths_are_valid_object_paths() {
        assert_eq!(chat_path(42), "/io/github/tgsecretd/chat/42");
        assert_eq!(chat_path(-7), "/io/github/tgsecretd/chat/_7");
        assert_eq!(chat_path(i32::MIN), "/io/github/tgsecretd/chat/_2147483648");
    }

    #[test]
    fn request_paths_follow_the_portal_convention() {
        assert_eq!(
            request_path(":1.42", "t7"),
            "/io/github/tgsecretd/request/1_42/t7"
        );
        assert!(valid_token("abc_09"));
        assert!(!valid_token(""));
        assert!(!valid_token("a/b"));
        assert!(!valid_token("a-b"));
        assert!(!valid_token(&"x".repeat(256)));
    }
}
