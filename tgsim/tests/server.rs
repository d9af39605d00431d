//! The TCP server against a real MTProto client nobody here wrote (grammers-mtsender 0.11's
//! `Sender`, connected with a provisioned auth key over the full transport), and against raw
//! sockets sending bad input.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grammers_crypto::DequeBuffer;
use grammers_mtproto::mtp::Encrypted;
use grammers_mtproto::mtp::{Deserialization, Mtp};
use grammers_mtproto::transport::{self, Abridged, Full, Intermediate, Transport};
use grammers_mtsender::{InvocationError, Sender, ServerAddr, connect_with_auth};
use grammers_session::updates::UpdatesLike;
use grammers_tl_types::{self as tl, Deserializable, Serializable};
use secret_core::crypto::AuthKey;
use tgsim::api::{ApiHandler, CallContext, RpcError, UpdateSink};
use tgsim::server::{Server, ServerHandle};
use tgsim::session::{AccountId, AuthKeys, auth_key_id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const ALICE: AccountId = 1001;
const BOB: AccountId = 1002;
/// Every network wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(5);

fn key_bytes(seed: u8) -> [u8; 256] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
}

/// A key seed whose `auth_key_id` grammers' abridged transport can live with.
///
/// grammers 0.11's `Abridged::unpack` reads the first 4 payload bytes of every short-form frame
/// as an `int32` and reports a transport error ("bad status") when it is negative. For an
/// encrypted packet those are the low half of the `auth_key_id`, so with half of all keys the
/// grammers abridged client fails on the first answer, against Telegram as well as here.
fn abridged_safe_seed() -> u8 {
    (3..=u8::MAX)
        .find(|&seed| auth_key_id(&AuthKey::from_array(key_bytes(seed))) as i32 >= 0)
        .unwrap()
}

/// The test model: `updates.getState`, and `messages.getDhConfig` refused with a flood wait.
#[derive(Default)]
struct TestHandler {
    calls: Mutex<Vec<(CallContext, u32)>>,
}

impl ApiHandler for TestHandler {
    fn call(
        &self,
        ctx: &CallContext,
        constructor: u32,
        _query: &[u8],
    ) -> Result<Vec<u8>, RpcError> {
        self.calls.lock().unwrap().push((ctx.clone(), constructor));
        use tl::Identifiable;
        match constructor {
            tl::functions::updates::GetState::CONSTRUCTOR_ID => {
                Ok(tl::enums::updates::State::State(tl::types::updates::State {
                    pts: 1,
                    qts: 0,
                    date: i32::try_from(ctx.now_ms / 1000).unwrap(),
                    seq: 0,
                    unread_count: 0,
                })
                .to_bytes())
            }
            tl::functions::messages::GetDhConfig::CONSTRUCTOR_ID => {
                Err(RpcError::new(420, "FLOOD_WAIT_3"))
            }
            _ => Err(RpcError::new(400, "METHOD_NOT_IN_TEST")),
        }
    }
}

struct Fixture {
    addr: SocketAddr,
    handle: ServerHandle,
    handler: Arc<TestHandler>,
    run: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Fixture {
    // Server and client logs, shown for failing tests.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
    let mut keys = AuthKeys::new();
    keys.insert(AuthKey::from_array(key_bytes(1)), ALICE);
    keys.insert(AuthKey::from_array(key_bytes(2)), BOB);
    keys.insert(AuthKey::from_array(key_bytes(abridged_safe_seed())), ALICE);
    let handler = Arc::new(TestHandler::default());
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), keys, handler.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    let handle = server.handle();
    let run = server.spawn();
    Fixture {
        addr,
        handle,
        handler,
        run,
    }
}

async fn connect(addr: SocketAddr, seed: u8) -> Sender<Full, Encrypted> {
    connect_over(Full::new(), addr, seed).await
}

async fn connect_over<T: Transport>(
    transport: T,
    addr: SocketAddr,
    seed: u8,
) -> Sender<T, Encrypted> {
    timeout(
        WAIT,
        connect_with_auth(
            transport,
            ServerAddr::Tcp { address: addr },
            key_bytes(seed),
        ),
    )
    .await
    .unwrap()
    .unwrap()
}

