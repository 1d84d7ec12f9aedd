//! The scheduler: picks a node for every pending task. A pure function of a store snapshot.
//!
//! ```text
//!  pending tasks ──group by (service, spec version)──► one filter pass per group
//!                                                          │
//!   nodes ──► ready+active ─► resources fit ─► constraints ─► platform ─► max replicas/node
//!             (first failing filter is the node's reason; reasons feed the "no suitable node" text)
//!                                                          │ eligible nodes
//!                                                          ▼
//!   spread preferences: a tree, one level per `spread=<descriptor>`, leaves hold node heaps
//!   place one task at a time: at each level the branch with the fewest tasks of the service,
//!   in the leaf the node with (≥5 recent failures last, fewest tasks of the service,
//!   fewest tasks in total); counts are updated after each placement, so one call levels
//!   the tasks it places (100 tasks on 3 nodes → 34/33/33).
//! ```
//!
//! Per call the node table (available resources, task counts per service, recent failures) is
//! built once from the store; every task in a group shares the filter results, and each
//! placement costs O(depth · log nodes). Tasks that arrive pre-assigned to a node (global
//! services) are only checked against that node.
//!
//! Host-mode published ports are not checked yet: the filter slot exists in
//! [`Filter`] order and will read the task's port allocations once the allocator makes them.

use crate::constraint::{parse_constraints, Constraint, Key};
use crate::orchestrator::{wants_to_run, Intent, Plan};
use chrono::{DateTime, Utc};
use shoal_api::spec::{self, Resources};
use shoal_api::{engine, Node, NodeAvailability, Task, TaskState};
use shoal_store::StoreState;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

/// Failures of a service on a node within [`FAILURE_WINDOW`] that push the node to the back.
pub const MAX_FAILURES: u32 = 5;
/// Look-back window for counting failures of a service on a node.
pub const FAILURE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Status message of a task the scheduler assigned.
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";
/// Status message of a pre-assigned task the scheduler confirmed.
pub const PREASSIGNED_MESSAGE: &str = "scheduler confirmed task can run on preassigned node";

/// What the scheduler decided for one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub task_id: String,
    pub outcome: Outcome,
}

/// Where a task goes, or why it cannot go anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Assign the task to this node.
    Assigned(String),
    /// Keep the task pending; the text goes to the task's `Status.Err`
    /// (`no suitable node (...)`, or for a pre-assigned task the reason its node fails).
    NoSuitableNode(String),
}

/// The filters, in the order they are applied; the first one a node fails is its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Filter {
    Ready = 0,
    Resources = 1,
    Constraints = 2,
    Platform = 3,
    /// Host-mode port conflicts (not checked yet; reserved so the order stays swarmkit's).
    HostPorts = 4,
    MaxReplicas = 5,
}

const FILTERS: [Filter; 6] = [
    Filter::Ready,
    Filter::Resources,
    Filter::Constraints,
    Filter::Platform,
    Filter::HostPorts,
    Filter::MaxReplicas,
];

impl Filter {
    /// swarmkit's explanation for `nodes` nodes failing this filter.
    pub fn explain(self, nodes: u32) -> String {
        let s = if nodes == 1 { "" } else { "s" };
        match self {
            Filter::Ready => format!("{nodes} node{s} not available for new tasks"),
            Filter::Resources => format!("insufficient resources on {nodes} node{s}"),
            Filter::Constraints => {
                format!("scheduling constraints not satisfied on {nodes} node{s}")
            }
            Filter::Platform => format!("unsupported platform on {nodes} node{s}"),
            Filter::HostPorts => format!("host-mode port already in use on {nodes} node{s}"),
            Filter::MaxReplicas => "max replicas per node limit exceed".to_string(),
        }
    }
}

/// Failure counts per filter, explained as swarmkit does (most failures first, `; `-joined).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reasons([u32; FILTERS.len()]);

impl Reasons {
    fn add(&mut self, f: Filter) {
        self.0[f as usize] += 1;
    }

    fn explain(&self) -> String {
        let mut order: Vec<Filter> = FILTERS.to_vec();
        // Stable: ties keep the pipeline order.
        order.sort_by_key(|f| Reverse(self.0[*f as usize]));
        order
            .into_iter()
            .filter(|f| self.0[*f as usize] > 0)
            .map(|f| f.explain(self.0[f as usize]))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn no_suitable_node(&self) -> String {
        let e = self.explain();
        if e.is_empty() {
            "no suitable node".to_string()
        } else {
            format!("no suitable node ({e})")
        }
    }
}

/// Per-node facts, computed once per call and updated as tasks are placed.
struct NodeInfo<'a> {
    node: &'a Node,
    /// Ready and availability active.
    available: bool,
    free: Resources,
    total: u32,
    by_service: HashMap<&'a str, u32>,
    /// Recent failures (failed or rejected within the window) per (service, spec version).
    failures: HashMap<(&'a str, u64), u32>,
}

impl<'a> NodeInfo<'a> {
    /// `stopping`: tasks about to be marked desired `shutdown`/`remove`, counted as if they
    /// were already.
    fn new(
        state: &'a StoreState,
        node: &'a Node,
        since: DateTime<Utc>,
        stopping: &HashSet<&str>,
    ) -> Self {
        let cap = node.description.resources.as_ref();
        let mut info = NodeInfo {
            node,
            available: node.is_ready() && node.availability() == NodeAvailability::Active,
            free: Resources {
                nano_cpus: cap.and_then(|r| r.nano_cpus).unwrap_or(0),
                memory_bytes: cap.and_then(|r| r.memory_bytes).unwrap_or(0),
            },
            total: 0,
            by_service: HashMap::new(),
            failures: HashMap::new(),
        };
        for t in state.tasks_on_node(&node.id) {
            let st = t.status.state;
            if (TaskState::Assigned..=TaskState::Running).contains(&st) {
                if wants_to_run(t.desired_state) && !stopping.contains(t.id.as_str()) {
                    let r = spec::reservations(&t.spec);
                    info.free.nano_cpus -= r.nano_cpus;
                    info.free.memory_bytes -= r.memory_bytes;
                    info.total += 1;
                    *info.by_service.entry(t.service_id.as_str()).or_default() += 1;
                }
            } else if matches!(st, TaskState::Failed | TaskState::Rejected)
                && t.status.timestamp > since
            {
                *info
                    .failures
                    .entry((t.service_id.as_str(), t.spec_version))
                    .or_default() += 1;
            }
        }
        info
    }
}

/// What every task of one (service, spec version) group shares.
struct GroupSpec<'a> {
    service_id: &'a str,
    spec_version: u64,
    /// `None`: no constraints, or unparsable ones (swarmkit disables the filter then).
    constraints: Option<Vec<Constraint>>,
    reservation: Resources,
    platforms: &'a [engine::Platform],
    max_replicas: u32,
    spread: Vec<Key>,
}

