//! The Telegram secret-chat protocol (layer 144, MTProto 2.0 end-to-end) as a sans-IO library.
//!
//! This crate contains no networking code, reads no clock and draws no randomness of its own:
//! time is passed in as Unix seconds and randomness through [`rand::SecureRandom`]. It is therefore
//! fully deterministic, which is what lets its test suite drive two chats through a lossy simulated
//! relay in one process.
#![warn(missing_docs)]
// No input, store or network data may panic this crate: outside tests, unwrap / expect / panic
// are errors, and each remaining exception carries its reason at the place it is allowed.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod chat;
pub mod crypto;
pub mod dh;
#[doc(hidden)]
pub mod fuzzing;
pub mod rand;
pub mod record;
pub mod tl;

/// Who created the secret chat. It fixes the KDF offset and the seq_no parity of each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// The user who called `messages.requestEncryption` (`admin_id`).
    Creator,
    /// The user who accepted the request.
    Acceptor,
}

impl Role {
    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Creator => Role::Acceptor,
            Role::Acceptor => Role::Creator,
        }
    }

    /// The KDF offset `x` for messages *written* by this role: 0 for the creator, 8 for the acceptor.
    pub fn kdf_x(self) -> usize {
        match self {
            Role::Creator => 0,
            Role::Acceptor => 8,
        }
    }

    /// The parity of `out_seq_no` in messages written by this role (1 for the creator).
    pub fn out_parity(self) -> i32 {
        match self {
            Role::Creator => 1,
            Role::Acceptor => 0,
        }
    }
}

impl std::ops::Not for Role {
    type Output = Role;
    fn not(self) -> Role {
        self.peer()
    }
}
