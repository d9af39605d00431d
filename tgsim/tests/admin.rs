//! The `tgsim` binary with its admin socket: accounts and keys provisioned through
//! [`AdminClient`], a real MTProto client (grammers-mtsender) connecting with them, and the state
//! surviving `kill -9`. Only 127.0.0.1 and temp dirs; every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grammers_mtproto::mtp::Encrypted;
use grammers_mtproto::transport::Full;
use grammers_mtsender::{InvocationError, Sender, ServerAddr, connect_with_auth};
use grammers_tl_types as tl;
use tgsim::admin::{AdminClient, AdminError, ProvisionedKey};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
const ALICE: i64 = 1001;
const BOB: i64 = 1002;

/// A running `tgsim`, killed when dropped.
struct Tgsim {
    child: Child,
    addr: SocketAddr,
    admin: PathBuf,
}

impl Drop for Tgsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tgsim {
    fn start(dir: &Path, extra: &[&str]) -> Tgsim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tgsim"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
                "--state-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        let addr: SocketAddr = rx.recv_timeout(WAIT).unwrap().parse().unwrap();
        let admin = PathBuf::from(rx.recv_timeout(WAIT).unwrap());
        assert!(addr.ip().is_loopback());
        Tgsim { child, addr, admin }
    }

    fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.admin).unwrap()
    }

    /// Kills the process with SIGKILL.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for the process to exit on its own.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < WAIT, "tgsim did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tgsim-admin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn invoke<R: tl::RemoteCall>(
    sender: &mut Sender<Full, Encrypted>,
    request: &R,
) -> Result<R::Return, InvocationError> {
    tokio::time::timeout(WAIT, sender.invoke(request))
        .await
        .expect("no answer in time")
}

/// A grammers sender connected to `addr` with the auth key `key`.
async fn connect(addr: SocketAddr, key: [u8; 256]) -> Sender<Full, Encrypted> {
    tokio::time::timeout(
        WAIT,
        connect_with_auth(Full::new(), ServerAddr::Tcp { address: addr }, key),
    )
    .await
    .unwrap()
    .unwrap()
}

/// What grammers sends first on a new connection.
fn init_get_config()
-> tl::functions::InvokeWithLayer<tl::functions::InitConnection<tl::functions::help::GetConfig>> {
    tl::functions::InvokeWithLayer {
        layer: tl::LAYER,
        query: tl::functions::InitConnection {
            api_id: 12345,
            device_model: "test".into(),
            system_version: "linux".into(),
            app_version: "0.1".into(),
            system_lang_code: "en".into(),
            lang_pack: "".into(),
            lang_code: "en".into(),
            proxy: None,
            params: None,
            query: tl::functions::help::GetConfig {},
        },
    }
}

