//! The systemd integration in `systemd/`: the user unit passes `systemd-analyze verify`
//! without a warning, the unit and the D-Bus activation file agree with each other and with
//! the daemon, the installer writes, substitutes and removes its files, and the binary
//! speaks the notification protocol the unit relies on (`Type=notify`, `WatchdogSec=`,
//! `StateDirectory=`, `ConfigurationDirectory=`) to a fake service manager: real processes
//! (a private dbus-daemon, tgsim, tgsecretd) and a datagram socket as `NOTIFY_SOCKET`. And
//! D-Bus activation through the installed file: a call by busctl or gdbus to the name starts
//! the daemon on a bus without systemd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Bus, Sim, Temp, have};

const UNIT: &str = "tgsecretd.service";
const DBUS_FILE: &str = "io.github.tgsecretd.service";
const ALICE: i64 = 8901;

/// The repository's `systemd/` directory.
fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("systemd")
}

/// The directory of the tgsecretd binary under test (what @BINDIR@ becomes).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tgsecretd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of `key` in a unit-style file (`Key=value` lines; comments skipped).
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .collect()
}

/// The one value of `key`; panics unless there is exactly one.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    match values(text, key).as_slice() {
        [v] => v,
        other => panic!("{key}= is set {} times, not once", other.len()),
    }
}

// --- the files themselves ---------------------------------------------------------------

#[test]
fn unit_and_dbus_file_agree_with_each_other_and_the_daemon() {
    let unit = read(&systemd_dir().join(UNIT));
    let dbus = read(&systemd_dir().join(DBUS_FILE));
    // The daemon's bus name, in both files.
    assert_eq!(value(&unit, "BusName"), ipc_proto::BUS_NAME);
    assert_eq!(value(&dbus, "Name"), ipc_proto::BUS_NAME);
    assert!(dbus.lines().any(|l| l.trim() == "[D-BUS Service]"));
    // Activation goes through the unit, so the daemon runs sandboxed either way.
    assert_eq!(value(&dbus, "SystemdService"), UNIT);
    // Both start the same binary, placed by the installer; without arguments, so every
    // setting comes from $CONFIGURATION_DIRECTORY/config.toml.
    assert_eq!(value(&unit, "ExecStart"), "@BINDIR@/tgsecretd");
    assert_eq!(value(&dbus, "Exec"), "@BINDIR@/tgsecretd");
    // What the daemon implements (daemon/src/notify.rs and main.rs) and the unit relies on.
    assert_eq!(value(&unit, "Type"), "notify");
    assert_eq!(value(&unit, "NotifyAccess"), "main");
    assert!(!value(&unit, "WatchdogSec").is_empty());
    assert_eq!(value(&unit, "StateDirectory"), "tgsecretd");
    assert_eq!(value(&unit, "StateDirectoryMode"), "0700");
    assert_eq!(value(&unit, "ConfigurationDirectory"), "tgsecretd");
    assert_eq!(value(&unit, "Restart"), "on-failure");
    assert_eq!(value(&unit, "WantedBy"), "default.target");
}

// --- systemd-analyze verify ---------------------------------------------------------------

/// `systemd-analyze`, or `None` after printing why the test is skipped; fails instead when
/// `CI` is set (CI installs it: .ci/run).
fn systemd_analyze() -> Option<&'static str> {
    have(
        "systemd-analyze",
        Command::new("systemd-analyze").arg("--version"),
        "systemd",
    )
    .then_some("systemd-analyze")
}

