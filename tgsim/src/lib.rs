//! tgsim, a local Telegram server for secret chats (MTProto 2.0 on TCP loopback).
//!
//! Built in layers. The protocol layers are sans-IO: they take bytes, an injected clock and
//! injected randomness, and return bytes and events.
//!
//! - [`transport`]: the server side of the four MTProto TCP transports (full, abridged,
//!   intermediate, padded intermediate), with transport detection, quick acks and transport
//!   errors.
//! - [`session`]: the server side of MTProto 2.0 encrypted messages (provisioned auth keys,
//!   sessions, salts, msg_id/seq_no checks, service messages, containers, gzip, the
//!   invokeWithLayer / initConnection / invokeAfterMsg wrappers), handing API calls to the
//!   caller and encrypting its answers.
//!
//! - [`server`]: the tokio TCP server that runs connections over those two layers, hands API
//!   calls to an [`api::ApiHandler`] and delivers updates pushed through [`api::UpdateSink`].
//! - [`model`]: the Telegram side of secret chats (accounts, sign-in, chats, the per-account qts
//!   queue, updates), an [`api::ApiHandler`] with optional crash-safe persistence.
//! - [`peer`]: simulated peers, accounts whose client runs inside tgsim on secret-core.
//! - [`faults`]: fault injection on pushed updates and on API calls.
//! - [`admin`]: the admin interface (JSON lines on a Unix socket) and its client.
//! - [`keyfile`]: files of provisioned auth keys.
//! - [`instance`]: all of the above wired together and running ([`instance::Tgsim`]), as the
//!   `tgsim` binary runs it; tests and the offline demo start it in-process.
//!
//! See ARCHITECTURE.md for where the state lives and what is (not) modelled.
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod faults;
pub mod instance;
pub mod keyfile;
pub mod model;
pub mod peer;
pub mod server;
pub mod session;
pub mod transport;
