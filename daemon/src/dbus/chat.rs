//! `io.github.tgsecretd.SecretChat1` at `/io/github/tgsecretd/chat/<id>`: a chat's properties
//! (what is durably stored, never the key), its inbox, and signals for what the peer does.
//!
//! Properties are read from the store on every `Get` (the store is the truth; a commit is
//! announced only after it is durable, so a property never shows what a crash could undo).
//! `PropertiesChanged` is emitted by [`super::Hub`]'s flusher, coalesced over
//! [`super::FLUSH_EVERY`].

use std::collections::HashMap;
use std::sync::Weak;

use ipc_proto::chat_keys as ck;
use secret_core::Role;
use secret_core::chat::{Event, Status};
use secret_core::tl::TlJson;
use secret_core::tl::enums::DecryptedMessageAction as A;
use zbus::object_server::SignalEmitter;
use zbus::{OwnedObjectPath, OwnedVariant, interface};

use super::convert::{Dict, string_variant, variant};
use crate::chatstore;
use crate::shared::ChatView;
use crate::store::Store;

/// The most events one `Events` call returns.
pub const MAX_EVENTS: u32 = 1000;

/// `io.github.tgsecretd.SecretChat1` of one chat.
pub struct ChatObject {
    pub(super) chat_id: i32,
    pub(super) store: Weak<Store>,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Creator => "creator",
        Role::Acceptor => "acceptor",
    }
}

impl ChatObject {
    fn view(&self) -> zbus::fdo::Result<ChatView> {
        let store = self
            .store
            .upgrade()
            .ok_or_else(|| zbus::fdo::Error::Failed("the daemon is stopping".into()))?;
        chatstore::load_view(&store, self.chat_id)
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?
            .ok_or_else(|| zbus::fdo::Error::UnknownObject(format!("no chat {}", self.chat_id)))
    }
}

/// `GetAll` reads the chat's view once: the values are one stored state. A view that cannot
/// be read leaves it to the getters (see [`super::readonly`]).
impl super::readonly::AllProperties for ChatObject {
    fn all_properties(&self) -> Option<HashMap<String, OwnedVariant>> {
        let v = match self.view() {
            Ok(v) => v,
            Err(e) => {
                // A chat forgotten a moment ago, or the daemon stopping, is no news.
                let gone = matches!(e, zbus::fdo::Error::UnknownObject(_));
                if !gone && self.store.strong_count() > 0 {
                    tracing::warn!(chat_id = self.chat_id, error = %e, "chat properties not read");
                }
                return None;
            }
        };
        Some(
            view_values(&v, true)
                .into_iter()
                .map(|(k, val)| (k.to_owned(), val))
                .collect(),
        )
    }
}

#[interface(name = "io.github.tgsecretd.SecretChat1")]
impl ChatObject {
    /// Up to `limit` (at most 1000) inbox events numbered from `from`: (number, JSON). The
    /// inbox keeps the last 1000 events of the chat; `NextEvent` is the next number. Each JSON
    /// is an object whose `event` names its kind (`status`, `ready`, `message`, `action`,
    /// `unsupported`, `peer_layer`, `ttl`, `acknowledged`, `sent`, `key_changed`,
    /// `rekey_aborted`: see `ipc_proto::events` for their fields).
    async fn events(&self, from: u64, limit: u32) -> Result<Vec<(u64, String)>, ipc_proto::Error> {
        let store = self
            .store
            .upgrade()
            .ok_or_else(|| ipc_proto::Error::Internal("the daemon is stopping".into()))?;
        let limit = limit.min(MAX_EVENTS) as usize;
        let events = chatstore::inbox(&store, self.chat_id, from, limit)
            .map_err(|e| ipc_proto::Error::Internal(e.to_string()))?;
        Ok(events
            .into_iter()
            .map(|(n, e)| (n, event_json(&e).to_string()))
            .collect())
    }

