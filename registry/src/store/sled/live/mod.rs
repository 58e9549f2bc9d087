//! The live keys in memory, front-coded in sorted blocks.
//!
//! Held one allocation per key (key, revisions and value packed together, in
//! a B-tree set), 100k instances (300k keys) took about 28 MiB, about half of
//! it the allocator's size-class rounding and the B-tree's slots rather than
//! data. Neighbouring keys share long prefixes (`v/i/{service}/`,
//! `x/nd/{node}/`), so the keys are kept as sorted blocks of about
//! [`BLOCK_BYTES`] (a single larger entry is a block of its own): each entry
//! stores only what its key adds to the key before it (front coding, as in
//! LevelDB's blocks), then its revisions, version and lease as varints, then
//! its value. A block's first key is stored whole, so every block decodes on
//! its own; the blocks are found by their first key. The registry's RSS after
//! 100k instances went from 54 to 41 MiB.
//!
//! The price is CPU: a write re-encodes its block (about 2.5 µs a key,
//! against a fraction of that in the set) and a lookup decodes up to a
//! block's entries (about 1 µs). 4 KiB blocks saved another 0.7 MiB and
//! were 10% slower; 1 KiB blocks were twice as fast and took 0.4 MiB
//! more. A lease revoke scans every key without copying them.
//!
//! Entry layout: `shared` (varint: bytes of the previous key it starts
//! with), `suffix length` (varint), the suffix, then the rest:
//! `create_revision`, `mod_revision`, `version`, `lease` (0: none), the
//! value's length (all varints), and the value.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::store::{KeyValue, LeaseId, in_prefix};

/// A block is split once it grows past this many bytes.
const BLOCK_BYTES: usize = 2048;
/// A block that shrinks below this is merged with the one after it.
const MERGE_BELOW: usize = BLOCK_BYTES / 4;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint written by [`put_varint`] at `*at`, moving `*at` past it.
/// Blocks are only ever written by this module, so it never runs off the
/// end of a well-formed block; on a malformed one it stops at the end.
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

/// The part of an entry after its key, for `kv`.
fn encode_rest(kv: &KeyValue) -> Vec<u8> {
    let mut rest = Vec::with_capacity(kv.value.len() + 24);
    put_varint(&mut rest, kv.create_revision);
    put_varint(&mut rest, kv.mod_revision);
    put_varint(&mut rest, kv.version);
    put_varint(&mut rest, kv.lease.unwrap_or(0));
    put_varint(&mut rest, kv.value.len() as u64);
    rest.extend_from_slice(&kv.value);
    rest
}

/// Appends an entry for `key` (coded against `previous`) with `rest`.
fn encode_entry(out: &mut Vec<u8>, previous: &[u8], key: &[u8], rest: &[u8]) {
    let shared = previous.iter().zip(key).take_while(|(a, b)| a == b).count();
    put_varint(out, shared as u64);
    put_varint(out, (key.len() - shared) as u64);
    out.extend_from_slice(&key[shared..]);
    out.extend_from_slice(rest);
}

/// One entry of a block, decoded in place.
struct Entry {
    /// Where the rest (after the key) starts.
    rest: usize,
    /// Where the next entry starts.
    end: usize,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    lease: u64,
    value_start: usize,
}

impl Entry {
    fn lease(&self) -> Option<LeaseId> {
        (self.lease != 0).then_some(self.lease)
    }

    fn value<'a>(&self, block: &'a [u8]) -> &'a [u8] {
        &block[self.value_start..self.end]
    }

    fn to_kv(&self, key: &[u8], block: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: self.value(block).to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease(),
        }
    }
}

