//! Orchestrators: turn services into tasks. Pure planners over a store snapshot.
//!
//! ```text
//!   StoreState ──plan(state, now)──► Plan { intents, next_wakeup }
//!       │                                 │
//!       │   per service, by mode:          │ applied by the manager loop in store
//!       │   replicated  slots 1..=N        │ transactions that re-read every object
//!       │   global      one per node       ▼ (so agents' status writes never conflict)
//!       │   jobs        run to completion  apply(tx, intents)
//!       │
//!       │   inside each: supervisor (restart) ─► slot reconcile ─► rolling updater
//! ```
//!
//! Every decision is derivable from the store alone, so a manager that restarts (or a new
//! leader) picks up exactly where the last one stopped:
//! - a task that ends on its own while its desired state is running is marked desired
//!   `shutdown` and, if its restart policy allows, replaced at once by a task that carries the
//!   restart count/history in labels ([`restart`]) and a start gate (`shoal.start-after`) the
//!   allocator honours until the restart delay has passed;
//! - a task the orchestrator stops (drained node, stop-first update) is replaced at once by a
//!   task gated on the old one (`shoal.wait-for`): it is scheduled once the old one stopped,
//!   and once every other task of its slot still on a live node stopped too;
//! - a task whose node is down or deleted is replaced at once, with neither gate: nobody will
//!   report it stopped, and a dead node is not a crash loop, so no restart delay either;
//! - a rolling update's progress is read from `service.update_status` and the tasks' versions.

pub mod global;
pub mod jobs;
pub mod replicated;
pub mod restart;
mod slot;
pub mod update;

use crate::constraint::{node_matches, parse_constraints, Constraint};
use chrono::{DateTime, Utc};
use shoal_api::spec::{self, ServiceMode};
use shoal_api::{
    engine, new_id, Meta, Node, NodeState, Object, Service, Task, TaskState, TaskStatus,
};
use shoal_store::{StoreError, StoreState, Tx};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Status message of a task the orchestrator just created.
pub const CREATED_MESSAGE: &str = "created";
/// Status message of an unfinished task whose node was deleted (swarmkit's).
pub const ORPHANED_MESSAGE: &str = "Task belonged to a node that has been deleted";

/// One change a planner wants. Applying re-reads the object and skips intents that no longer
/// make sense (the object is gone, or already moved further).
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// Create a task (its ID is fresh; skipped if the service is gone, or if it is created
    /// `assigned` to a node that is gone).
    CreateTask(Box<Task>),
    /// Move a task's desired state forward (never backwards). A task that has not reached a
    /// node yet is also marked observed `shutdown` when it is shut down or removed.
    SetDesired { task_id: String, state: TaskState },
    /// Manager-owned observed status change of a task not yet on a node (`from` must match).
    SetStatus {
        task_id: String,
        from: TaskState,
        to: TaskState,
        message: String,
    },
    /// The constraint enforcer: the task's node no longer satisfies its constraints.
    Reject {
        task_id: String,
        message: String,
        err: String,
    },
    /// The task's node was deleted: nobody will report on it again; mark it `orphaned`.
    Orphan { task_id: String },
    /// The scheduler's choice for a pending task.
    Assign {
        task_id: String,
        node_id: String,
        message: String,
    },
    /// The scheduler could not place a pending task: the reason goes to `Status.Err`.
    SetError { task_id: String, err: String },
    /// Replace a service's `UpdateStatus`.
    SetUpdateStatus {
        service_id: String,
        status: Option<engine::ServiceUpdateStatus>,
    },
    /// Roll a service back to its previous spec (update failure action `rollback`).
    Rollback { service_id: String, message: String },
    /// Delete a task (skipped while it still runs on a live node).
    DeleteTask { task_id: String },
    /// The allocator's endpoint for a service (skipped if its endpoint spec changed since).
    SetEndpoint {
        service_id: String,
        endpoint: Box<engine::ServiceEndpoint>,
    },
    /// The allocator releases a new task to the scheduler with its network attachments
    /// (skipped unless the task is still `new` and meant to run).
    Release {
        task_id: String,
        networks: Vec<shoal_api::netmap::TaskAttachment>,
    },
    /// The allocator's addresses of a node on the overlays it takes part in.
    SetNodeAddresses {
        node_id: String,
        addresses: std::collections::BTreeMap<String, String>,
    },
}

