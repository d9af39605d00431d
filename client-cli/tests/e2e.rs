//! End to end: the `tgsecret` binary against a real tgsecretd on a private bus, talking to tgsim
//! with Bob, a simulated peer that echoes every action (needs `dbus-daemon`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestLab, ok, ok_json, run, run_with_stdin, stderr, stdout};
use serde_json::{Value, json};

fn ttl_of(v: &Value) -> Option<i64> {
    (v["_"] == "decryptedMessageActionSetMessageTTL").then(|| v["ttl_seconds"].as_i64())?
}

#[test]
fn chat_request_chats_and_send_service_wait() {
    let t = TestLab::start("send", "always", &[]);
    let chat: i32 = ok(&t.args(&["chat", "request", "7002"]))
        .trim()
        .parse()
        .unwrap();
    t.wait_state(chat, "ready");
    let table = ok(&t.args(&["chats"]));
    assert!(table.starts_with("CHAT"), "{table}");
    assert!(
        table.contains(&chat.to_string()) && table.contains("ready"),
        "{table}"
    );

    let chat_s = chat.to_string();
    let v = ok_json(&t.args(&[
        "send-service",
        &chat_s,
        "SetMessageTTL",
        "--param",
        "ttl_seconds=30",
        "--wait",
        "--json",
    ]));
    assert_eq!(v["code"], 0, "{v}");
    assert!(
        v["handle"]
            .as_str()
            .unwrap()
            .starts_with("/io/github/tgsecretd/request/")
    );
    assert!(v["results"]["random_id"].is_i64(), "{v}");
    assert_eq!(v["results"]["layer"], 144);
    let transcript = t.wait_transcript(chat, |a| ttl_of(a) == Some(30));
    assert!(
        transcript.iter().any(|a| ttl_of(a) == Some(30)),
        "Bob's transcript: {transcript:?}"
    );
}

#[test]
fn status_json() {
    let t = TestLab::start("status", "always", &[]);
    let v = ok_json(&t.args(&["--json", "status"]));
    assert_eq!(v["self_user_id"], 7001, "{v}");
    assert_eq!(v["logged_in"], true, "{v}");
    assert!(v["version"].is_string(), "{v}");
    // The store's counters: the login was stored, so a round was made durable, and every
    // batch waited at least through its own round.
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    assert!(n("store_batches") >= 1 && n("store_rounds") >= 1, "{v}");
    assert!(n("store_flush_us") > 0, "{v}");
    assert!(n("store_sync_wait_us") >= n("store_flush_us"), "{v}");
    let _ = n("store_apply_wait_us");
    let text = ok(&t.args(&["status"]));
    assert!(
        text.contains("self_user_id") && text.contains("7001"),
        "{text}"
    );
}

/// `tgsecret watch` as a child: its stdout lines through a channel, once it listens.
struct Watcher {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(args: &[&str]) -> Watcher {
        let mut child = Command::new(common::exe())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.starts_with("watching"), "watch said {first:?}");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Watcher { child, lines }
    }

    /// Lines until `pred` holds for one (20 s at most): all of them.
    fn until(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = pred(&l);
                    got.push(l);
                    if done {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        got
    }

    /// Ctrl-C; the exit code (a watch still running 20 s later is killed and fails the test,
    /// rather than hanging it).
    fn interrupt(mut self) -> Option<i32> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        exit_within(&mut self.child, Duration::from_secs(20)).code()
    }
}

