//! The at-rest codec: **the hook where encryption at rest plugs in.**
//!
//! Every log entry and every snapshot (its meta and its data) passes through a [`Codec`] on its way
//! to and from the redb file. [`PlainCodec`] is the identity; [`AeadCodec`] encrypts with
//! ChaCha20-Poly1305 under the manager's 32-byte data key (`shoal_ca::DataKey`, which autolock
//! may wrap under the unlock key). Hand either to
//! [`RaftNode::open_with_codec`](crate::RaftNode::open_with_codec).
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
//!
//! [`AeadCodec`] record layout (nonce random per record, so sealing the same bytes twice gives
//! different records):
//!
//! ```text
//!  sealed = 0x01 │ nonce (12 bytes) │ ChaCha20-Poly1305(key, nonce, plain, aad) incl. 16-byte tag
//!  aad    = "shoal-raft aead v1" │ kind (1 = log entry, 2 = snapshot meta, 3 = snapshot data)
//!                                │ index (u64 big-endian, log entries only)
//! ```
//!
//! A wrong key, a flipped bit, or a record moved to another index or kind fails to open.
//! During a data-key rotation, [`AeadCodec::with_previous_key`] also opens records sealed with
//! the old key; new records are always sealed with the current one.

use std::fmt;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};

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

/// Encryption at rest: ChaCha20-Poly1305 under a 32-byte data key, a fresh random nonce per
/// record, and the record's kind and index as associated data (see the module docs).
pub struct AeadCodec {
    current: ChaCha20Poly1305,
    previous: Option<ChaCha20Poly1305>,
}

