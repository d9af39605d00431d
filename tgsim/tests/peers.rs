//! Simulated peers holding secret chats through the model, with faults injected on pushed
//! updates (drop, duplicate, reorder, delay) and on calls (FLOOD_WAIT, INTERNAL,
//! MSG_WAIT_FAILED); scripted behaviours (NeverAccept, Decline, Block, Offline).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use secret_core::chat::Status;
use secret_core::rand::SeededRandom;
use secret_core::tl::enums::{DecryptedMessageAction as A, SendMessageAction};
use secret_core::tl::types as st;
use tgsim::api::UpdateSink;
use tgsim::faults::{CallFaults, Faults, FaultyHandler, FaultySink, InjectedError, UpdateFaults};
use tgsim::model::{ChatStatus, Model};
use tgsim::peer::{Behaviour, PeerHost};
use tgsim::session::AccountId;

const ALICE: AccountId = 1001;
const BOB: AccountId = 2002;

struct NoSessions;

impl UpdateSink for NoSessions {
    fn push(&self, _: AccountId, _: Vec<u8>) {}
}

struct Sim {
    model: Arc<Model>,
    host: Arc<PeerHost>,
    sink: Arc<FaultySink>,
    handler: Arc<FaultyHandler>,
}

impl Sim {
    fn new(faults: Faults, alice: Behaviour, bob: Behaviour) -> Sim {
        let host = PeerHost::new(Arc::new(NoSessions), 11);
        let sink = Arc::new(FaultySink::new(host.clone(), faults.clone()));
        let model = Arc::new(Model::with_rng(
            sink.clone(),
            None,
            Box::new(SeededRandom::new(7)),
        ));
        model.add_account(ALICE, "9996611001", "Alice").unwrap();
        model.add_account(BOB, "9996621002", "Bob").unwrap();
        let handler = Arc::new(FaultyHandler::new(model.clone(), faults));
        host.attach(model.clone(), handler.clone());
        host.set_now_ms(1_700_000_000_000);
        host.add_peer(ALICE, alice).unwrap();
        host.add_peer(BOB, bob).unwrap();
        Sim {
            model,
            host,
            sink,
            handler,
        }
    }

