//! Control: the validated writes behind the Engine API (swarmkit's `controlapi`).
//!
//! ```text
//!   HTTP handler ──► resolve_*(reference)         ID, then exact name, then unique ID prefix
//!               └──► create/update/remove_*(…)     validate ──► store.update(tx) ──► Raft
//! ```
//!
//! Every method validates its input the way swarmkit does (same checks, same messages), then
//! writes through [`Store::update`], so a write is either applied on a majority or not at all.
//! Optimistic concurrency: updates carry the `Version.Index` the client read; a stale one fails
//! with [`ControlError::OutOfSequence`] and nothing changes.
//!
//! Specs are stored exactly as the client sent them. The service's `spec_version` is bumped when
//! something its tasks are made from changes (the task template, including `ForceUpdate`, or the
//! endpoint spec), so scaling or relabelling a service does not restart its tasks.

use chrono::Utc;
use shoal_api::spec::{port_is_ingress as is_ingress, port_protocol as protocol};
use shoal_api::{
    engine, new_id, Node, NodeRole, NodeState, Object, ObjectKind, Reachability, Service, Task,
    TaskState, TaskStatus,
};
use shoal_store::{Store, StoreError, Tx};
use std::collections::HashSet;

/// Errors of control operations; each variant is one class of HTTP status in the Engine API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The referenced object does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or the spec is invalid (400).
    #[error("{0}")]
    InvalidArgument(String),
    /// The object (or its name) already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is valid but the cluster is not in a state that allows it (400, as swarmkit's
    /// `FailedPrecondition`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not allowed: a pre-defined name or a reserved label (403, as swarmkit's
    /// `PermissionDenied` and the daemon's `Forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// The change is not supported (501, as swarmkit's `Unimplemented`).
    #[error("{0}")]
    Unimplemented(String),
    /// The object changed since the client read it (Docker answers 500 with this text).
    #[error("update out of sequence")]
    OutOfSequence,
    /// The write could not be replicated: no leader, no quorum (503).
    #[error("{0}")]
    Unavailable(String),
    /// Something inside Shoal went wrong (500).
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ControlError::NotFound(e.to_string()),
            StoreError::Exists { .. } => ControlError::Conflict(e.to_string()),
            StoreError::OutOfSequence => ControlError::OutOfSequence,
            StoreError::Unavailable(m) => ControlError::Unavailable(m),
            StoreError::Codec(_) => ControlError::Internal(e.to_string()),
            StoreError::Conflict(m) => ControlError::Conflict(m),
            StoreError::Invalid(m) => ControlError::InvalidArgument(m),
        }
    }
}

type Result<T> = std::result::Result<T, ControlError>;

fn invalid(msg: impl Into<String>) -> ControlError {
    ControlError::InvalidArgument(msg.into())
}

/// Validated, versioned writes of services, nodes and the cluster, and name resolution.
pub struct Control {
    store: Store,
}

/// The smallest node certificate lifetime swarmkit accepts (1 hour).
const MIN_NODE_CERT_EXPIRY_NS: i64 = 3_600_000_000_000;
/// The shortest health-check duration swarmkit accepts (1 ms).
const MIN_HEALTH_DURATION_NS: i64 = 1_000_000;

impl Control {
    /// Control over `store`.
    pub fn new(store: Store) -> Self {
        Control { store }
    }

    /// The store this control writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    // ----------------------------------------------------------------------------- services

    /// Validates `spec` and creates a service with it; returns the new service's ID.
    ///
    /// An empty name is replaced by a generated one (`adjective_name`), as Docker does.
    pub async fn create_service(
        &self,
        mut spec: engine::ServiceSpec,
        registry_auth: Option<String>,
    ) -> Result<String> {
        if spec.name.as_deref().unwrap_or("").is_empty() {
            let taken: HashSet<String> = self.store.view(|s| {
                s.services
                    .values()
                    .map(|svc| svc.name().to_ascii_lowercase())
                    .collect()
            });
            spec.name = Some(random_name(&taken));
        }
        validate_service_spec(&spec)?;
        normalize_mode(&mut spec);
        let name = spec.name.clone().unwrap_or_default();
        let id = new_id();
        let service = Service {
            id: id.clone(),
            meta: shoal_api::Meta::new_now(),
            spec: Box::new(spec),
            previous_spec: None,
            spec_version: 1,
            endpoint: None,
            update_status: None,
            registry_auth: registry_auth.filter(|a| !a.is_empty()),
            job_iteration: 0,
        };
        self.store
            .update(|tx| {
                let state = tx.state();
                if state
                    .services
                    .values()
                    .any(|s| s.name().eq_ignore_ascii_case(&name))
                {
                    return Err(ControlError::Conflict(format!(
                        "name conflicts with an existing object: service {name} already exists"
                    )));
                }
                check_port_conflicts(tx, &service.spec, None)?;
                let mut service = service.clone();
                crate::objects::resolve_service_refs(state, &mut service.spec)?;
                service.endpoint = crate::allocator::endpoint_now(state, &service);
                tx.create(Object::Service(service))?;
                Ok(())
            })
            .await?;
        Ok(id)
    }

