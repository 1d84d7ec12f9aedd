//! Typed views of the parts of user specs that orchestration reads, with Docker's defaults.
//!
//! Specs are stored as the client sent them ([`crate::engine::ServiceSpec`]); these functions
//! read them with the defaults swarmkit applies (restart on any condition after 5 s, update
//! parallelism 1 with a 5 s monitor, stop grace period 10 s, ...).

use crate::engine;
use std::collections::HashMap;
use std::time::Duration;

/// Label naming the runtime a service's tasks use (`process`, later `container`).
pub const RUNTIME_LABEL: &str = "shoal.runtime";
/// Default task history retention (`swarm init --task-history-limit`).
pub const DEFAULT_TASK_HISTORY_LIMIT: i64 = 5;
/// Default dispatcher heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Default stop grace period before SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Converts a Docker duration (int64 nanoseconds) to a [`Duration`]; negative counts as zero.
pub fn ns(v: i64) -> Duration {
    Duration::from_nanos(u64::try_from(v).unwrap_or(0))
}

/// How a service's tasks are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    GlobalJob,
}

impl ServiceMode {
    pub fn is_job(self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }
    pub fn is_global(self) -> bool {
        matches!(self, ServiceMode::Global | ServiceMode::GlobalJob)
    }
    /// The name `service ls` shows in MODE.
    pub fn name(self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated job",
            ServiceMode::GlobalJob => "global job",
        }
    }
}

/// The service's mode (replicated with 1 replica when unset). Negative counts read as 0;
/// validation refuses them before they are stored.
pub fn service_mode(spec: &engine::ServiceSpec) -> ServiceMode {
    let Some(mode) = &spec.mode else {
        return ServiceMode::Replicated { replicas: 1 };
    };
    if mode.global.is_some() {
        return ServiceMode::Global;
    }
    if mode.global_job.is_some() {
        return ServiceMode::GlobalJob;
    }
    if let Some(job) = &mode.replicated_job {
        let total = job.total_completions.unwrap_or(1).max(0) as u64;
        let max = job.max_concurrent.unwrap_or(1).max(0) as u64;
        return ServiceMode::ReplicatedJob {
            max_concurrent: max,
            total_completions: total,
        };
    }
    let replicas = mode
        .replicated
        .as_ref()
        .and_then(|r| r.replicas)
        .unwrap_or(1)
        .max(0) as u64;
    ServiceMode::Replicated { replicas }
}

/// When a finished task is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

/// A task template's restart policy with defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay: Duration,
    /// 0 means unlimited.
    pub max_attempts: u64,
    /// Zero means attempts are counted over the task's whole history.
    pub window: Duration,
}

/// Restart policy with swarmkit's defaults (any, 5 s, unlimited, no window).
pub fn restart_policy(task: &engine::TaskSpec) -> RestartPolicy {
    use engine::TaskSpecRestartPolicyConditionEnum as C;
    let p = task.restart_policy.as_ref();
    let condition = match p.and_then(|p| p.condition) {
        Some(C::NONE) => RestartCondition::None,
        Some(C::ON_FAILURE) => RestartCondition::OnFailure,
        _ => RestartCondition::Any,
    };
    RestartPolicy {
        condition,
        delay: p
            .and_then(|p| p.delay)
            .map(ns)
            .unwrap_or(Duration::from_secs(5)),
        max_attempts: p.and_then(|p| p.max_attempts).unwrap_or(0).max(0) as u64,
        window: p.and_then(|p| p.window).map(ns).unwrap_or(Duration::ZERO),
    }
}

/// What the updater does when an updated task fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