impl<'a> GroupSpec<'a> {
    fn new(t: &'a Task) -> Self {
        let exprs = spec::constraints(&t.spec);
        let constraints = if exprs.is_empty() {
            None
        } else {
            match parse_constraints(exprs) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(task = %t.id, error = %e, "ignoring unparsable placement constraints");
                    None
                }
            }
        };
        GroupSpec {
            service_id: &t.service_id,
            spec_version: t.spec_version,
            constraints,
            reservation: spec::reservations(&t.spec),
            platforms: spec::platforms(&t.spec),
            max_replicas: u32::try_from(spec::max_replicas_per_node(&t.spec)).unwrap_or(u32::MAX),
            spread: spec::spread_preferences(&t.spec)
                .iter()
                .map(|d| Key::parse(d))
                .filter(|k| !matches!(k, Key::Unknown(_)))
                .collect(),
        }
    }

    fn fits_resources(&self, free: &Resources) -> bool {
        let r = &self.reservation;
        if r.nano_cpus == 0 && r.memory_bytes == 0 {
            return true;
        }
        r.nano_cpus <= free.nano_cpus && r.memory_bytes <= free.memory_bytes
    }

    fn platform_ok(&self, node: &Node) -> bool {
        if self.platforms.is_empty() {
            return true;
        }
        let Some(np) = node.description.platform.as_ref() else {
            return false;
        };
        let n_arch = normalize_arch(np.architecture.as_deref().unwrap_or(""));
        let n_os = np.os.as_deref().unwrap_or("");
        self.platforms.iter().any(|p| {
            let arch = normalize_arch(p.architecture.as_deref().unwrap_or(""));
            let os = p.os.as_deref().unwrap_or("");
            (arch.is_empty() || arch == n_arch) && (os.is_empty() || os == n_os)
        })
    }

    /// The first filter `info` fails for one more task of this group (`svc` tasks of the
    /// service already on it), or `None` if it can take one.
    fn first_failure(&self, info: &NodeInfo<'_>, svc: u32) -> Option<Filter> {
        if !info.available {
            return Some(Filter::Ready);
        }
        if !self.fits_resources(&info.free) {
            return Some(Filter::Resources);
        }
        if let Some(c) = &self.constraints {
            if !crate::constraint::node_matches(c, info.node) {
                return Some(Filter::Constraints);
            }
        }
        if !self.platform_ok(info.node) {
            return Some(Filter::Platform);
        }
        self.dynamic_failure(info, svc)
    }

    /// The filters that change as tasks are placed: resources and max replicas.
    fn dynamic_failure(&self, info: &NodeInfo<'_>, svc: u32) -> Option<Filter> {
        if !self.fits_resources(&info.free) {
            return Some(Filter::Resources);
        }
        if self.max_replicas > 0 && svc >= self.max_replicas {
            return Some(Filter::MaxReplicas);
        }
        None
    }
}

fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Ranking key of a node in a leaf heap: smaller is better.
type NodeKey = (u32, u32, u32, u32);

/// The mutable per-group view of the nodes.
struct Placer<'s, 'a> {
    nodes: &'s mut [NodeInfo<'a>],
    group: &'s GroupSpec<'a>,
    /// Tasks of the group's service per node (dense copy, written back at the end).
    svc: Vec<u32>,
    /// Recent failures of the group's (service, version) per node.
    fails: Vec<u32>,
}

impl Placer<'_, '_> {
    fn key(&self, i: usize) -> NodeKey {
        let f = self.fails[i];
        let fail_rank = if f >= MAX_FAILURES { f } else { 0 };
        (fail_rank, self.svc[i], self.nodes[i].total, i as u32)
    }

    /// Records one task of the group on node `i`; returns whether it can take another.
    fn place_on(&mut self, i: usize) -> bool {
        let r = self.group.reservation;
        let n = &mut self.nodes[i];
        n.free.nano_cpus -= r.nano_cpus;
        n.free.memory_bytes -= r.memory_bytes;
        n.total += 1;
        self.svc[i] += 1;
        self.group
            .dynamic_failure(&self.nodes[i], self.svc[i])
            .is_none()
    }
}

/// Spread tree: one level per preference; leaves hold the eligible nodes.
struct Tree {
    tasks: u32,
    kind: TreeKind,
}

enum TreeKind {
    Leaf(BinaryHeap<Reverse<NodeKey>>),
    Branch {
        children: Vec<Tree>,
        heap: BinaryHeap<Reverse<(u32, usize)>>,
    },
}

