//! The fault schedule: drawn from the seed before the run ([`plan`]), then played against the
//! cluster in simulated time ([`run_faults`]).
//!
//! ```text
//!  plan(seed) ─► [ (at, for, episode) ... ]        episodes, possibly overlapping:
//!                                                   isolate a node (often the leader)
//!                                                   cut one link · split into two groups
//!                                                   bridge (one node sees both halves)
//!                                                   message loss · latency · one slow link
//!                                                   crash a manager (often the leader)
//!                                                   cut a worker's agent off (node down)
//!  run_faults: at `at` start the episode, at `at + for` end it:
//!     partitions ─► LocalTransport::heal     loss/latency ─► back to none
//!     crash      ─► Cluster::open (restart from the same redb directory)
//!     agent cut  ─► the agent reconnects (heartbeat: node ready again)
//! ```
//!
//! A crash is skipped when it would take down more managers than the swarm tolerates, unless
//! the episode was drawn as one of the rare quorum-loss ones. Everything left over at the end of
//! the chaos phase is undone by the driver.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::agent::{mark_down, Agents};
use crate::clock::Journal;
use crate::cluster::Cluster;
use crate::config::SimConfig;
use crate::sim::worker_id;

/// Which manager an episode hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Whichever leads when the episode starts (a random manager if none does).
    Leader,
    /// This one.
    Node(u64),
}

/// One fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Episode {
    /// Cut a manager off from every other.
    Isolate(Pick),
    /// Cut one link.
    Cut(u64, u64),
    /// Cut every link between two groups.
    Split(Vec<u64>, Vec<u64>),
    /// Cut `a` from `b`, leaving `bridge` connected to both.
    Bridge {
        /// One side.
        a: u64,
        /// The other side.
        b: u64,
        /// Sees both.
        bridge: u64,
    },
    /// Lose each message with this probability.
    Loss(f64),
    /// Delay every message by up to this many milliseconds.
    Latency(u64),
    /// Add this many milliseconds on one link.
    SlowLink(u64, u64, u64),
    /// Cut a worker's agent off: the managers mark its node down and replace its tasks; its
    /// processes keep running until it is back.
    WorkerOutage(usize),
    /// Crash a manager, restart it when the episode ends. `quorum_loss` allows it even when it
    /// takes down more managers than the swarm tolerates.
    Crash {
        /// Which.
        pick: Pick,
        /// Allowed beyond the tolerated number of failures.
        quorum_loss: bool,
    },
}

/// An episode in the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// When it starts (from the start of the chaos phase).
    pub at: Duration,
    /// How long it lasts.
    pub lasts: Duration,
    /// What it is.
    pub episode: Episode,
}

/// Draws the fault schedule of a chaos phase.
pub fn plan(cfg: &SimConfig, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids: Vec<u64> = (1..=cfg.managers).collect();
    let mut out = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(200..=1500));
    while at < cfg.chaos {
        let lasts = Duration::from_millis(rng.random_range(300..=4000));
        let any = |rng: &mut StdRng| ids[rng.random_range(0..ids.len())];
        let mut kinds: Vec<u8> = Vec::new();
        if cfg.partitions {
            kinds.extend([0, 0, 1, 2, 3]);
        }
        if cfg.network_faults {
            kinds.extend([4, 5, 6]);
        }
        if cfg.crashes {
            kinds.extend([7, 7, 7]);
        }
        if cfg.worker_outages && cfg.workers > 1 {
            kinds.push(8);
        }
        let Some(&kind) = kinds.get(rng.random_range(0..kinds.len().max(1))) else {
            break;
        };
        let episode = match kind {
            0 => Episode::Isolate(if rng.random_bool(0.6) {
                Pick::Leader
            } else {
                Pick::Node(any(&mut rng))
            }),
            1 => {
                let mut s = ids.clone();
                s.shuffle(&mut rng);
                Episode::Cut(s[0], s[1])
            }
            2 => {
                let mut s = ids.clone();
                s.shuffle(&mut rng);
                let k = rng.random_range(1..=s.len() / 2);
                let (a, b) = s.split_at(k);
                Episode::Split(a.to_vec(), b.to_vec())
            }
            3 => {
                let mut s = ids.clone();
                s.shuffle(&mut rng);
                Episode::Bridge {
                    a: s[0],
                    b: s[1],
                    bridge: s[2 % s.len()],
                }
            }
            4 => Episode::Loss(rng.random_range(0.02..0.35)),
            5 => Episode::Latency(rng.random_range(5..=60)),
            6 => {
                let mut s = ids.clone();
                s.shuffle(&mut rng);
                Episode::SlowLink(s[0], s[1], rng.random_range(20..=150))
            }
            8 => Episode::WorkerOutage(rng.random_range(0..cfg.workers)),
            _ => Episode::Crash {
                pick: if rng.random_bool(0.5) {
                    Pick::Leader
                } else {
                    Pick::Node(any(&mut rng))
                },
                quorum_loss: rng.random_bool(cfg.quorum_loss_rate.clamp(0.0, 1.0)),
            },
        };
        out.push(Planned { at, lasts, episode });
        at += Duration::from_millis(rng.random_range(200..=2500));
    }
    out
}

enum Action {
    Start(Episode, Duration),
    Heal,
    LossOff,
    LatencyOff,
    LinkOk(u64, u64),
    Restart(u64),
    WorkerBack(String),
}

