//! The live keys in memory, each packed into one allocation.
//!
//! A [`KeyValue`] is 88 bytes inline plus two heap blocks (key and value);
//! at 100k instances (three keys each) that was about 45 MiB. Packed, a live
//! key is a 16-byte pointer in the set and one block holding the key, its
//! revisions, version and lease as varints, and the value.

use std::collections::BTreeSet;

use crate::store::{KeyValue, LeaseId, in_prefix};

/// One live key-value: the key's length (varint), the key, then
/// `create_revision`, `mod_revision`, `version` and `lease` (0: none) as
/// varints, then the value. The key comes first because comparisons, the
/// most frequent access, need only it.
#[derive(Debug)]
pub(super) struct Packed(Box<[u8]>);

/// The numbers after the key, and where the value starts.
struct Fields {
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    lease: u64,
    value_at: usize,
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint written by [`put_varint`] at `*at`, moving `*at` past it.
/// Only ever reads what `Packed::new` wrote, so it cannot run off the end.
fn get_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0;
    let mut shift = 0;
    while let Some(&byte) = bytes.get(*at) {
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    value
}

impl Packed {
    fn new(kv: &KeyValue) -> Self {
        let mut bytes = Vec::with_capacity(kv.key.len() + kv.value.len() + 24);
        put_varint(&mut bytes, kv.key.len() as u64);
        bytes.extend_from_slice(&kv.key);
        put_varint(&mut bytes, kv.create_revision);
        put_varint(&mut bytes, kv.mod_revision);
        put_varint(&mut bytes, kv.version);
        put_varint(&mut bytes, kv.lease.unwrap_or(0));
        bytes.extend_from_slice(&kv.value);
        Packed(bytes.into_boxed_slice())
    }

    /// Where the key starts and ends.
    fn key_span(&self) -> (usize, usize) {
        let mut at = 0;
        let len = get_varint(&self.0, &mut at) as usize;
        (at, at + len)
    }

    fn fields(&self) -> Fields {
        let (_, mut at) = self.key_span();
        Fields {
            create_revision: get_varint(&self.0, &mut at),
            mod_revision: get_varint(&self.0, &mut at),
            version: get_varint(&self.0, &mut at),
            lease: get_varint(&self.0, &mut at),
            value_at: at,
        }
    }

    pub(super) fn key(&self) -> &[u8] {
        let (start, end) = self.key_span();
        &self.0[start..end]
    }

    pub(super) fn value(&self) -> &[u8] {
        &self.0[self.fields().value_at..]
    }

    pub(super) fn lease(&self) -> Option<LeaseId> {
        let lease = self.fields().lease;
        (lease != 0).then_some(lease)
    }

    pub(super) fn to_kv(&self) -> KeyValue {
        let fields = self.fields();
        KeyValue {
            key: self.key().to_vec(),
            value: self.0[fields.value_at..].to_vec(),
            create_revision: fields.create_revision,
            mod_revision: fields.mod_revision,
            version: fields.version,
            lease: (fields.lease != 0).then_some(fields.lease),
        }
    }

    /// Bytes of key and value.
    fn size(&self) -> u64 {
        let (start, end) = self.key_span();
        ((end - start) + (self.0.len() - self.fields().value_at)) as u64
    }
}

impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Packed {}

impl PartialOrd for Packed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Packed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl std::borrow::Borrow<[u8]> for Packed {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// The live keys in key order.
#[derive(Debug, Default)]
pub(super) struct LiveKeys {
    keys: BTreeSet<Packed>,
    /// Bytes of keys and values held, for the snapshot policy.
    bytes: u64,
}

impl LiveKeys {
    pub(super) fn get(&self, key: &[u8]) -> Option<&Packed> {
        self.keys.get(key)
    }

    pub(super) fn insert(&mut self, kv: KeyValue) {
        let packed = Packed::new(&kv);
        self.bytes += packed.size();
        if let Some(old) = self.keys.replace(packed) {
            self.bytes -= old.size();
        }
    }

    pub(super) fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.keys.take(key) {
            self.bytes -= old.size();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The keys starting with `prefix`, in order.
    pub(super) fn with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = &'a Packed> + 'a {
        self.keys
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |packed| in_prefix(packed.key(), prefix))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Packed> {
        self.keys.iter()
    }
}

#[cfg(test)]
mod tests {
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
    fn packing_keeps_every_field() {
        for original in [
            kv("v/i/web/a", "{\"port\":80}", Some(42)),
            kv("", "", None),
            kv("x/id/a", "", None),
            kv(&"k".repeat(300), &"v".repeat(1000), Some(u64::MAX)),
        ] {
            let packed = Packed::new(&original);
            assert_eq!(packed.key(), original.key.as_slice());
            assert_eq!(packed.value(), original.value.as_slice());
            assert_eq!(packed.lease(), original.lease);
            assert_eq!(packed.to_kv(), original);
        }
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
        let in_b: Vec<&[u8]> = live.with_prefix(b"b/").map(Packed::key).collect();
        assert_eq!(in_b, vec![b"b/1".as_slice(), b"b/2".as_slice()]);
        assert_eq!(
            live.get(b"b/1").map(Packed::to_kv),
            Some(kv("b/1", "z", Some(7)))
        );
        live.remove(b"b/2");
        live.remove(b"absent");
        assert_eq!(live.len(), 2);
        assert_eq!(live.bytes(), 3 + 1 + 3 + 1);
        assert!(live.get(b"b/2").is_none());
    }
}
