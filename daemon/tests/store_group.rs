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
