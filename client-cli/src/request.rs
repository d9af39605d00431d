//! Requests (`SendEncryptedService`, `SendServiceAction`, `Call`) the xdg-desktop-portal way.
//!
//! 1. pick a `handle_token` ([`new_token`]) and predict the handle path
//!    ([`ipc_proto::request_path`] of our unique name and the token);
//! 2. subscribe to `Response` on that path *first* ([`subscribe`]: sender
//!    `io.github.tgsecretd`, interface `io.github.tgsecretd.Request1`, member `Response`);
//! 3. call; the daemon returns the handle (another one for an idempotent retry of an older
//!    request: then subscribe to that one too);
//! 4. ask `GetResult` once subscribed, in case the Response went out before (code 3 means
//!    pending), then wait for the signal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use ipc_proto::{Dict, response};
use serde_json::{Value as J, json};
use zbus::{MatchRule, MessageStream, ObjectPath, OwnedObjectPath, Variant};

use crate::bus::Client;
use crate::error::CliError;
use crate::output::{dict_to_json, variant_to_json};
use crate::progress::Progress;

/// A final result: the handle, the Response code and its results.
#[derive(Debug)]
pub struct Outcome {
    /// The request's handle.
    pub handle: String,
    /// [`response::SENT`], [`response::CANCELLED`] or [`response::FAILED`].
    pub code: u32,
    /// The results.
    pub results: Dict,
}

/// A fresh handle token: `tgsecret_<pid>_<nanoseconds>_<counter>`.
pub fn new_token() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("tgsecret_{}_{nanos}_{n}", std::process::id())
}

/// The Response signals of one handle path.
pub async fn subscribe(client: &Client, path: &str) -> Result<MessageStream, CliError> {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(ipc_proto::BUS_NAME)
        .interface(ipc_proto::REQUEST_INTERFACE)
        .member("Response")
        .path(path.to_owned())
        .build()?;
    Ok(MessageStream::for_match_rule(rule, &client.conn, None).await?)
}

/// How the caller wants to follow a request.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// Wait for the Response (else return after the call with the handle only).
    pub wait: bool,
    /// How long to wait.
    pub timeout: Duration,
    /// No progress line.
    pub quiet: bool,
}

/// What a request returned: only its handle, or its final outcome.
#[derive(Debug)]
pub enum Submitted {
    /// Not waited for.
    Handle(String),
    /// Waited for.
    Done(Outcome),
}

/// Options (`a{sv}`) with `handle_token` set.
pub fn options_with_token<'a>(
    token: &'a str,
    random_id: Option<i64>,
    notify: bool,
) -> HashMap<&'static str, Variant<'a>> {
    let mut o = HashMap::new();
    o.insert(ipc_proto::options::HANDLE_TOKEN, Variant::from(token));
    if let Some(r) = random_id {
        o.insert(ipc_proto::options::RANDOM_ID, Variant::from(r));
    }
    if notify {
        o.insert(ipc_proto::options::NOTIFY, Variant::from(true));
    }
    o
}

/// Runs one request: `call(token)` makes the D-Bus call with that `handle_token`.
pub async fn submit<F, Fut>(client: &Client, follow: Follow, call: F) -> Result<Submitted, CliError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<OwnedObjectPath, ipc_proto::Error>>,
{
    let token = new_token();
    let predicted = ipc_proto::request_path(&client.unique_name()?, &token);
    let stream = match follow.wait {
        true => Some(subscribe(client, &predicted).await?),
        false => None,
    };
    let handle = call(token).await?.to_string();
    let Some(mut stream) = stream else {
        return Ok(Submitted::Handle(handle));
    };
    if handle != predicted {
        stream = subscribe(client, &handle).await?;
    }
    wait_for(client, &handle, stream, follow)
        .await
        .map(Submitted::Done)
}

