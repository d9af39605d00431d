//! The `tgsim` binary with simulated peers (`--peer`) and faults, driven over the admin socket:
//! a chat between two peers, actions delivered in order through dropped / duplicated / reordered
//! updates and failing calls, a peer going offline and back. Only 127.0.0.1 and temp dirs;
//! every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use secret_core::tl::TlJson;
use secret_core::tl::enums::DecryptedMessageAction as A;
use secret_core::tl::types as st;
use serde_json::{Value, json};
use tgsim::admin::{AdminClient, AdminError, PeerChat};
use tgsim::faults::{CallFaults, Faults, InjectedError, UpdateFaults};

const WAIT: Duration = Duration::from_secs(10);
/// Bound of the waits for deliveries through faults.
const DELIVERY: Duration = Duration::from_secs(60);
const ANN: i64 = 2001;
const BOB: i64 = 2002;

/// A running `tgsim`, killed when dropped.
struct Tgsim {
    child: Child,
    admin: PathBuf,
}

impl Drop for Tgsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tgsim {
    fn start(dir: &Path, extra: &[&str]) -> Tgsim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tgsim"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
                "--state-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        let addr: std::net::SocketAddr = rx.recv_timeout(WAIT).unwrap().parse().unwrap();
        assert!(addr.ip().is_loopback());
        let admin = PathBuf::from(rx.recv_timeout(WAIT).unwrap());
        Tgsim { child, admin }
    }

    fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.admin).unwrap()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tgsim-peers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn chat(admin: &mut AdminClient, peer: i64, id: i32) -> Option<PeerChat> {
    admin
        .peer_chats(peer)
        .unwrap()
        .into_iter()
        .find(|c| c.chat_id == id)
}