/// Connects with a provisioned key, calls `help.getConfig` and `updates.getState`, and returns
/// the account's qts.
fn connect_and_get_state(addr: SocketAddr, key: &ProvisionedKey) -> i32 {
    let key = key.key_bytes().unwrap();
    runtime().block_on(async {
        let mut sender = connect(addr, key).await;
        let tl::enums::Config::Config(config) =
            invoke(&mut sender, &init_get_config()).await.unwrap();
        assert_eq!(config.this_dc, 2);
        let tl::enums::Config::Config(config) =
            invoke(&mut sender, &tl::functions::help::GetConfig {})
                .await
                .unwrap();
        let tl::enums::DcOption::Option(opt) = &config.dc_options[0];
        assert_eq!(opt.port, i32::from(addr.port()));
        let tl::enums::updates::State::State(state) =
            invoke(&mut sender, &tl::functions::updates::GetState {})
                .await
                .unwrap();
        state.qts
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn accounts_and_keys_from_the_admin_socket_survive_kill_9() {
    let dir = temp_dir("restart");
    let tgsim = Tgsim::start(&dir, &[]);
    assert_eq!(tgsim.admin, dir.join("admin.sock"));
    assert_eq!(mode(&tgsim.admin), 0o600);
    let mut admin = tgsim.admin();

    let alice = admin.add_account(ALICE, "+1 555 0001", "Alice").unwrap();
    let bob = admin.add_account(BOB, "15550002", "Bob").unwrap();
    assert_eq!((alice.account, bob.account), (ALICE, BOB));
    assert_eq!(alice.key_bytes().unwrap().len(), 256);
    assert_ne!(alice.auth_key, bob.auth_key);
    assert_eq!(mode(&dir.join("keys")), 0o600);
    // Taken ids and phones are refused.
    assert!(matches!(
        admin.add_account(ALICE, "15550009", "Again"),
        Err(AdminError::Server(_))
    ));
    assert!(matches!(
        admin.add_account(1003, "15550001", "Same phone"),
        Err(AdminError::Server(_))
    ));

    let accounts = admin.accounts().unwrap();
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0].user_id, ALICE);
    assert_eq!(accounts[0].phone, "15550001");
    assert_eq!(accounts[0].first_name, "Alice");
    assert_eq!(accounts[0].auth_key_ids, vec![alice.auth_key_id]);
    assert_eq!(accounts[1].auth_key_ids, vec![bob.auth_key_id]);

    assert_eq!(connect_and_get_state(tgsim.addr, &alice), 1);
    assert_eq!(connect_and_get_state(tgsim.addr, &bob), 1);

    assert!(admin.relayed(None).unwrap().is_empty());
    assert!(admin.relayed(Some(5)).unwrap().is_empty());
    let state = admin.state(ALICE).unwrap();
    assert_eq!((state.account, state.qts, state.queued), (ALICE, 1, 0));
    // Started with port 0: `state` tells the port the system chose (the one the binary printed,
    // which grammers just connected to).
    assert_eq!(state.listen, tgsim.addr);
    assert_ne!(state.listen.port(), 0);
    assert_eq!(
        admin
            .call("state", serde_json::json!({"account": ALICE}))
            .unwrap()["listen"],
        tgsim.addr.to_string()
    );
    assert!(matches!(admin.state(4242), Err(AdminError::Server(_))));
    admin.block(ALICE, BOB).unwrap();
    assert!(matches!(
        admin.block(ALICE, 4242),
        Err(AdminError::Server(_))
    ));

    // kill -9, then the same state dir: accounts, blocks and keys are still there.
    drop(admin);
    tgsim.kill9();
    let mut tgsim = Tgsim::start(&dir, &[]);
    let mut admin = tgsim.admin();
    assert_eq!(admin.accounts().unwrap(), accounts);
    assert_eq!(admin.state(BOB).unwrap().listen, tgsim.addr);
    assert_eq!(connect_and_get_state(tgsim.addr, &alice), 1);
    assert_eq!(connect_and_get_state(tgsim.addr, &bob), 1);
    admin.unblock(ALICE, BOB).unwrap();

    // shutdown answers, then the process exits cleanly and removes its socket.
    admin.shutdown().unwrap();
    assert!(tgsim.wait_exit().success());
    assert!(!tgsim.admin.exists());
    assert!(dir.join("world.bin").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_admin_lines_get_errors_and_the_server_keeps_running() {
    let dir = temp_dir("malformed");
    let socket = dir.join("custom-admin.sock");
    let mut tgsim = Tgsim::start(
        &dir,
        &[
            "--account",
            "2001:15552001:Carol",
            "--admin-socket",
            socket.to_str().unwrap(),
        ],
    );
    assert_eq!(tgsim.admin, socket);
    let mut admin = tgsim.admin();

    let err = |v: &serde_json::Value| {
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        v["id"].clone()
    };
    assert_eq!(
        err(&admin.raw("not json").unwrap()),
        serde_json::Value::Null
    );
    assert_eq!(
        err(&admin.raw("{\"id\": 1").unwrap()),
        serde_json::Value::Null
    );
    assert_eq!(err(&admin.raw("[1, 2]").unwrap()), serde_json::Value::Null);
    assert_eq!(err(&admin.raw(r#"{"id": 3}"#).unwrap()), 3);
    assert_eq!(err(&admin.raw(r#"{"id": 4, "cmd": 7}"#).unwrap()), 4);
    let unknown = admin.raw(r#"{"id": 5, "cmd": "frobnicate"}"#).unwrap();
    assert_eq!(err(&unknown), 5);
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("unknown command")
    );
    let bad_args = r#"{"id": "six", "cmd": "add_account", "user_id": "x"}"#;
    assert_eq!(err(&admin.raw(bad_args).unwrap()), "six");
    assert_eq!(err(&admin.raw(r#"{"id": 7, "cmd": "state"}"#).unwrap()), 7);
    let neg = r#"{"id": 8, "cmd": "add_account", "user_id": -5, "phone": "1", "first_name": "N"}"#;
    assert_eq!(err(&admin.raw(neg).unwrap()), 8);

    // Same connection, another connection, and the MTProto side: all still work.
    let ok = admin.raw(r#"{"id": 9, "cmd": "accounts"}"#).unwrap();
    assert_eq!(
        (ok["id"].clone(), ok["ok"].clone()),
        (9.into(), true.into())
    );
    assert_eq!(ok["result"][0]["user_id"], 2001);
    let mut other = tgsim.admin();
    let accounts = other.accounts().unwrap();
    assert_eq!(accounts.len(), 1);
    assert!(accounts[0].auth_key_ids.is_empty());
    // An account from --account gets a key through provision_key.
    let carol = other.provision_key(2001).unwrap();
    assert!(matches!(
        other.provision_key(2002),
        Err(AdminError::Server(_))
    ));
    assert_eq!(connect_and_get_state(tgsim.addr, &carol), 1);
    assert!(tgsim.is_running());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn close_connections_drops_the_accounts_live_connections() {
    let dir = temp_dir("close");
    let tg = Tgsim::start(&dir, &[]);
    let mut admin = tg.admin();
    let key = admin.add_account(ALICE, "15550001", "Alice").unwrap();
    admin.add_account(BOB, "15550002", "Bob").unwrap();
    assert_eq!(admin.close_connections(ALICE).unwrap(), 0, "not connected");
    assert!(admin.close_connections(4242).is_err());
    let bytes = key.key_bytes().unwrap();
    let addr = tg.addr;
    runtime().block_on(async {
        let mut sender = connect(addr, bytes).await;
        invoke(&mut sender, &init_get_config()).await.unwrap();
        assert_eq!(admin.close_connections(BOB).unwrap(), 0);
        assert_eq!(admin.close_connections(ALICE).unwrap(), 1);
        let r = invoke(&mut sender, &tl::functions::updates::GetState {}).await;
        assert!(r.is_err(), "the connection was closed: {r:?}");
    });
    // A new connection works.
    assert!(connect_and_get_state(addr, &key) >= 0);
    admin.shutdown().unwrap();
}

#[test]
fn log_out_signs_the_device_out_as_a_terminated_session() {
    let dir = temp_dir("log-out");
    let tg = Tgsim::start(&dir, &[]);
    let mut admin = tg.admin();
    let key = admin.add_account(ALICE, "15550001", "Alice").unwrap();
    let bob = admin.add_account(BOB, "15550002", "Bob").unwrap();
    assert!(admin.log_out(4242).is_err(), "no such account");
    let bytes = key.key_bytes().unwrap();
    let addr = tg.addr;
    runtime().block_on(async {
        let mut sender = connect(addr, bytes).await;
        invoke(&mut sender, &init_get_config()).await.unwrap();
        invoke(&mut sender, &tl::functions::updates::GetState {})
            .await
            .unwrap();
        admin.log_out(ALICE).unwrap();
        match invoke(&mut sender, &tl::functions::updates::GetState {}).await {
            Err(InvocationError::Rpc(e)) => {
                assert_eq!((e.code, e.name.as_str()), (401, "AUTH_KEY_UNREGISTERED"));
            }
            other => panic!("expected 401 AUTH_KEY_UNREGISTERED, got {other:?}"),
        }
    });
    // Another account's device is untouched.
    assert!(connect_and_get_state(addr, &bob) >= 0);
    admin.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
