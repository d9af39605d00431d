//! A lossy network: tgsim drops 10 % of pushed updates, duplicates 5 %, reorders and delays
//! others, fails 5 % of calls (FLOOD_WAIT, INTERNAL, MSG_WAIT_FAILED) and cuts connections
//! before or after calls, while 1,000 service messages go each way between the daemon (Alice,
//! over D-Bus) and a simulated peer (Bob). Both transcripts must be complete, in order, with
//! no duplicates; every request gets its one result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;
use tgsim::faults::{CallFaults, Faults, InjectedError, UpdateFaults};

const ALICE: i64 = 8101;
const BOB: i64 = 8102;
/// Messages each way (`LOSSY_N` overrides, for exploring).
fn n() -> i32 {
    std::env::var("LOSSY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn a_thousand_messages_each_way_through_a_lossy_server() {
    let rt = runtime();
    rt.block_on(run());
}

async fn run() {
    let n_msgs = n();
    let tmp = Temp::new("lossy");
    let bus = Bus::start();
    let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
    let key = sim.key_file(ALICE, &tmp.0);
    let mut daemon = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
    let client = Client::connect(&bus.address).await;
    client.wait_ready(30).await;
    let m = client.manager().await;
    let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
    client.wait_state(chat, "ready", 30).await;

    // Alice's view: every ServiceAction signal of the chat, in order.
    let mut actions = zbus::MessageStream::for_match_rule(
        "type='signal',interface='io.github.tgsecretd.SecretChat1',member='ServiceAction'",
        &client.conn,
        None,
    )
    .await
    .unwrap();
    let received = tokio::spawn(async move {
        let mut ttls = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
        while ttls.len() < n_msgs as usize {
            match tokio::time::timeout_at(deadline, actions.next()).await {
                Ok(Some(Ok(msg))) => {
                    let (_, _, name, json): (i64, i32, String, String) =
                        msg.body().deserialize().unwrap();
                    if name == "decryptedMessageActionSetMessageTTL" {
                        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                        ttls.push(v["ttl_seconds"].as_i64().unwrap());
                    }
                }
                _ => break,
            }
        }
        ttls
    });
    let responses = client.responses().await;

    // The faults, on every account (Bob's calls are retried by his own client).
    let faults = Faults {
        seed: 7,
        updates: UpdateFaults {
            drop: 100,
            duplicate: 50,
            reorder: 100,
            delay: 50,
            delay_ms: 20,
        },
        calls: CallFaults {
            fail: 50,
            errors: vec![
                InjectedError::new(420, "FLOOD_WAIT_1"),
                InjectedError::new(500, "INTERNAL"),
                InjectedError::new(400, "MSG_WAIT_FAILED"),
            ],
            close_before: 10,
            close_after: 10,
            ..CallFaults::default()
        },
        ..Faults::none()
    };
    if std::env::var_os("LOSSY_NO_FAULTS").is_none() {
        sim.admin().set_faults(&faults).unwrap();
    }

    // Bob sends 2001..=3000 while Alice sends 1..=1000.
    let admin = sim.admin.clone();
    let bob = tokio::task::spawn_blocking(move || {
        let mut a = tgsim::admin::AdminClient::connect(&admin).unwrap();
        for n in 1..=n_msgs {
            let action = serde_json::json!({
                "_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 2000 + n
            });
            a.peer_send(BOB, chat, action).unwrap();
            // Paced like Alice's stream, so both interleave (and the chat re-keys mid-burst:
            // a re-key's messages wait behind whatever the other side queued before).
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let mut handles = Vec::new();
    let t0 = Instant::now();
    for n in 1..=n_msgs {
        if n % 100 == 0 {
            println!("alice: {n} accepted after {} ms", t0.elapsed().as_millis());
        }
        let h = m
            .send_encrypted_service(
                chat,
                &ttl_message(0, n),
                send_options(&format!("l{n}"), 900_000 + i64::from(n)),
            )
            .await
            .unwrap();
        handles.push(h.to_string());
    }
    bob.await.unwrap();
    println!("both sent after {} ms", t0.elapsed().as_millis());

    // Every request gets its one result.
    let got = responses.wait(120, |got| got.len() >= handles.len()).await;
    println!(
        "{} responses after {} ms",
        got.len(),
        t0.elapsed().as_millis()
    );
    let mut by_handle: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (h, code, _) in &got {
        by_handle.entry(h.as_str()).or_default().push(*code);
    }
    for h in &handles {
        assert_eq!(by_handle.get(h.as_str()), Some(&vec![0]), "{h}");
    }

    // Bob got 1..=1000 once each, in order.
    let deadline = Instant::now() + Duration::from_secs(60);
    let want: Vec<i64> = (1..=i64::from(n_msgs)).collect();
    loop {
        let t: Vec<i64> = sim.ttls(BOB, chat);
        if t.len() >= want.len() || Instant::now() > deadline {
            println!("bob has {} after {} ms", t.len(), t0.elapsed().as_millis());
            assert_eq!(t, want, "Bob's transcript");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Alice got 2001..=3000 once each, in order.
    let alice = received.await.unwrap();
    println!(
        "alice has {} after {} ms",
        alice.len(),
        t0.elapsed().as_millis()
    );
    assert_eq!(
        alice,
        (2001..=2000 + i64::from(n_msgs)).collect::<Vec<i64>>(),
        "Alice's transcript"
    );
    // A re-key's messages wait in the seq stream behind what the other side queued before
    // them, so with both sides bursting the exchange completes at the pace of the slower
    // stream: its CommitKey can still be on its way (and be dropped and re-sent) when both
    // transcripts are complete. Wait for it rather than look once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let bob_chat = loop {
        let c = sim
            .admin()
            .peer_chats(BOB)
            .unwrap()
            .into_iter()
            .find(|c| c.chat_id == chat)
            .unwrap();
        if n_msgs < 300 || c.rekeys >= 1 || Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "Bob's re-keys: {} after {} ms",
        bob_chat.rekeys,
        t0.elapsed().as_millis()
    );
    assert!(
        bob_chat.reused_slots.is_empty(),
        "{:?}",
        bob_chat.reused_slots
    );
    if n_msgs >= 300 {
        assert!(bob_chat.rekeys >= 1, "no re-key during the burst");
    }
    let report = sim.admin().faults().unwrap();
    println!("faults: {report:?}");
    assert!(daemon.terminate().is_some_and(|s| s.success()));
}
