//! The D-Bus contract of tgsecretd: the fixed names, the option keys, the typed errors, the
//! Response codes and the zbus proxies that the daemon, the CLI, the tests and any Rust
//! desktop app share. The contract itself is written in `../shared/design/dbus-api.md` and in
//! the project's ARCHITECTURE.md.
#![warn(missing_docs)]

mod proxies;

pub use proxies::{Dict, ManagerProxy, RequestProxy, SecretChatProxy};

/// Well-known bus name on the session bus.
pub const BUS_NAME: &str = "io.github.tgsecretd";
/// Object path of the manager.
pub const MANAGER_PATH: &str = "/io/github/tgsecretd";
/// The chats' parent object: it serves `org.freedesktop.DBus.ObjectManager`, so
/// `GetManagedObjects` lists every exported chat object with its properties, and
/// `InterfacesAdded` / `InterfacesRemoved` follow chat objects as they come and go.
pub const CHATS_PATH: &str = "/io/github/tgsecretd/chat";
/// Manager interface.
pub const MANAGER_INTERFACE: &str = "io.github.tgsecretd.Manager1";
/// Per-chat interface.
pub const CHAT_INTERFACE: &str = "io.github.tgsecretd.SecretChat1";
/// Request interface (one object per pending call).
pub const REQUEST_INTERFACE: &str = "io.github.tgsecretd.Request1";
/// Prefix of every D-Bus error name.
pub const ERROR_PREFIX: &str = "io.github.tgsecretd.Error";

/// The actions `SendServiceAction` takes, by the short form of their TL names (the full
/// `decryptedMessageAction…` and any case work too): every service action of the secret-chat
/// schema except the protocol's own (`Resend`, `AcceptKey`, `CommitKey`: `NotAllowed`).
pub const ACTIONS: [&str; 10] = [
    "SetMessageTTL",
    "ReadMessages",
    "DeleteMessages",
    "ScreenshotMessages",
    "FlushHistory",
    "Typing",
    "NotifyLayer",
    "Noop",
    "RequestKey",
    "AbortKey",
];

/// Object path of one secret chat: negative ids are written as `_` followed by the absolute value.
pub fn chat_path(chat_id: i32) -> String {
    if chat_id < 0 {
        format!("{CHATS_PATH}/_{}", chat_id.unsigned_abs())
    } else {
        format!("{CHATS_PATH}/{chat_id}")
    }
}

