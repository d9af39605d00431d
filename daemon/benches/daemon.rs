//! The daemon's benchmarks, with real processes (a private dbus-daemon, tgsim, tgsecretd):
//!
//! 1. End to end: service messages per second from the caller to tgsim, each counted when its
//!    `Response` (code 0: Telegram accepted it) arrives, with 1 and 64 concurrent callers over 8
//!    chats, and the latency from the call to the Response.
//! 2. Acceptance: `SendEncryptedService` calls answered per second (each answer means the message
//!    and its request are stored and durable) on one chat and over 100 chats, with 1, 8 and 64
//!    concurrent callers, and p50 / p99 of the call's latency; beside, measured in the same run,
//!    on the same bus, from the same client connection, a bare zbus echo method (the IPC floor)
//!    at 1, 8 and 64 callers (and the same echo served by a process of its own, this binary
//!    started again, to show that the floor does not depend on where the echo runs), a bare
//!    fdatasync (the baseline) and sled alone (one transaction +
//!    flush + fdatasync per commit: the single-flush rate that group commit is measured
//!    against). Telegram answers every send with a long FLOOD_WAIT (a tgsim fault), so these
//!    figures are the daemon's acceptance alone, not tgsim's. The target: acceptance at 64
//!    callers at least half of the echo floor at 64 callers. Beside them, the **store floor**:
//!    the writes one accepted request makes (three keys, two of them shared by a group) through the daemon's `Store` from 64
//!    tasks in this process, on a store grown first, with its CPU per request; and the
//!    **ceiling** it leaves: two fully busy cores divided by that CPU plus the bus's and the
//!    client's CPU per accepted call, i.e. the acceptance rate of a daemon that did nothing
//!    but its store's writes (no D-Bus, no actor, no encryption), against the echo floor.
//!    And measured, not computed: **bare acceptance**, a zbus service in this process with
//!    `SendEncryptedService`'s signature that exports a request object at the handle path,
//!    commits the same writes through its own `Store` and answers once they are durable — the
//!    required parts (zbus, the Request pattern, sled with durable group commit) and nothing
//!    else, at 64 callers; the daemon's rate is printed as a fraction of it.
//! 3. The start of a daemon whose store holds 100,000 chats: time until it answers on the bus,
//!    and its memory, beside the same for stores of none, 100 and 1,000 chats (the largest
//!    store whose chats all get their objects at start).
//! 4. `Logout` with 1,000 (quick) or 10,000 open chats: the time until it answers, each chat
//!    closed by its actor (tgsim discards Alice's chats with her authorization).
//!
//! Timings are printed, never asserted. `cargo bench -p daemon --bench daemon` (full) or
//! `BENCH_QUICK=1 …`; `BENCH_ONLY=TEXT` runs only the acceptance rows whose name holds TEXT
//! (with the baselines and the echo floor), for profiling. The CPU each process spent per call
//! (daemon, dbus-daemon, this client) is printed beside the rates, with the machine's CPU
//! outside them and the share of both cores busy while the row ran; and, for the acceptance
//! and bare rows, the store's commit latency (until applied, until durable, a round's flush
//! and syncs; the daemon's read through `GetStatus`), so a run shows whether a row was bound
//! by the CPU or by its calls' latency. The daemon runs at the
//! default log level. This process uses the daemon's allocator (mimalloc), so the echo floor,
//! the bare service and the store floor are built like the daemon.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use support::*;
use tgsecretd::records::{self, ChatPart};
use tgsecretd::store::{Batch, Store, StoreOptions, Tree};
use tgsim::faults::Faults;

/// The daemon's allocator, so that the services this process runs (the echo floor, the bare
/// acceptance row, the store floor) are built like the daemon.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALICE: i64 = 8401;
const BOB: i64 = 8402;
const CHATS: usize = 100;
/// Chats of the end-to-end rows.
const E2E_CHATS: usize = 8;
/// Caller counts of the acceptance and echo rows.
const CALLERS: [usize; 3] = [1, 8, 64];

