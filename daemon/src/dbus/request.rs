//! `io.github.tgsecretd.Request1`: one object per pending request, at the handle path the
//! caller can predict (`/io/github/tgsecretd/request/<SENDER>/<TOKEN>`, xdg-desktop-portal's
//! convention), removed once its one `Response` went out.

use std::collections::HashMap;
use std::sync::Arc;

use ipc_proto::{response, result_keys as rk};
use zbus::object_server::SignalEmitter;
use zbus::{OwnedVariant, interface};

use super::Hub;
use super::convert::{Dict, string_variant, variant};
use crate::records::{RequestPart, RequestRecord, RequestStatus};

/// `io.github.tgsecretd.Request1`.
pub struct Request {
    pub(super) hub: Arc<Hub>,
    pub(super) path: String,
}

#[interface(name = "io.github.tgsecretd.Request1")]
impl Request {
    /// Cancels the request if none of its messages has left the daemon: its Response then has
    /// code 1 (cancelled), and each message's seq slot is filled by a Noop so the peer sees no
    /// hole. Otherwise (a send was already attempted, or the request is done) nothing changes
    /// and the Response reports what happened. Either way the handle gets exactly one Response.
    /// A cancellation is durable when `Close` returns: `GetResult` then answers code 1.
    async fn close(&self) -> Result<(), ipc_proto::Error> {
        let Some(service) = self.hub.service() else {
            return Err(ipc_proto::Error::Internal("the daemon is stopping".into()));
        };
        let cancelled = service.cancel(&self.path).await.map_err(super::to_dbus)?;
        tracing::debug!(handle = %self.path, cancelled, "Close");
        Ok(())
    }

    /// The request's one result: `0` sent, `1` cancelled, `2` failed (see
    /// `ipc_proto::result_keys`).
    #[zbus(signal)]
    pub async fn response(
        emitter: &SignalEmitter<'_>,
        code: u32,
        results: HashMap<String, OwnedVariant>,
    ) -> zbus::Result<()>;
}

fn part_dict(p: &RequestPart) -> HashMap<String, OwnedVariant> {
    let mut d = Dict::default();
    d.put(rk::DATE, variant(p.date.unwrap_or(0)))
        .put(rk::RANDOM_ID, variant(p.random_id))
        .put(rk::OUT_SEQ_NO, variant(p.out_seq_no))
        .put(rk::IN_SEQ_NO, variant(p.in_seq_no))
        .put(rk::LAYER, variant(p.layer));
    d.0
}

/// The result as the seed's HTTP API writes it: `messages.sentEncryptedMessage` (an array of
/// them for a split text).
fn sent_json(r: &RequestRecord) -> String {
    let one = |p: &RequestPart| serde_json::json!({"_": "messages.sentEncryptedMessage", "date": p.date.unwrap_or(0)});
    match r.parts.as_slice() {
        [p] => one(p).to_string(),
        parts => serde_json::Value::Array(parts.iter().map(one).collect()).to_string(),
    }
}

/// The Response of a request (code [`response::PENDING`] while it is pending).
pub fn response_of(r: &RequestRecord) -> (u32, HashMap<String, OwnedVariant>) {
    let mut m = Dict::default();
    match &r.status {
        RequestStatus::Cancelled => {
            m.put(
                rk::MESSAGE,
                string_variant("cancelled by Close before it left the daemon"),
            );
            (response::CANCELLED, m.0)
        }
        RequestStatus::Failed { error, message } => {
            m.put(rk::ERROR, string_variant(error))
                .put(rk::MESSAGE, string_variant(message));
            (response::FAILED, m.0)
        }
        RequestStatus::Pending | RequestStatus::Sent => {
            if let Some(first) = r.parts.first() {
                m.0.extend(part_dict(first));
            }
            let all: Vec<HashMap<String, OwnedVariant>> = r.parts.iter().map(part_dict).collect();
            m.put(rk::RESULTS, variant(all));
            if matches!(r.status, RequestStatus::Sent) {
                if r.json {
                    m.put(rk::JSON, string_variant(&sent_json(r)));
                }
                (response::SENT, m.0)
            } else {
                (response::PENDING, m.0)
            }
        }
    }
}