/// Runs `systemd-analyze [--user] verify` on `unit` in an environment of its own under
/// `dir`; the output (stdout and stderr) and whether it exited 0.
fn verify(tool: &str, dir: &Path, unit: &Path) -> (String, bool) {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let attempt = |user: bool| -> Output {
        let mut c = Command::new(tool);
        if user {
            c.arg("--user");
        }
        c.args(["verify", "--man=no"])
            .arg(unit)
            .current_dir(dir)
            // The user manager's search path, isolated from the real user's units and
            // drop-ins; XDG_RUNTIME_DIR lets `--user` work without a running user manager.
            .env("HOME", dir.join("home"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_RUNTIME_DIR", &run)
            // Warnings are printed at the default level; on the console, without colour.
            .env("SYSTEMD_LOG_LEVEL", "info")
            .env("SYSTEMD_LOG_TARGET", "console")
            .env("SYSTEMD_LOG_COLOR", "0")
            .env("SYSTEMD_PAGER", "cat")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let user = attempt(true);
    let out = text(&user);
    if out.contains("Failed to initialize manager") {
        // This systemd cannot run a user-mode manager here: the system-mode check covers
        // the same parsing.
        eprintln!("systemd-analyze --user verify is unavailable here ({out:?}); plain verify");
        let system = attempt(false);
        return (text(&system), system.status.success());
    }
    (out, user.status.success())
}

/// The lines of `systemd-analyze verify` output that are about our unit (others, about
/// units of the machine it runs on, are not this project's).
fn about_unit(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.contains(UNIT)).collect()
}

#[test]
fn unit_passes_systemd_analyze_verify_without_a_warning() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let tmp = Temp::new("systemd-verify");
    let template = read(&systemd_dir().join(UNIT));
    let bindir = bin_dir();
    let unit_text = template.replace("@BINDIR@", bindir.to_str().unwrap());

    let good = tmp.0.join("good");
    std::fs::create_dir_all(&good).unwrap();
    let unit = good.join(UNIT);
    std::fs::write(&unit, &unit_text).unwrap();
    let (out, ok) = verify(tool, &good, &unit);
    let lines = about_unit(&out);
    assert!(
        lines.is_empty(),
        "systemd-analyze verify {UNIT} (exit ok = {ok}) reports:\n{}\n\nall output:\n{out}",
        lines.join("\n")
    );
    if !ok {
        // Every problem of this unit names it; a failure without such a line is about the
        // machine's own units (verify also loads the dependencies).
        eprintln!("note: systemd-analyze verify failed on other units:\n{out}");
    }

    // The check itself: the same unit with an unknown setting must be reported, or an
    // empty output above proves nothing (output sent elsewhere, a changed message format).
    let bad = tmp.0.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let bad_unit = bad.join(UNIT);
    std::fs::write(
        &bad_unit,
        unit_text.replace("[Service]\n", "[Service]\nNoSuchSetting=yes\n"),
    )
    .unwrap();
    let (out, _) = verify(tool, &bad, &bad_unit);
    assert!(
        about_unit(&out).iter().any(|l| l.contains("NoSuchSetting")),
        "an unknown setting went unreported; output:\n{out}"
    );
}

// --- install-user-service.sh --------------------------------------------------------------

/// Runs the installer with `args` and `PATH` = `path_first` before the usual directories,
/// `HOME` and `XDG_DATA_HOME` set to `home` and `data_home` (or unset).
fn installer(home: &Path, data_home: Option<&Path>, path_first: &Path, args: &[&str]) -> Output {
    let script = systemd_dir().join("install-user-service.sh");
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", path_first.display());
    let mut c = Command::new("bash");
    c.arg(&script)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .stdin(Stdio::null());
    if let Some(d) = data_home {
        c.env("XDG_DATA_HOME", d);
    }
    c.output().unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Checks the two installed files under `data_home` for `bindir`.
fn assert_installed(data_home: &Path, bindir: &Path) {
    let unit = data_home.join("systemd/user").join(UNIT);
    let dbus = data_home.join("dbus-1/services").join(DBUS_FILE);
    let exe = format!("{}/tgsecretd", bindir.display());
    for f in [&unit, &dbus] {
        let text = read(f);
        assert!(!text.contains("@BINDIR@"), "{}: @BINDIR@ left", f.display());
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}: mode {mode:o}", f.display());
    }
    let unit_text = read(&unit);
    let dbus_text = read(&dbus);
    assert_eq!(value(&unit_text, "ExecStart"), exe);
    assert_eq!(value(&dbus_text, "Exec"), exe);
    // Everything else is the template's, unchanged.
    let template = read(&systemd_dir().join(UNIT));
    assert_eq!(
        unit_text,
        template.replace("@BINDIR@", &bindir.display().to_string())
    );
}

#[test]
fn installer_writes_substitutes_and_removes_its_files() {
    let tmp = Temp::new("systemd-install");
    let script = systemd_dir().join("install-user-service.sh");
    let mode = std::fs::metadata(&script).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    let bindir = bin_dir();
    let home = tmp.0.join("home");
    let xdg_data = tmp.0.join("xdg-data");
    let nowhere = tmp.0.join("nowhere");

    // --dest-root: the files go under DIR, nowhere else ($HOME and $XDG_DATA_HOME untouched).
    let root = tmp.0.join("root");
    let bindir_arg = bindir.to_str().unwrap();
    let dest_arg = root.to_str().unwrap();
    let o = installer(
        &home,
        Some(&xdg_data),
        &nowhere,
        &[
            "--bindir",
            bindir_arg,
            "--dest-root",
            dest_arg,
            "--no-reload",
        ],
    );
    assert!(o.status.success(), "install --dest-root: {}", show(&o));
    assert_installed(&root, &bindir);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&root.join("systemd/user").join(UNIT).display().to_string()),
        "the installer does not say where the unit went:\n{stdout}"
    );
    assert!(
        !home.exists() && !xdg_data.exists(),
        "wrote outside --dest-root"
    );

    let o = installer(
        &home,
        Some(&xdg_data),
        &nowhere,
        &["--dest-root", dest_arg, "--uninstall"],
    );
    assert!(o.status.success(), "uninstall --dest-root: {}", show(&o));
    assert!(!root.join("systemd/user").join(UNIT).exists());
    assert!(!root.join("dbus-1/services").join(DBUS_FILE).exists());

    // The default @BINDIR@ is where `tgsecretd` is found on PATH.
    let o = installer(&home, None, &bindir, &["--dest-root", dest_arg]);
    assert!(o.status.success(), "install from PATH: {}", show(&o));
    assert_installed(&root, &bindir);

    // Without --dest-root: ${XDG_DATA_HOME:-~/.local/share}. --no-reload keeps a real user
    // manager out of this.
    let o = installer(
        &home,
        None,
        &nowhere,
        &["--bindir", bindir_arg, "--no-reload"],
    );
    assert!(o.status.success(), "install to HOME: {}", show(&o));
    let local_share = home.join(".local/share");
    assert_installed(&local_share, &bindir);
    let stdout = String::from_utf8_lossy(&o.stdout);
    for next in [
        "systemctl --user enable --now tgsecretd",
        "journalctl --user -u tgsecretd",
    ] {
        assert!(stdout.contains(next), "no hint {next:?}:\n{stdout}");
    }
    let o = installer(
        &home,
        Some(&xdg_data),
        &nowhere,
        &["--bindir", bindir_arg, "--no-reload"],
    );
    assert!(o.status.success(), "install to XDG_DATA_HOME: {}", show(&o));
    assert_installed(&xdg_data, &bindir);
    for (data_home, env) in [(&local_share, None), (&xdg_data, Some(xdg_data.as_path()))] {
        let o = installer(&home, env, &nowhere, &["--uninstall", "--no-reload"]);
        assert!(o.status.success(), "uninstall: {}", show(&o));
        assert!(!data_home.join("systemd/user").join(UNIT).exists());
        assert!(!data_home.join("dbus-1/services").join(DBUS_FILE).exists());
    }

    // Refused: no binary to point at, a path systemd would read differently, a relative
    // installed location, an unknown option. Nothing is written then.
    let empty = tmp.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let spaced = tmp.0.join("with space");
    std::fs::create_dir_all(&spaced).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_tgsecretd"), spaced.join("tgsecretd")).unwrap();
    let refused = tmp.0.join("refused");
    let refused_arg = refused.to_str().unwrap();
    for args in [
        vec!["--dest-root", refused_arg],
        vec!["--bindir", empty.to_str().unwrap(), "--no-reload"],
        vec![
            "--bindir",
            spaced.to_str().unwrap(),
            "--dest-root",
            refused_arg,
        ],
        vec!["--bindir", "relative/bin", "--dest-root", refused_arg],
        vec!["--frobnicate"],
    ] {
        let o = installer(&home, Some(&xdg_data), &nowhere, &args);
        assert!(!o.status.success(), "{args:?} succeeded: {}", show(&o));
        assert!(!o.stderr.is_empty(), "{args:?}: no reason given");
    }
    assert!(
        !refused.exists(),
        "a refused run wrote {}",
        refused.display()
    );
    assert!(!xdg_data.join("systemd/user").join(UNIT).exists());
}

