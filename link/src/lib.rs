//! The one Telegram link of tgsecretd, and the rules every client in this repository shares.
//!
//! * [`errors`]: the classification of a failed call by code and name — retry after a wait,
//!   retry now, terminal for the request, terminal for the chat, logged out.
//! * [`convert`]: the adapters between the main API's objects (grammers' TL types) and
//!   secret-core's inputs and outputs.
//! * [`session`]: grammers' `Session` on the daemon's store, with the update state staged so
//!   that it becomes durable in the same commit as the updates it covers.
//! * [`link`]: the running link (sender pool with `NoRetries`, calls with a timeout and a
//!   class, the update stream with forced getDifference, login).
//!
//! The daemon uses all of it; tgsim's simulated peers and the offline demo use the
//! classification and the adapters, so every client retries and gives up by the same rules.
#![warn(missing_docs)]

pub mod convert;
pub mod errors;
pub mod link;
pub mod session;

pub use errors::{ErrorClass, TgError, authorization_ended, classify, classify_rpc};
pub use link::{CallError, LOGIN_ORDER, Link, LinkConfig, LoginStep, Updates};
pub use session::{LinkSession, SessionError, SessionSnapshot, SessionStorage};
