//! `send-service`, `call`, `result`.

use ipc_proto::response;
use serde_json::{Value as J, json};
use zbus::ObjectPath;

use super::{Ctx, arg_or_stdin};
use crate::bus::Client;
use crate::cli::{CallArgs, CloseArgs, ResultArgs, SendServiceArgs};
use crate::codec::{decrypted_message_tl, parse_hex, parse_json};
use crate::error::CliError;
use crate::output::{dict_to_json, emit};
use crate::params::to_dict;
use crate::request::{Follow, Outcome, Submitted, options_with_token, submit, subscribe, wait_for};

/// The boxed TL of `--json-message` / `--tl`, if given.
fn message_bytes(a: &SendServiceArgs) -> Result<Option<Vec<u8>>, CliError> {
    if let Some(m) = &a.json_message {
        let v = parse_json("--json-message", &arg_or_stdin(m)?)?;
        return decrypted_message_tl(&v).map(Some);
    }
    if let Some(t) = &a.tl {
        return parse_hex("--tl", &arg_or_stdin(t)?).map(Some);
    }
    Ok(None)
}

/// `send-service CHAT ACTION [--param …]` or `send-service CHAT --json-message M | --tl HEX`.
pub async fn send_service(ctx: &Ctx, a: SendServiceArgs) -> Result<(), CliError> {
    let message = message_bytes(&a)?;
    let follow = ctx.follow(a.wait)?;
    let client = ctx.client().await?;
    let submitted = match (message, &a.action) {
        (Some(tl), _) => send_message(&client, follow, &a, tl).await?,
        (None, Some(action)) => send_action(&client, follow, &a, action).await?,
        (None, None) => {
            return Err(CliError::Usage(
                "give an ACTION, --json-message or --tl".into(),
            ));
        }
    };
    print_submitted(ctx, submitted, false)
}

async fn send_message(
    client: &Client,
    follow: Follow,
    a: &SendServiceArgs,
    tl: Vec<u8>,
) -> Result<Submitted, CliError> {
    let mgr = &client.manager;
    submit(client, follow, |token| async move {
        let opts = options_with_token(&token, a.random_id, a.notify);
        mgr.send_encrypted_service(a.chat, &tl, opts).await
    })
    .await
}

async fn send_action(
    client: &Client,
    follow: Follow,
    a: &SendServiceArgs,
    action: &str,
) -> Result<Submitted, CliError> {
    let mgr = &client.manager;
    submit(client, follow, |token| async move {
        let opts = options_with_token(&token, a.random_id, a.notify);
        mgr.send_service_action(a.chat, action, to_dict(&a.params), opts)
            .await
    })
    .await
}

/// Sends one service action and waits for its outcome (the demo's step).
pub async fn action_and_wait(
    client: &Client,
    follow: Follow,
    chat: i32,
    action: &str,
    params: &[crate::params::Param],
) -> Result<Outcome, CliError> {
    let mgr = &client.manager;
    let follow = Follow {
        wait: true,
        ..follow
    };
    let s = submit(client, follow, |token| async move {
        let opts = options_with_token(&token, None, false);
        mgr.send_service_action(chat, action, to_dict(params), opts)
            .await
    })
    .await?;
    match s {
        Submitted::Done(o) => o.into_result(),
        Submitted::Handle(h) => Err(CliError::failed("NotWaited", h)),
    }
}

/// Prints a handle, or a final outcome (`call`: its `json`).
fn print_submitted(ctx: &Ctx, s: Submitted, call: bool) -> Result<(), CliError> {
    match s {
        Submitted::Handle(h) => {
            emit(ctx.json, &json!({"handle": h}), || h.clone());
            Ok(())
        }
        Submitted::Done(o) => print_outcome(ctx, o.into_result()?, call),
    }
}