/// Whether the old task stops before the new one starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// Update (or rollback) configuration with defaults applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateConfig {
    /// Tasks updated at once; 0 means all at once.
    pub parallelism: u64,
    pub delay: Duration,
    pub failure_action: FailureAction,
    pub monitor: Duration,
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// The service's update configuration (defaults: parallelism 1, pause, monitor 5 s, stop-first).
pub fn update_config(spec: &engine::ServiceSpec) -> UpdateConfig {
    use engine::ServiceSpecUpdateConfigFailureActionEnum as F;
    use engine::ServiceSpecUpdateConfigOrderEnum as O;
    let d = UpdateConfig::default();
    let Some(u) = &spec.update_config else {
        return d;
    };
    UpdateConfig {
        parallelism: u.parallelism.map(|p| p.max(0) as u64).unwrap_or(1),
        delay: u.delay.map(ns).unwrap_or(d.delay),
        failure_action: match u.failure_action {
            Some(F::CONTINUE) => FailureAction::Continue,
            Some(F::ROLLBACK) => FailureAction::Rollback,
            _ => FailureAction::Pause,
        },
        monitor: u.monitor.filter(|m| *m > 0).map(ns).unwrap_or(d.monitor),
        max_failure_ratio: u.max_failure_ratio.unwrap_or(0.0),
        order: match u.order {
            Some(O::START_FIRST) => UpdateOrder::StartFirst,
            _ => UpdateOrder::StopFirst,
        },
    }
}

/// CPU and memory amounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

/// What a task reserves on its node (limits are not counted by the scheduler).
pub fn reservations(task: &engine::TaskSpec) -> Resources {
    let r = task
        .resources
        .as_ref()
        .and_then(|r| r.reservations.as_ref());
    Resources {
        nano_cpus: r.and_then(|r| r.nano_cpus).unwrap_or(0),
        memory_bytes: r.and_then(|r| r.memory_bytes).unwrap_or(0),
    }
}

/// Placement constraints (`node.role==manager`, ...).
pub fn constraints(task: &engine::TaskSpec) -> &[String] {
    task.placement
        .as_ref()
        .and_then(|p| p.constraints.as_deref())
        .unwrap_or(&[])
}

