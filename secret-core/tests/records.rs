//! The stored encoding of every record type is pinned: a change of layout must be deliberate
//! (bump the type's `Record::VERSION` in `src/record.rs`, and update the bytes here), never an
//! accident of reordering a field or a variant. `PIN_PRINT=1 cargo test --test records --
//! --nocapture` prints the current values.

mod common;

use common::ready_pair;
use secret_core::chat::{Event, Status};
use secret_core::crypto::sha256;
use secret_core::record::{self, Record, RecordError};
use secret_core::tl::enums::DecryptedMessageAction as A;
use secret_core::tl::types;

fn pin<T: Record + PartialEq + std::fmt::Debug>(value: &T, expected: &str) {
    let bytes = record::encode(value).expect("encodes");
    let shown = if bytes.len() <= 48 {
        hex::encode(&bytes)
    } else {
        format!("sha256:{}", hex::encode(sha256(&[&bytes])))
    };
    if std::env::var_os("PIN_PRINT").is_some() {
        println!("PIN {} {shown}", T::KIND);
        return;
    }
    assert_eq!(shown, expected, "the stored layout of {} changed", T::KIND);
    assert_eq!(&record::decode::<T>(&bytes).expect("decodes"), value);
}

#[test]
fn every_record_type_has_a_pinned_encoding() {
    // A deterministic chat (seeded randomness): the same records on every run and machine.
    let p = ready_pair(1);
    let st = p.a.state();
    pin(st.seq(), "0101000000");
    pin(st.config(), "015c00a00200");
    pin(
        st.auth(),
        "sha256:dc6c08c835a7b564bb01cd55ca6d102871f24da2b4d34f9a49d53572bf8c7c56",
    );
    pin(
        st.pfs(),
        "sha256:c1f7db85ff7f0a093ae86f704f2dc48dad802ea516a08bb81afd50291cadf2fe",
    );
    let entry =
        p.a.outbox()
            .next()
            .expect("NotifyLayer in the outbox")
            .clone();
    pin(
        &entry,
        "sha256:ed76d7976f2cd3df7bcb1292119b68f550b5b7e748688fe2e9436f840a28d76b",
    );
    pin(
        &Event::Action {
            random_id: 5,
            date: 1_700_000_000,
            action: A::SetMessageTTL(types::DecryptedMessageActionSetMessageTTL {
                ttl_seconds: 30,
            }),
        },
        "01030a80c49fd50c08ec3a73a11e000000",
    );
    pin(&Event::StatusChanged(Status::Ready), "010002");
    pin(&Event::Acknowledged(vec![1, -1]), "0107020201");
}

#[test]
fn records_of_another_version_or_with_extra_bytes_are_refused() {
    let p = ready_pair(2);
    let mut b = record::encode(p.a.state().seq()).expect("encodes");
    b.push(0);
    assert!(matches!(
        record::decode::<secret_core::chat::SeqState>(&b),
        Err(RecordError::Corrupt { .. })
    ));
    b.pop();
    b.pop();
    assert!(matches!(
        record::decode::<secret_core::chat::SeqState>(&b),
        Err(RecordError::Corrupt { .. })
    ));
    let mut b = record::encode(&Event::PeerLayer(144)).expect("encodes");
    b[0] = 2;
    assert_eq!(
        record::decode::<Event>(&b),
        Err(RecordError::Version {
            kind: "chat event",
            found: 2,
            expected: 1
        })
    );
}
