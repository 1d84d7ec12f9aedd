//! What a manager does while it is the Raft leader, and only then.
//!
//! ```text
//!  raft metrics (watch) ──► leader? ─ yes, newly ─► term starts:
//!                             │                     · a fresh Dispatcher, served by the gate
//!                             │                     · its heartbeat expiry (nodes → down)
//!                             │                     · the Manager loop (orchestrators, scheduler),
//!                             │                       each pass after the leader's guard: a read
//!                             │                       barrier, then its own log applied
//!                             │                     · manager statuses: Leader / Reachable /
//!                             │                       Unreachable of every manager, in the store
//!                             └─ no, any more ─────► term ends: all of it stops, the gate answers
//!                                                    NotLeader, agents move to the new leader
//! ```
//!
//! "Leader" means Raft's leader *that heard from a majority of the voters within the quorum
//! lease* (3 s, [`shoal_raft::RaftNode::quorum_contact`], re-checked every [`LEASE_CHECK`]).
//! openraft 0.9 keeps a leader cut off by a partition in office until it hears of a newer
//! term; etcd's CheckQuorum, which swarmkit runs, steps it down. Here the cut-off leader ends
//! its term (no dispatcher, no orchestration, proposals refused at once with Docker's "does
//! not have a leader" message) without touching Raft's state, so healing the partition costs
//! the majority no extra election; if the majority elected nobody meanwhile, the term starts
//! again as soon as the majority answers.
//!
//! The guard ([`shoal_manager::guard::OwnLogGuard`] over [`RaftLog`]) keeps the orchestrators
//! from planning on a store that lacks writes they must see: a new leader's predecessor's last
//! writes (committed, not applied here yet) and this leader's own proposals that timed out but
//! may still commit. Planning without them would give a slot a second task.
//!
//! Reachability comes from Raft itself: a member is reachable while it answers the leader's
//! messages (heartbeats every few hundred milliseconds), unreachable after
//! [`UNREACHABLE_AFTER`] of silence.

use super::cluster::DispatcherGate;
use futures::future::BoxFuture;
use shoal_api::{Object, Reachability};
use shoal_manager::dispatcher::Dispatcher;
use shoal_manager::guard::{OwnLogGuard, ReplicatedLog};
use shoal_manager::manager::Manager;
use shoal_raft::{RaftNode, RaftRole};
use shoal_store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A member silent for this long is `Unreachable`.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
/// How often a leader re-checks that it still hears from a majority.
pub const LEASE_CHECK: Duration = Duration::from_millis(250);
/// How often the leader refreshes manager statuses.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// How long a pass waits for the leader's own log to be applied before giving up (and trying
/// again on the next event or tick): Raft's default proposal timeout.
const OWN_LOG_WAIT: Duration = Duration::from_secs(10);

/// This manager's Raft log, as the manager's pass guard sees it.
struct RaftLog(RaftNode);

impl ReplicatedLog for RaftLog {
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .read_barrier()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn last_log_index(&self) -> Option<u64> {
        self.0.metrics().last_log
    }

    fn wait_applied(&self, index: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .raft()
                .wait(Some(OWN_LOG_WAIT))
                .applied_index_at_least(Some(index), "the leader's own log applied")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

struct Term {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Term {
    fn start(store: &Store, raft: &RaftNode, gate: &DispatcherGate) -> Term {
        tracing::info!(raft_id = raft.id(), "this manager is the leader");
        let (stop, rx) = watch::channel(false);
        let dispatcher = Dispatcher::new(store.clone());
        gate.set(Some(Arc::clone(&dispatcher)));
        let handles = vec![
            tokio::spawn(dispatcher.run(rx.clone())),
            tokio::spawn(
                Manager::with_guard(store.clone(), OwnLogGuard::shared(RaftLog(raft.clone())))
                    .run(rx.clone()),
            ),
            tokio::spawn(manager_statuses(store.clone(), raft.clone(), rx)),
        ];
        Term { stop, handles }
    }

    async fn end(self, gate: &DispatcherGate) {
        gate.set(None);
        let _ = self.stop.send(true);
        for h in self.handles {
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Runs the leader's duties whenever this manager leads, until `shutdown`.
pub async fn run(
    store: Store,
    raft: RaftNode,
    gate: Arc<DispatcherGate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.watch();
    let mut term: Option<Term> = None;
    loop {
        metrics.borrow_and_update();
        let raft_leader = raft.metrics().role == RaftRole::Leader;
        let with_quorum = raft_leader && raft.quorum_contact(raft.quorum_lease());
        match (with_quorum, term.take()) {
            (true, None) => term = Some(Term::start(&store, &raft, &gate)),
            (false, Some(t)) => {
                if raft_leader {
                    tracing::warn!(
                        raft_id = raft.id(),
                        "no answer from a majority of the managers for {:?}: acting as the leader no more",
                        raft.quorum_lease()
                    );
                } else {
                    tracing::info!(raft_id = raft.id(), "this manager is no longer the leader");
                }
                t.end(&gate).await;
            }
            (_, t) => term = t,
        }
        // Raft's metrics do not change while a cut-off leader hears nothing: look again.
        let recheck = async {
            if raft_leader {
                tokio::time::sleep(LEASE_CHECK).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            r = metrics.changed() => if r.is_err() { break },
            _ = recheck => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
        }
    }
    if let Some(t) = term {
        t.end(&gate).await;
    }
}

/// While leading: keeps every manager's `ManagerStatus` (leader flag, reachability) true to
/// what Raft sees, writing only changes.
async fn manager_statuses(store: Store, raft: RaftNode, mut stop: watch::Receiver<bool>) {
    let since = Instant::now();
    loop {
        let me = raft.id();
        let changes: Vec<(String, bool, Reachability)> = store.view(|s| {
            s.nodes
                .values()
                .filter_map(|n| {
                    let ms = n.manager_status.as_ref()?;
                    let leader = ms.raft_id == me;
                    let reachable = leader || {
                        // Silence is counted from when this term started at the earliest.
                        let heard = raft
                            .last_contact(ms.raft_id)
                            .map_or(since, |t| t.max(since));
                        heard.elapsed() < UNREACHABLE_AFTER
                    };
                    let reach = if reachable {
                        Reachability::Reachable
                    } else {
                        Reachability::Unreachable
                    };
                    (ms.leader != leader || ms.reachability != reach)
                        .then(|| (n.id.clone(), leader, reach))
                })
                .collect()
        });
        if !changes.is_empty() {
            let res = store
                .update(|tx| {
                    for (id, leader, reach) in &changes {
                        if let Some(mut n) = tx.get_node(id) {
                            if let Some(ms) = n.manager_status.as_mut() {
                                ms.leader = *leader;
                                ms.reachability = *reach;
                            }
                            tx.update(Object::Node(n))?;
                        }
                    }
                    Ok::<_, StoreError>(())
                })
                .await;
            match res {
                Ok(()) => {
                    for (id, _, reach) in &changes {
                        match reach {
                            Reachability::Unreachable => {
                                tracing::warn!(node = %id, "manager unreachable")
                            }
                            _ => tracing::info!(node = %id, ?reach, "manager status"),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "updating manager statuses failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(STATUS_EVERY) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}