impl Intent {
    /// The task or service this intent is about.
    pub fn object_id(&self) -> &str {
        match self {
            Intent::CreateTask(t) => &t.id,
            Intent::SetDesired { task_id, .. }
            | Intent::SetStatus { task_id, .. }
            | Intent::Reject { task_id, .. }
            | Intent::Orphan { task_id }
            | Intent::Assign { task_id, .. }
            | Intent::SetError { task_id, .. }
            | Intent::Release { task_id, .. }
            | Intent::DeleteTask { task_id } => task_id,
            Intent::SetNodeAddresses { node_id, .. } => node_id,
            Intent::SetUpdateStatus { service_id, .. }
            | Intent::Rollback { service_id, .. }
            | Intent::SetEndpoint { service_id, .. } => service_id,
        }
    }
}

/// What a planner decided: intents, and when it wants to be asked again even if nothing
/// changes in the store (a restart delay, an update delay or monitor period ending).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub intents: Vec<Intent>,
    pub next_wakeup: Option<DateTime<Utc>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }

    pub fn push(&mut self, i: Intent) {
        self.intents.push(i);
    }

    /// Asks to be woken at `t` (keeps the earliest).
    pub fn wake_at(&mut self, t: DateTime<Utc>) {
        self.next_wakeup = Some(match self.next_wakeup {
            Some(cur) if cur <= t => cur,
            _ => t,
        });
    }

    /// Appends another plan's intents and wake-up.
    pub fn merge(&mut self, other: Plan) {
        self.intents.extend(other.intents);
        if let Some(t) = other.next_wakeup {
            self.wake_at(t);
        }
    }

    fn set_desired(&mut self, t: &Task, state: TaskState) {
        self.push(Intent::SetDesired {
            task_id: t.id.clone(),
            state,
        });
    }
}

/// Plans every service: replicated, global and job orchestration, restarts and rolling updates.
pub fn plan(state: &StoreState, now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::default();
    // One scan of the tasks, bucketed by service (cheaper than an index lookup per task).
    let mut by_service: HashMap<&str, Vec<&Task>> = HashMap::with_capacity(state.services.len());
    for t in state.tasks.values() {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    for service in state.services.values() {
        let tasks = by_service.remove(service.id.as_str()).unwrap_or_default();
        let ctx = ServiceCtx::with_tasks(state, service, now, tasks);
        match spec::service_mode(&service.spec) {
            ServiceMode::Replicated { replicas } => {
                replicated::plan_service(&ctx, replicas, &mut plan)
            }
            ServiceMode::Global => global::plan_service(&ctx, &mut plan),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => jobs::plan_replicated(&ctx, max_concurrent, total_completions, &mut plan),
            ServiceMode::GlobalJob => jobs::plan_global(&ctx, &mut plan),
        }
    }
    plan
}

/// Whether a task with this desired state should be running (or running to completion).
pub fn wants_to_run(desired: TaskState) -> bool {
    desired <= TaskState::Complete
}

/// What one planning pass knows about a service.
pub(crate) struct ServiceCtx<'a> {
    pub state: &'a StoreState,
    pub service: &'a Service,
    pub template: Cow<'a, engine::TaskSpec>,
    /// The service's placement constraints (empty when none or unparsable).
    pub constraints: Vec<Constraint>,
    pub now: DateTime<Utc>,
    /// Every task of the service.
    pub tasks: Vec<&'a Task>,
    /// The template as new tasks hold it: one allocation shared by all of them (and by the
    /// existing tasks made from the same spec).
    shared: std::cell::OnceCell<Arc<engine::TaskSpec>>,
}