/// Decodes the entry at `at`; `key` holds the previous entry's key (empty
/// at a block's start) and is turned into this entry's key.
fn decode(block: &[u8], at: usize, key: &mut Vec<u8>) -> Entry {
    let mut at = at;
    let shared = get_varint(block, &mut at) as usize;
    let suffix = get_varint(block, &mut at) as usize;
    let suffix_end = (at + suffix).min(block.len());
    key.truncate(shared);
    key.extend_from_slice(&block[at..suffix_end]);
    let rest = suffix_end;
    let mut at = rest;
    let create_revision = get_varint(block, &mut at);
    let mod_revision = get_varint(block, &mut at);
    let version = get_varint(block, &mut at);
    let lease = get_varint(block, &mut at);
    let value_len = get_varint(block, &mut at) as usize;
    let value_start = at;
    Entry {
        rest,
        end: (value_start + value_len).min(block.len()),
        create_revision,
        mod_revision,
        version,
        lease,
        value_start,
    }
}

/// Where a key is, or would go, in a block.
struct Location {
    /// The key before that position (empty at the block's start).
    previous: Vec<u8>,
    /// Where the key's entry starts, or where it would be inserted.
    start: usize,
    /// The key's own entry, if the block has it.
    found: Option<Entry>,
    /// The first entry after the key, with its key.
    next: Option<(Vec<u8>, Entry)>,
}

fn locate(block: &[u8], target: &[u8]) -> Location {
    let mut previous = Vec::new();
    let mut key = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let entry = decode(block, at, &mut key);
        match key.as_slice().cmp(target) {
            std::cmp::Ordering::Less => {
                previous.clear();
                previous.extend_from_slice(&key);
                at = entry.end;
            }
            std::cmp::Ordering::Equal => {
                let next = (entry.end < block.len()).then(|| {
                    let following = decode(block, entry.end, &mut key);
                    (key.clone(), following)
                });
                return Location {
                    previous,
                    start: at,
                    found: Some(entry),
                    next,
                };
            }
            std::cmp::Ordering::Greater => {
                return Location {
                    previous,
                    start: at,
                    found: None,
                    next: Some((key, entry)),
                };
            }
        }
    }
    Location {
        previous,
        start: at,
        found: None,
        next: None,
    }
}

/// Appends the entries of `block` from `next` on, `next` re-coded against
/// `previous` (the key now before it).
fn append_from(out: &mut Vec<u8>, block: &[u8], previous: &[u8], next: Option<(Vec<u8>, Entry)>) {
    if let Some((key, entry)) = next {
        encode_entry(out, previous, &key, &block[entry.rest..entry.end]);
        out.extend_from_slice(&block[entry.end..]);
    }
}

/// The first key of a non-empty block.
fn first_key(block: &[u8]) -> Arc<[u8]> {
    let mut key = Vec::new();
    decode(block, 0, &mut key);
    key.into()
}

/// Cuts a block that grew too large in two at the entry nearest its middle.
fn split(block: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let start = at;
        let entry = decode(block, at, &mut key);
        if start >= block.len() / 2 && start > 0 {
            let mut second = Vec::with_capacity(block.len() - start + key.len());
            encode_entry(&mut second, &[], &key, &block[entry.rest..entry.end]);
            second.extend_from_slice(&block[entry.end..]);
            return (block[..start].to_vec(), second);
        }
        at = entry.end;
    }
    (block.to_vec(), Vec::new())
}

/// The live keys in key order.
///
/// A block is never changed in place: a write replaces it. So a clone
/// shares every block (reference counts, no copies) and costs one B-tree of
/// pointers; the blocks a later write replaces are the only ones then held
/// twice. That is what lets a snapshot be written from a frozen copy while
/// writes go on (`snapshot.rs`).
#[derive(Debug, Default, Clone)]
pub(super) struct LiveKeys {
    /// Blocks by their first key.
    blocks: BTreeMap<Arc<[u8]>, Arc<[u8]>>,
    len: usize,
    /// Bytes of keys and values held, for the snapshot policy.
    bytes: u64,
}

