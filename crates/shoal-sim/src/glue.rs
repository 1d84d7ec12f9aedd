//! Store ↔ Raft glue, as the daemon's `raft_glue.rs` does it (follower writes forwarded to the
//! leader), except that errors stay recognisable to the simulated client: without forwarding a
//! write sent to a follower fails with "not the leader" (never proposed: the client retries on
//! the leader; the daemon folds it into its no-quorum message). A write the store refused when
//! applying it fails, as in the daemon, with the store error the leader saw (or, with
//! `daemon_rejections` off, "rejected when applied"): definitely not applied either way.
//!
//! ```text
//!  Store::update ──► SimProposer::propose ──► RaftNode::propose ──► (replicated, committed)
//!        ▲                                                               │
//!        └── Ok(index) ◄── StoreTarget::apply ◄── Store::apply_payload ◄─┘
//! ```
//!
//! [`SimLog`] is the Raft log as the manager's pass guard sees it
//! ([`shoal_manager::guard::OwnLogGuard`], the daemon's leader guard), so the leader loop here
//! runs the product's guard.

use std::time::Duration;

use futures::future::BoxFuture;
use shoal_manager::guard::ReplicatedLog;
use shoal_raft::{RaftError, RaftNode, StateMachineTarget};
use shoal_store::{Proposer, Store, StoreError};

/// Prefix of the [`StoreError::Unavailable`] message of a write sent to a follower.
pub const NOT_LEADER: &str = "not the leader";

/// Prefix of the [`StoreError::Unavailable`] message of a write that was committed but that the
/// store refused to apply (on every replica alike): definitely not applied.
pub const REJECTED: &str = "rejected when applied";

/// The store as the target of the replicated state machine.
pub struct StoreTarget(pub Store);

impl StateMachineTarget for StoreTarget {
    fn apply(&self, index: u64, payload: &[u8]) -> Result<(), String> {
        self.0.apply_payload(index, payload)
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot_bytes()
    }
    fn restore(&self, index: u64, data: &[u8]) -> Result<(), String> {
        self.0.restore_bytes(index, data)
    }
}

/// Store writes go through Raft.
///
/// With `forward` (the daemon's way, `RaftNode::propose_anywhere`), a write made on a follower
/// is forwarded to the leader and returns once applied locally. Without it, a follower answers
/// "not the leader" and the client retries on the leader.
pub struct SimProposer {
    /// The node proposing.
    pub node: RaftNode,
    /// Forward writes made on a follower to the leader.
    pub forward: bool,
    /// Report a write refused on apply as the daemon does: the store error the leader's store
    /// refused it with (`StoreError::from_rejection` of the reason), e.g. `update out of
    /// sequence` or a name conflict. Off: a "rejected when applied" message instead.
    pub daemon_rejections: bool,
}

impl Proposer for SimProposer {
    fn propose(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<u64, StoreError>> {
        let node = self.node.clone();
        let forward = self.forward;
        let daemon_rejections = self.daemon_rejections;
        Box::pin(async move {
            let res = if forward {
                node.propose_anywhere(payload).await
            } else {
                node.propose(payload).await
            };
            match res {
                Ok(index) => Ok(index),
                Err(RaftError::Rejected { reason, .. }) if daemon_rejections => {
                    Err(StoreError::from_rejection(&reason))
                }
                Err(RaftError::NotLeader { leader, .. }) => Err(StoreError::Unavailable(format!(
                    "{NOT_LEADER} (leader: {leader:?})"
                ))),
                Err(RaftError::Rejected { index, reason }) => Err(StoreError::Unavailable(
                    format!("{REJECTED} at index {index}: {reason}"),
                )),
                Err(other) => Err(StoreError::Unavailable(other.to_string())),
            }
        })
    }
}

/// A manager's Raft log for the product's pass guard, as the daemon's leader loop wraps its
/// own: read barrier, last log index, wait until applied (bounded by `wait`).
pub struct SimLog {
    /// The node.
    pub node: RaftNode,
    /// How long to wait for an index to be applied.
    pub wait: Duration,
}

impl ReplicatedLog for SimLog {
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.node
                .read_barrier()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn last_log_index(&self) -> Option<u64> {
        self.node.metrics().last_log
    }

    fn wait_applied(&self, index: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.node
                .raft()
                .wait(Some(self.wait))
                .applied_index_at_least(Some(index), "the leader's own log applied")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Whether an error message says the write went to a follower (so it was never proposed).
pub fn is_not_leader(message: &str) -> bool {
    message.starts_with(NOT_LEADER)
}

/// Whether an error message says the write was committed but refused by the store.
pub fn is_rejected(message: &str) -> bool {
    message.starts_with(REJECTED)
}