async fn invoke<T: Transport, R: tl::RemoteCall>(
    sender: &mut Sender<T, Encrypted>,
    request: &R,
) -> Result<R::Return, InvocationError> {
    timeout(WAIT, sender.invoke(request))
        .await
        .expect("no answer in time")
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

fn check_config(config: &tl::enums::Config, addr: SocketAddr) {
    let tl::enums::Config::Config(config) = config;
    assert_eq!(config.this_dc, 2);
    assert_eq!(config.dc_options.len(), 10);
    let mut ids = Vec::new();
    for opt in &config.dc_options {
        let tl::enums::DcOption::Option(opt) = opt;
        assert_eq!(opt.ip_address, addr.ip().to_string());
        assert_eq!(opt.port, i32::from(addr.port()));
        assert!(!opt.media_only && !opt.cdn && !opt.ipv6);
        // grammers panics on an address it cannot parse.
        assert!(opt.ip_address.parse::<std::net::IpAddr>().is_ok());
        ids.push((opt.id, opt.r#static));
    }
    ids.sort_unstable();
    let expected: Vec<(i32, bool)> = (1..=5).flat_map(|id| [(id, false), (id, true)]).collect();
    assert_eq!(ids, expected);
}

fn typing_update(user_id: i64) -> Vec<u8> {
    tl::enums::Updates::UpdateShort(tl::types::UpdateShort {
        update: tl::enums::Update::UserTyping(tl::types::UpdateUserTyping {
            user_id,
            top_msg_id: None,
            action: tl::enums::SendMessageAction::SendMessageTypingAction,
        }),
        date: 1_700_000_000,
    })
    .to_bytes()
}

/// Steps the sender until it delivers updates.
async fn next_updates(sender: &mut Sender<Full, Encrypted>) -> Vec<UpdatesLike> {
    timeout(WAIT, async {
        loop {
            let updates = sender.step().await.unwrap();
            if !updates.is_empty() {
                return updates;
            }
        }
    })
    .await
    .expect("no update in time")
}

fn is_typing_from(updates: &[UpdatesLike], user: i64) -> bool {
    updates.iter().any(|u| {
        matches!(
            u,
            UpdatesLike::Updates(tl::enums::Updates::UpdateShort(s))
                if matches!(&s.update, tl::enums::Update::UserTyping(t) if t.user_id == user)
        )
    })
}

#[tokio::test]
async fn grammers_client_calls_and_receives_updates() {
    let f = start().await;
    let mut alice = connect(f.addr, 1).await;

    // The client's first request, as grammers' sender pool sends it (salt 0, new session).
    let config = invoke(&mut alice, &init_get_config()).await.unwrap();
    check_config(&config, f.addr);

    // Plain help.getConfig and help.getNearestDc, answered by the builtin handler.
    let config = invoke(&mut alice, &tl::functions::help::GetConfig {})
        .await
        .unwrap();
    check_config(&config, f.addr);
    let tl::enums::NearestDc::Dc(nearest) =
        invoke(&mut alice, &tl::functions::help::GetNearestDc {})
            .await
            .unwrap();
    assert_eq!(nearest.this_dc, 2);

    // A result from the test model.
    let tl::enums::updates::State::State(state) =
        invoke(&mut alice, &tl::functions::updates::GetState {})
            .await
            .unwrap();
    assert!(state.pts >= 1);

    // An rpc_error from the test model.
    let err = invoke(
        &mut alice,
        &tl::functions::messages::GetDhConfig {
            version: 0,
            random_length: 256,
        },
    )
    .await
    .unwrap_err();
    match err {
        InvocationError::Rpc(e) => {
            assert_eq!(
                (e.code, e.name.as_str(), e.value),
                (420, "FLOOD_WAIT", Some(3))
            );
        }
        other => panic!("expected an rpc error, got {other:?}"),
    }

    // Ping and future salts go through the session layer.
    let tl::enums::Pong::Pong(pong) = invoke(&mut alice, &tl::functions::Ping { ping_id: 77 })
        .await
        .unwrap();
    assert_eq!(pong.ping_id, 77);
    let tl::enums::FutureSalts::Salts(salts) =
        invoke(&mut alice, &tl::functions::GetFutureSalts { num: 3 })
            .await
            .unwrap();
    assert_eq!(salts.salts.0.len(), 3);

    // The handler saw the calls it had to answer (not the builtin ones), for Alice's account,
    // with the layer of the connection's first invokeWithLayer.
    {
        let calls = f.handler.calls.lock().unwrap();
        use tl::Identifiable;
        let methods: Vec<u32> = calls.iter().map(|(_, c)| *c).collect();
        assert_eq!(
            methods,
            [
                tl::functions::updates::GetState::CONSTRUCTOR_ID,
                tl::functions::messages::GetDhConfig::CONSTRUCTOR_ID
            ]
        );
        for (ctx, _) in calls.iter() {
            assert_eq!(ctx.account, ALICE);
            assert_eq!(ctx.layer, Some(tl::LAYER));
        }
    }

    // An update pushed for Alice reaches her connection.
    f.handle.push(ALICE, typing_update(42));
    let updates = next_updates(&mut alice).await;
    assert!(is_typing_from(&updates, 42), "{updates:?}");

    // The connection still answers afterwards.
    invoke(&mut alice, &tl::functions::help::GetNearestDc {})
        .await
        .unwrap();

    f.handle.shutdown();
    timeout(WAIT, f.run).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn updates_go_to_the_right_account_and_every_session() {
    let f = start().await;
    let mut alice1 = connect(f.addr, 1).await;
    let mut alice2 = connect(f.addr, 1).await;
    let mut bob = connect(f.addr, 2).await;
    for s in [&mut alice1, &mut alice2, &mut bob] {
        invoke(s, &init_get_config()).await.unwrap();
    }
    // Two sessions of Alice's key (the second started with salt 0 after the key's first
    // contact, so it went through bad_server_salt), one of Bob's.
    assert_eq!(f.handle.routed_sessions(), 3);

    f.handle.push(BOB, typing_update(7));
    f.handle.push(ALICE, typing_update(8));
    assert!(is_typing_from(&next_updates(&mut bob).await, 7));
    let a1 = next_updates(&mut alice1).await;
    let a2 = next_updates(&mut alice2).await;
    assert!(is_typing_from(&a1, 8) && !is_typing_from(&a1, 7), "{a1:?}");
    assert!(is_typing_from(&a2, 8) && !is_typing_from(&a2, 7), "{a2:?}");
    f.handle.shutdown();
}

async fn still_alive(sender: &mut Sender<Full, Encrypted>) {
    invoke(sender, &tl::functions::help::GetNearestDc {})
        .await
        .unwrap();
}

/// A full-transport frame with sequence number `seq` (CRC optionally broken).
fn full_frame(seq: u32, payload: &[u8], break_crc: bool) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 12).unwrap();
    let mut v = Vec::new();
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(payload);
    let mut crc = crc32fast::hash(&v);
    if break_crc {
        crc ^= 1;
    }
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// An "encrypted" packet: auth_key_id, msg_key and 64 bytes of junk ciphertext.
fn junk_packet(auth_key_id: i64) -> Vec<u8> {
    let mut v = auth_key_id.to_le_bytes().to_vec();
    v.extend((0..16 + 64).map(|i| (i * 7 + 3) as u8));
    v
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(WAIT, async {
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection");
    got
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_close(&mut stream).await
}

/// A `MakeWriter` that appends the formatted log lines to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn bad_input_closes_only_its_own_connection() {
    // The test runtime is single-threaded: this subscriber sees the connection tasks' logs.
    let logs = Captured::default();
    let writer = logs.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let f = start().await;
    let mut alice = connect(f.addr, 1).await;
    invoke(&mut alice, &init_get_config()).await.unwrap();

    // Garbage (HTTP): unrecognised transport, closed without an answer.
    assert!(raw(f.addr, b"GET / HTTP/1.1\r\n\r\n").await.is_empty());
    still_alive(&mut alice).await;

    // Unknown auth key, full transport: -404 written three times (12 bytes), then closed.
    let got = raw(f.addr, &full_frame(0, &junk_packet(0x1234_5678), false)).await;
    let minus_404 = (-404i32).to_le_bytes();
    assert_eq!(got, [minus_404, minus_404, minus_404].concat());
    still_alive(&mut alice).await;

    // Unknown auth key, intermediate transport: -404 as a 4-byte frame.
    let packet = junk_packet(0x0bad);
    let mut bytes = vec![0xee; 4];
    bytes.extend_from_slice(&u32::try_from(packet.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(&packet);
    let got = raw(f.addr, &bytes).await;
    assert_eq!(got, [4u32.to_le_bytes(), minus_404].concat());

    // Unencrypted (DH handshake attempt): -404 too; there is no handshake here.
    let mut plain = vec![0u8; 8];
    plain.extend_from_slice(&[1u8; 32]);
    assert_eq!(raw(f.addr, &full_frame(0, &plain, false)).await.len(), 12);

    // A bad CRC: closed, nothing sent.
    let known = auth_key_id(&AuthKey::from_array(key_bytes(2)));
    assert!(
        raw(f.addr, &full_frame(0, &junk_packet(0x77), true))
            .await
            .is_empty()
    );
    // A known key with a forged msg_key: refused, closed without a transport error.
    let forged = full_frame(0, &junk_packet(known), false);
    assert!(raw(f.addr, &forged).await.is_empty());
    still_alive(&mut alice).await;
    // An intermediate frame longer than the server's limit: refused from its header.
    let mut bytes = vec![0xee; 4];
    bytes.extend_from_slice(&0x7fff_fff0u32.to_le_bytes());
    assert!(raw(f.addr, &bytes).await.is_empty());
    // A frame split over several writes, then the peer goes away mid-frame.
    let mut stream = TcpStream::connect(f.addr).await.unwrap();
    stream.write_all(&forged[..30]).await.unwrap();
    drop(stream);

    // The grammers connection never noticed.
    still_alive(&mut alice).await;
    let tl::enums::updates::State::State(state) =
        invoke(&mut alice, &tl::functions::updates::GetState {})
            .await
            .unwrap();
    assert_eq!(state.pts, 1);
    f.handle.push(ALICE, typing_update(9));
    assert!(is_typing_from(&next_updates(&mut alice).await, 9));
    f.handle.shutdown();

    // Every refused connection was logged with its reason; the one that merely went away
    // mid-frame was not a fault.
    let closing: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains("closing connection"))
        .collect();
    let with = |what: &str| closing.iter().filter(|l| l.contains(what)).count();
    assert_eq!(closing.len(), 7, "{closing:#?}");
    assert!(
        closing
            .iter()
            .all(|l| l.contains("WARN") && l.contains("peer=127.0.0.1:"))
    );
    assert_eq!(with("transport error"), 3, "{closing:#?}"); // HTTP, bad CRC, oversize
    assert_eq!(with("packet refused"), 4, "{closing:#?}"); // 2 unknown keys, plain, forged
    // Alice's connection (the first) was never closed.
    assert_eq!(with("conn=1 "), 0, "{closing:#?}");
}

#[tokio::test]
async fn shutdown_closes_client_connections() {
    let f = start().await;
    let mut alice = connect(f.addr, 1).await;
    invoke(&mut alice, &init_get_config()).await.unwrap();
    f.handle.shutdown();
    timeout(WAIT, f.run).await.unwrap().unwrap().unwrap();
    let r = timeout(WAIT, async {
        loop {
            if let Err(e) = alice.step().await {
                return e;
            }
        }
    })
    .await
    .expect("the connection stayed open");
    drop(r);
    assert!(TcpStream::connect(f.addr).await.is_err());
}

#[tokio::test]
async fn grammers_over_every_transport_it_has() {
    let f = start().await;
    let mut abridged = connect_over(Abridged::new(), f.addr, abridged_safe_seed()).await;
    let mut intermediate = connect_over(Intermediate::new(), f.addr, 2).await;
    check_config(
        &invoke(&mut abridged, &init_get_config()).await.unwrap(),
        f.addr,
    );
    check_config(
        &invoke(&mut intermediate, &init_get_config()).await.unwrap(),
        f.addr,
    );
    for _ in 0..3 {
        invoke(&mut abridged, &tl::functions::updates::GetState {})
            .await
            .unwrap();
        invoke(&mut intermediate, &tl::functions::updates::GetState {})
            .await
            .unwrap();
    }
    f.handle.shutdown();
}

/// One TCP connection of a hand-driven grammers MTProto state machine (full transport).
struct RawConn {
    stream: TcpStream,
    transport: Full,
    read: Vec<u8>,
}

impl RawConn {
    async fn open(addr: SocketAddr) -> Self {
        RawConn {
            stream: TcpStream::connect(addr).await.unwrap(),
            transport: Full::new(),
            read: Vec::new(),
        }
    }

    async fn send(&mut self, mtp: &mut Encrypted, request: &[u8]) {
        let mut buf = DequeBuffer::with_capacity(0, 0);
        mtp.push(&mut buf, request);
        mtp.finalize(&mut buf);
        self.transport.pack(&mut buf);
        self.stream.write_all(buf.as_ref()).await.unwrap();
    }

    /// The next server packet, deserialized.
    async fn recv(&mut self, mtp: &mut Encrypted) -> Vec<Deserialization> {
        loop {
            match self.transport.unpack(&mut self.read[..]) {
                Ok(off) => {
                    let mut data = self.read[off.data_range].to_vec();
                    self.read.drain(..off.next_offset);
                    return mtp.deserialize(&mut data).unwrap();
                }
                Err(transport::Error::MissingBytes) => {
                    let mut buf = [0u8; 4096];
                    let n = timeout(WAIT, self.stream.read(&mut buf))
                        .await
                        .expect("no packet in time")
                        .unwrap();
                    assert!(n > 0, "the server closed the connection");
                    self.read.extend_from_slice(&buf[..n]);
                }
                Err(err) => panic!("{err}"),
            }
        }
    }

    /// Reads packets until `want` matches one of their messages.
    async fn until(&mut self, mtp: &mut Encrypted, want: impl Fn(&Deserialization) -> bool) {
        loop {
            if self.recv(mtp).await.iter().any(&want) {
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_session_survives_reconnects_and_keeps_its_updates() {
    let f = start().await;
    // One MTProto session (one session_id), two TCP connections in turn.
    let mut mtp = Encrypted::build().finish(key_bytes(1));
    let mut conn = RawConn::open(f.addr).await;
    conn.send(&mut mtp, &init_get_config().to_bytes()).await;
    conn.until(&mut mtp, |d| matches!(d, Deserialization::RpcResult(_)))
        .await;
    assert_eq!(f.handle.routed_sessions(), 1);
    drop(conn);
    timeout(WAIT, async {
        while f.handle.routed_sessions() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server did not notice the closed connection");

    // Pushed while the session has no connection: kept in the session.
    f.handle.push(ALICE, typing_update(5));
    assert_eq!(f.handle.with_sessions(|s| s.sessions_of(ALICE).len()), 1);

    // The same session on a new connection gets it with its next answer.
    let mut conn = RawConn::open(f.addr).await;
    conn.send(&mut mtp, &tl::functions::updates::GetState {}.to_bytes())
        .await;
    let update = typing_update(5);
    conn.until(
        &mut mtp,
        |d| matches!(d, Deserialization::Update(u) if *u == update),
    )
    .await;
    assert_eq!(f.handle.with_sessions(|s| s.len()), 1);
    f.handle.shutdown();
}

#[test]
fn command_line_serves_and_refuses_non_loopback() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = std::env::temp_dir().join(format!("tgsim-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("keys");
    std::fs::write(
        &key_file,
        format!("# account key\n{ALICE} {}\n", hex::encode(key_bytes(1))),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_tgsim");

    let refused = Command::new(exe)
        .args(["--listen", "0.0.0.0:0", "--key-file"])
        .arg(&key_file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-non-loopback"));

    let mut child = Command::new(exe)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--account",
            &format!("{ALICE}:15550001:Alice"),
            "--key-file",
        ])
        .arg(&key_file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let mut alice = connect(addr, 1).await;
        let config = invoke(&mut alice, &init_get_config()).await.unwrap();
        check_config(&config, addr);
        invoke(&mut alice, &tl::functions::updates::GetState {}).await
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    // The binary serves the model: the account from --account answers getState.
    match result {
        Ok(tl::enums::updates::State::State(state)) => assert_eq!(state.qts, 1),
        other => panic!("expected the state, got {other:?}"),
    }
}

#[tokio::test]
async fn padded_intermediate_by_hand() {
    let f = start().await;
    let mut mtp = Encrypted::build().finish(key_bytes(2));
    let mut stream = TcpStream::connect(f.addr).await.unwrap();
    let mut buf = DequeBuffer::with_capacity(0, 0);
    mtp.push(&mut buf, &init_get_config().to_bytes());
    mtp.finalize(&mut buf);
    let packet = buf.as_ref().to_vec();
    let mut bytes = vec![0xdd; 4];
    bytes.extend_from_slice(&u32::try_from(packet.len() + 7).unwrap().to_le_bytes());
    bytes.extend_from_slice(&packet);
    bytes.extend_from_slice(&[0x5a; 7]); // random padding
    stream.write_all(&bytes).await.unwrap();

    let got_config = timeout(WAIT, async {
        let mut read = Vec::new();
        loop {
            if read.len() >= 4 {
                let len = u32::from_le_bytes(read[..4].try_into().unwrap()) as usize;
                if read.len() >= 4 + len {
                    // The server's padding too: keep whole AES blocks.
                    let mut body = read[4..4 + len].to_vec();
                    body.truncate(24 + (len - 24) / 16 * 16);
                    read.drain(..4 + len);
                    let config = mtp.deserialize(&mut body).unwrap().into_iter().any(|d| {
                        matches!(d, Deserialization::RpcResult(r)
                            if tl::enums::Config::from_bytes(&r.body).is_ok())
                    });
                    if config {
                        return true;
                    }
                    continue;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed");
            read.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no config in time");
    assert!(got_config);
    f.handle.shutdown();
}