    /// Waits (bounded) until no update is in flight.
    fn settle(&self) {
        let mut quiet = 0;
        for _ in 0..5000 {
            if self.host.idle() && self.sink.idle() {
                quiet += 1;
                if quiet >= 3 {
                    return;
                }
            } else {
                quiet = 0;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("did not settle");
    }

    /// Settles, then both peers poll getDifference (recovering dropped updates).
    fn round(&self) {
        self.settle();
        self.host.catch_up(ALICE).unwrap();
        self.host.catch_up(BOB).unwrap();
        self.settle();
    }

    fn status(&self, who: AccountId, chat: i32) -> Status {
        self.host.chat_info(who, chat).unwrap().status
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.host.detach();
    }
}

fn ttl(n: i32) -> A {
    A::SetMessageTTL(st::DecryptedMessageActionSetMessageTTL { ttl_seconds: n })
}

fn typing() -> A {
    A::Typing(st::DecryptedMessageActionTyping {
        action: SendMessageAction::SendMessageTypingAction(st::SendMessageTypingAction {}),
    })
}

fn faulty(seed: u64) -> Faults {
    Faults {
        seed,
        updates: UpdateFaults {
            drop: 100,
            duplicate: 100,
            reorder: 100,
            delay: 50,
            delay_ms: 3,
        },
        calls: CallFaults {
            fail: 100,
            methods: Vec::new(),
            errors: vec![
                InjectedError::new(420, "FLOOD_WAIT_1"),
                InjectedError::new(500, "INTERNAL"),
                InjectedError::new(400, "MSG_WAIT_FAILED"),
            ],
            // Peers have no connection: these must not touch them.
            close_before: 200,
            close_after: 200,
        },
        ..Faults::default()
    }
}

fn establish(sim: &Sim) -> i32 {
    let chat = sim.host.request_chat(ALICE, BOB).unwrap();
    for _ in 0..50 {
        sim.round();
        if sim.status(ALICE, chat) == Status::Ready
            && sim
                .host
                .chat_info(BOB, chat)
                .is_some_and(|i| i.status == Status::Ready)
        {
            return chat;
        }
    }
    panic!("chat not ready: {:?}", sim.host.chat_info(ALICE, chat));
}

#[test]
fn echo_chat_with_faults_rekeys_and_delivers_everything_once_in_order() {
    const N: i32 = 300;
    let sim = Sim::new(faulty(42), Behaviour::Normal, Behaviour::Echo);
    let chat = establish(&sim);
    let a = sim.host.chat_info(ALICE, chat).unwrap();
    let b = sim.host.chat_info(BOB, chat).unwrap();
    assert_eq!(a.key_fingerprint, b.key_fingerprint);

    let sent: Vec<A> = (1..=N)
        .map(|i| if i % 3 == 0 { typing() } else { ttl(i) })
        .collect();
    for (i, action) in sent.iter().enumerate() {
        sim.host.send_action(ALICE, chat, action.clone()).unwrap();
        if i % 20 == 19 {
            sim.round();
        }
    }
    for _ in 0..100 {
        sim.round();
        if sim.host.transcript(BOB, chat).len() >= sent.len()
            && sim.host.transcript(ALICE, chat).len() >= sent.len()
        {
            break;
        }
    }
    assert_eq!(
        sim.host.transcript(BOB, chat),
        sent,
        "Bob got each action once, in order"
    );
    assert_eq!(
        sim.host.transcript(ALICE, chat),
        sent,
        "Alice got every echo"
    );

    let a = sim.host.chat_info(ALICE, chat).unwrap();
    let b = sim.host.chat_info(BOB, chat).unwrap();
    assert!(
        a.rekeys >= 2 && b.rekeys >= 2,
        "re-keys: {} {}",
        a.rekeys,
        b.rekeys
    );
    assert_eq!(a.key_fingerprint, b.key_fingerprint);
    assert_eq!(a.status, Status::Ready);

    // The faults really happened.
    let s = sim.sink.stats();
    assert!(
        s.dropped > 10 && s.duplicated > 10 && s.reordered > 10 && s.delayed > 5,
        "{s:?}"
    );
    let (calls, failed) = sim.handler.stats();
    assert!(failed > 50 && failed < calls, "{failed} of {calls}");
    assert_eq!(
        sim.handler.closed(),
        (0, 0),
        "peers have no connection to close"
    );
    // Each random_id was relayed once. tgsim relays a repeated random_id again, but peers never
    // repeat a send that ran: their calls fail before the model runs (they have no connection
    // to lose), and they process messages in qts order, so no Resend asks for one that was
    // relayed.
    let relayed = sim.model.relayed();
    let mut ids: Vec<i64> = relayed.iter().map(|r| r.random_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), relayed.len());
    // Everything processed was acknowledged.
    assert!(sim.model.queued(ALICE).is_empty());
    assert!(sim.model.queued(BOB).is_empty());
}

#[test]
fn never_accept_leaves_the_chat_waiting() {
    let sim = Sim::new(Faults::none(), Behaviour::Normal, Behaviour::NeverAccept);
    let chat = sim.host.request_chat(ALICE, BOB).unwrap();
    for _ in 0..3 {
        sim.round();
    }
    assert_eq!(sim.status(ALICE, chat), Status::Waiting);
    assert_eq!(sim.status(BOB, chat), Status::Requested);
    assert_eq!(sim.model.chat(chat).unwrap().status, ChatStatus::Waiting);
    assert!(sim.host.send_action(ALICE, chat, typing()).is_err());
}

#[test]
fn decline_discards_the_chat() {
    let sim = Sim::new(faulty(5), Behaviour::Normal, Behaviour::Decline);
    let chat = sim.host.request_chat(ALICE, BOB).unwrap();
    for _ in 0..20 {
        sim.round();
        if matches!(sim.status(ALICE, chat), Status::Discarded(_)) {
            break;
        }
    }
    assert!(
        matches!(sim.status(ALICE, chat), Status::Discarded(_)),
        "{:?}",
        sim.status(ALICE, chat)
    );
    assert!(matches!(
        sim.model.chat(chat).unwrap().status,
        ChatStatus::Discarded { .. }
    ));
}

#[test]
fn block_blocks_the_requester() {
    let sim = Sim::new(Faults::none(), Behaviour::Normal, Behaviour::Block);
    let chat = sim.host.request_chat(ALICE, BOB).unwrap();
    sim.round();
    assert!(sim.model.snapshot().is_blocked(BOB, ALICE));
    assert_eq!(sim.status(ALICE, chat), Status::Waiting);
    let again = sim.host.request_chat(ALICE, BOB).unwrap_err();
    assert!(again.to_string().contains("USER_IS_BLOCKED"), "{again}");
}

#[test]
fn offline_then_online_catches_up_with_get_difference() {
    let sim = Sim::new(faulty(9), Behaviour::Normal, Behaviour::Offline);
    let chat = sim.host.request_chat(ALICE, BOB).unwrap();
    sim.round();
    assert!(
        sim.host.chat_info(BOB, chat).is_none(),
        "offline: nothing processed"
    );
    sim.host.set_behaviour(BOB, Behaviour::Normal).unwrap();
    let mut ready = false;
    for _ in 0..20 {
        sim.round();
        if sim.status(ALICE, chat) == Status::Ready {
            ready = true;
            break;
        }
    }
    assert!(ready);

    sim.host.set_behaviour(BOB, Behaviour::Offline).unwrap();
    let sent: Vec<A> = (1..=7).map(ttl).collect();
    for a in &sent {
        sim.host.send_action(ALICE, chat, a.clone()).unwrap();
    }
    sim.round();
    assert!(sim.host.transcript(BOB, chat).is_empty());
    assert!(
        sim.model.queued(BOB).len() >= sent.len(),
        "kept in Bob's qts queue"
    );
    sim.host.set_behaviour(BOB, Behaviour::Normal).unwrap();
    sim.round();
    assert_eq!(sim.host.transcript(BOB, chat), sent);
    assert!(sim.model.queued(BOB).is_empty(), "acknowledged");
}

#[test]
fn silent_peer_receives_but_never_sends() {
    let sim = Sim::new(Faults::none(), Behaviour::Normal, Behaviour::Silent);
    let chat = sim.host.request_chat(ALICE, BOB).unwrap();
    for _ in 0..5 {
        sim.round();
    }
    assert_eq!(sim.status(ALICE, chat), Status::Ready);
    for a in [ttl(3), typing()] {
        sim.host.send_action(ALICE, chat, a).unwrap();
    }
    // Pushed updates only: a getDifference would acknowledge the qts it passes.
    sim.settle();
    assert_eq!(sim.host.transcript(BOB, chat), vec![ttl(3), typing()]);
    assert!(sim.model.relayed().iter().all(|r| r.sender == ALICE));
    assert!(!sim.model.queued(BOB).is_empty(), "never acknowledged");
}

#[test]
fn an_acceptor_peer_takes_the_update_of_its_own_acceptance_as_a_repeat() {
    // Every update to Bob is lost: he learns of the request, and of his own acceptance, only
    // through getDifference.
    let mut faults = Faults::none();
    faults.account_updates.insert(
        BOB,
        UpdateFaults {
            drop: 1000,
            ..UpdateFaults::default()
        },
    );
    let sim = Sim::new(faults, Behaviour::Normal, Behaviour::Normal);
    let chat = sim.host.request_chat(ALICE, BOB).unwrap();
    sim.settle();
    assert!(sim.host.chat_info(BOB, chat).is_none());
    sim.host.catch_up(BOB).unwrap();
    sim.settle();
    assert_eq!(sim.status(BOB, chat), Status::Ready);
    // The model queued Bob's own acceptance for him (his pushed copy was dropped).
    let events = |who: AccountId| -> Vec<ChatStatus> {
        sim.model.snapshot().accounts[&who]
            .chat_events
            .values()
            .filter(|e| e.chat_id == chat)
            .map(|e| e.status.clone())
            .collect()
    };
    assert_eq!(events(BOB).last(), Some(&ChatStatus::Accepted));
    let relayed = sim.model.relayed().len();
    // The next catch-ups hand it to Bob's chat (a repeat: nothing is sent, nothing changes)
    // and acknowledge it.
    for _ in 0..3 {
        sim.round();
    }
    assert!(events(BOB).is_empty(), "{:?}", events(BOB));
    assert!(sim.host.problems().is_empty(), "{:?}", sim.host.problems());
    let (a, b) = (
        sim.host.chat_info(ALICE, chat).unwrap(),
        sim.host.chat_info(BOB, chat).unwrap(),
    );
    assert_eq!((a.status, b.status.clone()), (Status::Ready, Status::Ready));
    assert!(b.key_fingerprint.is_some() && a.key_fingerprint == b.key_fingerprint);
    assert_eq!(
        sim.model.relayed().len(),
        relayed,
        "the repeat sent nothing"
    );
    // The chat works both ways.
    sim.host.send_action(ALICE, chat, ttl(4)).unwrap();
    sim.host.send_action(BOB, chat, ttl(5)).unwrap();
    sim.round();
    assert_eq!(sim.host.transcript(BOB, chat), vec![ttl(4)]);
    assert_eq!(sim.host.transcript(ALICE, chat), vec![ttl(5)]);
}