// --- the notification protocol, for real ------------------------------------------------------

/// The daemon process; killed on drop (a failed assertion must not leave it running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What arrived on the notification socket, in order.
struct Notifications {
    socket: UnixDatagram,
    got: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notifications {
            socket,
            got: Vec::new(),
        }
    }

    /// Reads what is queued, waiting up to 100 ms for the first datagram.
    fn poll(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.got
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            self.socket.set_nonblocking(true).unwrap();
        }
        self.socket.set_nonblocking(false).unwrap();
    }

    /// Reads until `done` says so; false after `secs`, or when `child` exits first.
    fn until(
        &mut self,
        child: &mut Child,
        secs: u64,
        mut done: impl FnMut(&[String]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.poll();
            if done(&self.got) {
                return true;
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
        }
    }
}

/// Whether a datagram has the line `line` (datagrams are newline-separated assignments).
fn has(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}

fn count(got: &[String], line: &str) -> usize {
    got.iter().filter(|d| has(d, line)).count()
}

/// Whether `pid` has a handler for SIGTERM (SigCgt in /proc/PID/status).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

/// The end of the daemon's log, for failure messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Whether io.github.tgsecretd has an owner on the bus at `address`.
fn bus_name_owned(address: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .unwrap();
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
        dbus.name_has_owner(ipc_proto::BUS_NAME.try_into().unwrap())
            .await
            .unwrap()
    })
}

