//! zbus proxies of the service (for the CLI, the tests and Rust desktop apps). The interfaces
//! they call are checked in as introspection XML (`ipc-proto/interfaces/`), and a test compares
//! that XML with the live service.

use std::collections::HashMap;

use zbus::{OwnedObjectPath, OwnedVariant, Variant, proxy};

/// A dictionary as the service returns it (`a{sv}`).
pub type Dict = HashMap<String, OwnedVariant>;

/// `io.github.tgsecretd.Manager1` at `/io/github/tgsecretd`.
#[proxy(
    interface = "io.github.tgsecretd.Manager1",
    default_service = "io.github.tgsecretd",
    default_path = "/io/github/tgsecretd"
)]
pub trait Manager {
    /// Sends a boxed TL `DecryptedMessage` to a secret chat through
    /// `messages.sendEncryptedService` (or `messages.sendEncrypted` with `notify`); returns
    /// the request's handle once the message is durably stored. Options: see
    /// [`crate::options`].
    fn send_encrypted_service(
        &self,
        chat_id: i32,
        message: &[u8],
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, crate::Error>;

    /// Sends a service action named by its TL name (`decryptedMessageActionSetMessageTTL`, or
    /// only the part after `decryptedMessageAction`, any case), with its fields by their TL
    /// names in `params`; no TL encoding by the caller. Same options and handle as
    /// `SendEncryptedService`.
    fn send_service_action(
        &self,
        chat_id: i32,
        action: &str,
        params: HashMap<&str, Variant<'_>>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, crate::Error>;

    /// A Telegram method by name with its parameters as JSON (the seed's HTTP API form, in
    /// the project's MadelineProto-style JSON); the Response carries the result as JSON
    /// (`json`). See [`crate::methods`].
    fn call(
        &self,
        method: &str,
        params: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, crate::Error>;

    /// Opens a secret chat with a user (option `access_hash` (x)); returns the chat id once
    /// the chat is durably created (the request to Telegram follows).
    fn request_chat(
        &self,
        user_id: i64,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<i32, crate::Error>;

    /// Accepts a requested secret chat that waits for the user.
    fn accept_chat(&self, chat_id: i32) -> Result<(), crate::Error>;

    /// Declines a requested secret chat that waits for the user.
    fn decline_chat(&self, chat_id: i32) -> Result<(), crate::Error>;

    /// Closes a chat (`messages.discardEncryption`); `delete_history` asks the peer to delete
    /// it too. Requests not sent yet end with `CHAT_DISCARDED`.
    fn discard_chat(&self, chat_id: i32, delete_history: bool) -> Result<(), crate::Error>;

    /// Forgets a closed chat: everything the daemon stored for it goes (state, events, request
    /// results), its object is removed and `ChatRemoved` goes out. `WrongState` for an open
    /// chat, or one whose `discardEncryption` Telegram has not taken yet.
    fn forget_chat(&self, chat_id: i32) -> Result<(), crate::Error>;

    /// Every chat, as the dictionaries [`crate::chat_keys`] describes.
    fn list_chats(&self) -> Result<Vec<Dict>, crate::Error>;

    /// One chat, as the dictionary [`crate::chat_keys`] describes.
    fn get_chat(&self, chat_id: i32) -> Result<Dict, crate::Error>;

    /// The daemon's status: `version` (s), `authorization_state` (s), `logged_in` (b),
    /// `self_user_id` (x, once known, while logged in), `accept_policy` (s), and the store's counters since
    /// the start (t each): `store_batches`, `store_rounds`, `store_apply_wait_us`,
    /// `store_sync_wait_us`, `store_flush_us` (see the interface XML).
    fn get_status(&self) -> Result<Dict, crate::Error>;

    /// The result of a request, as its Response carries it; code [`crate::response::PENDING`]
    /// while it is pending.
    fn get_result(&self, handle: &zbus::ObjectPath<'_>) -> Result<(u32, Dict), crate::Error>;

    /// Login, step 1: sends a code to the phone number. Returns `next` (s): `code`.
    fn login_phone(&self, phone: &str) -> Result<Dict, crate::Error>;

    /// Login, step 2: the code received. Returns `next` (s): `done` (with `user_id` (x)) or
    /// `password` (with `hint` (s)).
    fn login_code(&self, code: &str) -> Result<Dict, crate::Error>;

    /// Login, step 3 (two-step verification): the password. Returns `next` (s): `done`.
    fn login_password(&self, password: &str) -> Result<Dict, crate::Error>;

    /// Logs the account out (`auth.logOut`); Telegram discards its secret chats, and so does
    /// the daemon: each closes (`Closed` by `logout`) and its open requests fail with
    /// `LOGGED_OUT`.
    fn logout(&self) -> Result<(), crate::Error>;

    /// A secret chat request waits for `AcceptChat` / `DeclineChat` (the `ask` policy).
    #[zbus(signal)]
    fn chat_requested(&self, chat_id: i32, user_id: i64) -> zbus::Result<()>;

    /// A chat object appeared (a chat we opened, or one someone opened with us); emitted
    /// before any signal of the chat.
    #[zbus(signal)]
    fn chat_added(&self, chat_id: i32, path: zbus::ObjectPath<'_>) -> zbus::Result<()>;

    /// A forgotten chat's object went (`ForgetChat`).
    #[zbus(signal)]
    fn chat_removed(&self, chat_id: i32, path: zbus::ObjectPath<'_>) -> zbus::Result<()>;

    /// The daemon's version.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    /// `ready` (signed in; at start, as the stored session says, until Telegram says
    /// otherwise), `wait_phone`, `wait_code`, `wait_password` (the next login step), or
    /// `logged_out`: the account's authorization ended, by `Logout` or from another device
    /// (the session terminated there, even while the daemon was stopped: `wait_phone` when the
    /// daemon first finds the key logged out, `logged_out` once Telegram confirmed the end);
    /// Telegram discarded its secret chats, and the daemon closes them (`Closed` by `logout`).
    /// After a restart a logged-out account says `wait_phone`. `LoginPhone` signs in again. Every change is
    /// signalled (`PropertiesChanged`, with `SelfUserId`).
    #[zbus(property)]
    fn authorization_state(&self) -> zbus::Result<String>;

    /// Our user id (0 until known, and while logged out).
    #[zbus(property)]
    fn self_user_id(&self) -> zbus::Result<i64>;

    /// Who may open a secret chat without asking: `ask`, `never`, `always`, or user ids.
    #[zbus(property)]
    fn accept_policy(&self) -> zbus::Result<String>;
}

/// `io.github.tgsecretd.SecretChat1` at `/io/github/tgsecretd/chat/<id>` (see
/// [`crate::chat_path`]). The object exists from the chat's first change since the daemon
/// started, or once `GetChat` / `ListChats` named it (idle chats cost nothing until then).
/// Properties reflect what is durably stored; `PropertiesChanged` follows within a fraction of
/// a second (zbus caches properties from it: build with `CacheProperties::No` for the exact
/// value at a Response). Never the key.
#[proxy(
    interface = "io.github.tgsecretd.SecretChat1",
    default_service = "io.github.tgsecretd",
    assume_defaults = false
)]
pub trait SecretChat {
    /// The chat's inbox: up to `limit` events numbered from `from` (the number of an event and
    /// its JSON form). Events older than the inbox keeps are gone; `NextEvent` is the number
    /// the next one will get.
    fn events(&self, from: u64, limit: u32) -> Result<Vec<(u64, String)>, crate::Error>;

    /// A service action from the peer, in order: its random_id, the server date, the action's
    /// TL name and the action as JSON.
    #[zbus(signal)]
    fn service_action(
        &self,
        random_id: i64,
        date: i32,
        action: &str,
        json: &str,
    ) -> zbus::Result<()>;

    /// A content message from the peer, in order (JSON).
    #[zbus(signal)]
    fn message(&self, random_id: i64, date: i32, json: &str) -> zbus::Result<()>;

    /// The chat was closed: by whom (`peer`, `local`, `server`, `protocol`, `logout`) and the reason
    /// as words. (Every state change shows in `PropertiesChanged` of `State`.)
    #[zbus(signal)]
    fn closed(&self, by: &str, reason: &str) -> zbus::Result<()>;

    /// The peer is typing (or uploading…): the `SendMessageAction`'s TL name.
    #[zbus(signal)]
    fn typing(&self, action: &str) -> zbus::Result<()>;

    /// The peer read these messages of ours.
    #[zbus(signal)]
    fn messages_read(&self, random_ids: Vec<i64>) -> zbus::Result<()>;

    /// The peer deleted these messages.
    #[zbus(signal)]
    fn messages_deleted(&self, random_ids: Vec<i64>) -> zbus::Result<()>;

    /// The peer took a screenshot of these messages.
    #[zbus(signal)]
    fn screenshot_taken(&self, random_ids: Vec<i64>) -> zbus::Result<()>;

    /// The peer set the chat's message TTL.
    #[zbus(signal)]
    fn ttl_changed(&self, ttl_seconds: i32) -> zbus::Result<()>;

    /// The peer flushed the history.
    #[zbus(signal)]
    fn history_flushed(&self) -> zbus::Result<()>;

    /// The chat id.
    #[zbus(property)]
    fn chat_id(&self) -> zbus::Result<i32>;
    /// The peer's user id.
    #[zbus(property)]
    fn peer_user_id(&self) -> zbus::Result<i64>;
    /// `creator` or `acceptor`.
    #[zbus(property)]
    fn role(&self) -> zbus::Result<String>;
    /// `requested`, `waiting`, `ready`, `discarded`.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// The layer of our messages (min of ours and the peer's).
    #[zbus(property)]
    fn layer(&self) -> zbus::Result<i32>;
    /// The peer's layer.
    #[zbus(property)]
    fn peer_layer(&self) -> zbus::Result<i32>;
    /// Messages we created (raw out counter).
    #[zbus(property)]
    fn out_seq_no(&self) -> zbus::Result<u32>;
    /// Peer messages processed in order (raw in counter).
    #[zbus(property)]
    fn in_seq_no(&self) -> zbus::Result<u32>;
    /// Our messages the peer acknowledged (raw).
    #[zbus(property)]
    fn acked_seq_no(&self) -> zbus::Result<u32>;
    /// Our messages not yet acknowledged by the peer.
    #[zbus(property)]
    fn pending(&self) -> zbus::Result<u32>;
    /// Fingerprint of the key in use (0 without one).
    #[zbus(property)]
    fn key_fingerprint(&self) -> zbus::Result<i64>;
    /// What users compare: SHA1(initial key)[..16] || SHA256(key)[..20] (empty without a key).
    #[zbus(property)]
    fn key_visualization(&self) -> zbus::Result<Vec<u8>>;
    /// The chat's message TTL in seconds.
    #[zbus(property)]
    fn ttl_seconds(&self) -> zbus::Result<i32>;
    /// The re-key exchange: `idle`, `requested`, `accepted`.
    #[zbus(property)]
    fn rekey_state(&self) -> zbus::Result<String>;
    /// Messages (in and out) under the key in use.
    #[zbus(property)]
    fn messages_since_rekey(&self) -> zbus::Result<u32>;
    /// When the chat was created (Unix seconds).
    #[zbus(property)]
    fn created_at(&self) -> zbus::Result<u64>;
    /// The number the next inbox event will get.
    #[zbus(property)]
    fn next_event(&self) -> zbus::Result<u64>;
}

/// `io.github.tgsecretd.Request1`: one per pending request.
#[proxy(
    interface = "io.github.tgsecretd.Request1",
    default_service = "io.github.tgsecretd",
    assume_defaults = false
)]
pub trait Request {
    /// Cancels the request if none of its messages has left the daemon (the Response is then
    /// [`crate::response::CANCELLED`]; each message's seq slot is filled by a Noop); otherwise
    /// nothing changes and the Response reports what happened. Exactly one Response either way.
    fn close(&self) -> Result<(), crate::Error>;

    /// The request's one result.
    #[zbus(signal)]
    fn response(&self, code: u32, results: HashMap<String, OwnedVariant>) -> zbus::Result<()>;
}
