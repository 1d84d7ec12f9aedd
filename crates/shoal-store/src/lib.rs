//! # shoal-store: the object store
//!
//! ```text
//!   update(|tx| ...)            the closure reads the current state and records actions
//!        │  (one writer at a time: the write lock)
//!        ▼
//!   Batch ──encode (JSON, lz4 when large)──► Proposer (Raft: replicate to a majority, commit)
//!                          │
//!                          ▼ committed entry at log index N, on every manager
//!   Store::apply_payload(N, bytes) ──► StoreState::check: IDs, versions, uniqueness rules
//!                                      (service names, published ports), in log order
//!                                  ──► StoreState::apply ──► objects get Version.Index = N
//!                                                   └──► Event{Created|Updated|Deleted} to watchers
//!   refused (on every manager alike) ──► StoreError::to_rejection ──► Raft ──► the proposer:
//!                                        StoreError::from_rejection, the writer's error
//! ```
//!
//! Reads (`view`) see the applied state. Writes are [`Batch`]es of [`Action`]s that go through a
//! [`Proposer`]; without one (tests, or before `swarm init`) they are applied locally in order.
//! The same [`Store::apply_payload`] / [`Store::snapshot_bytes`] / [`Store::restore_bytes`] are
//! what the Raft state machine calls, so a one-member cluster and a larger one share one path.
//!
//! Modules: `state` (the state, check and apply), `rules` (uniqueness rules checked on apply),
//! `tx` (transactions), `store` (the handle), `codec` (the bytes handed to Raft).
#![forbid(unsafe_code)]

mod codec;
mod rules;
mod state;
mod store;
mod tx;

pub use state::{Action, Batch, Event, EventKind, StoreState};
pub use store::{Proposer, Store};
pub use tx::Tx;

use shoal_api::ObjectKind;

/// Errors of the store.
///
/// Serializable: a batch refused when it is applied is reported to its proposer (possibly on
/// another manager) through the Raft layer as [`StoreError::to_rejection`] text, turned back
/// into the same error by [`StoreError::from_rejection`].
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    #[error("{} {id} not found", kind.as_str())]
    NotFound { kind: ObjectKind, id: String },
    #[error("{} {id} already exists", kind.as_str())]
    Exists { kind: ObjectKind, id: String },
    /// The object changed since the client read it.
    #[error("update out of sequence")]
    OutOfSequence,
    /// The write could not be replicated (no leader, no quorum, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// A stored or replicated payload could not be decoded.
    #[error("corrupt store data: {0}")]
    Codec(String),
    /// A uniqueness rule refused the change: a service name already in use (Docker's 409,
    /// "name conflicts with an existing object: ...").
    #[error("{0}")]
    Conflict(String),
    /// The change is invalid against the current state: a published port already in use
    /// (Docker's 400, as swarmkit's `InvalidArgument`).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Encodes this error as the reason a refused batch carries through the Raft layer
    /// (`RaftError::Rejected::reason`): JSON, so [`StoreError::from_rejection`] gets the same
    /// error back on the proposing manager.
    pub fn to_rejection(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.to_string())
    }

    /// The error a batch was refused with on apply, from the reason the Raft layer reported.
    /// A reason that is not [`StoreError::to_rejection`] text (from an older manager) is still
    /// a definite refusal: `update out of sequence` is recognised, anything else is a conflict.
    pub fn from_rejection(reason: &str) -> StoreError {
        if let Ok(e) = serde_json::from_str::<StoreError>(reason) {
            return e;
        }
        if reason == StoreError::OutOfSequence.to_string() {
            StoreError::OutOfSequence
        } else {
            StoreError::Conflict(reason.to_string())
        }
    }
}