    /// Replaces the spec of the service `reference` resolves to, if `version` is the version
    /// the client read. With `rollback`, the previous spec becomes current again (the `spec`
    /// sent is validated but not used). `registry_auth` of `None` keeps the stored credentials.
    pub async fn update_service(
        &self,
        reference: &str,
        version: u64,
        mut spec: engine::ServiceSpec,
        registry_auth: Option<String>,
        rollback: bool,
    ) -> Result<()> {
        validate_service_spec(&spec)?;
        normalize_mode(&mut spec);
        let id = self.resolve_service(reference)?.id;
        self.store
            .update(|tx| {
                let Some(mut svc) = tx.get_service(&id) else {
                    return Err(ControlError::NotFound(format!("service {id} not found")));
                };
                let mut spec = spec.clone();
                crate::objects::resolve_service_refs(tx.state(), &mut spec)?;
                if spec.endpoint_spec.is_some() && spec.endpoint_spec != svc.spec.endpoint_spec {
                    check_port_conflicts(tx, &spec, Some(&id))?;
                }
                if mode_kind(&svc.spec) != mode_kind(&spec) {
                    return Err(ControlError::Unimplemented(
                        "service mode change is not allowed".into(),
                    ));
                }
                if svc.spec.name != spec.name {
                    return Err(ControlError::Unimplemented(
                        "renaming services is not supported".into(),
                    ));
                }
                svc.meta.version = version;
                if shoal_api::spec::service_mode(&svc.spec).is_job() {
                    svc.job_iteration += 1;
                }
                if rollback {
                    let Some(previous) = svc.previous_spec.take() else {
                        return Err(ControlError::FailedPrecondition(format!(
                            "service {id} does not have a previous spec"
                        )));
                    };
                    let current = std::mem::replace(&mut svc.spec, previous);
                    svc.previous_spec = Some(current);
                    svc.spec_version += 1;
                    svc.update_status = Some(engine::ServiceUpdateStatus {
                        state: Some(engine::ServiceUpdateStatusStateEnum::ROLLBACK_STARTED),
                        started_at: date_now(),
                        completed_at: None,
                        message: Some("manually requested rollback".into()),
                    });
                } else {
                    if tasks_change(&svc.spec, &spec) {
                        svc.spec_version += 1;
                    }
                    let old = std::mem::replace(&mut svc.spec, Box::new(spec));
                    svc.previous_spec = Some(old);
                    svc.update_status = None;
                }
                if let Some(auth) = registry_auth.clone() {
                    svc.registry_auth = Some(auth).filter(|a| !a.is_empty());
                }
                svc.endpoint = crate::allocator::endpoint_now(tx.state(), &svc);
                tx.update(Object::Service(svc))?;
                Ok(())
            })
            .await
    }

    /// Deletes the service `reference` resolves to (its tasks are shut down by the
    /// orchestrator when it sees the deletion).
    pub async fn remove_service(&self, reference: &str) -> Result<()> {
        let id = self.resolve_service(reference)?.id;
        self.store
            .update(|tx| match tx.delete(ObjectKind::Service, &id) {
                Err(StoreError::NotFound { .. }) => {
                    Err(ControlError::NotFound(format!("service {id} not found")))
                }
                other => other.map_err(ControlError::from),
            })
            .await
    }

    // -------------------------------------------------------------------------------- nodes

    /// Replaces the spec (name, labels, desired role, availability) of the node `reference`
    /// resolves to. Demoting the last manager, or a manager whose removal would lose the Raft
    /// quorum, is refused. A missing role or availability keeps the current one.
    pub async fn update_node(
        &self,
        reference: &str,
        version: u64,
        mut spec: engine::NodeSpec,
    ) -> Result<()> {
        let id = self.resolve_node(reference)?.id;
        self.store
            .update(|tx| {
                let Some(mut node) = tx.get_node(&id) else {
                    return Err(ControlError::NotFound(format!("node {id} not found")));
                };
                if spec.role.is_none() {
                    spec.role = Some(match node.desired_role() {
                        NodeRole::Manager => engine::NodeSpecRoleEnum::MANAGER,
                        NodeRole::Worker => engine::NodeSpecRoleEnum::WORKER,
                    });
                }
                if spec.availability.is_none()
                    || spec.availability == Some(engine::NodeSpecAvailabilityEnum::EMPTY)
                {
                    spec.availability = Some(
                        node.spec
                            .availability
                            .filter(|a| *a != engine::NodeSpecAvailabilityEnum::EMPTY)
                            .unwrap_or(engine::NodeSpecAvailabilityEnum::ACTIVE),
                    );
                }
                if spec.role == Some(engine::NodeSpecRoleEnum::EMPTY) {
                    return Err(invalid("invalid Role: \"\""));
                }
                let demoting = node.desired_role() == NodeRole::Manager
                    && spec.role == Some(engine::NodeSpecRoleEnum::WORKER);
                if demoting {
                    check_demotion(tx, &node)?;
                }
                node.meta.version = version;
                node.spec = spec.clone();
                tx.update(Object::Node(node))?;
                Ok(())
            })
            .await
    }

    /// Removes the node `reference` resolves to. A manager that is still a member of the Raft
    /// cluster must be demoted first; a node that is ready needs `force`. Its unfinished tasks
    /// are marked orphaned in the same write, and its ID joins the cluster's removed nodes,
    /// whose certificates the node-to-node server refuses from then on.
    pub async fn remove_node(&self, reference: &str, force: bool) -> Result<()> {
        let id = self.resolve_node(reference)?.id;
        self.store
            .update(|tx| {
                let Some(node) = tx.get_node(&id) else {
                    return Err(ControlError::NotFound(format!("node {id} not found")));
                };
                if node.desired_role() == NodeRole::Manager && node.manager_status.is_some() {
                    return Err(ControlError::FailedPrecondition(format!(
                        "node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
                    )));
                }
                if !force && node.status.state == NodeState::Ready {
                    return Err(ControlError::FailedPrecondition(format!(
                        "node {id} is not down and can't be removed"
                    )));
                }
                let orphans: Vec<Task> = tx
                    .state()
                    .tasks_on_node(&id)
                    .filter(|t| t.status.state < TaskState::Complete)
                    .cloned()
                    .collect();
                for mut t in orphans {
                    t.status = TaskStatus::new(
                        TaskState::Orphaned,
                        "Task belonged to a node that has been deleted",
                    );
                    tx.update(Object::Task(t))?;
                }
                if let Some(mut cluster) = tx.get_cluster() {
                    if !cluster.removed_nodes.contains(&id) {
                        cluster.removed_nodes.push(id.clone());
                        tx.update(Object::Cluster(cluster))?;
                    }
                }
                tx.delete(ObjectKind::Node, &id)?;
                Ok(())
            })
            .await
    }

    // ------------------------------------------------------------------------------ cluster

    /// Replaces the cluster spec if `version` is current; optionally rotates the join tokens.
    /// The spec must be named `default` (an empty name is taken as `default`).
    pub async fn update_cluster(
        &self,
        version: u64,
        mut spec: engine::SwarmSpec,
        rotate_worker_token: bool,
        rotate_manager_token: bool,
    ) -> Result<()> {
        match spec.name.as_deref() {
            None | Some("") => spec.name = Some("default".into()),
            Some("default") => {}
            Some(_) => return Err(invalid("swarm spec must be named \"default\"")),
        }
        validate_cluster_spec(&spec)?;
        self.store
            .update(|tx| {
                let Some(mut cluster) = tx.get_cluster() else {
                    return Err(ControlError::Unavailable(
                        "This node is not part of a swarm".into(),
                    ));
                };
                cluster.meta.version = version;
                cluster.spec = spec.clone();
                if rotate_worker_token {
                    cluster.worker_join_token = rotate_join_token(&cluster.worker_join_token)?;
                }
                if rotate_manager_token {
                    cluster.manager_join_token = rotate_join_token(&cluster.manager_join_token)?;
                }
                tx.update(Object::Cluster(cluster))?;
                Ok(())
            })
            .await
    }

