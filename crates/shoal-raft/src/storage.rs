//! The redb file under the log: entries, vote, committed index and the latest snapshot.
//!
//! One file, `<dir>/raft.redb`, three tables:
//!
//! ```text
//!  raft_log       u64 index ─► Codec::seal(postcard(Entry))         the log, holes never allowed
//!  raft_meta      "vote"        ─► postcard(Vote)                    saved before any vote is cast
//!                 "committed"   ─► postcard(Option<LogId>)           re-applied up to on open
//!                 "last_purged" ─► postcard(LogId)                   the log starts after it
//!                 "format"      ─► format version (u32 LE)
//!                 "codec"       ─► Codec::id() of the file's creator
//!  raft_snapshot  "meta"        ─► Codec::seal(postcard(SnapshotMeta))  written together with
//!                 "data"        ─► Codec::seal(state machine bytes)     "meta" in one transaction
//! ```
//!
//! Every write is one redb transaction committed with `Durability::Immediate` (fsync) before the
//! call returns, so a log append reported flushed to openraft survives `kill -9`. All calls here
//! are blocking; the async wrappers run them on tokio's blocking pool. Anything read back that
//! does not decode is reported as corruption (an error, never a panic).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{BasicNode, Entry, LogId, SnapshotMeta, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, CodecError, RecordKind};
use crate::{RaftError, TypeConfig};

/// The file name inside the directory handed to [`crate::RaftNode::open`].
pub const DB_FILE: &str = "raft.redb";

/// Version of the layout described above; bumped on incompatible changes. Version 2: openraft
/// is built with `single-term-leader` (standard Raft, one leader per term), so a vote names the
/// candidate it went to and a log id carries the term only; version 1 files (a leader id of
/// term and node id in every log id) cannot be read.
const FORMAT_VERSION: u32 = 2;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_LAST_PURGED: &str = "last_purged";
const K_FORMAT: &str = "format";
const K_CODEC: &str = "codec";
const K_SNAP_META: &str = "meta";
const K_SNAP_DATA: &str = "data";

pub(crate) type SnapMeta = SnapshotMeta<u64, BasicNode>;