/// Spread descriptors of the placement preferences (`node.labels.zone`), in order.
pub fn spread_preferences(task: &engine::TaskSpec) -> Vec<String> {
    task.placement
        .as_ref()
        .and_then(|p| p.preferences.as_ref())
        .map(|prefs| {
            prefs
                .iter()
                .filter_map(|p| p.spread.as_ref().and_then(|s| s.spread_descriptor.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Max replicas of the service per node; 0 means unlimited.
pub fn max_replicas_per_node(task: &engine::TaskSpec) -> u64 {
    task.placement
        .as_ref()
        .and_then(|p| p.max_replicas)
        .unwrap_or(0)
        .max(0) as u64
}

/// Platforms the task's image supports (empty: any).
pub fn platforms(task: &engine::TaskSpec) -> &[engine::Platform] {
    task.placement
        .as_ref()
        .and_then(|p| p.platforms.as_deref())
        .unwrap_or(&[])
}

/// Whether a published port goes through the routing mesh (`ingress`, Docker's default) rather
/// than only the node running the task (`host`).
pub fn port_is_ingress(p: &engine::EndpointPortConfig) -> bool {
    !matches!(
        p.publish_mode,
        Some(engine::EndpointPortConfigPublishModeEnum::HOST)
    )
}

/// A port's protocol as Docker names it (`tcp` when unset).
pub fn port_protocol(p: &engine::EndpointPortConfig) -> &'static str {
    use engine::EndpointPortConfigProtocolEnum as P;
    match p.protocol {
        Some(P::UDP) => "udp",
        Some(P::SCTP) => "sctp",
        _ => "tcp",
    }
}

/// The runtime named by the service (label `shoal.runtime` on the service or the container spec).
pub fn runtime_name(spec: &engine::ServiceSpec) -> Option<String> {
    let from = |l: Option<&HashMap<String, String>>| l.and_then(|l| l.get(RUNTIME_LABEL)).cloned();
    from(spec.labels.as_ref()).or_else(|| {
        from(
            spec.task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.labels.as_ref()),
        )
    })
}

/// Stop grace period of a container spec (10 s when unset).
pub fn stop_grace_period(task: &engine::TaskSpec) -> Duration {
    task.container_spec
        .as_ref()
        .and_then(|c| c.stop_grace_period)
        .map(ns)
        .unwrap_or(DEFAULT_STOP_GRACE)
}

/// The command a task runs: `ContainerSpec.Command` followed by `Args`.
pub fn command_line(task: &engine::TaskSpec) -> Vec<String> {
    let Some(c) = &task.container_spec else {
        return Vec::new();
    };
    let mut v = c.command.clone().unwrap_or_default();
    v.extend(c.args.clone().unwrap_or_default());
    v
}

/// Fills the defaults swarmkit applies to a task template (what `insertDefaults=true` shows):
/// stop grace period 10 s, DNS config, resources, restart policy any / 5 s / unlimited, placement.
pub fn insert_task_defaults(t: &mut engine::TaskSpec) {
    const FIVE_S: i64 = 5_000_000_000;
    if let Some(c) = t.container_spec.as_mut() {
        c.stop_grace_period.get_or_insert(10_000_000_000);
        c.dns_config.get_or_insert_with(Default::default);
    }
    t.resources.get_or_insert_with(Default::default);
    match t.restart_policy.as_mut() {
        None => {
            t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                condition: Some(engine::TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(FIVE_S),
                max_attempts: Some(0),
                window: None,
            })
        }
        Some(p) => {
            p.delay.get_or_insert(FIVE_S);
        }
    }
    t.placement.get_or_insert_with(Default::default);
}

/// A task template in canonical form: defaults filled and empty values made absent, so two
/// templates that mean the same thing compare equal whichever client wrote them.
pub fn normalized_task_spec(t: &engine::TaskSpec) -> engine::TaskSpec {
    let mut t = t.clone();
    insert_task_defaults(&mut t);
    if t.force_update == Some(0) {
        t.force_update = None;
    }
    if let Some(p) = t.restart_policy.as_mut() {
        if p.condition.is_none()
            || p.condition == Some(engine::TaskSpecRestartPolicyConditionEnum::EMPTY)
        {
            p.condition = Some(engine::TaskSpecRestartPolicyConditionEnum::ANY);
        }
        p.max_attempts.get_or_insert(0);
        if p.window == Some(0) {
            p.window = None;
        }
    }
    if let Some(r) = t.resources.as_mut() {
        if r.limits == Some(Default::default()) {
            r.limits = None;
        }
        if r.reservations == Some(Default::default()) {
            r.reservations = None;
        }
    }
    if let Some(c) = t.container_spec.as_mut() {
        if c.init == Some(false) {
            c.init = None;
        }
        // docker 28's stack deploy sends `Privileges: {NoNewPrivileges: false}` where other
        // clients send nothing: the same spec (swarmkit compares the defaults alike).
        if let Some(p) = c.privileges.as_mut() {
            if p.no_new_privileges == Some(false) {
                p.no_new_privileges = None;
            }
        }
        if c.privileges == Some(Default::default()) {
            c.privileges = None;
        }
        for v in [&mut c.env, &mut c.args, &mut c.command] {
            if v.as_ref().is_some_and(|v| v.is_empty()) {
                *v = None;
            }
        }
    }
    if let Some(p) = t.placement.as_mut() {
        if p.constraints.as_ref().is_some_and(|c| c.is_empty()) {
            p.constraints = None;
        }
    }
    t
}

/// Whether two task templates mean the same thing (defaults and empty values aside); a task
/// whose template is the same as the service's needs no replacement.
pub fn same_task_spec(a: Option<&engine::TaskSpec>, b: Option<&engine::TaskSpec>) -> bool {
    if a == b {
        return true;
    }
    let norm = |t: Option<&engine::TaskSpec>| normalized_task_spec(&t.cloned().unwrap_or_default());
    norm(a) == norm(b)
}

/// Task history retention limit of a cluster spec (5 when unset).
pub fn task_history_limit(spec: &engine::SwarmSpec) -> i64 {
    spec.orchestration
        .as_ref()
        .and_then(|o| o.task_history_retention_limit)
        .unwrap_or(DEFAULT_TASK_HISTORY_LIMIT)
}

/// Heartbeat period of a cluster spec (5 s when unset).
pub fn heartbeat_period(spec: &engine::SwarmSpec) -> Duration {
    spec.dispatcher
        .as_ref()
        .and_then(|d| d.heartbeat_period)
        .filter(|p| *p > 0)
        .map(ns)
        .unwrap_or(DEFAULT_HEARTBEAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(mode: Option<engine::ServiceSpecMode>) -> engine::ServiceSpec {
        engine::ServiceSpec {
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn default_privileges_are_no_privileges() {
        let t = |privileges: Option<engine::TaskSpecContainerSpecPrivileges>| engine::TaskSpec {
            container_spec: Some(engine::TaskSpecContainerSpec {
                image: Some("busybox".into()),
                privileges,
                ..Default::default()
            }),
            ..Default::default()
        };
        let docker = engine::TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(false),
            ..Default::default()
        };
        let set = engine::TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        };
        assert!(same_task_spec(Some(&t(None)), Some(&t(Some(docker)))));
        assert!(same_task_spec(
            Some(&t(None)),
            Some(&t(Some(Default::default())))
        ));
        assert!(!same_task_spec(Some(&t(None)), Some(&t(Some(set)))));
    }

    #[test]
    fn unset_force_update_is_zero() {
        let t = |force: Option<u64>, image: &str| engine::TaskSpec {
            force_update: force,
            container_spec: Some(engine::TaskSpecContainerSpec {
                image: Some(image.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(same_task_spec(Some(&t(None, "a")), Some(&t(Some(0), "a"))));
        assert!(same_task_spec(Some(&t(Some(0), "a")), Some(&t(None, "a"))));
        assert!(!same_task_spec(Some(&t(None, "a")), Some(&t(Some(1), "a"))));
        assert!(!same_task_spec(Some(&t(None, "a")), Some(&t(None, "b"))));
        let empty = engine::TaskSpec {
            force_update: Some(0),
            ..Default::default()
        };
        assert!(same_task_spec(None, Some(&empty)));
        assert!(!same_task_spec(None, Some(&t(None, "a"))));
    }

    #[test]
    fn mode_defaults_to_one_replica() {
        assert_eq!(
            service_mode(&svc(None)),
            ServiceMode::Replicated { replicas: 1 }
        );
        let global = engine::ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        };
        assert_eq!(service_mode(&svc(Some(global))), ServiceMode::Global);
        let three = engine::ServiceSpecMode {
            replicated: Some(engine::ServiceSpecModeReplicated { replicas: Some(3) }),
            ..Default::default()
        };
        assert_eq!(
            service_mode(&svc(Some(three))),
            ServiceMode::Replicated { replicas: 3 }
        );
    }

    #[test]
    fn restart_and_update_defaults_match_swarmkit() {
        let p = restart_policy(&engine::TaskSpec::default());
        assert_eq!(p.condition, RestartCondition::Any);
        assert_eq!(p.delay, Duration::from_secs(5));
        assert_eq!(p.max_attempts, 0);
        let u = update_config(&engine::ServiceSpec::default());
        assert_eq!(u.parallelism, 1);
        assert_eq!(u.monitor, Duration::from_secs(5));
        assert_eq!(u.failure_action, FailureAction::Pause);
        assert_eq!(u.order, UpdateOrder::StopFirst);
    }

    #[test]
    fn command_line_joins_command_and_args() {
        let t = engine::TaskSpec {
            container_spec: Some(engine::TaskSpecContainerSpec {
                command: Some(vec!["sh".into(), "-c".into()]),
                args: Some(vec!["echo hi".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(command_line(&t), vec!["sh", "-c", "echo hi"]);
    }
}
