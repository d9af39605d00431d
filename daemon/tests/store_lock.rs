//! One daemon per store (sled's lock → `StoreError::Locked`), and the files' modes.
//!
//! The other-process case re-runs this test binary with `STORE_LOCK_CHILD_DIR` set: the test
//! `child_opens_the_store` then only tries to open that store and prints what happened.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use tgsecretd::store::{Batch, Store, StoreError, StoreOptions, Tree};

const CHILD_ENV: &str = "STORE_LOCK_CHILD_DIR";

fn open(dir: &Path) -> Result<Store, StoreError> {
    Store::open(dir, StoreOptions::default())
}

/// The child's role; a no-op in a normal run.
#[test]
fn child_opens_the_store() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    match open(Path::new(&dir)) {
        Ok(_) => println!("CHILD opened"),
        Err(StoreError::Locked { .. }) => println!("CHILD locked"),
        Err(e) => println!("CHILD error {e}"),
    }
}

fn run_child(dir: &Path) -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_opens_the_store",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The harness prints "test child_opens_the_store ... " on the same line.
    let answer = stdout.find("CHILD ").map(|at| &stdout[at..]);
    let line = answer.and_then(|a| a.lines().next());
    line.map(str::to_owned)
        .unwrap_or_else(|| format!("no answer: {stdout}"))
}

#[test]
fn a_second_open_is_locked_in_this_process_and_in_another() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir).expect("first open");
    match open(&dir) {
        Err(StoreError::Locked { dir: d }) => assert_eq!(d, dir),
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = open(&dir).expect_err("locked").to_string();
    let want = format!("another tgsecretd is already using {}", dir.display());
    assert!(message.contains(&want), "{message}");
    assert_eq!(run_child(&dir), "CHILD locked");

    // The lock goes with the store, after close and after drop.
    store.close().expect("close");
    assert_eq!(run_child(&dir), "CHILD opened");
    let store = open(&dir).expect("reopen after close");
    drop(store);
    let store = open(&dir).expect("reopen after drop");
    store.close().expect("close");
}

/// A sled handle that is not a Store (no directory lock) still holds sled's own lock on
/// `db`: that error maps to Locked too.
#[test]
fn sleds_own_lock_maps_to_locked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let raw = sled::Config::new()
        .path(tmp.path())
        .open()
        .expect("raw sled");
    match open(tmp.path()) {
        Err(StoreError::Locked { dir }) => assert_eq!(dir, tmp.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(raw);
    open(tmp.path())
        .expect("open after sled let go")
        .close()
        .expect("close");
}

/// Errors that are not the lock stay what they are.
#[test]
fn other_open_errors_are_not_locked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("a file");
    std::fs::write(&file, b"x").expect("write");
    let err = open(&file.join("store")).expect_err("parent is a file");
    assert!(
        matches!(
            err,
            StoreError::Io {
                op: "create directory",
                ..
            }
        ),
        "{err:?}"
    );
    let err = open(&file).expect_err("store is a file");
    assert!(!matches!(err, StoreError::Locked { .. }), "{err:?}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Every file under `dir` (recursively) with its mode.
fn modes(dir: &Path, out: &mut Vec<(String, bool, u32)>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let is_dir = path.is_dir();
        out.push((path.display().to_string(), is_dir, mode(&path)));
        if is_dir {
            modes(&path, out);
        }
    }
}

#[test]
fn directory_0700_files_0600_blobs_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let parent = tmp.path().join("missing").join("parents");
    let dir = parent.join("store");
    let store = open(&dir).expect("open");
    let mut batch = Batch::new();
    batch.put(Tree::Outbox, "big", vec![9u8; 300 * 1024]); // goes to blobs/
    batch.put(Tree::Chats, "small", "v");
    store.commit_blocking(batch).expect("commit");
    assert!(store.stats().blob_files_synced >= 1);
    store.close().expect("close");
    let store = open(&dir).expect("reopen"); // a snapshot file appears now
    store.close().expect("close");

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&parent), 0o700);
    assert_eq!(mode(&tmp.path().join("missing")), 0o700);
    let mut all = Vec::new();
    modes(&dir, &mut all);
    assert!(all.iter().any(|(p, _, _)| p.contains("/blobs/")), "{all:?}");
    assert!(all.iter().any(|(p, _, _)| p.contains("/snap.")), "{all:?}");
    for (path, is_dir, m) in all {
        assert_eq!(m, if is_dir { 0o700 } else { 0o600 }, "{path}");
    }
}

/// An existing, too open store directory is tightened.
#[test]
fn an_existing_directory_is_set_to_0700() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    open(&dir).expect("open").close().expect("close");
    assert_eq!(mode(&dir), 0o700);
}