/// The child's exit status, waited for at most `patience` (then it is killed and the test
/// fails).
fn exit_within(child: &mut std::process::Child, patience: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watch still running {patience:?} after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Ctrl-C that arrives while `watch` is writing a line still ends it, with 0. Here the
/// write is held on a full stdout pipe (nobody reads it while Bob sends) when the SIGINT
/// comes; the pipe is read only after it. A listener made afresh in each turn of the watch
/// loop is not listening then, and the watch never ended (seen in CI).
#[test]
fn watch_ends_on_a_ctrl_c_that_arrives_while_it_prints() {
    let t = TestLab::start("watchint", "always", &[]);
    let chat = t.ready_chat();
    let mut child = Command::new(common::exe())
        .args(t.args(&["watch"]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("watching"), "watch said {first:?}");
    // Two signals per message (ServiceAction, TtlChanged), over 100 bytes each: well past a
    // 64 KiB pipe.
    for n in 0..800 {
        let action = json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": n});
        tgsecret_cli::admin::call(
            &t.lab.admin,
            "peer_send",
            json!({"peer": 7002, "chat_id": chat, "action": action}),
        )
        .unwrap();
    }
    // Until a thread of the watch waits in a pipe write.
    let pid = child.id();
    let writing = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| {
                std::fs::read_to_string(task.path().join("wchan"))
                    .is_ok_and(|w| w.contains("pipe_write"))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !writing() {
        assert!(
            Instant::now() < deadline,
            "watch never blocked on its stdout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(target, rustix::process::Signal::INT).unwrap();
    let mut out = child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let status = exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let drained = drain.join().unwrap().unwrap();
    assert!(drained > 16 * 1024, "{drained} bytes");
}

#[test]
fn json_message_through_send_encrypted_service_and_watch() {
    let t = TestLab::start("watch", "always", &[]);
    let chat = t.ready_chat();
    let chat_s = chat.to_string();
    let json_w = Watcher::start(&t.args(&["--json", "watch", &chat_s]));
    let text_w = Watcher::start(&t.args(&["watch"]));
    let message = json!({"_": "decryptedMessageService", "random_id": 0,
        "action": {"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 45}});
    let out = ok(&t.args(&[
        "send-service",
        &chat_s,
        "--json-message",
        &message.to_string(),
        "--wait",
    ]));
    assert!(
        out.starts_with("sent /io/github/tgsecretd/request/"),
        "{out}"
    );
    // Bob echoes the action: a ServiceAction and a TtlChanged on the chat's object.
    let lines = json_w.until(|l| l.contains("\"TtlChanged\""));
    let docs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let action = docs
        .iter()
        .find(|d| d["signal"] == "ServiceAction")
        .expect("ServiceAction");
    assert_eq!(action["chat_id"], chat);
    assert_eq!(ttl_of(&action["args"]["json"]), Some(45), "{action}");
    assert!(
        docs.iter()
            .any(|d| d["signal"] == "TtlChanged" && d["args"]["ttl_seconds"] == 45)
    );
    // The unfiltered text watcher sees the Response and the chat's signals.
    let text = text_w.until(|l| l.contains("TtlChanged"));
    assert!(
        text.iter()
            .any(|l| l.starts_with("[request ") && l.contains("Response code=0")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.starts_with(&format!("[chat {chat}] ServiceAction"))),
        "{text:?}"
    );
    assert_eq!(json_w.interrupt(), Some(0));
    assert_eq!(text_w.interrupt(), Some(0));
    let transcript = t.wait_transcript(chat, |a| ttl_of(a) == Some(45));
    assert!(
        transcript.iter().any(|a| ttl_of(a) == Some(45)),
        "{transcript:?}"
    );
}

#[test]
fn handles_results_and_idempotent_retries() {
    let t = TestLab::start("handles", "always", &[]);
    let chat_s = t.ready_chat().to_string();
    let send = |rid: &str| {
        ok(&t.args(&[
            "send-service",
            &chat_s,
            "ReadMessages",
            "--param",
            "random_ids=1,2",
            "--random-id",
            rid,
        ]))
        .trim()
        .to_owned()
    };
    let handle = send("77");
    assert!(
        handle.starts_with("/io/github/tgsecretd/request/"),
        "{handle}"
    );
    let v = ok_json(&t.args(&["--json", "result", &handle, "--wait"]));
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["results"]["random_id"], 77, "{v}");
    // A retry with the same random_id gets the first handle; --wait finds its result at once.
    assert_eq!(send("77"), handle);
    let v = ok_json(&t.args(&[
        "--json",
        "send-service",
        &chat_s,
        "ReadMessages",
        "--param",
        "random_ids=1,2",
        "--random-id",
        "77",
        "--wait",
    ]));
    assert_eq!(v["handle"], handle.as_str());
    assert_eq!(v["code"], 0);
}

#[test]
fn close_cancels_a_request_that_never_left_and_says_when_it_cannot() {
    let t = TestLab::start("close", "always", &[]);
    let chat = t.ready_chat();
    let chat_s = chat.to_string();
    let send = |ttl: &str| {
        ok(&t.args(&[
            "send-service",
            &chat_s,
            "SetMessageTTL",
            "--param",
            &format!("ttl_seconds={ttl}"),
        ]))
        .trim()
        .to_owned()
    };
    // Sent: nothing to cancel.
    let sent = send("11");
    ok(&t.args(&["result", &sent, "--wait"]));
    let o = run(&t.args(&["close", &sent]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!("error: NotCancelled: {sent} was sent already")),
        "{}",
        stderr(&o)
    );
    // Every send now fails with a transient error (messages.sendEncryptedService#32d439a4,
    // messages.sendEncrypted#44fa7a15): the first message stays in flight, the next waits.
    sim_admin(
        &t,
        json!({"cmd": "set_faults", "faults": {"account_calls": {"7001": {
            "fail": 1000,
            "methods": [0x32d4_39a4_u32, 0x44fa_7a15_u32],
            "errors": [{"code": 500, "message": "INTERNAL"}]
        }}}}),
    );
    let in_flight = send("12");
    let queued = send("13");
    std::thread::sleep(Duration::from_millis(300));
    let v = ok_json(&t.args(&["--json", "close", &queued]));
    assert_eq!(v["handle"], queued.as_str(), "{v}");
    assert_eq!(v["code"], 1, "{v}");
    // Closing it again says the same; `result` says cancelled (exit 5).
    assert_eq!(
        ok(&t.args(&["close", &queued])).trim(),
        format!("cancelled {queued}")
    );
    assert_eq!(run(&t.args(&["result", &queued])).status.code(), Some(5));
    let o = run(&t.args(&["--json", "close", &in_flight]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["error"], "NotCancelled", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("has left the daemon already"),
        "{v}"
    );
    // Not a handle at all.
    assert_eq!(
        run(&t.args(&["close", "not a path"])).status.code(),
        Some(2)
    );
    let o = run(&t.args(&["close", "/io/github/tgsecretd/request/1_1/nothing"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: NoSuchRequest: "),
        "{}",
        stderr(&o)
    );
    // The faults go; the in-flight one is sent, and the peer never sees the cancelled one.
    sim_admin(&t, json!({"cmd": "set_faults", "faults": {}}));
    let v = ok_json(&t.args(&["--json", "result", &in_flight, "--wait"]));
    assert_eq!(v["code"], 0, "{v}");
    let after = send("14");
    ok(&t.args(&["result", &after, "--wait"]));
    let ttls: Vec<i64> = t
        .wait_transcript(chat, |v| ttl_of(v) == Some(14))
        .iter()
        .filter_map(ttl_of)
        .collect();
    assert_eq!(ttls, vec![11, 12, 14]);
}

#[test]
fn chat_show_has_the_key_visualization() {
    let t = TestLab::start("show", "always", &[]);
    let chat = t.ready_chat();
    let v = ok_json(&t.args(&["--json", "chat", "show", &chat.to_string()]));
    assert_eq!(v["chat_id"], chat);
    assert_eq!(v["state"], "ready");
    assert_eq!(v["role"], "creator");
    assert_eq!(v["peer_user_id"], 7002);
    let viz = v["key_visualization"].as_str().unwrap();
    assert_eq!(viz.len(), 72, "36 bytes: {viz}");
    let block = v["key_visualization_block"].as_array().unwrap();
    assert_eq!(block.len(), 4);
    let joined: String = block
        .iter()
        .map(|r| r.as_str().unwrap().replace(' ', ""))
        .collect();
    assert_eq!(joined, viz);
    let text = ok(&t.args(&["chat", "show", &format!("/io/github/tgsecretd/chat/{chat}")]));
    assert!(
        text.contains("key visualization (36 bytes)") && text.contains(viz),
        "{text}"
    );
}

#[test]
fn call_prints_the_json_result() {
    let t = TestLab::start("call", "always", &[]);
    let chat = t.ready_chat();
    let params = json!({"peer": chat, "message": {"_": "decryptedMessageService",
        "random_id": 0, "action": {"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 12}}});
    let v = ok_json(&t.args(&[
        "--json",
        "call",
        "messages.sendEncryptedService",
        "--params",
        &params.to_string(),
        "--wait",
    ]));
    assert_eq!(v["_"], "messages.sentEncryptedMessage", "{v}");
    let transcript = t.wait_transcript(chat, |a| ttl_of(a) == Some(12));
    assert!(
        transcript.iter().any(|a| ttl_of(a) == Some(12)),
        "{transcript:?}"
    );
    let o = run(&t.args(&["call", "messages.nope", "--params", "{}"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: UnknownMethod: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn typed_errors_exit_1() {
    let t = TestLab::start("errors", "always", &[]);
    let chat_s = t.ready_chat().to_string();
    let o = run(&t.args(&[
        "send-service",
        "12345",
        "SetMessageTTL",
        "--param",
        "ttl_seconds=1",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: NoSuchChat: "),
        "{}",
        stderr(&o)
    );
    let o = run(&t.args(&["--json", "send-service", &chat_s, "Dance"]));
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["error"], "UnknownAction", "{v}");
    assert!(v["message"].as_str().unwrap().contains("Dance"));
    let o = run(&t.args(&[
        "send-service",
        &chat_s,
        "Resend",
        "--param",
        "start_seq_no=0",
        "--param",
        "end_seq_no=0",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: NotAllowed: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn incoming_chats_accept_decline_discard_forget() {
    let t = TestLab::start("incoming", "ask", &[(7003, "normal")]);
    let watch = Watcher::start(&t.args(&["--json", "watch"]));
    let admin = |peer: i64| {
        let v = tgsecret_cli::admin::call(
            &t.lab.admin,
            "request_chat",
            json!({"peer": peer, "user_id": 7001}),
        )
        .unwrap();
        v.as_i64().unwrap() as i32
    };
    let (a, b) = (admin(7002), admin(7003));
    // Under --accept ask, both wait for the user, announced by ChatRequested.
    let lines = watch.until(|l| l.contains("ChatRequested") && l.contains(&b.to_string()));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ChatRequested") && l.contains(&a.to_string())),
        "{lines:?}"
    );
    // Each chat's object came first, announced by the chats' ObjectManager.
    let docs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    for id in [a, b] {
        let at = |signal: &str, arg: &str, want: Value| {
            docs.iter()
                .position(|d| d["signal"] == signal && d["args"][arg] == want)
                .unwrap_or_else(|| panic!("no {signal} of chat {id}: {lines:?}"))
        };
        let added = at(
            "InterfacesAdded",
            "object_path",
            ipc_proto::chat_path(id).into(),
        );
        let requested = at("ChatRequested", "chat_id", id.into());
        assert!(added < requested, "{lines:?}");
        let d = &docs[added];
        assert_eq!(d["path"], ipc_proto::CHATS_PATH, "{d}");
        let props = &d["args"]["interfaces_and_properties"][ipc_proto::CHAT_INTERFACE];
        assert_eq!(props["ChatId"], id, "{d}");
        assert_eq!(props["State"], "requested", "{d}");
    }
    assert_eq!(watch.interrupt(), Some(0));
    t.wait_state(a, "requested");
    t.wait_state(b, "requested");
    ok(&t.args(&["chat", "accept", &a.to_string()]));
    t.wait_state(a, "ready");
    let v = ok_json(&t.args(&["--json", "chat", "decline", &b.to_string()]));
    assert_eq!(v, json!({"chat_id": b, "done": "declined"}));
    t.wait_state(b, "discarded");
    // An open chat is not forgotten.
    let o = run(&t.args(&["chat", "forget", &a.to_string()]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: WrongState: "),
        "{}",
        stderr(&o)
    );
    ok(&t.args(&["chat", "discard", &a.to_string(), "--delete-history"]));
    t.wait_state(a, "discarded");
    // A closed one is, once Telegram has its discardEncryption.
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let o = run(&t.args(&["--json", "chat", "forget", &b.to_string()]));
        if o.status.success() {
            break serde_json::from_str::<Value>(stdout(&o).trim()).unwrap();
        }
        assert!(
            stdout(&o).contains("still owes Telegram") && Instant::now() < deadline,
            "{}",
            stdout(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v, json!({"chat_id": b, "done": "forgotten"}));
    assert_eq!(t.state(b), None);
    assert_eq!(t.state(a).as_deref(), Some("discarded"));
    let o = run(&t.args(&["chat", "show", &b.to_string()]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: NoSuchChat: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn waiting_for_a_peer_that_never_accepts_times_out_with_4() {
    let t = TestLab::start("timeout", "always", &[(7003, "never-accept")]);
    let o = run(&t.args(&["chat", "request", "7003", "--wait", "--timeout", "1"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("error: Timeout: "), "{}", stderr(&o));
}

#[test]
fn a_bus_without_the_daemon_exits_3() {
    let bus = tgsecret_cli::lab::PrivateBus::start().expect("dbus-daemon");
    let o = run(&["--bus", &bus.address, "status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not running on this bus"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn demo_sends_every_action_and_stops_everything() {
    common::ensure_binaries();
    let dir = common::bin_dir();
    let o = run(&["demo", "--bin-dir", dir.to_str().unwrap()]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for action in ipc_proto::ACTIONS {
        assert!(
            out.lines()
                .any(|l| l.starts_with(action) && l.contains(" sent ")
                    || l.starts_with(action) && l.contains("as expected")),
            "{action}: {out}"
        );
    }
    for refused in ["Resend", "AcceptKey", "CommitKey"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(refused) && l.contains("refused as expected: NotAllowed")),
            "{refused}: {out}"
        );
    }
    assert!(out.contains("Bob's decrypted view"), "{out}");
    assert!(
        out.trim_end().ends_with("demo ok: everything stopped"),
        "{out}"
    );
}

#[test]
fn login_reads_the_code_from_stdin() {
    // tgsim signs in any account's phone with the code 22222.
    let t = TestLab::start("login", "always", &[]);
    // The lab's account is signed in: no login step until a logout.
    let o = run_with_stdin(&t.args(&["login", "--phone", "15557001"]), "22222\n");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: WrongState: ") && stderr(&o).contains("already logged in"),
        "{}",
        stderr(&o)
    );
    ok(&t.args(&["logout"]));
    let o = run_with_stdin(&t.args(&["login", "--phone", "15557001"]), "22222\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "logged in as user 7001");
    ok(&t.args(&["logout"]));
    let o = run_with_stdin(&t.args(&["--json", "login"]), "15557001\n22222\n");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap(),
        json!({"next": "done", "user_id": 7001})
    );
    ok(&t.args(&["logout"]));
    let o = run_with_stdin(
        &t.args(&["--json", "login", "--phone", "15557001"]),
        "11111\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["error"], "Telegram");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("PHONE_CODE_INVALID"),
        "{v}"
    );
    let o = run_with_stdin(&t.args(&["login", "--phone", "15557001"]), "");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// One command on tgsim's admin socket (JSON lines); its `result`.
fn sim_admin(t: &TestLab, mut request: Value) -> Value {
    use std::io::Write;
    request["id"] = json!(1);
    let mut s = std::os::unix::net::UnixStream::connect(&t.lab.admin).unwrap();
    writeln!(s, "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    answer["result"].clone()
}

#[test]
fn logout_closes_the_chats_and_login_asks_for_the_two_step_password() {
    let t = TestLab::start("logout", "always", &[]);
    let chat = t.ready_chat();
    assert_eq!(
        ok_json(&t.args(&["--json", "logout"])),
        json!({"logged_out": true})
    );
    // Telegram discards a logged-out device's secret chats; so does the daemon.
    t.wait_state(chat, "discarded");
    let v = ok_json(&t.args(&["--json", "status"]));
    assert_eq!(v["logged_in"], false, "{v}");
    let o = run(&t.args(&["logout"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: NotLoggedIn: "),
        "{}",
        stderr(&o)
    );

    sim_admin(
        &t,
        json!({"cmd": "set_password", "account": 7001, "password": "hunter2", "hint": "pets"}),
    );
    let o = run_with_stdin(
        &t.args(&["--json", "login", "--phone", "15557001"]),
        "22222\nhunter3\n",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("PASSWORD_HASH_INVALID"),
        "{v}"
    );
    let o = run_with_stdin(
        &t.args(&["--json", "login", "--phone", "15557001"]),
        "22222\nhunter2\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap(),
        json!({"next": "done", "user_id": 7001})
    );
    let v = ok_json(&t.args(&["--json", "status"]));
    assert_eq!(v["logged_in"], true, "{v}");
    // New chats work again; the old one stays closed.
    let chat2 = t.ready_chat();
    assert_ne!(chat2, chat);
    assert_eq!(t.state(chat).as_deref(), Some("discarded"));
}
