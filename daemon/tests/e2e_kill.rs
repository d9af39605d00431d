//! kill -9 of the tgsecretd binary at random moments during bursts of SendEncryptedService
//! calls over 10 chats (real processes: a private dbus-daemon, tgsim, tgsecretd), then a
//! restart. Checked after every round: every call that returned a handle reached the peer
//! exactly once and in order; every handle got its one result (the same content if it was
//! announced again after a restart); each random_id was relayed with one ciphertext.
//!
//! 10 rounds of 1,000 calls here; 100 under `--ignored`. And a kill -9 in the middle of a
//! `ForgetChat`, between its batches: the repeat finishes it. And kills while chats are made
//! both ways (the peer asks, the daemon accepts; callers ask, the peer accepts): every chat
//! ends ready on both sides with one key.
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

/// `ForgetChat` removes a closed chat's 3,000 results in batches of 1,024 keys, then the
/// chat's own records in one batch. Killed as soon as the first results are gone (its
/// `GetResult` answers `NoSuchRequest`): after the restart the chat is still there, or gone if
/// the forget had finished; a repeat `ForgetChat` finishes (or finds no chat), nothing of the
/// chat is left in the store, and the other chat still sends.
#[test]
fn kill_9_during_a_forget_is_finished_by_a_repeat() {
    const RESULTS: usize = 3000;
    let rt = runtime();
    rt.block_on(async {
        let Stack {
            tmp,
            bus: _bus,
            sim: _sim,
            key: _,
            mut d,
            client,
        } = Stack::start("kill-forget", ALICE, (BOB, "normal"), "always").await;
        let responses = client.responses().await;
        let m = client.manager().await;
        let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
        let other = m.request_chat(BOB, HashMap::new()).await.unwrap();
        client.wait_state(chat, "ready", 30).await;
        client.wait_state(other, "ready", 30).await;
        let mut handles = Vec::new();
        for round in 0..RESULTS / 50 {
            let calls = (0..50).map(|i| {
                let m = m.clone();
                async move {
                    let mut o: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
                    o.insert("handle_token", zbus::Variant::from(format!("k{round}_{i}")));
                    m.send_service_action(chat, "Noop", HashMap::new(), o)
                        .await
                        .unwrap()
                }
            });
            handles.extend(futures_util::future::join_all(calls).await);
        }
        let got = responses.wait(120, |g| g.len() >= RESULTS).await;
        assert_eq!(got.len(), RESULTS);
        assert!(got.iter().all(|r| r.1 == ipc_proto::response::SENT));
        m.discard_chat(chat, false).await.unwrap();
        client.wait_state(chat, "discarded", 10).await;

        // Forget (asked again while the discardEncryption is still owed), and kill -9 once the
        // first results are gone.
        let forget = {
            let m = m.clone();
            tokio::spawn(async move {
                loop {
                    match m.forget_chat(chat).await {
                        Err(ipc_proto::Error::WrongState(w)) if w.contains("still owes") => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => return other,
                    }
                }
            })
        };
        let first = &handles[0];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !matches!(
            m.get_result(first).await,
            Err(ipc_proto::Error::NoSuchRequest(_))
        ) {
            assert!(
                std::time::Instant::now() < deadline,
                "the forget never began"
            );
        }
        d.kill9();
        let _ = forget.await;

        d.restart();
        let m = answering_manager(&client).await;
        let mid_way = m.get_chat(chat).await.is_ok();
        eprintln!(
            "the kill left the chat {}",
            if mid_way {
                "half forgotten"
            } else {
                "forgotten"
            }
        );
        match m.forget_chat(chat).await {
            Ok(()) => assert!(mid_way),
            Err(ipc_proto::Error::NoSuchChat(_)) => assert!(!mid_way),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            m.get_chat(chat).await,
            Err(ipc_proto::Error::NoSuchChat(_))
        ));
        let last = &handles[RESULTS - 1];
        assert!(matches!(
            m.get_result(last).await,
            Err(ipc_proto::Error::NoSuchRequest(_))
        ));
        let h = m
            .send_service_action(other, "Noop", HashMap::new(), HashMap::new())
            .await
            .unwrap();
        assert_eq!(
            responses.one(h.as_str(), 30).await.1,
            ipc_proto::response::SENT
        );
        assert!(d.terminate().is_some_and(|s| s.success()));
        assert_forgotten(&tmp.0.join("d/store"), chat, last.as_str(), other);
    });
}

/// Rounds of [`kill_9_while_chats_are_made_both_ways`], and the chats each side asks for in
/// one.
const CHAT_ROUNDS: usize = 8;
const CHATS_EACH_WAY: usize = 4;
/// The actions Bob sends in each of up to three older chats per round of it.
const BOB_SENDS_PER_CHAT: usize = 12;