/// Tree under construction: values in sorted order for determinism.
#[derive(Default)]
struct TreeBuild {
    tasks: u32,
    nodes: Vec<usize>,
    next: BTreeMap<String, TreeBuild>,
}

impl TreeBuild {
    fn finish(self, p: &Placer<'_, '_>, depth: usize, levels: usize) -> Tree {
        if depth == levels {
            let heap = self.nodes.iter().map(|&i| Reverse(p.key(i))).collect();
            return Tree {
                tasks: self.tasks,
                kind: TreeKind::Leaf(heap),
            };
        }
        let children: Vec<Tree> = self
            .next
            .into_values()
            .map(|b| b.finish(p, depth + 1, levels))
            .collect();
        let heap = children
            .iter()
            .enumerate()
            .map(|(i, c)| Reverse((c.tasks, i)))
            .collect();
        Tree {
            tasks: self.tasks,
            kind: TreeKind::Branch { children, heap },
        }
    }
}

impl Tree {
    /// Places one task in this subtree; `None` when every node under it is full.
    fn place(&mut self, p: &mut Placer<'_, '_>) -> Option<usize> {
        let placed = match &mut self.kind {
            TreeKind::Leaf(heap) => {
                let Reverse(key) = heap.pop()?;
                let i = key.3 as usize;
                if p.place_on(i) {
                    heap.push(Reverse(p.key(i)));
                }
                Some(i)
            }
            TreeKind::Branch { children, heap } => loop {
                let Reverse((count, c)) = heap.pop()?;
                if let Some(i) = children[c].place(p) {
                    heap.push(Reverse((count + 1, c)));
                    break Some(i);
                }
                // That branch is full: drop it and try the next one.
            },
        };
        if placed.is_some() {
            self.tasks += 1;
        }
        placed
    }
}

/// Schedules `pending` tasks now. See [`schedule_at`].
pub fn schedule(state: &StoreState, pending: &[&Task]) -> Vec<Decision> {
    schedule_at(state, pending, Utc::now())
}

/// Schedules `pending` tasks against `state` as of `now` (which bounds the failure window).
///
/// Returns at most one decision per task, in the order of `pending`. Tasks whose desired state
/// no longer wants them to run are skipped, as are pre-assigned tasks whose node is gone.
pub fn schedule_at(state: &StoreState, pending: &[&Task], now: DateTime<Utc>) -> Vec<Decision> {
    schedule_stopping(state, pending, now, &HashSet::new())
}

/// [`schedule_at`], counting the tasks in `stopping` as no longer wanting to run.
fn schedule_stopping(
    state: &StoreState,
    pending: &[&Task],
    now: DateTime<Utc>,
    stopping: &HashSet<&str>,
) -> Vec<Decision> {
    let since = now - FAILURE_WINDOW;
    let mut nodes: Vec<NodeInfo<'_>> = state
        .nodes
        .values()
        .map(|n| NodeInfo::new(state, n, since, stopping))
        .collect();
    let node_index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.node.id.as_str(), i))
        .collect();

    let mut out: Vec<Option<Decision>> = vec![None; pending.len()];
    let mut specs: HashMap<(&str, u64), GroupSpec<'_>> = HashMap::new();
    let mut group_order: Vec<(&str, u64)> = Vec::new();
    let mut groups: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
    let mut preassigned: Vec<usize> = Vec::new();

    for (i, t) in pending.iter().enumerate() {
        if !wants_to_run(t.desired_state) {
            continue;
        }
        let key = (t.service_id.as_str(), t.spec_version);
        specs.entry(key).or_insert_with(|| GroupSpec::new(t));
        if t.node_id.is_some() {
            preassigned.push(i);
        } else {
            groups
                .entry(key)
                .or_insert_with(|| {
                    group_order.push(key);
                    Vec::new()
                })
                .push(i);
        }
    }

    // Pre-assigned tasks first: they only check their own node.
    for i in preassigned {
        let t = pending[i];
        let Some(&n) = t.node_id.as_deref().and_then(|id| node_index.get(id)) else {
            continue;
        };
        let Some(g) = specs.get(&(t.service_id.as_str(), t.spec_version)) else {
            continue;
        };
        let svc = nodes[n].by_service.get(g.service_id).copied().unwrap_or(0);
        let outcome = match g.first_failure(&nodes[n], svc) {
            Some(f) => {
                let mut r = Reasons::default();
                r.add(f);
                Outcome::NoSuitableNode(r.explain())
            }
            None => {
                let info = &mut nodes[n];
                info.free.nano_cpus -= g.reservation.nano_cpus;
                info.free.memory_bytes -= g.reservation.memory_bytes;
                info.total += 1;
                *info.by_service.entry(g.service_id).or_default() += 1;
                Outcome::Assigned(info.node.id.clone())
            }
        };
        out[i] = Some(Decision {
            task_id: t.id.clone(),
            outcome,
        });
    }

    for key in group_order {
        let (Some(g), Some(members)) = (specs.get(&key), groups.get(&key)) else {
            continue;
        };
        schedule_group(&mut nodes, g, members, pending, &mut out);
    }

    out.into_iter().flatten().collect()
}

/// Schedules every pending task of `state` and turns the decisions into intents: assignments,
/// and `no suitable node` errors for tasks whose error text changed.
pub fn plan(state: &StoreState, now: DateTime<Utc>) -> Plan {
    let pending: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Pending && wants_to_run(t.desired_state))
        .collect();
    let mut plan = Plan::default();
    if pending.is_empty() {
        return plan;
    }
    let by_id: HashMap<&str, &Task> = pending.iter().map(|t| (t.id.as_str(), *t)).collect();
    for d in schedule_at(state, &pending, now) {
        let Some(t) = by_id.get(d.task_id.as_str()) else {
            continue;
        };
        match d.outcome {
            Outcome::Assigned(node_id) => {
                let message = assigned_message(t);
                plan.push(Intent::Assign {
                    task_id: d.task_id,
                    node_id,
                    message: message.to_string(),
                });
            }
            Outcome::NoSuitableNode(err) => {
                if t.status.err.as_deref() != Some(err.as_str()) {
                    plan.push(Intent::SetError {
                        task_id: d.task_id,
                        err,
                    });
                }
            }
        }
    }
    plan
}

