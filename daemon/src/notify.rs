//! The systemd notification protocol (`sd_notify(3)`), hand-rolled on a Unix datagram socket,
//! and the directories systemd hands over ([`first_directory`]).
//!
//! Under a `Type=notify` unit systemd sets `NOTIFY_SOCKET` (a path, or an abstract socket name
//! written with a leading `@`) and waits for `READY=1`; with `WatchdogSec=` it also sets
//! `WATCHDOG_USEC` (and `WATCHDOG_PID`) and restarts the service when no `WATCHDOG=1` arrives
//! in time. Without `NOTIFY_SOCKET` every call here does nothing.
//!
//! Nothing here fails the daemon: a message that cannot be sent is logged at debug level and
//! dropped (systemd's own `sd_notify` is best-effort too). The environment is read, never
//! changed: the only children are the short-lived `lsb_release` / `getconf` that grammers'
//! `os_info` runs per connection; they inherit `NOTIFY_SOCKET`, harmless under
//! `NotifyAccess=main` (systemd ignores messages from other processes).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long one datagram may block before it is given up (systemd reads its socket at once;
/// this only bounds a stuck manager).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A handle on the notification socket named by `NOTIFY_SOCKET` (or on nothing).
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; a no-op notifier when it is unset, empty or unusable (the last
    /// is logged).
    pub fn from_env() -> Notifier {
        let value = std::env::var_os("NOTIFY_SOCKET");
        match Notifier::from_value(value.as_deref()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET {value:?}: {e}; not notifying systemd");
                Notifier::disabled()
            }
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// From the value of `NOTIFY_SOCKET`: `None` or empty is a no-op notifier; `/path` a
    /// socket in the file system; `@name` an abstract socket (Linux).
    pub fn from_value(value: Option<&OsStr>) -> io::Result<Notifier> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(Notifier::disabled());
        };
        let addr = socket_addr(value)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier {
            target: Some(Arc::new(Target { socket, addr })),
        })
    }

    /// Whether messages go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) as one datagram. `Ok` without a
    /// socket.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        let n = t.socket.send_to_addr(state.as_bytes(), &t.addr)?;
        if n == state.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"))
        }
    }

    /// [`Notifier::send`], with a failure logged instead of returned.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::debug!("sd_notify {state:?}: {e}");
        }
    }

    /// `READY=1` with a `STATUS=` line: startup is complete.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a `STATUS=` line: shutdown has begun.
    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// A `STATUS=` line alone.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// Starts the watchdog pings on the current tokio runtime when systemd asks for them
    /// ([`watchdog_interval_from_env`]) and a socket is set; `None` otherwise.
    pub fn spawn_watchdog(&self) -> Option<Watchdog> {
        if !self.enabled() {
            return None;
        }
        let every = watchdog_interval_from_env()?;
        Some(self.spawn_watchdog_every(every))
    }

    /// Pings `WATCHDOG=1` every `every` (the first at once) until stopped.
    pub fn spawn_watchdog_every(&self, every: Duration) -> Watchdog {
        let n = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                n.watchdog();
            }
        });
        Watchdog { task }
    }
}

