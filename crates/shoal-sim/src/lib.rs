//! # shoal-sim: a deterministic simulation of Shoal's control plane
//!
//! The "Simulation" testing layer of the architecture: several managers, their Raft group,
//! the orchestrators and a handful of fake worker agents, all in one process on a
//! current-thread tokio runtime whose clock is paused, driven by a seeded random generator
//! that schedules faults and client writes. Invariants are checked while the run goes and once
//! it has healed and settled.
//!
//! ```text
//!                      seed ──► fault schedule · client ops · agent behaviour · net loss
//!
//!   client ──create/scale/update──► any manager ──(follower: forwarded to the leader)
//!                                       │
//!   ┌─────────── managers (RaftNode + Store, redb in a temp dir) ───────────┐
//!   │  manager 1            manager 2            manager 3   …              │
//!   │     └──────── LocalTransport: isolate · cut · heal · loss · delay ────┘
//!   │  the leader: Manager::guarded_pass(sim now) every 100 ms (read barrier, own log applied)
//!   └─ crash = shutdown + drop; restart = reopen the same dir (snapshot + log replay)
//!                                       │ assignments / status reports (Dispatcher)
//!   agents (fake worker nodes, ready) ◄─┘ start tasks, fail some, stop what should stop
//!
//!   checked: (1) ≤ 1 leader per term  (2) no acknowledged write lost  (3) managers converge
//!            (4) each slot runs exactly one task, as many as the replicas
//!            plus (S)/(P) no slot running twice, (R) restarts recover what was applied
//! ```
//!
//! Time is simulated: Raft timers, restart delays and update monitors advance the paused tokio
//! clock without waiting, so a run covering 25 s of swarm time takes 2-5 s (debug build).
//! The *schedule* — which faults hit when, what the client writes, how agents behave, which
//! messages the network loses — is a pure function of the seed. The interleaving is not fully
//! reproducible: openraft draws election timeouts from its own thread-local generator, redb I/O
//! runs on blocking threads, and IDs come from the OS generator. A failing seed reproduces the
//! same scenario, which is almost always enough to reproduce the failure.
//!
//! ## What it found
//! Each is reproduced deterministically by an ignored test in `tests/scenarios.rs`.
//! - (Fixed) openraft built without `single-term-leader` can elect two leaders in one term:
//!   leaders are `(term, node id)`. shoal-raft now builds it with that feature (standard Raft)
//!   and invariant (1) is strict ([`invariants::TermLog`]).
//! - A new leader that plans at once plans on a store that lacks its predecessor's last writes,
//!   and a proposal that timed out stays in the leader's log and may commit after the next plan:
//!   either way a slot gets two tasks. Fixed: the manager awaits a pass guard before each pass,
//!   and the daemon's leader (like the leader loop here, [`PassGuard::OwnLog`]) uses
//!   `shoal_manager::guard::OwnLogGuard`: a read barrier, then its own log applied.
//! - (Fixed) Checks made in a store transaction (a service name is unique, ...) ran against the
//!   proposing manager's store and were not repeated on apply: two creates through two
//!   followers, or a create retried after a timeout, left two services with one name. The
//!   store now enforces them when a batch applies (checked after settling: names unique).
//! - (Fixed) A write forwarded from a lagging follower and refused on apply was acknowledged
//!   when the follower caught up from a snapshot: the daemon looked the refusal up in its own
//!   store's apply. It now reports the refusal the leader saw ([`SimConfig::daemon_rejections`],
//!   on here as in the daemon).
//! - A stop-first rolling update superseded by a second update before the old task stopped
//!   started the new task at once: the slot ran two tasks. Fixed: a replacement waits for every
//!   older task of its slot still running on a live node.
//! - (Fixed) openraft 0.9.25 (the latest 0.9) quits its Raft core when it asks a replication
//!   stream that already exited after seeing a higher vote to send a snapshot ("replication
//!   channel closed"): the manager was dead until restarted. `RaftNode` now restarts a core
//!   that stops by itself, on the same storage and handle; the run journals each restart, and
//!   a Raft node that stops for good is a violation.
//! - (Fixed) `StoreState::last_index` of a manager restored from a snapshot ending with a blank
//!   entry differed from the other replicas' (restore raised it to the snapshot's index).
//!
//! ## Use
//! ```no_run
//! let report = shoal_sim::run(42, &shoal_sim::SimConfig::new(3)).map_err(|f| f.to_string());
//! println!("{}", report.unwrap());
//! ```
//! `tests/sim.rs` runs a few seeds by default; `SHOAL_SIM_SEEDS=200 cargo test -p shoal-sim`
//! runs 200 seeds per topology, `SHOAL_SIM_SEED=17` exactly one (`SHOAL_SIM_MANAGERS=3|5` to
//! pick the topology), `SHOAL_SIM_PROFILE=hostile` a nastier configuration,
//! `SHOAL_SIM_GUARD=read|none` a weaker leader loop (`none` is what the daemon's leader loop
//! did before it had a pass guard), `SHOAL_SIM_FORWARD=0` no follower forwarding, `SHOAL_SIM_DAEMON_REJECTIONS=0` a
//! reporting of refused writes other than the daemon's, `SHOAL_SIM_TRACE=1` prints the journal live
//! and `SHOAL_SIM_LOG=debug` turns on tracing output; `SHOAL_SIM_JOURNAL_LINES` sets how much
//! of the journal a failure prints (400 lines by default). A failure prints the seed, the command
//! that reruns it, the leader's tasks and the end of the journal.
//!
//! ## Modules
//! - `sim`: the driver of a run ([`run`], [`SimReport`], [`SimFailure`])
//! - `config`: [`SimConfig`]
//! - `cluster`: the managers, crash and restart, the leader's orchestration loop
//! - `agent`: the fake worker agents
//! - `client`: client writes and their [`client::Ledger`]
//! - `faults`: the fault schedule
//! - `invariants`: the checks
//! - `glue`: store ↔ Raft glue; `clock`: simulated clock and journal

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod faults;
pub mod glue;
pub mod invariants;
pub mod sim;

pub use config::{PassGuard, SimConfig};
pub use sim::{run, run_paused, SimFailure, SimReport};
