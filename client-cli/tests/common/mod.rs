//! Helpers of the client's tests: running the `tgsecret` binary, and a lab (private bus,
//! tgsim, tgsecretd) for the end-to-end ones.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;
use tgsecret_cli::lab::{Lab, LabOptions};

/// The tgsecret binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_tgsecret")
}

/// Runs tgsecret with `args` (no stdin).
pub fn run(args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("tgsecret runs")
}

/// Runs tgsecret with `args` and `input` on stdin.
pub fn run_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(exe())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tgsecret runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("tgsecret ends")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success; the stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "tgsecret {args:?}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The one JSON document of a successful `--json` run.
pub fn ok_json(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// A directory removed on drop (kept with KEEP_TEST_DIRS).
pub struct Temp(pub PathBuf);

impl Temp {
    pub fn new(name: &str) -> Temp {
        let d = std::env::temp_dir().join(format!("tgsecret-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Temp(d)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The directory of the binaries (tgsecret's; tgsim and tgsecretd are built there).
pub fn bin_dir() -> PathBuf {
    Path::new(exe()).parent().unwrap().to_path_buf()
}

/// Builds tgsecretd and tgsim beside tgsecret when one is missing (once per test binary):
/// Cargo sets CARGO_BIN_EXE_* only for a package's own binaries. `cargo test --workspace`
/// builds both first, so they are current there; after changing the daemon, run the CLI's
/// tests through the workspace (or `cargo build --release -p daemon -p tgsim` first). Not
/// rebuilt unconditionally: a plain `cargo build` resolves features without the
/// dev-dependencies and would rebuild the daemon (minutes in CI) for nothing.
pub fn ensure_binaries() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        if bin_dir().join("tgsecretd").exists() && bin_dir().join("tgsim").exists() {
            return;
        }
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-p", "daemon", "--bin", "tgsecretd"])
            .args(["-p", "tgsim", "--bin", "tgsim"]);
        if bin_dir().ends_with("release") {
            c.arg("--release");
        }
        let s = c.status().expect("cargo runs");
        assert!(s.success(), "building tgsecretd and tgsim");
    });
}

/// A running lab and a runtime for its async parts.
pub struct TestLab {
    pub lab: Lab,
    pub rt: tokio::runtime::Runtime,
    pub dir: Temp,
}

impl TestLab {
    /// Starts a private bus, tgsim (Alice 7001, Bob 7002 echoing, `extra` peers) and
    /// tgsecretd with the `accept` policy, and waits for the daemon.
    pub fn start(name: &str, accept: &str, extra: &[(i64, &str)]) -> TestLab {
        ensure_binaries();
        let dir = Temp::new(name);
        let mut opts = LabOptions::new(dir.0.join("lab"));
        opts.bin_dir = Some(bin_dir());
        opts.accept = accept.into();
        opts.extra_peers = extra.iter().map(|(i, b)| (*i, (*b).to_owned())).collect();
        let mut lab = Lab::start(opts).expect("lab starts");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(lab.wait_ready(Duration::from_secs(30)))
            .expect("the daemon comes up");
        TestLab { lab, rt, dir }
    }

    /// `tgsecret --bus ADDR ARGS…`.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--bus", self.lab.bus_address.as_str()];
        v.extend_from_slice(args);
        v
    }

    /// The chat's state from `tgsecret --json chats`.
    pub fn state(&self, chat: i32) -> Option<String> {
        let chats = ok_json(&self.args(&["--json", "chats"]));
        chats
            .as_array()?
            .iter()
            .find(|c| c["chat_id"] == chat)
            .and_then(|c| c["state"].as_str().map(str::to_owned))
    }

    /// Polls `chats` until the chat is in `state`.
    pub fn wait_state(&self, chat: i32, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.state(chat);
            if now.as_deref() == Some(state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chat {chat}: {now:?}, not {state}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls Bob's transcript of `chat` until `pred` holds for one entry.
    pub fn wait_transcript(&self, chat: i32, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.lab.transcript(chat).unwrap_or_default();
            if t.iter().any(&pred) || Instant::now() > deadline {
                return t;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `chat request 7002 --wait`: a ready chat with Bob.
    pub fn ready_chat(&self) -> i32 {
        let out = ok(&self.args(&["chat", "request", "7002", "--wait", "-q"]));
        out.trim().parse().expect("a chat id")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let problems = self.lab.shutdown();
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("shutdown: {problems:?}");
        }
    }
}

/// The hex blocks of secret-core/tests/VECTORS.md section F, by label, in order: the key, then
/// (payload, padding, data) of the creator's and of the acceptor's first message.
pub fn chat_path_vectors() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../secret-core/tests/VECTORS.md"),
    )
    .expect("VECTORS.md");
    let start = text.find("## F.").expect("section F");
    let end = text[start..]
        .find("## G.")
        .map_or(text.len(), |e| start + e);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text[start..end].lines() {
        let l = line.trim();
        let is_hex = !l.is_empty() && l.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex {
            if let Some((_, h)) = current.as_mut() {
                h.push_str(l);
            }
            continue;
        }
        if let Some((label, h)) = current.take()
            && !h.is_empty()
        {
            out.push((label, hex::decode(h).unwrap()));
        }
        if l.ends_with('=') {
            let label = l.split_whitespace().next().unwrap_or_default().to_owned();
            current = Some((label, String::new()));
        }
    }
    out
}
