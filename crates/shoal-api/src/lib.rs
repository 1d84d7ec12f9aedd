//! # shoal-api: Shoal's cluster model
//!
//! The objects a swarm is made of — [`Cluster`], [`Node`], [`Service`], [`Task`] — as Shoal
//! stores and reasons about them, plus the task state machine ([`TaskState`]), object IDs, and
//! typed views of the parts of a service spec that orchestration reads ([`spec`]).
//!
//! User-supplied specs (`ServiceSpec`, `NodeSpec`, `SwarmSpec`) are kept as the Engine API models
//! from bollard ([`engine`]) so that what a client sent round-trips exactly; everything Shoal
//! decides itself (states, roles, slots, versions) has a strong type here.
#![forbid(unsafe_code)]

pub mod dispatch;
pub mod id;
pub mod netmap;
pub mod objects;
pub mod spec;
pub mod state;

/// The Docker Engine API models (bollard's generated types), used on the wire and for user specs.
pub use bollard_stubs::models as engine;

pub use id::new_id;
pub use objects::*;
pub use state::TaskState;