/// Call latencies of one row, in microseconds, over all its rounds.
type Lat = Arc<std::sync::Mutex<Vec<u32>>>;

fn record(lat: &Lat, since: Instant) -> u32 {
    let us = since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    lat.lock().expect("latencies").push(us);
    us
}

/// (p50, p99) in microseconds.
fn percentiles(lat: &Lat) -> (u32, u32) {
    let mut v = lat.lock().expect("latencies").clone();
    if v.is_empty() {
        return (0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

/// Mean in microseconds.
fn mean_us(lat: &Lat) -> f64 {
    let v = lat.lock().expect("latencies");
    v.iter().map(|&u| f64::from(u)).sum::<f64>() / v.len().max(1) as f64
}
const MANY: i32 = 100_000;

fn main() {
    if let Ok(bus) = std::env::var(ECHO_SERVE) {
        serve_echo_alone(&bus);
        return;
    }
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
    // At the default log level, as a user runs it (the tests log at debug).
    let mut daemon = Daemon::start_logging(&state, &bus.address, &sim, &key, "never", "info");
    let only = std::env::var("BENCH_ONLY").ok().filter(|o| !o.is_empty());
    let pids = vec![
        daemon.pid().expect("daemon running"),
        bus.pid as u32,
        std::process::id(),
    ];
    let (client, chats) = rt.block_on(setup(&bus.address));
    let client = Arc::new(client);

    // End to end, before the flood fault: every message goes out and is answered.
    let e2e_chats = &chats[CHATS..];
    println!();
    println!(
        "{:<56} {:>10} {:>10} {:>10}",
        "end to end: call -> Response (Telegram accepted)", "msgs/s", "p50 us", "p99 us"
    );
    println!("{}", "-".repeat(90));
    for callers in [1, 64] {
        if only.is_some() {
            break;
        }
        let total = if s.rounds < 9 { 400 } else { 4000 };
        let lat: Lat = Arc::default();
        let rate = rt.block_on(end_to_end(&client, e2e_chats, callers, total, &lat));
        let (p50, p99) = percentiles(&lat);
        println!(
            "{:<56} {rate:>10.0} {p50:>10} {p99:>10}",
            format!("{total} service messages, {callers} caller(s), {E2E_CHATS} chats")
        );
    }

    // Telegram answers every send with an hour's FLOOD_WAIT: the daemon only accepts.
    sim.admin().set_faults(&flood_everything()).expect("faults");
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
    let mut lats: Vec<Option<Lat>> = vec![None, None];
    let mut meters: Vec<Option<CpuMeter>> = vec![None, None];
    // The store's commit latency of the acceptance rows (the daemon's store, read through
    // `GetStatus`) and of the bare row.
    let mut stores: Vec<(String, StoreMeter)> = Vec::new();
    let echo = rt.block_on(echo_service(&bus.address));
    let echo_alone = EchoProcess::start(&bus.address);
    for callers in CALLERS {
        add_row(
            (&mut contenders, &mut lats, &mut meters),
            format!("bare zbus echo method, same bus (IPC floor), {callers} caller(s)"),
            pids.clone(),
            |lat| echoes(Arc::clone(&rt), Arc::clone(&client), callers, lat),
        );
    }
    for n_chats in [1, CHATS] {
        for callers in CALLERS {
            let name =
                format!("SendEncryptedService accepted: {n_chats} chat(s), {callers} caller(s)");
            if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                continue;
            }
            let lat: Lat = Arc::default();
            let meter = CpuMeter::default();
            let store_meter = StoreMeter::default();
            let run = sends(
                Arc::clone(&rt),
                Arc::clone(&client),
                chats[..n_chats].to_vec(),
                callers,
                Arc::clone(&lat),
            );
            contenders.push(Contender {
                name: name.clone(),
                run: meter.wrap(
                    pids.clone(),
                    store_meter.wrap(daemon_store(&rt, &client), run),
                ),
                store: None,
            });
            lats.push(Some(lat));
            meters.push(Some(meter));
            stores.push((name, store_meter));
        }
    }
    // The least a daemon made of the required parts (zbus, a request object, the store's
    // writes) does per accepted send, at 64 callers.
    let bare_store = Arc::new(
        Store::open(&dir.join("store-bare-accept"), StoreOptions::default()).expect("open store"),
    );
    let bare = rt.block_on(bare_accept_service(&bus.address, Arc::clone(&bare_store)));
    let bare_meter = CpuMeter::default();
    let bare_lat: Lat = Arc::default();
    let bare_store_meter = StoreMeter::default();
    let bare_name = "bare acceptance: zbus + request object + Store, 64 callers";
    let read_bare = {
        let store = Arc::clone(&bare_store);
        move || store.stats()
    };
    contenders.push(Contender {
        name: bare_name.into(),
        run: bare_meter.wrap(
            pids.clone(),
            bare_store_meter.wrap(
                read_bare,
                bare_accepts(
                    Arc::clone(&rt),
                    Arc::clone(&client),
                    64,
                    Arc::clone(&bare_lat),
                ),
            ),
        ),
        store: None,
    });
    stores.push((bare_name.into(), bare_store_meter));
    lats.push(Some(bare_lat));
    meters.push(Some(bare_meter));
    // The store's share alone: one accepted request's writes, through the daemon's store, with
    // 64 concurrent writers, on a store grown first (the acceptance rows grow the daemon's).
    let floor_meter = CpuMeter::default();
    contenders.push(Contender {
        name: "store floor: one request's writes, Store::commit, 64 writers".into(),
        run: floor_meter.wrap(pids.clone(), store_floor(&dir, 64, s.rounds < 9)),
        store: None,
    });
    lats.push(None);
    meters.push(Some(floor_meter.clone()));
    // The same echo served by a process of its own, as the daemon is: the IPC floor of a
    // service (its CPU is in the `daemon` column).
    for callers in CALLERS {
        add_row(
            (&mut contenders, &mut lats, &mut meters),
            format!("echo served by its own process, {callers} caller(s)"),
            vec![echo_alone.pid(), bus.pid as u32, std::process::id()],
            |lat| echoes_alone(Arc::clone(&rt), Arc::clone(&client), callers, lat),
        );
    }
    let rates = measure(&s, &mut contenders);
    print_table(&contenders, &rates);
    println!();
    println!("{:<62} {:>10} {:>10}", "call latency", "p50 us", "p99 us");
    println!("{}", "-".repeat(84));
    for (c, lat) in contenders.iter().zip(&lats) {
        if let Some(lat) = lat {
            let (p50, p99) = percentiles(lat);
            println!("{:<62} {p50:>10} {p99:>10}", c.name);
        }
    }
    println!();
    println!(
        "{:<62} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "CPU per call, us (all cores)", "daemon", "bus", "client", "other", "busy"
    );
    println!("{}", "-".repeat(90));
    for (c, meter) in contenders.iter().zip(&meters) {
        if let Some(m) = meter {
            let us = m.per_op_us();
            let at = |i: usize| us.get(i).copied().unwrap_or(0.0);
            let (busy, other) = m.machine();
            println!(
                "{:<62} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>5.0}%",
                c.name,
                at(0),
                at(1),
                at(2),
                other,
                busy * 100.0
            );
        }
    }
    println!(
        "  (the same-bus echo rows' service and the store floor run in the client process: their share is in `client`;\n   \
         the own-process echo's service is in `daemon`;\n   \
         `other`: the machine's CPU outside these three processes (kernel threads, interrupts, other\n   \
         processes); `busy`: the share of both cores busy while the row ran)"
    );
    println!();
    println!(
        "{:<62} {:>8} {:>8} {:>8} {:>8}",
        "store commit latency, mean us", "applied", "durable", "round", "b/round"
    );
    println!("{}", "-".repeat(98));
    for (name, m) in &stores {
        let t = m.total();
        let (apply, sync, round) = t.latency_since(&Default::default());
        let per_round = t.batches_committed as f64 / t.group_flushes.max(1) as f64;
        println!("{name:<62} {apply:>8.0} {sync:>8.0} {round:>8.0} {per_round:>8.1}");
    }
    println!(
        "  (applied: from the commit until its group was applied (the writer's round in progress,\n   \
         then the group's transaction); durable: from then until the answer (its own round);\n   \
         round: a flush and its syncs; b/round: batches per round; the daemon batches a chat's\n   \
         queued sends, so a batch may hold several)"
    );
    println!();
    let single_flush = rates[1];
    let echo_at = |callers: usize| {
        let i = 2 + CALLERS.iter().position(|&c| c == callers).unwrap_or(0);
        rates[i]
    };
    for (c, r) in contenders
        .iter()
        .zip(&rates)
        .skip(2 + CALLERS.len())
        .filter(|(c, _)| c.name.starts_with("SendEncryptedService"))
    {
        let callers: usize = c
            .name
            .rsplit(", ")
            .next()
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        println!(
            "  {:<62} {:>5.2}x the echo floor at {callers} caller(s), {:>5.1}x the single-flush rate",
            c.name,
            r / echo_at(callers),
            r / single_flush
        );
    }
    let best64 = rates
        .iter()
        .zip(&contenders)
        .filter(|(_, c)| {
            c.name.starts_with("SendEncryptedService") && c.name.ends_with(" 64 caller(s)")
        })
        .map(|(r, _)| *r)
        .fold(0.0, f64::max);
    println!(
        "  target: acceptance at 64 callers >= 0.5x the echo floor at 64 callers: {:.2}x ({})",
        best64 / echo_at(64),
        if best64 >= 0.5 * echo_at(64) {
            "met"
        } else {
            "NOT met"
        }
    );
    if let Some(alone) = contenders
        .iter()
        .zip(&rates)
        .find(|(c, _)| c.name == "echo served by its own process, 64 caller(s)")
        .map(|(_, r)| *r)
    {
        println!(
            "  beside: the echo served by its own process (as the daemon is) at 64 callers: {alone:.0}/s = {:.2}x the echo floor; acceptance at 64 callers is {:.2}x of it",
            alone / echo_at(64),
            best64 / alone
        );
    }

    if let Some(r) = contenders
        .iter()
        .zip(&rates)
        .find(|(c, _)| c.name.starts_with("bare acceptance"))
        .map(|(_, r)| *r)
    {
        println!(
            "  bare acceptance (zbus + request object + Store, nothing else) at 64 callers: {:.2}x the echo floor; the daemon reaches {:.2}x of it",
            r / echo_at(64),
            best64 / r
        );
    }

    // The ceiling the store alone leaves: the bus and the client as measured on the 64-caller
    // acceptance rows, the daemon cut down to its store's writes, both cores fully busy.
    let store_us = floor_meter.per_op_us().get(2).copied().unwrap_or(0.0);
    let (bus_us, client_us) = meters
        .iter()
        .zip(&contenders)
        .filter(|(_, c)| {
            c.name.starts_with("SendEncryptedService") && c.name.ends_with(" 64 caller(s)")
        })
        .filter_map(|(m, _)| m.as_ref().map(CpuMeter::per_op_us))
        .map(|us| {
            (
                us.get(1).copied().unwrap_or(0.0),
                us.get(2).copied().unwrap_or(0.0),
            )
        })
        .fold((f64::MAX, f64::MAX), |(b, c), (b2, c2)| {
            (b.min(b2), c.min(c2))
        });
    if store_us > 0.0 && bus_us < f64::MAX {
        let ceiling = 2e6 / (store_us + bus_us + client_us);
        println!(
            "  ceiling with the daemon cut to its store's writes ({store_us:.1} us) + bus ({bus_us:.1} us) + client ({client_us:.1} us) on 2 busy cores: {ceiling:.0}/s = {:.2}x the echo floor",
            ceiling / echo_at(64)
        );
    }
    // What bounds the 64-caller rows instead: each caller waits for its answer, so the rate is
    // 64 over a call's latency, and the store's durable commit is a large part of it.
    let row = "SendEncryptedService accepted: 1 chat(s), 64 caller(s)";
    let at_row = contenders.iter().position(|c| c.name == row);
    let row_store = stores
        .iter()
        .find(|(n, _)| n == row)
        .map(|(_, m)| m.total());
    if let (Some(i), Some(st)) = (at_row, row_store) {
        let busy = meters[i].as_ref().map_or(0.0, |m| m.machine().0);
        let mean = lats[i].as_ref().map_or(0.0, mean_us);
        let (apply, sync, _) = st.latency_since(&Default::default());
        println!(
            "  {row}: both cores {:.0}% busy; a call took {mean:.0} us on average, {:.0} us of it in the store's durable commit: 64 callers / {mean:.0} us = {:.0}/s",
            busy * 100.0,
            apply + sync,
            64e6 / mean.max(1.0)
        );
    }

    if only.is_some() {
        return;
    }
    // Start time and memory, on fresh stores of idle chats (copies of one ready chat, no
    // pending work): none, 100, 1,000 (EXPORT_AT_START: the largest store whose chats all get
    // their objects at start), 100,000.
    println!();
    assert!(
        daemon.terminate().is_some_and(|st| st.success()),
        "daemon stopped"
    );
    let template = copy_chat(&state.join("store"), chats[0]);
    let mut figures = Vec::new();
    for n in [0, CHATS as i32, 1_000, MANY] {
        let fresh = dir.join(format!("start-{n}"));
        let t = Instant::now();
        grow(&fresh.join("store"), &template, n);
        println!(
            "(wrote {n} chats into a fresh store in {} ms)",
            t.elapsed().as_millis()
        );
        let mut d = Daemon::start_logging(&fresh, &bus.address, &sim, &key, "never", "info");
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

    // Logout with many open chats: the time until `Logout` answers, every chat closed by its
    // actor (last: it signs Alice out of tgsim).
    let n = if s.rounds < 9 { 1_000 } else { 10_000 };
    let fresh = dir.join("logout");
    grow(&fresh.join("store"), &template, n);
    let mut d = Daemon::start_logging(&fresh, &bus.address, &sim, &key, "never", "info");
    let (ms, closed) = rt.block_on(async {
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let m = client.manager().await;
        let t = Instant::now();
        m.logout().await.expect("logout");
        let ms = t.elapsed().as_millis();
        let closed = m
            .list_chats()
            .await
            .expect("chats")
            .iter()
            .filter(|c| {
                c.get(ipc_proto::chat_keys::STATE)
                    .and_then(|v| <&str>::try_from(&**v).ok())
                    .is_some_and(|st| st == "discarded")
            })
            .count();
        (ms, closed)
    });
    println!();
    println!(
        "logout with {n} open chats: answered after {ms} ms ({:.2} ms per chat), {closed} discarded",
        ms as f64 / f64::from(n)
    );
    let _ = d.terminate();
    drop(echo);
    drop(echo_alone);
    drop(bare);
}

/// Adds a row (to the contenders, latencies and CPU meters, which go together by index) whose
/// calls' latencies are recorded and whose CPU is that of `pids`.
fn add_row(
    rows: (
        &mut Vec<Contender>,
        &mut Vec<Option<Lat>>,
        &mut Vec<Option<CpuMeter>>,
    ),
    name: String,
    pids: Vec<u32>,
    run: impl FnOnce(Lat) -> Run,
) {
    let (contenders, lats, meters) = rows;
    let lat: Lat = Arc::default();
    let meter = CpuMeter::default();
    contenders.push(Contender {
        name,
        run: meter.wrap(pids, run(Arc::clone(&lat))),
        store: None,
    });
    lats.push(Some(lat));
    meters.push(Some(meter));
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
    echo_named(bus, "io.github.tgsecretd.BenchEcho").await
}

async fn echo_named(bus: &str, name: &'static str) -> zbus::Connection {
    zbus::connection::Builder::address(bus)
        .name(name)
        .serve_at("/echo", Echo)
        .build()
        .await
        .expect("echo service")
}

/// Set to a bus address, this binary serves [`Echo`] there as [`ECHO_ALONE`] (in a process of
/// its own) until its stdin closes.
const ECHO_SERVE: &str = "TGSECRETD_BENCH_ECHO_SERVE";

/// The bus name of the echo served by a process of its own.
const ECHO_ALONE: &str = "io.github.tgsecretd.BenchEchoAlone";

/// The echo process's side: a runtime built as the daemon builds its own (one worker fewer
/// than the cores, at least one), the echo on the bus, "ready" on stdout, then wait for EOF.
fn serve_echo_alone(bus: &str) {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let conn = echo_named(bus, ECHO_ALONE).await;
        println!("ready");
        tokio::task::spawn_blocking(|| {
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
        })
        .await
        .expect("stdin");
        drop(conn);
    });
}

/// This binary, started again as the echo's own process ([`serve_echo_alone`]); stopped when
/// dropped (its stdin closes).
struct EchoProcess(std::process::Child);

impl EchoProcess {
    fn start(bus: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().expect("this binary"))
            .env(ECHO_SERVE, bus)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("echo process");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("echo process ready");
        assert_eq!(line.trim(), "ready", "echo process");
        EchoProcess(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        if !matches!(self.0.wait(), Ok(st) if st.success()) {
            let _ = self.0.kill();
        }
    }
}

/// The least a daemon built from the project's required parts does per accepted send: zbus
/// serves a method with `SendEncryptedService`'s signature, exports a request object at the
/// handle path, commits the request's writes ([`request`]) through the daemon's `Store` and
/// answers with the path once they are durable. No validation, no chat actor, no encryption,
/// no request bookkeeping. Served by this process on its own connection and store (grown only
/// by its own rows, as the daemon's is), so its CPU is in the `client` column.
struct BareAccept {
    store: Arc<Store>,
    next: AtomicU64,
}

#[zbus::interface(name = "io.github.tgsecretd.BenchAccept")]
impl BareAccept {
    async fn send_encrypted_service(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(object_server)] server: &zbus::ObjectServer,
        _chat_id: i32,
        _message: Vec<u8>,
        _options: HashMap<String, zbus::OwnedVariant>,
    ) -> zbus::fdo::Result<zbus::OwnedObjectPath> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let path = ipc_proto::request_path(&sender, &format!("b{seq}"));
        let path = zbus::OwnedObjectPath::try_from(path)
            .map_err(|e| zbus::fdo::Error::InvalidArgs(e.to_string()))?;
        server.at(&path, BareRequest).await?;
        self.store
            .commit(request(seq))
            .await
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        Ok(path)
    }
}