impl LiveKeys {
    /// The block that holds `key`, or would: the last one starting at or
    /// before it, else the first.
    fn block_for(&self, key: &[u8]) -> Option<(&[u8], &[u8])> {
        self.blocks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .or_else(|| self.blocks.iter().next())
            .map(|(first, block)| (&first[..], &block[..]))
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<KeyValue> {
        let (_, block) = self.block_for(key)?;
        let location = locate(block, key);
        location.found.map(|entry| entry.to_kv(key, block))
    }

    pub(super) fn insert(&mut self, kv: KeyValue) {
        let rest = encode_rest(&kv);
        let (first, out, replaced, rekey) = match self.block_for(&kv.key) {
            None => {
                let mut block = Vec::with_capacity(kv.key.len() + rest.len() + 4);
                encode_entry(&mut block, &[], &kv.key, &rest);
                (None, block, None, true)
            }
            Some((first, block)) => {
                let location = locate(block, &kv.key);
                let mut out = Vec::with_capacity(block.len() + kv.key.len() + rest.len() + 8);
                out.extend_from_slice(&block[..location.start]);
                encode_entry(&mut out, &location.previous, &kv.key, &rest);
                let replaced = match location.found {
                    // The same key: the entries after it are coded against
                    // the same bytes and stay as they are.
                    Some(old) => {
                        out.extend_from_slice(&block[old.end..]);
                        Some(old.value(block).len())
                    }
                    None => {
                        append_from(&mut out, block, &kv.key, location.next);
                        None
                    }
                };
                // Only an entry written at the block's start changes the
                // key the block is filed under.
                let rekey = location.start == 0;
                (Some(first.to_vec()), out, replaced, rekey)
            }
        };
        match replaced {
            Some(old_value) => self.bytes -= (kv.key.len() + old_value) as u64,
            None => self.len += 1,
        }
        self.bytes += (kv.key.len() + kv.value.len()) as u64;
        if let Some(first) = first {
            if !rekey
                && out.len() <= BLOCK_BYTES
                && let Some(block) = self.blocks.get_mut(first.as_slice())
            {
                *block = out.into();
                return;
            }
            self.blocks.remove(first.as_slice());
        }
        if out.len() > BLOCK_BYTES {
            let (low, high) = split(&out);
            self.store_block(low);
            self.store_block(high);
        } else {
            self.store_block(out);
        }
    }

    pub(super) fn remove(&mut self, key: &[u8]) {
        let Some((first, block)) = self.block_for(key) else {
            return;
        };
        let location = locate(block, key);
        let Some(old) = location.found else {
            return;
        };
        let removed = (key.len() + old.value(block).len()) as u64;
        let first = first.to_vec();
        let mut out = Vec::with_capacity(block.len());
        out.extend_from_slice(&block[..location.start]);
        append_from(&mut out, block, &location.previous, location.next);
        self.len -= 1;
        self.bytes -= removed;
        self.blocks.remove(first.as_slice());
        if out.len() < MERGE_BELOW {
            // The next block's first key is whole, so the two concatenate.
            let after = self
                .blocks
                .range::<[u8], _>((Bound::Excluded(first.as_slice()), Bound::Unbounded))
                .next()
                .filter(|(_, next)| out.len() + next.len() <= BLOCK_BYTES)
                .map(|(next_first, _)| next_first.clone());
            if let Some(next_first) = after
                && let Some(next) = self.blocks.remove(&next_first)
            {
                out.extend_from_slice(&next);
            }
        }
        self.store_block(out);
    }

    /// Files a block under its first key; an empty one is dropped.
    fn store_block(&mut self, block: Vec<u8>) {
        if !block.is_empty() {
            self.blocks.insert(first_key(&block), block.into());
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The keys starting with `prefix`, in order.
    pub(super) fn with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = KeyValue> + 'a {
        let from = self.block_for(prefix).map(|(first, _)| first);
        let blocks = match from {
            Some(first) => self
                .blocks
                .range::<[u8], _>((Bound::Included(first), Bound::Unbounded)),
            None => self
                .blocks
                .range::<[u8], _>((Bound::Unbounded, Bound::Unbounded)),
        };
        Entries::new(blocks.map(|(_, block)| &block[..]), prefix)
            .take_while(move |kv| in_prefix(&kv.key, prefix))
    }

    /// Every key-value, in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = KeyValue> + '_ {
        Entries::new(self.blocks.values().map(|block| &block[..]), &[])
    }

    /// Calls `visit` with each key and its lease, in key order, without
    /// copying anything.
    fn for_each_lease(&self, mut visit: impl FnMut(&[u8], Option<LeaseId>)) {
        let mut key = Vec::new();
        for block in self.blocks.values() {
            key.clear();
            let mut at = 0;
            while at < block.len() {
                let entry = decode(block, at, &mut key);
                visit(&key, entry.lease());
                at = entry.end;
            }
        }
    }

    /// The keys attached to `lease`, in order.
    pub(super) fn keys_with_lease(&self, lease: LeaseId) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        self.for_each_lease(|key, attached| {
            if attached == Some(lease) {
                keys.push(key.to_vec());
            }
        });
        keys
    }