    // ---------------------------------------------------------------------------- resolvers

    /// The service with this ID, else this exact name, else the one ID starting with it.
    pub fn resolve_service(&self, reference: &str) -> Result<Service> {
        self.store.view(|s| {
            if let Some(svc) = s.services.get(reference) {
                return Ok(svc.clone());
            }
            pick(
                "service",
                reference,
                s.services.values().filter(|v| v.name() == reference),
                s.services.values(),
                |v| &v.id,
            )
        })
    }

    /// The node with this ID, else this exact hostname, else the one ID starting with it.
    pub fn resolve_node(&self, reference: &str) -> Result<Node> {
        self.store.view(|s| {
            if let Some(n) = s.nodes.get(reference) {
                return Ok(n.clone());
            }
            pick(
                "node",
                reference,
                s.nodes.values().filter(|n| n.hostname() == reference),
                s.nodes.values(),
                |n| &n.id,
            )
        })
    }

    /// The task with this ID, else this full name (`<service>.<slot>.<id>`), else the one ID
    /// starting with it.
    pub fn resolve_task(&self, reference: &str) -> Result<Task> {
        self.store.view(|s| {
            if let Some(t) = s.tasks.get(reference) {
                return Ok(t.clone());
            }
            pick(
                "task",
                reference,
                s.tasks.values().filter(|t| t.runtime_name() == reference),
                s.tasks.values(),
                |t| &t.id,
            )
        })
    }
}

/// Resolution after the exact-ID lookup: by name, then by unique ID prefix.
fn pick<'a, T: Clone + 'a>(
    kind: &str,
    reference: &str,
    by_name: impl Iterator<Item = &'a T>,
    all: impl Iterator<Item = &'a T>,
    id: impl Fn(&T) -> &String,
) -> Result<T> {
    let mut found: Vec<&T> = by_name.collect();
    if found.is_empty() && !reference.is_empty() {
        found = all.filter(|o| id(o).starts_with(reference)).collect();
    }
    match found.as_slice() {
        [] => Err(ControlError::NotFound(format!(
            "{kind} {reference} not found"
        ))),
        [one] => Ok((*one).clone()),
        many => Err(invalid(format!(
            "{kind} {reference} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

// ------------------------------------------------------------------------------ validation

/// Which of the four modes a spec has (`None` when it names several).
fn mode_kind(spec: &engine::ServiceSpec) -> &'static str {
    match &spec.mode {
        None => "replicated",
        Some(m) if m.global.is_some() => "global",
        Some(m) if m.global_job.is_some() => "global-job",
        Some(m) if m.replicated_job.is_some() => "replicated-job",
        Some(_) => "replicated",
    }
}

/// Fills the mode the way the daemon's conversion does, so clients read back explicit values:
/// no mode is one replica, `Replicated.Replicas` defaults to 1, `ReplicatedJob.MaxConcurrent`
/// to 1 and `ReplicatedJob.TotalCompletions` to `MaxConcurrent`.
pub fn normalize_mode(spec: &mut engine::ServiceSpec) {
    let mode = spec.mode.get_or_insert_with(Default::default);
    if mode.global.is_some() || mode.global_job.is_some() {
        return;
    }
    if let Some(job) = mode.replicated_job.as_mut() {
        let max = *job.max_concurrent.get_or_insert(1);
        job.total_completions.get_or_insert(max);
        return;
    }
    mode.replicated
        .get_or_insert_with(Default::default)
        .replicas
        .get_or_insert(1);
}

/// Whether the tasks made from `old` are out of date under `new`: the task template
/// (including `ForceUpdate`) or the endpoint spec changed.
fn tasks_change(old: &engine::ServiceSpec, new: &engine::ServiceSpec) -> bool {
    !shoal_api::spec::same_task_spec(old.task_template.as_ref(), new.task_template.as_ref())
        || old.endpoint_spec != new.endpoint_spec
}

/// Validates a service spec as the daemon's conversion and swarmkit's `validateServiceSpec` do.
pub fn validate_service_spec(spec: &engine::ServiceSpec) -> Result<()> {
    validate_name(spec.name.as_deref().unwrap_or(""))?;
    let task = spec.task_template.clone().unwrap_or_default();
    validate_task_spec(&task)?;
    validate_mode(spec)?;
    let is_job = shoal_api::spec::service_mode(spec).is_job();
    if is_job {
        if spec.update_config.is_some() {
            return Err(invalid("Jobs may not have an update config"));
        }
    } else if let Some(u) = &spec.update_config {
        validate_update(
            "update",
            u.parallelism,
            u.delay,
            u.monitor,
            u.max_failure_ratio,
        )?;
    }
    if let Some(r) = &spec.rollback_config {
        validate_update(
            "rollback",
            r.parallelism,
            r.delay,
            r.monitor,
            r.max_failure_ratio,
        )?;
    }
    validate_endpoint(spec.endpoint_spec.as_ref())
}

/// A service name must be a DNS label: `[a-zA-Z0-9]` runs joined by `-`/`_`, at most 63 chars.
fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("meta: name must be provided"));
    }
    if !is_valid_dns_name(name) {
        return Err(invalid("name must be valid as a DNS name component"));
    }
    if name.len() > 63 {
        return Err(invalid("name must be 63 characters or fewer"));
    }
    Ok(())
}

/// `^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`: alphanumerics, separators only between them.
fn is_valid_dns_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if alnum(f) && alnum(l) => {}
        _ => return false,
    }
    b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_')
}