/// The request object of [`BareAccept`].
struct BareRequest;

#[zbus::interface(name = "io.github.tgsecretd.BenchRequest")]
impl BareRequest {
    async fn close(&self) {}
}

async fn bare_accept_service(bus: &str, store: Arc<Store>) -> zbus::Connection {
    let service = BareAccept {
        store,
        next: AtomicU64::new(0),
    };
    zbus::connection::Builder::address(bus)
        .name("io.github.tgsecretd.BenchAccept")
        .serve_at("/accept", service)
        .build()
        .await
        .expect("bare accept service")
}

/// `callers` tasks calling [`BareAccept`] with a service message and no options, as the
/// acceptance rows call the daemon.
fn bare_accepts(
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    callers: usize,
    lat: Lat,
) -> Run {
    let options: HashMap<String, zbus::OwnedVariant> = HashMap::new();
    let target = (
        "io.github.tgsecretd.BenchAccept",
        "/accept",
        "io.github.tgsecretd.BenchAccept",
        "SendEncryptedService",
    );
    bench_calls(
        rt,
        client,
        callers,
        lat,
        target,
        (1i32, ttl_message(0, 5), options),
    )
}

fn echoes(rt: Arc<tokio::runtime::Runtime>, client: Arc<Client>, callers: usize, lat: Lat) -> Run {
    let target = (
        "io.github.tgsecretd.BenchEcho",
        "/echo",
        "io.github.tgsecretd.BenchEcho",
        "Echo",
    );
    bench_calls(rt, client, callers, lat, target, (1i32, ttl_message(0, 5)))
}