/// Object path of a request: `/io/github/tgsecretd/request/<SENDER>/<TOKEN>`, where SENDER is the
/// caller's unique name without the leading `:` and with every `.` written `_` (as
/// xdg-desktop-portal does), so a caller can predict it and subscribe before calling.
pub fn request_path(sender: &str, token: &str) -> String {
    const REQUEST: &str = "/request/";
    let sender = sender.trim_start_matches(':');
    // Built in place: this runs for every call that takes a handle.
    let mut path =
        String::with_capacity(MANAGER_PATH.len() + REQUEST.len() + sender.len() + 1 + token.len());
    path.push_str(MANAGER_PATH);
    path.push_str(REQUEST);
    path.extend(
        sender
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    path.push('/');
    path.push_str(token);
    path
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

/// The chat id of a chat object path (the inverse of [`chat_path`]).
pub fn chat_id_of_path(path: &str) -> Option<i32> {
    let rest = path.strip_prefix(MANAGER_PATH)?.strip_prefix("/chat/")?;
    let (negative, digits) = match rest.strip_prefix('_') {
        Some(d) => (true, d),
        None => (false, rest),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0') && digits.len() > 1
    {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let id = if negative { -n } else { n };
    if negative && n == 0 {
        return None;
    }
    i32::try_from(id).ok()
}

/// Option keys of `SendEncryptedService`, `SendServiceAction` and `Call` (`a{sv}`); any other
/// key is an `InvalidArgument` error.
pub mod options {
    /// `s`: the last element of the request's object path.
    pub const HANDLE_TOKEN: &str = "handle_token";
    /// `x`: the message's random_id; a retry with the same one, the same message and the same
    /// method (`notify`) returns the first handle; with another, `BadRandomId`.
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
    /// Only from `GetResult`: the request is still pending.
    pub const PENDING: u32 = 3;
}

/// Keys of the result dictionary of a sent request (the `Response` of code
/// [`response::SENT`]).
pub mod result_keys {
    /// `i`: the server date of the (first) message.
    pub const DATE: &str = "date";
    /// `x`: the (first) message's random_id.
    pub const RANDOM_ID: &str = "random_id";
    /// `i`: its out_seq_no as sent (with the parity bit).
    pub const OUT_SEQ_NO: &str = "out_seq_no";
    /// `i`: its in_seq_no as sent.
    pub const IN_SEQ_NO: &str = "in_seq_no";
    /// `i`: the layer it was written in.
    pub const LAYER: &str = "layer";
    /// `aa{sv}`: one dictionary as above per message (several for a split text).
    pub const RESULTS: &str = "results";
    /// `s`: the result as JSON (requests made through `Call`).
    pub const JSON: &str = "json";
    /// `s` (failed): the Telegram error name, e.g. `ENCRYPTION_DECLINED`.
    pub const ERROR: &str = "error";
    /// `s` (failed): words for a person.
    pub const MESSAGE: &str = "message";
}

/// The kinds of inbox event that `SecretChat1.Events` returns: each event is a JSON object whose
/// `"event"` is one of these, with the fields listed (random_ids, dates and fingerprints as
/// JSON numbers; `message` and `action` in the MadelineProto-style JSON of the signals).
pub mod events {
    /// `state` (`requested`, `waiting`, `ready`, `discarded`); when discarded also `by`
    /// (`local`, `peer`, `server`, `logout`, `protocol`) and `reason`, as `Closed` says.
    pub const STATUS: &str = "status";
    /// The key is agreed: `key_fingerprint` (the `KeyFingerprint` property's value) and
    /// `key_visualization` (lower-case hex of the 36 bytes).
    pub const READY: &str = "ready";
    /// A content message from the peer: `random_id`, `date`, `message`.
    pub const MESSAGE: &str = "message";
    /// A service action from the peer: `random_id`, `date`, `action`.
    pub const ACTION: &str = "action";
    /// A peer message of a constructor no layer of the schema has: `random_id`, `layer`,
    /// `constructor` (its id).
    pub const UNSUPPORTED: &str = "unsupported";
    /// The peer's layer went up: `layer`.
    pub const PEER_LAYER: &str = "peer_layer";
    /// The chat's TTL changed (either side): `ttl_seconds`.
    pub const TTL: &str = "ttl";
    /// The peer processed our messages: `random_ids`.
    pub const ACKNOWLEDGED: &str = "acknowledged";
    /// Telegram accepted one of our messages: `random_id`, `date`.
    pub const SENT: &str = "sent";
    /// A re-key finished: `key_fingerprint` of the new key.
    pub const KEY_CHANGED: &str = "key_changed";
    /// A re-key was abandoned: `exchange_id`.
    pub const REKEY_ABORTED: &str = "rekey_aborted";
}

/// Keys of a chat's dictionary (`ListChats`, `GetChat`); the same values as the chat object's
/// properties.
pub mod chat_keys {
    /// `i`.
    pub const CHAT_ID: &str = "chat_id";
    /// `o`: the chat's object.
    pub const PATH: &str = "path";
    /// `x`.
    pub const PEER_USER_ID: &str = "peer_user_id";
    /// `s`: `creator` or `acceptor`.
    pub const ROLE: &str = "role";
    /// `s`: `requested`, `waiting`, `ready`, `discarded`.
    pub const STATE: &str = "state";
    /// `i`.
    pub const LAYER: &str = "layer";
    /// `i`.
    pub const PEER_LAYER: &str = "peer_layer";
    /// `u`.
    pub const OUT_SEQ_NO: &str = "out_seq_no";
    /// `u`.
    pub const IN_SEQ_NO: &str = "in_seq_no";
    /// `u`.
    pub const ACKED_SEQ_NO: &str = "acked_seq_no";
    /// `u`.
    pub const PENDING: &str = "pending";
    /// `x`.
    pub const KEY_FINGERPRINT: &str = "key_fingerprint";
    /// `ay`.
    pub const KEY_VISUALIZATION: &str = "key_visualization";
    /// `i`.
    pub const TTL_SECONDS: &str = "ttl_seconds";
    /// `s`.
    pub const REKEY_STATE: &str = "rekey_state";
    /// `u`.
    pub const MESSAGES_SINCE_REKEY: &str = "messages_since_rekey";
    /// `t`.
    pub const CREATED_AT: &str = "created_at";
    /// `t`.
    pub const NEXT_EVENT: &str = "next_event";
}

/// The Telegram methods `Call` takes, with their `params` (JSON) and the `json` of their
/// Response.
pub mod methods {
    /// `{"peer": P, "message": DecryptedMessage}` → `messages.sentEncryptedMessage` (an array
    /// of them for a split text). P: a secret chat id, an `inputEncryptedChat`, an
    /// `encryptedMessage`/`encryptedMessageService`, an `updateEncryption` /
    /// `updateNewEncryptedMessage`, or any of these with the chat id under `chat_id`/`id`.
    pub const SEND_ENCRYPTED_SERVICE: &str = "messages.sendEncryptedService";
    /// As `messages.sendEncryptedService`, through `messages.sendEncrypted` (the peer's
    /// devices notify).
    pub const SEND_ENCRYPTED: &str = "messages.sendEncrypted";
    /// `{"user_id": int | inputUser, "random_id": int?}` → the new chat (`secretChat`, the
    /// daemon's view). `random_id` is Telegram's: the chat id the client chooses (positive,
    /// at random); given, a retry with the same one returns the chat it made instead of
    /// opening another.
    pub const REQUEST_ENCRYPTION: &str = "messages.requestEncryption";
    /// `{"peer": P}` → the chat (`secretChat`); the key exchange is the daemon's.
    pub const ACCEPT_ENCRYPTION: &str = "messages.acceptEncryption";
    /// `{"chat_id": int, "delete_history": bool?}` → `boolTrue`.
    pub const DISCARD_ENCRYPTION: &str = "messages.discardEncryption";
    /// Every method `Call` takes.
    pub const ALL: [&str; 5] = [
        SEND_ENCRYPTED_SERVICE,
        SEND_ENCRYPTED,
        REQUEST_ENCRYPTION,
        ACCEPT_ENCRYPTION,
        DISCARD_ENCRYPTION,
    ];
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
    /// The action is none of the secret-chat schema: a name `SendServiceAction` does not know,
    /// or a service message (TL or JSON) whose action constructor is unknown.
    UnknownAction(String),
    /// `Call` names a method it does not take (see [`methods::ALL`]).
    UnknownMethod(String),
    /// The action is the protocol's own and cannot be requested.
    NotAllowed(String),
    /// The chat is not in a state that allows this.
    WrongState(String),
    /// The message is larger than a secret-chat message can be.
    TooLarge(String),
    /// An option or argument is wrong (unknown key, wrong type, bad value).
    InvalidArgument(String),
    /// The random_id is 0 where one is needed, or used by another message of the account (of
    /// the same chat, or of another secret chat: Telegram takes a random_id once per account).
    BadRandomId(String),
    /// The account is not logged in.
    NotLoggedIn(String),
    /// No request by that handle.
    NoSuchRequest(String),
    /// Telegram refused a login step or a call made at once; the text starts with its error
    /// name (e.g. `PHONE_CODE_INVALID`).
    Telegram(String),
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

    #[test]
    fn chat_paths_read_back() {
        for id in [0, 1, 42, -7, i32::MIN, i32::MAX] {
            assert_eq!(chat_id_of_path(&chat_path(id)), Some(id), "{id}");
        }
        for bad in [
            "/io/github/tgsecretd/chat/",
            "/io/github/tgsecretd/chat/_",
            "/io/github/tgsecretd/chat/_0",
            "/io/github/tgsecretd/chat/007",
            "/io/github/tgsecretd/chat/2147483648",
            "/io/github/tgsecretd/chat/1a",
            "/io/github/tgsecretd/request/1",
        ] {
            assert_eq!(chat_id_of_path(bad), None, "{bad}");
        }
    }
}
