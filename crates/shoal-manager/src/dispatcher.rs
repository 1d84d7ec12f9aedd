//! The dispatcher: the manager's side of every agent session.
//!
//! ```text
//!  agent ── register(description) ──► node Ready, description stored
//!        ── heartbeat() every period ─► session kept alive; 3 missed periods ─► node Down
//!        ◄─ assignments() ─────────── full set of tasks on the node, re-sent on every change
//!        ── report(status updates) ──► task status moves forward (never backwards)
//! ```
//!
//! In a one-process swarm the agent calls these methods directly; across machines the same
//! methods sit behind the node-to-node RPC.

use chrono::Utc;
use futures::stream::BoxStream;
use shoal_api::dispatch::{Assignment, AssignmentSet, StatusUpdate};
use shoal_api::{engine, NodeState, Object};
use shoal_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// Missed heartbeat periods after which a node is declared down.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Errors a dispatcher call can return to an agent.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("node {0} is not part of this swarm")]
    UnknownNode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The manager side of agent sessions.
pub struct Dispatcher {
    store: Store,
    /// Per node: when it was last heard from, and the heartbeat period it was told to keep
    /// then (so a period shortened by `swarm update` does not expire nodes that have not
    /// heard of it yet).
    sessions: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl Dispatcher {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The heartbeat period agents must keep (cluster setting, 5 s by default).
    pub fn heartbeat_period(&self) -> Duration {
        self.store.view(|s| {
            s.cluster
                .as_ref()
                .map(|c| shoal_api::spec::heartbeat_period(&c.spec))
                .unwrap_or(shoal_api::spec::DEFAULT_HEARTBEAT)
        })
    }

    fn touch(&self, node_id: &str) {
        let period = self.heartbeat_period();
        if let Ok(mut s) = self.sessions.lock() {
            let told = s.get(node_id).map_or(period, |(_, p)| (*p).max(period));
            // The longer of the old and new period holds until the node has heard the new one
            // (its next heartbeat answer carries it).
            s.insert(node_id.to_string(), (Instant::now(), told));
        }
    }

    /// Records that `node_id` was told the current period (after answering its heartbeat).
    fn told(&self, node_id: &str) {
        let period = self.heartbeat_period();
        if let Ok(mut s) = self.sessions.lock() {
            if let Some(e) = s.get_mut(node_id) {
                e.1 = period;
            }
        }
    }

    /// Opens a session: records the node's description and address and marks it ready.
    pub async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, DispatchError> {
        let id = node_id.to_string();
        let addr = addr.to_string();
        self.store
            .update(|tx| {
                let mut node = tx
                    .get_node(&id)
                    .ok_or_else(|| DispatchError::UnknownNode(id.clone()))?;
                node.description = description;
                node.status.state = NodeState::Ready;
                node.status.message = String::new();
                if !addr.is_empty() {
                    node.status.addr = addr;
                }
                tx.update(Object::Node(node))?;
                Ok::<_, DispatchError>(())
            })
            .await?;
        self.touch(node_id);
        self.told(node_id);
        Ok(self.heartbeat_period())
    }

    /// Keeps a session alive; brings a node that was marked down back to ready.
    pub async fn heartbeat(&self, node_id: &str) -> Result<Duration, DispatchError> {
        let state = self
            .store
            .view(|s| s.nodes.get(node_id).map(|n| n.status.state));
        match state {
            None => return Err(DispatchError::UnknownNode(node_id.to_string())),
            Some(NodeState::Ready) => {}
            Some(_) => {
                let id = node_id.to_string();
                self.store
                    .update(|tx| {
                        if let Some(mut node) = tx.get_node(&id) {
                            node.status.state = NodeState::Ready;
                            node.status.message = String::new();
                            tx.update(Object::Node(node))?;
                        }
                        Ok::<_, DispatchError>(())
                    })
                    .await?;
            }
        }
        self.touch(node_id);
        self.told(node_id);
        Ok(self.heartbeat_period())
    }

    /// The current set of tasks assigned to `node_id`.
    pub fn assignment_set(&self, node_id: &str) -> AssignmentSet {
        self.store.view(|s| {
            let mut tasks: Vec<Assignment> = s
                .tasks_on_node(node_id)
                .filter(|t| t.status.state >= shoal_api::TaskState::Assigned)
                .map(|t| {
                    let svc = s.services.get(&t.service_id);
                    Assignment {
                        registry_auth: svc.and_then(|svc| svc.registry_auth.clone()),
                        runtime: svc.and_then(|svc| shoal_api::spec::runtime_name(&svc.spec)),
                        task: t.clone(),
                    }
                })
                .collect();
            tasks.sort_by(|a, b| a.task.id.cmp(&b.task.id));
            AssignmentSet { tasks }
        })
    }

    /// A stream of assignment sets for `node_id`: the current one first, then a new one each
    /// time it changes.
    pub fn assignments(self: &Arc<Self>, node_id: &str) -> BoxStream<'static, AssignmentSet> {
        struct St {
            me: Arc<Dispatcher>,
            node: String,
            rx: broadcast::Receiver<Arc<shoal_store::Event>>,
            pending: Option<AssignmentSet>,
            last: Option<AssignmentSet>,
        }
        // Subscribe before reading so no change between the two is missed.
        let rx = self.store.subscribe();
        let st = St {
            me: Arc::clone(self),
            node: node_id.to_string(),
            rx,
            pending: Some(self.assignment_set(node_id)),
            last: None,
        };
        Box::pin(futures::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(set) = st.pending.take() {
                    if st.last.as_ref() != Some(&set) {
                        st.last = Some(set.clone());
                        return Some((set, st));
                    }
                }
                let mut relevant = false;
                match st.rx.recv().await {
                    Ok(ev) => relevant |= concerns(&ev, &st.node),
                    Err(broadcast::error::RecvError::Lagged(_)) => relevant = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
                // Drain whatever else is queued before recomputing.
                loop {
                    match st.rx.try_recv() {
                        Ok(ev) => relevant |= concerns(&ev, &st.node),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => relevant = true,
                        Err(_) => break,
                    }
                }
                if relevant {
                    st.pending = Some(st.me.assignment_set(&st.node));
                }
            }
        }))
    }

    /// Applies status updates from `node_id`'s agent. Updates for tasks that are not on that
    /// node, or that would move a state backwards, are ignored.
    pub async fn report(
        &self,
        node_id: &str,
        updates: Vec<StatusUpdate>,
    ) -> Result<(), DispatchError> {
        if updates.is_empty() {
            return Ok(());
        }
        let node = node_id.to_string();
        self.store
            .update(|tx| {
                if tx.get_node(&node).is_none() {
                    return Err(DispatchError::UnknownNode(node.clone()));
                }
                for u in updates {
                    let Some(mut task) = tx.get_task(&u.task_id) else {
                        continue;
                    };
                    if task.node_id.as_deref() != Some(node.as_str()) {
                        continue;
                    }
                    if !task.status.state.can_move_to(u.status.state) {
                        continue;
                    }
                    task.status = u.status;
                    tx.update(Object::Task(task))?;
                }
                Ok(())
            })
            .await?;
        self.touch(node_id);
        Ok(())
    }

    /// Watches sessions and marks nodes whose heartbeats stopped as down. Nodes known at start
    /// get one full grace period to reconnect.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let start = Instant::now();
        let known: Vec<String> = self.store.view(|s| s.nodes.keys().cloned().collect());
        let period = self.heartbeat_period();
        if let Ok(mut s) = self.sessions.lock() {
            for id in known {
                s.entry(id).or_insert((start, period));
            }
        }
        loop {
            let period = self.heartbeat_period();
            tokio::select! {
                _ = tokio::time::sleep(period / 2) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let expired: Vec<String> = match self.sessions.lock() {
                Ok(s) => s
                    .iter()
                    .filter(|(_, (t, told))| t.elapsed() > *told * MISSED_HEARTBEATS)
                    .map(|(id, _)| id.clone())
                    .collect(),
                Err(_) => Vec::new(),
            };
            if expired.is_empty() {
                continue;
            }
            let res = self
                .store
                .update(|tx| {
                    for id in &expired {
                        if let Some(mut node) = tx.get_node(id) {
                            if node.status.state == NodeState::Ready {
                                node.status.state = NodeState::Down;
                                node.status.message = "heartbeat failure".into();
                                tx.update(Object::Node(node))?;
                            }
                        }
                    }
                    Ok::<_, StoreError>(())
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "marking nodes down failed");
            }
            if let Ok(mut s) = self.sessions.lock() {
                for id in &expired {
                    s.remove(id);
                }
            }
            tracing::info!(nodes = ?expired, at = %Utc::now(), "nodes missed their heartbeats");
        }
    }
}

/// Whether a store event may change `node`'s assignment set.
fn concerns(ev: &shoal_store::Event, node: &str) -> bool {
    let on = |o: &Object| match o {
        Object::Task(t) => t.node_id.as_deref() == Some(node),
        Object::Service(_) => true,
        _ => false,
    };
    on(&ev.object) || ev.old.as_ref().is_some_and(on)
}