fn validate_task_spec(task: &engine::TaskSpec) -> Result<()> {
    match task.runtime.as_deref() {
        None | Some("") | Some("container") => {}
        Some("attachment") => {
            return Err(invalid(
                "invalid task spec: spec type \"attachment\" not supported",
            ))
        }
        Some("plugin") => {
            return Err(invalid(
                "runtime type \"plugin\" only supported in experimental",
            ))
        }
        Some(_) => return Err(invalid("unsupported runtime")),
    }
    if let Some(res) = &task.resources {
        if let Some(r) = &res.limits {
            validate_resources(r.nano_cpus, r.memory_bytes)?;
        }
        if let Some(r) = &res.reservations {
            validate_resources(r.nano_cpus, r.memory_bytes)?;
        }
    }
    if let Some(rp) = &task.restart_policy {
        if rp.delay.unwrap_or(0) < 0 {
            return Err(invalid("TaskSpec: restart-delay cannot be negative"));
        }
        if rp.window.unwrap_or(0) < 0 {
            return Err(invalid("TaskSpec: restart-window cannot be negative"));
        }
        if rp.max_attempts.unwrap_or(0) < 0 {
            return Err(invalid("TaskSpec: restart-max-attempts cannot be negative"));
        }
    }
    if let Some(p) = &task.placement {
        check_constraints(p.constraints.as_deref().unwrap_or(&[]))?;
        if p.max_replicas.unwrap_or(0) < 0 {
            return Err(invalid("TaskSpec: max-replicas cannot be negative"));
        }
    }
    let Some(c) = &task.container_spec else {
        return Err(invalid("ContainerSpec: image reference must be provided"));
    };
    validate_image(c.image.as_deref().unwrap_or(""))?;
    let mut targets = HashSet::new();
    for m in c.mounts.as_deref().unwrap_or(&[]) {
        let target = m.target.clone().unwrap_or_default();
        if !targets.insert(target.clone()) {
            return Err(invalid(format!(
                "ContainerSpec: duplicate mount point: {target}"
            )));
        }
    }
    if let Some(hc) = &c.health_check {
        for (what, v) in [
            ("Interval", hc.interval),
            ("Timeout", hc.timeout),
            ("StartPeriod", hc.start_period),
            ("StartInterval", hc.start_interval),
        ] {
            let v = v.unwrap_or(0);
            if v != 0 && v < MIN_HEALTH_DURATION_NS {
                return Err(invalid(format!(
                    "ContainerSpec: {what} in HealthConfig cannot be less than 1ms"
                )));
            }
        }
        if hc.retries.unwrap_or(0) < 0 {
            return Err(invalid(
                "ContainerSpec: Retries in HealthConfig cannot be negative",
            ));
        }
    }
    if c.stop_grace_period.unwrap_or(0) < 0 {
        return Err(invalid(
            "ContainerSpec: stop-grace-period cannot be negative",
        ));
    }
    Ok(())
}

fn validate_resources(nano_cpus: Option<i64>, memory: Option<i64>) -> Result<()> {
    let cpus = nano_cpus.unwrap_or(0);
    if cpus != 0 && cpus < 1_000_000 {
        return Err(invalid(format!(
            "invalid cpu value {}: Must be at least 0.001",
            cpus as f64 / 1e9
        )));
    }
    let mem = memory.unwrap_or(0);
    if mem != 0 && mem < 4 * 1024 * 1024 {
        return Err(invalid(format!(
            "invalid memory value {mem}: Must be at least 4MiB"
        )));
    }
    Ok(())
}

/// Placement constraints must parse (`key==value` / `key!=value`), with the scheduler's parser.
fn check_constraints(constraints: &[String]) -> Result<()> {
    crate::constraint::parse_constraints(constraints)
        .map(|_| ())
        .map_err(|e| invalid(e.to_string()))
}

/// An image reference must be given and be a valid `[domain/]path[:tag][@digest]`.
fn validate_image(image: &str) -> Result<()> {
    if image.is_empty() {
        return Err(invalid("ContainerSpec: image reference must be provided"));
    }
    if !is_valid_reference(image) {
        return Err(invalid(format!(
            "ContainerSpec: {image:?} is not a valid repository/tag"
        )));
    }
    Ok(())
}

/// The distribution reference grammar, without regexes.
fn is_valid_reference(r: &str) -> bool {
    let (rest, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return false;
        };
        let alg_ok = !alg.is_empty()
            && alg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
        if !alg_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let mut chars = t.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok
            || t.len() > 128
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return false;
        }
    }
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            if !is_valid_domain(first) {
                return false;
            }
            parts.remove(0);
        }
    }
    parts.iter().all(|p| is_valid_path_component(p))
}

