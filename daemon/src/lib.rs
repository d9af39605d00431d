//! tgsecretd: the daemon that keeps the user's Telegram secret chats.
//!
//! A thin shell around `secret-core`: a durable store (`store`), the Telegram link, one actor
//! per chat, and the D-Bus service. See ARCHITECTURE.md for the code map.
#![warn(missing_docs)]

pub mod store;