impl<'a> ServiceCtx<'a> {
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn new(state: &'a StoreState, service: &'a Service, now: DateTime<Utc>) -> Self {
        let tasks = state.tasks_of_service(&service.id).collect();
        Self::with_tasks(state, service, now, tasks)
    }

    /// Like [`ServiceCtx::new`] with the service's tasks already gathered.
    pub fn with_tasks(
        state: &'a StoreState,
        service: &'a Service,
        now: DateTime<Utc>,
        tasks: Vec<&'a Task>,
    ) -> Self {
        let template = match &service.spec.task_template {
            Some(t) => Cow::Borrowed(t),
            None => Cow::Owned(engine::TaskSpec::default()),
        };
        let constraints = parse_constraints(spec::constraints(&template)).unwrap_or_else(|e| {
            tracing::warn!(service = %service.id, error = %e, "ignoring unparsable constraints");
            Vec::new()
        });
        ServiceCtx {
            state,
            service,
            template,
            constraints,
            now,
            tasks,
            shared: std::cell::OnceCell::new(),
        }
    }

    /// The template behind an `Arc`, reusing an existing task's when it holds the same spec.
    fn shared_template(&self) -> Arc<engine::TaskSpec> {
        Arc::clone(self.shared.get_or_init(|| {
            self.tasks
                .iter()
                .find(|t| t.spec_version == self.service.spec_version && *t.spec == *self.template)
                .map(|t| Arc::clone(&t.spec))
                .unwrap_or_else(|| Arc::new(self.template.clone().into_owned()))
        }))
    }

    pub fn node(&self, id: Option<&str>) -> Option<&'a Node> {
        id.and_then(|id| self.state.nodes.get(id))
    }

    /// The node exists and is not down: a task on it can still be stopped by its agent.
    pub fn node_alive(&self, id: Option<&str>) -> bool {
        self.node(id)
            .is_some_and(|n| n.status.state != NodeState::Down)
    }

    pub fn constraints_ok(&self, node: &Node) -> bool {
        node_matches(&self.constraints, node)
    }

    /// Whether `t` was made from an older spec that differs from the current template.
    ///
    /// As swarmkit: a task from the current `spec_version` is clean; so is one whose spec
    /// equals the template (a scale changes the version, not the template), or differs only
    /// in placement while its node still satisfies the new constraints.
    pub fn is_dirty(&self, t: &Task) -> bool {
        if t.spec_version == self.service.spec_version
            || spec::same_task_spec(Some(&t.spec), Some(&self.template))
        {
            return false;
        }
        if t.spec.placement != self.template.placement {
            let mut same = self.template.clone().into_owned();
            same.placement = t.spec.placement.clone();
            if spec::same_task_spec(Some(&same), Some(&t.spec)) {
                return !self
                    .node(t.node_id.as_deref())
                    .is_some_and(|n| self.constraints_ok(n));
            }
        }
        true
    }

    /// A fresh task of this service: state `new`, desired `running`.
    pub fn new_task(&self, slot: u64, node_id: Option<String>) -> Task {
        Task {
            id: new_id(),
            meta: Meta {
                version: 0,
                created_at: self.now,
                updated_at: self.now,
            },
            service_id: self.service.id.clone(),
            service_name: self.service.name().to_string(),
            slot,
            node_id,
            spec: self.shared_template(),
            spec_version: self.service.spec_version,
            desired_state: TaskState::Running,
            status: TaskStatus {
                timestamp: self.now,
                state: TaskState::New,
                message: CREATED_MESSAGE.to_string(),
                err: None,
                exit_code: None,
                pid: None,
                container_id: None,
            },
            labels: HashMap::new(),
            job_iteration: None,
            service_labels: Some(self.service.spec.labels.clone().unwrap_or_default()),
            networks: Vec::new(),
        }
    }

    /// Tasks of the service, as views, leaving out those being removed.
    pub fn views(&self) -> Vec<slot::TaskView<'a>> {
        self.tasks
            .iter()
            .copied()
            .filter(|t| t.desired_state < TaskState::Remove)
            .map(slot::TaskView::new)
            .collect()
    }
}