/// kill -9 at a random moment while secret chats are being made both ways: Bob (tgsim's
/// simulated peer) asks Alice for chats, which her daemon accepts at once (`always`), and
/// Alice's callers ask Bob for chats with `RequestChat` (a call lost with the daemon is made
/// again once it is back). After each restart:
/// - the chats listed are exactly those Bob asked for and those `RequestChat` answered (each
///   call under a chat id of its own, so one asked again after a lost answer makes nothing
///   more), and each becomes ready;
/// - Alice's chats with Bob are exactly Bob's chats with Alice, each ready on both sides with
///   the same key fingerprint (nothing half made, nothing made twice for one request);
/// - a message sent in each chat new this round is what Bob decrypts in it;
/// - the actions Bob sent meanwhile in older chats are each in Alice's inbox once, in order.
#[test]
fn kill_9_while_chats_are_made_both_ways() {
    let rt = runtime();
    rt.block_on(async {
        let (_tmp, _bus, sim, daemon, client) = killable("kill-chats", "always").await;
        let responses = client.responses().await;
        let mut rng = SeededRandom::new(3);
        let mut asked: Vec<i32> = Vec::new();
        let mut checked: std::collections::BTreeSet<i32> = std::collections::BTreeSet::new();
        // The TTLs Bob sent, by chat, in order.
        let mut bob_sent: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for round in 0..CHAT_ROUNDS {
            let kill_after = Duration::from_millis(20 + rng.below(400));
            let d2 = Arc::clone(&daemon);
            let killer = tokio::spawn(async move {
                tokio::time::sleep(kill_after).await;
                d2.lock().unwrap().restart();
            });
            // Bob asks from tgsim, which is not killed, and meanwhile sends in the chats made
            // in earlier rounds (at most three of them).
            let mut admin = sim.admin();
            // Three older chats, a different three each round (Bob's and Alice's alike).
            let older: Vec<i32> = checked.iter().copied().collect();
            let mut talk: Vec<i32> = (0..3)
                .filter_map(|k| older.get((round * 5 + k * 7) % older.len().max(1)).copied())
                .collect();
            talk.dedup();
            let plan: Vec<(i32, i32)> = (0..BOB_SENDS_PER_CHAT)
                .flat_map(|n| {
                    let ttl = (round * 1000 + n + 1) as i32;
                    talk.iter().map(move |&c| (c, ttl))
                })
                .collect();
            for &(c, ttl) in &plan {
                bob_sent.entry(c).or_default().push(i64::from(ttl));
            }
            let bob = tokio::task::spawn_blocking(move || {
                let mut made = Vec::new();
                for (i, (c, ttl)) in plan.into_iter().enumerate() {
                    let action = serde_json::json!({
                        "_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": ttl
                    });
                    admin.peer_send(BOB, c, action).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                    if i % 8 == 0 && made.len() < CHATS_EACH_WAY {
                        made.push(admin.request_chat(BOB, ALICE).unwrap());
                    }
                }
                while made.len() < CHATS_EACH_WAY {
                    std::thread::sleep(Duration::from_millis(40));
                    made.push(admin.request_chat(BOB, ALICE).unwrap());
                }
                made
            });
            let alice = (0..CHATS_EACH_WAY).map(|i| {
                let conn = client.conn.clone();
                // Under a chosen id, so that a call made again after a lost answer finds the
                // chat it made: exactly one chat per call.
                let id = (round * 100 + i + 1) as i32;
                async move {
                    tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
                    let m = ipc_proto::ManagerProxy::new(&conn).await.unwrap();
                    let options = HashMap::from([("chat_id", zbus::Variant::from(id))]);
                    let mut tries = 0;
                    loop {
                        match m.request_chat(BOB, options.clone()).await {
                            Ok(chat) => {
                                assert_eq!(chat, id);
                                return chat;
                            }
                            Err(e) => {
                                tries += 1;
                                assert!(tries < 600, "RequestChat: {e}");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            });
            asked.extend(futures_util::future::join_all(alice).await);
            asked.extend(bob.await.unwrap());
            asked.sort();
            killer.await.unwrap();
            client.wait_ready(30).await;

            // Every chat asked for is listed; every listed chat becomes ready.
            let m = client.manager().await;
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            let alices = loop {
                let list = m.list_chats().await.unwrap();
                let states: BTreeMap<i32, (String, i64)> = list
                    .iter()
                    .map(|c| {
                        let id = i32::try_from(&c["chat_id"]).unwrap();
                        let state = String::try_from(c["state"].try_clone().unwrap()).unwrap();
                        let fp = i64::try_from(&c["key_fingerprint"]).unwrap_or(0);
                        (id, (state, fp))
                    })
                    .collect();
                let done =
                    states.keys().eq(asked.iter()) && states.values().all(|(s, _)| s == "ready");
                if done {
                    break states;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: not all ready: {states:?}, asked {asked:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            // Alice's chats are Bob's, with the same keys (Bob takes Alice's answers a moment
            // after she has them).
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let bobs: BTreeMap<i32, (String, i64)> = sim
                    .admin()
                    .peer_chats(BOB)
                    .unwrap()
                    .into_iter()
                    .map(|c| (c.chat_id, (c.status, c.key_fingerprint.unwrap_or(0))))
                    .collect();
                if bobs == alices {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let differ: Vec<_> = alices
                        .keys()
                        .chain(bobs.keys())
                        .filter(|c| alices.get(c) != bobs.get(c))
                        .map(|c| (c, alices.get(c), bobs.get(c)))
                        .collect();
                    panic!("round {round}: Alice's chats and Bob's differ: {differ:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // A message in each new chat, decrypted by Bob.
            let fresh: Vec<i32> = alices
                .keys()
                .copied()
                .filter(|c| !checked.contains(c))
                .collect();
            for (i, &chat) in fresh.iter().enumerate() {
                let ttl = (round * 100 + i + 1) as i32;
                let h = m
                    .send_encrypted_service(
                        chat,
                        &ttl_message(0, ttl),
                        send_options(&format!("r{round}c{i}"), i64::from(ttl)),
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    responses.one(h.as_str(), 60).await.1,
                    ipc_proto::response::SENT,
                    "round {round}: chat {chat}"
                );
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let got: Vec<i64> = sim.ttls(BOB, chat);
                    if !got.is_empty() {
                        assert_eq!(got, [i64::from(ttl)], "round {round}: chat {chat}");
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "round {round}: Bob never got chat {chat}'s message"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                checked.insert(chat);
            }
            // Alice has every action Bob sent, once each and in order, in her chats' inboxes.
            for (&chat, want) in &bob_sent {
                let c = ipc_proto::SecretChatProxy::builder(&client.conn)
                    .path(ipc_proto::chat_path(chat))
                    .build()
                    .await
                    .unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let got: Vec<i64> = c
                        .events(0, 1000)
                        .await
                        .unwrap()
                        .iter()
                        .filter_map(|(_, j)| {
                            let e: serde_json::Value = serde_json::from_str(j).ok()?;
                            (e["event"] == ipc_proto::events::ACTION)
                                .then(|| e["action"]["ttl_seconds"].as_i64())?
                        })
                        .collect();
                    if &got == want {
                        break;
                    }
                    assert!(
                        got.len() < want.len() && want.starts_with(&got),
                        "round {round}: chat {chat}: Alice has {got:?}, Bob sent {want:?}"
                    );
                    assert!(
                        std::time::Instant::now() < deadline,
                        "round {round}: chat {chat}: Alice has {got:?} of {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            println!(
                "round {round}: killed after {} ms; {} chats, all ready with Bob's keys; \
                 Bob's {} actions in Alice's inboxes",
                kill_after.as_millis(),
                alices.len(),
                bob_sent.values().map(Vec::len).sum::<usize>()
            );
        }
        assert!(
            daemon
                .lock()
                .unwrap()
                .terminate()
                .is_some_and(|s| s.success())
        );
    });
}

fn rounds(n: usize, seed: u64) {
    let rt = runtime();
    rt.block_on(run(n, seed));
}

/// A private bus, tgsim with Alice and Bob (`normal`), tgsecretd for Alice with the accept
/// policy `accept` (shared with the task that kills it), and a client once it answers. Bind
/// them in this order so that they drop in reverse: the client first, the folder last.
async fn killable(name: &str, accept: &str) -> (Temp, Bus, Sim, Arc<Mutex<Daemon>>, Client) {
    let tmp = Temp::new(name);
    let bus = Bus::start();
    let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
    let key = sim.key_file(ALICE, &tmp.0);
    let daemon = Arc::new(Mutex::new(Daemon::start(
        &tmp.0.join("d"),
        &bus.address,
        &sim,
        &key,
        accept,
    )));
    let client = Client::connect(&bus.address).await;
    client.wait_ready(30).await;
    (tmp, bus, sim, daemon, client)
}

async fn run(rounds: usize, seed: u64) {
    let (_tmp, _bus, sim, daemon, client) = killable("kill", "never").await;
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
    // Every handle gets its result. The wait lasts while Responses keep coming: tgsim slows
    // down as its relay log grows (by round 50 of the 100-round test, a round's sends took
    // over a minute), so only 60 s without a new Response counts as stuck.
    let covered = |got: &[Response]| {
        let have: std::collections::HashSet<&str> = got.iter().map(|r| r.0.as_str()).collect();
        handles.iter().all(|h| have.contains(h.as_str()))
    };
    let mut seen = 0;
    let got = loop {
        let got = responses.wait(60, |g| g.len() > seen).await;
        if got.len() == seen || covered(&got) {
            break by_handle(&got);
        }
        seen = got.len();
    };
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
        let mut got: Vec<i64> = Vec::new();
        // As long as the transcript grows; 60 s without growth counts as stuck.
        let mut since = std::time::Instant::now();
        loop {
            let now: Vec<i64> = sim.ttls(BOB, chat);
            if now.len() > got.len() {
                since = std::time::Instant::now();
            }
            got = now;
            if got.len() >= want.len() || since.elapsed() > Duration::from_secs(60) {
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
