//! Two daemons (Alice and Bob, each on its own private bus) holding a secret chat through
//! tgsim: tgsim killed and restarted in the middle of a burst; the peer discarding the chat in
//! the middle of a burst.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use support::*;

const ALICE: i64 = 8201;
const BOB: i64 = 8202;

struct Pair {
    _tmp: Temp,
    sim: Sim,
    _buses: (Bus, Bus),
    daemons: (Daemon, Daemon),
    alice: Client,
    bob: Client,
    chat: i32,
    /// What the faults did while the chat was made.
    fault_report: Option<tgsim::admin::FaultsReport>,
}

async fn pair(name: &str) -> Pair {
    pair_with(name, None).await
}

/// A pair whose chat is requested while `faults` are on (cleared once both sides are ready).
async fn pair_with(name: &str, faults: Option<tgsim::faults::Faults>) -> Pair {
    let tmp = Temp::new(name);
    let (ba, bb) = (Bus::start(), Bus::start());
    let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice"), (BOB, "Bob")], &[]);
    let ka = sim.key_file(ALICE, &tmp.0);
    let kb = sim.key_file(BOB, &tmp.0);
    let da = Daemon::start(&tmp.0.join("alice"), &ba.address, &sim, &ka, "never");
    let db = Daemon::start(&tmp.0.join("bob"), &bb.address, &sim, &kb, "always");
    let alice = Client::connect(&ba.address).await;
    let bob = Client::connect(&bb.address).await;
    alice.wait_ready(30).await;
    bob.wait_ready(30).await;
    if let Some(f) = &faults {
        sim.admin().set_faults(f).unwrap();
    }
    let chat = alice
        .manager()
        .await
        .request_chat(BOB, HashMap::new())
        .await
        .unwrap();
    alice.wait_state(chat, "ready", 60).await;
    bob.wait_state(chat, "ready", 60).await;
    let fault_report = faults.as_ref().map(|_| sim.admin().faults().unwrap());
    if faults.is_some() {
        sim.admin()
            .set_faults(&tgsim::faults::Faults::none())
            .unwrap();
    }
    Pair {
        _tmp: tmp,
        sim,
        _buses: (ba, bb),
        daemons: (da, db),
        alice,
        bob,
        chat,
        fault_report,
    }
}