/// The status message of a task the scheduler assigns: it names a node picked for it, or one
/// the task was bound to (a global service's).
fn assigned_message(t: &Task) -> &'static str {
    if t.node_id.is_some() {
        PREASSIGNED_MESSAGE
    } else {
        ASSIGNED_MESSAGE
    }
}

/// Carries the tasks that `plan` (the orchestrator's) creates through the allocator and the
/// scheduler before they are written, so a task is stored `assigned` to its node in the
/// transaction that creates it instead of three transactions later (`new`, `pending`,
/// `assigned`). Each created task goes exactly as far as the later steps would take it:
///
/// - held by a start gate, or refused by the allocation hook: stays `new` (the allocator
///   releases it later);
/// - released, and a node fits: `assigned` to it, with the scheduler's message;
/// - released, and no node fits: `pending` with the reason in `Status.Err`.
///
/// Placement counts the tasks already on the nodes in `state`, as the scheduler step does,
/// except those the same plan stops (desired `shutdown`/`remove`); tasks still pending in the
/// store are placed by that step, after these. Returns how many tasks were assigned.
pub fn place_created(state: &StoreState, plan: &mut Plan, now: DateTime<Utc>) -> usize {
    let mut released: Vec<usize> = Vec::new();
    for (i, intent) in plan.intents.iter_mut().enumerate() {
        if let Intent::CreateTask(t) = intent {
            if crate::allocator::release_created(state, t, now) {
                released.push(i);
            }
        }
    }
    if released.is_empty() {
        return 0;
    }
    let decisions = {
        let stopping: HashSet<&str> = plan
            .intents
            .iter()
            .filter_map(|i| match i {
                Intent::SetDesired { task_id, state } if !wants_to_run(*state) => {
                    Some(task_id.as_str())
                }
                _ => None,
            })
            .collect();
        let pending: Vec<&Task> = released
            .iter()
            .filter_map(|&i| match &plan.intents[i] {
                Intent::CreateTask(t) => Some(&**t),
                _ => None,
            })
            .collect();
        schedule_stopping(state, &pending, now, &stopping)
    };
    let index: HashMap<String, usize> = released
        .iter()
        .filter_map(|&i| match &plan.intents[i] {
            Intent::CreateTask(t) => Some((t.id.clone(), i)),
            _ => None,
        })
        .collect();
    let mut assigned = 0;
    for d in decisions {
        let Some(Intent::CreateTask(t)) = index.get(&d.task_id).map(|&i| &mut plan.intents[i])
        else {
            continue;
        };
        match d.outcome {
            Outcome::Assigned(node_id) => {
                let message = assigned_message(t);
                t.node_id = Some(node_id);
                t.status.state = TaskState::Assigned;
                t.status.message = message.to_string();
                t.status.err = None;
                assigned += 1;
            }
            Outcome::NoSuitableNode(err) => t.status.err = Some(err),
        }
    }
    assigned
}