/// The environment systemd gives the unit's process (a clean one), with the unit's
/// directories, a 200 ms watchdog and the bus, and no arguments: as `ExecStart=` runs it.
#[test]
fn the_daemon_notifies_ready_watchdog_and_stopping_as_a_notify_unit() {
    let tmp = Temp::new("systemd-notify");
    let bus = Bus::start();
    let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[]);
    // $CONFIGURATION_DIRECTORY/config.toml, as ConfigurationDirectory=tgsecretd provides.
    let conf = tmp.0.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let key = sim.key_file(ALICE, &conf);
    std::fs::write(
        conf.join("config.toml"),
        format!(
            "server = \"{}\"\nauth_key_file = \"{}\"\napi_id = 1\napi_hash = \"x\"\n\
             call_timeout = 5\nlog = \"debug\"\n",
            sim.addr,
            key.display()
        ),
    )
    .unwrap();
    // StateDirectory=: not created here, the daemon must make it (0700) and use it.
    let state = tmp.0.join("state");
    let xdg_state = tmp.0.join("xdg-state");
    let notify_path = tmp.0.join("notify");
    let mut notes = Notifications::bind(&notify_path);
    let log = tmp.0.join("tgsecretd.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tgsecretd"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", tmp.0.join("home"))
        .env("XDG_STATE_HOME", &xdg_state)
        .env("XDG_CONFIG_HOME", tmp.0.join("xdg-config"))
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env("STATE_DIRECTORY", &state)
        .env("CONFIGURATION_DIRECTORY", &conf)
        .env("NOTIFY_SOCKET", &notify_path)
        // WatchdogSec=200ms; WATCHDOG_PID unset (the daemon then takes the watchdog as its
        // own, as with WATCHDOG_PID = its pid).
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Running(child);
    let pid = daemon.0.id();

    // READY=1 with a STATUS= line, once the daemon owns its name on the bus.
    let ready = notes.until(&mut daemon.0, 60, |got| count(got, "READY=1") > 0);
    assert!(
        ready,
        "no READY=1 within 60 s; got {:?}\nlog:\n{}",
        notes.got,
        log_tail(&log)
    );
    let at_ready = notes.got.iter().position(|d| has(d, "READY=1")).unwrap();
    let ready_msg = &notes.got[at_ready];
    assert!(
        ready_msg
            .lines()
            .any(|l| l.strip_prefix("STATUS=").is_some_and(|s| !s.is_empty())),
        "READY=1 without a STATUS= line: {ready_msg:?}"
    );
    assert!(
        bus_name_owned(&bus.address),
        "READY=1 came before {} was owned on the bus",
        ipc_proto::BUS_NAME
    );

    // The store lives in $STATE_DIRECTORY (not $XDG_STATE_HOME), user-only.
    let store = state.join("store");
    assert!(
        store.is_dir(),
        "no store in STATE_DIRECTORY {}",
        state.display()
    );
    let entries = std::fs::read_dir(&store).unwrap().count();
    assert!(entries > 0, "the store in {} is empty", store.display());
    for d in [&state, &store] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", d.display());
    }
    assert!(!xdg_state.exists(), "the daemon used XDG_STATE_HOME");

    // WATCHDOG=1 every WATCHDOG_USEC/2 = 100 ms: two arrive well within a second; the limit
    // is generous for a loaded machine.
    let pinged = notes.until(&mut daemon.0, 30, |got| {
        count(&got[at_ready + 1..], "WATCHDOG=1") >= 2
    });
    assert!(
        pinged,
        "fewer than 2 WATCHDOG=1 after READY=1: {:?}\nlog:\n{}",
        notes.got,
        log_tail(&log)
    );

    // SIGTERM (systemctl stop), once the daemon handles it: STOPPING=1, then no WATCHDOG=1,
    // and exit 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !catches_sigterm(pid) {
        assert!(
            Instant::now() < deadline,
            "no SIGTERM handler after 30 s\nlog:\n{}",
            log_tail(&log)
        );
        notes.poll();
    }
    let before_term = notes.got.len();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&daemon.0),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        notes.poll();
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 60 s after SIGTERM\nlog:\n{}",
            log_tail(&log)
        );
    };
    notes.poll(); // what was sent just before the exit
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\nlog:\n{}",
        log_tail(&log)
    );
    let after = &notes.got[before_term..];
    let stopping = after.iter().position(|d| has(d, "STOPPING=1"));
    let Some(stopping) = stopping else {
        panic!("no STOPPING=1 after SIGTERM: {after:?}");
    };
    assert!(
        after[stopping].lines().any(|l| l.starts_with("STATUS=")),
        "STOPPING=1 without STATUS=: {:?}",
        after[stopping]
    );
    assert_eq!(
        count(&after[stopping + 1..], "WATCHDOG=1"),
        0,
        "WATCHDOG=1 after STOPPING=1: {after:?}"
    );
    assert_eq!(count(&notes.got, "READY=1"), 1, "READY=1 more than once");
    assert_eq!(
        count(&notes.got, "STOPPING=1"),
        1,
        "STOPPING=1 more than once"
    );
    assert!(store.is_dir(), "the store went away on stop");
}

