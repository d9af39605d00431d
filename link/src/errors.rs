//! The one classification of Telegram errors, by code and name (never by display text).
//!
//! | class | what the caller does | errors |
//! | --- | --- | --- |
//! | [`ErrorClass::RetryAfter`] | the same request (same random_id, same bytes) after the wait | `420 FLOOD_WAIT_X`, `FLOOD_PREMIUM_WAIT_X`, `SLOWMODE_WAIT_X`; transport 429 |
//! | [`ErrorClass::RetryNow`] | the same request again, with the caller's backoff | 5xx and negative codes (`INTERNAL`, `TIMEOUT`, `RPC_CALL_FAIL`…), `MSG_WAIT_FAILED` / `MSG_WAIT_TIMEOUT` (any code), I/O, a dropped connection, an answer that did not parse |
//! | [`ErrorClass::TerminalChat`] | nothing more for this chat: it is gone at the server | `ENCRYPTION_DECLINED`, `ENCRYPTION_ALREADY_DECLINED`, `CHAT_ID_INVALID`, `ENCRYPTION_ID_INVALID` |
//! | [`ErrorClass::LoggedOut`] | stop; the account must log in again | 401 (but `SESSION_PASSWORD_NEEDED`), `AUTH_KEY_DUPLICATED`, transport 404 (unknown auth key), a replaced auth key |
//! | [`ErrorClass::TerminalRequest`] | this request will never succeed; what that means is the caller's rule | everything else (`USER_IS_BLOCKED`, `DATA_INVALID`, `ENCRYPTION_ALREADY_ACCEPTED`, 303 migrations outside login, …) |
//!
//! Within [`ErrorClass::LoggedOut`], [`authorization_ended`] names the answers that say the
//! key's authorization itself is over (`AUTH_KEY_UNREGISTERED`, `SESSION_REVOKED`,
//! `SESSION_EXPIRED`, `USER_DEACTIVATED`, `USER_DEACTIVATED_BAN`, from Telegram's list of 401
//! errors), as when the user terminates the session from another device; Telegram discards
//! the secret chats of an authorization that ends. The other logged-out answers
//! (`AUTH_KEY_INVALID`, `AUTH_KEY_PERM_EMPTY`, `AUTH_KEY_DUPLICATED`, an unknown or replaced
//! key, …) say that the key the client holds cannot be used, not that the account's chats are
//! gone. (TDLib draws no such line: any 401 but `SESSION_PASSWORD_NEEDED` on the main DC
//! drops all its data. The daemon closes chats only on the narrower evidence.)
//!
//! A wait is never a reason to give up: a FLOOD_WAIT of an hour is waited out (a secret chat's
//! seq slot cannot be skipped), and nothing here closes a chat because a reconnect failed.
//! What a terminal error means for a chat is the chat's rule: for a message, secret-core closes
//! the chat (a used seq slot that can never be delivered is a permanent hole, digest §9).

use std::fmt;
use std::time::Duration;

use grammers_mtsender::InvocationError;

/// What to do about a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Send the same request again after this wait (the server said how long).
    RetryAfter(Duration),
    /// Send the same request again (transient), with the caller's backoff.
    RetryNow,
    /// This request will never succeed.
    TerminalRequest,
    /// The chat is gone at the server.
    TerminalChat,
    /// The account's authorization is gone.
    LoggedOut,
}

impl ErrorClass {
    /// Whether the same request should be sent again.
    pub fn is_retry(self) -> bool {
        matches!(self, ErrorClass::RetryAfter(_) | ErrorClass::RetryNow)
    }
}

/// A Telegram RPC error as the server names it: `FLOOD_WAIT_31` is name `FLOOD_WAIT`, value 31.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TgError {
    /// The error code (400, 420, 500, …).
    pub code: i32,
    /// The name without its numeric part.
    pub name: String,
    /// The numeric part, if any (`FLOOD_WAIT_31` → 31, `INTERDC_2_CALL_ERROR` → 2).
    pub value: Option<u32>,
}

impl TgError {
    /// Splits a wire error message (`FLOOD_WAIT_31`) into name and value, as grammers does: the
    /// first all-digit word is the value and is taken out of the name.
    pub fn parse(code: i32, message: &str) -> TgError {
        let mut value = None;
        let mut words = Vec::new();
        for w in message.split('_') {
            match w.parse::<u32>() {
                Ok(v) if value.is_none() && !w.is_empty() => value = Some(v),
                _ => words.push(w),
            }
        }
        TgError {
            code,
            name: words.join("_"),
            value,
        }
    }

    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        classify_rpc(self.code, &self.name, self.value)
    }
}