/// Applies intents inside a store transaction, re-reading each object first. Returns how
/// many objects were written. Intents that no longer apply are skipped, never errors.
pub fn apply(tx: &mut Tx<'_>, intents: &[Intent]) -> usize {
    let mut writes = 0;
    for intent in intents {
        match apply_one(tx, intent) {
            Ok(true) => writes += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(object = intent.object_id(), error = %e, "skipping intent");
            }
        }
    }
    writes
}

/// [`apply`], consuming the intents: the tasks they create move into the transaction instead
/// of being copied (the manager loop's way; a plan can create thousands of tasks).
pub fn apply_owned(tx: &mut Tx<'_>, intents: Vec<Intent>) -> usize {
    let mut writes = 0;
    for intent in intents {
        let r = match intent {
            Intent::CreateTask(t) => create_task(tx, *t),
            other => apply_one(tx, &other),
        };
        match r {
            Ok(true) => writes += 1,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "skipping intent"),
        }
    }
    writes
}

fn create_task(tx: &mut Tx<'_>, t: Task) -> Result<bool, StoreError> {
    // Intents never create or delete services or nodes, so the applied state answers whether
    // they exist (without copying them, as `get_service` would, once per task).
    let state = tx.state();
    if !state.services.contains_key(&t.service_id) {
        return Ok(false);
    }
    // Created already placed (see `scheduler::place_created`) on a node deleted since the
    // plan: skipped, the next pass plans the slot again.
    if t.status.state == TaskState::Assigned
        && t.node_id
            .as_deref()
            .is_none_or(|n| !state.nodes.contains_key(n))
    {
        return Ok(false);
    }
    tx.create(Object::Task(t))?;
    Ok(true)
}

