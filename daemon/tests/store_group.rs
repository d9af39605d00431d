//! Group commit: concurrent committers share flushes; the commit future works on any
//! executor; close() finishes the queued commits.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use tgsecretd::store::keys::{key_i32, key_i32_u32};
use tgsecretd::store::{Batch, Store, StoreOptions, Tree};

fn batch(task: i32, i: u32) -> Batch {
    let mut b = Batch::new();
    b.put(Tree::Outbox, key_i32_u32(-task, i), [task as u8; 64])
        .put(Tree::Chats, key_i32_u32(-task, 0), i.to_be_bytes());
    b
}

#[test]
fn sixty_four_concurrent_committers_share_flushes() {
    const TASKS: i32 = 64;
    const EACH: u32 = 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(tmp.path(), StoreOptions::default()).expect("open"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tasks: Vec<_> = (1..=TASKS)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..EACH {
                        store.commit(batch(task, i)).await.expect("commit");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    let stats = store.stats();
    eprintln!("{stats:?}");
    let batches = (TASKS as u64) * u64::from(EACH);
    assert_eq!(stats.batches_committed, batches);
    assert_eq!(stats.batches_failed, 0);
    assert!(
        stats.group_flushes * 4 < batches,
        "too few batches per flush: {stats:?}"
    );
    assert!(stats.largest_group >= 16, "{stats:?}");
    assert_eq!(
        stats.fdatasyncs,
        stats.group_flushes + 1,
        "one at open, one per flush"
    );
    // Each batch waited at least through its own round, so the batches' waits after being
    // applied add up to at least the rounds' flushes; a round (a flush and an fdatasync on a
    // disk) takes time.
    assert!(stats.flush_us > 0, "{stats:?}");
    assert!(stats.sync_wait_us >= stats.flush_us, "{stats:?}");
    let rounds = stats.group_flushes as f64;
    assert_eq!(
        stats.latency_since(&Default::default()),
        (
            stats.apply_wait_us as f64 / batches as f64,
            stats.sync_wait_us as f64 / batches as f64,
            stats.flush_us as f64 / rounds,
        )
    );
    for task in 1..=TASKS {
        let last = store.get(Tree::Chats, &key_i32_u32(-task, 0)).expect("get");
        assert_eq!(last, Some((EACH - 1).to_be_bytes().to_vec()));
    }
}

/// Wakes a parked thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The smallest executor: poll, park until woken. No tokio runtime anywhere near.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn assert_send_static<T: Send + 'static>(t: T) -> T {
    t
}

#[test]
fn the_commit_future_runs_on_any_executor_and_close_finishes_the_queue() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path(), StoreOptions::default()).expect("open");
    let outcome = block_on(assert_send_static(store.commit(batch(1, 1)))).expect("commit");
    assert!(outcome.inserted().is_empty());

    // Queued but not awaited yet; close() stops the writer only after them.
    let pending: Vec<_> = (0..200).map(|i| store.commit(batch(2, i))).collect();
    store.close().expect("close");
    for (i, f) in pending.into_iter().enumerate() {
        block_on(f).unwrap_or_else(|e| panic!("commit {i}: {e}"));
    }
    let store = Store::open(tmp.path(), StoreOptions::default()).expect("reopen");
    let listed = store.scan_prefix(Tree::Outbox, &key_i32(-2)).count();
    assert_eq!(listed, 200);
}

/// `commit_then`'s closure runs once with the batch's result, on the writer thread, before the
/// future resolves: by then the batch is readable and durable (every batch queued before it
/// is answered first), and the closures run in queue order. A batch refused for its size runs
/// it with the same error the future gets, and nothing of it is applied.
#[test]
fn commit_then_runs_with_the_result_before_the_future_resolves() {
    use std::sync::Mutex;
    use std::sync::mpsc;

    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = StoreOptions {
        max_value_len: 1024,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts).expect("open");
    type Seen = Vec<(u32, Result<(), String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel();
    let mut futures = Vec::new();
    for i in 0..50u32 {
        let seen = Arc::clone(&seen);
        let done_tx = done_tx.clone();
        let mut b = batch(7, i);
        if i == 25 {
            // Over the value limit: refused, nothing of it applied.
            b.put(Tree::Inbox, key_i32(7), vec![0u8; 2048]);
        }
        futures.push(store.commit_then(b, move |r| {
            let thread = std::thread::current().name().map(str::to_owned);
            seen.lock()
                .expect("seen")
                .push((i, r.as_ref().map(|_| ()).map_err(|e| e.to_string())));
            done_tx.send(thread).expect("send");
        }));
    }
    for (i, f) in futures.into_iter().enumerate() {
        let resolved = block_on(f);
        // The closure of this batch ran before its future resolved.
        let ran = seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(j, _)| *j as usize == i);
        assert!(ran, "batch {i}: future resolved before its closure ran");
        assert_eq!(resolved.is_ok(), i != 25, "batch {i}: {resolved:?}");
    }
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 50, "each closure once");
    let order: Vec<u32> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        order,
        (0..50).collect::<Vec<_>>(),
        "answered in queue order"
    );
    for (i, r) in &seen {
        match (i, r) {
            (25, Err(e)) => assert!(e.contains("too large") || e.contains("limit"), "{e}"),
            (25, Ok(())) => panic!("the oversized batch was applied"),
            (_, r) => assert!(r.is_ok(), "batch {i}: {r:?}"),
        }
    }
    let threads: Vec<Option<String>> = done_rx.try_iter().collect();
    assert!(
        threads
            .iter()
            .all(|t| t.as_deref() == Some("tgsecretd-store")),
        "{threads:?}"
    );
    assert!(
        store
            .get(Tree::Outbox, &key_i32_u32(-7, 49))
            .expect("get")
            .is_some()
    );
    assert!(store.get(Tree::Inbox, &key_i32(7)).expect("get").is_none());
    assert!(
        store
            .get(Tree::Outbox, &key_i32_u32(-7, 25))
            .expect("get")
            .is_none()
    );
    store.close().expect("close");
    let reopened = Store::open(tmp.path(), StoreOptions::default()).expect("reopen");
    assert!(
        reopened
            .get(Tree::Outbox, &key_i32_u32(-7, 49))
            .expect("get")
            .is_some(),
        "durable across close"
    );
}
