//! The service as other clients see it, on a private bus with tgsim and simulated peers:
//!
//! * by hand, with systemd's `busctl` and GLib's `gdbus`: introspection, `RequestChat`,
//!   `GetChat`/`ListChats`, `SendServiceAction`, `SendEncryptedService` with raw bytes, property
//!   reads, the chats' `GetManagedObjects`, `Set` of a read-only property (`PropertyReadOnly`,
//!   nothing changes), `GetResult` and a typed error (the peer's transcript proves the sends);
//! * from Python, with dbus-fast: `examples/python/send_service.py` (the Response on the
//!   predicted handle, then the echoing peer's `TtlChanged`) and `examples/python/chat_list.py`
//!   (the chats through the ObjectManager: a new chat added then ready, a daemon restart that
//!   takes the chats away and brings them back, SIGTERM printing the final list);
//! * GLib's own `Gio.DBusObjectManagerClient` (PyGObject, `tests/clients/glib_object_manager.py`):
//!   the chats listed with their cached properties, a new chat's object added, then ready;
//! * 200 connections × 50 `SendServiceAction` calls at once: each handle gets exactly one
//!   Response, on its own connection's path only, and the peer gets every action once;
//! * a table of bad input: each call gets its typed error, the daemon keeps serving and the store
//!   stays byte-identical; a client that disconnects before its Response costs nothing.
//!
//! busctl (package `systemd`), gdbus (`libglib2.0-bin`), python3 and dbus-fast (pip
//! `dbus-fast`), Debian's python3 with PyGObject (`python3-gi`) are installed by `.ci/run`:
//! missing there (`CI` set) they fail the test, elsewhere the part that needs them is skipped
//! with a line saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use ipc_proto::{BUS_NAME, CHAT_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH, response};
use secret_core::tl::Serializable;
use support::*;
use zbus::{Connection, MessageStream, OwnedVariant, Variant};

const ALICE: i64 = 8601;
/// A peer that accepts and acknowledges (`normal`).
const BOB: i64 = 8602;
/// A peer that sends back every action it gets (`echo`).
const ECHO: i64 = 8603;