// --- D-Bus activation ---------------------------------------------------------------------

/// A peer that accepts and acknowledges.
const BOB: i64 = 8902;

/// A private bus of the session type whose only service directory is `services`, listening on
/// `DIR/bus`. It runs with a clean environment plus `env`, which is what it passes on to a
/// service it activates; its stderr, which an activated service inherits, goes to `log`.
struct ActivatingBus {
    child: Child,
    address: String,
}

impl ActivatingBus {
    fn start(dir: &Path, services: &Path, env: &[(&str, PathBuf)], log: &Path) -> ActivatingBus {
        let socket = dir.join("bus");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display(),
                services.display()
            ),
        )
        .unwrap();
        let mut c = Command::new("dbus-daemon");
        c.arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .spawn()
            .expect("dbus-daemon (apt package dbus-daemon) is needed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the bus did not listen in 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        ActivatingBus {
            child,
            address: format!("unix:path={}", socket.display()),
        }
    }
}

impl Drop for ActivatingBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of io.github.tgsecretd's owner, if it has one.
async fn owner_pid(conn: &zbus::Connection) -> Option<u32> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.unwrap();
    dbus.get_connection_unix_process_id(ipc_proto::BUS_NAME.try_into().unwrap())
        .await
        .ok()
}

/// SIGTERM to the activated daemon (a child of the bus, not of the test); waits until it has
/// left the bus and then until the process is gone (it closes its store after it gives up its
/// name: a daemon activated before that could find the store still locked).
async fn stop_activated(conn: &zbus::Connection, pid: u32, log: &Path) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while owner_pid(conn).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "still on the bus 60 s after SIGTERM\nlog:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
            st.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    while !gone() {
        assert!(
            Instant::now() < deadline,
            "still running 60 s after SIGTERM\nlog:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A call by hand (busctl, else gdbus) to the manager on the bus at `address`, which may
/// activate the daemon; its standard output. `None` when neither tool is there (outside CI).
fn call_by_hand(address: &str, tool: &str, method: &str) -> Option<String> {
    let mut c = match tool {
        "busctl" => {
            let mut c = Command::new("busctl");
            c.arg(format!("--address={address}")).args([
                "call",
                ipc_proto::BUS_NAME,
                ipc_proto::MANAGER_PATH,
                "io.github.tgsecretd.Manager1",
                method,
            ]);
            c
        }
        _ => {
            let mut c = Command::new("gdbus");
            c.args([
                "call",
                "--address",
                address,
                "--dest",
                ipc_proto::BUS_NAME,
                "--object-path",
                ipc_proto::MANAGER_PATH,
                "--method",
                &format!("io.github.tgsecretd.Manager1.{method}"),
            ]);
            c
        }
    };
    let probe = match tool {
        "busctl" => have("busctl", Command::new("busctl").arg("--version"), "systemd"),
        _ => have("gdbus", Command::new("gdbus").arg("help"), "libglib2.0-bin"),
    };
    if !probe {
        return None;
    }
    let o = c.env_remove("DBUS_SESSION_BUS_ADDRESS").output().unwrap();
    assert!(o.status.success(), "{tool} {method}: {}", show(&o));
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// D-Bus activation as a bus without systemd does it, through the file the installer wrote
/// (`Exec=`): a private session-type bus whose only service directory is the installed one;
/// the daemon's settings only in `$XDG_CONFIG_HOME/tgsecretd/config.toml`, its state in the
/// XDG default. busctl's call to the name, with nothing running, starts the daemon and is
/// answered; the daemon is the installed binary, signs in, and a chat it opens sends a service
/// message. After a SIGTERM, gdbus's call starts it again on the same store: the chat is
/// still there and ready. The bus logs one activation for each.
#[test]
fn a_call_to_the_name_starts_the_daemon_through_the_installed_activation_file() {
    let tmp = Temp::new("systemd-activation");
    let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
    let key = sim.key_file(ALICE, &tmp.0);
    let root = tmp.0.join("root");
    let o = installer(
        &tmp.0.join("home"),
        None,
        &tmp.0.join("nowhere"),
        &[
            "--bindir",
            bin_dir().to_str().unwrap(),
            "--dest-root",
            root.to_str().unwrap(),
            "--no-reload",
        ],
    );
    assert!(o.status.success(), "install: {}", show(&o));
    let xdg_config = tmp.0.join("xdg-config");
    std::fs::create_dir_all(xdg_config.join("tgsecretd")).unwrap();
    std::fs::write(
        xdg_config.join("tgsecretd/config.toml"),
        format!(
            "server = \"{}\"\nauth_key_file = \"{}\"\napi_id = 1\napi_hash = \"x\"\n\
             accept = \"always\"\ncall_timeout = 5\nlog = \"debug\"\n",
            sim.addr,
            key.display()
        ),
    )
    .unwrap();
    let xdg_state = tmp.0.join("xdg-state");
    let log = tmp.0.join("bus.log");
    let bus = ActivatingBus::start(
        &tmp.0,
        &root.join("dbus-1/services"),
        &[
            ("HOME", tmp.0.join("home")),
            ("XDG_CONFIG_HOME", xdg_config),
            ("XDG_STATE_HOME", xdg_state.clone()),
        ],
        &log,
    );
    let rt = support::runtime();
    let client = rt.block_on(support::Client::connect(&bus.address));
    let conn = client.conn.clone();
    assert_eq!(
        rt.block_on(owner_pid(&conn)),
        None,
        "running before any call"
    );

    // busctl starts it (zbus's proxies when busctl is not there: they auto-start too).
    match call_by_hand(&bus.address, "busctl", "GetStatus") {
        Some(out) => assert!(
            out.starts_with("a{sv} ") && out.contains("\"version\" s "),
            "GetStatus by busctl: {out}"
        ),
        None => {
            rt.block_on(async { client.manager().await.get_status().await.unwrap() });
        }
    }
    let first = rt
        .block_on(owner_pid(&conn))
        .expect("nobody owns the name after the call");
    let exe = std::fs::read_link(format!("/proc/{first}/exe")).unwrap();
    assert_eq!(
        exe.canonicalize().unwrap(),
        Path::new(env!("CARGO_BIN_EXE_tgsecretd"))
            .canonicalize()
            .unwrap(),
        "the name's owner is not the installed daemon"
    );
    let chat = rt.block_on(async {
        client.wait_ready(60).await;
        let responses = client.responses().await;
        let m = client.manager().await;
        let chat = m
            .request_chat(BOB, std::collections::HashMap::new())
            .await
            .unwrap();
        client.wait_state(chat, "ready", 60).await;
        let h = m
            .send_encrypted_service(
                chat,
                &support::ttl_message(0, 42),
                support::send_options("act1", 0x5eed),
            )
            .await
            .unwrap();
        let (_, code, _) = responses.one(h.as_str(), 60).await;
        assert_eq!(code, ipc_proto::response::SENT, "log:\n{}", log_tail(&log));
        stop_activated(&conn, first, &log).await;
        chat
    });
    let ttls: Vec<i64> = sim.ttls(BOB, chat);
    assert_eq!(ttls, [42], "Bob's transcript");
    let store = xdg_state.join("tgsecretd/store");
    assert!(store.is_dir(), "no store in {}", store.display());

    // gdbus starts it again, on the same store.
    let listed = match call_by_hand(&bus.address, "gdbus", "ListChats") {
        Some(out) => out,
        None => format!(
            "{:?}",
            rt.block_on(async { client.manager().await.list_chats().await.unwrap() })
        ),
    };
    assert!(
        listed.contains(&chat.to_string()) && listed.contains("ready"),
        "ListChats after the second activation: {listed}"
    );
    let second = rt.block_on(owner_pid(&conn)).expect("nobody owns the name");
    assert_ne!(first, second, "the same process answered after its SIGTERM");
    rt.block_on(stop_activated(&conn, second, &log));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("Successfully activated service 'io.github.tgsecretd'")
            .count(),
        2,
        "log:\n{}",
        log_tail(&log)
    );
    assert_eq!(
        text.matches("SIGTERM: stopping").count(),
        2,
        "log:\n{}",
        log_tail(&log)
    );
    assert!(!text.contains("panicked"), "log:\n{}", log_tail(&log));
}

/// When its bus goes away (the session ended), the daemon stops as after a SIGTERM: exit 0 (so
/// `Restart=on-failure` does not start it again into a session that is gone), the store
/// closed and unlocked. A daemon on the next session's bus opens the same store: the chat is
/// still there and ready, and sends. Before, the daemon went on without a bus, holding the
/// store's lock, and the next session's daemon could not start (`Locked`).
#[test]
fn the_daemon_stops_when_its_bus_goes_away_and_leaves_the_store_to_the_next() {
    let rt = support::runtime();
    let tmp = Temp::new("systemd-bus-gone");
    let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
    let key = sim.key_file(ALICE, &tmp.0);
    let state = tmp.0.join("d");
    let bus = Bus::start();
    let mut d = support::Daemon::start(&state, &bus.address, &sim, &key, "always");
    let chat = rt.block_on(async {
        let client = support::Client::connect(&bus.address).await;
        client.wait_ready(60).await;
        let chat = client
            .manager()
            .await
            .request_chat(BOB, std::collections::HashMap::new())
            .await
            .unwrap();
        client.wait_state(chat, "ready", 60).await;
        chat
    });
    drop(bus); // kills the dbus-daemon
    let status = d.exit_within(30);
    assert!(
        status.is_some_and(|s| s.success()),
        "after its bus went away: {status:?}\nlog:\n{}",
        log_tail(&d.log)
    );
    let text = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        text.contains("the bus went away: stopping"),
        "log:\n{}",
        log_tail(&d.log)
    );

    let bus = Bus::start();
    let mut d = support::Daemon::start(&state, &bus.address, &sim, &key, "always");
    rt.block_on(async {
        let client = support::Client::connect(&bus.address).await;
        client.wait_ready(60).await;
        assert_eq!(client.chat_state(chat).await.as_deref(), Some("ready"));
        let responses = client.responses().await;
        let h = client
            .manager()
            .await
            .send_encrypted_service(
                chat,
                &support::ttl_message(0, 7),
                support::send_options("gone1", 0x60e),
            )
            .await
            .unwrap();
        let (_, code, _) = responses.one(h.as_str(), 60).await;
        assert_eq!(code, ipc_proto::response::SENT);
    });
    let ttls: Vec<i64> = sim.ttls(BOB, chat);
    assert_eq!(ttls, [7], "Bob's transcript");
    assert!(d.terminate().is_some_and(|s| s.success()));
}
