//! # shoal-manager: the manager role
//!
//! Everything a manager runs on top of the store: `control` (validated writes for the API;
//! `objects` for networks, secrets and configs, `ipam` for their subnets and VNIs),
//! the orchestrators, the scheduler, the reaper and allocator, and the `dispatcher` that serves
//! agent sessions. Decisions are pure functions of a store snapshot; the loops that apply them
//! are thin.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod constraint;
pub mod control;
pub mod dispatcher;
pub mod guard;
pub mod ipam;
pub mod manager;
pub mod netmap;
pub mod objects;
pub mod orchestrator;
pub mod reaper;
pub mod scheduler;
