//! The store's contract, one rule at a time: round trips, atomic batches, put_if_absent,
//! reopening, key order with negative chat ids, poisoning after a failed sync.

use std::path::Path;

use tgsecretd::store::keys::{decode_i32_u64, key_i32, key_i32_i64, key_i32_u64};
use tgsecretd::store::{Batch, Store, StoreError, StoreOptions, Tree};

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("open store")
}

fn commit(store: &Store, batch: &Batch) -> Vec<bool> {
    let outcome = store.commit_blocking(batch.clone()).expect("commit");
    outcome.inserted().to_vec()
}

fn get(store: &Store, tree: Tree, key: &[u8]) -> Option<Vec<u8>> {
    store.get(tree, key).expect("get")
}

#[test]
fn every_tree_round_trips_and_survives_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir);
    let mut batch = Batch::new();
    for tree in Tree::ALL {
        batch.put(tree, tree.name(), format!("value of {}", tree.name()));
        batch.put(tree, b"", b"");
    }
    assert_eq!(batch.len(), 2 * Tree::ALL.len());
    commit(&store, &batch);
    for (i, tree) in Tree::ALL.into_iter().enumerate() {
        let want = format!("value of {}", tree.name()).into_bytes();
        assert_eq!(get(&store, tree, tree.name().as_bytes()), Some(want));
        assert_eq!(get(&store, tree, b""), Some(vec![]));
        // Trees are separate: another tree's key is not here.
        let other = Tree::ALL[(i + 1) % Tree::ALL.len()];
        assert_eq!(get(&store, tree, other.name().as_bytes()), None);
    }
    store.close().expect("close");

    let store = open(&dir);
    for tree in Tree::ALL {
        let want = format!("value of {}", tree.name()).into_bytes();
        assert_eq!(get(&store, tree, tree.name().as_bytes()), Some(want));
    }
    let mut batch = Batch::new();
    batch
        .remove(Tree::Chats, "chats")
        .remove(Tree::Meta, "absent");
    commit(&store, &batch);
    drop(store); // drop also stops the writer and releases the lock
    let store = open(&dir);
    assert_eq!(get(&store, Tree::Chats, b"chats"), None);
    assert!(get(&store, Tree::Outbox, b"outbox").is_some());
}

#[test]
fn put_if_absent_reports_and_keeps_the_existing_value() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut first = Batch::new();
    first
        .put_if_absent(Tree::Requests, "r1", "first")
        .put(Tree::Chats, "c", "x")
        .put_if_absent(Tree::RequestIndex, "i1", "first");
    assert_eq!(commit(&store, &first), vec![true, true]);

    let mut second = Batch::new();
    second
        .put_if_absent(Tree::Requests, "r1", "second")
        .put_if_absent(Tree::Requests, "r2", "second")
        // Within a batch, a later op sees an earlier one.
        .put(Tree::Inbox, "k", "put")
        .put_if_absent(Tree::Inbox, "k", "not this")
        .remove(Tree::RequestIndex, "i1")
        .put_if_absent(Tree::RequestIndex, "i1", "again");
    assert_eq!(commit(&store, &second), vec![false, true, false, true]);
    assert_eq!(get(&store, Tree::Requests, b"r1"), Some(b"first".to_vec()));
    assert_eq!(get(&store, Tree::Requests, b"r2"), Some(b"second".to_vec()));
    assert_eq!(get(&store, Tree::Inbox, b"k"), Some(b"put".to_vec()));
    assert_eq!(
        get(&store, Tree::RequestIndex, b"i1"),
        Some(b"again".to_vec())
    );
    assert!(commit(&store, &Batch::new()).is_empty());
}