/// Waits for the outcome of `handle` on `stream` (subscribed already), asking `GetResult`
/// first.
pub async fn wait_for(
    client: &Client,
    handle: &str,
    mut stream: MessageStream,
    follow: Follow,
) -> Result<Outcome, CliError> {
    let path = ObjectPath::try_from(handle)
        .map_err(|e| CliError::Usage(format!("{handle:?} is not an object path: {e}")))?;
    let (code, results) = client.manager.get_result(&path).await?;
    if code != response::PENDING {
        return Ok(outcome(handle, code, results));
    }
    let progress = Progress::start(handle, follow.quiet);
    let got = tokio::time::timeout(follow.timeout, next_response(&mut stream)).await;
    progress.finish();
    match got {
        Ok(r) => r.map(|(code, results)| outcome(handle, code, results)),
        Err(_) => Err(CliError::Timeout(format!(
            "no Response for {handle} after {} s (the request goes on: `tgsecret result \
             {handle} --wait`)",
            follow.timeout.as_secs_f64()
        ))),
    }
}

async fn next_response(stream: &mut MessageStream) -> Result<(u32, Dict), CliError> {
    while let Some(m) = stream.next().await {
        let m = m?;
        if let Ok(r) = m.body().deserialize::<(u32, Dict)>() {
            return Ok(r);
        }
    }
    Err(CliError::Unreachable(
        "the bus connection closed while waiting".into(),
    ))
}

fn outcome(handle: &str, code: u32, results: Dict) -> Outcome {
    Outcome {
        handle: handle.to_owned(),
        code,
        results,
    }
}

impl Outcome {
    /// `Ok(self)` if sent; the error of a failed or cancelled request.
    pub fn into_result(self) -> Result<Outcome, CliError> {
        let text = |k: &str| {
            self.results
                .get(k)
                .map(|v| crate::output::plain(&variant_to_json(v)))
                .unwrap_or_default()
        };
        match self.code {
            response::SENT => Ok(self),
            response::CANCELLED => Err(CliError::Cancelled(format!(
                "request {} was cancelled",
                self.handle
            ))),
            response::FAILED => Err(CliError::failed(
                text(ipc_proto::result_keys::ERROR),
                text(ipc_proto::result_keys::MESSAGE),
            )),
            other => Err(CliError::failed(
                "UnknownResponse",
                format!("request {} ended with code {other}", self.handle),
            )),
        }
    }

    /// The `--json` document: `{"handle", "code", "results"}`.
    pub fn to_json(&self) -> J {
        json!({"handle": self.handle, "code": self.code, "results": dict_to_json(&self.results)})
    }

    /// One text line: `sent HANDLE: date=… random_id=… …` (without the nested `results`).
    pub fn to_text(&self) -> String {
        format!("sent {}: {}", self.handle, self.fields_text())
    }

    /// `date=… in_seq_no=… layer=… out_seq_no=… random_id=…` (sorted, without `results`).
    pub fn fields_text(&self) -> String {
        let mut fields: Vec<(String, String)> = self
            .results
            .iter()
            .filter(|(k, _)| k.as_str() != ipc_proto::result_keys::RESULTS)
            .map(|(k, v)| (k.clone(), crate::output::plain(&variant_to_json(v))))
            .collect();
        fields.sort();
        let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::OwnedVariant;

    fn s(v: &str) -> OwnedVariant {
        OwnedVariant::try_from(Variant::from(v.to_owned())).unwrap_or_else(|_| unreachable!())
    }

    fn with(code: u32, results: Dict) -> Result<Outcome, CliError> {
        outcome("/h", code, results).into_result()
    }

    #[test]
    fn response_codes_map_to_exit_codes() {
        assert!(with(response::SENT, Dict::new()).is_ok());
        let cancelled = with(response::CANCELLED, Dict::new()).err();
        assert_eq!(cancelled.map(|e| e.exit_code()), Some(5));
        let mut r = Dict::new();
        r.insert("error".into(), s("ENCRYPTION_DECLINED"));
        r.insert("message".into(), s("the peer declined"));
        let failed = with(response::FAILED, r).err();
        assert_eq!(
            failed,
            Some(CliError::failed("ENCRYPTION_DECLINED", "the peer declined"))
        );
        assert_eq!(with(9, Dict::new()).err().map(|e| e.exit_code()), Some(1));
    }

    #[test]
    fn tokens_are_valid_and_fresh() {
        let (a, b) = (new_token(), new_token());
        assert!(ipc_proto::valid_token(&a), "{a}");
        assert_ne!(a, b);
    }
}
