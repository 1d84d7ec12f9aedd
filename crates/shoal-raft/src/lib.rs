//! # shoal-raft: the replicated log under Shoal's store
//!
//! [openraft](https://docs.rs/openraft/0.9) for consensus, one [redb](https://docs.rs/redb) file
//! for the log, the vote, the committed index and the latest snapshot. The state machine is
//! Shoal's store, reached only through the [`StateMachineTarget`] trait (this crate depends on
//! no other Shoal crate); other managers are reached through the [`RaftTransport`] trait.
//!
//! ## The write path
//!
//! ```text
//!  store ── propose(bytes) ──► RaftNode ──► openraft leader (RaftCore)
//!                                              │ append
//!                                              ▼
//!                              LogStore: Codec::seal ─► redb txn ─► commit + fsync
//!                                              │ flushed            (then the callback)
//!                                              ▼
//!                              replicate ─► RaftTransport ─► followers append + fsync
//!                                              │ a majority has it: committed
//!                                              ▼
//!                              save committed index (fsync) ─► StateMachineStore::apply
//!                                              │
//!                                              ▼
//!                              StateMachineTarget::apply(index, bytes)   (store updated)
//!                                              │
//!  store ◄── Ok(index) ◄───────────────────────┘
//!
//!  every `snapshot_every` entries: target.snapshot() ─► redb ─► log purged below it
//!  open(): redb snapshot ─► target.restore() ─► re-apply committed entries after it
//! ```
//!
//! A write acknowledged by [`RaftNode::propose`] is durable on a majority of managers and
//! survives `kill -9` of any of them. [`RaftNode::propose_anywhere`] does the same from any
//! member: a follower forwards the payload to the leader ([`RpcKind::Propose`], through its
//! transport) and returns once it has applied the entry itself. Membership changes:
//! [`RaftNode::add_voter`] (learner, caught up, then voter) and [`RaftNode::remove_member`].
//!
//! ## Modules
//! - `node`: [`RaftNode`], [`RaftConfig`], [`RaftStatus`]
//! - `storage`: the redb layout; `log_store`: openraft's `RaftLogStorage` over it
//! - `state_machine`: openraft's `RaftStateMachine` over a [`StateMachineTarget`]
//! - `network`: the [`RaftTransport`] seam, [`NoTransport`], [`LocalTransport`]
//! - `codec`: the [`Codec`] hook for encryption at rest ([`PlainCodec`] today)
//! - `error`: [`RaftError`]

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod log_store;
mod network;
mod node;
mod state_machine;
mod storage;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use codec::{AeadCodec, Codec, CodecError, PlainCodec, RecordKind};
pub use error::RaftError;
pub use log_store::LogStore;
pub use network::{LocalTransport, NoTransport, RaftTransport, RpcKind, TransportError};
pub use node::{RaftConfig, RaftNode, RaftRole, RaftStatus};
pub use state_machine::{Applied, SnapshotBuilder, StateMachineStore, StateMachineTarget};
pub use storage::DB_FILE;

/// Re-export of the openraft version this crate is built on.
pub use openraft;

openraft::declare_raft_types!(
    /// Shoal's openraft type configuration: `u64` node ids, [`openraft::BasicNode`] (an address),
    /// opaque [`Payload`] entries, [`Applied`] responses, in-memory snapshot buffers, tokio.
    pub TypeConfig:
        D = Payload,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The bytes of one proposal, as the store encoded them. Opaque to Raft.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(pub Vec<u8>);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}
