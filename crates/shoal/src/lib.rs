//! The `shoal` binary's library part: the daemon's wiring. The CLI verbs live in `shoal-cli`.
#![forbid(unsafe_code)]

pub mod daemon;

/// Shoal's version, reported as the engine version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
