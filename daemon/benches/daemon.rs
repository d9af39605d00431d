//! The daemon's benchmarks, with real processes (a private dbus-daemon, tgsim, tgsecretd):
//!
//! 1. Durable sends per second over D-Bus: `SendEncryptedService` calls answered (each answer
//!    means the message and its request are stored and durable) on one chat and over 100 chats,
//!    with 1 and 64 concurrent callers; beside, measured in the same run and directory, a bare
//!    fdatasync (the baseline) and sled alone (one transaction + flush + fdatasync per commit:
//!    the single-flush rate that group commit is measured against). Telegram answers every send
//!    with a long FLOOD_WAIT (a tgsim fault), so the figures are the daemon's acceptance alone,
//!    not tgsim's.
//! 2. The start of a daemon whose store holds 100,000 chats: time until it answers on the bus,
//!    and its memory, beside the same for a store of 100 chats.
//!
//! Timings are printed, never asserted. `cargo bench -p daemon --bench daemon` (full) or
//! `BENCH_QUICK=1 …`.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use grammers_tl_types::Identifiable;
use support::*;
use tgsecretd::records::{self, ChatPart};
use tgsecretd::store::{Batch, Store, StoreOptions, Tree};
use tgsim::faults::{CallFaults, Faults, InjectedError};

const ALICE: i64 = 8401;
const BOB: i64 = 8402;
const CHATS: usize = 100;
const MANY: i32 = 100_000;

fn main() {
    let s = settings();
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime"),
    );
    println!(
        "daemon benchmarks: median of {} interleaved rounds of {} ms{}, in {}",
        s.rounds,
        s.slice.as_millis(),
        if s.rounds < 9 { " [BENCH_QUICK]" } else { "" },
        dir.display()
    );
    let bus = Bus::start();
    let sim = Sim::start(&dir.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
    let key = sim.key_file(ALICE, &dir);
    let state = dir.join("d");
    let mut daemon = Daemon::start(&state, &bus.address, &sim, &key, "never");
    let (client, chats) = rt.block_on(setup(&bus.address));
    // Telegram answers every send with an hour's FLOOD_WAIT: the daemon only accepts.
    sim.admin().set_faults(&flood_everything()).expect("faults");

    let client = Arc::new(client);
    let mut contenders = vec![
        Contender {
            name: "bare: 200 B in place + fdatasync, 1 thread (baseline)".into(),
            run: bare_in_place(&dir),
            store: None,
        },
        Contender {
            name: "sled raw: 3-tree tx + flush + fdatasync db (single flush)".into(),
            run: sled_raw(&dir),
            store: None,
        },
    ];
    let echo = rt.block_on(echo_service(&bus.address));
    for callers in [1, 64] {
        contenders.push(Contender {
            name: format!("bare zbus echo method, same bus (IPC floor), {callers} caller(s)"),
            run: echoes(Arc::clone(&rt), Arc::clone(&client), callers),
            store: None,
        });
    }
    for (n_chats, callers) in [(1, 1), (1, 64), (CHATS, 1), (CHATS, 64)] {
        contenders.push(Contender {
            name: format!(
                "SendEncryptedService over D-Bus: {n_chats} chat(s), {callers} caller(s)"
            ),
            run: sends(
                Arc::clone(&rt),
                Arc::clone(&client),
                chats[..n_chats].to_vec(),
                callers,
            ),
            store: None,
        });
    }
    let rates = measure(&s, &mut contenders);
    print_table(&contenders, &rates);
    let single_flush = rates[1];
    for (c, r) in contenders.iter().zip(&rates).skip(2) {
        println!(
            "  {:<62} {:>6.1}x the single-flush rate",
            c.name,
            r / single_flush
        );
    }

    // Start time and memory, on fresh stores of idle chats (copies of one ready chat, no
    // pending work): none, 100, 100,000.
    println!();
    assert!(
        daemon.terminate().is_some_and(|st| st.success()),
        "daemon stopped"
    );
    let template = copy_chat(&state.join("store"), chats[0]);
    let mut figures = Vec::new();
    for n in [0, CHATS as i32, MANY] {
        let fresh = dir.join(format!("start-{n}"));
        let t = Instant::now();
        grow(&fresh.join("store"), &template, n);
        println!(
            "(wrote {n} chats into a fresh store in {} ms)",
            t.elapsed().as_millis()
        );
        let mut d = Daemon::start(&fresh, &bus.address, &sim, &key, "never");
        figures.push((n, start_figures(&mut d, &rt, &bus.address)));
        let _ = d.terminate();
    }
    println!(
        "{:<56} {:>12} {:>12}",
        "daemon start (restart on the store)", "until served", "RSS"
    );
    println!("{}", "-".repeat(82));
    for (n, (ms, rss)) in figures {
        println!(
            "{:<56} {ms:>9} ms {rss:>9} KiB",
            format!("{n} stored chats")
        );
    }
    drop(echo);
}

/// A bare method on the same bus, served by this process: the cost of a D-Bus call alone.
struct Echo;

#[zbus::interface(name = "io.github.tgsecretd.BenchEcho")]
impl Echo {
    async fn echo(&self, chat_id: i32, message: Vec<u8>) -> (i32, Vec<u8>) {
        (chat_id, message)
    }
}

async fn echo_service(bus: &str) -> zbus::Connection {
    zbus::connection::Builder::address(bus)
        .name("io.github.tgsecretd.BenchEcho")
        .serve_at("/echo", Echo)
        .build()
        .await
        .expect("echo service")
}

