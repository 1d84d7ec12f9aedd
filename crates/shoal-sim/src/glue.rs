//! Store ↔ Raft glue, as the daemon's `raft_glue.rs` does it (follower writes forwarded to the
//! leader), except that errors stay recognisable to the simulated client: without forwarding a
//! write sent to a follower fails with "not the leader" (never proposed: the client retries on
//! the leader), and a write the store refused when applying it fails with "rejected when
//! applied" (definitely not applied). The daemon folds the first into its no-quorum message.
//!
//! ```text
//!  Store::update ──► SimProposer::propose ──► RaftNode::propose ──► (replicated, committed)
//!        ▲                                                               │
//!        └── Ok(index) ◄── StoreTarget::apply ◄── Store::apply_payload ◄─┘
//! ```

use futures::future::BoxFuture;
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
    /// Map a write refused on apply to `Ok(index)` as the daemon does, leaving the store to
    /// report the error it recorded when applying that index. A node that catches up from a
    /// snapshot never applies the index and records nothing: the write is acknowledged (see
    /// `tests/scenarios.rs`). Off by default: the refusal is reported as such.
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
                Err(RaftError::Rejected { index, .. }) if daemon_rejections => Ok(index),
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

/// Whether an error message says the write went to a follower (so it was never proposed).
pub fn is_not_leader(message: &str) -> bool {
    message.starts_with(NOT_LEADER)
}

/// Whether an error message says the write was committed but refused by the store.
pub fn is_rejected(message: &str) -> bool {
    message.starts_with(REJECTED)
}
