//! The offline demo as a test: a real MTProto client (grammers' `Sender`) logs in to an
//! in-process tgsim with a provisioned key and holds a secret chat with an echoing simulated
//! peer, over MTProto on 127.0.0.1, through dropped / duplicated / reordered / delayed updates and
//! failing calls, with re-keys on the way. The checks are the demo's own
//! ([`offline_chat::Report::problems`]) plus that the faults and the re-keys really happened.
#![allow(clippy::unwrap_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/offline_chat.rs"]
mod offline_chat;

use std::time::Duration;

use offline_chat::{DemoOptions, Report, run};

fn quiet(messages: usize, faults: bool, seed: u64) -> DemoOptions {
    DemoOptions {
        messages,
        faults,
        verbose: false,
        seed,
        state_dir: None,
        deadline: Duration::from_secs(120),
        poll_when_idle: true,
    }
}

/// Actions the client sends in the run with faults (Bob echoes each).
const MESSAGES: usize = 260;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grammers_client_holds_a_secret_chat_with_a_peer_through_faults() {
    let r = run(&quiet(MESSAGES, true, 7)).await.unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    assert_eq!(r.sent.len(), MESSAGES);
    // 260 sent + 260 echoed + service messages, a re-key after every 100 messages or so plus
    // what flows while the exchange runs: at least 4 re-keys on each side. (With 220 each way
    // the fourth one came right at the end and was sometimes still running: (3, 3).)
    assert!(r.rekeys.0 >= 4 && r.rekeys.1 >= 4, "re-keys {:?}", r.rekeys);
    // Every application action reached tgsim: the relayed messages from the client are the
    // actions plus the protocol's own (layer notice, re-key messages, resends of gaps) and
    // repeats.
    assert!(
        r.relayed_from_client.0 >= MESSAGES,
        "{:?}",
        r.relayed_from_client
    );
    let (pushed, dropped, duplicated, reordered, delayed) = r.update_faults;
    assert!(
        pushed > 400 && dropped > 10 && duplicated > 10 && reordered > 10 && delayed > 5,
        "{:?}",
        r.update_faults
    );
    assert!(r.call_faults.1 > 10, "{:?}", r.call_faults);
    assert!(r.retries > 0, "no call was retried");
    // Lost connections, before and after the call ran: the client reconnected and sent the
    // same bytes again. A send that had run is relayed again (tgsim relays a repeated
    // random_id, as Telegram must for a Resend answer), and Bob's chat dropped the repeat: the
    // transcripts have no duplicates, and `problems()` checked that each random_id carried one
    // byte string and was relayed no more often than the client sent it.
    assert!(r.closed.0 > 0 && r.closed.1 > 0, "closed {:?}", r.closed);
    assert!(r.relayed_ids.1 > r.relayed_ids.0, "{:?}", r.relayed_ids);
    assert!(
        r.reconnects as u64 >= r.closed.0 + r.closed.1,
        "{}",
        r.reconnects
    );
    // Both paths carried messages. (Their shares depend on timing: what arrives while the
    // client reconnects or polls is fetched before its push is read. That pushes alone carry
    // everything when nothing is lost is the next test.)
    assert!(
        r.messages_pushed > 0 && r.messages_fetched > 0,
        "pushed {} fetched {}",
        r.messages_pushed,
        r.messages_fetched
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_faults_every_message_arrives_pushed() {
    // No polling: the chat's acceptance and every echo must come as pushed updates, in qts
    // order, with no gap (a gap would make the client call getDifference).
    let r = run(&DemoOptions {
        poll_when_idle: false,
        ..quiet(30, false, 3)
    })
    .await
    .unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    assert_eq!(r.call_faults.1, 0);
    assert_eq!(r.retries, 0);
    assert_eq!((r.reconnects, r.closed), (0, (0, 0)));
    assert_eq!(r.differences, 0, "a qts gap without faults");
    assert_eq!(r.messages_fetched, 0);
    // Nothing was sent twice (no retry, no gap to ask for), so no random_id was relayed twice.
    assert_eq!(r.relayed_ids.0, r.relayed_ids.1);
    // Bob's echoes and his layer notice.
    assert!(r.messages_pushed > 30, "{}", r.messages_pushed);
    // No re-key below 100 messages.
    assert_eq!(r.rekeys, (0, 0));
}

#[test]
fn the_demo_checks_catch_a_lost_a_duplicated_a_foreign_and_an_unasked_message() {
    use secret_core::tl::enums::DecryptedMessageAction as A;
    use secret_core::tl::types as st;
    let ttl = |n| A::SetMessageTTL(st::DecryptedMessageActionSetMessageTTL { ttl_seconds: n });
    let good = Report {
        sent: vec![ttl(1), ttl(2)],
        client_transcript: vec![ttl(1), ttl(2)],
        peer_transcript: vec![ttl(1), ttl(2)],
        fingerprints: (Some(5), Some(5)),
        relayed_from_client: (3, 3),
        relayed_ids: (6, 6),
        ..Report::default()
    };
    assert!(good.problems().is_empty());
    // A random_id relayed again with the same bytes is no problem by itself.
    let repeated = Report {
        relayed_ids: (5, 6),
        ..good.clone()
    };
    assert!(repeated.problems().is_empty());
    let unasked = Report {
        relayed_unasked: 1,
        ..good.clone()
    };
    assert_eq!(unasked.problems().len(), 1);
    let lost = Report {
        peer_transcript: vec![ttl(1)],
        ..good.clone()
    };
    assert_eq!(lost.problems().len(), 1);
    let twice = Report {
        client_transcript: vec![ttl(1), ttl(1), ttl(2)],
        ..good.clone()
    };
    assert_eq!(twice.problems().len(), 1);
    let reordered = Report {
        client_transcript: vec![ttl(2), ttl(1)],
        ..good.clone()
    };
    assert_eq!(reordered.problems().len(), 1);
    let foreign = Report {
        relayed_from_client: (3, 2),
        relayed_conflicts: 1,
        fingerprints: (Some(5), Some(6)),
        ..good.clone()
    };
    assert_eq!(foreign.problems().len(), 3);
}
