//! What the caller sees when things go wrong: each documented error of
//! `messages.sendEncryptedService` reaches the caller typed (terminal ones close the chat,
//! transient ones are retried until the message goes out), and bad D-Bus input is refused with a
//! typed error while the store stays byte-identical.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use secret_core::tl::Serializable;
use support::*;
use tgsim::faults::Faults;
use zbus::Variant;

const ALICE: i64 = 8301;
const BOB: i64 = 8302;

async fn new_chat(client: &Client) -> i32 {
    let chat = client
        .manager()
        .await
        .request_chat(BOB, HashMap::new())
        .await
        .unwrap();
    client.wait_state(chat, "ready", 30).await;
    // The daemon's own first messages (NotifyLayer) leave before the faults of a case are
    // set: one message sent through the FIFO call queue means everything before it was sent.
    let responses = client.responses().await;
    let mut o = HashMap::new();
    let token = format!("settle{}", chat.unsigned_abs());
    o.insert("handle_token", Variant::from(token));
    let h = client
        .manager()
        .await
        .send_encrypted_service(chat, &ttl_message(0, 1), o)
        .await
        .unwrap()
        .to_string();
    let got = responses.wait(30, |g| g.iter().any(|r| r.0 == h)).await;
    assert!(
        got.iter()
            .any(|r| r.0 == h && r.1 == ipc_proto::response::SENT),
        "the settling message was not sent: {got:?}"
    );
    chat
}