/// Plays `schedule` until it is done or `stop` turns true. Episode ends still pending then are
/// left to the driver, which heals everything.
pub async fn run_faults(
    cluster: Arc<Cluster>,
    agents: Arc<Agents>,
    cfg: SimConfig,
    schedule: Vec<Planned>,
    seed: u64,
    journal: Journal,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = tokio::time::Instant::now();
    let mut queue: Vec<(Duration, u64, Action)> = schedule
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p.at, i as u64, Action::Start(p.episode, p.lasts)))
        .collect();
    let mut seq = queue.len() as u64;
    let net = cluster.net().clone();
    loop {
        queue.sort_by_key(|(at, s, _)| (*at, *s));
        if queue.is_empty() {
            return;
        }
        let (at, _, action) = queue.remove(0);
        tokio::select! {
            _ = tokio::time::sleep_until(start + at) => {}
            _ = stop.changed() => return,
        }
        let pick = |p: Pick, rng: &mut StdRng| match p {
            Pick::Node(id) => id,
            Pick::Leader => cluster
                .leader()
                .map(|l| l.id)
                .unwrap_or_else(|| rng.random_range(1..=cfg.managers)),
        };
        let mut end = |after: Duration, a: Action| {
            seq += 1;
            queue.push((at + after, seq, a));
        };
        match action {
            Action::Start(ep, lasts) => match ep {
                Episode::Isolate(p) => {
                    let id = pick(p, &mut rng);
                    journal.note(format!("FAULT isolate manager {id} for {lasts:?}"));
                    net.isolate(id);
                    end(lasts, Action::Heal);
                }
                Episode::Cut(a, b) => {
                    journal.note(format!("FAULT cut link {a}-{b} for {lasts:?}"));
                    net.cut(a, b);
                    end(lasts, Action::Heal);
                }
                Episode::Split(x, y) => {
                    journal.note(format!("FAULT split {x:?} | {y:?} for {lasts:?}"));
                    for a in &x {
                        for b in &y {
                            net.cut(*a, *b);
                        }
                    }
                    end(lasts, Action::Heal);
                }
                Episode::Bridge { a, b, bridge } => {
                    journal.note(format!(
                        "FAULT cut {a}-{b}, {bridge} bridges both, for {lasts:?}"
                    ));
                    for x in cluster.ids() {
                        for y in cluster.ids() {
                            let side =
                                |n: u64| n == a || (n != b && n != bridge && n.is_multiple_of(2));
                            if x < y && x != bridge && y != bridge && side(x) != side(y) {
                                net.cut(x, y);
                            }
                        }
                    }
                    end(lasts, Action::Heal);
                }
                Episode::Loss(p) => {
                    journal.note(format!(
                        "FAULT lose {:.0}% of messages for {lasts:?}",
                        p * 100.0
                    ));
                    net.set_drop_rate(p);
                    end(lasts, Action::LossOff);
                }
                Episode::Latency(ms) => {
                    journal.note(format!("FAULT latency up to {ms} ms for {lasts:?}"));
                    net.set_delay(Duration::ZERO, Duration::from_millis(ms));
                    end(lasts, Action::LatencyOff);
                }
                Episode::SlowLink(a, b, ms) => {
                    journal.note(format!("FAULT link {a}-{b} +{ms} ms for {lasts:?}"));
                    net.set_link_delay(a, b, Duration::from_millis(ms));
                    end(lasts, Action::LinkOk(a, b));
                }
                Episode::WorkerOutage(i) => {
                    let node = worker_id(i);
                    if agents.in_outage(&node) {
                        continue;
                    }
                    journal.note(format!("FAULT agent of {node} cut off for {lasts:?}"));
                    agents.begin_outage(&node);
                    tokio::spawn(mark_down(
                        cluster.clone(),
                        agents.clone(),
                        node.clone(),
                        journal.clone(),
                    ));
                    end(lasts, Action::WorkerBack(node));
                }
                Episode::Crash {
                    pick: p,
                    quorum_loss,
                } => {
                    let id = pick(p, &mut rng);
                    let down = cluster.down();
                    if down.contains(&id) {
                        continue;
                    }
                    if down.len() >= cfg.tolerated() && !quorum_loss {
                        journal.note(format!(
                            "fault skipped: crashing manager {id} would lose the quorum"
                        ));
                        continue;
                    }
                    cluster.crash(id).await;
                    end(lasts, Action::Restart(id));
                }
            },
            Action::Heal => {
                journal.note("FAULT partitions healed");
                net.heal();
            }
            Action::LossOff => {
                journal.note("FAULT message loss off");
                net.set_drop_rate(0.0);
            }
            Action::LatencyOff => {
                journal.note("FAULT latency off");
                net.set_delay(Duration::ZERO, Duration::ZERO);
            }
            Action::LinkOk(a, b) => net.set_link_delay(a, b, Duration::ZERO),
            Action::WorkerBack(node) => {
                journal.note(format!("FAULT agent of {node} may reconnect"));
                agents.end_outage(&node);
            }
            Action::Restart(id) => {
                if let Err(e) = cluster.open(id).await {
                    journal.note(format!("restart of manager {id} failed: {e}"));
                    cluster.violations().report(format!("restart failed: {e}"));
                }
            }
        }
    }
}
