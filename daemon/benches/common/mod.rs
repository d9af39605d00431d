//! What the benchmarks share: settings, the durability baselines (a bare fdatasync, sled
//! alone), interleaved measurement and the table.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tgsecretd::store::keys::key_i32_u64;
use tgsecretd::store::{Batch, CommitStats, Store, Tree};

pub struct Settings {
    pub rounds: usize,
    pub slice: Duration,
}

pub fn settings() -> Settings {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if quick {
        Settings {
            rounds: 3,
            slice: Duration::from_millis(250),
        }
    } else {
        Settings {
            rounds: 9,
            slice: Duration::from_secs(2),
        }
    }
}

/// Runs for about the given time; returns the number of durable commits done.
pub type Run = Box<dyn FnMut(Duration) -> u64>;

pub struct Contender {
    pub name: String,
    pub run: Run,
    /// For store rows: the store, to read its stats afterwards.
    pub store: Option<Arc<Store>>,
}

/// The ~200 bytes one commit writes: three entries of one chat.
pub const VALUES: [(Tree, usize); 3] = [(Tree::Chats, 60), (Tree::Outbox, 100), (Tree::Meta, 40)];

/// Size of the preallocated file of the in-place baseline.
const BARE_LEN: u64 = 1 << 20;

/// 200 bytes written in place into a preallocated, synced file, then fdatasync: a pure data
/// sync (the file's size never changes, so no metadata has to be committed).
pub fn bare_in_place(dir: &Path) -> Run {
    let path = dir.join("bare-in-place");
    std::fs::write(&path, vec![0u8; BARE_LEN as usize]).expect("preallocate");
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.sync_all().expect("fsync");
    let record = [0x5au8; 200];
    let mut offset = 0u64;
    Box::new(move |slice| {
        let end = Instant::now() + slice;
        let mut n = 0;
        while Instant::now() < end {
            file.write_all_at(&record, offset).expect("write");
            file.sync_data().expect("fdatasync");
            offset = (offset + 4096) % BARE_LEN;
            n += 1;
        }
        n
    })
}

/// 200 bytes appended, then fdatasync: each sync also commits the new file size (a journal
/// commit on ext4), so it is slower than the in-place baseline on most file systems.
pub fn bare_append(dir: &Path) -> Run {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bare-append"))
        .expect("open bare file");
    let record = [0x5au8; 200];
    Box::new(move |slice| {
        let end = Instant::now() + slice;
        let mut n = 0;
        while Instant::now() < end {
            file.write_all(&record).expect("write");
            file.sync_data().expect("fdatasync");
            n += 1;
        }
        n
    })
}

