//! # shoal-store: the object store
//!
//! ```text
//!   update(|tx| ...)            the closure reads the current state and records actions
//!        │  (one writer at a time: the write lock)
//!        ▼
//!   Batch ──encode──► Proposer (Raft: replicate to a majority, commit)
//!                          │
//!                          ▼ committed entry at log index N, on every manager
//!   Store::apply_payload(N, bytes) ──► StoreState::apply ──► objects get Version.Index = N
//!                                                   └──► Event{Created|Updated|Deleted} to watchers
//! ```
//!
//! Reads (`view`) see the applied state. Writes are [`Batch`]es of [`Action`]s that go through a
//! [`Proposer`]; without one (tests, or before `swarm init`) they are applied locally in order.
//! The same [`Store::apply_payload`] / [`Store::snapshot_bytes`] / [`Store::restore_bytes`] are
//! what the Raft state machine calls, so a one-member cluster and a larger one share one path.
#![forbid(unsafe_code)]

mod state;
mod store;
mod tx;

pub use state::{Action, Batch, Event, EventKind, StoreState};
pub use store::{Proposer, Store};
pub use tx::Tx;

use shoal_api::ObjectKind;

/// Errors of the store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
}