    /// A service action from the peer, in order: its random_id, the server date, the
    /// action's TL name and the action as JSON (every action the application sees, including
    /// those with their own signal below).
    #[zbus(signal)]
    pub async fn service_action(
        emitter: &SignalEmitter<'_>,
        random_id: i64,
        date: i32,
        action: &str,
        json: &str,
    ) -> zbus::Result<()>;

    /// A content message from the peer, in order (JSON).
    #[zbus(signal)]
    pub async fn message(
        emitter: &SignalEmitter<'_>,
        random_id: i64,
        date: i32,
        json: &str,
    ) -> zbus::Result<()>;

    /// The chat was closed: by whom (`peer`, `local`, `server`, `protocol`, `logout`) and why.
    #[zbus(signal)]
    pub async fn closed(emitter: &SignalEmitter<'_>, by: &str, reason: &str) -> zbus::Result<()>;

    /// The peer is typing (or uploading…): the `SendMessageAction`'s TL name.
    #[zbus(signal)]
    pub async fn typing(emitter: &SignalEmitter<'_>, action: &str) -> zbus::Result<()>;

    /// The peer read these messages of ours.
    #[zbus(signal)]
    pub async fn messages_read(
        emitter: &SignalEmitter<'_>,
        random_ids: Vec<i64>,
    ) -> zbus::Result<()>;

    /// The peer deleted these messages.
    #[zbus(signal)]
    pub async fn messages_deleted(
        emitter: &SignalEmitter<'_>,
        random_ids: Vec<i64>,
    ) -> zbus::Result<()>;

    /// The peer took a screenshot of these messages.
    #[zbus(signal)]
    pub async fn screenshot_taken(
        emitter: &SignalEmitter<'_>,
        random_ids: Vec<i64>,
    ) -> zbus::Result<()>;

    /// The peer set the chat's message TTL.
    #[zbus(signal)]
    pub async fn ttl_changed(emitter: &SignalEmitter<'_>, ttl_seconds: i32) -> zbus::Result<()>;

    /// The peer flushed the history.
    #[zbus(signal)]
    pub async fn history_flushed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    /// The chat id.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn chat_id(&self) -> i32 {
        self.chat_id
    }
    /// The peer's user id.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn peer_user_id(&self) -> zbus::fdo::Result<i64> {
        Ok(self.view()?.summary.peer_user_id)
    }
    /// `creator` or `acceptor`.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn role(&self) -> zbus::fdo::Result<String> {
        Ok(role_name(self.view()?.summary.role).into())
    }
    /// `requested`, `waiting`, `ready`, `discarded`.
    #[zbus(property)]
    async fn state(&self) -> zbus::fdo::Result<String> {
        Ok(self.view()?.summary.state.into())
    }
    /// The layer of our next message (min of ours and the peer's).
    #[zbus(property)]
    async fn layer(&self) -> zbus::fdo::Result<i32> {
        Ok(self.view()?.summary.layer)
    }
    /// The peer's layer.
    #[zbus(property)]
    async fn peer_layer(&self) -> zbus::fdo::Result<i32> {
        Ok(self.view()?.summary.peer_layer)
    }
    /// Messages we created (the raw out counter).
    #[zbus(property)]
    async fn out_seq_no(&self) -> zbus::fdo::Result<u32> {
        Ok(self.view()?.summary.out_seq_no)
    }
    /// Peer messages processed in order (the raw in counter).
    #[zbus(property)]
    async fn in_seq_no(&self) -> zbus::fdo::Result<u32> {
        Ok(self.view()?.summary.in_seq_no)
    }
    /// Our messages the peer acknowledged (raw).
    #[zbus(property)]
    async fn acked_seq_no(&self) -> zbus::fdo::Result<u32> {
        Ok(self.view()?.summary.acked_seq_no)
    }
    /// Our messages not yet acknowledged by the peer.
    #[zbus(property)]
    async fn pending(&self) -> zbus::fdo::Result<u32> {
        Ok(self.view()?.summary.pending)
    }
    /// Fingerprint of the key in use (0 without one).
    #[zbus(property)]
    async fn key_fingerprint(&self) -> zbus::fdo::Result<i64> {
        Ok(self
            .view()?
            .summary
            .key_fingerprint
            .map_or(0, |f| f.to_i64()))
    }
    /// What users compare: SHA1(initial key)[..16] || SHA256(key)[..20] (empty without a key).
    #[zbus(property)]
    async fn key_visualization(&self) -> zbus::fdo::Result<Vec<u8>> {
        Ok(self
            .view()?
            .summary
            .visualization
            .map_or_else(Vec::new, |v| v.to_vec()))
    }
    /// The chat's message TTL in seconds.
    #[zbus(property)]
    async fn ttl_seconds(&self) -> zbus::fdo::Result<i32> {
        Ok(self.view()?.summary.ttl_seconds)
    }
    /// The re-key exchange: `idle`, `requested`, `accepted`.
    #[zbus(property)]
    async fn rekey_state(&self) -> zbus::fdo::Result<String> {
        Ok(self.view()?.summary.rekey.into())
    }
    /// Messages (in and out) under the key in use.
    #[zbus(property)]
    async fn messages_since_rekey(&self) -> zbus::fdo::Result<u32> {
        Ok(self.view()?.summary.messages_since_rekey)
    }
    /// When the chat was created (Unix seconds).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn created_at(&self) -> zbus::fdo::Result<u64> {
        Ok(self.view()?.summary.created_at)
    }
    /// The number the next inbox event will get.
    #[zbus(property)]
    async fn next_event(&self) -> zbus::fdo::Result<u64> {
        Ok(self.view()?.next_event)
    }
}