impl fmt::Display for TgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            Some(v) => write!(f, "{} {} ({v})", self.code, self.name),
            None => write!(f, "{} {}", self.code, self.name),
        }
    }
}

/// The class of an RPC error, from its code and name (see the module docs).
pub fn classify_rpc(code: i32, name: &str, value: Option<u32>) -> ErrorClass {
    const CHAT_GONE: [&str; 4] = [
        "ENCRYPTION_DECLINED",
        "ENCRYPTION_ALREADY_DECLINED",
        "CHAT_ID_INVALID",
        "ENCRYPTION_ID_INVALID",
    ];
    const WAITS: [&str; 4] = [
        "FLOOD_WAIT",
        "FLOOD_PREMIUM_WAIT",
        "SLOWMODE_WAIT",
        "FLOOD_TEST_PHONE_WAIT",
    ];
    if code == 420 || WAITS.contains(&name) {
        return ErrorClass::RetryAfter(Duration::from_secs(u64::from(value.unwrap_or(1).max(1))));
    }
    if name == "MSG_WAIT_FAILED" || name == "MSG_WAIT_TIMEOUT" || !(0..500).contains(&code) {
        return ErrorClass::RetryNow;
    }
    if CHAT_GONE.contains(&name) {
        return ErrorClass::TerminalChat;
    }
    if (code == 401 && name != "SESSION_PASSWORD_NEEDED") || name == "AUTH_KEY_DUPLICATED" {
        return ErrorClass::LoggedOut;
    }
    ErrorClass::TerminalRequest
}

/// The 401 names that say the authorization is over (see the module doc).
const AUTHORIZATION_ENDED: &[&str] = &[
    "AUTH_KEY_UNREGISTERED",
    "SESSION_REVOKED",
    "SESSION_EXPIRED",
    "USER_DEACTIVATED",
    "USER_DEACTIVATED_BAN",
];

/// Whether a logged-out answer says that the key's authorization ended (and with it the
/// account's secret chats made with this key), not only that this key cannot be used.
pub fn authorization_ended(class: ErrorClass, name: &str) -> bool {
    class == ErrorClass::LoggedOut && AUTHORIZATION_ENDED.contains(&name)
}

/// The class of a failed grammers call.
pub fn classify(e: &InvocationError) -> ErrorClass {
    use grammers_mtproto::transport::Error as Transport;
    match e {
        InvocationError::Rpc(r) => classify_rpc(r.code, &r.name, r.value),
        InvocationError::Transport(Transport::BadStatus { status: 404 }) => ErrorClass::LoggedOut,
        InvocationError::Transport(Transport::BadStatus { status: 429 }) => {
            ErrorClass::RetryAfter(Duration::from_secs(1))
        }
        InvocationError::Transport(_)
        | InvocationError::Io(_)
        | InvocationError::Dropped(_)
        | InvocationError::Deserialize(_) => ErrorClass::RetryNow,
        InvocationError::Session(inner) => match inner.downcast_ref::<crate::SessionError>() {
            Some(crate::SessionError::AuthKeyReplaced { .. }) => ErrorClass::LoggedOut,
            _ => ErrorClass::RetryNow,
        },
        InvocationError::Authentication(_) => ErrorClass::LoggedOut,
        InvocationError::InvalidDc => ErrorClass::TerminalRequest,
    }
}

