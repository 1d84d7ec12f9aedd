//! The at-rest codec: **the hook where encryption at rest plugs in.**
//!
//! Every log entry and every snapshot (its meta and its data) passes through a [`Codec`] on its way
//! to and from the redb file. Today the only implementation is [`PlainCodec`], the identity. A
//! later issue adds an encrypting codec (an AEAD keyed by the cluster's unlock key); it only has to
//! implement this trait and be handed to [`RaftNode::open_with_codec`](crate::RaftNode::open_with_codec).
//!
//! ```text
//!  openraft Entry / Snapshot
//!        │ postcard (serde)                 ▲ postcard
//!        ▼                                  │
//!  plain bytes ──► Codec::seal(kind, ..) ──► sealed bytes ──► redb value
//!  plain bytes ◄── Codec::open(kind, ..) ◄── sealed bytes ◄── redb value
//! ```
//!
//! The [`RecordKind`] tells the codec what it is sealing, and for a log entry at which index, so an
//! AEAD can bind the record's position as associated data (a sealed entry copied to another index
//! then fails to open instead of silently replaying).
//!
//! The codec's [`Codec::id`] is written into the file when it is created; opening a file with a
//! codec of another id is refused (`RaftError::Storage`), so a plain file is never read as an
//! encrypted one or the reverse. Votes and the committed index are not sealed: they carry no
//! cluster data.

use std::fmt;

/// What a sealed record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A Raft log entry at this index.
    LogEntry {
        /// The entry's log index.
        index: u64,
    },
    /// The metadata of the stored snapshot (last log id, membership, id).
    SnapshotMeta,
    /// The bytes of the stored snapshot (the state machine's serialized state).
    SnapshotData,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKind::LogEntry { index } => write!(f, "log entry {index}"),
            RecordKind::SnapshotMeta => f.write_str("snapshot meta"),
            RecordKind::SnapshotData => f.write_str("snapshot data"),
        }
    }
}

/// A codec failure: the record could not be sealed or opened (wrong key, tampered or corrupt data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct CodecError {
    /// The record concerned.
    pub kind: RecordKind,
    /// What went wrong.
    pub reason: String,
}

/// Wraps every stored log entry and snapshot. Implementations must be deterministic in what
/// `open` returns (`open(seal(x)) == x`) and must fail, not panic, on data they cannot open.
pub trait Codec: Send + Sync + 'static {
    /// A stable name for this codec and its format, stored in the file at creation.
    fn id(&self) -> &str;
    /// Turn plain bytes into what is stored.
    fn seal(&self, kind: RecordKind, plain: Vec<u8>) -> Result<Vec<u8>, CodecError>;
    /// Turn stored bytes back into plain bytes.
    fn open(&self, kind: RecordKind, sealed: Vec<u8>) -> Result<Vec<u8>, CodecError>;
}

/// The identity codec: records are stored as they are. The default until encryption at rest lands.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainCodec;

impl Codec for PlainCodec {
    fn id(&self) -> &str {
        "plain"
    }

    fn seal(&self, _kind: RecordKind, plain: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        Ok(plain)
    }

    fn open(&self, _kind: RecordKind, sealed: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_codec_is_identity() {
        let c = PlainCodec;
        let k = RecordKind::LogEntry { index: 7 };
        let sealed = c.seal(k, b"abc".to_vec()).unwrap();
        assert_eq!(c.open(k, sealed).unwrap(), b"abc");
        assert_eq!(c.id(), "plain");
        assert_eq!(k.to_string(), "log entry 7");
    }
}