/// The properties that never change for a chat (annotated `EmitsChangedSignal=const`, never in
/// `PropertiesChanged`).
pub const CONSTANT: [&str; 4] = ["ChatId", "PeerUserId", "Role", "CreatedAt"];

/// The property values of a view, by D-Bus property name (for `PropertiesChanged`), or by
/// [`ipc_proto::chat_keys`] name (for `ListChats` / `GetChat`) with `dbus_names` false.
pub fn view_values(v: &ChatView, dbus_names: bool) -> Vec<(&'static str, OwnedVariant)> {
    let s = &v.summary;
    let rows: [(&str, &str, Option<OwnedVariant>); 18] = [
        ("ChatId", ck::CHAT_ID, variant(s.chat_id)),
        (
            "",
            ck::PATH,
            OwnedObjectPath::try_from(ipc_proto::chat_path(s.chat_id))
                .ok()
                .and_then(variant),
        ),
        ("PeerUserId", ck::PEER_USER_ID, variant(s.peer_user_id)),
        ("Role", ck::ROLE, string_variant(role_name(s.role))),
        ("State", ck::STATE, string_variant(s.state)),
        ("Layer", ck::LAYER, variant(s.layer)),
        ("PeerLayer", ck::PEER_LAYER, variant(s.peer_layer)),
        ("OutSeqNo", ck::OUT_SEQ_NO, variant(s.out_seq_no)),
        ("InSeqNo", ck::IN_SEQ_NO, variant(s.in_seq_no)),
        ("AckedSeqNo", ck::ACKED_SEQ_NO, variant(s.acked_seq_no)),
        ("Pending", ck::PENDING, variant(s.pending)),
        (
            "KeyFingerprint",
            ck::KEY_FINGERPRINT,
            variant(s.key_fingerprint.map_or(0, |f| f.to_i64())),
        ),
        (
            "KeyVisualization",
            ck::KEY_VISUALIZATION,
            variant(s.visualization.map_or_else(Vec::new, |v| v.to_vec())),
        ),
        ("TtlSeconds", ck::TTL_SECONDS, variant(s.ttl_seconds)),
        ("RekeyState", ck::REKEY_STATE, string_variant(s.rekey)),
        (
            "MessagesSinceRekey",
            ck::MESSAGES_SINCE_REKEY,
            variant(s.messages_since_rekey),
        ),
        ("CreatedAt", ck::CREATED_AT, variant(s.created_at)),
        ("NextEvent", ck::NEXT_EVENT, variant(v.next_event)),
    ];
    rows.into_iter()
        .filter_map(|(dbus, key, val)| {
            let name = if dbus_names { dbus } else { key };
            (!name.is_empty()).then_some((name, val?))
        })
        .collect()
}