pub fn sled_raw(dir: &Path) -> Run {
    let path = dir.join("sled-raw");
    let db = sled::Config::new()
        .path(&path)
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let trees: Vec<sled::Tree> = VALUES
        .iter()
        .map(|(t, _)| db.open_tree(t.name()).expect("tree"))
        .collect();
    let db_file = std::fs::File::open(path.join("db")).expect("open db");
    let mut seq = 0u64;
    Box::new(move |slice| {
        let end = Instant::now() + slice;
        let mut n = 0;
        while Instant::now() < end {
            seq += 1;
            let key = key_i32_u64(-1, seq);
            let refs: Vec<&sled::Tree> = trees.iter().collect();
            refs.as_slice()
                .transaction(|views| {
                    for (view, (_, len)) in views.iter().zip(VALUES) {
                        view.insert(&key, vec![7u8; len])?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .expect("transaction");
            db.flush().expect("flush");
            db_file.sync_data().expect("fdatasync");
            n += 1;
        }
        n
    })
}

/// The sum of what the tasks counted.
pub async fn total(tasks: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total
}

/// `writers` tokio tasks committing `batch(seq)` one after the other for the slice, `seq`
/// counting up from `first` across all of them; commits done.
pub fn concurrent_commits(
    rt: tokio::runtime::Runtime,
    store: Arc<Store>,
    writers: usize,
    batch: fn(u64) -> Batch,
    first: u64,
) -> Run {
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(first));
    Box::new(move |slice: Duration| {
        let end = Instant::now() + slice;
        rt.block_on(async {
            let tasks: Vec<_> = (0..writers)
                .map(|_| {
                    let (store, seq) = (Arc::clone(&store), Arc::clone(&seq));
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            let b = batch(seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                            store.commit(b).await.expect("commit");
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

/// CPU time (user + system) a process has used so far, in clock ticks (1/100 s); 0 when it
/// cannot be read.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields 14 (utime) and 15 (stime), counted after the command name's closing parenthesis
    // (field 2, which may itself hold spaces).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(11) + at(12)
}

/// Busy and idle clock ticks of the whole machine so far (all CPUs, from `/proc/stat`): busy is
/// user + nice + system + irq + softirq + steal, idle is idle + iowait; (0, 0) when unreadable.
pub fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7), at(3) + at(4))
}

/// What a [`CpuMeter`] has summed: per-process ticks, operations, the machine's busy and idle
/// ticks.
#[derive(Default)]
struct CpuAcc {
    ticks: Vec<u64>,
    ops: u64,
    busy: u64,
    idle: u64,
}

/// The CPU the processes named by `pids` spend while a contender runs, summed over its rounds,
/// with the number of operations: CPU per operation, each process apart; and the whole
/// machine's busy share over the same time (how close to saturating both cores the row ran).
#[derive(Clone, Default)]
pub struct CpuMeter(Arc<std::sync::Mutex<CpuAcc>>);

impl CpuMeter {
    /// `run`, with the CPU of `pids` around each call added to this meter.
    pub fn wrap(&self, pids: Vec<u32>, mut run: Run) -> Run {
        let meter = self.clone();
        Box::new(move |slice| {
            let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
            let (busy, idle) = machine_ticks();
            let n = run(slice);
            let (busy_after, idle_after) = machine_ticks();
            let mut acc = meter.0.lock().expect("cpu meter");
            acc.ticks.resize(pids.len(), 0);
            for (i, &p) in pids.iter().enumerate() {
                acc.ticks[i] += cpu_ticks(p).saturating_sub(before[i]);
            }
            acc.ops += n;
            acc.busy += busy_after.saturating_sub(busy);
            acc.idle += idle_after.saturating_sub(idle);
            n
        })
    }

    /// Microseconds of CPU per operation, one figure per process.
    pub fn per_op_us(&self) -> Vec<f64> {
        let acc = self.0.lock().expect("cpu meter");
        let ops = acc.ops.max(1) as f64;
        acc.ticks
            .iter()
            .map(|&t| t as f64 * 10_000.0 / ops)
            .collect()
    }

    /// The whole machine's busy share while the contender ran (0.0 to 1.0), and the
    /// microseconds per operation the machine was busy outside the metered processes (the
    /// kernel's threads, interrupts, other processes).
    pub fn machine(&self) -> (f64, f64) {
        let acc = self.0.lock().expect("cpu meter");
        let ops = acc.ops.max(1) as f64;
        let total = (acc.busy + acc.idle).max(1) as f64;
        let metered: u64 = acc.ticks.iter().sum();
        let other = acc.busy.saturating_sub(metered) as f64 * 10_000.0 / ops;
        (acc.busy as f64 / total, other)
    }
}

/// What a store did while a contender ran, summed over its rounds: the batches answered, the
/// rounds, and the waits of [`CommitStats`]; read from the store before and after each round.
#[derive(Clone, Default)]
pub struct StoreMeter(Arc<std::sync::Mutex<CommitStats>>);

impl StoreMeter {
    /// `run`, with what the store `read` describes done around each call added to this meter.
    pub fn wrap(&self, read: impl Fn() -> CommitStats + 'static, mut run: Run) -> Run {
        let meter = self.clone();
        Box::new(move |slice| {
            let before = read();
            let n = run(slice);
            let after = read();
            let mut acc = meter.0.lock().expect("store meter");
            let d = |a: u64, b: u64| a.saturating_sub(b);
            acc.batches_committed += d(after.batches_committed, before.batches_committed);
            acc.batches_failed += d(after.batches_failed, before.batches_failed);
            acc.group_flushes += d(after.group_flushes, before.group_flushes);
            acc.apply_wait_us += d(after.apply_wait_us, before.apply_wait_us);
            acc.sync_wait_us += d(after.sync_wait_us, before.sync_wait_us);
            acc.flush_us += d(after.flush_us, before.flush_us);
            n
        })
    }

    /// The sums so far.
    pub fn total(&self) -> CommitStats {
        *self.0.lock().expect("store meter")
    }
}

/// Median commits/s of each contender over interleaved rounds.
pub fn measure(s: &Settings, contenders: &mut [Contender]) -> Vec<f64> {
    let mut rates = vec![Vec::with_capacity(s.rounds); contenders.len()];
    for _ in 0..s.rounds {
        for (c, out) in contenders.iter_mut().zip(rates.iter_mut()) {
            let t = Instant::now();
            let n = (c.run)(s.slice);
            out.push(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    rates
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

pub fn temp_dir() -> tempfile::TempDir {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("create temp base");
    tempfile::tempdir_in(&base).expect("tempdir")
}

pub fn print_table(contenders: &[Contender], rates: &[f64]) {
    println!();
    println!(
        "{:<56} {:>10} {:>10} {:>9} {:>16}",
        "what", "commits/s", "us/commit", "ratio", "batches/flush"
    );
    println!("{}", "-".repeat(105));
    let base = rates[0];
    for (c, &rate) in contenders.iter().zip(rates) {
        let per_flush = c.store.as_ref().map_or("-".to_string(), |st| {
            let stats = st.stats();
            let ratio = stats.batches_committed as f64 / stats.group_flushes.max(1) as f64;
            format!("{ratio:.1} (max {})", stats.largest_group)
        });
        println!(
            "{:<56} {:>10.0} {:>10.1} {:>8.2}x {:>16}",
            c.name,
            rate,
            1e6 / rate,
            rate / base,
            per_flush
        );
    }
}
