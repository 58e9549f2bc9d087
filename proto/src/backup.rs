//! The backup file: what `cdctl snapshot save` writes and `cd-registry
//! restore` reads. Defined here, beside the wire contract, because it is the
//! `SaveSnapshot` stream on disk:
//!
//! ```text
//! "SWYSNAP1"                      8 bytes of magic
//! SnapshotChunk, length-delimited  repeated; the last one has `complete`
//! CRC-32 (IEEE), big-endian        of every byte before it
//! ```
//!
//! The checksum makes a truncated or damaged file fail loudly on restore
//! instead of restoring part of a registry.

use std::io::{self, Write};

use prost::Message;

use crate::v1;

/// The first bytes of every backup file (format 1).
pub const MAGIC: &[u8; 8] = b"SWYSNAP1";

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
}

/// A backup read back: its revision and every stored key, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub revision: u64,
    pub taken_at_ms: u64,
    pub entries: Vec<v1::StoredKey>,
}

/// Writes a backup file part by part.
pub struct BackupWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(MAGIC);
        Ok(BackupWriter { out, crc })
    }

    pub fn write_chunk(&mut self, chunk: &v1::SnapshotChunk) -> io::Result<()> {
        let bytes = chunk.encode_length_delimited_to_vec();
        self.crc.update(&bytes);
        self.out.write_all(&bytes)
    }

    /// Writes the checksum; answers the writer (flush or sync it).
    pub fn finish(mut self) -> io::Result<W> {
        let crc = self.crc.finalize();
        self.out.write_all(&crc.to_be_bytes())?;
        Ok(self.out)
    }
}

/// Reads a whole backup file and checks it.
pub fn read_backup(bytes: &[u8]) -> Result<Backup, BackupError> {
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(BackupError::NotABackup)?;
    if body.len() < 4 {
        return Err(BackupError::Damaged("no checksum".into()));
    }
    let (mut chunks, trailer) = body.split_at(body.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(trailer);
    let expected = u32::from_be_bytes(stored);
    let found = crc32fast::hash(&bytes[..bytes.len() - 4]);
    if expected != found {
        return Err(BackupError::Checksum { expected, found });
    }
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

    fn file(chunks: &[v1::SnapshotChunk]) -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new()).expect("magic");
        for chunk in chunks {
            writer.write_chunk(chunk).expect("chunk");
        }
        writer.finish().expect("crc")
    }

    #[test]
    fn a_backup_reads_back_whole() {
        let bytes = file(&[chunk(7, &["a", "b"], false), chunk(7, &["c"], true)]);
        let backup = read_backup(&bytes).expect("reads");
        assert_eq!(backup.revision, 7);
        assert_eq!(backup.taken_at_ms, 42);
        let keys: Vec<&[u8]> = backup.entries.iter().map(|e| e.key.as_slice()).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b", b"c"]);
    }

    #[test]
    fn damaged_truncated_and_foreign_files_are_refused() {
        let bytes = file(&[chunk(7, &["a"], true)]);
        assert!(matches!(
            read_backup(b"hello"),
            Err(BackupError::NotABackup)
        ));
        for cut in [9, bytes.len() / 2, bytes.len() - 1] {
            assert!(read_backup(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[12] ^= 0x40;
        assert!(matches!(
            read_backup(&flipped),
            Err(BackupError::Checksum { .. })
        ));
        let unfinished = file(&[chunk(7, &["a"], false)]);
        assert!(matches!(
            read_backup(&unfinished),
            Err(BackupError::Incomplete)
        ));
        let mixed = file(&[chunk(7, &["a"], false), chunk(8, &["b"], true)]);
        assert!(matches!(read_backup(&mixed), Err(BackupError::Damaged(_))));
    }
}
