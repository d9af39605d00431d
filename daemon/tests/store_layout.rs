//! Pins what the store assumes about sled 0.34.7's files (rule 7 of the store's module doc).
//!
//! The store makes durable exactly: `db` (fdatasync after each flush), `conf`, the directory
//! and `blobs/` (at open), and every file in `blobs/` (after the flush that follows its
//! creation). If a sled version writes any other file, or rewrites `conf` or a snapshot while
//! the store runs, these tests fail: that file would not be synced.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use tgsecretd::store::keys::key_i32_u64;
use tgsecretd::store::{Batch, Store, StoreOptions, Tree};

/// Relative path → (length, modification time) of every file under `dir`.
type Listing = BTreeMap<String, (u64, SystemTime)>;

fn listing(dir: &Path) -> Listing {
    let mut out = Listing::new();
    walk(dir, "", &mut out);
    out
}

fn walk(dir: &Path, prefix: &str, out: &mut Listing) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            out.insert(format!("{name}/"), (0, SystemTime::UNIX_EPOCH));
            walk(&entry.path(), &format!("{name}/"), out);
        } else {
            let mtime = meta.modified().expect("mtime");
            out.insert(name, (meta.len(), mtime));
        }
    }
}

/// The only names sled 0.34.7 may create.
fn allowed(name: &str) -> bool {
    let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name {
        "db" | "conf" | "blobs/" => true,
        _ => {
            name.strip_prefix("snap.").is_some_and(hex16)
                || name.strip_prefix("blobs/").is_some_and(digits)
        }
    }
}

/// Files the store syncs after a flush.
fn synced_after_flush(name: &str) -> bool {
    name == "db" || name.starts_with("blobs/")
}

fn commit(store: &Store, f: impl FnOnce(&mut Batch)) {
    let mut batch = Batch::new();
    f(&mut batch);
    store.commit_blocking(batch).expect("commit");
}

#[test]
fn sled_writes_only_the_files_the_store_syncs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    // A store used before, so that the reopen below has a snapshot to keep.
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    commit(&store, |b| {
        b.put(Tree::Meta, "v", "1");
    });
    store.close().expect("close");

    let store = Store::open(&dir, StoreOptions::default()).expect("reopen");
    let before = listing(&dir);
    assert!(
        before.contains_key("db") && before.contains_key("conf"),
        "{before:?}"
    );
    assert!(before.keys().any(|k| k.starts_with("snap.")), "{before:?}");
    std::thread::sleep(std::time::Duration::from_millis(20)); // mtime granularity

    for i in 0..2000u64 {
        commit(&store, |b| {
            let key = key_i32_u64(-((i % 13) as i32), i);
            b.put(Tree::Outbox, key, [i as u8; 100]);
            b.put(Tree::Chats, key, i.to_be_bytes());
            b.remove(Tree::Gap, key_i32_u64(0, i.saturating_sub(5)));
        });
    }
    commit(&store, |b| {
        b.put(Tree::Inbound, "big", vec![1u8; 400 * 1024]);
    });
    let stats = store.stats();
    let after = listing(&dir);
    store.close().expect("close");

    for name in after.keys() {
        assert!(
            allowed(name),
            "sled wrote an unexpected file: {name} (all: {after:?})"
        );
    }
    let changed: Vec<&String> = after
        .iter()
        .filter(|(name, meta)| before.get(*name) != Some(meta))
        .map(|(name, _)| name)
        .collect();
    for name in &changed {
        assert!(
            synced_after_flush(name),
            "{name} changed while open but is not synced after flushes"
        );
    }
    assert!(changed.iter().any(|n| *n == "db"), "{changed:?}");
    let new_blobs = changed.iter().filter(|n| n.starts_with("blobs/")).count() as u64;
    assert!(
        new_blobs >= 1,
        "the 400 KiB value should be a blob: {changed:?}"
    );
    assert!(
        stats.blob_files_synced >= new_blobs,
        "{stats:?} vs {changed:?}"
    );
    assert_eq!(stats.fdatasyncs, stats.group_flushes + 1, "{stats:?}");
}

/// Whether one value of `len` bytes, alone in a fresh store, goes to a blob file.
fn goes_to_blob(len: usize) -> bool {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path(), StoreOptions::default()).expect("open");
    commit(&store, |b| {
        b.put(Tree::Outbox, "k", vec![7u8; len]);
    });
    let blobs = store.stats().blob_files_synced;
    store.close().expect("close");
    blobs > 0
}

/// sled's blob threshold for a lone value with the default 512 KiB segment: a page over
/// `segment_size / 4 - 20` bytes (message header included) goes to `blobs/`. Measured:
/// a value of 131,013 bytes stays in the log, 131,014 bytes goes to a blob file.
#[test]
fn the_blob_threshold_is_about_a_quarter_segment() {
    let (mut lo, mut hi) = (1024usize, 512 * 1024);
    assert!(!goes_to_blob(lo) && goes_to_blob(hi));
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if goes_to_blob(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    eprintln!("largest value kept in the log: {lo} bytes; {hi} bytes goes to blobs/");
    assert!(
        (120 * 1024..=128 * 1024).contains(&lo),
        "threshold moved: {lo}"
    );
}

/// A page is a whole tree node (up to 16 entries before a split), so values far below the
/// threshold can land in a blob together. This is why the store lists `blobs/` after every
/// flush instead of looking at the sizes of a batch's values.
#[test]
fn medium_values_share_a_blob_through_their_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path(), StoreOptions::default()).expect("open");
    for i in 0..14u8 {
        commit(&store, |b| {
            b.put(Tree::Inbox, [i], vec![i; 12 * 1024]);
        });
    }
    // Small writes into the same node make sled consolidate it.
    for i in 0..40u8 {
        commit(&store, |b| {
            b.put(Tree::Inbox, [i % 14], vec![i; 12 * 1024]);
        });
    }
    let stats = store.stats();
    store.close().expect("close");
    assert!(
        stats.blob_files_synced >= 1,
        "no blob from 12 KiB values: {stats:?}"
    );
}

/// A kill during sled's open can leave `snap.<lsn>.generating` (written, not yet renamed).
/// sled 0.34.7 then reads it as the newest snapshot and refuses to open (upstream #1527);
/// the store removes it first, and nothing is lost.
#[test]
fn an_unfinished_snapshot_left_by_a_kill_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, StoreOptions::default()).expect("open");
    commit(&store, |b| {
        b.put(Tree::Chats, "kept", "yes");
    });
    store.close().expect("close");
    Store::open(dir, StoreOptions::default()).expect("reopen: writes a snapshot");
    let snap = listing(dir)
        .into_keys()
        .find(|k| k.starts_with("snap."))
        .expect("a snapshot");
    let bytes = std::fs::read(dir.join(&snap)).expect("read snapshot");
    let unfinished = dir.join(format!("{snap}.generating"));
    std::fs::write(&unfinished, &bytes[..bytes.len() / 2]).expect("write");

    let raw = sled::Config::new().path(dir).open();
    assert!(
        matches!(raw, Err(sled::Error::Corruption { .. })),
        "sled itself no longer trips on it? {:?}",
        raw.map(|_| ())
    );
    let store = Store::open(dir, StoreOptions::default()).expect("the store opens");
    assert_eq!(
        store.get(Tree::Chats, b"kept").expect("get"),
        Some(b"yes".to_vec())
    );
    assert!(!unfinished.exists());
    store.close().expect("close");
}
