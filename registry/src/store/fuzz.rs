//! Fuzzing of what the store decodes from disk and what a backup restores
//! (proptest, on stable Rust): history entries, snapshot chunks, key-values
//! and instance records, arbitrary or damaged, decode to a value or an
//! error, never a panic or an unbounded allocation; and whatever is
//! encoded decodes back the same. `scripts/fuzz.sh` runs many more cases.

use proptest::prelude::*;
use switchyard_model::fuzzing::damaged;

use super::codec;
use super::{Event, EventKind, KeyValue};

fn key_value() -> impl Strategy<Value = KeyValue> {
    (
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..256),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(1..u64::MAX),
    )
        .prop_map(
            |(key, value, create_revision, mod_revision, version, lease)| KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
                version,
                lease,
            },
        )
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(
        (any::<bool>(), key_value()).prop_map(|(put, kv)| Event {
            kind: if put {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            kv,
        }),
        0..8,
    )
}

proptest! {
    #[test]
    fn fuzz_history_entries_round_trip(events in events()) {
        let encoded = codec::encode_events(&events);
        prop_assert_eq!(codec::decode_events(&encoded).ok(), Some(events.clone()));
        let compressed = codec::compress(&encoded);
        prop_assert_eq!(codec::decode_compressed_events(&compressed).ok(), Some(events));
    }

    #[test]
    fn fuzz_damaged_history_and_chunks_never_panic(
        plain in events().prop_flat_map(|events| damaged(codec::encode_events(&events))),
        compressed in events().prop_flat_map(|events| damaged(codec::compress(&codec::encode_events(&events)))),
        kv in key_value().prop_flat_map(|kv| damaged(codec::encode_kv(&kv))),
    ) {
        let _ = codec::decode_events(&plain);
        let _ = codec::decode_compressed_events(&compressed);
        let _ = codec::decode_kv(b"k", &kv);
        let _ = codec::decode_u64(&kv);
    }

    #[test]
    fn fuzz_instance_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::catalog::decode_record(&bytes);
        let mut versioned = vec![0x01];
        versioned.extend_from_slice(&bytes);
        let _ = crate::catalog::decode_record(&versioned);
    }
}
