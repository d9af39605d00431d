//! Real processes for the end-to-end tests: a private dbus-daemon, the tgsim binary, the
//! tgsecretd binary, and a D-Bus client made of ipc-proto's proxies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tgsim::admin::AdminClient;
use zbus::{Connection, MessageStream, OwnedVariant, Variant};

/// Whether an external tool is there: missing under CI (env `CI`) fails the test, elsewhere the
/// caller skips (a line says so).
pub fn have(what: &str, probe: &mut Command, package: &str) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is needed under CI (install {package}; .ci/run does)"
        );
        eprintln!("SKIP: {what} not found (install {package}); its part of this test is skipped");
    }
    ok
}

/// A directory removed on drop.
pub struct Temp(pub PathBuf);

impl Temp {
    pub fn new(name: &str) -> Temp {
        let d = std::env::temp_dir().join(format!("tgsd-{}-{name}", std::process::id()));
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

/// A private session bus.
pub struct Bus {
    pub address: String,
    pub pid: i32,
}

impl Bus {
    pub fn start() -> Bus {
        let out = Command::new("dbus-daemon")
            .args(["--session", "--print-address=1", "--print-pid=1", "--fork"])
            .output()
            .expect("dbus-daemon (apt package dbus-daemon) is needed");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let address = lines.next().expect("address").to_owned();
        let pid = lines.next().expect("pid").trim().parse().unwrap();
        Bus { address, pid }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

/// The directory of the binaries under test.
fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tgsecretd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The tgsim binary next to tgsecretd (built by `cargo test --workspace`; built here if not).
fn tgsim_bin() -> PathBuf {
    let p = bin_dir().join("tgsim");
    if !p.exists() {
        let release = bin_dir().ends_with("release");
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-p", "tgsim", "--bin", "tgsim"]);
        if release {
            c.arg("--release");
        }
        assert!(c.status().unwrap().success(), "building tgsim");
    }
    p
}

/// The tgsim binary with its admin socket.
pub struct Sim {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub admin: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl Sim {
    /// Starts tgsim on `dir` with Alice (a real client) and the given peers (`ID:behaviour`).
    pub fn start(dir: &Path, accounts: &[(i64, &str)], peers: &[(i64, &str)]) -> Sim {
        let mut args = vec![
            "--state-dir".to_owned(),
            dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        for (id, name) in accounts {
            args.push("--account".into());
            args.push(format!("{id}:99966{id}:{name}"));
        }
        for (id, behaviour) in peers {
            args.push("--peer".into());
            args.push(format!("{id}:99977{id}:Peer{id}:{behaviour}"));
        }
        let mut s = Sim {
            dir: dir.to_path_buf(),
            addr: "127.0.0.1:1".parse().unwrap(),
            admin: dir.join("admin.sock"),
            child: None,
            args,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let mut child = Command::new(tgsim_bin())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        self.addr = line.trim().parse().expect("tgsim prints its address");
        line.clear();
        out.read_line(&mut line).unwrap();
        self.admin = PathBuf::from(line.trim());
        // Keep the pipe drained.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        // After a restart, listen on the same port (clients hold the address).
        if let Some(i) = self.args.iter().position(|a| a == "--listen") {
            self.args[i + 1] = self.addr.to_string();
        }
        self.child = Some(child);
    }

    /// kill -9 and start again on the same state and port.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.admin).unwrap()
    }

    /// A key file for `account`.
    pub fn key_file(&self, account: i64, dir: &Path) -> PathBuf {
        let k = self.admin().provision_key(account).unwrap();
        let p = dir.join(format!("{account}.key"));
        std::fs::write(&p, k.auth_key).unwrap();
        p
    }

    /// The actions the peer received in `chat`, as MadelineProto JSON.
    pub fn transcript(&self, peer: i64, chat: i32) -> Vec<serde_json::Value> {
        self.admin()
            .peer_chats(peer)
            .unwrap()
            .into_iter()
            .find(|c| c.chat_id == chat)
            .map(|c| c.transcript)
            .unwrap_or_default()
    }

    /// The TTLs of the `setMessageTTL` actions in `peer`'s transcript of `chat`, in order (the
    /// tests number their messages by TTL).
    pub fn ttls(&self, peer: i64, chat: i32) -> Vec<i64> {
        self.transcript(peer, chat)
            .iter()
            .filter_map(ttl_of)
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The tgsecretd binary.
pub struct Daemon {
    pub state: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(state: &Path, bus: &str, sim: &Sim, key_file: &Path, accept: &str) -> Daemon {
        Daemon::start_logging(state, bus, sim, key_file, accept, "debug")
    }

    /// [`Daemon::start`] at another log level (the benchmarks run at the default, `info`).
    pub fn start_logging(
        state: &Path,
        bus: &str,
        sim: &Sim,
        key_file: &Path,
        accept: &str,
        log: &str,
    ) -> Daemon {
        let args = vec![
            "--state-dir".into(),
            state.display().to_string(),
            "--bus".into(),
            bus.into(),
            "--server".into(),
            sim.addr.to_string(),
            "--auth-key-file".into(),
            key_file.display().to_string(),
            "--api-id".into(),
            "1".into(),
            "--api-hash".into(),
            "x".into(),
            "--accept".into(),
            accept.into(),
            "--call-timeout".into(),
            "5".into(),
            "--log".into(),
            log.into(),
        ];
        let mut d = Daemon {
            state: state.to_path_buf(),
            args,
            child: None,
            log: state.with_extension("log"),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tgsecretd"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM; the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        self.exit_within(20)
    }

    /// Waits up to `secs` for the process to end by itself; its exit status (`None` if it
    /// still runs, or was not running).
    pub fn exit_within(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the process, in KiB (0 if it is not running).
    pub fn rss_kib(&self) -> u64 {
        let Some(c) = self.child.as_ref() else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{}/status", c.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A D-Bus client of the daemon.
pub struct Client {
    pub conn: Connection,
}

impl Client {
    pub async fn connect(bus: &str) -> Client {
        let conn = zbus::connection::Builder::address(bus)
            .build()
            .await
            .unwrap();
        Client { conn }
    }

    /// A client on an existing connection.
    pub fn connect_conn(conn: Connection) -> Client {
        Client { conn }
    }

    pub async fn manager(&self) -> ipc_proto::ManagerProxy<'static> {
        ipc_proto::ManagerProxy::new(&self.conn).await.unwrap()
    }

    /// Waits until the daemon answers on the bus.
    pub async fn wait_ready(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let m = self.manager().await;
            if let Ok(s) = m.get_status().await
                && s.contains_key("self_user_id")
            {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every Response signal from now on: (handle path, code, results).
    pub async fn responses(&self) -> Responses {
        Responses::spawn(
            MessageStream::for_match_rule(
                "type='signal',interface='io.github.tgsecretd.Request1',member='Response'",
                &self.conn,
                None,
            )
            .await
            .unwrap(),
        )
    }

    /// The chat's state from ListChats.
    pub async fn chat_state(&self, chat: i32) -> Option<String> {
        let chats = self.manager().await.list_chats().await.ok()?;
        chats.into_iter().find_map(|c| {
            let id = i32::try_from(c.get("chat_id")?).ok()?;
            (id == chat).then(|| String::try_from(c.get("state")?.try_clone().ok()?).ok())?
        })
    }
}

impl Client {
    /// Waits until the chat is in `state` (as ListChats says); panics after `secs`.
    pub async fn wait_state(&self, chat: i32, state: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let now = self.chat_state(chat).await;
            if now.as_deref() == Some(state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chat {chat}: {now:?}, not {state} after {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Parses a Response signal: (handle, code, results).
pub fn parse_response(m: &zbus::Message) -> Option<(String, u32, HashMap<String, OwnedVariant>)> {
    let path = m.header().path()?.to_string();
    let (code, results): (u32, HashMap<String, OwnedVariant>) = m.body().deserialize().ok()?;
    Some((path, code, results))
}

/// A Response as received: (handle, code, results).
pub type Response = (String, u32, HashMap<String, OwnedVariant>);

/// Responses read by a task of their own from the moment the stream was made: a signal stream
/// that nobody reads fills up and stalls the whole connection (method replies included).
pub struct Responses(std::sync::Arc<std::sync::Mutex<Vec<Response>>>);

impl Responses {
    pub fn spawn(mut stream: MessageStream) -> Responses {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = std::sync::Arc::clone(&got);
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Some(r) = parse_response(&m) {
                    g.lock().unwrap().push(r);
                }
            }
        });
        Responses(got)
    }

    /// Waits until `stop` says so or `secs` pass; what arrived.
    pub async fn wait(
        &self,
        secs: u64,
        mut stop: impl FnMut(&[Response]) -> bool,
    ) -> Vec<Response> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            {
                let got = self.0.lock().unwrap();
                if stop(&got) || Instant::now() > deadline {
                    return got.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Responses {
    /// The Response of `handle` (panics after `secs`, or if a second one arrived).
    pub async fn one(&self, handle: &str, secs: u64) -> Response {
        let got = self.wait(secs, |g| g.iter().any(|r| r.0 == handle)).await;
        let mine: Vec<&Response> = got.iter().filter(|r| r.0 == handle).collect();
        assert_eq!(mine.len(), 1, "{handle}: {} Responses", mine.len());
        mine[0].clone()
    }
}

/// A TL `decryptedMessageService{random_id, decryptedMessageActionSetMessageTTL{ttl}}`.
pub fn ttl_message(random_id: i64, ttl: i32) -> Vec<u8> {
    use secret_core::tl::Serializable;
    use secret_core::tl::enums::{DecryptedMessage, DecryptedMessageAction};
    use secret_core::tl::types;
    DecryptedMessage::Service(types::DecryptedMessageService {
        random_id,
        action: DecryptedMessageAction::SetMessageTTL(types::DecryptedMessageActionSetMessageTTL {
            ttl_seconds: ttl,
        }),
    })
    .to_bytes()
}

/// Options for SendEncryptedService.
pub fn send_options(token: &str, random_id: i64) -> HashMap<&'static str, Variant<'static>> {
    let mut o = HashMap::new();
    o.insert("handle_token", Variant::from(token.to_owned()));
    o.insert("random_id", Variant::from(random_id));
    o
}

/// The TTL of a transcript entry (`decryptedMessageActionSetMessageTTL`).
pub fn ttl_of(v: &serde_json::Value) -> Option<i64> {
    (v["_"] == "decryptedMessageActionSetMessageTTL").then(|| v["ttl_seconds"].as_i64())?
}

/// tgsim fails `share` per mille of `account`'s sends (`messages.sendEncryptedService` and
/// `messages.sendEncrypted`) with the error `code` / `name`.
pub fn faults_on_sends(account: i64, share: u16, code: i32, name: &str) -> tgsim::faults::Faults {
    use grammers_tl_types::Identifiable;
    use grammers_tl_types::functions::messages::{SendEncrypted, SendEncryptedService};
    use tgsim::faults::{CallFaults, Faults, InjectedError};
    let mut f = Faults::none();
    f.account_calls.insert(
        account,
        CallFaults {
            fail: share,
            methods: vec![
                SendEncryptedService::CONSTRUCTOR_ID,
                SendEncrypted::CONSTRUCTOR_ID,
            ],
            errors: vec![InjectedError::new(code, name)],
            ..CallFaults::default()
        },
    );
    f
}

/// Asserts that the stopped daemon's store in `store_dir` keeps nothing of `chat` (its records
/// in every tree, its requests, the handle index of `handle`), and that `other` keeps its 5
/// chat records.
pub fn assert_forgotten(store_dir: &Path, chat: i32, handle: &str, other: i32) {
    use tgsecretd::store::{Store, StoreOptions, Tree};
    let store = Store::open(store_dir, StoreOptions::default()).unwrap();
    let prefix = tgsecretd::store::keys::key_i32(chat);
    for tree in [
        Tree::Chats,
        Tree::Outbox,
        Tree::Gap,
        Tree::Inbox,
        Tree::Inbound,
        Tree::RequestIndex,
    ] {
        let left = store.scan_prefix(tree, &prefix).count();
        assert_eq!(left, 0, "{tree:?} keeps {left} keys of the chat");
    }
    let left = store
        .scan_prefix(Tree::Requests, &(chat as u32).to_be_bytes())
        .count();
    assert_eq!(left, 0, "Requests keeps {left} records of the chat");
    assert!(
        store
            .get(Tree::Meta, &tgsecretd::records::handle_key(handle))
            .unwrap()
            .is_none()
    );
    let other_left = store
        .scan_prefix(Tree::Chats, &tgsecretd::store::keys::key_i32(other))
        .count();
    assert_eq!(other_left, 5, "the other chat's records");
    store.close().unwrap();
}

/// The manager once the daemon answers a call (at most 30 s), whatever its login state.
pub async fn answering_manager(client: &Client) -> ipc_proto::ManagerProxy<'static> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = client.manager().await;
        if m.get_status().await.is_ok() {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tests' runtime: two workers, I/O and timers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The end-to-end tests' set-up: a private bus; tgsim with the account `alice` and one
/// simulated peer `(user id, behaviour)`; tgsecretd with Alice's key and the accept policy
/// `accept` (its key file at `key`); a client on the bus once the daemon answers. Destructure
/// it in this order, `let Stack { tmp, bus, sim, key, mut d, client } = …`, so that the parts
/// drop as separate locals would: the client first, the folder last (bind what a test does not
/// use as `_name`, not `_`, except `key`: `_` drops the part at once).
pub struct Stack {
    pub tmp: Temp,
    pub bus: Bus,
    pub sim: Sim,
    pub key: PathBuf,
    pub d: Daemon,
    pub client: Client,
}

impl Stack {
    pub async fn start(name: &str, alice: i64, peer: (i64, &str), accept: &str) -> Stack {
        let tmp = Temp::new(name);
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(alice, "Alice")], &[peer]);
        let key = sim.key_file(alice, &tmp.0);
        let d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, accept);
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        Stack {
            tmp,
            bus,
            sim,
            key,
            d,
            client,
        }
    }
}