/// The Telegram name of a failed call, for results and logs (`FLOOD_WAIT`, `ENCRYPTION_DECLINED`,
/// or a name for a local failure such as `NETWORK_ERROR`).
pub fn error_name(e: &InvocationError) -> String {
    use grammers_mtproto::transport::Error as Transport;
    match e {
        InvocationError::Rpc(r) => r.name.clone(),
        InvocationError::Transport(Transport::BadStatus { status: 404 }) => {
            "AUTH_KEY_UNKNOWN".into()
        }
        InvocationError::Transport(_) | InvocationError::Io(_) | InvocationError::Dropped(_) => {
            "NETWORK_ERROR".into()
        }
        InvocationError::Deserialize(_) => "BAD_ANSWER".into(),
        InvocationError::Session(_) => "SESSION_ERROR".into(),
        InvocationError::Authentication(_) => "AUTHENTICATION_FAILED".into(),
        InvocationError::InvalidDc => "INVALID_DC".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classification_table() {
        let c = |code, msg: &str| TgError::parse(code, msg).class();
        assert_eq!(
            c(420, "FLOOD_WAIT_31"),
            ErrorClass::RetryAfter(Duration::from_secs(31))
        );
        assert_eq!(
            c(420, "FLOOD_WAIT_3600"),
            ErrorClass::RetryAfter(Duration::from_secs(3600)),
            "a long wait is waited out, not a reason to close"
        );
        assert_eq!(
            c(420, "FLOOD_PREMIUM_WAIT_5"),
            ErrorClass::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(c(500, "INTERNAL"), ErrorClass::RetryNow);
        assert_eq!(c(-503, "Timeout"), ErrorClass::RetryNow);
        assert_eq!(c(400, "MSG_WAIT_FAILED"), ErrorClass::RetryNow);
        assert_eq!(c(500, "MSG_WAIT_TIMEOUT"), ErrorClass::RetryNow);
        assert_eq!(c(500, "INTERDC_2_CALL_ERROR"), ErrorClass::RetryNow);
        assert_eq!(c(400, "ENCRYPTION_DECLINED"), ErrorClass::TerminalChat);
        assert_eq!(c(400, "CHAT_ID_INVALID"), ErrorClass::TerminalChat);
        assert_eq!(c(400, "ENCRYPTION_ID_INVALID"), ErrorClass::TerminalChat);
        assert_eq!(
            c(400, "ENCRYPTION_ALREADY_DECLINED"),
            ErrorClass::TerminalChat
        );
        assert_eq!(
            c(400, "ENCRYPTION_ALREADY_ACCEPTED"),
            ErrorClass::TerminalRequest
        );
        assert_eq!(c(403, "USER_IS_BLOCKED"), ErrorClass::TerminalRequest);
        assert_eq!(c(400, "DATA_INVALID"), ErrorClass::TerminalRequest);
        assert_eq!(c(401, "AUTH_KEY_UNREGISTERED"), ErrorClass::LoggedOut);
        assert_eq!(c(401, "SESSION_REVOKED"), ErrorClass::LoggedOut);
        assert_eq!(
            c(401, "SESSION_PASSWORD_NEEDED"),
            ErrorClass::TerminalRequest
        );
        assert_eq!(c(406, "AUTH_KEY_DUPLICATED"), ErrorClass::LoggedOut);
        assert_eq!(c(303, "PHONE_MIGRATE_4"), ErrorClass::TerminalRequest);
    }

    #[test]
    fn an_ended_authorization_is_told_from_an_unusable_key() {
        let ended =
            |code, name: &str| authorization_ended(TgError::parse(code, name).class(), name);
        for name in AUTHORIZATION_ENDED {
            assert!(ended(401, name), "{name}");
        }
        assert!(!ended(406, "AUTH_KEY_DUPLICATED"));
        assert!(!ended(401, "AUTH_KEY_INVALID"));
        assert!(!ended(401, "SESSION_PASSWORD_NEEDED"));
        // Not a logged-out answer whatever its name.
        assert!(!ended(400, "AUTH_KEY_UNREGISTERED"));
        assert!(!authorization_ended(
            ErrorClass::LoggedOut,
            "AUTH_KEY_UNKNOWN"
        ));
    }

    #[test]
    fn names_and_values_split_as_the_server_writes_them() {
        assert_eq!(
            TgError::parse(420, "FLOOD_WAIT_31"),
            TgError {
                code: 420,
                name: "FLOOD_WAIT".into(),
                value: Some(31)
            }
        );
        let e = TgError::parse(500, "INTERDC_2_CALL_ERROR");
        assert_eq!((e.name.as_str(), e.value), ("INTERDC_CALL_ERROR", Some(2)));
        let e = TgError::parse(400, "ENCRYPTION_DECLINED");
        assert_eq!((e.name.as_str(), e.value), ("ENCRYPTION_DECLINED", None));
    }

    #[test]
    fn local_failures_are_retried_and_a_lost_key_is_a_logout() {
        use grammers_mtproto::transport::Error as Transport;
        let io = InvocationError::Io(std::io::Error::other("reset"));
        assert_eq!(classify(&io), ErrorClass::RetryNow);
        assert_eq!(
            classify(&InvocationError::Dropped("gone")),
            ErrorClass::RetryNow
        );
        let unknown_key = InvocationError::Transport(Transport::BadStatus { status: 404 });
        assert_eq!(classify(&unknown_key), ErrorClass::LoggedOut);
        let replaced =
            InvocationError::Session(Box::new(crate::SessionError::AuthKeyReplaced { dc_id: 2 }));
        assert_eq!(classify(&replaced), ErrorClass::LoggedOut);
        let store =
            InvocationError::Session(Box::new(crate::SessionError::Storage("disk full".into())));
        assert_eq!(classify(&store), ErrorClass::RetryNow);
    }
}
