//! `instance::Tgsim`, the whole stack in-process: it serves what the binary serves, stopping it
//! frees everything (no thread left behind, the model dropped, the admin socket removed), its
//! state survives into the next start on the same dir, and bad options are typed errors that
//! leave nothing running. One test, sequential, because it counts this process's threads.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tgsim::faults::{Faults, UpdateFaults};
use tgsim::instance::{AccountSpec, Options, PeerSpec, StartError, Tgsim};
use tgsim::peer::Behaviour;

const ANN: i64 = 3001;
const BOB: i64 = 3002;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tgsim-instance-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Names of this process's threads that start with `tgsim-`.
fn tgsim_threads() -> Vec<String> {
    let mut names = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(name) = std::fs::read_to_string(t.path().join("comm")) {
            let name = name.trim().to_owned();
            if name.starts_with("tgsim-") {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn opts(dir: &std::path::Path) -> Options {
    let spec = |id, phone: &str, name: &str| AccountSpec {
        id,
        phone: phone.into(),
        first_name: name.into(),
    };
    let mut o = Options::new(dir);
    o.peers = vec![
        PeerSpec {
            account: spec(ANN, "9996631001", "Ann"),
            behaviour: Behaviour::Normal,
        },
        PeerSpec {
            account: spec(BOB, "9996632002", "Bob"),
            behaviour: Behaviour::Echo,
        },
    ];
    o.peer_poll = Duration::from_millis(20);
    o.faults = Faults {
        seed: 5,
        updates: UpdateFaults {
            drop: 200,
            delay: 200,
            delay_ms: 5,
            ..UpdateFaults::default()
        },
        ..Faults::none()
    };
    o
}

#[test]
fn runs_stops_cleanly_and_restarts_on_its_state() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = temp_dir("run");
    assert!(tgsim_threads().is_empty());

    let (weak_model, chat) = rt.block_on(async {
        let tgsim = Tgsim::start(opts(&dir)).await.unwrap();
        assert!(tgsim.local_addr().ip().is_loopback());
        assert!(tgsim.admin_path().exists());
        // (Linux shows 15 bytes of a thread's name; a new thread names itself when it runs.)
        wait_for("the threads", || {
            tgsim_threads() == ["tgsim-faulty-si", "tgsim-peer-poll", "tgsim-peers"]
        });
        // The peers hold a chat through the dropped and delayed updates (the poll recovers
        // what was dropped).
        let peers = tgsim.simulation().peers.clone();
        let chat = peers.request_chat(ANN, BOB).unwrap();
        let ttl = |n| {
            secret_core::tl::enums::DecryptedMessageAction::SetMessageTTL(
                secret_core::tl::types::DecryptedMessageActionSetMessageTTL { ttl_seconds: n },
            )
        };
        let ready = move |p: &tgsim::peer::PeerHost, who| {
            p.chat_info(who, chat)
                .is_some_and(|i| i.status == secret_core::chat::Status::Ready)
        };
        let p = peers.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("the chat", || ready(&p, ANN) && ready(&p, BOB));
            for n in 1..=10 {
                p.send_action(ANN, chat, ttl(n)).unwrap();
            }
            wait_for("the echoes", || p.transcript(ANN, chat).len() == 10);
        })
        .await
        .unwrap();
        assert_eq!(
            peers.transcript(ANN, chat),
            (1..=10).map(ttl).collect::<Vec<_>>()
        );
        // A key provisioned in-process is saved in the state dir.
        let key = tgsim.provision_key(ANN).unwrap();
        assert_eq!(key.account, ANN);
        let keys = std::fs::read_to_string(dir.join("keys")).unwrap();
        assert!(keys.contains(&key.auth_key), "{keys}");
        (Arc::downgrade(tgsim.model()), chat)
        // dropped here
    });
    // Everything is freed once the aborted tasks are gone: threads joined, the model dropped.
    wait_for("the threads to end", || tgsim_threads().is_empty());
    wait_for("the model to be dropped", || weak_model.upgrade().is_none());
    assert!(!dir.join("admin.sock").exists());

    // Restart on the same dir: the accounts, the chat and the relay log are still there.
    rt.block_on(async {
        let tgsim = Tgsim::start(opts(&dir)).await.unwrap();
        let world = tgsim.model().snapshot();
        assert!(world.accounts.contains_key(&ANN) && world.accounts.contains_key(&BOB));
        assert!(world.chats.contains_key(&chat));
        assert!(
            tgsim
                .model()
                .relayed()
                .iter()
                .filter(|r| r.chat_id == chat)
                .count()
                >= 20
        );
    });
    wait_for("the threads to end", || tgsim_threads().is_empty());

    // Bad options: typed errors, nothing left running.
    rt.block_on(async {
        let mut o = opts(&dir);
        o.listen = "10.1.2.3:0".parse().unwrap();
        assert!(matches!(Tgsim::start(o).await, Err(StartError::Usage(_))));

        let mut o = opts(&dir);
        o.admin_socket = Some(dir.join("no-such-dir").join("admin.sock"));
        match Tgsim::start(o).await {
            Err(StartError::Bind(e)) => assert!(e.contains("admin socket"), "{e}"),
            other => panic!("expected a bind error, got {other:?}"),
        }

        let mut o = opts(&dir);
        o.accounts.push(AccountSpec {
            id: ANN,
            phone: "1234".into(),
            first_name: "Other".into(),
        });
        match Tgsim::start(o).await {
            Err(StartError::Usage(e)) => assert!(e.contains("exists with phone"), "{e}"),
            other => panic!("expected a usage error, got {other:?}"),
        }
    });
    wait_for("the threads to end", || tgsim_threads().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