fn print_outcome(ctx: &Ctx, o: Outcome, call: bool) -> Result<(), CliError> {
    let json_result = o
        .results
        .get(ipc_proto::result_keys::JSON)
        .and_then(|v| String::try_from(v.try_clone().ok()?).ok());
    match (call, json_result) {
        (true, Some(text)) => {
            let v: J = serde_json::from_str(&text).unwrap_or(J::String(text));
            emit(ctx.json, &v, || {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            });
        }
        _ => emit(ctx.json, &o.to_json(), || o.to_text()),
    }
    Ok(())
}

/// `call METHOD --params JSON`.
pub async fn call(ctx: &Ctx, a: CallArgs) -> Result<(), CliError> {
    let params = arg_or_stdin(&a.params)?;
    parse_json("--params", &params)?;
    let follow = ctx.follow(a.wait)?;
    let client = ctx.client().await?;
    let mgr = &client.manager;
    let method = a.method.as_str();
    let params = params.as_str();
    let s = submit(&client, follow, |token| async move {
        let opts = options_with_token(&token, None, false);
        mgr.call(method, params, opts).await
    })
    .await?;
    print_submitted(ctx, s, true)
}

/// `result HANDLE [--wait]`.
pub async fn result(ctx: &Ctx, a: ResultArgs) -> Result<(), CliError> {
    let follow = ctx.follow(a.wait)?;
    let path = ObjectPath::try_from(a.handle.as_str())
        .map_err(|e| CliError::Usage(format!("{:?} is not an object path: {e}", a.handle)))?;
    let client = ctx.client().await?;
    if follow.wait {
        let stream = subscribe(&client, &a.handle).await?;
        let o = wait_for(&client, &a.handle, stream, follow).await?;
        return print_outcome(ctx, o.into_result()?, true);
    }
    let (code, results) = client.manager.get_result(&path).await?;
    if code == response::PENDING {
        let doc = json!({"handle": a.handle, "code": code, "results": dict_to_json(&results)});
        emit(ctx.json, &doc, || format!("pending {}", a.handle));
        return Ok(());
    }
    let o = Outcome {
        handle: a.handle,
        code,
        results,
    };
    print_outcome(ctx, o.into_result()?, true)
}

/// `close HANDLE`: `Request1.Close`, then `GetResult` (definitive once `Close` returned) says
/// whether the request is cancelled.
pub async fn close(ctx: &Ctx, a: CloseArgs) -> Result<(), CliError> {
    let path = ObjectPath::try_from(a.handle.as_str())
        .map_err(|e| CliError::Usage(format!("{:?} is not an object path: {e}", a.handle)))?;
    let client = ctx.client().await?;
    let request = ipc_proto::RequestProxy::builder(&client.conn)
        .path(path.clone())
        .build()
        .await?;
    match request.close().await {
        Ok(()) => {}
        // A request's object goes once its Response went out: GetResult says how it ended.
        Err(ipc_proto::Error::ZBus(zbus::Error::MethodError(name, _, _)))
            if name.as_str() == "org.freedesktop.DBus.Error.UnknownObject" => {}
        Err(ipc_proto::Error::ZBus(zbus::Error::FDO(e)))
            if matches!(*e, zbus::fdo::Error::UnknownObject(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let (code, results) = client.manager.get_result(&path).await?;
    let o = Outcome {
        handle: a.handle,
        code,
        results,
    };
    let not = |why: String| Err(CliError::failed("NotCancelled", why));
    match o.code {
        response::CANCELLED => {
            emit(ctx.json, &o.to_json(), || format!("cancelled {}", o.handle));
            Ok(())
        }
        response::PENDING => not(format!(
            "a message of {} has left the daemon already: the request goes on (`tgsecret \
             result {} --wait`)",
            o.handle, o.handle
        )),
        response::SENT => not(format!(
            "{} was sent already: {}",
            o.handle,
            o.fields_text()
        )),
        _ => {
            let handle = o.handle.clone();
            match o.into_result() {
                Err(e) => not(format!(
                    "{handle} had ended already: {}: {}",
                    e.name(),
                    e.message()
                )),
                Ok(_) => not(format!("{handle} had ended already")),
            }
        }
    }
}
