//! Real processes on this machine: a private `dbus-daemon`, `tgsim` with an account and a
//! simulated peer, and `tgsecretd` pointed at it; for `tgsecret demo` and the end-to-end tests
//! (daemon/tests/support/mod.rs cannot be reused from here: it finds tgsecretd through
//! `CARGO_BIN_EXE_tgsecretd`, which Cargo sets only for the daemon's own tests).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::bus::Client;

/// What to start.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// A directory for the states and logs (created).
    pub dir: PathBuf,
    /// Where `tgsim` and `tgsecretd` are (else beside this executable, then `$PATH`).
    pub bin_dir: Option<PathBuf>,
    /// A bus to use; `None` starts a private one.
    pub bus: Option<String>,
    /// Our account (a real client: the daemon).
    pub account: i64,
    /// The simulated peer.
    pub peer: i64,
    /// Its behaviour (`echo`, `normal`, `decline`, …).
    pub peer_behaviour: String,
    /// More simulated peers: (user id, behaviour).
    pub extra_peers: Vec<(i64, String)>,
    /// The daemon's `--accept` policy.
    pub accept: String,
}

impl LabOptions {
    /// Alice (7001) and Bob (7002, echoing), `--accept always`, a private bus.
    pub fn new(dir: impl Into<PathBuf>) -> LabOptions {
        LabOptions {
            dir: dir.into(),
            bin_dir: None,
            bus: None,
            account: 7001,
            peer: 7002,
            peer_behaviour: "echo".into(),
            extra_peers: Vec::new(),
            accept: "always".into(),
        }
    }
}

/// A private session bus (`dbus-daemon --session --fork`), killed on drop.
#[derive(Debug)]
pub struct PrivateBus {
    /// Its address.
    pub address: String,
    pid: i32,
}

