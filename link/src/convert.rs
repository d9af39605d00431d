//! The adapters between Telegram's main-API objects (grammers' TL types) and secret-core's
//! inputs and outputs. One copy, used by the daemon, tgsim's simulated peers and the demo.

use grammers_tl_types::{enums, functions, types};
use secret_core::chat::{ChatRequest, IncomingEncrypted, RemoteChat, SendMethod, Transmit};
use secret_core::dh::{DhConfig, DhConfigCache, DhError};

/// What an `encryptedChat*` tells a chat (`None` for the kinds it does not take: empty, and
/// requested, which starts a chat with [`chat_request`]).
pub fn remote_chat(chat: &enums::EncryptedChat) -> Option<RemoteChat> {
    match chat {
        enums::EncryptedChat::Waiting(w) => Some(RemoteChat::Waiting {
            access_hash: w.access_hash,
        }),
        enums::EncryptedChat::Chat(c) => Some(RemoteChat::Accepted {
            access_hash: c.access_hash,
            g_a_or_b: c.g_a_or_b.clone(),
            key_fingerprint: c.key_fingerprint,
        }),
        enums::EncryptedChat::Discarded(d) => Some(RemoteChat::Discarded {
            history_deleted: d.history_deleted,
        }),
        enums::EncryptedChat::Empty(_) | enums::EncryptedChat::Requested(_) => None,
    }
}

/// An incoming chat request (`encryptedChatRequested`), if that is what `chat` is.
pub fn chat_request(chat: &enums::EncryptedChat) -> Option<ChatRequest> {
    match chat {
        enums::EncryptedChat::Requested(r) => Some(ChatRequest {
            chat_id: r.id,
            access_hash: r.access_hash,
            admin_id: r.admin_id,
            participant_id: r.participant_id,
            g_a: r.g_a.clone(),
        }),
        _ => None,
    }
}

/// The id of any `encryptedChat*`.
pub fn encrypted_chat_id(chat: &enums::EncryptedChat) -> i32 {
    match chat {
        enums::EncryptedChat::Empty(c) => c.id,
        enums::EncryptedChat::Waiting(c) => c.id,
        enums::EncryptedChat::Requested(c) => c.id,
        enums::EncryptedChat::Chat(c) => c.id,
        enums::EncryptedChat::Discarded(c) => c.id,
    }
}

/// The chat id of an `encryptedMessage*`, and what a chat takes of it.
pub fn incoming_encrypted(msg: &enums::EncryptedMessage) -> (i32, IncomingEncrypted) {
    let (chat_id, random_id, date, bytes) = match msg {
        enums::EncryptedMessage::Message(m) => (m.chat_id, m.random_id, m.date, &m.bytes),
        enums::EncryptedMessage::Service(m) => (m.chat_id, m.random_id, m.date, &m.bytes),
    };
    (
        chat_id,
        IncomingEncrypted {
            random_id,
            date,
            data: bytes.clone(),
        },
    )
}

/// `inputEncryptedChat`.
pub fn input_chat(chat_id: i32, access_hash: i64) -> enums::InputEncryptedChat {
    enums::InputEncryptedChat::Chat(types::InputEncryptedChat {
        chat_id,
        access_hash,
    })
}

/// The request that sends a transmit, by its stored method.
pub enum SendRequest {
    /// `messages.sendEncrypted`.
    Encrypted(functions::messages::SendEncrypted),
    /// `messages.sendEncryptedService`.
    Service(functions::messages::SendEncryptedService),
}

/// The request for `t` in the chat `peer` (same random_id and bytes on every attempt).
pub fn send_request(peer: enums::InputEncryptedChat, t: &Transmit) -> SendRequest {
    match t.method {
        SendMethod::SendEncrypted => SendRequest::Encrypted(functions::messages::SendEncrypted {
            silent: false,
            peer,
            random_id: t.random_id,
            data: t.data.clone(),
        }),
        SendMethod::SendEncryptedService => {
            SendRequest::Service(functions::messages::SendEncryptedService {
                peer,
                random_id: t.random_id,
                data: t.data.clone(),
            })
        }
    }
}

/// The server date of a send's answer.
pub fn sent_date(m: &enums::messages::SentEncryptedMessage) -> i32 {
    match m {
        enums::messages::SentEncryptedMessage::Message(m) => m.date,
        enums::messages::SentEncryptedMessage::SentEncryptedFile(m) => m.date,
    }
}

/// The DH parameters of a `messages.dhConfig` answer, validated (and cached by version), and
/// its `random`. `dhConfigNotModified` gives the cached parameters.
pub fn dh_config(
    answer: &enums::messages::DhConfig,
    cache: &mut DhConfigCache,
) -> Result<(DhConfig, Vec<u8>), DhError> {
    match answer {
        enums::messages::DhConfig::Config(c) => {
            let cfg = match cache.get(c.version) {
                Some(cfg) if cfg.p == c.p && cfg.g == c.g => cfg.clone(),
                _ => cache.validate_and_insert(c.g, &c.p, c.version)?,
            };
            Ok((cfg, c.random.clone()))
        }
        enums::messages::DhConfig::NotModified(n) => cache
            .latest()
            .cloned()
            .map(|cfg| (cfg, n.random.clone()))
            .ok_or(DhError::KeyGeneration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_chats_map_to_the_chat_inputs() {
        let chat = enums::EncryptedChat::Chat(types::EncryptedChat {
            id: 5,
            access_hash: 6,
            date: 0,
            admin_id: 1,
            participant_id: 2,
            g_a_or_b: vec![3],
            key_fingerprint: 7,
        });
        assert_eq!(encrypted_chat_id(&chat), 5);
        assert_eq!(
            remote_chat(&chat),
            Some(RemoteChat::Accepted {
                access_hash: 6,
                g_a_or_b: vec![3],
                key_fingerprint: 7
            })
        );
        assert_eq!(chat_request(&chat), None);
        let req = enums::EncryptedChat::Requested(types::EncryptedChatRequested {
            folder_id: None,
            id: 9,
            access_hash: 10,
            date: 0,
            admin_id: 1,
            participant_id: 2,
            g_a: vec![4],
        });
        assert_eq!(remote_chat(&req), None);
        assert_eq!(
            chat_request(&req).map(|r| (r.chat_id, r.g_a)),
            Some((9, vec![4]))
        );
    }
}
