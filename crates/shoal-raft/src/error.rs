//! Errors of the replicated log, and their mapping from openraft's and redb's.
//!
//! ```text
//!  openraft::Fatal::Stopped ─────────────► RaftError::Shutdown
//!  openraft::Fatal::StorageError / redb ─► RaftError::Storage
//!  ClientWriteError::ForwardToLeader ────► RaftError::NotLeader { leader, leader_addr }
//!  no leader / no commit before timeout ─► RaftError::NoQuorum
//!  target.apply(..) returned Err ────────► RaftError::Rejected { index, reason }
//! ```

use openraft::error::{ClientWriteError, Fatal, ForwardToLeader, InitializeError};
use openraft::BasicNode;

/// What can go wrong in the replicated log. Every message says what happened and, where the user
/// can act on it, what to do. Serializable: a leader returns it to a follower that forwarded a
/// proposal ([`crate::RpcKind::Propose`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RaftError {
    /// This node is not the leader; writes must go to the leader.
    #[error("{}", not_leader_text(*.leader, .leader_addr.as_deref()))]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<u64>,
        /// Its address, when known.
        leader_addr: Option<String>,
    },
    /// No leader could be elected, or a write could not be committed in time.
    #[error(
        "The swarm does not have a leader. It's possible that too few managers are online. \
         Make sure more than half of the managers are online."
    )]
    NoQuorum,
    /// The write was committed, but the state machine refused to apply it.
    #[error(
        "the change was committed at raft log index {index} but the store rejected it: {reason}"
    )]
    Rejected {
        /// The log index of the committed entry.
        index: u64,
        /// The state machine's error.
        reason: String,
    },
    /// The on-disk log or snapshot could not be read or written, or is corrupt.
    #[error("raft storage error: {0}")]
    Storage(String),
    /// A Raft message from another node could not be decoded.
    #[error("malformed raft message: {0}")]
    Malformed(String),
    /// The configuration is invalid.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// The Raft node has been shut down (or stopped after a fatal error).
    #[error("the raft node is shut down")]
    Shutdown,
    /// Anything else openraft reported.
    #[error("raft error: {0}")]
    Internal(String),
}

fn not_leader_text(leader: Option<u64>, addr: Option<&str>) -> String {
    match (leader, addr) {
        (Some(id), Some(addr)) if !addr.is_empty() => {
            format!("this node is not the swarm leader; the leader is node {id} at {addr}")
        }
        (Some(id), _) => format!("this node is not the swarm leader; the leader is node {id}"),
        (None, _) => "this node is not the swarm leader and no leader is known yet; \
                      make sure more than half of the managers are online"
            .to_string(),
    }
}

impl From<Fatal<u64>> for RaftError {
    fn from(e: Fatal<u64>) -> Self {
        match e {
            Fatal::Stopped => RaftError::Shutdown,
            Fatal::StorageError(e) => RaftError::Storage(e.to_string()),
            Fatal::Panicked => RaftError::Internal("the raft core task panicked".into()),
        }
    }
}

impl From<ForwardToLeader<u64, BasicNode>> for RaftError {
    fn from(f: ForwardToLeader<u64, BasicNode>) -> Self {
        RaftError::NotLeader {
            leader: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        }
    }
}

impl From<openraft::error::RaftError<u64, ClientWriteError<u64, BasicNode>>> for RaftError {
    fn from(e: openraft::error::RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Self {
        match e {
            openraft::error::RaftError::Fatal(f) => f.into(),
            openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
            openraft::error::RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                RaftError::Internal(c.to_string())
            }
        }
    }
}

impl From<openraft::error::RaftError<u64, InitializeError<u64, BasicNode>>> for RaftError {
    fn from(e: openraft::error::RaftError<u64, InitializeError<u64, BasicNode>>) -> Self {
        match e {
            openraft::error::RaftError::Fatal(f) => f.into(),
            openraft::error::RaftError::APIError(api) => RaftError::Internal(api.to_string()),
        }
    }
}

impl From<redb::Error> for RaftError {
    fn from(e: redb::Error) -> Self {
        RaftError::Storage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_helpful() {
        let e = RaftError::NotLeader {
            leader: Some(2),
            leader_addr: Some("10.0.0.2:2377".into()),
        };
        assert_eq!(
            e.to_string(),
            "this node is not the swarm leader; the leader is node 2 at 10.0.0.2:2377"
        );
        assert!(RaftError::NoQuorum
            .to_string()
            .contains("more than half of the managers are online"));
        let e = RaftError::NotLeader {
            leader: None,
            leader_addr: None,
        };
        assert!(e.to_string().contains("no leader is known"));
        assert_eq!(RaftError::from(Fatal::<u64>::Stopped), RaftError::Shutdown);
    }
}
