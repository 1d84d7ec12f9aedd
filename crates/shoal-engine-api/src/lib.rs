//! # shoal-engine-api: the Docker Engine API server
//!
//! Speaks enough of the Docker Engine API (v1.24–1.51) for the `docker` CLI, `docker stack
//! deploy` and the Docker SDKs to drive a Shoal swarm unchanged.
//!
//! ```text
//!   unix socket / TCP / TCP+TLS ──► hyper http1 ──► version middleware ──► routes
//!                                                                           │
//!        SwarmBackend (the daemon) ◄── status, init/join/leave, logs ───────┤
//!        Control + Store (manager) ◄── validated writes, reads ─────────────┘
//! ```
//!
//! - [`backend`]: the [`SwarmBackend`] trait the daemon implements.
//! - [`routes`]: the handlers and [`router`]; [`convert`]: stored objects -> API models;
//!   [`objects`]: networks, secrets and configs.
//! - [`error`]: [`ApiError`], the single mapping of errors to statuses and Docker's texts.
//! - [`server`]: [`serve`] on a [`Listener`] with graceful shutdown.
//! - [`testing`]: [`testing::MockBackend`], an in-memory backend for tests.
#![forbid(unsafe_code)]

pub mod backend;
pub mod convert;
pub mod error;
pub mod logs;
pub mod objects;
pub mod params;
pub mod routes;
pub mod server;
pub mod testing;
pub mod version;

pub use backend::{HostInfo, LocalNodeState, SwarmBackend, SwarmStatus};
pub use error::ApiError;
pub use routes::router;
pub use server::{bind, serve, serve_bound, Bound, Listener, TlsFiles};
pub use version::{ApiVersion, MAX_API_VERSION, MIN_API_VERSION};

#[cfg(test)]
mod tests;
