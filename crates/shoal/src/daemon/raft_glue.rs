//! Glue between the store and Raft: the store is the Raft state machine's target, and Raft is
//! the store's proposer.

use futures::future::BoxFuture;
use shoal_raft::{RaftError, RaftNode, StateMachineTarget};
use shoal_store::{Proposer, Store, StoreError};

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

/// Store writes go through Raft, from any manager: a follower forwards them to the leader and
/// returns once it has applied them itself (`RaftNode::propose_anywhere`).
pub struct RaftProposer(pub RaftNode);

/// The message Docker gives when a write cannot reach a majority.
pub const NO_QUORUM: &str = "The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.";

impl Proposer for RaftProposer {
    fn propose(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<u64, StoreError>> {
        let node = self.0.clone();
        Box::pin(async move {
            match node.propose_anywhere(payload).await {
                Ok(index) => Ok(index),
                // Committed but refused by the store (on every replica alike): the reason is the
                // error the leader's store gave, which is what the client must see (a conflict,
                // not an outage) even if this manager caught up from a snapshot instead of
                // applying the entry itself.
                Err(RaftError::Rejected { reason, .. }) => Err(StoreError::from_rejection(&reason)),
                Err(RaftError::NoQuorum | RaftError::NotLeader { .. }) => {
                    Err(StoreError::Unavailable(NO_QUORUM.into()))
                }
                Err(RaftError::Shutdown) => Err(StoreError::Unavailable(
                    "this manager is shutting down or leaving the swarm; try another manager"
                        .into(),
                )),
                Err(other) => Err(StoreError::Unavailable(other.to_string())),
            }
        })
    }
}
