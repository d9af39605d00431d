//! The D-Bus contract of tgsecretd (names, proxies, error names, result types).
//!
//! A shell for now: the D-Bus layer comes with a later issue. The fixed names live here so that the
//! daemon, the CLI and the tests already agree on them.
#![warn(missing_docs)]

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_paths_are_valid_object_paths() {
        assert_eq!(chat_path(42), "/io/github/tgsecretd/chat/42");
        assert_eq!(chat_path(-7), "/io/github/tgsecretd/chat/_7");
        assert_eq!(chat_path(i32::MIN), "/io/github/tgsecretd/chat/_2147483648");
    }
}