/// Runs a program with the private bus as the session bus.
async fn run(bus: &str, program: &str, args: Vec<String>, envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(program);
    c.args(&args).env("DBUS_SESSION_BUS_ADDRESS", bus);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if !out.status.success() {
        eprintln!(
            "{program} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The program failed, and its stderr says `want`.
fn assert_refused(o: &Output, want: &str) {
    assert!(!o.status.success(), "succeeded; wanted {want}");
    assert!(stderr(o).contains(want), "wanted {want}: {}", stderr(o));
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// ---- the contract's members ------------------------------------------------------------------

const MANAGER_METHODS: [&str; 16] = [
    "SendEncryptedService",
    "SendServiceAction",
    "Call",
    "RequestChat",
    "AcceptChat",
    "DeclineChat",
    "DiscardChat",
    "ForgetChat",
    "ListChats",
    "GetChat",
    "GetStatus",
    "GetResult",
    "LoginPhone",
    "LoginCode",
    "LoginPassword",
    "Logout",
];
const MANAGER_SIGNALS: [&str; 3] = ["ChatRequested", "ChatAdded", "ChatRemoved"];
const MANAGER_PROPERTIES: [&str; 4] = [
    "Version",
    "AuthorizationState",
    "SelfUserId",
    "AcceptPolicy",
];
const CHAT_METHODS: [&str; 1] = ["Events"];
const CHAT_SIGNALS: [&str; 9] = [
    "ServiceAction",
    "Message",
    "Closed",
    "Typing",
    "MessagesRead",
    "MessagesDeleted",
    "ScreenshotTaken",
    "TtlChanged",
    "HistoryFlushed",
];
const CHAT_PROPERTIES: [&str; 17] = [
    "ChatId",
    "PeerUserId",
    "Role",
    "State",
    "Layer",
    "PeerLayer",
    "OutSeqNo",
    "InSeqNo",
    "AckedSeqNo",
    "Pending",
    "KeyFingerprint",
    "KeyVisualization",
    "TtlSeconds",
    "RekeyState",
    "MessagesSinceRekey",
    "CreatedAt",
    "NextEvent",
];

/// Interface → {(kind, member)}, kind `method`, `signal` or `property`.
type Members = HashMap<String, HashSet<(String, String)>>;

/// `busctl introspect`'s table: `NAME TYPE SIGNATURE RESULT/VALUE FLAGS`, an `interface` row
/// opening each interface's `.Member` rows.
fn busctl_members(text: &str) -> Members {
    let mut out = Members::new();
    let mut iface = String::new();
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let (Some(name), Some(kind)) = (cols.next(), cols.next()) else {
            continue;
        };
        if kind == "interface" {
            iface = name.to_owned();
        } else if let Some(m) = name.strip_prefix('.') {
            out.entry(iface.clone())
                .or_default()
                .insert((kind.to_owned(), m.to_owned()));
        }
    }
    out
}

/// `gdbus introspect`'s text: `interface X {`, then `methods:` / `signals:` / `properties:`
/// sections (`Name(…);` or `readonly s Name = …;`).
fn gdbus_members(text: &str) -> Members {
    let mut out = Members::new();
    let (mut iface, mut kind) = (String::new(), "");
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("interface ") {
            iface = rest.trim_end_matches('{').trim().to_owned();
            kind = "";
            continue;
        }
        match t {
            "methods:" => kind = "method",
            "signals:" => kind = "signal",
            "properties:" => kind = "property",
            _ if kind.is_empty() || t.starts_with('@') || t.starts_with('}') => {}
            _ => {
                let name = if kind == "property" {
                    t.split_whitespace().nth(2).map(|n| n.trim_end_matches(';'))
                } else {
                    t.split_once('(').map(|(n, _)| n).filter(|n| {
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                };
                if let Some(n) = name {
                    out.entry(iface.clone())
                        .or_default()
                        .insert((kind.to_owned(), n.to_owned()));
                }
            }
        }
    }
    out
}

/// Every member of the contract's Manager1 and SecretChat1 is in `got` (`tool` names the
/// introspector in the message).
fn assert_members(tool: &str, got: &Members, iface: &str, want: &[(&str, &[&str])]) {
    let have = got
        .get(iface)
        .unwrap_or_else(|| panic!("{tool}: no interface {iface} in {got:?}"));
    for (kind, names) in want {
        for n in *names {
            assert!(
                have.contains(&((*kind).to_owned(), (*n).to_owned())),
                "{tool}: {iface} has no {kind} {n}: {have:?}"
            );
        }
    }
}

fn manager_members() -> [(&'static str, &'static [&'static str]); 3] {
    [
        ("method", &MANAGER_METHODS),
        ("signal", &MANAGER_SIGNALS),
        ("property", &MANAGER_PROPERTIES),
    ]
}

fn chat_members() -> [(&'static str, &'static [&'static str]); 3] {
    [
        ("method", &CHAT_METHODS),
        ("signal", &CHAT_SIGNALS),
        ("property", &CHAT_PROPERTIES),
    ]
}

// ---- busctl and gdbus ------------------------------------------------------------------------

/// `busctl --address=BUS ARGS…`.
async fn busctl(bus: &str, args: &[&str]) -> Output {
    let mut a = vec![format!("--address={bus}")];
    a.extend(strings(args));
    run(bus, "busctl", a, &[]).await
}

/// `busctl --json=short call io.github.tgsecretd PATH IFACE MEMBER ARGS…`: the reply's data.
async fn busctl_call(bus: &str, path: &str, iface: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json=short", "call", BUS_NAME, path, iface];
    a.extend_from_slice(args);
    let o = busctl(bus, &a).await;
    assert!(o.status.success(), "busctl {args:?}: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("busctl {args:?}: {e}: {}", stdout(&o)));
    v["data"].clone()
}

/// `busctl get-property` of a chat: the value.
async fn busctl_chat_property(bus: &str, chat: i32, name: &str) -> serde_json::Value {
    let path = ipc_proto::chat_path(chat);
    let o = busctl(
        bus,
        &[
            "--json=short",
            "get-property",
            BUS_NAME,
            &path,
            CHAT_INTERFACE,
            name,
        ],
    )
    .await;
    assert!(o.status.success(), "get-property {name}: {}", stderr(&o));
    serde_json::from_str::<serde_json::Value>(stdout(&o).trim()).unwrap()["data"].clone()
}

/// `gdbus SUBCOMMAND --address BUS ARGS…`.
async fn gdbus(bus: &str, sub: &str, args: &[&str]) -> Output {
    let mut a = vec![sub.to_owned(), "--address".into(), bus.to_owned()];
    a.extend(strings(args));
    run(bus, "gdbus", a, &[]).await
}

/// `gdbus call` of a method of the service; the reply as GVariant text.
async fn gdbus_call(bus: &str, path: &str, method: &str, args: &[&str]) -> String {
    let o = gdbus_call_output(bus, path, method, args).await;
    assert!(o.status.success(), "gdbus {method}: {}", stderr(&o));
    stdout(&o).trim().to_owned()
}

/// `gdbus call` of a method of the service, succeeded or not.
async fn gdbus_call_output(bus: &str, path: &str, method: &str, args: &[&str]) -> Output {
    let mut a = vec![
        "--dest",
        BUS_NAME,
        "--object-path",
        path,
        "--method",
        method,
    ];
    a.extend_from_slice(args);
    gdbus(bus, "call", &a).await
}

/// The first single-quoted string of GVariant text (`(objectpath '/a/b',)` → `/a/b`).
fn quoted(text: &str) -> String {
    text.split('\'').nth(1).unwrap_or_default().to_owned()
}

/// The TTLs the peer received in `chat`, waiting (30 s) until `want` is a prefix of them.
async fn wait_ttls(sim: &Sim, peer: i64, chat: i32, want: &[i64]) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<i64> = sim.ttls(peer, chat);
        if got.len() >= want.len() || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn new_chat(client: &Client, peer: i64) -> i32 {
    let chat = client
        .manager()
        .await
        .request_chat(peer, HashMap::new())
        .await
        .unwrap();
    client.wait_state(chat, "ready", 30).await;
    chat
}

/// Polls `GetResult` of `handle` (as `get`) until it is final; its code.
async fn final_code<F, Fut>(mut get: F) -> u32
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u32>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = get().await;
        if let Some(c) = code
            && c != response::PENDING
        {
            return c;
        }
        assert!(Instant::now() < deadline, "GetResult: {code:?} after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn busctl_and_gdbus_call_the_service_by_hand() {
    let has_busctl = have("busctl", Command::new("busctl").arg("--version"), "systemd");
    let has_gdbus = have("gdbus", Command::new("gdbus").arg("help"), "libglib2.0-bin");
    if !has_busctl && !has_gdbus {
        return;
    }
    runtime().block_on(async {
        let t0 = Instant::now();
        let tmp = Temp::new("clients-byhand");
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
        let key = sim.key_file(ALICE, &tmp.0);
        let mut d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let responses = client.responses().await;
        let addr = bus.address.as_str();
        let mut want_ttls = Vec::new();
        let mut chat = None;

        if has_busctl {
            // Introspection: the manager and (below) a chat object.
            let o = busctl(addr, &["introspect", BUS_NAME, MANAGER_PATH]).await;
            assert!(o.status.success());
            let got = busctl_members(&stdout(&o));
            assert_members("busctl", &got, MANAGER_INTERFACE, &manager_members());
            // RequestChat 'xa{sv}', then the chat's State property until it is ready.
            let data = busctl_call(
                addr,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                &["RequestChat", "xa{sv}", &BOB.to_string(), "0"],
            )
            .await;
            let id = i32::try_from(data[0].as_i64().unwrap()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while busctl_chat_property(addr, id, "State").await != "ready" {
                assert!(Instant::now() < deadline, "chat {id} not ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            chat = Some(id);
            let path = ipc_proto::chat_path(id);
            let o = busctl(addr, &["introspect", BUS_NAME, &path]).await;
            let got = busctl_members(&stdout(&o));
            assert_members("busctl", &got, CHAT_INTERFACE, &chat_members());
            // The chats' ObjectManager lists the chat with its properties.
            let om = busctl_call(
                addr,
                ipc_proto::CHATS_PATH,
                "org.freedesktop.DBus.ObjectManager",
                &["GetManagedObjects"],
            )
            .await;
            let props = &om[0][path.as_str()][CHAT_INTERFACE];
            assert_eq!(props["State"]["data"], "ready", "{om}");
            assert_eq!(props["ChatId"]["data"], id, "{om}");
            // GetChat and ListChats.
            let g = busctl_call(
                addr,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                &["GetChat", "i", &id.to_string()],
            )
            .await;
            assert_eq!(g[0]["state"]["data"], "ready", "{g}");
            assert_eq!(g[0]["chat_id"]["data"], id, "{g}");
            assert_eq!(g[0]["path"]["data"], path, "{g}");
            assert_eq!(g[0]["peer_user_id"]["data"], BOB, "{g}");
            let l = busctl_call(addr, MANAGER_PATH, MANAGER_INTERFACE, &["ListChats"]).await;
            assert!(
                l[0].as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["chat_id"]["data"] == id),
                "{l}"
            );
            // SendServiceAction, typed by hand.
            let data = busctl_call(
                addr,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                &[
                    "SendServiceAction",
                    "isa{sv}a{sv}",
                    &id.to_string(),
                    "SetMessageTTL",
                    "1",
                    "ttl_seconds",
                    "i",
                    "30",
                    "1",
                    "handle_token",
                    "s",
                    "tok1",
                ],
            )
            .await;
            let h1 = data[0].as_str().unwrap().to_owned();
            assert!(
                h1.starts_with("/io/github/tgsecretd/request/") && h1.ends_with("/tok1"),
                "{h1}"
            );
            assert_eq!(responses.one(&h1, 30).await.1, response::SENT);
            want_ttls.push(30);
            // GetResult of that handle (busctl's own connection is gone: anyone may ask).
            let h = h1.as_str();
            let code = final_code(|| async move {
                let r = busctl_call(
                    addr,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    &["GetResult", "o", h],
                )
                .await;
                r[0].as_u64().map(|c| c as u32)
            })
            .await;
            assert_eq!(code, response::SENT);
            let r = busctl_call(
                addr,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                &["GetResult", "o", &h1],
            )
            .await;
            assert_ne!(r[1]["random_id"]["data"], 0, "{r}");
            assert_eq!(r[1]["random_id"]["type"], "x", "{r}");
            // SendEncryptedService with the TL bytes as `ay`.
            let bytes = ttl_message(0, 31);
            let mut args = vec![
                "SendEncryptedService".to_owned(),
                "iaya{sv}".into(),
                id.to_string(),
                bytes.len().to_string(),
            ];
            args.extend(bytes.iter().map(u8::to_string));
            args.extend(strings(&["1", "handle_token", "s", "tok2"]));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let data = busctl_call(addr, MANAGER_PATH, MANAGER_INTERFACE, &refs).await;
            let h2 = data[0].as_str().unwrap().to_owned();
            assert!(h2.ends_with("/tok2"), "{h2}");
            assert_eq!(responses.one(&h2, 30).await.1, response::SENT);
            want_ttls.push(31);
            // Properties.
            assert_eq!(busctl_chat_property(addr, id, "ChatId").await, id);
            assert_eq!(busctl_chat_property(addr, id, "PeerUserId").await, BOB);
            assert_eq!(busctl_chat_property(addr, id, "Role").await, "creator");
            let out = busctl_chat_property(addr, id, "OutSeqNo").await;
            assert!(out.as_u64().unwrap() >= 2, "OutSeqNo {out}");
            // Our own TTL change is the chat's TTL.
            assert_eq!(busctl_chat_property(addr, id, "TtlSeconds").await, 31);
            // Every property is read-only: `set-property` is refused as such (the TTL is set
            // by SetMessageTTL, not by assignment), a name the interface lacks is unknown, and
            // nothing changes.
            for (path, iface, name, sig, value, error) in [
                (
                    &*path,
                    CHAT_INTERFACE,
                    "TtlSeconds",
                    "i",
                    "5",
                    "PropertyReadOnly",
                ),
                (
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    "AcceptPolicy",
                    "s",
                    "always",
                    "PropertyReadOnly",
                ),
                (&*path, CHAT_INTERFACE, "Nope", "i", "5", "UnknownProperty"),
            ] {
                let o = run(
                    addr,
                    "busctl",
                    strings(&[
                        &format!("--address={addr}"),
                        "set-property",
                        BUS_NAME,
                        path,
                        iface,
                        name,
                        sig,
                        value,
                    ]),
                    &[("SYSTEMD_LOG_LEVEL", "debug")],
                )
                .await;
                assert_refused(
                    &o,
                    &format!("error-name=org.freedesktop.DBus.Error.{error}"),
                );
            }
            assert_eq!(busctl_chat_property(addr, id, "TtlSeconds").await, 31);
            let policy = busctl(
                addr,
                &[
                    "get-property",
                    BUS_NAME,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    "AcceptPolicy",
                ],
            )
            .await;
            assert_eq!(stdout(&policy).trim(), "s \"never\"");
            // A typed error: busctl prints only the error's message; its debug log names it.
            let o = busctl(
                addr,
                &[
                    "call",
                    BUS_NAME,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    "GetChat",
                    "i",
                    "999999",
                ],
            )
            .await;
            assert_refused(&o, "no secret chat with id 999999");
            let o = run(
                addr,
                "busctl",
                strings(&[
                    &format!("--address={addr}"),
                    "call",
                    BUS_NAME,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    "SendServiceAction",
                    "isa{sv}a{sv}",
                    "999999",
                    "SetMessageTTL",
                    "1",
                    "ttl_seconds",
                    "i",
                    "30",
                    "0",
                ]),
                &[("SYSTEMD_LOG_LEVEL", "debug")],
            )
            .await;
            assert_refused(&o, "error-name=io.github.tgsecretd.Error.NoSuchChat");
        }

        if has_gdbus {
            let o = gdbus(
                addr,
                "introspect",
                &["--dest", BUS_NAME, "--object-path", MANAGER_PATH],
            )
            .await;
            assert!(o.status.success());
            let got = gdbus_members(&stdout(&o));
            assert_members("gdbus", &got, MANAGER_INTERFACE, &manager_members());
            let id = match chat {
                Some(id) => id,
                None => {
                    let r = gdbus_call(
                        addr,
                        MANAGER_PATH,
                        "io.github.tgsecretd.Manager1.RequestChat",
                        &[&BOB.to_string(), "{}"],
                    )
                    .await;
                    // `(1234,)`
                    let id: i32 = r
                        .trim_matches(|c| c == '(' || c == ')' || c == ',')
                        .parse()
                        .unwrap_or_else(|e| panic!("{r}: {e}"));
                    client.wait_state(id, "ready", 30).await;
                    id
                }
            };
            let path = ipc_proto::chat_path(id);
            let o = gdbus(
                addr,
                "introspect",
                &["--dest", BUS_NAME, "--object-path", &path],
            )
            .await;
            let got = gdbus_members(&stdout(&o));
            assert_members("gdbus", &got, CHAT_INTERFACE, &chat_members());
            let g = gdbus_call(
                addr,
                MANAGER_PATH,
                "io.github.tgsecretd.Manager1.GetChat",
                &[&id.to_string()],
            )
            .await;
            assert!(g.contains("'state': <'ready'>"), "{g}");
            assert!(g.contains(&format!("'chat_id': <{id}>")), "{g}");
            let l = gdbus_call(
                addr,
                MANAGER_PATH,
                "io.github.tgsecretd.Manager1.ListChats",
                &[],
            )
            .await;
            assert!(l.contains(&format!("'chat_id': <{id}>")), "{l}");
            let r = gdbus_call(
                addr,
                MANAGER_PATH,
                "io.github.tgsecretd.Manager1.SendServiceAction",
                &[
                    &id.to_string(),
                    "SetMessageTTL",
                    "{'ttl_seconds': <int32 32>}",
                    "{'handle_token': <'g1'>}",
                ],
            )
            .await;
            let h3 = quoted(&r);
            assert!(h3.ends_with("/g1"), "{r}");
            assert_eq!(responses.one(&h3, 30).await.1, response::SENT);
            want_ttls.push(32);
            // Properties.Set of a read-only property: GDBus names the error.
            let o = gdbus_call_output(
                addr,
                &path,
                "org.freedesktop.DBus.Properties.Set",
                &[CHAT_INTERFACE, "TtlSeconds", "<int32 5>"],
            )
            .await;
            assert_refused(
                &o,
                "GDBus.Error:org.freedesktop.DBus.Error.PropertyReadOnly",
            );
            let bytes = ttl_message(0, 33);
            let ay = format!(
                "[{}]",
                bytes
                    .iter()
                    .map(|b| format!("byte {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let r = gdbus_call(
                addr,
                MANAGER_PATH,
                "io.github.tgsecretd.Manager1.SendEncryptedService",
                &[&id.to_string(), &ay, "{'handle_token': <'g2'>}"],
            )
            .await;
            let h4 = quoted(&r);
            assert!(h4.ends_with("/g2"), "{r}");
            assert_eq!(responses.one(&h4, 30).await.1, response::SENT);
            want_ttls.push(33);
            let h = h4.as_str();
            let code = final_code(|| async move {
                let r = gdbus_call(
                    addr,
                    MANAGER_PATH,
                    "io.github.tgsecretd.Manager1.GetResult",
                    &[&format!("'{h}'")],
                )
                .await;
                // `(uint32 0, {'date': <…>, …})`
                r.strip_prefix("(uint32 ")
                    .and_then(|s| s.split(',').next())
                    .and_then(|n| n.parse().ok())
            })
            .await;
            assert_eq!(code, response::SENT);
            let p = gdbus_call(
                addr,
                &path,
                "org.freedesktop.DBus.Properties.Get",
                &[CHAT_INTERFACE, "State"],
            )
            .await;
            assert_eq!(p, "(<'ready'>,)");
            let p = gdbus_call(
                addr,
                &path,
                "org.freedesktop.DBus.Properties.Get",
                &[CHAT_INTERFACE, "PeerUserId"],
            )
            .await;
            assert_eq!(p, format!("(<int64 {BOB}>,)"));
            let p = gdbus_call(
                addr,
                &path,
                "org.freedesktop.DBus.Properties.Get",
                &[CHAT_INTERFACE, "TtlSeconds"],
            )
            .await;
            assert_eq!(p, "(<33>,)");
            // A typed error, named in gdbus's message.
            let o = gdbus_call_output(
                addr,
                MANAGER_PATH,
                "io.github.tgsecretd.Manager1.GetChat",
                &["999999"],
            )
            .await;
            assert_refused(&o, "GDBus.Error:io.github.tgsecretd.Error.NoSuchChat");
            chat = Some(id);
        }

        // The peer decrypted each TTL change, in the order of the calls.
        let chat = chat.unwrap();
        let got = wait_ttls(&sim, BOB, chat, &want_ttls).await;
        assert_eq!(got, want_ttls, "the peer's TTL actions");
        assert!(d.terminate().is_some_and(|s| s.success()));
        eprintln!(
            "busctl: {has_busctl}, gdbus: {has_gdbus}: {} TTL changes in {:.1} s",
            want_ttls.len(),
            t0.elapsed().as_secs_f64()
        );
    });
}

// ---- Python ----------------------------------------------------------------------------------

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A client program printing JSON lines (`examples/python/chat_list.py`, GLib's ObjectManager
/// client), its lines read as they come.
struct JsonLines {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Every line so far.
    docs: Vec<serde_json::Value>,
}

impl JsonLines {
    /// Started with the private bus as the session bus, and listening (it printed
    /// `{"event": "listening"}` after its first list).
    async fn start(bus: &str, program: &str, args: &[&str]) -> JsonLines {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut script = JsonLines {
            child,
            lines,
            docs: Vec::new(),
        };
        script.until(|d| d["event"] == "listening").await;
        script
    }

    /// The next line as JSON; `None` once the script ended. Panics after 30 s.
    async fn next(&mut self) -> Option<serde_json::Value> {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("chat_list.py silent for 30 s after {:?}", self.docs))
            .unwrap()?;
        let doc: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        self.docs.push(doc.clone());
        Some(doc)
    }

    /// Lines until one for which `pred` holds; that one.
    async fn until(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        loop {
            match self.next().await {
                Some(d) if pred(&d) => return d,
                Some(_) => {}
                None => panic!("chat_list.py ended: {:?}", self.docs),
            }
        }
    }

    /// SIGTERM ends the watch: the rest of its lines, and it exits 0.
    async fn stop(self) -> Vec<serde_json::Value> {
        let pid = self.child.id().unwrap().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.finish().await
    }

    /// The rest of its lines once it ends by itself, with status 0.
    async fn finish(mut self) -> Vec<serde_json::Value> {
        while self.next().await.is_some() {}
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "{status}: {:?}", self.docs);
        self.docs
    }
}

#[test]
fn python_dbus_fast_example_sends_and_sees_the_echo() {
    let ok = have(
        "python3 with dbus_fast",
        Command::new("python3").args(["-c", "import dbus_fast"]),
        "python3 and `pip install dbus-fast`",
    );
    if !ok {
        return;
    }
    runtime().block_on(async {
        let t0 = Instant::now();
        let tmp = Temp::new("clients-python");
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(ECHO, "echo")]);
        let key = sim.key_file(ALICE, &tmp.0);
        let mut d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let chat = new_chat(&client, ECHO).await;
        let script = example("examples/python/send_service.py")
            .display()
            .to_string();
        let o = run(
            &bus.address,
            "python3",
            strings(&[
                &script,
                "--address",
                &bus.address,
                "--chat",
                &chat.to_string(),
                "--ttl",
                "45",
                "--token",
                "py1",
                "--timeout",
                "30",
                "--listen",
                "5",
            ]),
            &[],
        )
        .await;
        let text = stdout(&o);
        eprintln!("send_service.py:\n{text}{}", stderr(&o));
        assert!(o.status.success(), "exit {}", o.status);
        let docs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        let resp: Vec<&serde_json::Value> =
            docs.iter().filter(|d| d["event"] == "response").collect();
        assert_eq!(resp.len(), 1, "{docs:?}");
        let r = resp[0];
        assert_eq!(r["code"], 0, "{r}");
        assert!(r["handle"].as_str().unwrap().ends_with("/py1"), "{r}");
        for k in ["date", "random_id", "out_seq_no", "in_seq_no", "layer"] {
            assert!(r["results"][k].is_i64(), "{k}: {r}");
        }
        assert!(
            docs.iter().any(|d| d["event"] == "signal"
                && d["member"] == "TtlChanged"
                && d["args"] == serde_json::json!([45])),
            "no TtlChanged(45) echo: {docs:?}"
        );
        assert_eq!(wait_ttls(&sim, ECHO, chat, &[45]).await, vec![45]);
        // A typed error reaches the script: exit status 1, the error's name on stderr.
        let o = run(
            &bus.address,
            "python3",
            strings(&[
                &script,
                "--address",
                &bus.address,
                "--chat",
                "999999",
                "--listen",
                "0",
            ]),
            &[],
        )
        .await;
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("io.github.tgsecretd.Error.NoSuchChat"),
            "{}",
            stderr(&o)
        );
        // Through DBUS_SESSION_BUS_ADDRESS, as a desktop app runs it.
        let o = run(
            &bus.address,
            "python3",
            strings(&[
                &script,
                "--chat",
                &chat.to_string(),
                "--ttl",
                "46",
                "--listen",
                "0",
            ]),
            &[],
        )
        .await;
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(wait_ttls(&sim, ECHO, chat, &[45, 46]).await, vec![45, 46]);

        // chat_list.py: the chats through the ObjectManager; a new chat appears (added, then
        // changed to ready); the daemon restarts (its chats leave the list, then come back
        // with the daemon); SIGTERM ends the watch with the final list.
        let script = example("examples/python/chat_list.py");
        let script = script.to_str().unwrap();
        let mut list = JsonLines::start(&bus.address, "python3", &[script, "--watch", "120"]).await;
        let first = &list.docs[0];
        assert_eq!(first["event"], "chat", "{:?}", list.docs);
        assert_eq!(first["path"], ipc_proto::chat_path(chat), "{first}");
        assert_eq!(first["properties"]["ChatId"], chat, "{first}");
        assert_eq!(first["properties"]["State"], "ready", "{first}");
        assert_eq!(first["properties"]["TtlSeconds"], 46, "{first}");
        let added = new_chat(&client, ECHO).await;
        let path = ipc_proto::chat_path(added);
        let a = list
            .until(|d| d["event"] == "added" && d["path"] == path)
            .await;
        assert_eq!(a["properties"]["ChatId"], added, "{a}");
        list.until(|d| {
            d["event"] == "changed" && d["path"] == path && d["changed"]["State"] == "ready"
        })
        .await;
        d.restart();
        list.until(|d| d["event"] == "daemon" && d["owner"] == "")
            .await;
        list.until(|d| d["event"] == "daemon" && d["owner"] != "")
            .await;
        // Both again, in either order.
        let mut again = BTreeMap::new();
        while again.len() < 2 {
            let d = list.until(|d| d["event"] == "added").await;
            again.insert(d["path"].as_str().unwrap().to_owned(), d);
        }
        for id in [chat, added] {
            let d = &again[&ipc_proto::chat_path(id)];
            assert_eq!(d["properties"]["State"], "ready", "{d}");
        }
        let docs = list.stop().await;
        let last = docs.last().unwrap();
        assert_eq!(last["event"], "list", "{docs:?}");
        assert_eq!(last["chats"][chat.to_string()], "ready", "{last}");
        assert_eq!(last["chats"][added.to_string()], "ready", "{last}");
        assert!(d.terminate().is_some_and(|s| s.success()));
        eprintln!("python examples: {:.1} s", t0.elapsed().as_secs_f64());
    });
}

/// GLib's own ObjectManager client (`Gio.DBusObjectManagerClient`, through PyGObject on
/// Debian's Python: `daemon/tests/clients/glib_object_manager.py`) lists the chats with their
/// cached properties, then reports a new chat's object and its change to ready.
#[test]
fn glib_object_manager_client_follows_the_chats() {
    const PYTHON: &str = "/usr/bin/python3";
    let ok = have(
        "Debian's python3 with PyGObject",
        Command::new(PYTHON).args([
            "-c",
            "import gi; gi.require_version('Gio', '2.0'); from gi.repository import Gio",
        ]),
        "python3-gi",
    );
    if !ok {
        return;
    }
    runtime().block_on(async {
        let Stack {
            tmp: _tmp,
            bus,
            sim: _sim,
            key: _,
            mut d,
            client,
        } = Stack::start("clients-glib", ALICE, (ECHO, "echo"), "never").await;
        let chat = new_chat(&client, ECHO).await;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/glib_object_manager.py");
        let glib = JsonLines::start(
            &bus.address,
            PYTHON,
            &[script.to_str().unwrap(), &bus.address],
        )
        .await;
        assert_eq!(
            glib.docs[0],
            serde_json::json!({"event": "chat", "path": ipc_proto::chat_path(chat),
                "chat_id": chat, "state": "ready"}),
            "{:?}",
            glib.docs
        );
        let added = new_chat(&client, ECHO).await;
        let docs = glib.finish().await;
        let path = ipc_proto::chat_path(added);
        assert!(
            docs.iter()
                .any(|d| d["event"] == "added" && d["path"] == path && d["chat_id"] == added),
            "{docs:?}"
        );
        assert_eq!(
            docs.last().unwrap(),
            &serde_json::json!({"event": "changed", "path": path, "state": "ready"}),
            "{docs:?}"
        );
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

// ---- many clients at once --------------------------------------------------------------------

const CLIENTS: usize = 200;
const CALLS: usize = 50;
const CHATS: usize = 4;

/// What one client saw: its unique name, the (handle, chat, tag) of each call, the Responses
/// that arrived on the connection (path, code, results), and the connection (kept open until
/// every check is done, so late duplicates would still arrive).
struct ClientRun {
    name: String,
    calls: Vec<(String, i32, i64)>,
    got: Arc<Mutex<Vec<Response>>>,
    _conn: Connection,
}

/// One client: its own connection, a match rule for the Responses under its own request path
/// (`path_namespace`), then `CALLS` `ReadMessages` actions, one after the other, each tagged
/// with a unique random id in its content.
async fn one_client(k: usize, bus: &str, chats: &[i32]) -> ClientRun {
    let conn = zbus::connection::Builder::address(bus)
        .build()
        .await
        .unwrap();
    let name = conn.unique_name().unwrap().to_string();
    let mine = ipc_proto::request_path(&name, "x")
        .trim_end_matches("/x")
        .to_owned();
    // Everything that reaches the connection (no local filtering by zbus), read at once.
    let mut stream = MessageStream::from(&conn);
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let h = m.header();
            if h.message_type() == zbus::message::Type::Signal
                && h.member().is_some_and(|n| n.as_str() == "Response")
                && let Some(r) = parse_response(&m)
            {
                sink.lock().unwrap().push(r);
            }
        }
    });
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(ipc_proto::REQUEST_INTERFACE)
        .member("Response")
        .path_namespace(mine.as_str())
        .build()
        .unwrap();
    zbus::fdo::DBusProxy::new(&conn)
        .await
        .unwrap()
        .add_match_rule(rule)
        .await
        .unwrap();
    let m = ipc_proto::ManagerProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    let mut calls = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let chat = chats[(k + i) % chats.len()];
        let tag = (k * CALLS + i + 1) as i64;
        let token = format!("c{k}_{i}");
        let mut params = HashMap::new();
        params.insert("random_ids", Variant::from(vec![tag]));
        let mut opts = HashMap::new();
        opts.insert("handle_token", Variant::from(token.clone()));
        let h = m
            .send_service_action(chat, "ReadMessages", params, opts)
            .await
            .unwrap_or_else(|e| panic!("client {k} call {i}: {e}"));
        assert_eq!(h.as_str(), ipc_proto::request_path(&name, &token));
        calls.push((h.to_string(), chat, tag));
    }
    ClientRun {
        name,
        calls,
        got,
        _conn: conn,
    }
}

fn i64_of(d: &HashMap<String, OwnedVariant>, k: &str) -> i64 {
    i64::try_from(d.get(k).unwrap_or_else(|| panic!("no {k} in {d:?}"))).unwrap()
}

#[test]
fn two_hundred_clients_fifty_calls_each() {
    runtime().block_on(async {
        let tmp = Temp::new("clients-many");
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
        let key = sim.key_file(ALICE, &tmp.0);
        let mut d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let mut chats = Vec::new();
        for _ in 0..CHATS {
            chats.push(new_chat(&client, BOB).await);
        }
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let (addr, chats) = (bus.address.clone(), chats.clone());
                tokio::spawn(async move { one_client(k, &addr, &chats).await })
            })
            .collect();
        let mut runs = Vec::with_capacity(CLIENTS);
        for t in tasks {
            runs.push(t.await.unwrap());
        }
        let calls_done = t0.elapsed();
        // Every handle's Response, on its own connection.
        let deadline = Instant::now() + Duration::from_secs(240);
        for r in &runs {
            loop {
                let n = r.got.lock().unwrap().len();
                if n >= CALLS {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: {n} of {CALLS} Responses after 240 s",
                    r.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let responses_done = t0.elapsed();
        // The peer got every action.
        let total = CLIENTS * CALLS;
        let transcripts = loop {
            let t: Vec<Vec<serde_json::Value>> =
                chats.iter().map(|c| sim.transcript(BOB, *c)).collect();
            let n: usize = t.iter().map(Vec::len).sum();
            if n >= total {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "the peer has {n} of {total} actions"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let delivered = t0.elapsed();
        // Late duplicates would show now.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let mut random_ids = HashSet::new();
        let mut want_per_chat: BTreeMap<i32, usize> = BTreeMap::new();
        // tag → (client, index in the client's calls)
        let mut tags: HashMap<i64, (usize, usize)> = HashMap::new();
        for (k, r) in runs.iter().enumerate() {
            let got = r.got.lock().unwrap().clone();
            let prefix = format!(
                "{}/",
                ipc_proto::request_path(&r.name, "x").trim_end_matches("/x")
            );
            let foreign: Vec<&String> = got
                .iter()
                .map(|g| &g.0)
                .filter(|p| !p.starts_with(&prefix))
                .collect();
            assert!(
                foreign.is_empty(),
                "{}: Responses of other connections' requests: {foreign:?}",
                r.name
            );
            let mut per_handle: HashMap<&str, Vec<&Response>> = HashMap::new();
            for g in &got {
                per_handle.entry(g.0.as_str()).or_default().push(g);
            }
            for (i, (h, chat, tag)) in r.calls.iter().enumerate() {
                let mine = per_handle.remove(h.as_str()).unwrap_or_default();
                assert_eq!(mine.len(), 1, "{h}: {} Responses", mine.len());
                assert_eq!(mine[0].1, response::SENT, "{h}: {:?}", mine[0]);
                let rid = i64_of(&mine[0].2, "random_id");
                assert!(rid != 0 && random_ids.insert(rid), "{h}: random_id {rid}");
                *want_per_chat.entry(*chat).or_default() += 1;
                tags.insert(*tag, (k, i));
            }
            assert!(
                per_handle.is_empty(),
                "{}: Responses of no call: {:?}",
                r.name,
                per_handle.keys()
            );
        }
        assert_eq!(random_ids.len(), total);
        // The peer: exactly the actions sent, each once, in each client's order per chat.
        let mut seen = HashSet::new();
        for (chat, t) in chats.iter().zip(&transcripts) {
            assert_eq!(
                t.len(),
                want_per_chat[chat],
                "chat {chat}: {} actions, {} sent",
                t.len(),
                want_per_chat[chat]
            );
            let mut last: HashMap<usize, usize> = HashMap::new();
            for e in t {
                assert_eq!(e["_"], "decryptedMessageActionReadMessages", "{e}");
                let ids = e["random_ids"].as_array().unwrap();
                assert_eq!(ids.len(), 1, "{e}");
                let tag = ids[0].as_i64().unwrap();
                assert!(seen.insert(tag), "chat {chat}: tag {tag} twice");
                let (k, i) = tags[&tag];
                assert_eq!(runs[k].calls[i].1, *chat, "tag {tag} in the wrong chat");
                if let Some(prev) = last.insert(k, i) {
                    assert!(
                        prev < i,
                        "client {k}: call {i} before call {prev} in chat {chat}"
                    );
                }
            }
        }
        assert_eq!(seen.len(), total);
        assert!(d.running());
        assert!(d.terminate().is_some_and(|s| s.success()));
        let secs = |t: Duration| t.as_secs_f64();
        eprintln!(
            "{CLIENTS} clients × {CALLS} calls on {CHATS} chats: calls returned in {:.1} s \
             ({:.0}/s), all Responses in {:.1} s, all delivered to the peer in {:.1} s",
            secs(calls_done),
            total as f64 / secs(calls_done),
            secs(responses_done),
            secs(delivered),
        );
    });
}

// ---- bad input -------------------------------------------------------------------------------

/// Every file of the store, with its bytes (as e2e_errors takes it).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The D-Bus error name of a failed call (`Ok` if it did not fail).
fn error_name(r: &zbus::Result<zbus::Message>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        Err(zbus::Error::FDO(e)) => zbus::DBusError::name(&**e).to_string(),
        Err(other) => format!("{other:?}"),
    }
}

/// A raw call of a Manager1 method with any body (so wrong signatures can be sent too).
async fn raw_call<B>(conn: &Connection, member: &str, body: &B) -> zbus::Result<zbus::Message>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(
        Some(BUS_NAME),
        MANAGER_PATH,
        Some(MANAGER_INTERFACE),
        member,
        body,
    )
    .await
}

type Dict = HashMap<&'static str, Variant<'static>>;

fn dict(pairs: Vec<(&'static str, Variant<'static>)>) -> Dict {
    pairs.into_iter().collect()
}

fn ttl(s: i32) -> Dict {
    dict(vec![("ttl_seconds", Variant::from(s))])
}

fn service(random_id: i64, action: secret_core::tl::enums::DecryptedMessageAction) -> Vec<u8> {
    secret_core::tl::enums::DecryptedMessage::Service(
        secret_core::tl::types::DecryptedMessageService { random_id, action },
    )
    .to_bytes()
}

/// One row: what is called, the error expected (a last part of `io.github.tgsecretd.Error.`, or
/// a full name), the call.
type Row = (
    String,
    &'static str,
    BoxFuture<'static, zbus::Result<zbus::Message>>,
);

#[test]
fn bad_input_table_and_a_client_that_leaves_early() {
    runtime().block_on(async {
        let tmp = Temp::new("clients-bad");
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
        let key = sim.key_file(ALICE, &tmp.0);
        let mut d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let responses = client.responses().await;
        let m = client.manager().await;
        let chat = new_chat(&client, BOB).await;
        let closed = new_chat(&client, BOB).await;
        m.discard_chat(closed, false).await.unwrap();
        client.wait_state(closed, "discarded", 30).await;
        let h = m
            .send_service_action(chat, "SetMessageTTL", ttl(1), HashMap::new())
            .await
            .unwrap();
        assert_eq!(responses.one(h.as_str(), 30).await.1, response::SENT);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let store = tmp.0.join("d/store");
        let mut before = snapshot(&store);

        let no_chat = chat ^ 0x55;
        let conn = client.conn.clone();
        macro_rules! row {
            ($label:expr, $want:expr, $member:expr, $body:expr) => {{
                let c = conn.clone();
                let body = $body;
                let f: BoxFuture<'static, zbus::Result<zbus::Message>> =
                    Box::pin(async move { raw_call(&c, $member, &body).await });
                (String::from($label), $want, f)
            }};
        }
        let none = Dict::new;
        let tok = |t: String| dict(vec![("handle_token", Variant::from(t))]);
        let good = ttl_message(0, 1);
        let mut truncated = good.clone();
        truncated.pop();
        let half = good[..good.len() / 2].to_vec();
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 4]);
        let mut unknown_ctor = good.clone();
        unknown_ctor[12..16].copy_from_slice(&0x0bad_cafe_u32.to_le_bytes());
        use secret_core::tl::enums::DecryptedMessageAction as A;
        use secret_core::tl::types as T;
        let resend = service(
            0,
            A::Resend(T::DecryptedMessageActionResend {
                start_seq_no: 0,
                end_seq_no: 2,
            }),
        );
        let huge = vec![0u8; (1 << 20) + 1];
        let huge_params = format!("{{\"x\":\"{}\"}}", "a".repeat(2 << 20));
        let send_json = |peer: serde_json::Value, action: serde_json::Value| {
            serde_json::json!({
                "peer": peer,
                "message": {"_": "decryptedMessageService", "random_id": 0, "action": action}
            })
            .to_string()
        };
        let ttl_json =
            serde_json::json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 5});
        let rows: Vec<Row> = vec![
            // Unknown ids.
            row!(
                "SendServiceAction to an unknown chat",
                "NoSuchChat",
                "SendServiceAction",
                (no_chat, "SetMessageTTL", ttl(5), none())
            ),
            row!(
                "SendEncryptedService to an unknown chat",
                "NoSuchChat",
                "SendEncryptedService",
                (no_chat, good.clone(), none())
            ),
            row!(
                "Call sendEncryptedService to an unknown chat",
                "NoSuchChat",
                "Call",
                (
                    "messages.sendEncryptedService",
                    send_json(no_chat.into(), ttl_json.clone()),
                    none()
                )
            ),
            row!(
                "GetChat of an unknown chat",
                "NoSuchChat",
                "GetChat",
                (no_chat,)
            ),
            row!(
                "DiscardChat of an unknown chat",
                "NoSuchChat",
                "DiscardChat",
                (no_chat, false)
            ),
            row!(
                "AcceptChat of an unknown chat",
                "NoSuchChat",
                "AcceptChat",
                (no_chat,)
            ),
            row!(
                "GetResult of an unknown handle",
                "NoSuchRequest",
                "GetResult",
                (zbus::ObjectPath::from_static_str_unchecked(
                    "/io/github/tgsecretd/request/1_1/nope"
                ),)
            ),
            // Malformed TL.
            row!(
                "garbage bytes",
                "InvalidMessage",
                "SendEncryptedService",
                (chat, vec![0xde_u8, 0xad, 0xbe, 0xef, 1, 2, 3], none())
            ),
            row!(
                "no bytes",
                "InvalidMessage",
                "SendEncryptedService",
                (chat, Vec::<u8>::new(), none())
            ),
            row!(
                "decryptedMessageService less its last byte",
                "InvalidMessage",
                "SendEncryptedService",
                (chat, truncated, none())
            ),
            row!(
                "decryptedMessageService cut in half",
                "InvalidMessage",
                "SendEncryptedService",
                (chat, half, none())
            ),
            row!(
                "decryptedMessageService + 4 trailing bytes",
                "InvalidMessage",
                "SendEncryptedService",
                (chat, trailing, none())
            ),
            row!(
                "an unknown action constructor",
                "UnknownAction",
                "SendEncryptedService",
                (chat, unknown_ctor, none())
            ),
            row!(
                "Call with a service message of an unknown action",
                "UnknownAction",
                "Call",
                (
                    "messages.sendEncryptedService",
                    send_json(
                        chat.into(),
                        serde_json::json!({"_": "decryptedMessageActionDance"})
                    ),
                    none()
                )
            ),
            row!(
                "Call with a message of an unknown constructor",
                "InvalidMessage",
                "Call",
                (
                    "messages.sendEncryptedService",
                    serde_json::json!({
                        "peer": chat,
                        "message": {"_": "decryptedMessageDance", "random_id": 0}
                    })
                    .to_string(),
                    none()
                )
            ),
            // Wrong argument types: zbus refuses them before the method runs, with
            // org.freedesktop.DBus.Error.InvalidArgs "Signature mismatch: got `(sa{sv})`,
            // expected `(isa{sv}a{sv})`" (an unknown member: ...Error.UnknownMethod).
            row!(
                "SendServiceAction as 'sa{sv}'",
                "org.freedesktop.DBus.Error.InvalidArgs",
                "SendServiceAction",
                ("x", none())
            ),
            row!(
                "SendEncryptedService as 'isa{sv}'",
                "org.freedesktop.DBus.Error.InvalidArgs",
                "SendEncryptedService",
                (chat, "bytes", none())
            ),
            row!(
                "SendEncryptedService with no arguments",
                "org.freedesktop.DBus.Error.InvalidArgs",
                "SendEncryptedService",
                ()
            ),
            row!(
                "GetChat as 'x'",
                "org.freedesktop.DBus.Error.InvalidArgs",
                "GetChat",
                (5i64,)
            ),
            row!(
                "an unknown Manager1 method",
                "org.freedesktop.DBus.Error.UnknownMethod",
                "Dance",
                ()
            ),
            // Too large.
            row!(
                "a message of 1 MiB + 1 byte",
                "TooLarge",
                "SendEncryptedService",
                (chat, huge, none())
            ),
            row!(
                "Call with params over 2 MiB",
                "TooLarge",
                "Call",
                ("messages.sendEncryptedService", huge_params, none())
            ),
            // Actions.
            row!(
                "unknown action Dance",
                "UnknownAction",
                "SendServiceAction",
                (chat, "Dance", none(), none())
            ),
            row!(
                "unknown action decryptedMessageActionDance",
                "UnknownAction",
                "SendServiceAction",
                (chat, "decryptedMessageActionDance", none(), none())
            ),
            row!(
                "Resend by name",
                "NotAllowed",
                "SendServiceAction",
                (
                    chat,
                    "Resend",
                    dict(vec![
                        ("start_seq_no", Variant::from(0i32)),
                        ("end_seq_no", Variant::from(2i32))
                    ]),
                    none()
                )
            ),
            row!(
                "Resend as TL bytes",
                "NotAllowed",
                "SendEncryptedService",
                (chat, resend, none())
            ),
            row!(
                "CommitKey by name",
                "NotAllowed",
                "SendServiceAction",
                (
                    chat,
                    "CommitKey",
                    dict(vec![
                        ("exchange_id", Variant::from(9i64)),
                        ("key_fingerprint", Variant::from(5i64))
                    ]),
                    none()
                )
            ),
            // Action fields.
            row!(
                "SetMessageTTL without ttl_seconds",
                "InvalidArgument",
                "SendServiceAction",
                (chat, "SetMessageTTL", none(), none())
            ),
            row!(
                "ttl_seconds as a string",
                "InvalidArgument",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    dict(vec![("ttl_seconds", Variant::from("x"))]),
                    none()
                )
            ),
            row!(
                "an extra field",
                "InvalidArgument",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    dict(vec![
                        ("ttl_seconds", Variant::from(1i32)),
                        ("extra", Variant::from(1i32))
                    ]),
                    none()
                )
            ),
            // A field the chat refuses (as NotifyLayer's layer 1 in e2e_dbus: InvalidMessage).
            row!(
                "ttl_seconds -1",
                "InvalidMessage",
                "SendServiceAction",
                (chat, "SetMessageTTL", ttl(-1), none())
            ),
            // Options.
            row!(
                "an unknown option",
                "InvalidArgument",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    ttl(5),
                    dict(vec![("bogus", Variant::from(1u32))])
                )
            ),
            row!(
                "random_id as a string",
                "InvalidArgument",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    ttl(5),
                    dict(vec![("random_id", Variant::from("7"))])
                )
            ),
            row!(
                "random_id as i (not x)",
                "InvalidArgument",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    ttl(5),
                    dict(vec![("random_id", Variant::from(7i32))])
                )
            ),
            row!(
                "notify as a string",
                "InvalidArgument",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    ttl(5),
                    dict(vec![("notify", Variant::from("yes"))])
                )
            ),
            row!(
                "handle_token as a number",
                "InvalidArgument",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    ttl(5),
                    dict(vec![("handle_token", Variant::from(5i32))])
                )
            ),
            row!(
                "handle_token \"a-b\"",
                "InvalidArgument",
                "SendServiceAction",
                (chat, "SetMessageTTL", ttl(5), tok("a-b".into()))
            ),
            row!(
                "handle_token \"\"",
                "InvalidArgument",
                "SendServiceAction",
                (chat, "SetMessageTTL", ttl(5), tok(String::new()))
            ),
            row!(
                "handle_token \"x/y\"",
                "InvalidArgument",
                "SendServiceAction",
                (chat, "SetMessageTTL", ttl(5), tok("x/y".into()))
            ),
            row!(
                "handle_token \"a.b\"",
                "InvalidArgument",
                "SendServiceAction",
                (chat, "SetMessageTTL", ttl(5), tok("a.b".into()))
            ),
            row!(
                "handle_token of 256 characters",
                "InvalidArgument",
                "SendServiceAction",
                (chat, "SetMessageTTL", ttl(5), tok("x".repeat(256)))
            ),
            row!(
                "random_id 0",
                "BadRandomId",
                "SendServiceAction",
                (
                    chat,
                    "SetMessageTTL",
                    ttl(5),
                    dict(vec![("random_id", Variant::from(0i64))])
                )
            ),
            row!(
                "random_id option ≠ the message's",
                "InvalidArgument",
                "SendEncryptedService",
                (
                    chat,
                    ttl_message(5, 1),
                    dict(vec![("random_id", Variant::from(6i64))])
                )
            ),
            row!(
                "RequestChat with an unknown option",
                "InvalidArgument",
                "RequestChat",
                (BOB, dict(vec![("bogus", Variant::from(1i64))]))
            ),
            row!(
                "RequestChat with access_hash as a string",
                "InvalidArgument",
                "RequestChat",
                (BOB, dict(vec![("access_hash", Variant::from("1"))]))
            ),
            // Call.
            row!(
                "Call with bad JSON",
                "InvalidArgument",
                "Call",
                ("messages.sendEncryptedService", "{\"peer\":", none())
            ),
            row!(
                "Call with a JSON array",
                "InvalidArgument",
                "Call",
                ("messages.sendEncryptedService", "[]", none())
            ),
            row!(
                "Call without peer",
                "InvalidArgument",
                "Call",
                ("messages.sendEncryptedService", "{\"message\": {}}", none())
            ),
            row!(
                "Call of messages.sendMessage",
                "UnknownMethod",
                "Call",
                ("messages.sendMessage", "{}", none())
            ),
            row!(
                "Call of an empty method name",
                "UnknownMethod",
                "Call",
                ("", "{}", none())
            ),
            row!(
                "Call requestEncryption with option random_id",
                "InvalidArgument",
                "Call",
                (
                    "messages.requestEncryption",
                    format!("{{\"user_id\": {BOB}}}"),
                    dict(vec![("random_id", Variant::from(3i64))])
                )
            ),
            // The chat's state.
            row!(
                "SendServiceAction to a discarded chat",
                "WrongState",
                "SendServiceAction",
                (closed, "SetMessageTTL", ttl(5), none())
            ),
            row!(
                "SendEncryptedService to a discarded chat",
                "WrongState",
                "SendEncryptedService",
                (closed, good.clone(), none())
            ),
            row!(
                "Call sendEncryptedService to a discarded chat",
                "WrongState",
                "Call",
                (
                    "messages.sendEncryptedService",
                    send_json(closed.into(), ttl_json.clone()),
                    none()
                )
            ),
            row!(
                "DiscardChat of a discarded chat",
                "WrongState",
                "DiscardChat",
                (closed, false)
            ),
            row!(
                "DeclineChat of a ready chat",
                "WrongState",
                "DeclineChat",
                (chat,)
            ),
            row!(
                "AcceptChat of a ready chat",
                "WrongState",
                "AcceptChat",
                (chat,)
            ),
        ];
        let n_rows = rows.len();
        let mut problems = Vec::new();
        let t0 = Instant::now();
        for (label, want, call) in rows {
            let want = if want.contains('.') {
                want.to_owned()
            } else {
                format!("{}.{want}", ipc_proto::ERROR_PREFIX)
            };
            let r = call.await;
            let got = error_name(&r);
            let detail = match &r {
                Err(e) => e.to_string(),
                Ok(reply) => format!("{:?}", reply.body().signature()),
            };
            if got != want {
                problems.push(format!("{label}: expected {want}, got {got} ({detail})"));
            }
            // The daemon still serves, and nothing was stored.
            if let Err(e) = m.get_chat(chat).await {
                problems.push(format!("after {label}: GetChat failed: {e}"));
            }
            let after = snapshot(&store);
            if after != before {
                problems.push(format!("{label}: the store changed"));
                before = after;
            }
            eprintln!("row ok? {:5}  {label}: {got}", got == want);
        }
        // The same wrong signature by hand: busctl names the error in its debug log.
        if have("busctl", Command::new("busctl").arg("--version"), "systemd") {
            let o = run(
                &bus.address,
                "busctl",
                strings(&[
                    &format!("--address={}", bus.address),
                    "call",
                    BUS_NAME,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    "SendServiceAction",
                    "sa{sv}",
                    "x",
                    "0",
                ]),
                &[("SYSTEMD_LOG_LEVEL", "debug")],
            )
            .await;
            assert!(!o.status.success());
            let e = stderr(&o);
            if !e.contains("error-name=org.freedesktop.DBus.Error.InvalidArgs") {
                problems.push(format!("busctl 'sa{{sv}}': {e}"));
            }
            if snapshot(&store) != before {
                problems.push("busctl 'sa{sv}': the store changed".into());
            }
        }
        eprintln!(
            "{n_rows} bad-input rows in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));

        // Clients that leave right after their call: each sends, closes the connection at once
        // (the daemon's reply has nowhere to go), and the message is still sent.
        let mut gone = Vec::new();
        for j in 0..5 {
            let c = zbus::connection::Builder::address(bus.address.as_str())
                .build()
                .await
                .unwrap();
            let name = c.unique_name().unwrap().to_string();
            let token = format!("gone{j}");
            let msg = zbus::Message::method_call(MANAGER_PATH, "SendServiceAction")
                .destination(BUS_NAME)
                .interface(MANAGER_INTERFACE)
                .build(&(chat, "SetMessageTTL", ttl(100 + j), tok(token.clone())))
                .unwrap();
            c.send(&msg).await.unwrap();
            c.close().await.unwrap();
            gone.push(ipc_proto::request_path(&name, &token));
        }
        for h in &gone {
            let path = zbus::ObjectPath::try_from(h.as_str()).unwrap();
            let (m, path) = (&m, &path);
            let code = final_code(|| async move {
                match m.get_result(path).await {
                    Ok((code, _)) => Some(code),
                    // Not seen yet.
                    Err(ipc_proto::Error::NoSuchRequest(_)) => None,
                    Err(e) => panic!("GetResult {h}: {e}"),
                }
            })
            .await;
            assert_eq!(code, response::SENT, "{h}");
            // The Response went out as a broadcast; this client saw it once.
            assert_eq!(responses.one(h, 30).await.1, response::SENT, "{h}");
        }
        // (Five connections: the daemon may take their calls in any order.)
        let mut got = wait_ttls(&sim, BOB, chat, &[1, 100, 101, 102, 103, 104]).await;
        got.sort_unstable();
        assert_eq!(got, vec![1, 100, 101, 102, 103, 104]);
        // Still serving: a send with the longest token allowed.
        let h = m
            .send_service_action(chat, "SetMessageTTL", ttl(7), tok("y".repeat(255)))
            .await
            .unwrap();
        assert!(h.as_str().ends_with(&"y".repeat(255)));
        assert_eq!(responses.one(h.as_str(), 30).await.1, response::SENT);
        assert!(d.running(), "the daemon died");
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
        let warnings = log.lines().filter(|l| l.contains("WARN")).count();
        let errors = log.lines().filter(|l| l.contains("ERROR")).count();
        eprintln!("daemon log: {warnings} WARN, {errors} ERROR lines");
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}
