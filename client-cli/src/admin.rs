//! A minimal client of tgsim's admin socket (JSON lines on a Unix socket: request
//! `{"id", "cmd", ...args}`, answer `{"id", "ok", "result" | "error"}`; see tgsim's
//! `admin.rs`), for the demo and the tests: the CLI does not link the simulator.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// One admin command; its `result`.
pub fn call(socket: &Path, cmd: &str, args: Value) -> Result<Value, String> {
    let mut req = json!({"id": 1, "cmd": cmd});
    if let (Some(r), Some(a)) = (req.as_object_mut(), args.as_object()) {
        r.extend(a.clone());
    }
    let stream = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut writer = &stream;
    writeln!(writer, "{req}").map_err(|e| format!("admin {cmd}: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("admin {cmd}: {e}"))?;
    let answer: Value =
        serde_json::from_str(&line).map_err(|e| format!("admin {cmd}: bad answer: {e}"))?;
    if answer["ok"] == true {
        Ok(answer["result"].clone())
    } else {
        Err(format!("admin {cmd}: {}", answer["error"]))
    }
}

/// The actions a simulated peer received in a chat (MadelineProto JSON), in order.
pub fn peer_transcript(socket: &Path, peer: i64, chat_id: i32) -> Result<Vec<Value>, String> {
    let chats = call(socket, "peer_chats", json!({"peer": peer}))?;
    Ok(chats
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["chat_id"] == chat_id)
        .and_then(|c| c["transcript"].as_array().cloned())
        .unwrap_or_default())
}
