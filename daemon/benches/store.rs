//! Store benchmarks (plain `main`, no criterion): durable commits per second.
//!
//! The baseline is the bare cost of durability on this disk: write ~200 bytes in place into a
//! preallocated file and fdatasync it, one thread (appending instead, also shown, makes every
//! sync commit the file's new size too). Against it, in the same run and directory: sled alone
//! (one small three-tree transaction + flush + fdatasync of `db` per commit, one thread), and
//! `Store::commit` with 1, 8 and 64 concurrent writers (tokio tasks), where group commit
//! shares one flush + fdatasync among the batches queued together. Contenders run in
//! interleaved rounds of fixed duration (so load from other processes hits all alike); each
//! figure is the median round. Timings are printed, never asserted.
//!
//! `cargo bench -p daemon --bench store` (full) or `BENCH_QUICK=1 …` (short run). The temp
//! directory is under cargo's target dir (same disk as the work tree), or `$TMPDIR`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tgsecretd::store::keys::key_i32_u64;
use tgsecretd::store::{Batch, Store, StoreOptions, Tree};

struct Settings {
    rounds: usize,
    slice: Duration,
}

fn settings() -> Settings {
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
type Run = Box<dyn FnMut(Duration) -> u64>;

struct Contender {
    name: String,
    run: Run,
    /// For store rows: the store, to read its stats afterwards.
    store: Option<Arc<Store>>,
}

/// The ~200 bytes one commit writes: three entries of one chat.
const VALUES: [(Tree, usize); 3] = [(Tree::Chats, 60), (Tree::Outbox, 100), (Tree::Meta, 40)];

/// Size of the preallocated file of the in-place baseline.
const BARE_LEN: u64 = 1 << 20;

/// 200 bytes written in place into a preallocated, synced file, then fdatasync: a pure data
/// sync (the file's size never changes, so no metadata has to be committed).
fn bare_in_place(dir: &Path) -> Run {
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
fn bare_append(dir: &Path) -> Run {
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

fn sled_raw(dir: &Path) -> Run {
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

fn batch(seq: u64) -> Batch {
    let key = key_i32_u64(-((seq % 64) as i32) - 1, seq);
    let mut b = Batch::new();
    for (tree, len) in VALUES {
        b.put(tree, key, vec![7u8; len]);
    }
    b
}

fn store_writers(dir: &Path, writers: usize) -> (Run, Arc<Store>) {
    let store = Arc::new(
        Store::open(
            &dir.join(format!("store-{writers}")),
            StoreOptions::default(),
        )
        .expect("open store"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let seq = Arc::new(AtomicU64::new(0));
    let shared = Arc::clone(&store);
    let run = Box::new(move |slice: Duration| {
        let end = Instant::now() + slice;
        rt.block_on(async {
            let tasks: Vec<_> = (0..writers)
                .map(|_| {
                    let (store, seq) = (Arc::clone(&shared), Arc::clone(&seq));
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            let b = batch(seq.fetch_add(1, Ordering::Relaxed));
                            store.commit(b).await.expect("commit");
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
    });
    (run, store)
}

/// Median commits/s of each contender over interleaved rounds.
fn measure(s: &Settings, contenders: &mut [Contender]) -> Vec<f64> {
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

fn temp_dir() -> tempfile::TempDir {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("create temp base");
    tempfile::tempdir_in(&base).expect("tempdir")
}

fn main() {
    let s = settings();
    let tmp = temp_dir();
    let dir = tmp.path();
    println!(
        "store benchmarks: median of {} interleaved rounds of {} ms{}, in {}",
        s.rounds,
        s.slice.as_millis(),
        if s.rounds < 9 { " [BENCH_QUICK]" } else { "" },
        dir.display()
    );
    let mut contenders = vec![
        Contender {
            name: "bare: 200 B in place + fdatasync, 1 thread (baseline)".into(),
            run: bare_in_place(dir),
            store: None,
        },
        Contender {
            name: "bare: append 200 B + fdatasync, 1 thread".into(),
            run: bare_append(dir),
            store: None,
        },
        Contender {
            name: "sled raw: 3-tree tx + flush + fdatasync db, 1 thread".into(),
            run: sled_raw(dir),
            store: None,
        },
    ];
    for writers in [1, 8, 64] {
        let (run, store) = store_writers(dir, writers);
        contenders.push(Contender {
            name: format!("Store::commit, {writers} concurrent writer(s)"),
            run,
            store: Some(store),
        });
    }
    let rates = measure(&s, &mut contenders);
    print_table(&contenders, &rates);
}

fn print_table(contenders: &[Contender], rates: &[f64]) {
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