/// `(last_purged, last_log_id)`.
pub(crate) type LogBounds = (Option<LogId<u64>>, Option<LogId<u64>>);

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("{0}")]
    Redb(#[from] redb::Error),
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("{0}")]
    Other(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<DbError> for RaftError {
    fn from(e: DbError) -> Self {
        RaftError::Storage(e.to_string())
    }
}

pub(crate) type DbResult<T> = Result<T, DbError>;

fn encode<T: Serialize>(what: &str, v: &T) -> DbResult<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| DbError::Other(format!("cannot encode {what}: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> DbResult<T> {
    postcard::from_bytes(bytes).map_err(|e| DbError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The open redb file plus the codec that seals its records.
pub(crate) struct Db {
    db: Database,
    codec: Arc<dyn Codec>,
    path: PathBuf,
}

impl Db {
    /// Open or create `dir/raft.redb`, creating the tables, and check its format and codec.
    pub(crate) fn open(dir: &Path, codec: Arc<dyn Codec>) -> Result<Db, RaftError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            RaftError::Storage(format!(
                "cannot create raft directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| {
            RaftError::Storage(format!("cannot open raft log {}: {e}", path.display()))
        })?;
        let this = Db { db, codec, path };
        this.init()
            .map_err(|e| RaftError::Storage(format!("raft log {}: {e}", this.path.display())))?;
        Ok(this)
    }

    fn init(&self) -> DbResult<()> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(LOG)?;
            txn.open_table(SNAPSHOT)?;
            let mut meta = txn.open_table(META)?;
            let format = meta.get(K_FORMAT)?.map(|v| v.value().to_vec());
            match format {
                None => {
                    meta.insert(K_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
                    meta.insert(K_CODEC, self.codec.id().as_bytes())?;
                }
                Some(v) => {
                    let arr: [u8; 4] = v.as_slice().try_into().map_err(|_| DbError::Corrupt {
                        what: "format version".into(),
                        reason: format!("{} bytes instead of 4", v.len()),
                    })?;
                    let found = u32::from_le_bytes(arr);
                    if found != FORMAT_VERSION {
                        return Err(DbError::Other(format!(
                            "unsupported format version {found} (this build reads version {FORMAT_VERSION})"
                        )));
                    }
                    let codec = meta
                        .get(K_CODEC)?
                        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
                        .unwrap_or_default();
                    if codec != self.codec.id() {
                        return Err(DbError::Other(format!(
                            "the file was written with the '{codec}' codec but is opened with '{}'; \
                             use the same encryption setting (and key) it was created with",
                            self.codec.id()
                        )));
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn get_meta(&self, key: &str) -> DbResult<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> DbResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(META)?;
            t.insert(key, value)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn read_vote(&self) -> DbResult<Option<Vote<u64>>> {
        self.get_meta(K_VOTE)?
            .map(|b| decode("vote", &b))
            .transpose()
    }

    pub(crate) fn save_vote(&self, vote: &Vote<u64>) -> DbResult<()> {
        self.put_meta(K_VOTE, &encode("vote", vote)?)
    }

    pub(crate) fn read_committed(&self) -> DbResult<Option<LogId<u64>>> {
        Ok(self
            .get_meta(K_COMMITTED)?
            .map(|b| decode::<Option<LogId<u64>>>("committed index", &b))
            .transpose()?
            .flatten())
    }

    pub(crate) fn save_committed(&self, committed: Option<LogId<u64>>) -> DbResult<()> {
        self.put_meta(K_COMMITTED, &encode("committed index", &committed)?)
    }

    fn decode_entry(&self, index: u64, sealed: &[u8]) -> DbResult<Entry<TypeConfig>> {
        let plain = self
            .codec
            .open(RecordKind::LogEntry { index }, sealed.to_vec())?;
        let entry: Entry<TypeConfig> = decode(&format!("log entry {index}"), &plain)?;
        if entry.log_id.index != index {
            return Err(DbError::Corrupt {
                what: format!("log entry {index}"),
                reason: format!("it says it is entry {}", entry.log_id.index),
            });
        }
        Ok(entry)
    }

    /// `(last_purged, last_log_id)`; the latter falls back to the former when the log is empty.
    pub(crate) fn log_state(&self) -> DbResult<LogBounds> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let last_purged: Option<LogId<u64>> = meta
            .get(K_LAST_PURGED)?
            .map(|v| decode("last purged log id", v.value()))
            .transpose()?;
        let log = txn.open_table(LOG)?;
        let last = match log.last()? {
            Some((k, v)) => Some(self.decode_entry(k.value(), v.value())?.log_id),
            None => None,
        };
        let last = if last.is_some() && last > last_purged {
            last
        } else {
            last_purged
        };
        Ok((last_purged, last))
    }

    pub(crate) fn entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
    ) -> DbResult<Vec<Entry<TypeConfig>>> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for item in log.range::<u64>(range)? {
            let (k, v) = item?;
            out.push(self.decode_entry(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub(crate) fn append(&self, entries: &[Entry<TypeConfig>]) -> DbResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut log = txn.open_table(LOG)?;
            for e in entries {
                let index = e.log_id.index;
                let plain = encode("log entry", e)?;
                let sealed = self.codec.seal(RecordKind::LogEntry { index }, plain)?;
                log.insert(index, sealed.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Delete entries at `from` and after.
    pub(crate) fn truncate(&self, from: u64) -> DbResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut log = txn.open_table(LOG)?;
            log.retain_in::<u64, _>(from.., |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Delete entries up to and including `upto`, remembering it as the last purged id.
    pub(crate) fn purge(&self, upto: LogId<u64>) -> DbResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(
                K_LAST_PURGED,
                encode("last purged log id", &upto)?.as_slice(),
            )?;
            let mut log = txn.open_table(LOG)?;
            log.retain_in::<u64, _>(..=upto.index, |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The stored snapshot's meta, without its data.
    #[cfg(test)]
    pub(crate) fn snapshot_meta(&self) -> DbResult<Option<SnapMeta>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SNAPSHOT)?;
        match t.get(K_SNAP_META)? {
            None => Ok(None),
            Some(v) => {
                let plain = self
                    .codec
                    .open(RecordKind::SnapshotMeta, v.value().to_vec())?;
                Ok(Some(decode("snapshot meta", &plain)?))
            }
        }
    }

    /// The stored snapshot, meta and data.
    pub(crate) fn snapshot(&self) -> DbResult<Option<(SnapMeta, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SNAPSHOT)?;
        let meta = match t.get(K_SNAP_META)? {
            None => return Ok(None),
            Some(v) => v.value().to_vec(),
        };
        let data = t
            .get(K_SNAP_DATA)?
            .map(|v| v.value().to_vec())
            .ok_or_else(|| DbError::Corrupt {
                what: "snapshot".into(),
                reason: "its meta is stored but its data is missing".into(),
            })?;
        let meta: SnapMeta = decode(
            "snapshot meta",
            &self.codec.open(RecordKind::SnapshotMeta, meta)?,
        )?;
        let data = self.codec.open(RecordKind::SnapshotData, data)?;
        Ok(Some((meta, data)))
    }

    /// Store a snapshot, replacing the previous one. Unless `force`, a snapshot older than the one
    /// stored is not written (a build that raced with an install); returns whether it was written.
    pub(crate) fn save_snapshot(
        &self,
        meta: &SnapMeta,
        data: Vec<u8>,
        force: bool,
    ) -> DbResult<bool> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(SNAPSHOT)?;
            if !force {
                if let Some(v) = t.get(K_SNAP_META)? {
                    let plain = self
                        .codec
                        .open(RecordKind::SnapshotMeta, v.value().to_vec())?;
                    let old: SnapMeta = decode("snapshot meta", &plain)?;
                    if old.last_log_id > meta.last_log_id {
                        return Ok(false);
                    }
                }
            }
            let m = self
                .codec
                .seal(RecordKind::SnapshotMeta, encode("snapshot meta", meta)?)?;
            let d = self.codec.seal(RecordKind::SnapshotData, data)?;
            t.insert(K_SNAP_META, m.as_slice())?;
            t.insert(K_SNAP_DATA, d.as_slice())?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Raw access for tests that corrupt records on purpose.
    #[cfg(test)]
    pub(crate) fn put_raw_log(&self, index: u64, bytes: &[u8]) -> DbResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut log = txn.open_table(LOG)?;
            log.insert(index, bytes)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Number of stored log entries (tests, metrics).
    pub(crate) fn log_len(&self) -> DbResult<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(LOG)?.len()?)
    }

    /// The first stored log index, if any.
    pub(crate) fn first_index(&self) -> DbResult<Option<u64>> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let first = log.first()?.map(|(k, _)| k.value());
        Ok(first)
    }
}

/// Run a blocking storage call on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(db: &Arc<Db>, f: F) -> DbResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Db) -> DbResult<T> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| DbError::Other(format!("storage task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PlainCodec;
    use crate::Payload;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64, data: &[u8]) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Payload(data.to_vec())),
        }
    }

    #[test]
    fn log_append_truncate_purge() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Arc::new(PlainCodec)).unwrap();
        assert_eq!(db.log_state().unwrap(), (None, None));
        db.append(&(1..=10).map(|i| entry(1, i, b"x")).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(db.log_state().unwrap().1.map(|l| l.index), Some(10));
        db.truncate(8).unwrap();
        assert_eq!(db.log_state().unwrap().1.map(|l| l.index), Some(7));
        db.purge(LogId::new(CommittedLeaderId::new(1, 1), 5))
            .unwrap();
        let (purged, last) = db.log_state().unwrap();
        assert_eq!(purged.map(|l| l.index), Some(5));
        assert_eq!(last.map(|l| l.index), Some(7));
        let got = db
            .entries((Bound::Included(0), Bound::Excluded(100)))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![6, 7]
        );
        db.purge(LogId::new(CommittedLeaderId::new(1, 1), 7))
            .unwrap();
        let (purged, last) = db.log_state().unwrap();
        assert_eq!(purged, last);
        assert_eq!(db.log_len().unwrap(), 0);
    }

    #[test]
    fn corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Arc::new(PlainCodec)).unwrap();
        db.put_raw_log(3, &[0xff, 0xff, 0xff]).unwrap();
        let err = db.log_state().unwrap_err();
        assert!(err.to_string().contains("corrupt log entry 3"), "{err}");
        // An entry stored under the wrong index is caught too.
        let e = encode("e", &entry(1, 9, b"y")).unwrap();
        db.put_raw_log(4, &e).unwrap();
        let err = db
            .entries((Bound::Included(4), Bound::Included(4)))
            .unwrap_err();
        assert!(err.to_string().contains("says it is entry 9"), "{err}");
    }

    struct OtherCodec;
    impl Codec for OtherCodec {
        fn id(&self) -> &str {
            "other"
        }
        fn seal(&self, _: RecordKind, p: Vec<u8>) -> Result<Vec<u8>, CodecError> {
            Ok(p)
        }
        fn open(&self, _: RecordKind, s: Vec<u8>) -> Result<Vec<u8>, CodecError> {
            Ok(s)
        }
    }

    #[test]
    fn codec_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Db::open(dir.path(), Arc::new(PlainCodec)).unwrap());
        let err = Db::open(dir.path(), Arc::new(OtherCodec)).err().unwrap();
        assert!(err.to_string().contains("'plain' codec"), "{err}");
    }

    #[test]
    fn snapshot_roundtrip_and_stale_build_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Arc::new(PlainCodec)).unwrap();
        assert!(db.snapshot().unwrap().is_none());
        let meta = |i| SnapMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), i)),
            last_membership: Default::default(),
            snapshot_id: format!("s{i}"),
        };
        assert!(db.save_snapshot(&meta(10), b"ten".to_vec(), false).unwrap());
        assert!(!db.save_snapshot(&meta(5), b"five".to_vec(), false).unwrap());
        let (m, d) = db.snapshot().unwrap().unwrap();
        assert_eq!((m.snapshot_id.as_str(), d.as_slice()), ("s10", &b"ten"[..]));
        assert!(db.save_snapshot(&meta(5), b"five".to_vec(), true).unwrap());
        assert_eq!(db.snapshot_meta().unwrap().unwrap().snapshot_id, "s5");
    }
}
