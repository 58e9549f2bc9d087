//! The live keys' blocks against a plain ordered map.

use super::*;

fn kv(key: &str, value: &str, lease: Option<u64>) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        create_revision: 3,
        mod_revision: u64::MAX - 1,
        version: 4,
        lease,
    }
}

#[test]
fn entries_keep_every_field() {
    let originals = [
        kv("", "", None),
        kv(&"k".repeat(300), &"v".repeat(1000), Some(u64::MAX)),
        kv("v/i/web/a", "{\"port\":80}", Some(42)),
        kv("x/id/a", "", None),
    ];
    let mut live = LiveKeys::default();
    for original in &originals {
        live.insert(original.clone());
    }
    for original in &originals {
        assert_eq!(live.get(&original.key).as_ref(), Some(original));
    }
    assert_eq!(live.iter().collect::<Vec<_>>(), originals.to_vec());
}

#[test]
fn keys_are_ordered_replaced_and_counted() {
    let mut live = LiveKeys::default();
    live.insert(kv("b/2", "xx", None));
    live.insert(kv("a/1", "y", None));
    live.insert(kv("b/1", "zzz", None));
    live.insert(kv("b/1", "z", Some(7)));
    assert_eq!(live.len(), 3);
    assert_eq!(live.bytes(), 3 + 2 + 3 + 1 + 3 + 1);
    let in_b: Vec<Vec<u8>> = live.with_prefix(b"b/").map(|kv| kv.key).collect();
    assert_eq!(in_b, vec![b"b/1".to_vec(), b"b/2".to_vec()]);
    assert_eq!(live.get(b"b/1"), Some(kv("b/1", "z", Some(7))));
    assert_eq!(live.keys_with_lease(7), vec![b"b/1".to_vec()]);
    live.remove(b"b/2");
    live.remove(b"absent");
    assert_eq!(live.len(), 2);
    assert_eq!(live.bytes(), 3 + 1 + 3 + 1);
    assert!(live.get(b"b/2").is_none());
}

/// Many keys in a shuffled order, replaced and removed, checked against
/// a plain map after every step: blocks split, merge and get new first
/// keys along the way.
#[test]
fn a_long_random_history_matches_a_plain_map() {
    let mut live = LiveKeys::default();
    let mut model: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    // A small deterministic generator: no dependency for one test.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for step in 0..20_000u64 {
        let n = next();
        let key = format!(
            "{}/{}/{:05}",
            ["v/i/web", "v/i/api", "x/nd/node-1", "x/id"][(n % 4) as usize],
            (n >> 8) % 7,
            (n >> 16) % 3000
        );
        if n % 5 == 0 {
            live.remove(key.as_bytes());
            model.remove(key.as_bytes());
        } else {
            let value = "v".repeat(((n >> 32) % 200) as usize);
            let mut entry = kv(&key, &value, ((n >> 40) % 3 != 0).then_some((n >> 44) + 1));
            entry.create_revision = step;
            entry.mod_revision = step + 1;
            live.insert(entry.clone());
            model.insert(entry.key.clone(), entry);
        }
        if step % 997 == 0 || step == 19_999 {
            assert_eq!(live.len(), model.len());
            let all: Vec<KeyValue> = live.iter().collect();
            assert_eq!(all, model.values().cloned().collect::<Vec<_>>());
            let bytes: usize = model.values().map(|kv| kv.key.len() + kv.value.len()).sum();
            assert_eq!(live.bytes(), bytes as u64);
            for prefix in ["v/i/web/3/", "x/", "v/i/api/", "zzz", ""] {
                let got: Vec<KeyValue> = live.with_prefix(prefix.as_bytes()).collect();
                let want: Vec<KeyValue> = model
                    .values()
                    .filter(|kv| kv.key.starts_with(prefix.as_bytes()))
                    .cloned()
                    .collect();
                assert_eq!(got, want, "prefix {prefix}");
            }
            assert!(
                live.blocks.values().all(|block| block.len() <= BLOCK_BYTES),
                "a block was not split"
            );
        }
        assert_eq!(live.get(key.as_bytes()).as_ref(), model.get(key.as_bytes()));
    }
    // Everything removed: no block left behind.
    for key in model.keys() {
        live.remove(key);
    }
    assert_eq!(live.len(), 0);
    assert_eq!(live.bytes(), 0);
    assert!(live.blocks.is_empty());
}

/// A snapshot's keys, built in order, are the same live keys as inserted
/// one by one, and go on taking inserts and removals; a key out of order
/// is inserted rather than appended.
#[test]
fn keys_built_in_order_match_keys_inserted() {
    let kvs: Vec<KeyValue> = (0..5_000)
        .map(|n| {
            let value = "v".repeat(n % 300);
            kv(
                &format!("v/i/svc-{:03}/{n:06}", n % 97),
                &value,
                (n % 3 == 0).then_some(7),
            )
        })
        .map(|kv| (kv.key.clone(), kv))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    let mut inserted = LiveKeys::default();
    let mut builder = SortedBuilder::default();
    for kv in &kvs {
        inserted.insert(kv.clone());
        builder.push(kv.clone());
    }
    let mut built = builder.finish();
    assert_eq!(built.iter().collect::<Vec<_>>(), kvs);
    assert_eq!(
        (built.len(), built.bytes()),
        (inserted.len(), inserted.bytes())
    );
    assert!(built.blocks.len() > 1);
    assert!(
        built
            .blocks
            .values()
            .all(|block| block.len() <= BLOCK_BYTES)
    );
    for kv in kvs.iter().step_by(7) {
        assert_eq!(built.get(&kv.key).as_ref(), Some(kv));
    }
    built.remove(&kvs[10].key);
    built.insert(kv("v/i/svc-000/zzz", "late", None));
    inserted.remove(&kvs[10].key);
    inserted.insert(kv("v/i/svc-000/zzz", "late", None));
    assert_eq!(
        built.iter().collect::<Vec<_>>(),
        inserted.iter().collect::<Vec<_>>()
    );

    let mut builder = SortedBuilder::default();
    for key in ["b", "d", "a", "c", "e"] {
        builder.push(kv(key, key, None));
    }
    let keys: Vec<Vec<u8>> = builder.finish().iter().map(|kv| kv.key).collect();
    assert_eq!(keys, [b"a", b"b", b"c", b"d", b"e"].map(|k| k.to_vec()));
}