fn apply_one(tx: &mut Tx<'_>, intent: &Intent) -> Result<bool, StoreError> {
    let now = Utc::now();
    match intent {
        Intent::CreateTask(t) => return create_task(tx, (**t).clone()),
        Intent::SetDesired { task_id, state } => {
            let Some(mut t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            if t.desired_state >= *state {
                return Ok(false);
            }
            t.desired_state = *state;
            // Not on a node yet: nobody else will report it stopped.
            if *state >= TaskState::Shutdown && t.status.state < TaskState::Assigned {
                t.status.state = TaskState::Shutdown;
                t.status.timestamp = now;
                t.status.err = None;
            }
            tx.update(Object::Task(t))?;
        }
        Intent::SetStatus {
            task_id,
            from,
            to,
            message,
        } => {
            let Some(mut t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            if t.status.state != *from || !from.can_move_to(*to) {
                return Ok(false);
            }
            t.status.state = *to;
            t.status.message = message.clone();
            t.status.timestamp = now;
            tx.update(Object::Task(t))?;
        }
        Intent::Reject {
            task_id,
            message,
            err,
        } => {
            let Some(mut t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            if t.status.state.is_terminal() || !wants_to_run(t.desired_state) {
                return Ok(false);
            }
            t.status.state = TaskState::Rejected;
            t.status.message = message.clone();
            t.status.err = Some(err.clone());
            t.status.timestamp = now;
            tx.update(Object::Task(t))?;
        }
        Intent::Orphan { task_id } => {
            let Some(mut t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            if t.status.state.is_terminal() {
                return Ok(false);
            }
            t.status.state = TaskState::Orphaned;
            t.status.message = ORPHANED_MESSAGE.into();
            t.status.timestamp = now;
            tx.update(Object::Task(t))?;
        }
        Intent::Assign {
            task_id,
            node_id,
            message,
        } => {
            let Some(mut t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            let node_ok = t.node_id.as_deref().is_none_or(|n| n == node_id);
            if t.status.state != TaskState::Pending || !wants_to_run(t.desired_state) || !node_ok {
                return Ok(false);
            }
            if tx.get_node(node_id).is_none() {
                return Ok(false);
            }
            t.node_id = Some(node_id.clone());
            t.status.state = TaskState::Assigned;
            t.status.message = message.clone();
            t.status.err = None;
            t.status.timestamp = now;
            tx.update(Object::Task(t))?;
        }
        Intent::SetError { task_id, err } => {
            let Some(mut t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            if t.status.state != TaskState::Pending || t.status.err.as_deref() == Some(err) {
                return Ok(false);
            }
            t.status.err = Some(err.clone());
            t.status.timestamp = now;
            tx.update(Object::Task(t))?;
        }
        Intent::SetUpdateStatus { service_id, status } => {
            let Some(mut s) = tx.get_service(service_id) else {
                return Ok(false);
            };
            if s.update_status == *status {
                return Ok(false);
            }
            s.update_status = status.clone();
            tx.update(Object::Service(s))?;
        }
        Intent::Rollback {
            service_id,
            message,
        } => {
            let Some(mut s) = tx.get_service(service_id) else {
                return Ok(false);
            };
            let Some(prev) = s.previous_spec.take() else {
                return Ok(false);
            };
            s.spec = prev;
            s.spec_version = s.spec_version.max(s.meta.version) + 1;
            s.update_status = Some(update::status(
                engine::ServiceUpdateStatusStateEnum::ROLLBACK_STARTED,
                message,
                Some(now),
                None,
            ));
            tx.update(Object::Service(s))?;
        }
        Intent::DeleteTask { task_id } => {
            let Some(t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            let on_live_node = t.status.state.is_active_on_node()
                && t.node_id
                    .as_deref()
                    .and_then(|n| tx.get_node(n))
                    .is_some_and(|n| n.status.state != NodeState::Down);
            if on_live_node {
                return Ok(false);
            }
            tx.delete(shoal_api::ObjectKind::Task, task_id)?;
        }
        Intent::SetEndpoint {
            service_id,
            endpoint,
        } => {
            let Some(mut s) = tx.get_service(service_id) else {
                return Ok(false);
            };
            if s.spec.endpoint_spec != endpoint.spec || s.endpoint.as_ref() == Some(&**endpoint) {
                return Ok(false);
            }
            s.endpoint = Some((**endpoint).clone());
            tx.update(Object::Service(s))?;
        }
        Intent::Release { task_id, networks } => {
            let Some(mut t) = tx.get_task(task_id) else {
                return Ok(false);
            };
            if t.status.state != TaskState::New || !wants_to_run(t.desired_state) {
                return Ok(false);
            }
            t.networks = networks.clone();
            t.status.state = TaskState::Pending;
            t.status.message = crate::allocator::PENDING_MESSAGE.into();
            t.status.timestamp = now;
            tx.update(Object::Task(t))?;
        }
        Intent::SetNodeAddresses { node_id, addresses } => {
            let Some(mut n) = tx.get_node(node_id) else {
                return Ok(false);
            };
            if n.network_addresses == *addresses {
                return Ok(false);
            }
            n.network_addresses = addresses.clone();
            tx.update(Object::Node(n))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders shared by the planners' unit tests.
    use super::*;
    use shoal_api::{NodeRole, NodeStatus};

    pub fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            meta: Meta::new_now(),
            spec: engine::NodeSpec::default(),
            description: engine::NodeDescription {
                hostname: Some(format!("host-{id}")),
                ..Default::default()
            },
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
                addr: "10.0.0.1".into(),
            },
            role: NodeRole::Worker,
            manager_status: None,
            addr_port: String::new(),
            network_addresses: Default::default(),
        }
    }

    pub fn service(id: &str, mode: engine::ServiceSpecMode) -> Service {
        Service {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::ServiceSpec {
                name: Some(id.into()),
                mode: Some(mode),
                task_template: Some(engine::TaskSpec {
                    container_spec: Some(engine::TaskSpecContainerSpec {
                        image: Some("busybox".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            previous_spec: None,
            spec_version: 1,
            endpoint: None,
            update_status: None,
            registry_auth: None,
            job_iteration: 0,
        }
    }

    pub fn replicated(id: &str, n: i64) -> Service {
        service(
            id,
            engine::ServiceSpecMode {
                replicated: Some(engine::ServiceSpecModeReplicated { replicas: Some(n) }),
                ..Default::default()
            },
        )
    }

    pub fn global(id: &str) -> Service {
        service(
            id,
            engine::ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            },
        )
    }

    /// A task of `s` in `slot` on `node`, observed `state`, desired running.
    pub fn task(s: &Service, slot: u64, node: Option<&str>, state: TaskState) -> Task {
        let ctx = ServiceCtx::new(&EMPTY, s, Utc::now());
        let mut t = ctx.new_task(slot, node.map(Into::into));
        t.status.state = state;
        t
    }

    static EMPTY: std::sync::LazyLock<StoreState> = std::sync::LazyLock::new(StoreState::default);

    pub fn state(nodes: Vec<Node>, services: Vec<Service>, tasks: Vec<Task>) -> StoreState {
        let mut st = StoreState::default();
        for n in nodes {
            st.nodes.insert(n.id.clone(), n);
        }
        for s in services {
            st.services.insert(s.id.clone(), s);
        }
        for t in tasks {
            st.tasks.insert(t.id.clone(), t);
        }
        st.reindex();
        st
    }

    pub fn created(p: &Plan) -> Vec<&Task> {
        p.intents
            .iter()
            .filter_map(|i| match i {
                Intent::CreateTask(t) => Some(&**t),
                _ => None,
            })
            .collect()
    }

    pub fn desired(p: &Plan) -> Vec<(String, TaskState)> {
        p.intents
            .iter()
            .filter_map(|i| match i {
                Intent::SetDesired { task_id, state } => Some((task_id.clone(), *state)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use shoal_store::Store;

    #[test]
    fn plan_wakeup_keeps_earliest() {
        let mut p = Plan::default();
        let t0 = Utc::now();
        p.wake_at(t0 + chrono::TimeDelta::seconds(5));
        p.wake_at(t0 + chrono::TimeDelta::seconds(1));
        p.wake_at(t0 + chrono::TimeDelta::seconds(3));
        assert_eq!(p.next_wakeup, Some(t0 + chrono::TimeDelta::seconds(1)));
    }

    #[test]
    fn dirty_means_a_different_template_not_just_a_version() {
        let mut s = replicated("web", 1);
        let t = task(&s, 1, Some("n1"), TaskState::Running);
        s.spec_version = 2;
        let st = state(vec![node("n1")], vec![s.clone()], vec![]);
        let ctx = ServiceCtx::new(&st, &s, Utc::now());
        assert!(!ctx.is_dirty(&t), "same template, new version (a scale)");
        let mut s2 = s.clone();
        if let Some(tt) = s2.spec.task_template.as_mut() {
            tt.force_update = Some(1);
        }
        let ctx = ServiceCtx::new(&st, &s2, Utc::now());
        assert!(ctx.is_dirty(&t));
        // `ForceUpdate: 0` is an unset one (a client sent back the spec the API showed).
        if let Some(tt) = s2.spec.task_template.as_mut() {
            tt.force_update = Some(0);
        }
        let ctx = ServiceCtx::new(&st, &s2, Utc::now());
        assert!(!ctx.is_dirty(&t));
        // Placement-only change that the node still satisfies: clean.
        let mut s3 = s.clone();
        if let Some(tt) = s3.spec.task_template.as_mut() {
            tt.placement = Some(engine::TaskSpecPlacement {
                constraints: Some(vec!["node.role==worker".into()]),
                ..Default::default()
            });
        }
        let ctx = ServiceCtx::new(&st, &s3, Utc::now());
        assert!(!ctx.is_dirty(&t));
        if let Some(tt) = s3.spec.task_template.as_mut() {
            tt.placement = Some(engine::TaskSpecPlacement {
                constraints: Some(vec!["node.role==manager".into()]),
                ..Default::default()
            });
        }
        let ctx = ServiceCtx::new(&st, &s3, Utc::now());
        assert!(ctx.is_dirty(&t));
    }

    #[test]
    fn new_tasks_carry_a_copy_of_the_service_labels() {
        let mut s = replicated("web", 1);
        s.spec.labels = Some(
            [("com.docker.stack.namespace".to_string(), "demo".to_string())]
                .into_iter()
                .collect(),
        );
        let t = task(&s, 1, None, TaskState::New);
        assert_eq!(t.service_labels, s.spec.labels);
        assert_eq!(
            task(&replicated("api", 1), 1, None, TaskState::New).service_labels,
            Some(HashMap::new())
        );
    }

    #[tokio::test]
    async fn apply_rereads_and_skips_stale_intents() {
        let store = Store::new();
        let s = replicated("web", 1);
        let mut t = task(&s, 1, None, TaskState::Pending);
        t.id = "t1".into();
        store
            .update(|tx| {
                tx.create(Object::Service(s.clone()))?;
                tx.create(Object::Node(node("n1")))?;
                tx.create(Object::Task(t.clone()))
            })
            .await
            .unwrap();
        let intents = vec![
            Intent::Assign {
                task_id: "t1".into(),
                node_id: "n1".into(),
                message: "m".into(),
            },
            // Already assigned by the intent above: skipped.
            Intent::SetError {
                task_id: "t1".into(),
                err: "x".into(),
            },
            Intent::SetDesired {
                task_id: "missing".into(),
                state: TaskState::Shutdown,
            },
        ];
        let n = store
            .update(|tx| Ok::<_, StoreError>(apply(tx, &intents)))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let t = store.view(|s| s.tasks["t1"].clone());
        assert_eq!(t.status.state, TaskState::Assigned);
        assert_eq!(t.node_id.as_deref(), Some("n1"));

        // Desired state only moves forward; a running task is not deleted.
        let intents = vec![
            Intent::SetDesired {
                task_id: "t1".into(),
                state: TaskState::Remove,
            },
            Intent::SetDesired {
                task_id: "t1".into(),
                state: TaskState::Shutdown,
            },
            Intent::DeleteTask {
                task_id: "t1".into(),
            },
        ];
        let n = store
            .update(|tx| Ok::<_, StoreError>(apply(tx, &intents)))
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            store.view(|s| s.tasks["t1"].desired_state),
            TaskState::Remove
        );
    }

    #[tokio::test]
    async fn shutting_down_an_unassigned_task_finishes_it() {
        let store = Store::new();
        let s = replicated("web", 1);
        let mut t = task(&s, 1, None, TaskState::Pending);
        t.id = "t1".into();
        store
            .update(|tx| {
                tx.create(Object::Service(s.clone()))?;
                tx.create(Object::Task(t.clone()))
            })
            .await
            .unwrap();
        let intents = vec![Intent::SetDesired {
            task_id: "t1".into(),
            state: TaskState::Shutdown,
        }];
        store
            .update(|tx| Ok::<_, StoreError>(apply(tx, &intents)))
            .await
            .unwrap();
        let t = store.view(|s| s.tasks["t1"].clone());
        assert_eq!(t.status.state, TaskState::Shutdown);
    }
}
