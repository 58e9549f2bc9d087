//! The on-disk encoding of stored keys and watch history: fixed-width
//! little-endian headers followed by the bytes, so decoding is a few slices
//! and any truncation is detected rather than misread.

use super::{Event, EventKind, KeyValue, StoreError};

const HEADER: usize = 8 * 4;

fn corrupt(what: &str) -> StoreError {
    StoreError::Storage(format!(
        "corrupt {what} on disk: restore the data directory from a backup or start empty"
    ))
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < len {
            return Err(corrupt(self.what));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let bytes = self.take(8)?;
        let array: [u8; 8] = bytes.try_into().map_err(|_| corrupt(self.what))?;
        Ok(u64::from_le_bytes(array))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let bytes = self.take(4)?;
        let array: [u8; 4] = bytes.try_into().map_err(|_| corrupt(self.what))?;
        Ok(u32::from_le_bytes(array))
    }

    fn blob(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

fn put_header(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
}

fn put_blob(out: &mut Vec<u8>, blob: &[u8]) {
    // Keys and values are bounded far below 4 GiB by the request size limit.
    let len = u32::try_from(blob.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(blob);
}

/// A stored key's record; the key itself is the sled key.
pub fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + kv.value.len());
    put_header(&mut out, kv);
    out.extend_from_slice(&kv.value);
    out
}

pub fn decode_kv(key: &[u8], bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let mut reader = Reader {
        bytes,
        what: "key record",
    };
    let create_revision = reader.u64()?;
    let mod_revision = reader.u64()?;
    let version = reader.u64()?;
    let lease = reader.u64()?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: reader.bytes.to_vec(),
        create_revision,
        mod_revision,
        version,
        lease: (lease != 0).then_some(lease),
    })
}

/// The events of one revision.
pub fn encode_events(events: &[Event]) -> Vec<u8> {
    encode_records(events.iter().map(|event| (event.kind, &event.kv)))
}

/// Live keys as puts, in the history entry's format: one chunk of a
/// snapshot decodes with [`decode_events`].
pub fn encode_puts<'a>(kvs: impl ExactSizeIterator<Item = &'a KeyValue>) -> Vec<u8> {
    encode_records(kvs.map(|kv| (EventKind::Put, kv)))
}

fn encode_records<'a>(
    records: impl ExactSizeIterator<Item = (EventKind, &'a KeyValue)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for (kind, kv) in records {
        out.push(match kind {
            EventKind::Put => 1,
            EventKind::Delete => 2,
        });
        put_header(&mut out, kv);
        put_blob(&mut out, &kv.key);
        put_blob(&mut out, &kv.value);
    }
    out
}

pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, StoreError> {
    let mut reader = Reader {
        bytes,
        what: "history entry",
    };
    let count = reader.u64()?;
    let mut events = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let kind = match reader.take(1)? {
            [1] => EventKind::Put,
            [2] => EventKind::Delete,
            _ => return Err(corrupt("history entry")),
        };
        let create_revision = reader.u64()?;
        let mod_revision = reader.u64()?;
        let version = reader.u64()?;
        let lease = reader.u64()?;
        let key = reader.blob()?.to_vec();
        let value = reader.blob()?.to_vec();
        events.push(Event {
            kind,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
                version,
                lease: (lease != 0).then_some(lease),
            },
        });
    }
    Ok(events)
}

/// A history entry or snapshot chunk as stored: the encoding above, LZ4
/// compressed (keys share prefixes and records share most fields, so a
/// 1,000-instance entry shrinks several times, and sled keeps recently
/// written values in memory).
pub fn compress(encoded: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(encoded)
}

/// The events of a history entry or snapshot chunk written by [`compress`].
pub fn decode_compressed_events(bytes: &[u8]) -> Result<Vec<Event>, StoreError> {
    let encoded = lz4_flex::block::decompress_size_prepended(bytes)
        .map_err(|_| corrupt("compressed history entry"))?;
    decode_events(&encoded)
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

pub fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    Reader {
        bytes,
        what: "number",
    }
    .u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &str, value: &str, lease: Option<u64>) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease,
        }
    }

    #[test]
    fn key_records_round_trip() {
        let kv = sample("v/s/web", "{}", Some(42));
        assert_eq!(decode_kv(&kv.key, &encode_kv(&kv)).ok(), Some(kv));
    }

    #[test]
    fn history_round_trips_and_truncation_is_caught() {
        let events = vec![
            Event {
                kind: EventKind::Put,
                kv: sample("a", "1", None),
            },
            Event {
                kind: EventKind::Delete,
                kv: sample("b", "", Some(7)),
            },
        ];
        let bytes = encode_events(&events);
        assert_eq!(decode_events(&bytes).ok(), Some(events));
        for cut in [1, 9, bytes.len() - 1] {
            assert!(decode_events(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn compressed_history_round_trips_and_damage_is_caught() {
        let events: Vec<Event> = (0..200)
            .map(|n| Event {
                kind: EventKind::Put,
                kv: sample(
                    &format!("v/i/web/web-{n}"),
                    "{\"address\":\"10.0.0.1\"}",
                    Some(9),
                ),
            })
            .collect();
        let plain = encode_events(&events);
        let stored = compress(&plain);
        assert!(
            stored.len() * 3 < plain.len(),
            "{} of {}",
            stored.len(),
            plain.len()
        );
        assert_eq!(decode_compressed_events(&stored).ok(), Some(events));
        assert!(decode_compressed_events(&stored[..stored.len() / 2]).is_err());
        assert!(decode_compressed_events(&plain).is_err());
    }
}