/// [`echoes`] to the echo served by its own process.
fn echoes_alone(
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    callers: usize,
    lat: Lat,
) -> Run {
    let target = (ECHO_ALONE, "/echo", "io.github.tgsecretd.BenchEcho", "Echo");
    bench_calls(rt, client, callers, lat, target, (1i32, ttl_message(0, 5)))
}

/// `callers` tasks on the client's connection, each calling `target` (a bus name, a path, an
/// interface, a method) with `body`, one call after the other, for the slice.
fn bench_calls<B>(
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    callers: usize,
    lat: Lat,
    target: (&'static str, &'static str, &'static str, &'static str),
    body: B,
) -> Run
where
    B: serde::Serialize + zbus::zvariant::DynamicType + Send + Sync + 'static,
{
    let body = Arc::new(body);
    let (name, path, iface, member) = target;
    Box::new(move |slice: Duration| {
        let end = Instant::now() + slice;
        rt.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let (conn, body, lat) =
                        (client.conn.clone(), Arc::clone(&body), Arc::clone(&lat));
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            let t = Instant::now();
                            conn.call_method(Some(name), path, Some(iface), member, &*body)
                                .await
                                .expect(member);
                            record(&lat, t);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            total(tasks).await
        })
    })
}

async fn setup(bus: &str) -> (Client, Vec<i32>) {
    let client = Client::connect(bus).await;
    client.wait_ready(30).await;
    let m = client.manager().await;
    let mut chats = Vec::new();
    for _ in 0..CHATS + E2E_CHATS {
        chats.push(m.request_chat(BOB, HashMap::new()).await.expect("chat"));
    }
    for &c in &chats {
        client.wait_state(c, "ready", 120).await;
    }
    (client, chats)
}