impl fmt::Debug for AeadCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadCodec")
            .field("previous_key", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl AeadCodec {
    const VERSION: u8 = 1;
    const NONCE_LEN: usize = 12;
    const TAG_LEN: usize = 16;
    const AAD_PREFIX: &[u8] = b"shoal-raft aead v1";

    /// A codec sealing and opening with `key` (the manager's data key).
    pub fn new(key: &[u8; 32]) -> AeadCodec {
        AeadCodec {
            current: ChaCha20Poly1305::new(key.into()),
            previous: None,
        }
    }

    /// Also open records sealed with `previous` (the data key being rotated away). Sealing
    /// still uses only the current key.
    pub fn with_previous_key(mut self, previous: &[u8; 32]) -> AeadCodec {
        self.previous = Some(ChaCha20Poly1305::new(previous.into()));
        self
    }

    fn aad(kind: RecordKind) -> Vec<u8> {
        let mut aad = Vec::with_capacity(Self::AAD_PREFIX.len() + 9);
        aad.extend_from_slice(Self::AAD_PREFIX);
        match kind {
            RecordKind::LogEntry { index } => {
                aad.push(1);
                aad.extend_from_slice(&index.to_be_bytes());
            }
            RecordKind::SnapshotMeta => aad.push(2),
            RecordKind::SnapshotData => aad.push(3),
        }
        aad
    }
}

impl Codec for AeadCodec {
    fn id(&self) -> &str {
        "chacha20poly1305-v1"
    }

    fn seal(&self, kind: RecordKind, plain: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        let fail = |reason: &str| CodecError {
            kind,
            reason: reason.to_owned(),
        };
        let mut nonce = [0u8; Self::NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|e| fail(&format!("no random nonce from the OS: {e}")))?;
        let aad = Self::aad(kind);
        let ct = self
            .current
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| fail("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + Self::NONCE_LEN + ct.len());
        out.push(Self::VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open(&self, kind: RecordKind, sealed: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        let fail = |reason: &str| CodecError {
            kind,
            reason: reason.to_owned(),
        };
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(fail("empty record"));
        };
        if version != Self::VERSION {
            return Err(fail(&format!(
                "unknown record format {version} (expected {})",
                Self::VERSION
            )));
        }
        if rest.len() < Self::NONCE_LEN + Self::TAG_LEN {
            return Err(fail("record too short to be sealed"));
        }
        let (nonce, ct) = rest.split_at(Self::NONCE_LEN);
        let nonce = Nonce::from_slice(nonce);
        let aad = Self::aad(kind);
        let payload = || Payload { msg: ct, aad: &aad };
        if let Ok(plain) = self.current.decrypt(nonce, payload()) {
            return Ok(plain);
        }
        if let Some(prev) = &self.previous {
            if let Ok(plain) = prev.decrypt(nonce, payload()) {
                return Ok(plain);
            }
        }
        Err(fail(
            "cannot decrypt: wrong data key, or the record was altered or moved from another position",
        ))
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

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn aead_round_trips_every_kind() {
        let c = AeadCodec::new(&key(1));
        assert_eq!(c.id(), "chacha20poly1305-v1");
        for kind in [
            RecordKind::LogEntry { index: 0 },
            RecordKind::LogEntry { index: u64::MAX },
            RecordKind::SnapshotMeta,
            RecordKind::SnapshotData,
        ] {
            for plain in [Vec::new(), b"entry".to_vec(), vec![7u8; 100_000]] {
                let sealed = c.seal(kind, plain.clone()).unwrap();
                assert_eq!(sealed.len(), plain.len() + 1 + 12 + 16);
                if plain.len() >= 5 {
                    assert!(
                        !sealed.windows(5).any(|w| w == &plain[..5]),
                        "plaintext visible"
                    );
                }
                assert_eq!(c.open(kind, sealed).unwrap(), plain);
            }
        }
        // A fresh nonce per record: the same input seals differently.
        let k = RecordKind::LogEntry { index: 3 };
        assert_ne!(
            c.seal(k, b"x".to_vec()).unwrap(),
            c.seal(k, b"x".to_vec()).unwrap()
        );
    }

    #[test]
    fn aead_detects_tampering() {
        let c = AeadCodec::new(&key(1));
        let k = RecordKind::LogEntry { index: 9 };
        let sealed = c.seal(k, b"the cluster state".to_vec()).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = c.open(k, bad).unwrap_err();
            assert_eq!(err.kind, k);
        }
        let mut truncated = sealed.clone();
        truncated.pop();
        assert!(c.open(k, truncated).is_err());
        assert!(c.open(k, Vec::new()).unwrap_err().reason.contains("empty"));
        assert!(c
            .open(k, vec![1; 10])
            .unwrap_err()
            .reason
            .contains("too short"));
        // A plain record is not mistaken for a sealed one.
        assert!(c
            .open(k, b"plain bytes that are long enough to parse".to_vec())
            .is_err());
    }

    #[test]
    fn aead_refuses_the_wrong_key() {
        let k = RecordKind::SnapshotData;
        let sealed = AeadCodec::new(&key(1)).seal(k, b"secret".to_vec()).unwrap();
        let err = AeadCodec::new(&key(2)).open(k, sealed).unwrap_err();
        assert!(err.reason.contains("wrong data key"), "{err}");
        assert_eq!(err.to_string().split(':').next(), Some("snapshot data"));
    }

    #[test]
    fn aead_refuses_a_record_moved_to_another_index_or_kind() {
        let c = AeadCodec::new(&key(1));
        let sealed = c
            .seal(RecordKind::LogEntry { index: 5 }, b"entry 5".to_vec())
            .unwrap();
        assert!(c
            .open(RecordKind::LogEntry { index: 6 }, sealed.clone())
            .is_err());
        assert!(c
            .open(
                RecordKind::LogEntry {
                    index: 5 + (1 << 32)
                },
                sealed.clone()
            )
            .is_err());
        assert!(c.open(RecordKind::SnapshotData, sealed.clone()).is_err());
        let meta = c.seal(RecordKind::SnapshotMeta, b"meta".to_vec()).unwrap();
        assert!(c.open(RecordKind::SnapshotData, meta.clone()).is_err());
        assert_eq!(c.open(RecordKind::SnapshotMeta, meta).unwrap(), b"meta");
        assert_eq!(
            c.open(RecordKind::LogEntry { index: 5 }, sealed).unwrap(),
            b"entry 5"
        );
    }

    #[test]
    fn aead_opens_old_records_during_a_key_rotation() {
        let k = RecordKind::LogEntry { index: 1 };
        let old = AeadCodec::new(&key(1)).seal(k, b"old".to_vec()).unwrap();
        let rotating = AeadCodec::new(&key(2)).with_previous_key(&key(1));
        assert_eq!(rotating.open(k, old.clone()).unwrap(), b"old");
        let new = rotating.seal(k, b"new".to_vec()).unwrap();
        assert_eq!(
            AeadCodec::new(&key(2)).open(k, new.clone()).unwrap(),
            b"new"
        );
        assert!(
            AeadCodec::new(&key(1)).open(k, new).is_err(),
            "sealed with the current key only"
        );
        assert!(
            AeadCodec::new(&key(2)).open(k, old).is_err(),
            "old key forgotten after rotation"
        );
    }
}