/// The running watchdog task; [`Watchdog::stop`] ends it (dropping it does not).
#[derive(Debug)]
pub struct Watchdog {
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    /// Stops the pings; no `WATCHDOG=1` is sent after this returns.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The address `NOTIFY_SOCKET` names.
fn socket_addr(value: &OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(Path::new(value)),
        Some(b'@') => abstract_addr(bytes.get(1..).unwrap_or_default()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an @abstract name",
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// A `STATUS=` value on one line (a newline would start another assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The watchdog ping interval from `WATCHDOG_USEC` and `WATCHDOG_PID`, as
/// [`watchdog_interval`] computes it for this process.
pub fn watchdog_interval_from_env() -> Option<Duration> {
    watchdog_interval(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// Half the watchdog timeout `usec` (systemd's advice: ping at half the timeout), when it is a
/// positive number of microseconds and `pid` is unset or `our_pid`; `None` otherwise (no
/// watchdog, or it is meant for another process).
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The first of the `:`-separated paths in an environment variable systemd sets for
/// `StateDirectory=` / `ConfigurationDirectory=` (`STATE_DIRECTORY`,
/// `CONFIGURATION_DIRECTORY`); `None` when unset or empty.
pub fn first_directory(value: Option<OsString>) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let value = value?;
    let first = value.as_bytes().split(|b| *b == b':').next()?;
    if first.is_empty() {
        return None;
    }
    Some(std::path::PathBuf::from(OsStr::from_bytes(first)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn bound() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let s = UnixDatagram::bind(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, path, s)
    }

    #[test]
    fn no_socket_is_a_no_op() {
        for v in [None, Some(OsStr::new(""))] {
            let n = Notifier::from_value(v).unwrap();
            assert!(!n.enabled());
            n.send("READY=1").unwrap();
            n.ready("x");
            n.stopping("x");
            n.watchdog();
        }
    }

    #[test]
    fn bad_values_are_errors() {
        for v in ["relative/path", "x", "vsock:2:1"] {
            assert!(Notifier::from_value(Some(OsStr::new(v))).is_err(), "{v}");
        }
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let (_dir, path, s) = bound();
        let n = Notifier::from_value(Some(path.as_os_str())).unwrap();
        assert!(n.enabled());
        n.ready("serving\nio.github.tgsecretd");
        assert_eq!(recv(&s), "READY=1\nSTATUS=serving io.github.tgsecretd");
        n.watchdog();
        assert_eq!(recv(&s), "WATCHDOG=1");
        n.status("busy");
        assert_eq!(recv(&s), "STATUS=busy");
        n.stopping("stopping");
        assert_eq!(recv(&s), "STOPPING=1\nSTATUS=stopping");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tgsecretd-notify-test-{}", std::process::id());
        let s = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_value(Some(OsStr::new(&format!("@{name}")))).unwrap();
        n.send("READY=1").unwrap();
        assert_eq!(recv(&s), "READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::from_value(Some(dir.path().join("absent").as_os_str())).unwrap();
        assert!(n.send("READY=1").is_err());
        n.ready("nobody listens"); // logged, not returned
    }

    #[test]
    fn watchdog_interval_rules() {
        let us = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_interval(us("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(us("200000"), us("7"), 7),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            watchdog_interval(us("200000"), us(""), 7),
            Some(Duration::from_millis(100))
        );
        assert_eq!(watchdog_interval(us("200000"), us("8"), 7), None);
        assert_eq!(watchdog_interval(us("200000"), us("x"), 7), None);
        assert_eq!(watchdog_interval(None, us("7"), 7), None);
        assert_eq!(watchdog_interval(us("0"), None, 7), None);
        assert_eq!(watchdog_interval(us("-5"), None, 7), None);
        assert_eq!(watchdog_interval(us("soon"), None, 7), None);
        assert_eq!(
            watchdog_interval(us("1"), None, 7),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn watchdog_task_pings_until_stopped() {
        let (_dir, path, s) = bound();
        let n = Notifier::from_value(Some(path.as_os_str())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let w = n.spawn_watchdog_every(Duration::from_millis(10));
            tokio::time::sleep(Duration::from_millis(100)).await;
            w.stop().await;
        });
        let mut pings = 0;
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while let Ok(k) = s.recv(&mut buf) {
            assert_eq!(&buf[..k], b"WATCHDOG=1");
            pings += 1;
        }
        assert!(pings >= 3, "{pings} pings in 100 ms at 10 ms");
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.recv(&mut buf).is_err(), "a ping after stop");
    }

    #[test]
    fn first_directory_rules() {
        let v = |s: &str| Some(OsString::from(s));
        assert_eq!(
            first_directory(v("/a/b:/c")),
            Some(std::path::PathBuf::from("/a/b"))
        );
        assert_eq!(
            first_directory(v("/a")),
            Some(std::path::PathBuf::from("/a"))
        );
        assert_eq!(first_directory(v("")), None);
        assert_eq!(first_directory(v(":/c")), None);
        assert_eq!(first_directory(None), None);
    }
}