    /// Every lease some key is attached to (with repeats).
    pub(super) fn leases(&self) -> Vec<LeaseId> {
        let mut leases = Vec::new();
        self.for_each_lease(|_, lease| leases.extend(lease));
        leases
    }
}

/// Builds the live keys from key-values in ascending key order (a
/// snapshot's), filling each block once, where [`LiveKeys::insert`]
/// re-encodes a block for every key it takes. A key out of order is
/// inserted instead, and so is every key after it.
#[derive(Default)]
pub(super) struct SortedBuilder {
    keys: LiveKeys,
    /// The block being filled.
    block: Vec<u8>,
    /// The last key taken.
    last: Option<Vec<u8>>,
    unsorted: bool,
}

impl SortedBuilder {
    pub(super) fn push(&mut self, kv: KeyValue) {
        if !self.unsorted && self.last.as_ref().is_some_and(|last| kv.key <= *last) {
            self.store_block();
            self.unsorted = true;
        }
        if self.unsorted {
            self.keys.insert(kv);
            return;
        }
        let rest = encode_rest(&kv);
        if !self.block.is_empty() && self.block.len() + kv.key.len() + rest.len() > BLOCK_BYTES {
            self.store_block();
        }
        let previous = match &self.last {
            Some(last) if !self.block.is_empty() => last.as_slice(),
            _ => &[],
        };
        encode_entry(&mut self.block, previous, &kv.key, &rest);
        self.keys.len += 1;
        self.keys.bytes += (kv.key.len() + kv.value.len()) as u64;
        self.last = Some(kv.key);
    }

    fn store_block(&mut self) {
        let block = std::mem::take(&mut self.block);
        self.keys.store_block(block);
    }

    pub(super) fn finish(mut self) -> LiveKeys {
        self.store_block();
        self.keys
    }
}

/// The entries of a run of blocks from the first key at or after `from`,
/// decoded one by one (those before `from` are skipped without copying).
struct Entries<'a, I> {
    blocks: I,
    block: &'a [u8],
    at: usize,
    key: Vec<u8>,
    from: &'a [u8],
}

impl<'a, I: Iterator<Item = &'a [u8]>> Entries<'a, I> {
    fn new(blocks: I, from: &'a [u8]) -> Self {
        Entries {
            blocks,
            block: &[],
            at: 0,
            key: Vec::new(),
            from,
        }
    }
}

impl<'a, I: Iterator<Item = &'a [u8]>> Iterator for Entries<'a, I> {
    type Item = KeyValue;

    fn next(&mut self) -> Option<KeyValue> {
        loop {
            while self.at >= self.block.len() {
                self.block = self.blocks.next()?;
                self.at = 0;
                self.key.clear();
            }
            let entry = decode(self.block, self.at, &mut self.key);
            self.at = entry.end;
            if self.key.as_slice() >= self.from {
                self.from = &[];
                return Some(entry.to_kv(&self.key, self.block));
            }
        }
    }
}

#[cfg(test)]
mod tests;
