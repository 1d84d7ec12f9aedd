//! openraft's [`RaftLogStorage`] over the redb file: the log, the vote and the committed index.
//!
//! ```text
//!  RaftCore ── append(entries, callback) ──► spawn_blocking: redb txn, insert, commit (fsync)
//!                                                   │
//!            ◄── callback.log_io_completed(Ok) ─────┘   only after the commit is durable,
//!                                                       so a "flushed" entry survives kill -9
//!  RaftCore ── save_vote / save_committed / truncate / purge ──► one durable txn each
//!  Replication tasks ── LogStore (clone) as LogReader ──► read txn, range scan, Codec::open
//! ```

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};

use crate::storage::{blocking, Db, DbError};
use crate::TypeConfig;

fn io_err(f: fn(AnyError) -> StorageIOError<u64>) -> impl Fn(DbError) -> StorageError<u64> {
    move |e| StorageError::from(f(AnyError::new(&e)))
}

/// The log storage handed to openraft; cheap to clone (it is also the log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(&self.db, move |db| db.entries(bounds))
            .await
            .map_err(io_err(StorageIOError::read_logs))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let (last_purged_log_id, last_log_id) = blocking(&self.db, |db| db.log_state())
            .await
            .map_err(io_err(StorageIOError::read_logs))?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let vote = *vote;
        blocking(&self.db, move |db| db.save_vote(&vote))
            .await
            .map_err(io_err(StorageIOError::write_vote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        blocking(&self.db, |db| db.read_vote())
            .await
            .map_err(io_err(StorageIOError::read_vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        blocking(&self.db, move |db| db.save_committed(committed))
            .await
            .map_err(io_err(StorageIOError::write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        blocking(&self.db, |db| db.read_committed())
            .await
            .map_err(io_err(StorageIOError::read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        // The commit is durable when `blocking` returns: only then is the callback told.
        let res = blocking(&self.db, move |db| db.append(&entries)).await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(io_err(StorageIOError::write_logs)(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncating raft log");
        blocking(&self.db, move |db| db.truncate(log_id.index))
            .await
            .map_err(io_err(StorageIOError::write_logs))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "purging raft log");
        blocking(&self.db, move |db| db.purge(log_id))
            .await
            .map_err(io_err(StorageIOError::write_logs))
    }
}
