//! The backup file: what `cdctl snapshot save` writes and `cd-registry
//! restore` reads. Defined here, beside the wire contract, because it is the
//! `SaveSnapshot` stream on disk:
//!
//! ```text
//! "SWYSNAP2"                      8 bytes of magic
//! SnapshotChunk, length-delimited  repeated; the last one has `complete`
//! HMAC-SHA256                      32 bytes, of every byte before it
//! ```
//!
//! The MAC, under a key the operator keeps ([`BackupKey`]), makes a
//! truncated, damaged or crafted file fail loudly on restore: a backup holds
//! token hashes and deployment records, so one changed by someone without
//! the key could otherwise inject an admin token or a paused deploy.
//! Format 1 (`SWYSNAP1`, a CRC-32 trailer) is read only when the operator
//! says it trusts the file (`restore --allow-unsigned`).

use std::io::{self, Write};
use std::path::Path;

use prost::Message;
use ring::hmac;

use crate::v1;

/// The first bytes of every backup file written now (format 2).
pub const MAGIC: &[u8; 8] = b"SWYSNAP2";
/// Format 1: a CRC-32 trailer, no MAC.
const MAGIC_UNSIGNED: &[u8; 8] = b"SWYSNAP1";
/// Shortest key file accepted, in bytes.
const MIN_KEY_BYTES: usize = 32;

/// The key backups are signed and checked with: the bytes of a file the
/// operator keeps (`openssl rand -hex 32 > backup.key`), trimmed.
#[derive(Clone)]
pub struct BackupKey(hmac::Key);

impl BackupKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BackupError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_BYTES {
            return Err(BackupError::WeakKey(trimmed.len()));
        }
        Ok(BackupKey(hmac::Key::new(hmac::HMAC_SHA256, trimmed)))
    }

    pub fn from_file(path: &Path) -> Result<Self, BackupError> {
        let bytes = std::fs::read(path)
            .map_err(|error| BackupError::Key(format!("{}: {error}", path.display())))?;
        Self::from_bytes(&bytes)
    }
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(…)")
    }
}

/// Why a backup file cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "not a Switchyard backup (it does not start with {MAGIC:?}): take one with `cdctl snapshot save FILE`"
    )]
    NotABackup,
    #[error(
        "the backup is damaged: its checksum does not match (expected {expected:08x}, found \
         {found:08x}); use another copy"
    )]
    Checksum { expected: u32, found: u32 },
    #[error("the backup is truncated or damaged ({0}); use another copy")]
    Damaged(String),
    #[error("the backup is incomplete: its last part is missing; take it again")]
    Incomplete,
    #[error(
        "the backup's signature does not match this key: it is damaged or truncated, was \
         changed after it was written, or was signed with another key; use another copy or \
         the right --backup-key"
    )]
    Signature,
    #[error(
        "the backup is unsigned (format 1, written before backups were signed): restore it \
         with --allow-unsigned only if you are sure nobody could have changed it"
    )]
    Unsigned,
    #[error("the backup key has {0} bytes; use at least 32 (`openssl rand -hex 32 > backup.key`)")]
    WeakKey(usize),
    #[error("reading the backup key {0}")]
    Key(String),
}

/// A backup read back: its revision and every stored key, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub revision: u64,
    pub taken_at_ms: u64,
    pub entries: Vec<v1::StoredKey>,
}

/// Writes a backup file part by part, signed with a [`BackupKey`].
pub struct BackupWriter<W: Write> {
    out: W,
    mac: hmac::Context,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W, key: &BackupKey) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        let mut mac = hmac::Context::with_key(&key.0);
        mac.update(MAGIC);
        Ok(BackupWriter { out, mac })
    }

    pub fn write_chunk(&mut self, chunk: &v1::SnapshotChunk) -> io::Result<()> {
        let bytes = chunk.encode_length_delimited_to_vec();
        self.mac.update(&bytes);
        self.out.write_all(&bytes)
    }

    /// Writes the signature; answers the writer (flush or sync it).
    pub fn finish(mut self) -> io::Result<W> {
        let tag = self.mac.sign();
        self.out.write_all(tag.as_ref())?;
        Ok(self.out)
    }
}

/// How a backup file's integrity is checked on reading.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Its signature under this key (format 2).
    Signed(BackupKey),
    /// Also a format-1 file's CRC, when the operator vouches for it.
    SignedOrUnsigned(BackupKey),
}

/// The parts of `bytes` after the magic, once their trailer checks out.
fn verified<'a>(bytes: &'a [u8], trust: &Trust) -> Result<&'a [u8], BackupError> {
    let key = match trust {
        Trust::Signed(key) | Trust::SignedOrUnsigned(key) => key,
    };
    if let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) {
        let tag_len = hmac::HMAC_SHA256.digest_algorithm().output_len();
        if body.len() < tag_len {
            return Err(BackupError::Damaged("no signature".into()));
        }
        let (signed, tag) = bytes.split_at(bytes.len() - tag_len);
        hmac::verify(&key.0, signed, tag).map_err(|_| BackupError::Signature)?;
        return Ok(&body[..body.len() - tag_len]);
    }
    let body = bytes
        .strip_prefix(MAGIC_UNSIGNED.as_slice())
        .ok_or(BackupError::NotABackup)?;
    if !matches!(trust, Trust::SignedOrUnsigned(_)) {
        return Err(BackupError::Unsigned);
    }
    if body.len() < 4 {
        return Err(BackupError::Damaged("no checksum".into()));
    }
    let (chunks, trailer) = body.split_at(body.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(trailer);
    let expected = u32::from_be_bytes(stored);
    let found = crc32fast::hash(&bytes[..bytes.len() - 4]);
    if expected != found {
        return Err(BackupError::Checksum { expected, found });
    }
    Ok(chunks)
}

