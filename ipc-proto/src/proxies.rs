//! zbus proxies of the service (for the CLI, the tests and Rust desktop apps).

use std::collections::HashMap;

use zbus::{OwnedObjectPath, OwnedVariant, Variant, proxy};

/// `io.github.tgsecretd.Manager1` at `/io/github/tgsecretd`.
#[proxy(
    interface = "io.github.tgsecretd.Manager1",
    default_service = "io.github.tgsecretd",
    default_path = "/io/github/tgsecretd"
)]
pub trait Manager {
    /// Sends a boxed TL `DecryptedMessage` to a secret chat through
    /// `messages.sendEncryptedService` (or `messages.sendEncrypted` with `notify`); returns
    /// the request's handle at once.
    fn send_encrypted_service(
        &self,
        chat_id: i32,
        message: &[u8],
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, crate::Error>;

    /// Opens a secret chat with a user; returns the chat id.
    fn request_chat(
        &self,
        user_id: i64,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<i32, crate::Error>;

    /// Closes a chat (or declines a requested one).
    fn discard_chat(&self, chat_id: i32, delete_history: bool) -> Result<(), crate::Error>;

    /// Accepts a requested chat.
    fn accept_chat(&self, chat_id: i32) -> Result<(), crate::Error>;

    /// Every chat, as dictionaries.
    fn list_chats(&self) -> Result<Vec<HashMap<String, OwnedVariant>>, crate::Error>;

    /// The daemon's status.
    fn get_status(&self) -> Result<HashMap<String, OwnedVariant>, crate::Error>;

    /// The result of a request (code as in `Response`; code 3 while it is pending).
    fn get_result(
        &self,
        handle: &zbus::ObjectPath<'_>,
    ) -> Result<(u32, HashMap<String, OwnedVariant>), crate::Error>;
}

/// `io.github.tgsecretd.Request1`: one per pending request.
#[proxy(
    interface = "io.github.tgsecretd.Request1",
    default_service = "io.github.tgsecretd",
    assume_defaults = false
)]
pub trait Request {
    /// Cancels the request if it has not left the daemon.
    fn close(&self) -> Result<(), crate::Error>;

    /// The request's one result.
    #[zbus(signal)]
    fn response(&self, code: u32, results: HashMap<String, OwnedVariant>) -> zbus::Result<()>;
}
