//! The interfaces checked in as introspection XML (`ipc-proto/interfaces/*.xml`) are what the
//! live service serves: the manager, a chat object and a pending request's handle are
//! introspected on a private bus and each interface's XML is compared with its file. `GetAll`
//! of the manager and of the chat gives exactly the properties the XML lists, each of its
//! type, and the chats' parent serves `org.freedesktop.DBus.ObjectManager`.
//!
//! After a deliberate change of the D-Bus API, regenerate the files with
//! `UPDATE_INTERFACES=1 cargo test --release -p daemon --test introspection` and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use support::*;
use tgsim::faults::Faults;

const ALICE: i64 = 8501;
const BOB: i64 = 8502;

fn interfaces_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ipc-proto/interfaces")
}

/// The `<interface name="NAME">…</interface>` block of an introspection document, each line
/// trimmed (indentation differs between nesting levels).
fn interface_block(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<interface name=\"{name}\">"))?;
    let end = start + xml[start..].find("</interface>")? + "</interface>".len();
    Some(
        xml[start..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
}

/// The `<property name="…" type="…"` elements of an interface block: name -> D-Bus type.
fn property_types(block: &str) -> BTreeMap<String, String> {
    block
        .lines()
        .filter_map(|l| l.strip_prefix("<property name=\""))
        .filter_map(|l| {
            let mut parts = l.split('"');
            let name = parts.next()?;
            let ty = parts.nth(1)?;
            Some((name.to_owned(), ty.to_owned()))
        })
        .collect()
}

/// What `GetAll` gives for `iface` at `path`: name -> the value's D-Bus type.
async fn get_all_types(client: &Client, path: &str, iface: &str) -> BTreeMap<String, String> {
    let p = zbus::fdo::PropertiesProxy::builder(&client.conn)
        .destination(ipc_proto::BUS_NAME)
        .path(path.to_owned())
        .build()
        .await
        .unwrap();
    p.get_all(iface.try_into().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.value_signature().to_string()))
        .collect()
}

async fn introspect(client: &Client, path: &str) -> String {
    let p = zbus::fdo::IntrospectableProxy::builder(&client.conn)
        .destination(ipc_proto::BUS_NAME)
        .path(path.to_owned())
        .build()
        .await
        .unwrap();
    p.introspect().await.unwrap()
}

#[test]
fn the_checked_in_interfaces_are_the_live_ones() {
    let rt = runtime();
    rt.block_on(async {
        let Stack {
            tmp: _tmp,
            bus: _bus,
            sim,
            key: _,
            mut d,
            client,
        } = Stack::start("introspect", ALICE, (BOB, "normal"), "ask").await;
        let m = client.manager().await;
        let chat = m.request_chat(BOB, HashMap::new()).await.unwrap();
        client.wait_state(chat, "ready", 30).await;
        // Every send fails with a transient error: the request stays pending, its handle lives.
        sim.admin()
            .set_faults(&faults_on_sends(ALICE, 1000, 500, "INTERNAL"))
            .unwrap();
        let handle = m
            .send_encrypted_service(chat, &ttl_message(0, 5), send_options("pending", 77))
            .await
            .unwrap();
        let docs = [
            (ipc_proto::MANAGER_PATH.to_owned(), ipc_proto::MANAGER_INTERFACE),
            (ipc_proto::chat_path(chat), ipc_proto::CHAT_INTERFACE),
            (handle.to_string(), ipc_proto::REQUEST_INTERFACE),
        ];
        let update = std::env::var_os("UPDATE_INTERFACES").is_some();
        for (path, iface) in docs {
            let xml = introspect(&client, &path).await;
            let live = interface_block(&xml, iface)
                .unwrap_or_else(|| panic!("{path} serves no {iface}:\n{xml}"));
            let file = interfaces_dir().join(format!("{iface}.xml"));
            if update {
                std::fs::create_dir_all(interfaces_dir()).unwrap();
                std::fs::write(&file, &live).unwrap();
                println!("wrote {}", file.display());
                continue;
            }
            let checked_in = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_INTERFACES=1 writes it)", file.display()));
            assert_eq!(
                live, checked_in,
                "{iface}: the live interface differs from {} (UPDATE_INTERFACES=1 rewrites it; review the diff)",
                file.display()
            );
        }
        // GetAll gives every property the interface lists, each of its listed type, and
        // nothing else (a chat's come from one read of its view, not from the getters).
        for (path, iface) in [
            (ipc_proto::MANAGER_PATH.to_owned(), ipc_proto::MANAGER_INTERFACE),
            (ipc_proto::chat_path(chat), ipc_proto::CHAT_INTERFACE),
        ] {
            let xml = introspect(&client, &path).await;
            let listed = property_types(&interface_block(&xml, iface).unwrap());
            assert!(listed.len() >= 4, "{iface}: {listed:?}");
            assert_eq!(get_all_types(&client, &path, iface).await, listed, "{iface}");
        }
        // The chats' parent serves the ObjectManager.
        let xml = introspect(&client, ipc_proto::CHATS_PATH).await;
        assert!(xml.contains("org.freedesktop.DBus.ObjectManager"), "{xml}");
        // The manager's document also lists the standard interfaces a generic client uses.
        let xml = introspect(&client, ipc_proto::MANAGER_PATH).await;
        for std_iface in [
            "org.freedesktop.DBus.Introspectable",
            "org.freedesktop.DBus.Properties",
            "org.freedesktop.DBus.Peer",
        ] {
            assert!(xml.contains(std_iface), "{std_iface} missing");
        }
        sim.admin().set_faults(&Faults::none()).unwrap();
        assert!(d.terminate().is_some_and(|s| s.success()));
    });
}