/// A batch whose last op is over the value limit fails whole: its earlier ops, applied inside
/// the same sled transaction before the limit check, are rolled back. Batches of the same
/// group are unaffected and the store is not poisoned.
#[test]
fn a_failing_batch_applies_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = StoreOptions {
        max_value_len: 100,
        max_key_len: 16,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts).expect("open");
    let mut setup = Batch::new();
    setup
        .put(Tree::Chats, "kept", "old")
        .put(Tree::Gap, "gone?", "old");
    commit(&store, &setup);

    let mut bad = Batch::new();
    bad.put(Tree::Chats, "kept", "new")
        .remove(Tree::Gap, "gone?")
        .put_if_absent(Tree::Outbox, "new", "v")
        .put(Tree::Inbound, "big", vec![0u8; 101]);
    let mut good = Batch::new();
    good.put(Tree::Meta, "good", "yes");
    let (bad_result, good_result) = tokio_runtime().block_on(async {
        let bad = store.commit(bad);
        let good = store.commit(good);
        (bad.await, good.await)
    });
    match bad_result {
        Err(StoreError::TooLarge {
            tree: Tree::Inbound,
            what: "value",
            len: 101,
            limit: 100,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(good_result.is_ok());
    assert_eq!(get(&store, Tree::Chats, b"kept"), Some(b"old".to_vec()));
    assert_eq!(get(&store, Tree::Gap, b"gone?"), Some(b"old".to_vec()));
    assert_eq!(get(&store, Tree::Outbox, b"new"), None);
    assert_eq!(get(&store, Tree::Inbound, b"big"), None);
    assert_eq!(get(&store, Tree::Meta, b"good"), Some(b"yes".to_vec()));

    let mut long_key = Batch::new();
    long_key
        .put(Tree::Chats, "ok", "1")
        .put(Tree::Chats, [7u8; 17], "v");
    let err = store
        .commit_blocking(long_key)
        .expect_err("key over the limit");
    assert!(err.to_string().contains("key of 17 bytes"), "{err}");
    assert_eq!(get(&store, Tree::Chats, b"ok"), None);
    let stats = store.stats();
    assert_eq!(stats.batches_failed, 2);
    assert_eq!(stats.batches_committed, 2);
    store.close().expect("not poisoned");
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

#[test]
fn scans_follow_numeric_order_with_negative_chat_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let chats = [i32::MIN, -1_000_000_123, -2, -1, 0, 1, 5, i32::MAX];
    let seqs = [0u64, 1, 2, 255, 256, 1 << 33, u64::MAX];
    let mut batch = Batch::new();
    // Inserted in reverse so that insertion order is not the answer.
    for &chat in chats.iter().rev() {
        for &seq in seqs.iter().rev() {
            batch.put(Tree::Outbox, key_i32_u64(chat, seq), seq.to_be_bytes());
        }
        batch.put(Tree::Chats, key_i32(chat), chat.to_be_bytes());
    }
    commit(&store, &batch);

    let all: Vec<i32> = store
        .scan_prefix(Tree::Chats, b"")
        .map(|e| i32::from_be_bytes(e.expect("entry").1.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(all, chats);

    for chat in chats {
        let listed: Vec<(i32, u64)> = store
            .scan_prefix(Tree::Outbox, &key_i32(chat))
            .map(|e| decode_i32_u64(&e.expect("entry").0).expect("key"))
            .collect();
        let want: Vec<(i32, u64)> = seqs.iter().map(|&s| (chat, s)).collect();
        assert_eq!(listed, want);
        let (last, value) = store
            .last_with_prefix(Tree::Outbox, &key_i32(chat))
            .expect("read")
            .expect("some");
        assert_eq!(decode_i32_u64(&last), Some((chat, u64::MAX)));
        assert_eq!(value, u64::MAX.to_be_bytes());
    }
    assert_eq!(
        store
            .last_with_prefix(Tree::Gap, &key_i32(-1))
            .expect("read"),
        None
    );
    assert_eq!(store.scan_prefix(Tree::Outbox, &key_i32(3)).count(), 0);

    // i64 second parts: negative before positive.
    let mut batch = Batch::new();
    for b in [5i64, -5, i64::MIN, 0, i64::MAX] {
        batch.put(Tree::Inbox, key_i32_i64(-7, b), b.to_be_bytes());
    }
    commit(&store, &batch);
    let order: Vec<i64> = store
        .scan_prefix(Tree::Inbox, &key_i32(-7))
        .map(|e| i64::from_be_bytes(e.expect("entry").1.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(order, [i64::MIN, -5, 0, 5, i64::MAX]);
}

/// Removing `blobs/` under the open store makes the sync after the next flush fail: that
/// commit fails with the I/O error, and every later commit and read is refused.
#[test]
fn a_failed_sync_poisons_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(tmp.path());
    let mut batch = Batch::new();
    batch.put(Tree::Chats, "before", "1");
    commit(&store, &batch);
    std::fs::remove_dir(tmp.path().join("blobs")).expect("remove blobs/");

    let mut batch = Batch::new();
    batch.put(Tree::Chats, "after", "2");
    let err = store
        .commit_blocking(batch.clone())
        .expect_err("sync fails");
    assert!(matches!(err, StoreError::Io { op: "list", .. }), "{err:?}");
    let again = store.commit_blocking(batch).expect_err("poisoned");
    assert!(matches!(again, StoreError::Poisoned { .. }), "{again:?}");
    assert!(again.to_string().contains("restart tgsecretd"), "{again}");
    let read = store
        .get(Tree::Chats, b"before")
        .expect_err("reads refused");
    assert!(matches!(read, StoreError::Poisoned { .. }));
    assert!(
        store
            .scan_prefix(Tree::Chats, b"")
            .next()
            .is_some_and(|e| e.is_err())
    );
    let async_err = tokio_runtime().block_on(store.commit(Batch::new()));
    assert!(matches!(async_err, Err(StoreError::Poisoned { .. })));
    let stats = store.stats();
    assert_eq!((stats.batches_committed, stats.batches_failed), (1, 1));
    assert!(matches!(store.close(), Err(StoreError::Poisoned { .. })));
}
