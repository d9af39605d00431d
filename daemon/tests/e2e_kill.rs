//! kill -9 of the tgsecretd binary at random moments during bursts of SendEncryptedService
//! calls over 10 chats (real processes: a private dbus-daemon, tgsim, tgsecretd), then a
//! restart. Checked after every round: every call that returned a handle reached the peer
//! exactly once and in order; every handle got its one result (the same content if it was
//! announced again after a restart); each random_id was relayed with one ciphertext.
//!
//! 10 rounds of 1,000 calls here; 100 under `--ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secret_core::rand::{SecureRandom, SeededRandom};
use support::*;

const ALICE: i64 = 8001;
const BOB: i64 = 8002;
const CHATS: usize = 10;
const CALLS: usize = 1000;

#[test]
fn kill_9_during_bursts_loses_and_duplicates_nothing() {
    rounds(10, 1);
}

#[test]
#[ignore]
fn kill_9_during_bursts_100_rounds() {
    rounds(100, 2);
}

fn rounds(n: usize, seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n, seed));
}

async fn run(rounds: usize, seed: u64) {
    let tmp = Temp::new("kill");
    let bus = Bus::start();
    let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
    let key = sim.key_file(ALICE, &tmp.0);
    let daemon = Arc::new(Mutex::new(Daemon::start(
        &tmp.0.join("d"),
        &bus.address,
        &sim,
        &key,
        "never",
    )));
    let client = Client::connect(&bus.address).await;
    client.wait_ready(30).await;
    let m = client.manager().await;
    let mut chats = Vec::new();
    for _ in 0..CHATS {
        chats.push(m.request_chat(BOB, HashMap::new()).await.unwrap());
    }
    for &c in &chats {
        client.wait_state(c, "ready", 30).await;
    }

    // Every Response, by handle.
    let responses = client.responses().await;

    let mut rng = SeededRandom::new(seed);
    let mut sent_per_chat = vec![0usize; CHATS];
    let mut handles: Vec<String> = Vec::new();
    let mut kills = 0;
    for round in 0..rounds {
        let t0 = std::time::Instant::now();
        // The kill comes at a random moment of the burst.
        let kill_after = Duration::from_millis(50 + rng.below(1500));
        let d2 = Arc::clone(&daemon);
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            d2.lock().unwrap().restart();
        });
        let per_chat = CALLS / CHATS;
        let mut tasks = Vec::new();
        for (ci, &chat) in chats.iter().enumerate() {
            let conn = client.conn.clone();
            let start = sent_per_chat[ci];
            tasks.push(tokio::spawn(async move {
                let m = ipc_proto::ManagerProxy::new(&conn).await.unwrap();
                let mut hs = Vec::new();
                for n in start..start + per_chat {
                    let rid = (ci as i64 + 1) * 10_000_000 + n as i64 + 1;
                    let token = format!("c{ci}n{n}");
                    let msg = ttl_message(0, n as i32 + 1);
                    // Until it is accepted: a call lost with the daemon is sent again (same
                    // random_id, same token) once it is back.
                    let mut tries = 0;
                    loop {
                        match m
                            .send_encrypted_service(chat, &msg, send_options(&token, rid))
                            .await
                        {
                            Ok(h) => {
                                hs.push(h.to_string());
                                break;
                            }
                            Err(e) => {
                                tries += 1;
                                assert!(tries < 600, "chat {chat} call {n}: {e}");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
                hs
            }));
        }
        for t in tasks {
            handles.extend(t.await.unwrap());
        }
        killer.await.unwrap();
        kills += 1;
        for s in &mut sent_per_chat {
            *s += per_chat;
        }
        let burst = t0.elapsed();
        check(
            &client,
            &sim,
            &chats,
            &sent_per_chat,
            &handles,
            &responses,
            round,
        )
        .await;
        println!(
            "round {round}: burst {} ms (kill after {} ms), checked after {} ms",
            burst.as_millis(),
            kill_after.as_millis(),
            t0.elapsed().as_millis()
        );
    }
    let dup = by_handle(&responses.wait(0, |_| true).await)
        .values()
        .filter(|v| v.len() > 1)
        .count();
    println!(
        "{rounds} rounds, {kills} kills, {} calls accepted, {dup} Responses announced again after a restart",
        handles.len()
    );
    assert!(
        daemon
            .lock()
            .unwrap()
            .terminate()
            .is_some_and(|s| s.success())
    );
}

async fn check(
    client: &Client,
    sim: &Sim,
    chats: &[i32],
    sent: &[usize],
    handles: &[String],
    responses: &support::Responses,
    round: usize,
) {
    client.wait_ready(30).await;
    // Every handle gets its result.
    let got = by_handle(
        &responses
            .wait(60, |got| {
                let have: std::collections::HashSet<&str> =
                    got.iter().map(|r| r.0.as_str()).collect();
                handles.iter().all(|h| have.contains(h.as_str()))
            })
            .await,
    );
    {
        let missing: Vec<_> = handles.iter().filter(|h| !got.contains_key(*h)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: no Response for {missing:?}"
        );
        for h in handles {
            let rs = &got[h];
            assert!(
                rs.iter().all(|r| r.0 == 0),
                "round {round}: {h} failed: {rs:?}"
            );
            assert!(
                rs.iter().all(|r| r == &rs[0]),
                "round {round}: {h} got different results: {rs:?}"
            );
        }
        let mut unique = handles.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), handles.len(), "one handle per call");
    }
    // Every accepted call reached Bob exactly once, in order.
    for (ci, &chat) in chats.iter().enumerate() {
        let want: Vec<i64> = (1..=sent[ci] as i64).collect();
        let mut got = Vec::new();
        for _ in 0..1200 {
            got = sim
                .transcript(BOB, chat)
                .iter()
                .filter_map(ttl_of)
                .collect();
            if got.len() >= want.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(got, want, "round {round}: chat {chat}: Bob's transcript");
    }
    // No (key, out_seq_no) carried two different messages, as Bob decrypted them; the chats
    // re-keyed on the way (every 100 messages).
    for c in sim.admin().peer_chats(BOB).unwrap() {
        assert!(
            c.reused_slots.is_empty(),
            "round {round}: chat {}: slots used twice: {:?}",
            c.chat_id,
            c.reused_slots
        );
        if sent.iter().sum::<usize>() >= 2000 {
            assert!(
                c.rekeys >= 1,
                "round {round}: chat {} never re-keyed",
                c.chat_id
            );
        }
    }
    // Each random_id Alice used went out with one ciphertext, however often it was relayed.
    let mut by_rid: HashMap<i64, String> = HashMap::new();
    for r in sim.admin().relayed(None).unwrap() {
        if r.sender != ALICE {
            continue;
        }
        if let Some(prev) = by_rid.insert(r.random_id, r.bytes.clone()) {
            assert_eq!(
                prev, r.bytes,
                "random_id {} carried two ciphertexts",
                r.random_id
            );
        }
    }
}

/// Responses by handle: (code, a summary of the results) each time one came.
fn by_handle(got: &[Response]) -> BTreeMap<String, Vec<(u32, String)>> {
    let mut m: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    for (path, code, results) in got {
        let mut keys: Vec<_> = results.keys().cloned().collect();
        keys.sort();
        let summary = format!("{code} {keys:?} {:?}", results.get("random_id"));
        m.entry(path.clone()).or_default().push((*code, summary));
    }
    m
}
