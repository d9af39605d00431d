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
//! `cargo bench -p daemon --bench store` (full) or `BENCH_QUICK=1 …` (short run);
//! `BENCH_ONLY=<text>` keeps the rows whose name contains it (for profiling one). The temp
//! directory is under cargo's target dir (same disk as the work tree), or `$TMPDIR`.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use tgsecretd::store::keys::key_i32_u64;
use tgsecretd::store::{Batch, Store, StoreOptions};

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
    let run = concurrent_commits(rt, Arc::clone(&store), writers, batch, 0);
    (run, store)
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
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        contenders.retain(|c| c.name.contains(&only));
    }
    let rates = measure(&s, &mut contenders);
    print_table(&contenders, &rates);
}
