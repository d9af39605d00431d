//! `chats` and `chat show|request|accept|decline|discard|forget`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ipc_proto::{Dict, chat_keys};
use serde_json::{Value as J, json};
use zbus::Variant;

use super::Ctx;
use crate::bus::Client;
use crate::cli::{ChatCommand, WaitArgs};
use crate::error::CliError;
use crate::output::{dict_to_json, emit, hex_block, key_value_lines, plain, table};

/// The columns of `chats`: (key, header).
const COLUMNS: [(&str, &str); 8] = [
    (chat_keys::CHAT_ID, "CHAT"),
    (chat_keys::PEER_USER_ID, "PEER"),
    (chat_keys::ROLE, "ROLE"),
    (chat_keys::STATE, "STATE"),
    (chat_keys::LAYER, "LAYER"),
    (chat_keys::PEER_LAYER, "PEER_LAYER"),
    (chat_keys::TTL_SECONDS, "TTL"),
    (chat_keys::PENDING, "PENDING"),
];

/// `chats`.
pub async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let chats: Vec<J> = client
        .manager
        .list_chats()
        .await?
        .iter()
        .map(dict_to_json)
        .collect();
    emit(ctx.json, &J::Array(chats.clone()), || chats_table(&chats));
    Ok(())
}

/// The text table of `chats` (columns that no chat has are left out).
pub fn chats_table(chats: &[J]) -> String {
    if chats.is_empty() {
        return "no secret chats".into();
    }
    let cols: Vec<(&str, &str)> = COLUMNS
        .into_iter()
        .filter(|(k, _)| chats.iter().any(|c| c.get(k).is_some()))
        .collect();
    let rows: Vec<Vec<String>> = chats
        .iter()
        .map(|c| {
            cols.iter()
                .map(|(k, _)| c.get(k).map_or_else(|| "-".to_owned(), plain))
                .collect()
        })
        .collect();
    let header: Vec<&str> = cols.iter().map(|(_, h)| *h).collect();
    table(&header, &rows)
}

/// `chat …`.
pub async fn chat(ctx: &Ctx, c: ChatCommand) -> Result<(), CliError> {
    match c {
        ChatCommand::Show { chat } => show(ctx, chat).await,
        ChatCommand::Request {
            user_id,
            access_hash,
            chat_id,
            wait,
        } => request(ctx, user_id, access_hash, chat_id, wait).await,
        ChatCommand::Accept { chat } => {
            ctx.client().await?.manager.accept_chat(chat).await?;
            done(ctx, chat, "accepted")
        }
        ChatCommand::Decline { chat } => {
            ctx.client().await?.manager.decline_chat(chat).await?;
            done(ctx, chat, "declined")
        }
        ChatCommand::Discard {
            chat,
            delete_history,
        } => {
            let client = ctx.client().await?;
            client.manager.discard_chat(chat, delete_history).await?;
            done(ctx, chat, "discarded")
        }
        ChatCommand::Forget { chat } => {
            ctx.client().await?.manager.forget_chat(chat).await?;
            done(ctx, chat, "forgotten")
        }
    }
}

fn done(ctx: &Ctx, chat: i32, what: &str) -> Result<(), CliError> {
    if ctx.json {
        crate::output::say(json!({"chat_id": chat, "done": what}));
    } else {
        ctx.info(format!("chat {chat} {what}"));
    }
    Ok(())
}

/// `chat show CHAT`: the properties, then the key visualization as hex and as a block.
async fn show(ctx: &Ctx, chat: i32) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let mut doc = dict_to_json(&client.manager.get_chat(chat).await?);
    let viz = doc
        .get(chat_keys::KEY_VISUALIZATION)
        .and_then(J::as_str)
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default();
    let block = hex_block(&viz);
    if let Some(m) = doc.as_object_mut() {
        m.insert("key_visualization_block".into(), json!(block));
    }
    emit(ctx.json, &doc, || show_text(&doc, &viz, &block));
    Ok(())
}

fn show_text(doc: &J, viz: &[u8], block: &[String]) -> String {
    let mut shown = doc.clone();
    if let Some(m) = shown.as_object_mut() {
        m.remove(chat_keys::KEY_VISUALIZATION);
        m.remove("key_visualization_block");
    }
    let mut out = key_value_lines(&shown);
    if viz.is_empty() {
        out.push_str("\n\nkey visualization: none (no key yet)");
        return out;
    }
    out.push_str(&format!(
        "\n\nkey visualization ({} bytes):\n  {}\n",
        viz.len(),
        hex::encode(viz)
    ));
    for row in block {
        out.push_str(&format!("\n    {row}"));
    }
    out
}

/// `chat request USER_ID [--access-hash H] [--chat-id ID] [--wait]`: prints the chat id (with
/// `--wait`, once the chat is ready).
async fn request(
    ctx: &Ctx,
    user_id: i64,
    access_hash: Option<i64>,
    chat_id: Option<i32>,
    wait: WaitArgs,
) -> Result<(), CliError> {
    let follow = ctx.follow(wait)?;
    let client = ctx.client().await?;
    let mut opts: HashMap<&str, Variant<'_>> = HashMap::new();
    if let Some(h) = access_hash {
        opts.insert("access_hash", Variant::from(h));
    }
    if let Some(id) = chat_id {
        opts.insert("chat_id", Variant::from(id));
    }
    let chat = client.manager.request_chat(user_id, opts).await?;
    let mut doc = json!({"chat_id": chat});
    if follow.wait {
        let progress = crate::progress::Progress::start(&format!("chat {chat}"), ctx.quiet);
        let state = wait_state(&client, chat, "ready", follow.timeout).await;
        progress.finish();
        doc["state"] = J::from(state?);
    }
    emit(ctx.json, &doc, || chat.to_string());
    Ok(())
}

/// The chat's dictionary from `ListChats`.
pub async fn find_chat(client: &Client, chat: i32) -> Result<Option<Dict>, CliError> {
    let chats = client.manager.list_chats().await?;
    Ok(chats.into_iter().find(|c| {
        c.get(chat_keys::CHAT_ID)
            .and_then(|v| i32::try_from(v).ok())
            == Some(chat)
    }))
}

/// The chat's state from `ListChats`.
pub async fn chat_state(client: &Client, chat: i32) -> Result<Option<String>, CliError> {
    Ok(find_chat(client, chat).await?.and_then(|d| {
        d.get(chat_keys::STATE)
            .and_then(|v| v.try_clone().ok())
            .and_then(|v| String::try_from(v).ok())
    }))
}

/// Polls `ListChats` until the chat is in `want`; `discarded` (when not wanted) is an error.
pub async fn wait_state(
    client: &Client,
    chat: i32,
    want: &str,
    timeout: Duration,
) -> Result<String, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = chat_state(client, chat).await?;
        match state.as_deref() {
            Some(s) if s == want => return Ok(s.to_owned()),
            Some("discarded") => {
                return Err(CliError::failed(
                    "ChatDiscarded",
                    format!("chat {chat} was discarded (the peer declined?)"),
                ));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(CliError::Timeout(format!(
                "chat {chat} is {} after {} s, not {want}",
                state.as_deref().unwrap_or("unknown"),
                timeout.as_secs_f64()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
