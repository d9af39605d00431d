//! tgsecretd: the daemon that keeps the user's Telegram secret chats.
//!
//! A thin shell around `secret-core`: a durable store ([`store`]), the Telegram link
//! (`tglink`), one actor per chat ([`actor`], [`registry`]), the update loop ([`updates`]), the
//! API ([`service`]) and its D-Bus face ([`dbus`]); [`instance::Daemon`] is all of it as one
//! value. See ARCHITECTURE.md for the code map.
#![warn(missing_docs)]

pub mod actor;
pub mod chatstore;
pub mod dbus;
pub mod error;
pub mod errors_api;
pub mod instance;
pub mod notify;
pub mod records;
pub mod registry;
pub mod service;
pub mod shared;
pub mod store;
pub mod updates;