/// Reads a whole backup file and checks it as `trust` says.
pub fn read_backup(bytes: &[u8], trust: &Trust) -> Result<Backup, BackupError> {
    let mut chunks = verified(bytes, trust)?;
    let mut backup: Option<Backup> = None;
    let mut complete = false;
    while !chunks.is_empty() {
        if complete {
            return Err(BackupError::Damaged("parts after the last one".into()));
        }
        let chunk = v1::SnapshotChunk::decode_length_delimited(&mut chunks)
            .map_err(|error| BackupError::Damaged(error.to_string()))?;
        let backup = backup.get_or_insert_with(|| Backup {
            revision: chunk.revision,
            taken_at_ms: chunk.taken_at_ms,
            entries: Vec::new(),
        });
        if chunk.revision != backup.revision {
            return Err(BackupError::Damaged(format!(
                "parts of revisions {} and {}",
                backup.revision, chunk.revision
            )));
        }
        backup.entries.extend(chunk.entries);
        complete = chunk.complete;
    }
    match backup {
        Some(backup) if complete => Ok(backup),
        _ => Err(BackupError::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(revision: u64, keys: &[&str], complete: bool) -> v1::SnapshotChunk {
        v1::SnapshotChunk {
            revision,
            entries: keys
                .iter()
                .map(|key| v1::StoredKey {
                    key: key.as_bytes().to_vec(),
                    value: b"value".to_vec(),
                    create_revision: 1,
                    mod_revision: 2,
                    version: 1,
                })
                .collect(),
            complete,
            taken_at_ms: 42,
        }
    }

    fn key() -> BackupKey {
        BackupKey::from_bytes(b"0123456789abcdef0123456789abcdef").expect("a key")
    }

    fn file(chunks: &[v1::SnapshotChunk]) -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new(), &key()).expect("magic");
        for chunk in chunks {
            writer.write_chunk(chunk).expect("chunk");
        }
        writer.finish().expect("signature")
    }

    /// A format-1 file: the same parts with a CRC-32 trailer.
    fn unsigned_file(chunks: &[v1::SnapshotChunk]) -> Vec<u8> {
        let mut bytes = MAGIC_UNSIGNED.to_vec();
        for chunk in chunks {
            bytes.extend(chunk.encode_length_delimited_to_vec());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend(crc.to_be_bytes());
        bytes
    }

    fn read(bytes: &[u8]) -> Result<Backup, BackupError> {
        read_backup(bytes, &Trust::Signed(key()))
    }

    #[test]
    fn a_backup_reads_back_whole() {
        let bytes = file(&[chunk(7, &["a", "b"], false), chunk(7, &["c"], true)]);
        let backup = read(&bytes).expect("reads");
        assert_eq!(backup.revision, 7);
        assert_eq!(backup.taken_at_ms, 42);
        let keys: Vec<&[u8]> = backup.entries.iter().map(|e| e.key.as_slice()).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b", b"c"]);
    }

    #[test]
    fn damaged_truncated_and_foreign_files_are_refused() {
        let bytes = file(&[chunk(7, &["a"], true)]);
        assert!(matches!(read(b"hello"), Err(BackupError::NotABackup)));
        for cut in [9, bytes.len() / 2, bytes.len() - 1] {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[12] ^= 0x40;
        assert!(matches!(read(&flipped), Err(BackupError::Signature)));
        let unfinished = file(&[chunk(7, &["a"], false)]);
        assert!(matches!(read(&unfinished), Err(BackupError::Incomplete)));
        let mixed = file(&[chunk(7, &["a"], false), chunk(8, &["b"], true)]);
        assert!(matches!(read(&mixed), Err(BackupError::Damaged(_))));
    }

    #[test]
    fn another_key_or_an_unsigned_file_is_refused_unless_vouched_for() {
        let bytes = file(&[chunk(7, &["a"], true)]);
        let other = BackupKey::from_bytes(b"another key, also 32 bytes long!").expect("key");
        assert!(matches!(
            read_backup(&bytes, &Trust::Signed(other)),
            Err(BackupError::Signature)
        ));
        let old = unsigned_file(&[chunk(7, &["a"], true)]);
        assert!(matches!(read(&old), Err(BackupError::Unsigned)));
        let vouched = read_backup(&old, &Trust::SignedOrUnsigned(key())).expect("vouched");
        assert_eq!(vouched.revision, 7);
        let mut damaged = old.clone();
        damaged[12] ^= 0x40;
        assert!(matches!(
            read_backup(&damaged, &Trust::SignedOrUnsigned(key())),
            Err(BackupError::Checksum { .. })
        ));
        assert!(matches!(
            BackupKey::from_bytes(b"short\n"),
            Err(BackupError::WeakKey(5))
        ));
    }
}