impl PrivateBus {
    /// Starts one.
    pub fn start() -> Result<PrivateBus, String> {
        let out = Command::new("dbus-daemon")
            .args(["--session", "--print-address=1", "--print-pid=1", "--fork"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| {
                format!(
                    "cannot run dbus-daemon ({e}): install it (Debian: apt install \
                     dbus-daemon), or start a bus yourself and pass --bus ADDRESS"
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let address = lines.next().unwrap_or_default().trim().to_owned();
        let pid = lines.next().and_then(|p| p.trim().parse().ok());
        match (address.is_empty(), pid) {
            (false, Some(pid)) => Ok(PrivateBus { address, pid }),
            _ => Err(format!("dbus-daemon printed no address and pid: {text:?}")),
        }
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if self.pid > 0 {
            signal(self.pid, Signal::TERM);
            self.pid = 0;
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bus, tgsim and tgsecretd, running.
pub struct Lab {
    /// The options it was started with.
    pub opts: LabOptions,
    /// The bus address the daemon is on.
    pub bus_address: String,
    /// tgsim's MTProto address.
    pub sim_addr: String,
    /// tgsim's admin socket.
    pub admin: PathBuf,
    /// tgsim's log.
    pub sim_log: PathBuf,
    /// tgsecretd's log.
    pub daemon_log: PathBuf,
    bus: Option<PrivateBus>,
    sim: Option<Child>,
    daemon: Option<Child>,
}

/// The path of `name`: in `bin_dir`, else beside this executable, else in `$PATH`.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = bin_dir {
        return Some(d.join(name)).filter(|p| p.is_file());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

fn binary(name: &str, opts: &LabOptions) -> Result<PathBuf, String> {
    find_binary(name, opts.bin_dir.as_deref()).ok_or_else(|| {
        format!(
            "{name} not found ({}); build it with `cargo build --release -p tgsim -p daemon`",
            opts.bin_dir.as_ref().map_or_else(
                || "looked beside this executable and in $PATH".to_owned(),
                |d| format!("looked in {}", d.display())
            )
        )
    })
}

impl Lab {
    /// Starts the bus (unless given), tgsim and the daemon; [`Lab::wait_ready`] waits for the
    /// daemon on the bus.
    pub fn start(opts: LabOptions) -> Result<Lab, String> {
        let tgsim = binary("tgsim", &opts)?;
        let tgsecretd = binary("tgsecretd", &opts)?;
        std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
        let (bus, bus_address) = match &opts.bus {
            Some(a) => (None, a.clone()),
            None => {
                let b = PrivateBus::start()?;
                let a = b.address.clone();
                (Some(b), a)
            }
        };
        let mut lab = Lab {
            sim_log: opts.dir.join("tgsim.log"),
            daemon_log: opts.dir.join("tgsecretd.log"),
            admin: PathBuf::new(),
            sim_addr: String::new(),
            opts,
            bus_address,
            bus,
            sim: None,
            daemon: None,
        };
        lab.start_sim(&tgsim)?;
        lab.start_daemon(&tgsecretd)?;
        Ok(lab)
    }

    fn key_file(&self) -> PathBuf {
        self.opts.dir.join(format!("{}.key", self.opts.account))
    }

    fn start_sim(&mut self, bin: &Path) -> Result<(), String> {
        let o = &self.opts;
        let mut args = vec![
            "--state-dir".to_owned(),
            o.dir.join("sim").display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--account".into(),
            format!("{0}:1555{0}:Alice", o.account),
            "--peer".into(),
            format!("{0}:1555{0}:Bob:{1}", o.peer, o.peer_behaviour),
            "--export-key".into(),
            format!("{}={}", o.account, self.key_file().display()),
        ];
        for (id, behaviour) in &o.extra_peers {
            args.push("--peer".into());
            args.push(format!("{id}:1555{id}:Peer{id}:{behaviour}"));
        }
        let log = std::fs::File::create(&self.sim_log).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let out = child.stdout.take();
        self.sim = Some(child);
        let mut out = BufReader::new(out.ok_or("tgsim: no stdout")?);
        self.sim_addr = read_line(&mut out).ok_or_else(|| self.died("tgsim", &self.sim_log))?;
        self.admin = read_line(&mut out)
            .map(PathBuf::from)
            .ok_or_else(|| self.died("tgsim", &self.sim_log))?;
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Ok(())
    }

    fn start_daemon(&mut self, bin: &Path) -> Result<(), String> {
        let o = &self.opts;
        let args = [
            "--state-dir".to_owned(),
            o.dir.join("daemon").display().to_string(),
            "--bus".into(),
            self.bus_address.clone(),
            "--server".into(),
            self.sim_addr.clone(),
            "--auth-key-file".into(),
            self.key_file().display().to_string(),
            "--api-id".into(),
            "1".into(),
            "--api-hash".into(),
            "x".into(),
            "--accept".into(),
            o.accept.clone(),
            "--log".into(),
            "info".into(),
        ];
        let log = std::fs::File::create(&self.daemon_log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        self.daemon = Some(child);
        Ok(())
    }

    fn died(&self, what: &str, log: &Path) -> String {
        format!(
            "{what} stopped; the end of {}:\n{}",
            log.display(),
            tail(log, 15)
        )
    }

    /// Waits until the daemon answers `GetStatus` with our user id; a client on its bus.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Client, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.daemon.as_mut()
                && !matches!(c.try_wait(), Ok(None))
            {
                return Err(self.died("tgsecretd", &self.daemon_log));
            }
            if let Ok(client) = Client::connect(Some(&self.bus_address)).await
                && let Ok(s) = client.manager.get_status().await
                && s.contains_key("self_user_id")
            {
                return Ok(client);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the daemon did not come up in {} s; the end of {}:\n{}",
                    timeout.as_secs(),
                    self.daemon_log.display(),
                    tail(&self.daemon_log, 15)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The actions the peer received in `chat_id`, as MadelineProto JSON.
    pub fn transcript(&self, chat_id: i32) -> Result<Vec<serde_json::Value>, String> {
        crate::admin::peer_transcript(&self.admin, self.opts.peer, chat_id)
    }

    /// Stops everything: SIGTERM to the daemon (waits for it), tgsim's `shutdown` (else
    /// SIGTERM), then kills the private bus. What went wrong, if anything.
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(c) = self.daemon.take() {
            problems.extend(terminate(c, "tgsecretd", None));
        }
        if let Some(c) = self.sim.take() {
            let asked = crate::admin::call(&self.admin, "shutdown", serde_json::json!({})).is_ok();
            problems.extend(terminate(c, "tgsim", Some(asked)));
        }
        if let Some(mut b) = self.bus.take() {
            b.stop();
        }
        problems
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [self.daemon.take(), self.sim.take()].into_iter().flatten() {
            kill9(c);
        }
    }
}

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line.trim().to_owned()),
        _ => None,
    }
}

fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = kill_process(p, sig);
    }
}

fn kill9(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Stops a child: SIGTERM unless `asked` (it was asked another way), waits up to 20 s, then
/// kill -9. A problem if it had to be killed or exited with an error.
fn terminate(mut c: Child, name: &str, asked: Option<bool>) -> Option<String> {
    if asked != Some(true) {
        signal(i32::try_from(c.id()).unwrap_or(0), Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.try_wait() {
            Ok(Some(s)) if s.success() || s.code().is_none() => return None,
            Ok(Some(s)) => return Some(format!("{name} exited with {s}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                kill9(c);
                return Some(format!("{name} did not stop in 20 s: killed"));
            }
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