fn schedule_group<'a>(
    nodes: &mut [NodeInfo<'a>],
    g: &GroupSpec<'a>,
    members: &[usize],
    pending: &[&Task],
    out: &mut [Option<Decision>],
) {
    let svc: Vec<u32> = nodes
        .iter()
        .map(|n| n.by_service.get(g.service_id).copied().unwrap_or(0))
        .collect();
    let fails: Vec<u32> = nodes
        .iter()
        .map(|n| {
            n.failures
                .get(&(g.service_id, g.spec_version))
                .copied()
                .unwrap_or(0)
        })
        .collect();

    let mut root = TreeBuild::default();
    for (i, n) in nodes.iter().enumerate() {
        let eligible = g.first_failure(n, svc[i]).is_none();
        // Every node counts towards its branch's task count; only eligible ones are leaves.
        let mut b = &mut root;
        b.tasks += svc[i];
        for k in &g.spread {
            let v = k.value_of(n.node).unwrap_or("").to_string();
            b = b.next.entry(v).or_default();
            b.tasks += svc[i];
        }
        if eligible {
            b.nodes.push(i);
        }
    }

    let mut p = Placer {
        nodes,
        group: g,
        svc,
        fails,
    };
    let mut tree = root.finish(&p, 0, g.spread.len());

    let mut unplaced = Vec::new();
    for &ti in members {
        match tree.place(&mut p) {
            Some(n) => {
                out[ti] = Some(Decision {
                    task_id: pending[ti].id.clone(),
                    outcome: Outcome::Assigned(p.nodes[n].node.id.clone()),
                });
            }
            None => unplaced.push(ti),
        }
    }

    if !unplaced.is_empty() {
        // Nothing fits any more: every node's first failing filter, on the final counts.
        let mut all = Reasons::default();
        for (i, n) in p.nodes.iter().enumerate() {
            if let Some(f) = g.first_failure(n, p.svc[i]) {
                all.add(f);
            }
        }
        let msg = all.no_suitable_node();
        for ti in unplaced {
            out[ti] = Some(Decision {
                task_id: pending[ti].id.clone(),
                outcome: Outcome::NoSuitableNode(msg.clone()),
            });
        }
    }

    // Write the service's counts back for the next group of the same service.
    let Placer { nodes, svc, .. } = p;
    for (i, n) in nodes.iter_mut().enumerate() {
        if svc[i] > 0 {
            n.by_service.insert(g.service_id, svc[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{engine, Meta, NodeRole, NodeState, NodeStatus, TaskStatus};
    use std::collections::HashMap as Map;

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            meta: Meta::new_now(),
            spec: engine::NodeSpec::default(),
            description: engine::NodeDescription {
                hostname: Some(format!("host-{id}")),
                platform: Some(engine::Platform {
                    architecture: Some("x86_64".into()),
                    os: Some("linux".into()),
                }),
                resources: Some(engine::ResourceObject {
                    nano_cpus: Some(4_000_000_000),
                    memory_bytes: Some(8 << 30),
                    ..Default::default()
                }),
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

    fn labeled(id: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = node(id);
        n.spec.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    fn task(id: &str, service: &str) -> Task {
        Task {
            id: id.into(),
            meta: Meta::new_now(),
            service_id: service.into(),
            service_name: service.into(),
            slot: 1,
            node_id: None,
            spec: Default::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Pending, "pending task scheduling"),
            labels: Map::new(),
            job_iteration: None,
            service_labels: None,
            networks: Vec::new(),
        }
    }

    fn running_on(id: &str, service: &str, node: &str) -> Task {
        let mut t = task(id, service);
        t.node_id = Some(node.into());
        t.status.state = TaskState::Running;
        t
    }

    fn state(nodes: Vec<Node>, tasks: Vec<Task>) -> StoreState {
        let mut s = StoreState::default();
        for n in nodes {
            s.nodes.insert(n.id.clone(), n);
        }
        for t in tasks {
            s.tasks.insert(t.id.clone(), t);
        }
        s.reindex();
        s
    }

    fn pending_n(n: usize, service: &str, spec: &engine::TaskSpec) -> Vec<Task> {
        (0..n)
            .map(|i| {
                let mut t = task(&format!("{service}-t{i}"), service);
                t.spec = spec.clone().into();
                t
            })
            .collect()
    }

    fn counts(decisions: &[Decision]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in decisions {
            if let Outcome::Assigned(n) = &d.outcome {
                *m.entry(n.clone()).or_default() += 1;
            }
        }
        m
    }

    fn run(s: &StoreState, tasks: &[Task]) -> Vec<Decision> {
        let refs: Vec<&Task> = tasks.iter().collect();
        schedule(s, &refs)
    }

    fn placement(f: impl FnOnce(&mut engine::TaskSpecPlacement)) -> engine::TaskSpec {
        let mut p = engine::TaskSpecPlacement::default();
        f(&mut p);
        engine::TaskSpec {
            placement: Some(p),
            ..Default::default()
        }
    }

    #[test]
    fn ten_tasks_on_three_nodes_level_4_3_3() {
        let s = state(vec![node("a"), node("b"), node("c")], vec![]);
        let tasks = pending_n(10, "web", &Default::default());
        let d = run(&s, &tasks);
        assert_eq!(d.len(), 10);
        let mut c: Vec<usize> = counts(&d).into_values().collect();
        c.sort();
        assert_eq!(c, vec![3, 3, 4]);
        // Decisions come back in the order of the input.
        assert_eq!(d[0].task_id, "web-t0");
        assert_eq!(d[9].task_id, "web-t9");
    }

    #[test]
    fn existing_tasks_of_the_service_then_total_tasks_rank_nodes() {
        // a already runs 2 web tasks; b runs 2 other tasks; c is empty.
        let s = state(
            vec![node("a"), node("b"), node("c")],
            vec![
                running_on("w1", "web", "a"),
                running_on("w2", "web", "a"),
                running_on("o1", "other", "b"),
                running_on("o2", "other", "b"),
            ],
        );
        let tasks = pending_n(1, "web", &Default::default());
        let d = run(&s, &tasks);
        assert_eq!(d[0].outcome, Outcome::Assigned("c".into()));
        let tasks = pending_n(3, "web", &Default::default());
        let c = counts(&run(&s, &tasks));
        // c gets 2 (fewest total), b gets 1, a none: final web counts 2/1/2.
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("b"), Some(&1));
        assert_eq!(c.get("c"), Some(&2));
    }

    #[test]
    fn node_must_be_ready_and_active() {
        let mut down = node("a");
        down.status.state = NodeState::Down;
        let mut drained = node("b");
        drained.spec.availability = Some(engine::NodeSpecAvailabilityEnum::DRAIN);
        let mut paused = node("c");
        paused.spec.availability = Some(engine::NodeSpecAvailabilityEnum::PAUSE);
        let s = state(vec![down, drained, paused, node("d")], vec![]);
        let tasks = pending_n(3, "web", &Default::default());
        let c = counts(&run(&s, &tasks));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get("d"), Some(&3));

        let s = state(vec![node("a")], vec![]);
        let mut s2 = s.clone();
        if let Some(n) = s2.nodes.get_mut("a") {
            n.status.state = NodeState::Unknown;
        }
        let d = run(&s2, &pending_n(1, "web", &Default::default()));
        assert_eq!(
            d[0].outcome,
            Outcome::NoSuitableNode("no suitable node (1 node not available for new tasks)".into())
        );
    }

    #[test]
    fn no_nodes_at_all() {
        let s = state(vec![], vec![]);
        let d = run(&s, &pending_n(2, "web", &Default::default()));
        assert_eq!(
            d[0].outcome,
            Outcome::NoSuitableNode("no suitable node".into())
        );
    }

    #[test]
    fn resource_reservations_fit_and_are_accounted_within_a_call() {
        let spec = engine::TaskSpec {
            resources: Some(engine::TaskSpecResources {
                reservations: Some(engine::ResourceObject {
                    nano_cpus: Some(1_500_000_000),
                    memory_bytes: Some(1 << 30),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Each node has 4 CPUs: 2 tasks of 1.5 CPU fit per node, 6 in all on 3 nodes.
        let s = state(vec![node("a"), node("b"), node("c")], vec![]);
        let d = run(&s, &pending_n(8, "web", &spec));
        let c = counts(&d);
        assert_eq!(c.values().sum::<usize>(), 6);
        assert!(c.values().all(|&n| n == 2));
        let failed: Vec<&Decision> = d
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::NoSuitableNode(_)))
            .collect();
        assert_eq!(failed.len(), 2);
        assert_eq!(
            failed[0].outcome,
            Outcome::NoSuitableNode("no suitable node (insufficient resources on 3 nodes)".into())
        );

        // Reservations of running tasks count; limits do not.
        let mut busy = running_on("x", "other", "a");
        busy.spec = spec.clone().into();
        std::sync::Arc::make_mut(&mut busy.spec)
            .resources
            .as_mut()
            .unwrap()
            .reservations
            .as_mut()
            .unwrap()
            .nano_cpus = Some(3_000_000_000);
        let s = state(vec![node("a")], vec![busy]);
        let d = run(&s, &pending_n(1, "web", &spec));
        assert_eq!(
            d[0].outcome,
            Outcome::NoSuitableNode("no suitable node (insufficient resources on 1 node)".into())
        );
        // A task that is shutting down no longer holds its reservation.
        let mut s2 = s.clone();
        if let Some(t) = s2.tasks.get_mut("x") {
            t.desired_state = TaskState::Shutdown;
        }
        let d = run(&s2, &pending_n(1, "web", &spec));
        assert_eq!(d[0].outcome, Outcome::Assigned("a".into()));
    }

    #[test]
    fn constraints_filter_and_message() {
        let s = state(
            vec![
                labeled("a", &[("zone", "east")]),
                labeled("b", &[("zone", "west")]),
                labeled("c", &[("zone", "west")]),
            ],
            vec![],
        );
        let spec = placement(|p| p.constraints = Some(vec!["node.labels.zone==east".into()]));
        let c = counts(&run(&s, &pending_n(4, "web", &spec)));
        assert_eq!(c.get("a"), Some(&4));
        assert_eq!(c.len(), 1);

        let spec = placement(|p| p.constraints = Some(vec!["node.labels.zone==north".into()]));
        let d = run(&s, &pending_n(1, "web", &spec));
        assert_eq!(
            d[0].outcome,
            Outcome::NoSuitableNode(
                "no suitable node (scheduling constraints not satisfied on 3 nodes)".into()
            )
        );
    }

    #[test]
    fn message_lists_most_failures_first() {
        let mut down = labeled("a", &[("zone", "east")]);
        down.status.state = NodeState::Down;
        let s = state(
            vec![
                down,
                labeled("b", &[("zone", "west")]),
                labeled("c", &[("zone", "west")]),
            ],
            vec![],
        );
        let spec = placement(|p| p.constraints = Some(vec!["node.labels.zone==east".into()]));
        let d = run(&s, &pending_n(1, "web", &spec));
        assert_eq!(
            d[0].outcome,
            Outcome::NoSuitableNode(
                "no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not available for new tasks)"
                    .into()
            )
        );
    }

    #[test]
    fn platform_filter_normalizes_arch() {
        let mut arm = node("arm");
        arm.description.platform = Some(engine::Platform {
            architecture: Some("aarch64".into()),
            os: Some("linux".into()),
        });
        let s = state(vec![node("x86"), arm], vec![]);
        let spec = placement(|p| {
            p.platforms = Some(vec![engine::Platform {
                architecture: Some("arm64".into()),
                os: Some("linux".into()),
            }])
        });
        let c = counts(&run(&s, &pending_n(3, "web", &spec)));
        assert_eq!(c.get("arm"), Some(&3));
        let spec = placement(|p| {
            p.platforms = Some(vec![engine::Platform {
                architecture: Some("s390x".into()),
                os: None,
            }])
        });
        let d = run(&s, &pending_n(1, "web", &spec));
        assert_eq!(
            d[0].outcome,
            Outcome::NoSuitableNode("no suitable node (unsupported platform on 2 nodes)".into())
        );
        // Empty arch/os in the image platform matches anything.
        let spec = placement(|p| p.platforms = Some(vec![engine::Platform::default()]));
        assert_eq!(counts(&run(&s, &pending_n(2, "web", &spec))).len(), 2);
    }

    #[test]
    fn max_replicas_per_node() {
        let s = state(
            vec![node("a"), node("b")],
            vec![running_on("w1", "web", "a")],
        );
        let spec = placement(|p| p.max_replicas = Some(2));
        let d = run(&s, &pending_n(5, "web", &spec));
        let c = counts(&d);
        assert_eq!(c.get("a"), Some(&1));
        assert_eq!(c.get("b"), Some(&2));
        let refused: Vec<&Decision> = d
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::NoSuitableNode(_)))
            .collect();
        assert_eq!(refused.len(), 2);
        assert_eq!(
            refused[0].outcome,
            Outcome::NoSuitableNode("no suitable node (max replicas per node limit exceed)".into())
        );
    }

    #[test]
    fn spread_over_zone_labels_levels_zones_first() {
        // Zone east has 1 node, west has 3: spreading over zones puts half on the one node.
        let s = state(
            vec![
                labeled("e1", &[("zone", "east")]),
                labeled("w1", &[("zone", "west")]),
                labeled("w2", &[("zone", "west")]),
                labeled("w3", &[("zone", "west")]),
            ],
            vec![],
        );
        let spec = placement(|p| {
            p.preferences = Some(vec![engine::TaskSpecPlacementPreferences {
                spread: Some(engine::TaskSpecPlacementSpread {
                    spread_descriptor: Some("node.labels.zone".into()),
                }),
            }])
        });
        let c = counts(&run(&s, &pending_n(6, "web", &spec)));
        assert_eq!(c.get("e1"), Some(&3));
        assert_eq!(c.get("w1"), Some(&1));
        assert_eq!(c.get("w2"), Some(&1));
        assert_eq!(c.get("w3"), Some(&1));
    }

    #[test]
    fn spread_counts_existing_tasks_and_missing_label_is_its_own_branch() {
        let s = state(
            vec![
                labeled("e1", &[("zone", "east")]),
                labeled("w1", &[("zone", "west")]),
                node("nolabel"),
            ],
            vec![running_on("x1", "web", "e1"), running_on("x2", "web", "e1")],
        );
        let spec = placement(|p| {
            p.preferences = Some(vec![engine::TaskSpecPlacementPreferences {
                spread: Some(engine::TaskSpecPlacementSpread {
                    spread_descriptor: Some("node.labels.zone".into()),
                }),
            }])
        });
        // east has 2: the next 4 go 2 to west and 2 to the unlabeled branch.
        let c = counts(&run(&s, &pending_n(4, "web", &spec)));
        assert_eq!(c.get("e1"), None);
        assert_eq!(c.get("w1"), Some(&2));
        assert_eq!(c.get("nolabel"), Some(&2));
    }

    #[test]
    fn nested_spread_preferences() {
        let s = state(
            vec![
                labeled("a", &[("dc", "1"), ("rack", "x")]),
                labeled("b", &[("dc", "1"), ("rack", "y")]),
                labeled("c", &[("dc", "2"), ("rack", "x")]),
            ],
            vec![],
        );
        let pref = |d: &str| engine::TaskSpecPlacementPreferences {
            spread: Some(engine::TaskSpecPlacementSpread {
                spread_descriptor: Some(d.into()),
            }),
        };
        let spec = placement(|p| {
            p.preferences = Some(vec![pref("node.labels.dc"), pref("node.labels.rack")])
        });
        let c = counts(&run(&s, &pending_n(8, "web", &spec)));
        // dc 1 and dc 2 get 4 each; within dc 1 racks x and y get 2 each.
        assert_eq!(c.get("c"), Some(&4));
        assert_eq!(c.get("a"), Some(&2));
        assert_eq!(c.get("b"), Some(&2));
    }

    #[test]
    fn full_branch_overflows_into_others() {
        let s = state(
            vec![
                labeled("e1", &[("zone", "east")]),
                labeled("w1", &[("zone", "west")]),
            ],
            vec![],
        );
        let spec = placement(|p| {
            p.max_replicas = Some(1);
            p.preferences = Some(vec![engine::TaskSpecPlacementPreferences {
                spread: Some(engine::TaskSpecPlacementSpread {
                    spread_descriptor: Some("node.labels.zone".into()),
                }),
            }]);
        });
        let d = run(&s, &pending_n(3, "web", &spec));
        let c = counts(&d);
        assert_eq!(c.values().sum::<usize>(), 2);
        assert!(matches!(d[2].outcome, Outcome::NoSuitableNode(_)));
    }

    #[test]
    fn nodes_with_recent_failures_go_last() {
        let mut fails = Vec::new();
        for i in 0..5 {
            let mut t = task(&format!("f{i}"), "web");
            t.node_id = Some("a".into());
            t.desired_state = TaskState::Shutdown;
            t.status.state = TaskState::Failed;
            fails.push(t);
        }
        // b already has 3 web tasks, a none: still b is preferred over the failing a.
        let mut tasks = fails.clone();
        for i in 0..3 {
            tasks.push(running_on(&format!("r{i}"), "web", "b"));
        }
        let s = state(vec![node("a"), node("b")], tasks);
        let d = run(&s, &pending_n(1, "web", &Default::default()));
        assert_eq!(d[0].outcome, Outcome::Assigned("b".into()));
        // Old failures (outside the window) do not count.
        let later = Utc::now() + chrono::TimeDelta::minutes(6);
        let pending = pending_n(1, "web", &Default::default());
        let refs: Vec<&Task> = pending.iter().collect();
        let d = schedule_at(&s, &refs, later);
        assert_eq!(d[0].outcome, Outcome::Assigned("a".into()));
        // Four failures are not enough to push it back.
        let mut s4 = s.clone();
        s4.tasks.remove("f0");
        s4.reindex();
        let d = run(&s4, &pending_n(1, "web", &Default::default()));
        assert_eq!(d[0].outcome, Outcome::Assigned("a".into()));
    }

    #[test]
    fn groups_of_one_service_account_for_each_other() {
        let s = state(vec![node("a"), node("b")], vec![]);
        let mut tasks = pending_n(2, "web", &Default::default());
        let mut v2 = pending_n(2, "web", &Default::default());
        for (i, t) in v2.iter_mut().enumerate() {
            t.id = format!("v2-{i}");
            t.spec_version = 2;
        }
        tasks.extend(v2);
        let c = counts(&run(&s, &tasks));
        assert_eq!(c.get("a"), Some(&2));
        assert_eq!(c.get("b"), Some(&2));
    }

    #[test]
    fn preassigned_tasks_check_only_their_node() {
        let mut drained = node("b");
        drained.spec.availability = Some(engine::NodeSpecAvailabilityEnum::DRAIN);
        let s = state(vec![node("a"), drained], vec![]);
        let mut t1 = task("g1", "glob");
        t1.node_id = Some("a".into());
        let mut t2 = task("g2", "glob");
        t2.node_id = Some("b".into());
        let mut t3 = task("g3", "glob");
        t3.node_id = Some("gone".into());
        let d = run(&s, &[t1, t2, t3]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].outcome, Outcome::Assigned("a".into()));
        assert_eq!(
            d[1].outcome,
            Outcome::NoSuitableNode("1 node not available for new tasks".into())
        );
    }

    #[test]
    fn shut_down_tasks_are_skipped() {
        let s = state(vec![node("a")], vec![]);
        let mut t = task("t", "web");
        t.desired_state = TaskState::Shutdown;
        assert!(run(&s, &[t]).is_empty());
    }

    #[test]
    fn plan_turns_decisions_into_intents_and_skips_unchanged_errors() {
        let mut pre = task("pre", "glob");
        pre.node_id = Some("a".into());
        let mut stuck = task("stuck", "web");
        stuck.spec = placement(|p| p.constraints = Some(vec!["node.role==manager".into()])).into();
        let s = state(vec![node("a")], vec![pre, stuck.clone()]);
        let p = plan(&s, Utc::now());
        assert!(p.intents.contains(&Intent::Assign {
            task_id: "pre".into(),
            node_id: "a".into(),
            message: PREASSIGNED_MESSAGE.into(),
        }));
        let err = "no suitable node (scheduling constraints not satisfied on 1 node)";
        assert!(p.intents.contains(&Intent::SetError {
            task_id: "stuck".into(),
            err: err.into(),
        }));
        // Same error already recorded: nothing to write.
        stuck.status.err = Some(err.into());
        let s = state(vec![node("a")], vec![stuck]);
        assert!(plan(&s, Utc::now()).is_empty());
    }

    #[test]
    fn hundred_tasks_level_across_nodes() {
        let s = state(vec![node("a"), node("b"), node("c")], vec![]);
        let c = counts(&run(&s, &pending_n(100, "web", &Default::default())));
        let mut v: Vec<usize> = c.into_values().collect();
        v.sort();
        assert_eq!(v, vec![33, 33, 34]);
    }

    #[test]
    fn created_tasks_go_as_far_as_the_later_steps_would_take_them() {
        use crate::allocator::{PENDING_MESSAGE, START_AFTER_LABEL};
        use crate::orchestrator::testutil as u;
        let web = u::replicated("web", 3);
        let mut only_managers = u::replicated("mgr", 1);
        if let Some(t) = only_managers.spec.task_template.as_mut() {
            t.placement = Some(engine::TaskSpecPlacement {
                constraints: Some(vec!["node.role==manager".into()]),
                ..Default::default()
            });
        }
        let now = Utc::now();
        let mut held = u::task(&web, 3, None, TaskState::New);
        held.labels.insert(
            START_AFTER_LABEL.into(),
            (now + chrono::TimeDelta::seconds(5)).to_rfc3339(),
        );
        let st = u::state(
            vec![u::node("a"), u::node("b")],
            vec![web.clone(), only_managers.clone()],
            vec![],
        );
        let mut plan = Plan::default();
        for t in [
            u::task(&web, 1, None, TaskState::New),
            u::task(&web, 2, None, TaskState::New),
            held.clone(),
            u::task(&only_managers, 1, None, TaskState::New),
        ] {
            plan.push(Intent::CreateTask(Box::new(t)));
        }
        assert_eq!(place_created(&st, &mut plan, now), 2);
        let t = u::created(&plan);
        // Placed: assigned, spread over both nodes.
        assert_eq!(t[0].status.state, TaskState::Assigned);
        assert_eq!(t[1].status.state, TaskState::Assigned);
        assert_eq!(t[0].status.message, ASSIGNED_MESSAGE);
        assert_ne!(t[0].node_id, t[1].node_id);
        assert!(t[0].node_id.is_some() && t[1].node_id.is_some());
        // Held by its restart delay: still new, unplaced.
        assert_eq!(t[2].status.state, TaskState::New);
        assert_eq!(t[2].node_id, None);
        // No node fits: pending with the reason, as the scheduler step would leave it.
        assert_eq!(t[3].status.state, TaskState::Pending);
        assert_eq!(t[3].status.message, PENDING_MESSAGE);
        assert_eq!(
            t[3].status.err.as_deref(),
            Some("no suitable node (scheduling constraints not satisfied on 2 nodes)")
        );
        assert_eq!(t[3].node_id, None);
    }

    #[test]
    fn created_tasks_do_not_count_tasks_the_same_plan_stops() {
        use crate::orchestrator::testutil as u;
        let web = u::replicated("web", 4);
        let running = |slot, node| u::task(&web, slot, Some(node), TaskState::Running);
        let on_a = [running(1, "a"), running(2, "a"), running(3, "a")];
        let on_b = [running(4, "b"), running(5, "b")];
        let st = u::state(
            vec![u::node("a"), u::node("b")],
            vec![web.clone()],
            on_a.iter().chain(on_b.iter()).cloned().collect(),
        );
        let new_task = || Intent::CreateTask(Box::new(u::task(&web, 6, None, TaskState::New)));
        // Alone, the new task goes to b (2 tasks of the service against 3)...
        let mut plan = Plan::default();
        plan.push(new_task());
        place_created(&st, &mut plan, Utc::now());
        assert_eq!(u::created(&plan)[0].node_id.as_deref(), Some("b"));
        // ...but the plan stops two of a's: a has 1 left, b 2.
        let mut plan = Plan::default();
        for t in &on_a[1..] {
            plan.push(Intent::SetDesired {
                task_id: t.id.clone(),
                state: TaskState::Shutdown,
            });
        }
        plan.push(new_task());
        place_created(&st, &mut plan, Utc::now());
        assert_eq!(u::created(&plan)[0].node_id.as_deref(), Some("a"));
    }
}