fn is_valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') {
        return host.ends_with(']');
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn is_valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let al = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !al(b[0]) || !al(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if al(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !al(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

fn validate_mode(spec: &engine::ServiceSpec) -> Result<()> {
    let Some(m) = &spec.mode else {
        return Ok(());
    };
    let count = [
        m.replicated.is_some(),
        m.global.is_some(),
        m.replicated_job.is_some(),
        m.global_job.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if count > 1 {
        return Err(invalid("must specify only one service mode"));
    }
    if let Some(r) = &m.replicated {
        if r.replicas.unwrap_or(1) < 0 {
            return Err(invalid("Number of replicas must be non-negative"));
        }
    }
    if let Some(j) = &m.replicated_job {
        if j.max_concurrent.unwrap_or(1) < 0 {
            return Err(invalid("Maximum concurrent jobs must not be negative"));
        }
        if j.total_completions.unwrap_or(1) < 0 {
            return Err(invalid("Total completed jobs must not be negative"));
        }
    }
    Ok(())
}

fn validate_update(
    which: &str,
    parallelism: Option<i64>,
    delay: Option<i64>,
    monitor: Option<i64>,
    max_failure_ratio: Option<f64>,
) -> Result<()> {
    if parallelism.unwrap_or(0) < 0 {
        return Err(invalid(format!(
            "TaskSpec: {which}-parallelism cannot be negative"
        )));
    }
    if delay.unwrap_or(0) < 0 {
        return Err(invalid(format!(
            "TaskSpec: {which}-delay cannot be negative"
        )));
    }
    if monitor.unwrap_or(0) < 0 {
        return Err(invalid(format!(
            "TaskSpec: {which}-monitor cannot be negative"
        )));
    }
    let ratio = max_failure_ratio.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid(format!(
            "TaskSpec: {which}-maxfailureratio cannot be less than 0 or bigger than 1"
        )));
    }
    Ok(())
}

fn validate_endpoint(ep: Option<&engine::EndpointSpec>) -> Result<()> {
    let Some(ep) = ep else {
        return Ok(());
    };
    let dnsrr = ep.mode == Some(engine::EndpointSpecModeEnum::DNSRR);
    let mut seen = HashSet::new();
    for p in ep.ports.as_deref().unwrap_or(&[]) {
        if dnsrr && is_ingress(p) {
            return Err(invalid(
                "EndpointSpec: port published with ingress mode can't be used with dnsrr mode",
            ));
        }
        let published = p.published_port.unwrap_or(0);
        if !(0..=65535).contains(&published) || !(0..=65535).contains(&p.target_port.unwrap_or(0)) {
            return Err(invalid("EndpointSpec: ports must be between 0 and 65535"));
        }
        if published == 0 {
            continue;
        }
        if !seen.insert((published, protocol(p))) {
            return Err(invalid("EndpointSpec: duplicate published ports provided"));
        }
    }
    Ok(())
}

/// Refuses published ports that another service already uses (swarmkit's
/// `checkPortConflicts`): ingress ports are exclusive; host-mode ports may be shared between
/// host-mode services.
fn check_port_conflicts(tx: &Tx<'_>, spec: &engine::ServiceSpec, skip: Option<&str>) -> Result<()> {
    let Some(ep) = &spec.endpoint_spec else {
        return Ok(());
    };
    let mut ingress = HashSet::new();
    let mut host = HashSet::new();
    for p in ep.ports.as_deref().unwrap_or(&[]) {
        let published = p.published_port.unwrap_or(0);
        if published == 0 {
            continue;
        }
        if is_ingress(p) {
            ingress.insert((published, protocol(p)));
        } else {
            host.insert((published, protocol(p)));
        }
    }
    if ingress.is_empty() && host.is_empty() {
        return Ok(());
    }
    for svc in tx.state().services.values() {
        if Some(svc.id.as_str()) == skip {
            continue;
        }
        let spec_ports = svc
            .spec
            .endpoint_spec
            .as_ref()
            .and_then(|e| e.ports.as_deref())
            .unwrap_or(&[]);
        let alloc_ports = svc
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.as_deref())
            .unwrap_or(&[]);
        for p in spec_ports.iter().chain(alloc_ports) {
            let published = p.published_port.unwrap_or(0);
            if published == 0 {
                continue;
            }
            let key = (published, protocol(p));
            if !is_ingress(p) {
                if ingress.contains(&key) {
                    return Err(invalid(format!(
                        "port '{published}' is already in use by service '{}' ({}) as a host-published port",
                        svc.name(),
                        svc.id
                    )));
                }
            } else if ingress.contains(&key) || host.contains(&key) {
                return Err(invalid(format!(
                    "port '{published}' is already in use by service '{}' ({}) as an ingress port",
                    svc.name(),
                    svc.id
                )));
            }
        }
    }
    Ok(())
}

/// Demotion safety: not the last manager, and the Raft group keeps its quorum without it.
fn check_demotion(tx: &Tx<'_>, node: &Node) -> Result<()> {
    let managers: Vec<&Node> = tx
        .state()
        .nodes
        .values()
        .filter(|n| n.role == NodeRole::Manager)
        .collect();
    if managers.len() == 1 && managers[0].id == node.id {
        return Err(ControlError::FailedPrecondition(
            "attempting to demote the last manager of the swarm".into(),
        ));
    }
    if node.manager_status.is_some() {
        // Members after the removal, and how many of them are reachable.
        let members: Vec<&Node> = managers
            .iter()
            .copied()
            .filter(|n| n.manager_status.is_some() && n.id != node.id)
            .collect();
        let reachable = members
            .iter()
            .filter(|n| {
                n.manager_status
                    .as_ref()
                    .is_some_and(|m| m.reachability == Reachability::Reachable || m.leader)
            })
            .count();
        if !members.is_empty() && reachable < members.len() / 2 + 1 {
            return Err(ControlError::FailedPrecondition(
                "can't remove member from the raft: this would result in a loss of quorum".into(),
            ));
        }
    }
    Ok(())
}

fn validate_cluster_spec(spec: &engine::SwarmSpec) -> Result<()> {
    if let Some(ca) = &spec.ca_config {
        if let Some(exp) = ca.node_cert_expiry {
            if exp < MIN_NODE_CERT_EXPIRY_NS {
                return Err(invalid("minimum certificate expiry time is: 1h0m0s"));
            }
        }
    }
    if let Some(d) = &spec.dispatcher {
        if d.heartbeat_period.unwrap_or(0) < 0 {
            return Err(invalid(
                "heartbeat time period cannot be a negative duration",
            ));
        }
    }
    if let Some(o) = &spec.orchestration {
        if o.task_history_retention_limit.unwrap_or(0) < 0 {
            return Err(invalid("task history retention limit cannot be negative"));
        }
    }
    Ok(())
}

/// A join token with the same CA digest and a fresh secret:
/// `SWMTKN-1-<digest>-<25 base-36 chars from 128 random bits>`.
fn rotate_join_token(old: &str) -> Result<String> {
    let parts: Vec<&str> = old.split('-').collect();
    match parts.as_slice() {
        ["SWMTKN", "1", digest, _secret] if !digest.is_empty() => {
            Ok(format!("SWMTKN-1-{digest}-{}", new_id()))
        }
        _ => Err(ControlError::Internal(
            "the cluster's join token is malformed and cannot be rotated".into(),
        )),
    }
}

/// The current time as the Engine API models carry it.
fn date_now() -> Option<engine::BollardDate> {
    let s = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    serde_json::from_value(serde_json::Value::String(s)).ok()
}

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "bright", "calm", "clever", "eager", "fair", "gentle", "happy",
    "keen", "kind", "lively", "lucid", "merry", "nimble", "patient", "quiet", "sharp", "steady",
    "swift", "tidy", "vivid", "wise",
];
const NAMES: &[&str] = &[
    "albattani",
    "babbage",
    "curie",
    "darwin",
    "euclid",
    "faraday",
    "galileo",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "lamarr",
    "lovelace",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "ramanujan",
    "shannon",
    "tesla",
    "turing",
    "wozniak",
    "yalow",
    "zhukovsky",
];

