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
//!
//! When a node is down: [`MISSED_HEARTBEATS`] periods after it was last heard from, where the
//! period is the one it was last told (a period shortened by `swarm update` reaches a node with
//! the answer to its next heartbeat, which comes at the old period). Swarmkit's rule too: grace
//! = 3 x (period + a random epsilon under 0.5 s), on a timer per node. Here the expiry loop
//! sleeps until the earliest deadline of all sessions, so a node is marked down at its
//! deadline, not up to a polling interval later.

use chrono::Utc;
use futures::stream::BoxStream;
use shoal_api::dispatch::{Assignment, AssignmentSet, DependencyData, StatusUpdate};
use shoal_api::{engine, NodeState, Object, Task, TaskState};
use shoal_store::{Store, StoreError, StoreState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch, Notify};

/// Missed heartbeat periods after which a node is declared down.
pub const MISSED_HEARTBEATS: u32 = 3;

/// When a session last heard from at `seen`, and told to heartbeat every `told`, expires.
pub fn expires_at(seen: Instant, told: Duration) -> Instant {
    seen + told * MISSED_HEARTBEATS
}

/// The sessions expired at `now`, and the earliest deadline of those that are not.
fn expiry<'a>(
    sessions: impl IntoIterator<Item = (&'a String, &'a (Instant, Duration))>,
    now: Instant,
) -> (Vec<String>, Option<Instant>) {
    let mut expired = Vec::new();
    let mut next: Option<Instant> = None;
    for (id, (seen, told)) in sessions {
        let at = expires_at(*seen, *told);
        if at <= now {
            expired.push(id.clone());
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (expired, next)
}

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
    /// Poked when a session's deadline moves earlier (see [`Dispatcher::run`]).
    earlier: Notify,
}

impl Dispatcher {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            sessions: Mutex::new(HashMap::new()),
            earlier: Notify::new(),
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
                if period < e.1 {
                    self.earlier.notify_one();
                }
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
        self.store
            .view(|s| build_set(s, node_id, crate::netmap::build(s, node_id)))
    }

    /// The set of `node_id` if its fingerprint differs from `last`, with that fingerprint.
    /// Compares before it copies anything, so a change that leaves the set as it was costs a
    /// scan of the node's tasks, not a copy of them.
    fn changed_set(
        &self,
        node_id: &str,
        last: Option<&Fingerprint>,
    ) -> Option<(AssignmentSet, Fingerprint)> {
        self.store.view(|s| {
            let network = crate::netmap::build(s, node_id);
            let fp = fingerprint(s, node_id, &network);
            if last == Some(&fp) {
                return None;
            }
            Some((build_set(s, node_id, network), fp))
        })
    }

    /// A stream of assignment sets for `node_id`: the current one first, then a new one each
    /// time it changes.
    ///
    /// Between sets the stream keeps only a fingerprint of the last one sent (task IDs and
    /// versions). It computes a set only when it is polled, i.e. when the previous one has
    /// been taken: a stream whose agent does not read (a frozen node) holds no more than the
    /// set being sent, however many changes pile up meanwhile.
    pub fn assignments(self: &Arc<Self>, node_id: &str) -> BoxStream<'static, AssignmentSet> {
        struct St {
            me: Arc<Dispatcher>,
            node: String,
            rx: broadcast::Receiver<Arc<shoal_store::Event>>,
            /// Something changed that may concern the node since the last comparison.
            dirty: bool,
            last: Option<Fingerprint>,
        }
        // Subscribe before reading so no change between the two is missed.
        let rx = self.store.subscribe();
        let st = St {
            me: Arc::clone(self),
            node: node_id.to_string(),
            rx,
            dirty: true,
            last: None,
        };
        Box::pin(futures::stream::unfold(st, |mut st| async move {
            loop {
                if std::mem::take(&mut st.dirty) {
                    if let Some((set, fp)) = st.me.changed_set(&st.node, st.last.as_ref()) {
                        st.last = Some(fp);
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
                st.dirty = relevant;
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
            let (expired, next) = match self.sessions.lock() {
                Ok(s) => expiry(s.iter(), Instant::now()),
                Err(_) => (Vec::new(), None),
            };
            if expired.is_empty() {
                // Until the earliest deadline, at least once a period. A contact moves its
                // node's deadline later; one moved earlier (a node told a shorter period)
                // wakes this loop through `earlier`; a new session's is the furthest away.
                let period = self.heartbeat_period();
                let until =
                    next.map_or(Instant::now() + period, |n| n.min(Instant::now() + period));
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = self.earlier.notified() => {}
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
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

/// What an assignment set is made of, without copying it: per task (sorted by ID) its ID, its
/// version (every write of a task changes it) and a hash of what the set takes from its
/// service (registry credentials, runtime); and a hash of the node's network map.
type Fingerprint = (Vec<(String, u64, u64)>, u64);

fn on_node<'a>(s: &'a StoreState, node_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
    s.tasks_on_node(node_id)
        .filter(|t| t.status.state >= TaskState::Assigned)
}

fn from_service(s: &StoreState, t: &Task) -> (Option<String>, Option<String>) {
    let svc = s.services.get(&t.service_id);
    (
        svc.and_then(|svc| svc.registry_auth.clone()),
        svc.and_then(|svc| shoal_api::spec::runtime_name(&svc.spec)),
    )
}

fn build_set(
    s: &StoreState,
    node_id: &str,
    network: shoal_api::netmap::NetworkMap,
) -> AssignmentSet {
    let mut tasks: Vec<Assignment> = on_node(s, node_id)
        .map(|t| {
            let (registry_auth, runtime) = from_service(s, t);
            Assignment {
                registry_auth,
                runtime,
                task: t.clone(),
            }
        })
        .collect();
    tasks.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    let (secrets, configs) = dependencies(s, tasks.iter().map(|a| &a.task));
    AssignmentSet {
        tasks,
        secrets,
        configs,
        network,
    }
}

/// The secrets and configs `tasks` reference, with their data (swarmkit's dependencies of an
/// assignment): only those of tasks that have not ended, so a node no longer running a task
/// that uses one stops receiving it. A reference to an object no longer stored is skipped (the
/// agent fails that task with a clear message).
fn dependencies<'a>(
    s: &StoreState,
    tasks: impl Iterator<Item = &'a Task>,
) -> (Vec<DependencyData>, Vec<DependencyData>) {
    let mut secret_ids = std::collections::BTreeSet::new();
    let mut config_ids = std::collections::BTreeSet::new();
    for t in tasks.filter(|t| !t.status.state.is_terminal()) {
        let Some(c) = t.spec.container_spec.as_ref() else {
            continue;
        };
        for r in c.secrets.iter().flatten() {
            if let Some(id) = r.secret_id.as_deref() {
                secret_ids.insert(id.to_string());
            }
        }
        for r in c.configs.iter().flatten() {
            if let Some(id) = r.config_id.as_deref() {
                config_ids.insert(id.to_string());
            }
        }
    }
    let secrets = secret_ids
        .iter()
        .filter_map(|id| s.secrets.get(id))
        .map(|o| DependencyData {
            id: o.id.clone(),
            name: o.name().to_string(),
            data: o.spec.data.clone().unwrap_or_default(),
        })
        .collect();
    let configs = config_ids
        .iter()
        .filter_map(|id| s.configs.get(id))
        .map(|o| DependencyData {
            id: o.id.clone(),
            name: o.name().to_string(),
            data: o.spec.data.clone().unwrap_or_default(),
        })
        .collect();
    (secrets, configs)
}

fn fingerprint(
    s: &StoreState,
    node_id: &str,
    network: &shoal_api::netmap::NetworkMap,
) -> Fingerprint {
    use std::hash::{Hash, Hasher};
    let mut fp: Vec<(String, u64, u64)> = on_node(s, node_id)
        .map(|t| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            from_service(s, t).hash(&mut h);
            // The dependencies the set carries: a secret or config created after the task
            // (or removed) changes the set.
            let (secrets, configs) = dependencies(s, std::iter::once(t));
            for d in secrets.iter().chain(&configs) {
                d.id.hash(&mut h);
            }
            (t.id.clone(), t.meta.version, h.finish())
        })
        .collect();
    fp.sort_unstable();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    network.hash(&mut h);
    (fp, h.finish())
}

/// Whether a store event may change `node`'s assignment set or network map: its own tasks,
/// services, secrets, configs, nodes and networks, and another node's task when whether it
/// takes traffic (or where) changed.
fn concerns(ev: &shoal_store::Event, node: &str) -> bool {
    let on = |o: &Object| match o {
        Object::Task(t) => t.node_id.as_deref() == Some(node),
        Object::Service(_)
        | Object::Secret(_)
        | Object::Config(_)
        | Object::Node(_)
        | Object::Network(_) => true,
        _ => false,
    };
    fn serving(o: Option<&Object>) -> Option<(bool, &[shoal_api::netmap::TaskAttachment])> {
        match o {
            Some(Object::Task(t)) => Some((
                t.status.state == TaskState::Running && t.desired_state == TaskState::Running,
                &t.networks,
            )),
            _ => None,
        }
    }
    on(&ev.object)
        || ev.old.as_ref().is_some_and(on)
        || serving(Some(&ev.object)) != serving(ev.old.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(v: &[(&str, Instant, Duration)]) -> HashMap<String, (Instant, Duration)> {
        v.iter()
            .map(|(id, seen, told)| (id.to_string(), (*seen, *told)))
            .collect()
    }

    #[test]
    fn a_node_is_down_after_three_periods_of_the_one_it_was_told() {
        let t0 = Instant::now();
        let s = sessions(&[
            ("fast", t0, Duration::from_secs(1)),
            // Told 5 s at its last heartbeat: a shorter period since then does not reach it
            // before its next heartbeat, 5 s later.
            ("slow", t0, Duration::from_secs(5)),
        ]);
        let at = |d: u64| t0 + Duration::from_millis(d);
        let (down, next) = expiry(s.iter(), at(2_999));
        assert!(down.is_empty());
        assert_eq!(
            next,
            Some(at(3_000)),
            "the loop wakes at the first deadline"
        );
        let (down, next) = expiry(s.iter(), at(3_000));
        assert_eq!(down, vec!["fast".to_string()]);
        assert_eq!(next, Some(at(15_000)));
        let (mut down, next) = expiry(s.iter(), at(15_000));
        down.sort();
        assert_eq!(down, vec!["fast".to_string(), "slow".to_string()]);
        assert_eq!(next, None);
    }

    #[tokio::test]
    async fn heartbeats_keep_a_node_and_a_shorter_period_applies_once_told() {
        let store = Store::new();
        let d = Dispatcher::new(store);
        d.touch("n1");
        let told = |d: &Dispatcher| d.sessions.lock().map(|s| s["n1"].1).ok();
        assert_eq!(told(&d), Some(shoal_api::spec::DEFAULT_HEARTBEAT));
        // The cluster's period drops to 1 s: until the node is told, the 5 s one holds.
        let mut c: shoal_api::Cluster = serde_json::from_value(serde_json::json!({
            "id": "c",
            "meta": shoal_api::Meta::new_now(),
            "spec": engine::SwarmSpec::default(),
            "worker_join_token": "",
            "manager_join_token": "",
        }))
        .expect("a cluster");
        c.spec.dispatcher = Some(engine::SwarmSpecDispatcher {
            heartbeat_period: Some(1_000_000_000),
        });
        d.store
            .update(|tx| tx.create(Object::Cluster(c)))
            .await
            .expect("cluster");
        d.touch("n1");
        assert_eq!(told(&d), Some(shoal_api::spec::DEFAULT_HEARTBEAT));
        d.told("n1");
        assert_eq!(told(&d), Some(Duration::from_secs(1)));
        // The expiry loop hears that a deadline moved earlier.
        let woke = tokio::time::timeout(Duration::from_secs(1), d.earlier.notified()).await;
        assert!(woke.is_ok());
    }

    #[tokio::test]
    async fn a_set_is_sent_again_only_when_its_tasks_or_their_service_change() {
        use crate::orchestrator::testutil as u;
        let store = Store::new();
        let web = u::replicated("web", 2);
        let on_a = u::task(&web, 1, Some("a"), TaskState::Assigned);
        let on_b = u::task(&web, 2, Some("b"), TaskState::Assigned);
        let (a_id, b_id) = (on_a.id.clone(), on_b.id.clone());
        store
            .update(|tx| {
                tx.create(Object::Node(u::node("a")))?;
                tx.create(Object::Node(u::node("b")))?;
                tx.create(Object::Service(web))?;
                tx.create(Object::Task(on_a))?;
                tx.create(Object::Task(on_b))
            })
            .await
            .expect("setup");
        let d = Dispatcher::new(store.clone());
        let (set, fp) = d.changed_set("a", None).expect("a first set");
        assert_eq!(set, d.assignment_set("a"));
        assert_eq!(set.tasks.len(), 1);
        assert_eq!(set.tasks[0].task.id, a_id);
        assert!(d.changed_set("a", Some(&fp)).is_none(), "nothing changed");
        let bump = |id: String, state: TaskState| {
            let store = store.clone();
            async move {
                store
                    .update(|tx| {
                        let mut t = tx.get_task(&id).expect("task");
                        t.status.state = state;
                        tx.update(Object::Task(t))
                    })
                    .await
                    .expect("update")
            }
        };
        bump(b_id.clone(), TaskState::Starting).await;
        assert!(
            d.changed_set("a", Some(&fp)).is_none(),
            "another node's task, not taking traffic"
        );
        // Another node's task that starts taking traffic changes the service's backends in
        // every node's network map.
        bump(b_id.clone(), TaskState::Running).await;
        let (set, fp) = d.changed_set("a", Some(&fp)).expect("a new backend");
        assert_eq!(set.network.services[0].backends.len(), 1);
        assert_eq!(set.network.services[0].backends[0].task_id, b_id);
        bump(a_id, TaskState::Running).await;
        let (set, fp) = d.changed_set("a", Some(&fp)).expect("its task changed");
        assert_eq!(set.tasks[0].task.status.state, TaskState::Running);
        store
            .update(|tx| {
                let mut s = tx.get_service("web").expect("service");
                s.registry_auth = Some("token".into());
                tx.update(Object::Service(s))
            })
            .await
            .expect("service update");
        let (set, _) = d
            .changed_set("a", Some(&fp))
            .expect("its service's credentials");
        assert_eq!(set.tasks[0].registry_auth.as_deref(), Some("token"));
    }

    #[tokio::test]
    async fn registry_auth_goes_only_with_the_tasks_of_its_service() {
        use crate::orchestrator::testutil as u;
        let store = Store::new();
        let mut private = u::replicated("private", 1);
        private.registry_auth = Some("c2VjcmV0".into());
        let public = u::replicated("public", 2);
        let p_on_a = u::task(&private, 1, Some("a"), TaskState::Assigned);
        let q_on_a = u::task(&public, 1, Some("a"), TaskState::Assigned);
        let q_on_b = u::task(&public, 2, Some("b"), TaskState::Assigned);
        let (p_id, q_id) = (p_on_a.id.clone(), q_on_a.id.clone());
        store
            .update(|tx| {
                tx.create(Object::Node(u::node("a")))?;
                tx.create(Object::Node(u::node("b")))?;
                tx.create(Object::Service(private))?;
                tx.create(Object::Service(public))?;
                tx.create(Object::Task(p_on_a))?;
                tx.create(Object::Task(q_on_a))?;
                tx.create(Object::Task(q_on_b))
            })
            .await
            .expect("setup");
        let d = Dispatcher::new(store);
        let a = d.assignment_set("a");
        assert_eq!(a.tasks.len(), 2);
        for t in &a.tasks {
            let want = (t.task.id == p_id).then_some("c2VjcmV0");
            assert_eq!(t.registry_auth.as_deref(), want, "task {}", t.task.id);
        }
        assert!(a.tasks.iter().any(|t| t.task.id == q_id));
        let b = d.assignment_set("b");
        assert_eq!(b.tasks.len(), 1);
        assert_eq!(
            b.tasks[0].registry_auth, None,
            "b runs no task of the service"
        );
        let json = serde_json::to_string(&b).expect("json");
        assert!(!json.contains("c2VjcmV0"));
    }
    #[tokio::test]
    async fn a_node_gets_exactly_the_secrets_and_configs_its_tasks_use() {
        use crate::orchestrator::testutil as u;
        use shoal_api::{Config, Meta, Secret};
        let secret = |id: &str, data: &str| {
            Object::Secret(Secret {
                id: id.into(),
                meta: Meta::new_now(),
                spec: engine::SecretSpec {
                    name: Some(format!("name-{id}")),
                    data: Some(data.into()),
                    ..Default::default()
                },
            })
        };
        let config = |id: &str, data: &str| {
            Object::Config(Config {
                id: id.into(),
                meta: Meta::new_now(),
                spec: engine::ConfigSpec {
                    name: Some(format!("name-{id}")),
                    data: Some(data.into()),
                    ..Default::default()
                },
            })
        };
        let mut uses = u::replicated("uses", 1);
        {
            let tt = &mut uses.spec.task_template;
            let c = tt
                .get_or_insert_with(Default::default)
                .container_spec
                .get_or_insert_with(Default::default);
            c.secrets = Some(vec![engine::TaskSpecContainerSpecSecrets {
                secret_id: Some("s1".into()),
                secret_name: Some("name-s1".into()),
                ..Default::default()
            }]);
            c.configs = Some(vec![engine::TaskSpecContainerSpecConfigs {
                config_id: Some("c1".into()),
                config_name: Some("name-c1".into()),
                ..Default::default()
            }]);
        }
        let plain = u::replicated("plain", 1);
        let on_a = u::task(&uses, 1, Some("a"), TaskState::Running);
        let on_b = u::task(&plain, 1, Some("b"), TaskState::Running);
        let a_id = on_a.id.clone();
        let store = Store::new();
        store
            .update(|tx| {
                tx.create(Object::Node(u::node("a")))?;
                tx.create(Object::Node(u::node("b")))?;
                tx.create(secret("s1", "czE="))?;
                tx.create(secret("s2", "czI="))?;
                tx.create(config("c1", "YzE="))?;
                tx.create(config("c2", "YzI="))?;
                tx.create(Object::Service(uses))?;
                tx.create(Object::Service(plain))?;
                tx.create(Object::Task(on_a))?;
                tx.create(Object::Task(on_b))
            })
            .await
            .expect("setup");
        let d = Dispatcher::new(store.clone());
        let a = d.assignment_set("a");
        let ids = |v: &[DependencyData]| v.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a.secrets), vec!["s1".to_string()]);
        assert_eq!(ids(&a.configs), vec!["c1".to_string()]);
        assert_eq!(a.secret("s1").map(|x| x.data.as_str()), Some("czE="));
        assert_eq!(a.config("c1").map(|x| x.name.as_str()), Some("name-c1"));
        let b = d.assignment_set("b");
        assert!(b.secrets.is_empty() && b.configs.is_empty());
        let json = serde_json::to_string(&b).expect("json");
        assert!(!json.contains("czE=") && !json.contains("czI="));

        // Once the task has ended, its secret and config are no longer sent.
        let fp_before = store.view(|s| fingerprint(s, "a", &crate::netmap::build(s, "a")));
        store
            .update(|tx| {
                let mut t = tx.get_task(&a_id).expect("the task");
                t.status.state = TaskState::Complete;
                tx.update(Object::Task(t))
            })
            .await
            .expect("complete");
        let a = d.assignment_set("a");
        assert_eq!(a.tasks.len(), 1);
        assert!(a.secrets.is_empty() && a.configs.is_empty());
        assert_ne!(
            fp_before,
            store.view(|s| fingerprint(s, "a", &crate::netmap::build(s, "a")))
        );
    }
}
