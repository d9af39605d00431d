//! The D-Bus API end to end, on a private bus, with tgsim and a simulated peer: every service
//! action through `SendServiceAction` (bytes checked in the peer's decrypted transcript), the
//! signals the peer's echoes raise, the chat object's properties and `PropertiesChanged`,
//! `Call` in the seed's method + JSON form, `Events`, and the accept policies (`ask` with
//! `ChatRequested` + `AcceptChat` / `DeclineChat`, `never`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use ipc_proto::{SecretChatProxy, response};
use support::*;
use zbus::{MessageStream, OwnedVariant, Variant};

const ALICE: i64 = 8401;
const BOB: i64 = 8402;

/// Signals of the daemon from now on (a reader task keeps the connection flowing).
struct Signals(std::sync::Arc<std::sync::Mutex<Vec<zbus::Message>>>);

impl Signals {
    async fn start(client: &Client) -> Signals {
        let mut stream = MessageStream::for_match_rule(
            "type='signal',sender='io.github.tgsecretd'",
            &client.conn,
            None,
        )
        .await
        .unwrap();
        let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&all);
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                sink.lock().unwrap().push(m);
            }
        });
        Signals(all)
    }

    /// The first signal `member` on `path` for which `pick` says yes, waiting up to 30 s.
    async fn wait<T>(
        &self,
        path: &str,
        member: &str,
        pick: impl Fn(&zbus::Message) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            {
                let all = self.0.lock().unwrap();
                for m in all.iter() {
                    let h = m.header();
                    if h.path().map(|p| p.as_str()) == Some(path)
                        && h.member().map(|n| n.as_str()) == Some(member)
                        && let Some(v) = pick(m)
                    {
                        return v;
                    }
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {member} on {path} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A chat proxy that reads every property from the daemon (zbus caches them otherwise, updated
/// by the coalesced `PropertiesChanged`, which may follow a Response by up to 50 ms).
async fn chat_proxy(client: &Client, chat: i32) -> SecretChatProxy<'static> {
    SecretChatProxy::builder(&client.conn)
        .path(ipc_proto::chat_path(chat))
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

fn opts(token: &str) -> HashMap<&'static str, Variant<'static>> {
    let mut o = HashMap::new();
    o.insert("handle_token", Variant::from(token.to_owned()));
    o
}

/// The interfaces of an object with their properties, as `InterfacesAdded` carries them.
type ManagedInterfaces = HashMap<String, HashMap<String, OwnedVariant>>;

/// The chats' ObjectManager's objects: chat id -> `State`.
async fn managed_chats(client: &Client) -> BTreeMap<i32, String> {
    managed_chats_on(&client.conn).await
}

async fn managed_chats_on(conn: &zbus::Connection) -> BTreeMap<i32, String> {
    let om = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(ipc_proto::BUS_NAME)
        .path(ipc_proto::CHATS_PATH)
        .build()
        .await
        .unwrap();
    om.get_managed_objects()
        .await
        .unwrap()
        .into_iter()
        .map(|(path, ifaces)| {
            let props = &ifaces[ipc_proto::CHAT_INTERFACE];
            let id = i32::try_from(&*props["ChatId"]).unwrap();
            assert_eq!(path.as_str(), ipc_proto::chat_path(id));
            (id, <&str>::try_from(&*props["State"]).unwrap().to_owned())
        })
        .collect()
}

fn i64_of(d: &HashMap<String, OwnedVariant>, k: &str) -> i64 {
    let v = d.get(k).unwrap_or_else(|| panic!("no {k} in {d:?}"));
    i64::try_from(v)
        .or_else(|_| i32::try_from(v).map(i64::from))
        .or_else(|_| u32::try_from(v).map(i64::from))
        .or_else(|_| u64::try_from(v).map(|x| x as i64))
        .unwrap()
}

fn str_of(d: &HashMap<String, OwnedVariant>, k: &str) -> String {
    String::try_from(d.get(k).unwrap().try_clone().unwrap()).unwrap()
}

#[test]
fn every_service_action_properties_signals_and_call() {
    runtime().block_on(async {
        let Stack {
            tmp: _tmp,
            bus: _bus,
            sim,
            key: _,
            mut d,
            client,
        } = Stack::start("dbusapi", ALICE, (BOB, "echo"), "ask").await;
        let signals = Signals::start(&client).await;
        let responses = client.responses().await;
        let m = client.manager().await;
        let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
        let path = ipc_proto::chat_path(chat);
        // ChatAdded names the new object.
        signals
            .wait(ipc_proto::MANAGER_PATH, "ChatAdded", |s| {
                let (id, p): (i32, zbus::OwnedObjectPath) = s.body().deserialize().ok()?;
                (id == chat && p.as_str() == path).then_some(())
            })
            .await;
        client.wait_state(chat, "ready", 30).await;
        let c = chat_proxy(&client, chat).await;
        assert_eq!(c.state().await.unwrap(), "ready");
        assert_eq!(c.role().await.unwrap(), "creator");
        assert_eq!(c.peer_user_id().await.unwrap(), BOB);
        assert_ne!(c.key_fingerprint().await.unwrap(), 0);
        assert_eq!(c.key_visualization().await.unwrap().len(), 36);

        // Every action an application may send, by its short or full TL name.
        let ttl = Variant::from(30i32);
        let ids = Variant::from(vec![11i64, -12]);
        let typing = Variant::from("sendMessageTypingAction");
        let layer = Variant::from(144i32);
        type Action<'a> = (&'a str, Vec<(&'a str, &'a Variant<'a>)>, &'a str);
        let actions: Vec<Action<'_>> = vec![
            (
                "SetMessageTTL",
                vec![("ttl_seconds", &ttl)],
                "decryptedMessageActionSetMessageTTL",
            ),
            (
                "readmessages",
                vec![("random_ids", &ids)],
                "decryptedMessageActionReadMessages",
            ),
            (
                "decryptedMessageActionDeleteMessages",
                vec![("random_ids", &ids)],
                "decryptedMessageActionDeleteMessages",
            ),
            (
                "ScreenshotMessages",
                vec![("random_ids", &ids)],
                "decryptedMessageActionScreenshotMessages",
            ),
            ("FlushHistory", vec![], "decryptedMessageActionFlushHistory"),
            (
                "Typing",
                vec![("action", &typing)],
                "decryptedMessageActionTyping",
            ),
            (
                "NotifyLayer",
                vec![("layer", &layer)],
                "decryptedMessageActionNotifyLayer",
            ),
            ("Noop", vec![], "decryptedMessageActionNoop"),
        ];
        let mut sent = Vec::new();
        for (i, (name, params, full)) in actions.iter().enumerate() {
            let p: HashMap<&str, Variant<'_>> = params
                .iter()
                .map(|(k, v)| (*k, (*v).try_clone().unwrap()))
                .collect();
            let token = format!("a{i}");
            let h = m
                .send_service_action(chat, name, p, opts(&token))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let r = responses.one(h.as_str(), 30).await;
            assert_eq!(r.1, response::SENT, "{name}: {r:?}");
            sent.push((i64_of(&r.2, "random_id"), *full));
        }
        // The peer decrypted each one, in order, with the right action (NotifyLayer and Noop are
        // consumed by the peer's protocol layer and never reach its transcript).
        sent.retain(|(_, n)| {
            !matches!(
                *n,
                "decryptedMessageActionNoop" | "decryptedMessageActionNotifyLayer"
            )
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let transcript = loop {
            let t = sim.transcript(BOB, chat);
            let names: Vec<String> = t
                .iter()
                .filter_map(|e| e["_"].as_str().map(str::to_owned))
                .collect();
            if sent.iter().all(|(_, n)| names.iter().any(|x| x == n)) {
                break t;
            }
            assert!(std::time::Instant::now() < deadline, "peer saw {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let seen: Vec<&str> = transcript
            .iter()
            .filter_map(|e| e["_"].as_str())
            .filter(|n| sent.iter().any(|(_, s)| s == n))
            .collect();
        let want: Vec<&str> = sent.iter().map(|(_, n)| *n).collect();
        assert_eq!(seen, want, "the peer's order");
        let ttl_entry = transcript
            .iter()
            .find(|e| e["_"] == "decryptedMessageActionSetMessageTTL")
            .unwrap();
        assert_eq!(ttl_entry["ttl_seconds"], 30);
        let read = transcript
            .iter()
            .find(|e| e["_"] == "decryptedMessageActionReadMessages")
            .unwrap();
        assert_eq!(read["random_ids"], serde_json::json!([11, -12]));

        // The echoing peer's actions raise the typed signals.
        signals
            .wait(&path, "TtlChanged", |s| {
                (s.body().deserialize::<i32>().ok()? == 30).then_some(())
            })
            .await;
        for member in ["MessagesRead", "MessagesDeleted", "ScreenshotTaken"] {
            signals
                .wait(&path, member, |s| {
                    (s.body().deserialize::<Vec<i64>>().ok()? == vec![11, -12]).then_some(())
                })
                .await;
        }
        signals.wait(&path, "HistoryFlushed", |_| Some(())).await;
        signals
            .wait(&path, "Typing", |s| {
                (s.body().deserialize::<String>().ok()? == "sendMessageTypingAction").then_some(())
            })
            .await;
        signals
            .wait(&path, "ServiceAction", |s| {
                let (_, _, name, json): (i64, i32, String, String) = s.body().deserialize().ok()?;
                (name == "decryptedMessageActionSetMessageTTL" && json.contains("30")).then_some(())
            })
            .await;
        // PropertiesChanged carried the new TTL; the property agrees.
        signals
            .wait(&path, "PropertiesChanged", |s| {
                let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                    s.body().deserialize().ok()?;
                // The constant properties (EmitsChangedSignal=const) are never announced.
                for k in ["ChatId", "PeerUserId", "Role", "CreatedAt"] {
                    assert!(!changed.contains_key(k), "PropertiesChanged carried {k}");
                }
                (iface == ipc_proto::CHAT_INTERFACE
                    && changed
                        .get("TtlSeconds")
                        .and_then(|v| i32::try_from(v).ok())
                        == Some(30))
                .then_some(())
            })
            .await;
        assert_eq!(c.ttl_seconds().await.unwrap(), 30);
        let out = c.out_seq_no().await.unwrap();
        assert!(
            out >= actions.len() as u32,
            "OutSeqNo {out}, in {:?}, pending {:?}",
            c.in_seq_no().await,
            c.pending().await
        );
        // GetChat and the properties say the same.
        let g = m.get_chat(chat).await.unwrap();
        assert_eq!(str_of(&g, "state"), "ready");
        assert_eq!(
            i64_of(&g, "key_fingerprint"),
            c.key_fingerprint().await.unwrap()
        );
        assert_eq!(
            i64_of(&g, "out_seq_no"),
            i64::from(c.out_seq_no().await.unwrap())
        );
        assert!(m.list_chats().await.unwrap().iter().any(|d| {
            d.get("path")
                .and_then(|p| zbus::ObjectPath::try_from(p.try_clone().ok()?).ok())
                .is_some_and(|p| p.as_str() == path)
        }));
        // The inbox holds the peer's echoes as JSON.
        let next = c.next_event().await.unwrap();
        assert!(next > 0);
        let events = c.events(0, 1000).await.unwrap();
        assert!(events.windows(2).all(|w| w[0].0 < w[1].0));
        // Each one an object named by "event" (ipc_proto::events).
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|(_, j)| serde_json::from_str(j).unwrap())
            .collect();
        assert!(
            events.iter().any(|e| e["event"] == ipc_proto::events::ACTION
                && e["action"]["_"] == "decryptedMessageActionSetMessageTTL"
                && e["random_id"].is_i64()),
            "{events:?}"
        );
        let ready = events
            .iter()
            .find(|e| e["event"] == ipc_proto::events::READY)
            .expect("a ready event");
        assert_eq!(
            ready["key_fingerprint"].as_i64(),
            Some(c.key_fingerprint().await.unwrap())
        );
        assert_eq!(
            ready["key_visualization"].as_str().map(str::len),
            Some(72),
            "{ready}"
        );

        // The protocol's own actions and unknown ones are typed errors.
        let g = Variant::from(vec![7u8; 256]);
        let (one, two, fp) = (
            Variant::from(1i32),
            Variant::from(2i32),
            Variant::from(5i64),
        );
        let xid = Variant::from(99i64);
        let own: Vec<(&str, Vec<(&str, &Variant<'_>)>)> = vec![
            ("Resend", vec![("start_seq_no", &one), ("end_seq_no", &two)]),
            (
                "AcceptKey",
                vec![("exchange_id", &xid), ("g_b", &g), ("key_fingerprint", &fp)],
            ),
            (
                "CommitKey",
                vec![("exchange_id", &xid), ("key_fingerprint", &fp)],
            ),
        ];
        let before = c.out_seq_no().await.unwrap();
        for (name, params) in own {
            let p: HashMap<&str, Variant<'_>> = params
                .iter()
                .map(|(k, v)| (*k, (*v).try_clone().unwrap()))
                .collect();
            let e = m.send_service_action(chat, name, p, HashMap::new()).await;
            assert!(
                matches!(e, Err(ipc_proto::Error::NotAllowed(_))),
                "{name}: {e:?}"
            );
        }
        let mut p = HashMap::new();
        p.insert("exchange_id", xid.try_clone().unwrap());
        let e = m
            .send_service_action(chat, "RequestKey", p, HashMap::new())
            .await;
        assert!(
            matches!(e, Err(ipc_proto::Error::InvalidMessage(_))),
            "{e:?}"
        );
        let e = m
            .send_service_action(chat, "SetMessageTTL", HashMap::new(), HashMap::new())
            .await;
        assert!(
            matches!(e, Err(ipc_proto::Error::InvalidArgument(_))),
            "{e:?}"
        );
        let mut p = HashMap::new();
        p.insert("layer", Variant::from(1i32));
        let e = m
            .send_service_action(chat, "NotifyLayer", p, HashMap::new())
            .await;
        assert!(
            matches!(e, Err(ipc_proto::Error::InvalidMessage(_))),
            "{e:?}"
        );
        assert_eq!(
            c.out_seq_no().await.unwrap(),
            before,
            "a refused action took a seq slot"
        );
        // A re-key asked for by the application: the chat picks the exchange; the key changes.
        let fp0 = c.key_fingerprint().await.unwrap();
        let h = m
            .send_service_action(chat, "RequestKey", HashMap::new(), opts("rk"))
            .await
            .unwrap();
        assert_eq!(responses.one(h.as_str(), 30).await.1, response::SENT);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while c.key_fingerprint().await.unwrap() == fp0 || c.rekey_state().await.unwrap() != "idle"
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no re-key: {:?}",
                c.rekey_state().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let under = c.messages_since_rekey().await.unwrap();
        assert!(under < 5, "{under} messages under the new key");
        let e = m
            .send_service_action(chat, "Dance", HashMap::new(), HashMap::new())
            .await;
        assert!(
            matches!(e, Err(ipc_proto::Error::UnknownAction(_))),
            "{e:?}"
        );

        // Call: the seed's form; the Response carries the JSON result.
        let params = serde_json::json!({
            "peer": {"_": "inputEncryptedChat", "chat_id": chat, "access_hash": 0},
            "message": {"_": "decryptedMessageService", "random_id": 0,
                        "action": {"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 60}}
        });
        let h = m
            .call(
                "messages.sendEncryptedService",
                &params.to_string(),
                opts("c1"),
            )
            .await
            .unwrap();
        let r = responses.one(h.as_str(), 30).await;
        assert_eq!(r.1, response::SENT, "{r:?}");
        let j: serde_json::Value = serde_json::from_str(&str_of(&r.2, "json")).unwrap();
        assert_eq!(j["_"], "messages.sentEncryptedMessage");
        assert!(j["date"].as_i64().unwrap() > 0);
        assert_eq!(m.get_result(&h).await.unwrap().0, response::SENT);
        let e = m.call("messages.sendMessage", "{}", HashMap::new()).await;
        assert!(
            matches!(e, Err(ipc_proto::Error::UnknownMethod(_))),
            "{e:?}"
        );
        let e = m
            .call(
                "messages.sendEncryptedService",
                "{\"peer\":",
                HashMap::new(),
            )
            .await;
        assert!(
            matches!(e, Err(ipc_proto::Error::InvalidArgument(_))),
            "{e:?}"
        );
        // What is known at once is refused at once: an unknown chat, a user id that is none.
        for (method, params) in [
            ("messages.discardEncryption", serde_json::json!({"chat_id": 4242})),
            (
                "messages.acceptEncryption",
                serde_json::json!({"peer": {"_": "inputEncryptedChat", "chat_id": 4242, "access_hash": 1}}),
            ),
        ] {
            let e = m.call(method, &params.to_string(), HashMap::new()).await;
            assert!(
                matches!(e, Err(ipc_proto::Error::NoSuchChat(_))),
                "{method}: {e:?}"
            );
        }
        let e = m
            .call(
                "messages.requestEncryption",
                &serde_json::json!({"user_id": -1}).to_string(),
                HashMap::new(),
            )
            .await;
        assert!(
            matches!(e, Err(ipc_proto::Error::InvalidArgument(_))),
            "{e:?}"
        );
        // requestEncryption and discardEncryption through Call.
        let h = m
            .call(
                "messages.requestEncryption",
                &serde_json::json!({"user_id": BOB}).to_string(),
                opts("c2"),
            )
            .await
            .unwrap();
        let r = responses.one(h.as_str(), 30).await;
        assert_eq!(r.1, response::SENT, "{r:?}");
        let j: serde_json::Value = serde_json::from_str(&str_of(&r.2, "json")).unwrap();
        assert_eq!(j["_"], "secretChat");
        let chat2 = i32::try_from(j["chat_id"].as_i64().unwrap()).unwrap();
        assert_ne!(chat2, chat);
        client.wait_state(chat2, "ready", 30).await;
        let h = m
            .call(
                "messages.discardEncryption",
                &serde_json::json!({"chat_id": chat2}).to_string(),
                opts("c3"),
            )
            .await
            .unwrap();
        let r = responses.one(h.as_str(), 30).await;
        assert_eq!(str_of(&r.2, "json"), r#"{"_":"boolTrue"}"#);
        client.wait_state(chat2, "discarded", 30).await;
        signals
            .wait(&ipc_proto::chat_path(chat2), "Closed", |s| {
                let (by, _): (String, String) = s.body().deserialize().ok()?;
                (by == "local").then_some(())
            })
            .await;
        // Properties survive a restart: read from the store.
        let fp = c.key_fingerprint().await.unwrap();
        assert!(d.terminate().is_some_and(|s| s.success()));
        d.restart();
        client.wait_ready(30).await;
        // A store of few chats has every chat's object from the start: the path a client kept
        // answers before anyone names the chat again, the discarded chat's too.
        let c = chat_proxy(&client, chat).await;
        assert_eq!(c.key_fingerprint().await.unwrap(), fp);
        assert_eq!(
            chat_proxy(&client, chat2).await.state().await.unwrap(),
            "discarded"
        );
        let g = m.get_chat(chat).await.unwrap();
        assert_eq!(i64_of(&g, "key_fingerprint"), fp);
        assert_eq!(c.key_fingerprint().await.unwrap(), fp);
        m.list_chats().await.unwrap();
        assert_eq!(c.ttl_seconds().await.unwrap(), 60);
        assert_eq!(
            chat_proxy(&client, chat2).await.state().await.unwrap(),
            "discarded"
        );
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

#[test]
fn ask_waits_for_the_user_and_never_declines() {
    runtime().block_on(async {
        let Stack {
            tmp,
            bus,
            sim,
            key,
            mut d,
            client,
        } = Stack::start("askpolicy", ALICE, (BOB, "normal"), "ask").await;
        let signals = Signals::start(&client).await;
        let m = client.manager().await;
        assert_eq!(m.accept_policy().await.unwrap(), "ask");
        // Bob opens two chats with Alice: both wait, each announced by ChatRequested.
        let mut admin = sim.admin();
        let first = admin.request_chat(BOB, ALICE).unwrap();
        let second = admin.request_chat(BOB, ALICE).unwrap();
        for chat in [first, second] {
            signals
                .wait(ipc_proto::MANAGER_PATH, "ChatRequested", |s| {
                    let (id, user): (i32, i64) = s.body().deserialize().ok()?;
                    (id == chat && user == BOB).then_some(())
                })
                .await;
            assert_eq!(client.chat_state(chat).await.as_deref(), Some("requested"));
        }
        m.accept_chat(first).await.unwrap();
        client.wait_state(first, "ready", 30).await;
        m.decline_chat(second).await.unwrap();
        client.wait_state(second, "discarded", 30).await;
        // Declining a ready chat is the wrong state; an unknown one is no chat.
        assert!(matches!(
            m.decline_chat(first).await,
            Err(ipc_proto::Error::WrongState(_))
        ));
        assert!(matches!(
            m.decline_chat(4242).await,
            Err(ipc_proto::Error::NoSuchChat(_))
        ));
        // Accepting it again too, said once.
        match m.accept_chat(first).await {
            Err(ipc_proto::Error::WrongState(w)) => {
                assert_eq!(w.matches("wrong state").count(), 1, "{w}");
            }
            other => panic!("AcceptChat on a ready chat: {other:?}"),
        }
        // Bob's side: the first chat is usable, the second was declined.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let chats = admin.peer_chats(BOB).unwrap();
            let state = |id| {
                chats
                    .iter()
                    .find(|c| c.chat_id == id)
                    .map(|c| c.status.clone())
            };
            if state(first).as_deref() == Some("ready")
                && state(second).as_deref() == Some("discarded")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "peer: {:?}",
                chats
                    .iter()
                    .map(|c| (c.chat_id, &c.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(d.terminate().is_some_and(|s| s.success()));
        // Under `never` a request is declined at once.
        let mut d = Daemon::start(&tmp.0.join("d"), &bus.address, &sim, &key, "never");
        client.wait_ready(30).await;
        let third = admin.request_chat(BOB, ALICE).unwrap();
        client.wait_state(third, "discarded", 30).await;
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

#[test]
fn close_cancels_what_never_left_and_the_peer_sees_no_hole() {
    runtime().block_on(async {
        let Stack {
            tmp: _tmp,
            bus: _bus,
            sim,
            key: _,
            mut d,
            client,
        } = Stack::start("cancel", ALICE, (BOB, "normal"), "ask").await;
        let responses = client.responses().await;
        let m = client.manager().await;
        let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
        client.wait_state(chat, "ready", 30).await;
        // The daemon's own first messages (NotifyLayer) leave first: one message sent through
        // the FIFO call queue means everything before it was sent.
        let h = m
            .send_encrypted_service(chat, &ttl_message(0, 100), send_options("settle", 0x4fff))
            .await
            .unwrap();
        assert_eq!(responses.one(h.as_str(), 30).await.1, response::SENT);
        // Every send fails with a transient error: the first message stays in flight, the
        // others wait behind it, never tried.
        sim.admin()
            .set_faults(&faults_on_sends(ALICE, 1000, 500, "INTERNAL"))
            .unwrap();
        let mut handles = Vec::new();
        for (i, ttl) in [(0, 101), (1, 102), (2, 103)] {
            handles.push(
                m.send_encrypted_service(
                    chat,
                    &ttl_message(0, ttl),
                    send_options(&format!("c{i}"), 0x5000 + i),
                )
                .await
                .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let request = |h: &zbus::OwnedObjectPath| {
            let h = h.clone();
            let conn = client.conn.clone();
            async move {
                ipc_proto::RequestProxy::builder(&conn)
                    .path(h)
                    .build()
                    .await
                    .unwrap()
            }
        };
        // The second never left: cancelled, Response 1 at once.
        request(&handles[1]).await.close().await.unwrap();
        // Durable when Close returns.
        assert_eq!(
            m.get_result(&handles[1]).await.unwrap().0,
            response::CANCELLED
        );
        let r = responses.one(handles[1].as_str(), 30).await;
        assert_eq!(r.1, response::CANCELLED, "{r:?}");
        // The first is in flight: Close changes nothing; its Response comes when it is sent.
        request(&handles[0]).await.close().await.unwrap();
        assert_eq!(
            m.get_result(&handles[0]).await.unwrap().0,
            response::PENDING
        );
        sim.admin()
            .set_faults(&tgsim::faults::Faults::none())
            .unwrap();
        for h in [&handles[0], &handles[2]] {
            assert_eq!(responses.one(h.as_str(), 60).await.1, response::SENT);
        }
        // The peer got the first and the third, nothing of the second, and no hole (the third
        // was processed, so the Noop in the second's slot arrived).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ttls = loop {
            let ttls: Vec<i64> = sim.ttls(BOB, chat);
            if ttls.contains(&103) {
                break ttls;
            }
            assert!(std::time::Instant::now() < deadline, "peer saw {ttls:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(ttls, vec![100, 101, 103]);
        let peer = sim.admin().peer_chats(BOB).unwrap();
        let pc = peer.iter().find(|c| c.chat_id == chat).unwrap();
        assert_eq!(pc.status, "ready");
        // The cancellation is stored: after a restart GetResult still says cancelled, and a
        // retry with the same random_id sends nothing.
        assert!(d.terminate().is_some_and(|s| s.success()));
        d.restart();
        client.wait_ready(30).await;
        let m = client.manager().await;
        assert_eq!(
            m.get_result(&handles[1]).await.unwrap().0,
            response::CANCELLED
        );
        let again = m
            .send_encrypted_service(chat, &ttl_message(0, 102), send_options("c1b", 0x5001))
            .await
            .unwrap();
        assert_eq!(again, handles[1], "the retry names the cancelled request");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ttls: Vec<i64> = sim.ttls(BOB, chat);
        assert_eq!(ttls, vec![100, 101, 103]);
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

/// Waits up to 10 s for `AuthorizationState` (the proxy's copy follows `PropertiesChanged`).
async fn wait_authorization(m: &ipc_proto::ManagerProxy<'_>, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = m.authorization_state().await.unwrap();
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "AuthorizationState {now}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn logout_closes_the_chats_and_login_takes_the_code_and_the_password() {
    runtime().block_on(async {
        let Stack {
            tmp: _tmp,
            bus: _bus,
            sim,
            key: _,
            mut d,
            client,
        } = Stack::start("dbus-login", ALICE, (BOB, "echo"), "always").await;
        let m = client.manager().await;
        let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
        client.wait_state(chat, "ready", 30).await;
        let signals = Signals::start(&client).await;
        let phone = format!("99966{ALICE}");
        // No login step while logged in.
        let wrong_state = |r: Result<_, ipc_proto::Error>| match r {
            Err(ipc_proto::Error::WrongState(w)) => w,
            other => panic!("expected WrongState, got {other:?}"),
        };
        let why = wrong_state(m.login_phone(&phone).await);
        assert!(why.contains("already logged in"), "{why}");
        wrong_state(m.login_code(tgsim::model::PHONE_CODE).await);
        wrong_state(m.login_password("hunter2").await);

        m.logout().await.unwrap();
        wait_authorization(&m, "logged_out").await;
        let by: String = signals
            .wait(&ipc_proto::chat_path(chat), "Closed", |msg| {
                msg.body().deserialize::<(String, String)>().ok().map(|b| b.0)
            })
            .await;
        assert_eq!(by, "logout");
        client.wait_state(chat, "discarded", 10).await;
        assert!(matches!(
            m.logout().await,
            Err(ipc_proto::Error::NotLoggedIn(_))
        ));

        // The account now has a two-step password; log in through the Manager1 calls.
        sim.admin()
            .set_password(ALICE, Some(("hunter2", "pets")))
            .unwrap();
        // A daemon started after the logout takes a login at once, before its first call to
        // Telegram has told it that the key is logged out (its session still names the user).
        assert!(d.terminate().is_some_and(|s| s.success()));
        d.restart();
        let m = answering_manager(&client).await;
        let step = m.login_phone(&phone).await.unwrap();
        assert_eq!(str_of(&step, "next"), "code");
        wait_authorization(&m, "wait_code").await;
        // Steps out of order.
        let why = wrong_state(m.login_password("hunter2").await);
        assert!(why.contains("no password was asked for"), "{why}");
        assert!(d.terminate().is_some_and(|s| s.success()));
        d.restart();
        let m = answering_manager(&client).await;
        let why = wrong_state(m.login_code(tgsim::model::PHONE_CODE).await);
        assert!(why.contains("request a login code first"), "{why}");
        let why = wrong_state(m.login_password("hunter2").await);
        assert!(why.contains("no password was asked for"), "{why}");
        wait_authorization(&m, "wait_phone").await;
        let step = m.login_phone(&phone).await.unwrap();
        assert_eq!(str_of(&step, "next"), "code");
        wait_authorization(&m, "wait_code").await;
        let wrong = m.login_code("11111").await.unwrap_err();
        assert!(
            matches!(&wrong, ipc_proto::Error::Telegram(t) if t.starts_with("PHONE_CODE_INVALID")),
            "{wrong:?}"
        );
        let step = m.login_code(tgsim::model::PHONE_CODE).await.unwrap();
        assert_eq!(
            (str_of(&step, "next"), str_of(&step, "hint")),
            ("password".to_owned(), "pets".to_owned())
        );
        wait_authorization(&m, "wait_password").await;
        let wrong = m.login_password("hunter3").await.unwrap_err();
        assert!(
            matches!(&wrong, ipc_proto::Error::Telegram(t) if t.starts_with("PASSWORD_HASH_INVALID")),
            "{wrong:?}"
        );
        let step = m.login_password("hunter2").await.unwrap();
        assert_eq!(str_of(&step, "next"), "done");
        assert_eq!(i64_of(&step, "user_id"), ALICE);
        wait_authorization(&m, "ready").await;
        wrong_state(m.login_code(tgsim::model::PHONE_CODE).await);

        // A new chat with Bob works; the old one stays closed.
        let chat2 = m.request_chat(BOB, HashMap::new()).await.unwrap();
        client.wait_state(chat2, "ready", 30).await;
        assert_eq!(client.chat_state(chat).await.as_deref(), Some("discarded"));
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

/// The `PropertiesChanged` of the manager's login properties: the changed values by name.
fn login_changes(m: &zbus::Message) -> Option<HashMap<String, OwnedVariant>> {
    let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
        m.body().deserialize().ok()?;
    (iface == ipc_proto::MANAGER_INTERFACE).then_some(changed)
}

/// The user terminates the daemon's session from another device (tgsim's `log_out`): at the
/// next call Telegram answers `AUTH_KEY_UNREGISTERED`, and the daemon does what a `Logout`
/// does, because Telegram discarded the chats with the authorization: every chat closes
/// (`Closed` by `logout`), the request that met the answer fails with `LOGGED_OUT`, and the
/// manager says `wait_phone`, then `logged_out` once a second question confirmed the end, in
/// `PropertiesChanged`. After a restart all of it holds, and a login signs in again; a second
/// termination then closes the new chat.
#[test]
fn a_session_ended_from_another_device_closes_the_chats_as_a_logout() {
    runtime().block_on(async {
        let Stack {
            tmp: _tmp,
            bus: _bus,
            sim,
            key: _,
            mut d,
            client,
        } = Stack::start("dbus-ended", ALICE, (BOB, "echo"), "always").await;
        let m = client.manager().await;
        let chats = [
            m.request_chat(BOB, HashMap::new()).await.unwrap(),
            m.request_chat(BOB, HashMap::new()).await.unwrap(),
        ];
        for &c in &chats {
            client.wait_state(c, "ready", 30).await;
        }
        let responses = client.responses().await;
        let signals = Signals::start(&client).await;
        let ttl = |t: i32| {
            let mut p: HashMap<&str, Variant<'_>> = HashMap::new();
            p.insert("ttl_seconds", Variant::from(t));
            p
        };
        // Signed in: a send goes through.
        let h = m
            .send_service_action(chats[0], "SetMessageTTL", ttl(5), opts("before"))
            .await
            .unwrap();
        assert_eq!(responses.one(h.as_str(), 30).await.1, response::SENT);

        sim.admin().log_out(ALICE).unwrap();
        let h = m
            .send_service_action(chats[0], "SetMessageTTL", ttl(6), opts("after"))
            .await
            .unwrap();
        let r = responses.one(h.as_str(), 30).await;
        assert_eq!(
            (r.1, str_of(&r.2, "error")),
            (response::FAILED, "LOGGED_OUT".to_owned())
        );
        for &c in &chats {
            let by: String = signals
                .wait(&ipc_proto::chat_path(c), "Closed", |msg| {
                    msg.body()
                        .deserialize::<(String, String)>()
                        .ok()
                        .map(|b| b.0)
                })
                .await;
            assert_eq!(by, "logout", "chat {c}");
            client.wait_state(c, "discarded", 10).await;
        }
        // Logged out at the first answer (`wait_phone`), ended once Telegram said so again.
        let state_of = |msg: &zbus::Message| {
            let c = login_changes(msg)?;
            String::try_from(c.get("AuthorizationState")?.try_clone().ok()?).ok()
        };
        signals
            .wait(ipc_proto::MANAGER_PATH, "PropertiesChanged", |msg| {
                state_of(msg).filter(|s| s == "logged_out")
            })
            .await;
        let states: Vec<String> = signals
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.header().path().map(|p| p.as_str()) == Some(ipc_proto::MANAGER_PATH))
            .filter_map(state_of)
            .collect();
        assert_eq!(states, ["wait_phone", "logged_out"]);
        // SelfUserId goes to 0 in a signal (an earlier one, from the start, may carry the
        // user id: the first that says 0 is the one).
        signals
            .wait(ipc_proto::MANAGER_PATH, "PropertiesChanged", |msg| {
                let user = i64::try_from(login_changes(msg)?.get("SelfUserId")?).ok()?;
                (user == 0).then_some(())
            })
            .await;
        assert_eq!(m.self_user_id().await.unwrap(), 0);
        assert_eq!(m.authorization_state().await.unwrap(), "logged_out");
        // The peer saw the first message only.
        let ttls: Vec<i64> = sim.ttls(BOB, chats[0]);
        assert_eq!(ttls, vec![5]);

        // Durable: after a restart the chats stay closed, and a login is taken at once.
        assert!(d.terminate().is_some_and(|s| s.success()));
        d.restart();
        let m = answering_manager(&client).await;
        for &c in &chats {
            assert_eq!(client.chat_state(c).await.as_deref(), Some("discarded"));
        }
        let step = m.login_phone(&format!("99966{ALICE}")).await.unwrap();
        assert_eq!(str_of(&step, "next"), "code");
        let step = m.login_code(tgsim::model::PHONE_CODE).await.unwrap();
        assert_eq!(str_of(&step, "next"), "done");
        wait_authorization(&m, "ready").await;
        let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
        client.wait_state(chat, "ready", 30).await;
        for &c in &chats {
            assert_eq!(client.chat_state(c).await.as_deref(), Some("discarded"));
        }
        // The new authorization is the key that works now: terminated again, its chat closes.
        let responses = client.responses().await;
        sim.admin().log_out(ALICE).unwrap();
        let h = m
            .send_service_action(chat, "SetMessageTTL", ttl(7), opts("again"))
            .await
            .unwrap();
        let r = responses.one(h.as_str(), 30).await;
        assert_eq!(
            (r.1, str_of(&r.2, "error")),
            (response::FAILED, "LOGGED_OUT".to_owned())
        );
        client.wait_state(chat, "discarded", 10).await;
        wait_authorization(&m, "logged_out").await;
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

/// `ForgetChat`: refused for an open chat and for one whose `discardEncryption` Telegram has
/// not taken yet; then everything stored for the chat goes (its object with `ChatRemoved`, its
/// view, its results, its records in every tree), across a restart, while the random_id its
/// caller chose stays refused.
#[test]
fn forget_chat_removes_a_closed_chat_and_everything_stored_for_it() {
    use grammers_tl_types::Identifiable;
    runtime().block_on(async {
        let Stack {
            tmp,
            bus: _bus,
            sim,
            key: _,
            mut d,
            client,
        } = Stack::start("forget", ALICE, (BOB, "normal"), "always").await;
        let responses = client.responses().await;
        let signals = Signals::start(&client).await;
        let m = client.manager().await;
        let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
        let other = m.request_chat(BOB, HashMap::new()).await.unwrap();
        client.wait_state(chat, "ready", 30).await;
        client.wait_state(other, "ready", 30).await;
        // The chats' ObjectManager announced both objects and lists them with their properties.
        for id in [chat, other] {
            let path = ipc_proto::chat_path(id);
            let added: i32 = signals
                .wait(ipc_proto::CHATS_PATH, "InterfacesAdded", |msg| {
                    let (p, ifaces): (zbus::OwnedObjectPath, ManagedInterfaces) =
                        msg.body().deserialize().ok()?;
                    let props = ifaces.get(ipc_proto::CHAT_INTERFACE)?;
                    (p.as_str() == path).then(|| i32::try_from(&*props["ChatId"]).unwrap())
                })
                .await;
            assert_eq!(added, id);
        }
        let path = ipc_proto::chat_path(chat);
        let managed = managed_chats(&client).await;
        assert_eq!(managed.get(&chat).map(String::as_str), Some("ready"));
        assert_eq!(managed.get(&other).map(String::as_str), Some("ready"));
        let h = m
            .send_encrypted_service(chat, &ttl_message(0, 5), send_options("f1", 0x7001))
            .await
            .unwrap();
        assert_eq!(responses.one(h.as_str(), 30).await.1, response::SENT);
        let wrong_state = |r: Result<(), ipc_proto::Error>| match r {
            Err(ipc_proto::Error::WrongState(w)) => w,
            other => panic!("expected WrongState, got {other:?}"),
        };
        let why = wrong_state(m.forget_chat(chat).await);
        assert!(why.contains("DiscardChat first"), "{why}");
        assert!(matches!(
            m.forget_chat(chat ^ 0x55).await,
            Err(ipc_proto::Error::NoSuchChat(_))
        ));

        // Telegram fails the discardEncryption for now: the call stays owed.
        let mut faults = tgsim::faults::Faults::none();
        faults.account_calls.insert(
            ALICE,
            tgsim::faults::CallFaults {
                fail: 1000,
                methods: vec![
                    grammers_tl_types::functions::messages::DiscardEncryption::CONSTRUCTOR_ID,
                ],
                errors: vec![tgsim::faults::InjectedError::new(500, "INTERNAL")],
                ..Default::default()
            },
        );
        sim.admin().set_faults(&faults).unwrap();
        m.discard_chat(chat, false).await.unwrap();
        client.wait_state(chat, "discarded", 10).await;
        let why = wrong_state(m.forget_chat(chat).await);
        assert!(why.contains("still owes Telegram"), "{why}");
        assert_eq!(client.chat_state(chat).await.as_deref(), Some("discarded"));
        sim.admin()
            .set_faults(&tgsim::faults::Faults::none())
            .unwrap();
        // Two at once: one forgets, the other finds no chat (never an internal error).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (a, b) = tokio::join!(m.forget_chat(chat), m.forget_chat(chat));
            match (a, b) {
                (Err(ipc_proto::Error::WrongState(w)), Err(ipc_proto::Error::WrongState(_)))
                    if w.contains("still owes") =>
                {
                    assert!(std::time::Instant::now() < deadline, "{w}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (Ok(()), Err(ipc_proto::Error::NoSuchChat(_)))
                | (Err(ipc_proto::Error::NoSuchChat(_)), Ok(())) => break,
                other => panic!("{other:?}"),
            }
        }
        let removed: i32 = signals
            .wait(ipc_proto::MANAGER_PATH, "ChatRemoved", |msg| {
                let (id, p): (i32, zbus::OwnedObjectPath) = msg.body().deserialize().ok()?;
                (p.as_str() == path).then_some(id)
            })
            .await;
        assert_eq!(removed, chat);
        let ifaces: Vec<String> = signals
            .wait(ipc_proto::CHATS_PATH, "InterfacesRemoved", |msg| {
                let (p, ifaces): (zbus::OwnedObjectPath, Vec<String>) =
                    msg.body().deserialize().ok()?;
                (p.as_str() == path).then_some(ifaces)
            })
            .await;
        assert_eq!(ifaces, [ipc_proto::CHAT_INTERFACE]);
        let gone = |d: &HashMap<String, OwnedVariant>| {
            i32::try_from(&**d.get("chat_id").unwrap()).unwrap() == chat
        };
        let check_gone = |m: ipc_proto::ManagerProxy<'static>| {
            let h = h.clone();
            let path = path.clone();
            let conn = client.conn.clone();
            async move {
                assert!(matches!(
                    m.get_chat(chat).await,
                    Err(ipc_proto::Error::NoSuchChat(_))
                ));
                assert!(matches!(
                    m.forget_chat(chat).await,
                    Err(ipc_proto::Error::NoSuchChat(_))
                ));
                let chats = m.list_chats().await.unwrap();
                assert!(!chats.iter().any(gone), "still listed");
                assert_eq!(chats.len(), 1, "the other chat stays");
                let managed = managed_chats_on(&conn).await;
                assert_eq!(
                    managed.keys().collect::<Vec<_>>(),
                    [&other],
                    "managed objects"
                );
                assert!(matches!(
                    m.get_result(&h).await,
                    Err(ipc_proto::Error::NoSuchRequest(_))
                ));
                let object = zbus::fdo::PropertiesProxy::builder(&conn)
                    .destination(ipc_proto::BUS_NAME)
                    .path(path.as_str())
                    .build()
                    .await
                    .unwrap();
                let all = object
                    .get_all(ipc_proto::CHAT_INTERFACE.try_into().unwrap())
                    .await;
                assert!(
                    matches!(&all, Err(zbus::fdo::Error::UnknownObject(_))),
                    "{all:?}"
                );
            }
        };
        check_gone(m.clone()).await;
        // The other chat still sends; the forgotten chat's random_id stays refused.
        let h2 = m
            .send_encrypted_service(other, &ttl_message(0, 6), HashMap::new())
            .await
            .unwrap();
        assert_eq!(responses.one(h2.as_str(), 30).await.1, response::SENT);
        assert!(matches!(
            m.send_encrypted_service(other, &ttl_message(0, 5), send_options("f2", 0x7001))
                .await,
            Err(ipc_proto::Error::BadRandomId(_))
        ));

        // After a restart, still gone; and nothing of it is left in the store.
        assert!(d.terminate().is_some_and(|s| s.success()));
        assert_forgotten(&tmp.0.join("d/store"), chat, h.as_str(), other);
        d.restart();
        client.wait_ready(30).await;
        check_gone(client.manager().await).await;
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}

/// `RequestChat` with a chat id the caller chose (option `chat_id`; `Call`'s `random_id`, as
/// Telegram's requestEncryption has it) can be asked again after an answer that was lost: the
/// same id and user return the chat it made, before and after a restart, and Bob has one chat
/// per id. Another user under that id, or an id that is not positive, is refused, and nothing
/// is made.
#[test]
fn a_chat_requested_under_a_chosen_id_is_made_once_however_often_it_is_asked() {
    const ID: i32 = 777_001;
    const CALL_ID: i32 = 777_002;
    runtime().block_on(async {
        let Stack {
            tmp: _tmp,
            bus: _bus,
            sim,
            key: _,
            mut d,
            client,
        } = Stack::start("dbus-chosen-id", ALICE, (BOB, "normal"), "always").await;
        let responses = client.responses().await;
        let m = client.manager().await;
        let with_id = |id: i32| HashMap::from([("chat_id", Variant::from(id))]);
        // Two calls at once (the second comes while the first waits for the DH parameters):
        // one chat, both answered with it.
        let (a, b) = tokio::join!(
            m.request_chat(BOB, with_id(ID)),
            m.request_chat(BOB, with_id(ID))
        );
        assert_eq!((a.unwrap(), b.unwrap()), (ID, ID));
        assert_eq!(m.request_chat(BOB, with_id(ID)).await.unwrap(), ID);
        client.wait_state(ID, "ready", 30).await;
        assert_eq!(m.request_chat(BOB, with_id(ID)).await.unwrap(), ID);

        // Refused, and nothing made: another user under the id, ids that are not positive, a
        // wrong type.
        for (user, options) in [
            (BOB + 1, with_id(ID)),
            (BOB, with_id(0)),
            (BOB, with_id(-5)),
            (BOB, HashMap::from([("chat_id", Variant::from("7"))])),
        ] {
            let e = m.request_chat(user, options).await;
            assert!(
                matches!(e, Err(ipc_proto::Error::InvalidArgument(_))),
                "{e:?}"
            );
        }
        // The same through Call's random_id.
        for token in ["r1", "r2"] {
            let h = m
                .call(
                    "messages.requestEncryption",
                    &serde_json::json!({"user_id": BOB, "random_id": CALL_ID}).to_string(),
                    opts(token),
                )
                .await
                .unwrap();
            let r = responses.one(h.as_str(), 30).await;
            assert_eq!(r.1, response::SENT, "{r:?}");
            let j: serde_json::Value = serde_json::from_str(&str_of(&r.2, "json")).unwrap();
            assert_eq!(j["chat_id"], CALL_ID);
        }
        let e = m
            .call(
                "messages.requestEncryption",
                &serde_json::json!({"user_id": BOB, "random_id": 0}).to_string(),
                opts("r3"),
            )
            .await;
        assert!(
            matches!(e, Err(ipc_proto::Error::InvalidArgument(_))),
            "{e:?}"
        );
        client.wait_state(CALL_ID, "ready", 30).await;
        let ids = |list: Vec<HashMap<String, OwnedVariant>>| -> Vec<i32> {
            let mut v: Vec<i32> = list
                .iter()
                .map(|c| i32::try_from(&c["chat_id"]).unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids(m.list_chats().await.unwrap()), [ID, CALL_ID]);
        let mut bobs: Vec<i32> = sim
            .admin()
            .peer_chats(BOB)
            .unwrap()
            .iter()
            .map(|c| c.chat_id)
            .collect();
        bobs.sort();
        assert_eq!(bobs, [ID, CALL_ID], "Bob's chats");

        // After a restart the same request still finds its chat.
        d.restart();
        let m = answering_manager(&client).await;
        assert_eq!(m.request_chat(BOB, with_id(ID)).await.unwrap(), ID);
        assert_eq!(ids(m.list_chats().await.unwrap()), [ID, CALL_ID]);
        assert_eq!(sim.admin().peer_chats(BOB).unwrap().len(), 2);
    });
}