/// A random `adjective_name` not in `taken` (lowercase names), like Docker's names generator.
fn random_name(taken: &HashSet<String>) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    for attempt in 0..64 {
        let a = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
        let n = NAMES[rng.random_range(0..NAMES.len())];
        let name = if attempt < 8 {
            format!("{a}_{n}")
        } else {
            format!("{a}_{n}{}", rng.random_range(0..100u32))
        };
        if !taken.contains(&name) {
            return name;
        }
    }
    format!("service_{}", &new_id()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Cluster, ManagerStatus, Meta, NodeStatus};
    use std::collections::HashMap;

    fn spec(name: &str, image: &str, replicas: i64) -> engine::ServiceSpec {
        engine::ServiceSpec {
            name: Some(name.into()),
            task_template: Some(engine::TaskSpec {
                container_spec: Some(engine::TaskSpecContainerSpec {
                    image: Some(image.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(engine::ServiceSpecMode {
                replicated: Some(engine::ServiceSpecModeReplicated {
                    replicas: Some(replicas),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(id: &str, host: &str, role: NodeRole, state: NodeState) -> Node {
        Node {
            id: id.into(),
            meta: Meta::new_now(),
            spec: engine::NodeSpec {
                role: Some(match role {
                    NodeRole::Manager => engine::NodeSpecRoleEnum::MANAGER,
                    NodeRole::Worker => engine::NodeSpecRoleEnum::WORKER,
                }),
                availability: Some(engine::NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            },
            description: engine::NodeDescription {
                hostname: Some(host.into()),
                ..Default::default()
            },
            status: NodeStatus {
                state,
                message: String::new(),
                addr: "10.0.0.1".into(),
            },
            role,
            manager_status: (role == NodeRole::Manager).then(|| ManagerStatus {
                leader: true,
                reachability: Reachability::Reachable,
                addr: "10.0.0.1:2377".into(),
                raft_id: 1,
            }),
            addr_port: "10.0.0.1:2377".into(),
            network_addresses: Default::default(),
        }
    }

    async fn control_with(nodes: Vec<Node>) -> Control {
        let store = Store::new();
        store
            .update(|tx| {
                tx.create(Object::Cluster(Cluster {
                    id: "cluster1".into(),
                    meta: Meta::new_now(),
                    spec: engine::SwarmSpec {
                        name: Some("default".into()),
                        ..Default::default()
                    },
                    worker_join_token: "SWMTKN-1-digest-workersecret".into(),
                    manager_join_token: "SWMTKN-1-digest-managersecret".into(),
                    root_ca_cert: String::new(),
                    root_ca_key: String::new(),
                    removed_nodes: Vec::new(),
                    unlock_key: String::new(),
                    default_addr_pool: vec!["10.0.0.0/8".into()],
                    subnet_size: 24,
                    data_path_port: 4789,
                }))?;
                for n in nodes {
                    tx.create(Object::Node(n))?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        Control::new(store)
    }

    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn create_stores_spec_exactly_and_refuses_duplicates() {
        let c = control_with(vec![]).await;
        let s = spec("web", "nginx:latest", 2);
        let id = c
            .create_service(s.clone(), Some("auth".into()))
            .await
            .unwrap();
        let stored = c.resolve_service(&id).unwrap();
        assert_eq!(*stored.spec, s);
        assert_eq!(stored.spec_version, 1);
        assert_eq!(stored.registry_auth.as_deref(), Some("auth"));
        let e = c
            .create_service(spec("WEB", "nginx", 1), None)
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Conflict(_)));
        assert_eq!(
            e.to_string(),
            "name conflicts with an existing object: service WEB already exists"
        );
    }

    #[tokio::test]
    async fn published_ports_are_allocated_with_the_write_itself() {
        let c = control_with(vec![]).await;
        let mut s = spec("web", "nginx", 1);
        s.endpoint_spec = Some(engine::EndpointSpec {
            mode: None,
            ports: Some(vec![engine::EndpointPortConfig {
                target_port: Some(80),
                ..Default::default()
            }]),
        });
        let id = c.create_service(s.clone(), None).await.unwrap();
        let stored = c.resolve_service(&id).unwrap();
        let published = |svc: &Service| {
            svc.endpoint
                .as_ref()
                .and_then(|e| e.ports.as_ref())
                .map(|p| p[0].published_port)
        };
        assert_eq!(
            published(&stored),
            Some(Some(30000)),
            "{:?}",
            stored.endpoint
        );
        // Nothing is left for the allocator pass to write (no version bump behind a client).
        let plan = c
            .store
            .view(|st| crate::allocator::plan(st, chrono::Utc::now()));
        assert!(
            !plan
                .intents
                .iter()
                .any(|i| matches!(i, crate::orchestrator::Intent::SetEndpoint { .. })),
            "{plan:?}"
        );
        // An update keeps the port it holds.
        let mut s2 = s.clone();
        s2.labels = Some([("a".to_string(), "b".to_string())].into());
        c.update_service(&id, stored.meta.version, s2, None, false)
            .await
            .unwrap();
        let updated = c.resolve_service(&id).unwrap();
        assert_eq!(published(&updated), Some(Some(30000)));
    }

    #[tokio::test]
    async fn modes_are_filled_like_docker() {
        let c = control_with(vec![]).await;
        let mut s = spec("job", "busybox", 1);
        s.mode = Some(engine::ServiceSpecMode {
            replicated_job: Some(engine::ServiceSpecModeReplicatedJob {
                max_concurrent: Some(3),
                total_completions: None,
            }),
            ..Default::default()
        });
        let id = c.create_service(s, None).await.unwrap();
        let job = c
            .resolve_service(&id)
            .unwrap()
            .spec
            .mode
            .unwrap()
            .replicated_job
            .unwrap();
        assert_eq!(
            (job.max_concurrent, job.total_completions),
            (Some(3), Some(3))
        );
        let mut s = spec("plain", "busybox", 1);
        s.mode = None;
        let id = c.create_service(s, None).await.unwrap();
        let m = c.resolve_service(&id).unwrap().spec.mode.unwrap();
        assert_eq!(m.replicated.and_then(|r| r.replicas), Some(1));
    }

    #[tokio::test]
    async fn create_generates_a_name_when_empty() {
        let c = control_with(vec![]).await;
        let id = c
            .create_service(spec("", "busybox", 1), None)
            .await
            .unwrap();
        let svc = c.resolve_service(&id).unwrap();
        assert!(is_valid_dns_name(svc.name()), "{}", svc.name());
        assert!(svc.name().contains('_'));
    }

    #[tokio::test]
    async fn create_validation_messages_match_swarmkit() {
        let c = control_with(vec![]).await;
        let cases: Vec<(engine::ServiceSpec, &str)> = vec![
            (
                spec("web", "nginx", -1),
                "Number of replicas must be non-negative",
            ),
            (
                spec("we b", "nginx", 1),
                "name must be valid as a DNS name component",
            ),
            (
                spec("-web", "nginx", 1),
                "name must be valid as a DNS name component",
            ),
            (
                spec(&"a".repeat(64), "nginx", 1),
                "name must be 63 characters or fewer",
            ),
            (
                spec("web", "", 1),
                "ContainerSpec: image reference must be provided",
            ),
            (
                spec("web", "NGINX", 1),
                "ContainerSpec: \"NGINX\" is not a valid repository/tag",
            ),
            (
                {
                    let mut s = spec("web", "nginx", 1);
                    if let Some(t) = s.task_template.as_mut() {
                        t.placement = Some(engine::TaskSpecPlacement {
                            constraints: Some(vec!["node.role=manager".into()]),
                            ..Default::default()
                        });
                    }
                    s
                },
                "constraint expected one operator from ==, !=",
            ),
            (
                {
                    let mut s = spec("web", "nginx", 1);
                    s.update_config = Some(engine::ServiceSpecUpdateConfig {
                        delay: Some(-1),
                        ..Default::default()
                    });
                    s
                },
                "TaskSpec: update-delay cannot be negative",
            ),
            (
                {
                    let mut s = spec("web", "nginx", 1);
                    if let Some(t) = s.task_template.as_mut() {
                        t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                            delay: Some(-5),
                            ..Default::default()
                        });
                    }
                    s
                },
                "TaskSpec: restart-delay cannot be negative",
            ),
            (
                {
                    let mut s = spec("web", "nginx", 1);
                    if let Some(m) = s.mode.as_mut() {
                        m.global = Some(HashMap::new());
                    }
                    s
                },
                "must specify only one service mode",
            ),
        ];
        for (s, want) in cases {
            let e = c.create_service(s, None).await.unwrap_err();
            assert!(matches!(e, ControlError::InvalidArgument(_)), "{e:?}");
            assert_eq!(e.to_string(), want);
        }
        assert!(c.store().view(|s| s.services.is_empty()));
    }

    #[test]
    fn references_parse_like_distribution() {
        for ok in [
            "nginx",
            "nginx:1.25-alpine",
            "library/nginx",
            "localhost:5000/app:v1",
            "registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a__b/c.d-e",
        ] {
            assert!(is_valid_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a//b",
            "app@sha256:xyz",
            "with space",
        ] {
            assert!(!is_valid_reference(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn update_checks_version_and_bumps_spec_version_only_for_task_changes() {
        let c = control_with(vec![]).await;
        let id = c
            .create_service(spec("web", "nginx", 1), None)
            .await
            .unwrap();
        let v1 = c.resolve_service(&id).unwrap().meta.version;

        // Scaling keeps the spec version (tasks are not replaced).
        c.update_service(&id, v1, spec("web", "nginx", 3), None, false)
            .await
            .unwrap();
        let s = c.resolve_service(&id).unwrap();
        assert_eq!(s.spec_version, 1);
        assert_eq!(s.previous_spec, Some(Box::new(spec("web", "nginx", 1))));

        // So does scaling with the spec as the API shows it (`ForceUpdate: 0` filled in).
        let mut shown = spec("web", "nginx", 2);
        if let Some(t) = shown.task_template.as_mut() {
            t.force_update = Some(0);
        }
        c.update_service(&id, s.meta.version, shown, None, false)
            .await
            .unwrap();
        let s = c.resolve_service(&id).unwrap();
        assert_eq!(s.spec_version, 1);
        c.update_service(&id, s.meta.version, spec("web", "nginx", 3), None, false)
            .await
            .unwrap();
        let s = c.resolve_service(&id).unwrap();
        assert_eq!(s.spec_version, 1);

        // A stale version fails and changes nothing.
        let e = c
            .update_service(&id, v1, spec("web", "nginx:2", 3), None, false)
            .await
            .unwrap_err();
        assert_eq!(e, ControlError::OutOfSequence);
        assert!(e.to_string().ends_with("update out of sequence"));
        assert_eq!(c.resolve_service(&id).unwrap(), s);

        // A new image bumps the spec version.
        c.update_service(
            "web",
            s.meta.version,
            spec("web", "nginx:2", 3),
            None,
            false,
        )
        .await
        .unwrap();
        let s2 = c.resolve_service(&id).unwrap();
        assert_eq!(s2.spec_version, 2);

        // ForceUpdate bumps it too.
        let mut forced = spec("web", "nginx:2", 3);
        if let Some(t) = forced.task_template.as_mut() {
            t.force_update = Some(1);
        }
        c.update_service(&id, s2.meta.version, forced.clone(), None, false)
            .await
            .unwrap();
        let s3 = c.resolve_service(&id).unwrap();
        assert_eq!(s3.spec_version, 3);

        // Rollback swaps the specs.
        c.update_service(&id, s3.meta.version, forced.clone(), None, true)
            .await
            .unwrap();
        let s4 = c.resolve_service(&id).unwrap();
        assert_eq!(*s4.spec, spec("web", "nginx:2", 3));
        assert_eq!(s4.previous_spec, Some(Box::new(forced)));
        assert_eq!(s4.spec_version, 4);
        assert_eq!(
            s4.update_status.and_then(|u| u.state),
            Some(engine::ServiceUpdateStatusStateEnum::ROLLBACK_STARTED)
        );
    }

    #[tokio::test]
    async fn update_refuses_rename_mode_change_and_missing_previous_spec() {
        let c = control_with(vec![]).await;
        let id = c
            .create_service(spec("web", "nginx", 1), None)
            .await
            .unwrap();
        let v = c.resolve_service(&id).unwrap().meta.version;
        let e = c
            .update_service(&id, v, spec("api", "nginx", 1), None, false)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "renaming services is not supported");
        let mut global = spec("web", "nginx", 1);
        global.mode = Some(engine::ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        });
        let e = c
            .update_service(&id, v, global, None, false)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "service mode change is not allowed");
        let e = c
            .update_service(&id, v, spec("web", "nginx", 1), None, true)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("service {id} does not have a previous spec")
        );
        let e = c
            .update_service("nope", v, spec("web", "nginx", 1), None, false)
            .await
            .unwrap_err();
        assert_eq!(e, ControlError::NotFound("service nope not found".into()));
    }

    #[tokio::test]
    async fn port_conflicts_are_refused() {
        let c = control_with(vec![]).await;
        let with_port = |name: &str, mode| {
            let mut s = spec(name, "nginx", 1);
            s.endpoint_spec = Some(engine::EndpointSpec {
                ports: Some(vec![engine::EndpointPortConfig {
                    target_port: Some(80),
                    published_port: Some(8080),
                    publish_mode: Some(mode),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            s
        };
        let id = c
            .create_service(
                with_port("a", engine::EndpointPortConfigPublishModeEnum::INGRESS),
                None,
            )
            .await
            .unwrap();
        let e = c
            .create_service(
                with_port("b", engine::EndpointPortConfigPublishModeEnum::INGRESS),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("port '8080' is already in use by service 'a' ({id}) as an ingress port")
        );
    }

    #[tokio::test]
    async fn remove_service_and_resolution_rules() {
        let c = control_with(vec![]).await;
        let id = c
            .create_service(spec("web", "nginx", 1), None)
            .await
            .unwrap();
        assert_eq!(c.resolve_service(&id[..5]).unwrap().id, id);
        assert_eq!(c.resolve_service("web").unwrap().id, id);
        let e = c.resolve_service("zzzz-none").unwrap_err();
        assert_eq!(e.to_string(), "service zzzz-none not found");
        c.remove_service("web").await.unwrap();
        assert!(matches!(
            c.remove_service(&id).await,
            Err(ControlError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn ambiguous_prefixes_are_refused() {
        let c = control_with(vec![
            node("abc1", "h1", NodeRole::Manager, NodeState::Ready),
            node("abc2", "h2", NodeRole::Worker, NodeState::Ready),
        ])
        .await;
        assert_eq!(
            err_text(c.resolve_node("abc")),
            "node abc is ambiguous (2 matches found)"
        );
        assert_eq!(c.resolve_node("h2").unwrap().id, "abc2");
        assert_eq!(c.resolve_node("abc1").unwrap().id, "abc1");
        assert_eq!(err_text(c.resolve_task("x")), "task x not found");
    }

    #[tokio::test]
    async fn node_update_and_demotion_rules() {
        let c = control_with(vec![
            node("m1", "h1", NodeRole::Manager, NodeState::Ready),
            node("w1", "h2", NodeRole::Worker, NodeState::Ready),
        ])
        .await;
        let v = c.resolve_node("m1").unwrap().meta.version;
        let demote = engine::NodeSpec {
            role: Some(engine::NodeSpecRoleEnum::WORKER),
            availability: Some(engine::NodeSpecAvailabilityEnum::ACTIVE),
            ..Default::default()
        };
        let e = c.update_node("m1", v, demote).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "attempting to demote the last manager of the swarm"
        );
        let w = c.resolve_node("w1").unwrap();
        let drain = engine::NodeSpec {
            availability: Some(engine::NodeSpecAvailabilityEnum::DRAIN),
            labels: Some(HashMap::from([("zone".to_string(), "a".to_string())])),
            ..Default::default()
        };
        c.update_node("h2", w.meta.version, drain).await.unwrap();
        let w2 = c.resolve_node("w1").unwrap();
        assert_eq!(w2.spec.role, Some(engine::NodeSpecRoleEnum::WORKER));
        assert_eq!(w2.availability(), shoal_api::NodeAvailability::Drain);
        let e = c
            .update_node("w1", w.meta.version, engine::NodeSpec::default())
            .await
            .unwrap_err();
        assert_eq!(e, ControlError::OutOfSequence);
    }

    #[tokio::test]
    async fn node_removal_rules_and_orphaning() {
        let c = control_with(vec![
            node("m1", "h1", NodeRole::Manager, NodeState::Ready),
            node("w1", "h2", NodeRole::Worker, NodeState::Ready),
        ])
        .await;
        let task = Task {
            id: "t1".into(),
            meta: Meta::new_now(),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 1,
            node_id: Some("w1".into()),
            spec: Default::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Running, "started"),
            labels: Default::default(),
            job_iteration: None,
            service_labels: None,
            networks: Vec::new(),
        };
        c.store()
            .update(|tx| tx.create(Object::Task(task)))
            .await
            .unwrap();
        assert_eq!(
            err_text(c.remove_node("w1", false).await),
            "node w1 is not down and can't be removed"
        );
        assert_eq!(
            err_text(c.remove_node("m1", true).await),
            "node m1 is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
        );
        c.remove_node("w1", true).await.unwrap();
        assert!(c.store().view(|s| !s.nodes.contains_key("w1")));
        assert_eq!(
            c.store().view(|s| s.tasks["t1"].status.state),
            TaskState::Orphaned
        );
        assert_eq!(
            c.store()
                .view(|s| s.cluster.as_ref().map(|c| c.removed_nodes.clone())),
            Some(vec!["w1".to_string()])
        );
    }

    #[tokio::test]
    async fn cluster_update_rotates_tokens_and_checks_name_and_version() {
        let c = control_with(vec![]).await;
        let cl = c.store().view(|s| s.cluster.clone()).unwrap();
        let e = c
            .update_cluster(
                cl.meta.version,
                engine::SwarmSpec {
                    name: Some("other".into()),
                    ..Default::default()
                },
                false,
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "swarm spec must be named \"default\"");
        c.update_cluster(cl.meta.version, engine::SwarmSpec::default(), true, false)
            .await
            .unwrap();
        let cl2 = c.store().view(|s| s.cluster.clone()).unwrap();
        assert_ne!(cl2.worker_join_token, cl.worker_join_token);
        assert!(cl2.worker_join_token.starts_with("SWMTKN-1-digest-"));
        assert_eq!(cl2.manager_join_token, cl.manager_join_token);
        assert_eq!(cl2.spec.name.as_deref(), Some("default"));
        let e = c
            .update_cluster(cl.meta.version, engine::SwarmSpec::default(), false, false)
            .await
            .unwrap_err();
        assert_eq!(e, ControlError::OutOfSequence);
    }
}
