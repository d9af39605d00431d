//! `watch [CHAT]`: every signal the daemon sends under `/io/github/tgsecretd` (the manager's
//! `ChatRequested`, the chats' `SecretChat1` signals and `PropertiesChanged`, the chats'
//! ObjectManager's `InterfacesAdded` / `InterfacesRemoved`, the requests' `Response`), or only
//! the signals on one chat's object (not its `InterfacesAdded` / `InterfacesRemoved`, which
//! come from the chats' parent), one line each until Ctrl-C.

use futures_util::StreamExt;
use serde_json::{Map, Value as J, json};
use zbus::{MatchRule, Message, MessageStream, Structure};

use super::Ctx;
use crate::cli::WatchArgs;
use crate::error::CliError;
use crate::output::{plain, variant_to_json};

/// The argument names of the signals the daemon sends (from ipc-proto's proxies).
pub fn arg_names(member: &str) -> &'static [&'static str] {
    match member {
        "ChatRequested" => &["chat_id", "user_id"],
        "ChatAdded" | "ChatRemoved" => &["chat_id", "path"],
        "ServiceAction" => &["random_id", "date", "action", "json"],
        "Message" => &["random_id", "date", "json"],
        "Closed" => &["by", "reason"],
        "Typing" => &["action"],
        "MessagesRead" | "MessagesDeleted" | "ScreenshotTaken" => &["random_ids"],
        "TtlChanged" => &["ttl_seconds"],
        "StateChanged" => &["state"],
        "Response" => &["code", "results"],
        "PropertiesChanged" => &["interface", "changed", "invalidated"],
        // org.freedesktop.DBus.ObjectManager's, by the specification's names.
        "InterfacesAdded" => &["object_path", "interfaces_and_properties"],
        "InterfacesRemoved" => &["object_path", "interfaces"],
        _ => &[],
    }
}

/// The match rule: the daemon's signals under its manager path, or one chat's.
pub fn rule(chat: Option<i32>) -> Result<MatchRule<'static>, CliError> {
    let b = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(ipc_proto::BUS_NAME);
    let b = match chat {
        Some(id) => b.path(ipc_proto::chat_path(id)),
        None => b.path_namespace(ipc_proto::MANAGER_PATH),
    };
    Ok(b.build()?)
}

/// A signal as a JSON document: `{"signal", "interface", "path", "chat_id"?, "args"}`; a
/// `json` argument that parses is embedded as JSON.
pub fn signal_json(m: &Message) -> J {
    let h = m.header();
    let member = h.member().map(|s| s.to_string()).unwrap_or_default();
    let path = h.path().map(|p| p.to_string()).unwrap_or_default();
    let values: Vec<J> = match m.body().is_empty() {
        true => Vec::new(),
        false => m
            .body()
            .deserialize::<Structure>()
            .map(|s| s.fields().iter().map(variant_to_json).collect())
            .unwrap_or_default(),
    };
    let names = arg_names(&member);
    let mut args = Map::new();
    for (i, v) in values.into_iter().enumerate() {
        let name = names
            .get(i)
            .map_or_else(|| format!("arg{i}"), |n| (*n).to_owned());
        let v = match (name.as_str(), &v) {
            ("json", J::String(s)) => serde_json::from_str(s).unwrap_or(v),
            _ => v,
        };
        args.insert(name, v);
    }
    let mut doc = json!({
        "signal": member,
        "interface": h.interface().map(|i| i.to_string()),
        "path": path,
        "args": args,
    });
    if let Some(id) = ipc_proto::chat_id_of_path(&path) {
        doc["chat_id"] = J::from(id);
    }
    doc
}

/// The text line of a signal: `[chat 42] ServiceAction random_id=… action=… json={…}`.
pub fn signal_text(doc: &J) -> String {
    let path = doc["path"].as_str().unwrap_or_default();
    let whence = match doc.get("chat_id") {
        Some(id) => format!("chat {id}"),
        None if path == ipc_proto::MANAGER_PATH => "manager".into(),
        None if path == ipc_proto::CHATS_PATH => "chats".into(),
        None => format!("request {}", path.rsplit('/').next().unwrap_or(path)),
    };
    let args: Vec<String> = doc["args"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", plain(v)))
        .collect();
    let signal = doc["signal"].as_str().unwrap_or_default();
    format!("[{whence}] {signal} {}", args.join(" "))
        .trim_end()
        .to_owned()
}

/// `watch`.
pub async fn watch(ctx: &Ctx, a: WatchArgs) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let mut stream = MessageStream::for_match_rule(rule(a.chat)?, &client.conn, None).await?;
    // One listener for the whole watch, registered before "watching" is printed: it keeps a
    // Ctrl-C that arrives while a signal is being printed. (A `ctrl_c()` future made afresh in
    // each turn of the loop is not listening between turns, and tokio's handler has replaced
    // the default action by then: such a Ctrl-C was lost and the watch never ended.)
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| CliError::failed("Signal", format!("cannot listen for Ctrl-C: {e}")))?;
    if !ctx.quiet {
        eprintln!("watching {} (Ctrl-C stops)", ipc_proto::BUS_NAME);
    }
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(m)) => print_signal(ctx, &m),
                Some(Err(e)) => return Err(e.into()),
                None => return Err(CliError::Unreachable("the bus connection closed".into())),
            },
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

fn print_signal(ctx: &Ctx, m: &Message) {
    let doc = signal_json(m);
    if ctx.json {
        crate::output::say(doc);
    } else {
        crate::output::say(signal_text(&doc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chats_object_manager_signals_are_named_and_placed() {
        assert_eq!(
            arg_names("InterfacesAdded"),
            ["object_path", "interfaces_and_properties"]
        );
        assert_eq!(
            arg_names("InterfacesRemoved"),
            ["object_path", "interfaces"]
        );
        let doc = json!({
            "signal": "InterfacesRemoved",
            "path": ipc_proto::CHATS_PATH,
            "args": {"object_path": ipc_proto::chat_path(7), "interfaces": [ipc_proto::CHAT_INTERFACE]},
        });
        assert_eq!(
            signal_text(&doc),
            "[chats] InterfacesRemoved interfaces=[\"io.github.tgsecretd.SecretChat1\"] \
             object_path=/io/github/tgsecretd/chat/7"
        );
    }
}