fn echoes(rt: Arc<tokio::runtime::Runtime>, client: Arc<Client>, callers: usize) -> Run {
    let msg = ttl_message(0, 5);
    Box::new(move |slice: Duration| {
        let end = Instant::now() + slice;
        rt.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let (conn, msg) = (client.conn.clone(), msg.clone());
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            conn.call_method(
                                Some("io.github.tgsecretd.BenchEcho"),
                                "/echo",
                                Some("io.github.tgsecretd.BenchEcho"),
                                "Echo",
                                &(1i32, &msg),
                            )
                            .await
                            .expect("echo");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await.expect("task");
            }
            total
        })
    })
}

async fn setup(bus: &str) -> (Client, Vec<i32>) {
    let client = Client::connect(bus).await;
    client.wait_ready(30).await;
    let m = client.manager().await;
    let mut chats = Vec::new();
    for _ in 0..CHATS {
        chats.push(m.request_chat(BOB, HashMap::new()).await.expect("chat"));
    }
    for &c in &chats {
        client.wait_state(c, "ready", 120).await;
    }
    (client, chats)
}

fn flood_everything() -> Faults {
    let mut f = Faults::none();
    f.account_calls.insert(
        ALICE,
        CallFaults {
            fail: 1000,
            methods: vec![
                grammers_tl_types::functions::messages::SendEncryptedService::CONSTRUCTOR_ID,
                grammers_tl_types::functions::messages::SendEncrypted::CONSTRUCTOR_ID,
            ],
            errors: vec![InjectedError::new(420, "FLOOD_WAIT_3600")],
            ..CallFaults::default()
        },
    );
    f
}

/// `callers` tasks sending service messages round-robin over `chats` for the slice.
fn sends(
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    chats: Vec<i32>,
    callers: usize,
) -> Run {
    let next = Arc::new(AtomicU64::new(0));
    let msg = Arc::new(ttl_message(0, 5));
    Box::new(move |slice: Duration| {
        let end = Instant::now() + slice;
        rt.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|i| {
                    let (client, chats, next, msg) = (
                        Arc::clone(&client),
                        chats.clone(),
                        Arc::clone(&next),
                        Arc::clone(&msg),
                    );
                    tokio::spawn(async move {
                        let m = client.manager().await;
                        let mut n = 0u64;
                        let mut k = i;
                        while Instant::now() < end {
                            let chat = chats[k % chats.len()];
                            k += 1;
                            let _ = next.fetch_add(1, Ordering::Relaxed);
                            m.send_encrypted_service(chat, &msg, HashMap::new())
                                .await
                                .expect("accepted");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await.expect("task");
            }
            total
        })
    })
}

/// (milliseconds until the daemon answers on the bus after a restart, its RSS in KiB).
fn start_figures(d: &mut Daemon, rt: &tokio::runtime::Runtime, bus: &str) -> (u128, u64) {
    // The first start creates the session; the second is the one measured.
    rt.block_on(async { Client::connect(bus).await.wait_ready(30).await });
    let _ = d.terminate();
    let t = Instant::now();
    d.restart();
    rt.block_on(async {
        let client = Client::connect(bus).await;
        loop {
            let m = client.manager().await;
            if m.get_status().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let ms = t.elapsed().as_millis();
    std::thread::sleep(Duration::from_secs(1));
    (ms, d.rss_kib())
}

/// One chat's four records (auth as a JSON value, the others as stored bytes).
struct Template {
    auth: serde_json::Value,
    config: Vec<u8>,
    pfs: Vec<u8>,
    seq: Vec<u8>,
}

fn copy_chat(store_dir: &std::path::Path, chat: i32) -> Template {
    let store = Store::open(store_dir, StoreOptions::default()).expect("store");
    let part = |p| {
        store
            .get(Tree::Chats, &records::chat_key(chat, p))
            .expect("read")
            .expect("record")
    };
    let auth: secret_core::chat::AuthState = records::decode(&part(ChatPart::Auth)).expect("auth");
    let t = Template {
        auth: serde_json::to_value(&auth).expect("json"),
        config: part(ChatPart::Config),
        pfs: part(ChatPart::Pfs),
        seq: part(ChatPart::Seq),
    };
    store.close().expect("close");
    t
}

/// A fresh store with `n` copies of the template chat under new ids: a user with many idle
/// chats.
fn grow(store_dir: &std::path::Path, t: &Template, n: i32) {
    let store = Store::open(store_dir, StoreOptions::default()).expect("store");
    let mut auth_json = t.auth.clone();
    let mut batch = Batch::new();
    for i in 0..n {
        let id = 1_000_000 + i;
        auth_json["chat_id"] = id.into();
        let a: secret_core::chat::AuthState =
            serde_json::from_value(auth_json.clone()).expect("auth");
        batch.put(
            Tree::Chats,
            records::chat_key(id, ChatPart::Auth),
            records::encode(&a).expect("encode"),
        );
        batch.put(
            Tree::Chats,
            records::chat_key(id, ChatPart::Config),
            &t.config,
        );
        batch.put(Tree::Chats, records::chat_key(id, ChatPart::Pfs), &t.pfs);
        batch.put(Tree::Chats, records::chat_key(id, ChatPart::Seq), &t.seq);
        if batch.len() >= 4000 {
            store
                .commit_blocking(std::mem::take(&mut batch))
                .expect("commit");
        }
    }
    store.commit_blocking(batch).expect("commit");
    store.close().expect("close");
}