/// Polls (bounded) until `f` holds for the peer's chat.
fn wait_chat(
    admin: &mut AdminClient,
    peer: i64,
    id: i32,
    what: &str,
    f: impl Fn(&PeerChat) -> bool,
) -> PeerChat {
    let start = Instant::now();
    loop {
        let c = chat(admin, peer, id);
        if let Some(c) = &c
            && f(c)
        {
            return c.clone();
        }
        assert!(start.elapsed() < DELIVERY, "{what}: {c:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ttl(n: i32) -> Value {
    A::SetMessageTTL(st::DecryptedMessageActionSetMessageTTL { ttl_seconds: n }).to_json()
}

#[test]
fn two_peers_from_flags_chat_through_faults_and_go_offline() {
    let dir = temp_dir("chat");
    let tg = Tgsim::start(
        &dir,
        &[
            "--account",
            "1001:15550001:Real",
            "--peer",
            "2001:15550201:Ann:normal",
            "--peer",
            "2002:15550202:Bob",
            "--seed",
            "5",
        ],
    );
    let mut admin = tg.admin();
    let accounts = admin.accounts().unwrap();
    assert_eq!(accounts.len(), 3);

    // Errors are clear.
    let err = admin.request_chat(1001, BOB).unwrap_err();
    assert!(
        matches!(&err, AdminError::Server(e) if e.contains("not a simulated peer")),
        "{err}"
    );
    let err = admin.set_behaviour(ANN, "sulky").unwrap_err();
    assert!(matches!(&err, AdminError::Server(e) if e.contains("unknown behaviour")));
    let err = admin.request_chat(ANN, 4242).unwrap_err();
    assert!(matches!(&err, AdminError::Server(e) if e.contains("no account")));

    let id = admin.request_chat(ANN, BOB).unwrap();
    let a = wait_chat(&mut admin, ANN, id, "Ann ready", |c| c.status == "ready");
    let b = wait_chat(&mut admin, BOB, id, "Bob ready", |c| c.status == "ready");
    assert!(a.key_fingerprint.is_some());
    assert_eq!(a.key_fingerprint, b.key_fingerprint);

    let err = admin
        .peer_send(ANN, id, json!({"_": "decryptedMessageActionNoSuchThing"}))
        .unwrap_err();
    assert!(matches!(&err, AdminError::Server(e) if e.contains("bad action")));

    let faults = Faults {
        seed: 9,
        updates: UpdateFaults {
            drop: 200,
            duplicate: 100,
            reorder: 100,
            delay: 50,
            delay_ms: 5,
        },
        calls: CallFaults {
            fail: 150,
            methods: Vec::new(),
            errors: vec![
                InjectedError::new(420, "FLOOD_WAIT_1"),
                InjectedError::new(500, "INTERNAL"),
            ],
            ..CallFaults::default()
        },
        ..Faults::default()
    };
    admin.set_faults(&faults).unwrap();
    assert_eq!(admin.faults().unwrap().faults, faults);

    let sent: Vec<Value> = (1..=20).map(ttl).collect();
    for action in &sent {
        admin.peer_send(ANN, id, action.clone()).unwrap();
    }
    let b = wait_chat(&mut admin, BOB, id, "Bob's 20 actions", |c| {
        c.transcript.len() >= sent.len()
    });
    assert_eq!(b.transcript, sent, "each action once, in order");
    // Bob echoes.
    let a = wait_chat(&mut admin, ANN, id, "Ann's echoes", |c| {
        c.transcript.len() >= sent.len()
    });
    assert_eq!(a.transcript, sent);

    let report = admin.faults().unwrap();
    assert!(report.updates.pushed > 0, "{report:?}");
    assert!(report.updates.dropped > 0, "{report:?}");
    assert!(
        report.calls.failed > 0 && report.calls.failed < report.calls.calls,
        "{report:?}"
    );

    // Offline: nothing is processed until Bob comes back.
    admin.set_faults(&Faults::none()).unwrap();
    admin.set_behaviour(BOB, "offline").unwrap();
    admin.peer_send(ANN, id, ttl(21)).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(chat(&mut admin, BOB, id).unwrap().transcript.len(), 20);
    let err = admin.peer_send(BOB, id, ttl(99)).unwrap_err();
    assert!(matches!(&err, AdminError::Server(e) if e.contains("offline")));
    admin.set_behaviour(BOB, "echo").unwrap();
    let b = wait_chat(&mut admin, BOB, id, "Bob back", |c| {
        c.transcript.len() >= 21
    });
    assert_eq!(b.transcript.last(), Some(&ttl(21)));
    assert_eq!(b.transcript.len(), 21);

    admin.shutdown().unwrap();
    drop(tg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn faults_file_and_add_peer_from_the_admin_socket() {
    let dir = temp_dir("faults-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("faults.json");
    std::fs::write(
        &file,
        r#"{"seed": 3, "updates": {"drop": 1000}, "calls": {"fail": 0}}"#,
    )
    .unwrap();
    let tg = Tgsim::start(&dir.join("state"), &["--faults", file.to_str().unwrap()]);
    let mut admin = tg.admin();
    let report = admin.faults().unwrap();
    assert_eq!(report.faults.seed, 3);
    assert_eq!(report.faults.updates.drop, 1000);

    admin.add_peer(ANN, "15550201", "Ann", "normal").unwrap();
    admin
        .add_peer(BOB, "15550202", "Bob", "never-accept")
        .unwrap();
    assert!(admin.add_peer(BOB, "15559999", "Bob", "normal").is_err());
    // Every push is dropped; the peers' polling still completes the request on Bob's side.
    let id = admin.request_chat(ANN, BOB).unwrap();
    wait_chat(&mut admin, BOB, id, "Bob sees the request", |c| {
        c.status == "requested"
    });
    assert_eq!(chat(&mut admin, ANN, id).unwrap().status, "waiting");
    assert!(admin.faults().unwrap().updates.dropped > 0);

    admin.shutdown().unwrap();
    drop(tg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_explains_accounts_and_peers() {
    let out = Command::new(env!("CARGO_BIN_EXE_tgsim"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--peer",
        "--account",
        "--faults",
        "--seed",
        "EXAMPLE",
        "echo",
    ] {
        assert!(help.contains(needle), "help lacks {needle}");
    }
}