/// A view as the dictionary of `ListChats` / `GetChat`.
pub fn view_dict(v: &ChatView) -> HashMap<String, OwnedVariant> {
    let mut d = Dict::default();
    for (k, val) in view_values(v, false) {
        d.put(k, Some(val));
    }
    d.0
}

/// Who closed a chat and why, for the `Closed` signal.
fn closed_by(s: &Status) -> Option<(&'static str, String)> {
    use secret_core::chat::DiscardReason as R;
    let Status::Discarded(reason) = s else {
        return None;
    };
    let by = match reason {
        R::Local { .. } => "local",
        R::Remote { .. } => "peer",
        R::ServerRefused { .. } => "server",
        R::LoggedOut => "logout",
        R::Protocol(_) | R::CannotSend { .. } => "protocol",
    };
    Some((by, crate::actor::failure_of(reason).1))
}

/// An inbox event as `Events` gives it: an object whose `"event"` names it
/// ([`ipc_proto::events`]), with the fields of that kind; messages and actions in the
/// MadelineProto-style JSON of the signals, key fingerprints as the `KeyFingerprint`
/// property's `x`, the key visualization as lower-case hex.
pub fn event_json(e: &Event) -> serde_json::Value {
    use ipc_proto::events as ev;
    use serde_json::json;
    match e {
        Event::StatusChanged(s) => {
            let mut v = json!({"event": ev::STATUS, "state": s.name()});
            if let Some((by, reason)) = closed_by(s) {
                v["by"] = by.into();
                v["reason"] = reason.into();
            }
            v
        }
        Event::Ready {
            key_fingerprint,
            visualization,
        } => json!({
            "event": ev::READY,
            "key_fingerprint": key_fingerprint.to_i64(),
            "key_visualization": visualization.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
        Event::Message {
            random_id,
            date,
            message,
        } => json!({
            "event": ev::MESSAGE, "random_id": random_id, "date": date, "message": message.to_json(),
        }),
        Event::Action {
            random_id,
            date,
            action,
        } => json!({
            "event": ev::ACTION, "random_id": random_id, "date": date, "action": action.to_json(),
        }),
        Event::Unsupported {
            random_id,
            layer,
            constructor,
        } => json!({
            "event": ev::UNSUPPORTED, "random_id": random_id, "layer": layer,
            "constructor": constructor,
        }),
        Event::PeerLayer(layer) => json!({"event": ev::PEER_LAYER, "layer": layer}),
        Event::TtlChanged(ttl) => json!({"event": ev::TTL, "ttl_seconds": ttl}),
        Event::Acknowledged(ids) => json!({"event": ev::ACKNOWLEDGED, "random_ids": ids}),
        Event::Sent { random_id, date } => {
            json!({"event": ev::SENT, "random_id": random_id, "date": date})
        }
        Event::KeyChanged(fp) => json!({"event": ev::KEY_CHANGED, "key_fingerprint": fp.to_i64()}),
        Event::RekeyAborted { exchange_id } => {
            json!({"event": ev::REKEY_ABORTED, "exchange_id": exchange_id})
        }
    }
}

/// Emits the signals of one event (nothing for events that only change properties).
pub async fn emit_event(emitter: &SignalEmitter<'_>, e: Event) -> zbus::Result<()> {
    match e {
        Event::Action {
            random_id,
            date,
            action,
        } => {
            let json = action.to_json().to_string();
            ChatObject::service_action(emitter, random_id, date, action.constructor_name(), &json)
                .await?;
            emit_action(emitter, action).await
        }
        Event::Message {
            random_id,
            date,
            message,
        } => {
            let json = message.to_json().to_string();
            ChatObject::message(emitter, random_id, date, &json).await
        }
        Event::StatusChanged(s) => match closed_by(&s) {
            Some((by, why)) => ChatObject::closed(emitter, by, &why).await,
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

async fn emit_action(emitter: &SignalEmitter<'_>, action: A) -> zbus::Result<()> {
    match action {
        A::Typing(t) => ChatObject::typing(emitter, t.action.constructor_name()).await,
        A::ReadMessages(m) => ChatObject::messages_read(emitter, m.random_ids).await,
        A::DeleteMessages(m) => ChatObject::messages_deleted(emitter, m.random_ids).await,
        A::ScreenshotMessages(m) => ChatObject::screenshot_taken(emitter, m.random_ids).await,
        A::SetMessageTTL(t) => ChatObject::ttl_changed(emitter, t.ttl_seconds).await,
        A::FlushHistory(_) => ChatObject::history_flushed(emitter).await,
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use secret_core::chat::{DiscardReason, Event, Status};
    use secret_core::crypto::KeyFingerprint;
    use secret_core::tl::{enums, types};
    use serde_json::json;

    use super::event_json;

    #[test]
    fn every_event_kind_has_its_documented_json() {
        let ttl = enums::DecryptedMessageAction::SetMessageTTL(
            types::DecryptedMessageActionSetMessageTTL { ttl_seconds: 7 },
        );
        let cases = [
            (
                Event::StatusChanged(Status::Ready),
                json!({"event": "status", "state": "ready"}),
            ),
            (
                Event::StatusChanged(Status::Discarded(DiscardReason::Remote {
                    history_deleted: false,
                })),
                json!({"event": "status", "state": "discarded", "by": "peer",
                       "reason": crate::actor::failure_of(&DiscardReason::Remote {
                           history_deleted: false,
                       }).1}),
            ),
            (
                Event::Ready {
                    key_fingerprint: KeyFingerprint::from_i64(-2),
                    visualization: [0xab; 36],
                },
                json!({"event": "ready", "key_fingerprint": -2,
                       "key_visualization": "ab".repeat(36)}),
            ),
            (
                Event::Action {
                    random_id: -9,
                    date: 100,
                    action: ttl,
                },
                json!({"event": "action", "random_id": -9, "date": 100, "action":
                       {"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 7}}),
            ),
            (
                Event::Unsupported {
                    random_id: 1,
                    layer: 200,
                    constructor: 0xdead_beef,
                },
                json!({"event": "unsupported", "random_id": 1, "layer": 200,
                       "constructor": 0xdead_beef_u32}),
            ),
            (
                Event::PeerLayer(144),
                json!({"event": "peer_layer", "layer": 144}),
            ),
            (
                Event::TtlChanged(5),
                json!({"event": "ttl", "ttl_seconds": 5}),
            ),
            (
                Event::Acknowledged(vec![1, -2]),
                json!({"event": "acknowledged", "random_ids": [1, -2]}),
            ),
            (
                Event::Sent {
                    random_id: 3,
                    date: 4,
                },
                json!({"event": "sent", "random_id": 3, "date": 4}),
            ),
            (
                Event::KeyChanged(KeyFingerprint::from_i64(11)),
                json!({"event": "key_changed", "key_fingerprint": 11}),
            ),
            (
                Event::RekeyAborted { exchange_id: 12 },
                json!({"event": "rekey_aborted", "exchange_id": 12}),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(event_json(&e), want, "{e:?}");
        }
    }
}
