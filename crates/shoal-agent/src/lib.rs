//! # shoal-agent: the agent role
//!
//! Runs on every node: the [`worker::Worker`] keeps a session with a manager, receives the
//! node's assignments and runs one controller per task through a [`runtime::Runtime`].
#![deny(unsafe_code)]

pub mod conformance;
pub mod files;
pub mod health;
pub mod logs;
pub mod mock;
pub mod network;
pub mod process;
pub mod runtime;
pub mod shim;
pub mod worker;