fn flood_everything() -> Faults {
    faults_on_sends(ALICE, 1000, 420, "FLOOD_WAIT_3600")
}

/// The writes of one accepted request (see [`store_floor`]), its first message at slot `seq`.
fn request(seq: u64) -> Batch {
    use tgsecretd::store::keys::key_i32_u32;
    let mut b = Batch::new();
    b.put(Tree::Outbox, key_i32_u32(1, seq as u32), vec![7u8; 266]);
    b.put(
        Tree::Chats,
        records::chat_key(1, ChatPart::Seq),
        vec![7u8; 8],
    );
    b.put(
        Tree::Chats,
        records::chat_key(1, ChatPart::Pfs),
        vec![7u8; 5],
    );
    b
}

/// One accepted request's writes as the daemon makes them (keys and value sizes as a dump of
/// the daemon's batches showed for a one-part service message): the message's outbox entry
/// with the request record inside it (its handle and random_id indexes come with its final
/// result) and two of the chat's records (shared by the batches of a group), one batch per
/// request, from `writers` concurrent tasks, on a store first grown by 50,000
/// requests (quick) or 200,000.
fn store_floor(dir: &std::path::Path, writers: usize, quick: bool) -> Run {
    let store = Arc::new(
        Store::open(&dir.join("store-floor"), StoreOptions::default()).expect("open store"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let grown: u64 = if quick { 50_000 } else { 200_000 };
    rt.block_on(async {
        for start in (0..grown).step_by(1000) {
            let mut waits = Vec::new();
            for seq in start..start + 1000 {
                waits.push(store.commit(request(seq)));
            }
            for w in waits {
                w.await.expect("grow");
            }
        }
    });
    concurrent_commits(rt, store, writers, request, grown)
}

/// Reads the daemon's store counters through `GetStatus`.
fn daemon_store(
    rt: &Arc<tokio::runtime::Runtime>,
    client: &Arc<Client>,
) -> impl Fn() -> tgsecretd::store::CommitStats + 'static {
    let (rt, client) = (Arc::clone(rt), Arc::clone(client));
    move || {
        let status = rt.block_on(async { client.manager().await.get_status().await });
        let status = status.expect("GetStatus");
        let n = |k: &str| {
            status
                .get(k)
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or_else(|| panic!("GetStatus has no {k}"))
        };
        tgsecretd::store::CommitStats {
            batches_committed: n("store_batches"),
            group_flushes: n("store_rounds"),
            apply_wait_us: n("store_apply_wait_us"),
            sync_wait_us: n("store_sync_wait_us"),
            flush_us: n("store_flush_us"),
            ..Default::default()
        }
    }
}

/// `callers` tasks sending service messages round-robin over `chats` for the slice.
fn sends(
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    chats: Vec<i32>,
    callers: usize,
    lat: Lat,
) -> Run {
    let next = Arc::new(AtomicU64::new(0));
    let msg = Arc::new(ttl_message(0, 5));
    Box::new(move |slice: Duration| {
        let end = Instant::now() + slice;
        rt.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|i| {
                    let (client, chats, next, msg, lat) = (
                        Arc::clone(&client),
                        chats.clone(),
                        Arc::clone(&next),
                        Arc::clone(&msg),
                        Arc::clone(&lat),
                    );
                    tokio::spawn(async move {
                        let m = client.manager().await;
                        let mut n = 0u64;
                        let mut k = i;
                        while Instant::now() < end {
                            let chat = chats[k % chats.len()];
                            k += 1;
                            let _ = next.fetch_add(1, Ordering::Relaxed);
                            let t = Instant::now();
                            m.send_encrypted_service(chat, &msg, HashMap::new())
                                .await
                                .expect("accepted");
                            record(&lat, t);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            total(tasks).await
        })
    })
}

/// `total` service messages from `callers` tasks over `chats`, each waited for until its
/// Response; messages per second (from the first call to the last Response).
async fn end_to_end(
    client: &Client,
    chats: &[i32],
    callers: usize,
    total: usize,
    lat: &Lat,
) -> f64 {
    use futures_util::StreamExt;
    type Waiters = Arc<std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<u32>>>>;
    let waiters: Waiters = Arc::default();
    let mut stream = zbus::MessageStream::for_match_rule(
        "type='signal',interface='io.github.tgsecretd.Request1',member='Response'",
        &client.conn,
        None,
    )
    .await
    .expect("match");
    let w = Arc::clone(&waiters);
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if let Some((path, code, _)) = parse_response(&m)
                && let Some(tx) = w.lock().expect("waiters").remove(&path)
            {
                let _ = tx.send(code);
            }
        }
    });
    let unique = client
        .conn
        .unique_name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (conn, chats, next, waiters, lat, unique) = (
                client.conn.clone(),
                chats.to_vec(),
                Arc::clone(&next),
                Arc::clone(&waiters),
                Arc::clone(lat),
                unique.clone(),
            );
            tokio::spawn(async move {
                let m = ipc_proto::ManagerProxy::new(&conn).await.expect("proxy");
                let msg = ttl_message(0, 5);
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if k >= total {
                        break;
                    }
                    let token = format!("e{callers}_{k}");
                    let path = ipc_proto::request_path(&unique, &token);
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    waiters.lock().expect("waiters").insert(path, tx);
                    let mut o: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
                    o.insert("handle_token", zbus::Variant::from(token.as_str()));
                    let t = Instant::now();
                    m.send_encrypted_service(chats[k % chats.len()], &msg, o)
                        .await
                        .expect("accepted");
                    let code = tokio::time::timeout(Duration::from_secs(120), rx)
                        .await
                        .expect("a Response within 2 minutes")
                        .expect("reader alive");
                    assert_eq!(code, 0, "sent");
                    record(&lat, t);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    reader.abort();
    rate
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
