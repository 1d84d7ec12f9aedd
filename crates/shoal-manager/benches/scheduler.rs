//! Scheduling throughput: places 100,000 pending tasks on 1,000 nodes through
//! `shoal_manager::scheduler::schedule` and prints tasks per second.
//!
//! ```text
//!  one-service        100,000 tasks of one service, no constraints
//!  ten-services       10 services x 10,000 tasks, each with `node.labels.zone!=z0`
//!  spread             100,000 tasks of one service, spread over 10 zone labels
//! ```
//!
//! Run with `cargo bench -p shoal-manager` (release profile). Each scenario runs a few times;
//! the best and the median run are printed.

use shoal_api::{engine, Meta, Node, NodeRole, NodeState, NodeStatus, Task, TaskState, TaskStatus};
use shoal_manager::scheduler::{schedule, Outcome};
use shoal_store::StoreState;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const NODES: usize = 1_000;
const TASKS: usize = 100_000;
const RUNS: usize = 5;

fn node(i: usize) -> Node {
    Node {
        id: format!("node{i:05}"),
        meta: Meta::new_now(),
        spec: engine::NodeSpec {
            labels: Some(HashMap::from([(
                "zone".to_string(),
                format!("z{}", i % 10),
            )])),
            ..Default::default()
        },
        description: engine::NodeDescription {
            hostname: Some(format!("host{i}")),
            platform: Some(engine::Platform {
                architecture: Some("x86_64".into()),
                os: Some("linux".into()),
            }),
            resources: Some(engine::ResourceObject {
                nano_cpus: Some(64_000_000_000),
                memory_bytes: Some(256 << 30),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
            addr: format!("10.0.{}.{}", i / 250, i % 250 + 1),
        },
        role: NodeRole::Worker,
        manager_status: None,
        addr_port: String::new(),
        network_addresses: Default::default(),
    }
}

fn task(i: usize, service: &str, spec: &engine::TaskSpec) -> Task {
    Task {
        id: format!("task{i:07}"),
        meta: Meta::new_now(),
        service_id: service.to_string(),
        service_name: service.to_string(),
        slot: i as u64 + 1,
        node_id: None,
        spec: spec.clone().into(),
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Pending, "pending task scheduling"),
        labels: HashMap::new(),
        job_iteration: None,
        service_labels: None,
        networks: Vec::new(),
    }
}

fn state_with(tasks: Vec<Task>) -> StoreState {
    let mut s = StoreState::default();
    for i in 0..NODES {
        let n = node(i);
        s.nodes.insert(n.id.clone(), n);
    }
    for t in tasks {
        s.tasks.insert(t.id.clone(), t);
    }
    s.reindex();
    s
}

fn run(name: &str, state: &StoreState) {
    let pending: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Pending)
        .collect();
    let mut times: Vec<Duration> = Vec::new();
    let mut assigned = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let decisions = schedule(state, &pending);
        times.push(start.elapsed());
        assigned = decisions
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::Assigned(_)))
            .count();
        std::hint::black_box(&decisions);
    }
    assert_eq!(
        assigned,
        pending.len(),
        "{name}: every task should be placed"
    );
    times.sort();
    let rate = |d: Duration| pending.len() as f64 / d.as_secs_f64();
    println!(
        "scheduler/{name:<14} {} tasks on {NODES} nodes: best {:>8.1} ms ({:>10.0} tasks/s), median {:>8.1} ms ({:>10.0} tasks/s)",
        pending.len(),
        times[0].as_secs_f64() * 1e3,
        rate(times[0]),
        times[RUNS / 2].as_secs_f64() * 1e3,
        rate(times[RUNS / 2]),
    );
}

fn main() {
    // One service, no constraints.
    let spec = engine::TaskSpec::default();
    let tasks: Vec<Task> = (0..TASKS).map(|i| task(i, "svc-0", &spec)).collect();
    run("one-service", &state_with(tasks));

    // Ten services with a constraint each.
    let spec = engine::TaskSpec {
        placement: Some(engine::TaskSpecPlacement {
            constraints: Some(vec!["node.labels.zone!=z0".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| task(i, &format!("svc-{}", i % 10), &spec))
        .collect();
    run("ten-services", &state_with(tasks));

    // One service spread over zones.
    let spec = engine::TaskSpec {
        placement: Some(engine::TaskSpecPlacement {
            preferences: Some(vec![engine::TaskSpecPlacementPreferences {
                spread: Some(engine::TaskSpecPlacementSpread {
                    spread_descriptor: Some("node.labels.zone".into()),
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tasks: Vec<Task> = (0..TASKS).map(|i| task(i, "svc-0", &spec)).collect();
    run("spread", &state_with(tasks));

    converged_pass();
}

/// Cost of one planning pass (orchestrator, allocator, scheduler, reaper) over a converged
/// cluster: one service of 100,000 running tasks on 1,000 nodes. Nothing to do, all scanning.
fn converged_pass() {
    let spec = engine::TaskSpec::default();
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| {
            let mut t = task(i, "svc-0", &spec);
            t.node_id = Some(format!("node{:05}", i % NODES));
            t.status.state = TaskState::Running;
            t
        })
        .collect();
    let mut state = state_with(tasks);
    let svc = shoal_api::Service {
        id: "svc-0".into(),
        meta: Meta::new_now(),
        spec: Box::new(engine::ServiceSpec {
            name: Some("svc-0".into()),
            mode: Some(engine::ServiceSpecMode {
                replicated: Some(engine::ServiceSpecModeReplicated {
                    replicas: Some(TASKS as i64),
                }),
                ..Default::default()
            }),
            task_template: Some(spec),
            ..Default::default()
        }),
        previous_spec: None,
        spec_version: 1,
        endpoint: None,
        update_status: None,
        registry_auth: None,
        job_iteration: 0,
    };
    state.services.insert(svc.id.clone(), svc);
    let now = chrono::Utc::now();
    let mut times = Vec::new();
    let mut last_steps = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut intents = 0;
        let mut steps = Vec::new();
        let mut t = Instant::now();
        intents += shoal_manager::orchestrator::plan(&state, now).intents.len();
        steps.push(("orchestrator", t.elapsed()));
        t = Instant::now();
        intents += shoal_manager::allocator::plan(&state, now).intents.len();
        steps.push(("allocator", t.elapsed()));
        t = Instant::now();
        intents += shoal_manager::scheduler::plan(&state, now).intents.len();
        steps.push(("scheduler", t.elapsed()));
        t = Instant::now();
        intents += shoal_manager::reaper::plan(&state, now).intents.len();
        steps.push(("reaper", t.elapsed()));
        times.push(start.elapsed());
        last_steps = steps;
        assert_eq!(intents, 0, "a converged cluster plans nothing");
    }
    times.sort();
    let steps: Vec<String> = last_steps
        .iter()
        .map(|(n, d)| format!("{n} {:.1} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "manager/converged-pass  {TASKS} running tasks on {NODES} nodes: best {:>8.1} ms, median {:>8.1} ms ({})",
        times[0].as_secs_f64() * 1e3,
        times[RUNS / 2].as_secs_f64() * 1e3,
        steps.join(", "),
    );
}