#[test]
fn each_documented_error_reaches_the_caller_typed() {
    runtime().block_on(async {
        let tmp = Temp::new("errors");
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
        let key = sim.key_file(ALICE, &tmp.0);
        let mut d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let responses = client.responses().await;
        let m = client.manager().await;
        let mut n = 0;
        // Terminal: the request fails with the error's name, and the chat closes (a seq slot
        // that can never be delivered would be a permanent hole for the peer).
        for (code, name) in [
            (400, "CHAT_ID_INVALID"),
            (400, "DATA_INVALID"),
            (400, "ENCRYPTION_DECLINED"),
            (400, "ENCRYPTION_ID_INVALID"),
            (403, "USER_DELETED"),
            (403, "USER_IS_BLOCKED"),
        ] {
            let chat = new_chat(&client).await;
            sim.admin()
                .set_faults(&faults_on_sends(ALICE, 1000, code, name))
                .unwrap();
            n += 1;
            let mut o = HashMap::new();
            o.insert("handle_token", Variant::from(format!("e{n}")));
            let h = m
                .send_encrypted_service(chat, &ttl_message(0, 5), o)
                .await
                .unwrap()
                .to_string();
            let got = responses.wait(30, |g| g.iter().any(|r| r.0 == h)).await;
            let r = got.iter().find(|r| r.0 == h).expect("a Response");
            assert_eq!(r.1, ipc_proto::response::FAILED, "{name}");
            let error = String::try_from(r.2["error"].try_clone().unwrap()).unwrap();
            assert_eq!(error, name);
            client.wait_state(chat, "discarded", 10).await;
            sim.admin().set_faults(&Faults::none()).unwrap();
        }
        // Transient: retried with the same bytes until the message goes out.
        let chat = new_chat(&client).await;
        for (code, name) in [
            (500, "MSG_WAIT_FAILED"),
            (400, "MSG_WAIT_FAILED"),
            (420, "FLOOD_WAIT_1"),
            (500, "INTERNAL"),
            (-503, "Timeout"),
        ] {
            sim.admin()
                .set_faults(&faults_on_sends(ALICE, 400, code, name))
                .unwrap();
            n += 1;
            let mut o = HashMap::new();
            o.insert("handle_token", Variant::from(format!("t{n}")));
            let h = m
                .send_encrypted_service(chat, &ttl_message(0, n), o)
                .await
                .unwrap()
                .to_string();
            let got = responses.wait(60, |g| g.iter().any(|r| r.0 == h)).await;
            let r = got.iter().find(|r| r.0 == h).expect("a Response");
            assert_eq!(r.1, ipc_proto::response::SENT, "{name}: {:?}", r.2);
            sim.admin().set_faults(&Faults::none()).unwrap();
        }
        assert_eq!(client.chat_state(chat).await.as_deref(), Some("ready"));
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

/// Every file of the store, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn bad_input_is_a_typed_error_and_leaves_the_store_byte_identical() {
    runtime().block_on(async {
        let tmp = Temp::new("badinput");
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
        let key = sim.key_file(ALICE, &tmp.0);
        let mut d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let chat = new_chat(&client).await;
        let m = client.manager().await;
        // One good message, then let everything settle.
        let h = m
            .send_encrypted_service(chat, &ttl_message(0, 1), HashMap::new())
            .await
            .unwrap();
        assert!(h.as_str().starts_with("/io/github/tgsecretd/request/"));
        // A random_id the caller chose, in the first chat; and a second chat with the same peer.
        let chosen: HashMap<&str, Variant<'_>> =
            [("random_id", Variant::from(777_001i64))].into_iter().collect();
        let first = m
            .send_encrypted_service(chat, &ttl_message(0, 1), chosen.clone())
            .await
            .unwrap();
        let chat2 = new_chat(&client).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let store = tmp.0.join("d/store");
        let before = snapshot(&store);

        let opts = |pairs: &[(&'static str, Variant<'static>)]| -> HashMap<&'static str, Variant<'static>> {
            pairs.iter().cloned().collect()
        };
        let service = |random_id: i64, action: secret_core::tl::enums::DecryptedMessageAction| {
            secret_core::tl::enums::DecryptedMessage::Service(
                secret_core::tl::types::DecryptedMessageService { random_id, action },
            )
            .to_bytes()
        };
        let resend = service(
            0,
            secret_core::tl::enums::DecryptedMessageAction::Resend(
                secret_core::tl::types::DecryptedMessageActionResend {
                    start_seq_no: 0,
                    end_seq_no: 2,
                },
            ),
        );
        let mut unknown_action = ttl_message(0, 1);
        unknown_action[12..16].copy_from_slice(&0x0bad_cafe_u32.to_le_bytes());
        let mut trailing = ttl_message(0, 1);
        trailing.extend_from_slice(&[0; 4]);
        let huge = vec![0u8; 2 << 20];
        type Case = (&'static str, i32, Vec<u8>, HashMap<&'static str, Variant<'static>>);
        let cases: Vec<Case> = vec![
            ("NoSuchChat", chat ^ 0x55, ttl_message(0, 1), opts(&[])),
            ("InvalidMessage", chat, vec![1, 2, 3], opts(&[])),
            ("UnknownAction", chat, unknown_action, opts(&[])),
            ("InvalidMessage", chat, trailing, opts(&[])),
            ("TooLarge", chat, huge, opts(&[])),
            ("NotAllowed", chat, resend, opts(&[])),
            ("InvalidArgument", chat, ttl_message(0, 1), opts(&[("bogus", Variant::from(1u32))])),
            ("InvalidArgument", chat, ttl_message(0, 1), opts(&[("notify", Variant::from("yes"))])),
            ("InvalidArgument", chat, ttl_message(0, 1), opts(&[("random_id", Variant::from("7"))])),
            ("InvalidArgument", chat, ttl_message(0, 1), opts(&[("handle_token", Variant::from("a/b"))])),
            ("InvalidArgument", chat, ttl_message(0, 1), opts(&[("handle_token", Variant::from(""))])),
            ("BadRandomId", chat, ttl_message(0, 1), opts(&[("random_id", Variant::from(0i64))])),
            ("InvalidArgument", chat, ttl_message(5, 1), opts(&[("random_id", Variant::from(6i64))])),
            // Another chat's random_id (Telegram would refuse it, RANDOM_ID_DUPLICATE, and the
            // refused message would close the chat), as an option and inside the message.
            ("BadRandomId", chat2, ttl_message(0, 1), opts(&[("random_id", Variant::from(777_001i64))])),
            ("BadRandomId", chat2, ttl_message(777_001, 1), opts(&[])),
            // The chat's own random_id with another message, or another method: not a retry
            // (the first message stands; the caller must not be told its new one was sent).
            ("BadRandomId", chat, ttl_message(0, 2), opts(&[("random_id", Variant::from(777_001i64))])),
            ("BadRandomId", chat, ttl_message(777_001, 2), opts(&[])),
            (
                "BadRandomId",
                chat,
                ttl_message(0, 1),
                opts(&[("random_id", Variant::from(777_001i64)), ("notify", Variant::from(true))]),
            ),
        ];
        for (want, chat_id, msg, o) in cases {
            let r = m.send_encrypted_service(chat_id, &msg, o).await;
            let name = match &r {
                Err(e) => format!("{e:?}"),
                Ok(h) => format!("Ok({h})"),
            };
            assert!(name.starts_with(want), "expected {want}, got {name}");
        }
        // The same random_id in its own chat is a retry: the first request's handle, nothing new.
        let again = m
            .send_encrypted_service(chat, &ttl_message(0, 1), chosen)
            .await
            .unwrap();
        assert_eq!(again, first);
        // So is the same message with the id inside it.
        let again = m
            .send_encrypted_service(chat, &ttl_message(777_001, 1), HashMap::new())
            .await
            .unwrap();
        assert_eq!(again, first);
        // A chat with no user, or with ourselves: refused, nothing stored.
        for user in [0, -5, ALICE] {
            let r = m.request_chat(user, HashMap::new()).await;
            assert!(
                matches!(&r, Err(ipc_proto::Error::InvalidArgument(_))),
                "RequestChat({user}): {r:?}"
            );
        }
        // Wrong argument types and an unknown method: refused by the bus layer, typed.
        let r = client
            .conn
            .call_method(
                Some(ipc_proto::BUS_NAME),
                ipc_proto::MANAGER_PATH,
                Some(ipc_proto::MANAGER_INTERFACE),
                "SendEncryptedService",
                &("not a chat id",),
            )
            .await;
        assert!(
            matches!(&r, Err(zbus::Error::FDO(e)) if matches!(**e, zbus::fdo::Error::InvalidArgs(_))),
            "{r:?}"
        );
        let r = client
            .conn
            .call_method(
                Some(ipc_proto::BUS_NAME),
                ipc_proto::MANAGER_PATH,
                Some(ipc_proto::MANAGER_INTERFACE),
                "NoSuchMethod",
                &(),
            )
            .await;
        assert!(
            matches!(&r, Err(zbus::Error::FDO(e)) if matches!(**e, zbus::fdo::Error::UnknownMethod(_))),
            "{r:?}"
        );
        // A client that disconnects before its answer.
        {
            let other = Client::connect(&bus.address).await;
            let m2 = other.manager().await;
            let msg = ttl_message(0, 1);
            let f = m2.send_encrypted_service(chat ^ 0x55, &msg, HashMap::new());
            drop(tokio::time::timeout(Duration::from_millis(1), f).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(snapshot(&store).len(), before.len());
        assert!(snapshot(&store) == before, "the store changed");
        // The daemon still serves, and the second chat is still open and sends.
        let h = m
            .send_encrypted_service(chat, &ttl_message(0, 2), HashMap::new())
            .await;
        assert!(h.is_ok(), "{h:?}");
        let h = m
            .send_encrypted_service(chat2, &ttl_message(0, 2), HashMap::new())
            .await;
        assert!(h.is_ok(), "{h:?}");
        client.wait_state(chat2, "ready", 5).await;
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

/// A second tgsecretd on the same bus (another state directory, so the store lock does not stop
/// it) must not take `io.github.tgsecretd` from the first: it exits with status 1 and says why,
/// and the first keeps the name, its unique connection and its chats, and goes on answering.
#[test]
fn a_second_daemon_on_the_bus_fails_and_the_first_keeps_the_name() {
    runtime().block_on(async {
        let tmp = Temp::new("twodaemons");
        let bus = Bus::start();
        let sim = Sim::start(&tmp.0.join("sim"), &[(ALICE, "Alice")], &[(BOB, "normal")]);
        let key = sim.key_file(ALICE, &tmp.0);
        let mut first = Daemon::start(&tmp.0.join("d1"), &bus.address, &sim, &key, "never");
        let client = Client::connect(&bus.address).await;
        client.wait_ready(30).await;
        let chat = new_chat(&client).await;
        let dbus = zbus::fdo::DBusProxy::new(&client.conn).await.unwrap();
        let owner = || async {
            dbus.get_name_owner(ipc_proto::BUS_NAME.try_into().unwrap())
                .await
                .unwrap()
                .to_string()
        };
        let before = owner().await;

        let mut second = Daemon::start(&tmp.0.join("d2"), &bus.address, &sim, &key, "never");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while second.running() {
            assert!(
                std::time::Instant::now() < deadline,
                "the second daemon still runs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&second.log).unwrap();
        assert!(
            log.contains("io.github.tgsecretd is owned by another process on this bus"),
            "{log}"
        );
        assert_eq!(second.terminate().and_then(|s| s.code()), Some(1), "{log}");

        assert_eq!(owner().await, before, "the name moved");
        assert!(first.running());
        let m = client.manager().await;
        let h = m
            .send_encrypted_service(chat, &ttl_message(0, 7), HashMap::new())
            .await
            .expect("the first daemon still answers");
        assert!(h.as_str().starts_with("/io/github/tgsecretd/request/"));
        assert!(first.terminate().is_some_and(|s| s.success()));
    });
}
