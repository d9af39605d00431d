//! `io.github.tgsecretd.Request1`: one object per pending request, at the handle path the
//! caller can predict (`/io/github/tgsecretd/request/<SENDER>/<TOKEN>`, xdg-desktop-portal's
//! convention), removed once its one `Response` went out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ipc_proto::{response, result_keys as rk};
use zbus::object_server::SignalEmitter;
use zbus::{ObjectServer, OwnedVariant, interface};

use super::convert::{Dict, string_variant, variant};
use crate::records::{RequestPart, RequestRecord, RequestStatus};

/// Handles whose caller called `Close`: their Response is not emitted.
pub type Closed = Arc<Mutex<HashSet<String>>>;

/// `io.github.tgsecretd.Request1`.
pub struct Request {
    pub(super) closed: Closed,
    pub(super) path: String,
}

#[interface(name = "io.github.tgsecretd.Request1")]
impl Request {
    /// Stops watching the request: no Response is emitted (`GetResult` still answers). A
    /// message already stored still goes out: its seq slot is taken, and skipping it would
    /// leave the peer a hole.
    async fn close(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<(), ipc_proto::Error> {
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.path.clone());
        let _ = server.remove::<Request, _>(self.path.as_str()).await;
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
