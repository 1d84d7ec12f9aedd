//! openraft's [`RaftStateMachine`], driving a [`StateMachineTarget`] (Shoal's store).
//!
//! The target keeps its state in memory; durability comes from the log plus the snapshots stored
//! in redb. On open the target is restored from the stored snapshot and openraft re-applies the
//! committed log entries after it.
//!
//! ```text
//!  committed entries ──► apply() ──► Normal(payload)  ─► target.apply(index, payload)
//!                                    Membership(m)    ─► remembered (goes into snapshots)
//!                                    Blank            ─► nothing
//!
//!  every `snapshot_every` entries:
//!    get_snapshot_builder()  (on the state machine task, between two applies)
//!        target.snapshot() + last applied id + membership   ← a consistent cut
//!    build_snapshot()        (spawned)  ─► redb "raft_snapshot" ─► openraft purges the log
//!
//!  leader sends a snapshot: install_snapshot() ─► target.restore(index, data) ─► redb
//!  open():                  stored snapshot    ─► target.restore(index, data)
//!  restart after a fatal error (same target): no restore; openraft resumes after the
//!                           last applied entry, recorded in the shared `Progress`
//! ```

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::storage::{blocking, Db, SnapMeta};
use crate::{RaftError, TypeConfig};

/// What the replicated log drives. Implemented by Shoal's store.
///
/// The calls are made from the Raft state machine task, one at a time and in log order; they
/// should be quick (in-memory work), since the log waits for them.
///
/// The target handed to [`crate::RaftNode::open`] must be empty: it is restored from the stored
/// snapshot (if any) and then every committed entry after it is applied again.
pub trait StateMachineTarget: Send + Sync + 'static {
    /// Apply one committed payload at `index`. Deterministic; an Err is logged and the entry
    /// skipped (never panics).
    fn apply(&self, index: u64, payload: &[u8]) -> Result<(), String>;
    /// Serialize the full current state (as of the last applied index).
    fn snapshot(&self) -> Vec<u8>;
    /// Replace the whole state with a snapshot taken at `index`.
    fn restore(&self, index: u64, data: &[u8]) -> Result<(), String>;
}

/// What applying one entry produced: openraft's response type (`R`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index of the entry.
    pub index: u64,
    /// The target's error, when it refused the payload.
    pub error: Option<String>,
}

/// What the target has applied: the last entry and the membership as of it. Shared between the
/// state machine of the running openraft instance and its [`crate::RaftNode`], which resumes
/// from it when it replaces an instance whose core stopped (the target keeps its state then).
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, BasicNode>,
}

/// [`Progress`], shared.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedProgress(Arc<Mutex<Progress>>);

impl SharedProgress {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Progress> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state machine handed to openraft.
pub struct StateMachineStore {
    db: Arc<Db>,
    target: Arc<dyn StateMachineTarget>,
    progress: SharedProgress,
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Restore `target` (empty) from the stored snapshot, if there is one, and record that in
    /// `progress`.
    pub(crate) async fn load(
        db: Arc<Db>,
        target: Arc<dyn StateMachineTarget>,
        progress: SharedProgress,
    ) -> Result<Self, RaftError> {
        let stored = blocking(&db, |db| db.snapshot()).await?;
        *progress.lock() = Progress::default();
        let sm = StateMachineStore {
            db,
            target,
            progress,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        };
        if let Some((meta, data)) = stored {
            let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
            sm.target.restore(index, &data).map_err(|e| {
                RaftError::Storage(format!(
                    "the store could not load the raft snapshot at index {index}: {e}"
                ))
            })?;
            tracing::info!(
                index,
                bytes = data.len(),
                "state restored from raft snapshot"
            );
            *sm.progress.lock() = Progress {
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
            };
        }
        Ok(sm)
    }

    /// The state machine of a replacement openraft instance: `target` keeps what it has
    /// applied (as `progress` records), and openraft re-applies only the committed entries
    /// after it. Only once every task of the previous instance has ended (it could still apply).
    pub(crate) fn resume(
        db: Arc<Db>,
        target: Arc<dyn StateMachineTarget>,
        progress: SharedProgress,
    ) -> Self {
        StateMachineStore {
            db,
            target,
            progress,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let p = self.progress.lock();
        Ok((p.last_applied, p.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let mut applied = Applied { index, error: None };
            let mut membership = None;
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(payload) => {
                    if let Err(e) = self.target.apply(index, &payload.0) {
                        tracing::warn!(index, error = %e, "store rejected a committed raft entry; skipped");
                        applied.error = Some(e);
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                }
            }
            // Recorded right after the target applied it (no await in between).
            let mut p = self.progress.lock();
            p.last_applied = Some(entry.log_id);
            if let Some(m) = membership {
                p.membership = m;
            }
            drop(p);
            out.push(applied);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Taken here, on the state machine task, so the data matches `last_applied` exactly.
        let data = self.target.snapshot();
        let Progress {
            last_applied,
            membership,
        } = self.progress.lock().clone();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("0-0-{seq}"),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            meta: SnapMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            },
            data: Some(data),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        tracing::info!(
            index,
            bytes = data.len(),
            "installing raft snapshot from the leader"
        );
        self.target.restore(index, &data).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::error(format!("the store could not load the snapshot: {e}")),
            ))
        })?;
        // Recorded at once: the target holds the snapshot's state from here on.
        *self.progress.lock() = Progress {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let m = meta.clone();
        blocking(&self.db, move |db| db.save_snapshot(&m, data, true))
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::write_snapshot(
                    Some(meta.signature()),
                    AnyError::new(&e),
                ))
            })?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let stored = blocking(&self.db, |db| db.snapshot()).await.map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
        })?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Persists a snapshot cut taken by [`StateMachineStore::get_snapshot_builder`].
pub struct SnapshotBuilder {
    db: Arc<Db>,
    meta: SnapMeta,
    data: Option<Vec<u8>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let data = self.data.take().unwrap_or_default();
        let meta = self.meta.clone();
        let stored = data.clone();
        let written = blocking(&self.db, move |db| db.save_snapshot(&meta, stored, false))
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::write_snapshot(
                    Some(self.meta.signature()),
                    AnyError::new(&e),
                ))
            })?;
        tracing::info!(
            id = %self.meta.snapshot_id,
            bytes = data.len(),
            written,
            "raft snapshot built"
        );
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