/// The TTLs of every ServiceAction Bob's daemon signals from now on.
async fn bob_ttls(bob: &Client) -> tokio::sync::mpsc::UnboundedReceiver<i64> {
    let mut s = zbus::MessageStream::for_match_rule(
        "type='signal',interface='io.github.tgsecretd.SecretChat1',member='ServiceAction'",
        &bob.conn,
        None,
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = s.next().await {
            let (_, _, name, json): (i64, i32, String, String) = m.body().deserialize().unwrap();
            if name == "decryptedMessageActionSetMessageTTL" {
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                if tx.send(v["ttl_seconds"].as_i64().unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[test]
fn tgsim_killed_and_restarted_mid_burst() {
    runtime().block_on(async {
        let mut p = pair("simkill").await;
        let mut ttls = bob_ttls(&p.bob).await;
        let responses = p.alice.responses().await;
        let m = p.alice.manager().await;
        let n = 400;
        let mut handles = Vec::new();
        for i in 1..=n {
            if i == n / 2 {
                p.sim.kill_and_restart();
            }
            let h = m
                .send_encrypted_service(
                    p.chat,
                    &ttl_message(0, i),
                    send_options(&format!("k{i}"), 500_000 + i64::from(i)),
                )
                .await
                .unwrap();
            handles.push(h.to_string());
        }
        let got = responses.wait(120, |g| g.len() >= handles.len()).await;
        let mut by: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (h, c, _) in &got {
            by.entry(h.as_str()).or_default().push(*c);
        }
        for h in &handles {
            assert_eq!(by.get(h.as_str()), Some(&vec![0]), "{h}");
        }
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while seen.len() < n as usize {
            match tokio::time::timeout_at(deadline, ttls.recv()).await {
                Ok(Some(t)) => seen.push(t),
                _ => break,
            }
        }
        assert_eq!(
            seen,
            (1..=i64::from(n)).collect::<Vec<_>>(),
            "Bob's transcript"
        );
        assert!(p.daemons.0.terminate().is_some_and(|s| s.success()));
        assert!(p.daemons.1.terminate().is_some_and(|s| s.success()));
    });
}

#[test]
fn the_peer_discards_mid_burst() {
    runtime().block_on(async {
        let mut p = pair("discard").await;
        let mut ttls = bob_ttls(&p.bob).await;
        let responses = p.alice.responses().await;
        let m = p.alice.manager().await;
        // A burst Bob cannot keep up with: Alice's requests queue up.
        let n = 300;
        let mut handles = Vec::new();
        for i in 1..=n {
            let h = m
                .send_encrypted_service(
                    p.chat,
                    &ttl_message(0, i),
                    send_options(&format!("d{i}"), 700_000 + i64::from(i)),
                )
                .await
                .unwrap();
            handles.push(h.to_string());
        }
        // Bob closes the chat once some of it arrived.
        let first = tokio::time::timeout(Duration::from_secs(60), ttls.recv())
            .await
            .unwrap();
        assert_eq!(first, Some(1));
        p.bob
            .manager()
            .await
            .discard_chat(p.chat, false)
            .await
            .unwrap();
        // Every request ends: sent, or ENCRYPTION_DECLINED (Telegram, or the chat's closure).
        let got = responses.wait(120, |g| g.len() >= handles.len()).await;
        let mut by: BTreeMap<&str, Vec<(u32, Option<String>)>> = BTreeMap::new();
        for (h, c, r) in &got {
            let err = r
                .get("error")
                .and_then(|v| String::try_from(v.try_clone().ok()?).ok());
            by.entry(h.as_str()).or_default().push((*c, err));
        }
        let (mut sent, mut declined) = (0, 0);
        for h in &handles {
            let rs = by
                .get(h.as_str())
                .unwrap_or_else(|| panic!("no Response for {h}"));
            assert_eq!(rs.len(), 1, "{h}: {rs:?}");
            match &rs[0] {
                (0, None) => sent += 1,
                (2, Some(e)) if e == "ENCRYPTION_DECLINED" => declined += 1,
                other => panic!("{h}: {other:?}"),
            }
        }
        assert!(
            sent >= 1 && declined >= 1,
            "sent {sent}, declined {declined}"
        );
        // Both sides end discarded; a new send is refused at once with a typed error.
        p.alice.wait_state(p.chat, "discarded", 30).await;
        assert_eq!(p.bob.chat_state(p.chat).await.as_deref(), Some("discarded"));
        match m
            .send_encrypted_service(p.chat, &ttl_message(0, 1), HashMap::new())
            .await
        {
            Err(ipc_proto::Error::WrongState(_)) => {}
            other => panic!("expected WrongState, got {other:?}"),
        }
        println!("{sent} sent, {declined} declined");
        assert!(p.daemons.0.terminate().is_some_and(|s| s.success()));
        assert!(p.daemons.1.terminate().is_some_and(|s| s.success()));
    });
}

#[test]
fn an_acceptance_whose_answer_was_lost_stands() {
    use grammers_tl_types::Identifiable;
    runtime().block_on(async {
        // Every acceptEncryption of Bob's runs at the server and its answer is lost (the
        // connection closes instead): his retries get ENCRYPTION_ALREADY_ACCEPTED (their
        // answers lost too, while the fault lasts). The acceptance stands: both sides become
        // ready, and messages flow both ways.
        let mut f = tgsim::faults::Faults::none();
        f.account_calls.insert(
            BOB,
            tgsim::faults::CallFaults {
                close_after: 1000,
                methods: vec![
                    grammers_tl_types::functions::messages::AcceptEncryption::CONSTRUCTOR_ID,
                ],
                ..Default::default()
            },
        );
        let mut p = pair_with("lostaccept", Some(f)).await;
        let mut ttls = bob_ttls(&p.bob).await;
        let responses = p.alice.responses().await;
        let m = p.alice.manager().await;
        let h = m
            .send_encrypted_service(p.chat, &ttl_message(0, 42), send_options("a1", 4242))
            .await
            .unwrap()
            .to_string();
        let got = responses.wait(30, |g| g.iter().any(|r| r.0 == h)).await;
        assert!(got.iter().any(|r| r.0 == h && r.1 == 0), "{got:?}");
        let t = tokio::time::timeout(Duration::from_secs(30), ttls.recv()).await;
        assert_eq!(t.ok().flatten(), Some(42));
        // And back: Bob writes, Alice reads.
        let mut alice_ttls = {
            let c = Client::connect_conn(p.alice.conn.clone());
            bob_ttls(&c).await
        };
        let hb = p
            .bob
            .manager()
            .await
            .send_encrypted_service(p.chat, &ttl_message(0, 43), send_options("b1", 4343))
            .await;
        assert!(hb.is_ok(), "{hb:?}");
        let t = tokio::time::timeout(Duration::from_secs(30), alice_ttls.recv()).await;
        assert_eq!(t.ok().flatten(), Some(43));
        let report = p.fault_report.take().unwrap();
        assert!(
            report.calls.closed_after >= 1,
            "the acceptance's answer was lost: {report:?}"
        );
        assert!(p.daemons.0.terminate().is_some_and(|s| s.success()));
        assert!(p.daemons.1.terminate().is_some_and(|s| s.success()));
    });
}

#[test]
fn an_incoming_chat_from_a_user_not_listed_waits_for_acceptance() {
    runtime().block_on(async {
        let tmp = Temp::new("never");
        let (ba, bb) = (Bus::start(), Bus::start());
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice"), (BOB, "Bob")], &[]);
        let ka = sim.key_file(ALICE, &tmp.0);
        let kb = sim.key_file(BOB, &tmp.0);
        let mut da = Daemon::start(&tmp.0.join("alice"), &ba.address, &sim, &ka, "never");
        // Bob accepts only user 1 (not Alice) at once.
        let mut db = Daemon::start(&tmp.0.join("bob"), &bb.address, &sim, &kb, "1");
        let alice = Client::connect(&ba.address).await;
        let bob = Client::connect(&bb.address).await;
        alice.wait_ready(30).await;
        bob.wait_ready(30).await;
        let chat = alice
            .manager()
            .await
            .request_chat(BOB, HashMap::new())
            .await
            .unwrap();
        bob.wait_state(chat, "requested", 30).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(alice.chat_state(chat).await.as_deref(), Some("waiting"));
        assert_eq!(bob.chat_state(chat).await.as_deref(), Some("requested"));
        // Sending before the chat is ready is a typed error.
        match bob
            .manager()
            .await
            .send_encrypted_service(chat, &ttl_message(0, 1), HashMap::new())
            .await
        {
            Err(ipc_proto::Error::WrongState(_)) => {}
            other => panic!("expected WrongState, got {other:?}"),
        }
        bob.manager().await.accept_chat(chat).await.unwrap();
        alice.wait_state(chat, "ready", 30).await;
        bob.wait_state(chat, "ready", 30).await;
        assert!(da.terminate().is_some_and(|s| s.success()));
        assert!(db.terminate().is_some_and(|s| s.success()));
    });
}
