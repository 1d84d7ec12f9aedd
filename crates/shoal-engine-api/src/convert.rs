//! Shoal's stored objects -> the Engine API models clients parse.
//!
//! ```text
//!   shoal_api::Node     ──► engine::Node     {ID, Version.Index, CreatedAt, Spec, Description, Status, ManagerStatus}
//!   shoal_api::Service  ──► ServiceView      {ID, Version, Spec (+ForceUpdate 0), PreviousSpec, Endpoint, UpdateStatus, ...}
//!   shoal_api::Task     ──► engine::Task     {ID, ServiceID, Slot, NodeID, DesiredState, Status, Spec (Image always set)}
//!   shoal_api::Cluster  ──► engine::Swarm / engine::ClusterInfo
//! ```
//! Times are RFC 3339 with nanoseconds, trailing zeros trimmed (Go's `time.RFC3339Nano`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use shoal_api::spec::{service_mode, ServiceMode};
use shoal_api::{engine, Cluster, Node, NodeRole, Reachability, Service, Task, TaskState};

/// Formats a time as Go's `time.RFC3339Nano` (fraction without trailing zeros).
pub fn rfc3339_nano(t: &DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // "2024-01-02T03:04:05.120000000Z" -> "2024-01-02T03:04:05.12Z"
    match s.find('.') {
        Some(dot) => {
            let frac = s[dot + 1..s.len() - 1].trim_end_matches('0');
            if frac.is_empty() {
                format!("{}Z", &s[..dot])
            } else {
                format!("{}.{}Z", &s[..dot], frac)
            }
        }
        None => s,
    }
}

/// A time as the models carry it (a string, or a parsed date when bollard is built with one).
pub fn date(t: &DateTime<Utc>) -> Option<engine::BollardDate> {
    serde_json::from_value(serde_json::Value::String(rfc3339_nano(t))).ok()
}

fn version(index: u64) -> Option<engine::ObjectVersion> {
    Some(engine::ObjectVersion { index: Some(index) })
}

/// A node as `GET /nodes` shows it.
pub fn node(n: &Node) -> engine::Node {
    let mut spec = n.spec.clone();
    if spec.role.is_none() {
        spec.role = Some(match n.desired_role() {
            NodeRole::Manager => engine::NodeSpecRoleEnum::MANAGER,
            NodeRole::Worker => engine::NodeSpecRoleEnum::WORKER,
        });
    }
    if spec.availability.is_none() {
        spec.availability = Some(engine::NodeSpecAvailabilityEnum::ACTIVE);
    }
    let state = match n.status.state {
        shoal_api::NodeState::Unknown => engine::NodeState::UNKNOWN,
        shoal_api::NodeState::Down => engine::NodeState::DOWN,
        shoal_api::NodeState::Ready => engine::NodeState::READY,
        shoal_api::NodeState::Disconnected => engine::NodeState::DISCONNECTED,
    };
    engine::Node {
        id: Some(n.id.clone()),
        version: version(n.meta.version),
        created_at: date(&n.meta.created_at),
        updated_at: date(&n.meta.updated_at),
        spec: Some(spec),
        description: Some(n.description.clone()),
        status: Some(engine::NodeStatus {
            state: Some(state),
            message: Some(n.status.message.clone()).filter(|m| !m.is_empty()),
            addr: Some(n.status.addr.clone()),
        }),
        manager_status: n.manager_status.as_ref().map(|m| engine::ManagerStatus {
            leader: Some(m.leader),
            reachability: Some(match m.reachability {
                Reachability::Unknown => engine::Reachability::UNKNOWN,
                Reachability::Unreachable => engine::Reachability::UNREACHABLE,
                Reachability::Reachable => engine::Reachability::REACHABLE,
            }),
            addr: Some(m.addr.clone()),
        }),
    }
}

/// A service as the API shows it: bollard's model plus `PreviousSpec`, which it lacks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: engine::Service,
    #[serde(
        rename = "PreviousSpec",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub previous_spec: Option<engine::ServiceSpec>,
}

/// The spec as shown: as sent, with `TaskTemplate.ForceUpdate` present (0 when unset).
fn shown_spec(spec: &engine::ServiceSpec) -> engine::ServiceSpec {
    let mut s = spec.clone();
    let t = s.task_template.get_or_insert_with(Default::default);
    if t.force_update.is_none() {
        t.force_update = Some(0);
    }
    s
}

/// swarmkit's `InterpolateService`: fills the defaults `service inspect` shows with
/// `insertDefaults=true` (restart any/5 s, update and rollback parallelism 1, pause, 5 s monitor,
/// stop-first, stop grace period 10 s, empty resources, placement and DNS config).
pub fn insert_defaults(spec: &mut engine::ServiceSpec) {
    use engine::ServiceSpecRollbackConfigFailureActionEnum as RF;
    use engine::ServiceSpecRollbackConfigOrderEnum as RO;
    use engine::ServiceSpecUpdateConfigFailureActionEnum as UF;
    use engine::ServiceSpecUpdateConfigOrderEnum as UO;
    const FIVE_S: i64 = 5_000_000_000;
    shoal_api::spec::insert_task_defaults(spec.task_template.get_or_insert_with(Default::default));
    match spec.update_config.as_mut() {
        None => {
            spec.update_config = Some(engine::ServiceSpecUpdateConfig {
                parallelism: Some(1),
                delay: None,
                failure_action: Some(UF::PAUSE),
                monitor: Some(FIVE_S),
                max_failure_ratio: Some(0.0),
                order: Some(UO::STOP_FIRST),
            })
        }
        Some(u) => {
            u.monitor.get_or_insert(FIVE_S);
        }
    }
    match spec.rollback_config.as_mut() {
        None => {
            spec.rollback_config = Some(engine::ServiceSpecRollbackConfig {
                parallelism: Some(1),
                delay: None,
                failure_action: Some(RF::PAUSE),
                monitor: Some(FIVE_S),
                max_failure_ratio: Some(0.0),
                order: Some(RO::STOP_FIRST),
            })
        }
        Some(r) => {
            r.monitor.get_or_insert(FIVE_S);
        }
    }
}

/// A service as `GET /services/{id}` shows it.
pub fn service(s: &Service, with_defaults: bool) -> ServiceView {
    let mut spec = shown_spec(&s.spec);
    if with_defaults {
        insert_defaults(&mut spec);
    }
    let mut endpoint = s.endpoint.clone().unwrap_or_default();
    if endpoint.spec.is_none() {
        endpoint.spec = Some(s.spec.endpoint_spec.clone().unwrap_or_default());
    }
    let mode = service_mode(&s.spec);
    let job_status = mode.is_job().then(|| engine::ServiceJobStatus {
        job_iteration: version(s.job_iteration),
        last_execution: date(&s.meta.updated_at),
    });
    ServiceView {
        service: engine::Service {
            id: Some(s.id.clone()),
            version: version(s.meta.version),
            created_at: date(&s.meta.created_at),
            updated_at: date(&s.meta.updated_at),
            spec: Some(spec),
            endpoint: Some(endpoint),
            update_status: s.update_status.clone(),
            service_status: None,
            job_status,
        },
        previous_spec: s.previous_spec.as_deref().map(shown_spec),
    }
}

/// `ServiceStatus` as swarmkit's `ListServiceStatuses` computes it from the service's tasks.
pub fn service_status<'a>(
    s: &Service,
    tasks: impl Iterator<Item = &'a Task>,
) -> engine::ServiceServiceStatus {
    let mode = service_mode(&s.spec);
    let (mut desired, global) = match mode {
        ServiceMode::Replicated { replicas } => (replicas, false),
        ServiceMode::ReplicatedJob { max_concurrent, .. } => (max_concurrent, false),
        ServiceMode::Global | ServiceMode::GlobalJob => (0, true),
    };
    let (mut running, mut completed) = (0, 0);
    for t in tasks {
        if mode.is_job() {
            if t.job_iteration != Some(s.job_iteration) {
                continue;
            }
            if t.status.state == TaskState::Complete {
                completed += 1;
            }
        }
        if t.status.state == TaskState::Running {
            running += 1;
        }
        if global && t.desired_state == TaskState::Running {
            desired += 1;
        }
        if global && t.desired_state == TaskState::Complete && t.status.state != TaskState::Complete
        {
            desired += 1;
        }
    }
    engine::ServiceServiceStatus {
        running_tasks: Some(running),
        desired_tasks: Some(desired),
        completed_tasks: Some(completed),
    }
}

/// A task as `GET /tasks` shows it. `Spec.ContainerSpec.Image` is always present; `Labels`
/// are the task's own (service labels are matched by the `label` filter, not shown here).
pub fn task(t: &Task) -> engine::Task {
    let mut spec = (*t.spec).clone();
    let c = spec.container_spec.get_or_insert_with(Default::default);
    c.image.get_or_insert_with(String::new);
    spec.force_update.get_or_insert(0);
    let labels = t.labels.clone();
    let container_status =
        (t.status.container_id.is_some() || t.status.pid.is_some() || t.status.exit_code.is_some())
            .then(|| engine::ContainerStatus {
                container_id: t.status.container_id.clone(),
                pid: t.status.pid,
                exit_code: t.status.exit_code,
            });
    engine::Task {
        id: Some(t.id.clone()),
        version: version(t.meta.version),
        created_at: date(&t.meta.created_at),
        updated_at: date(&t.meta.updated_at),
        name: None,
        labels: Some(labels),
        spec: Some(spec),
        service_id: Some(t.service_id.clone()),
        slot: (t.slot > 0).then(|| i64::try_from(t.slot).unwrap_or(i64::MAX)),
        node_id: t.node_id.clone().filter(|n| !n.is_empty()),
        assigned_generic_resources: None,
        status: Some(engine::TaskStatus {
            timestamp: date(&t.status.timestamp),
            state: Some(t.status.state.to_engine()),
            message: Some(t.status.message.clone()),
            err: t.status.err.clone().filter(|e| !e.is_empty()),
            container_status,
            port_status: Some(engine::PortStatus::default()),
        }),
        desired_state: Some(t.desired_state.to_engine()),
        job_iteration: t.job_iteration.and_then(version),
    }
}

fn tls_info(c: &Cluster) -> Option<engine::TlsInfo> {
    (!c.root_ca_cert.is_empty()).then(|| engine::TlsInfo {
        trust_root: Some(c.root_ca_cert.clone()),
        cert_issuer_subject: None,
        cert_issuer_public_key: None,
    })
}

/// The swarm as `GET /swarm` shows it (with join tokens).
pub fn swarm(c: &Cluster) -> engine::Swarm {
    engine::Swarm {
        id: Some(c.id.clone()),
        version: version(c.meta.version),
        created_at: date(&c.meta.created_at),
        updated_at: date(&c.meta.updated_at),
        spec: Some(c.spec.clone()),
        tls_info: tls_info(c),
        root_rotation_in_progress: Some(false),
        data_path_port: Some(if c.data_path_port == 0 {
            4789
        } else {
            c.data_path_port
        }),
        default_addr_pool: Some(c.default_addr_pool.clone()),
        subnet_size: Some(if c.subnet_size == 0 {
            24
        } else {
            c.subnet_size
        }),
        join_tokens: Some(engine::JoinTokens {
            worker: Some(c.worker_join_token.clone()),
            manager: Some(c.manager_join_token.clone()),
        }),
    }
}

/// The swarm as `/info` shows it (without join tokens).
pub fn cluster_info(c: &Cluster) -> engine::ClusterInfo {
    let s = swarm(c);
    engine::ClusterInfo {
        id: s.id,
        version: s.version,
        created_at: s.created_at,
        updated_at: s.updated_at,
        spec: s.spec,
        tls_info: s.tls_info,
        root_rotation_in_progress: s.root_rotation_in_progress,
        data_path_port: s.data_path_port,
        default_addr_pool: s.default_addr_pool,
        subnet_size: s.subnet_size,
    }
}

/// Moves `from` to `to` in the object at `path` inside `v` (when `to` is not already set).
fn rename_key(v: &mut serde_json::Value, path: &[&str], from: &str, to: &str) {
    let mut cur = v;
    for p in path {
        match cur.get_mut(*p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(obj) = cur.as_object_mut() {
        if !obj.contains_key(to) {
            if let Some(x) = obj.remove(from) {
                obj.insert(to.to_string(), x);
            }
        }
    }
}

/// Incoming service spec: Docker's Go types call the container health check `Healthcheck`
/// (and Go matches keys case-insensitively); bollard's model reads `HealthCheck`.
pub fn spec_keys_from_docker(spec: &mut serde_json::Value) {
    rename_key(
        spec,
        &["TaskTemplate", "ContainerSpec"],
        "Healthcheck",
        "HealthCheck",
    );
    rename_key(
        spec,
        &["TaskTemplate", "ContainerSpec"],
        "healthcheck",
        "HealthCheck",
    );
}

/// Outgoing service: the health check under Docker's key (`Healthcheck`).
pub fn service_keys_to_docker(service: &mut serde_json::Value) {
    for top in ["Spec", "PreviousSpec"] {
        rename_key(
            service,
            &[top, "TaskTemplate", "ContainerSpec"],
            "HealthCheck",
            "Healthcheck",
        );
    }
}

/// Numbers as Go's `encoding/json` writes them: a float with an integral value has no fraction
/// (`"MaxFailureRatio": 0`, not `0.0`), so clients that print the raw JSON show what dockerd's
/// clients show.
pub fn go_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(go_numbers),
        Value::Object(m) => m.values_mut().for_each(go_numbers),
        _ => {}
    }
}

/// Outgoing task: the health check under Docker's key (`Healthcheck`).
pub fn task_keys_to_docker(task: &mut serde_json::Value) {
    rename_key(
        task,
        &["Spec", "ContainerSpec"],
        "HealthCheck",
        "Healthcheck",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use shoal_api::{Meta, TaskStatus};

    #[test]
    fn integral_floats_look_like_go() {
        let mut v = serde_json::json!({"R": 0.0, "S": [1.5, 2.0], "T": {"U": 7}, "W": "x"});
        go_numbers(&mut v);
        assert_eq!(v.to_string(), r#"{"R":0,"S":[1.5,2],"T":{"U":7},"W":"x"}"#);
    }

    #[test]
    fn times_look_like_go() {
        let t = Utc
            .timestamp_opt(1_700_000_000, 120_000_000)
            .single()
            .unwrap_or_default();
        assert_eq!(rfc3339_nano(&t), "2023-11-14T22:13:20.12Z");
        let t = Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(rfc3339_nano(&t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn task_always_has_an_image_and_no_slot_for_global() {
        let t = Task {
            id: "t1".into(),
            meta: Meta::new_now(),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 0,
            node_id: Some("n1".into()),
            spec: Default::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Pending, "pending"),
            labels: Default::default(),
            job_iteration: None,
            service_labels: None,
            networks: Vec::new(),
        };
        let v = serde_json::to_value(task(&t)).unwrap_or_default();
        assert_eq!(v["Spec"]["ContainerSpec"]["Image"], "");
        assert!(v.get("Slot").is_none());
        assert_eq!(v["Status"]["State"], "pending");
        assert_eq!(v["DesiredState"], "running");
        assert_eq!(v["NodeID"], "n1");
    }

    #[test]
    fn service_endpoint_shows_allocated_ports_and_the_spec() {
        let ep = engine::EndpointSpec {
            mode: Some(engine::EndpointSpecModeEnum::VIP),
            ports: Some(vec![engine::EndpointPortConfig {
                target_port: Some(80),
                ..Default::default()
            }]),
        };
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "id": "s1",
            "meta": Meta::new_now(),
            "spec": {"Name": "web", "EndpointSpec": ep},
            "spec_version": 1,
        }))
        .unwrap();
        // Not allocated yet: the spec only.
        let v = serde_json::to_value(service(&s, false).service).unwrap_or_default();
        assert_eq!(
            v["Endpoint"],
            serde_json::json!({"Spec": {"Mode": "vip", "Ports": [{"TargetPort": 80}]}})
        );
        s.endpoint = Some(engine::ServiceEndpoint {
            spec: Some(ep),
            ports: Some(vec![engine::EndpointPortConfig {
                protocol: Some(engine::EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(80),
                published_port: Some(30000),
                publish_mode: Some(engine::EndpointPortConfigPublishModeEnum::INGRESS),
                name: None,
            }]),
            virtual_ips: None,
        });
        let v = serde_json::to_value(service(&s, false).service).unwrap_or_default();
        assert_eq!(
            v["Endpoint"]["Ports"],
            serde_json::json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30000, "PublishMode": "ingress"}])
        );
        assert_eq!(
            v["Endpoint"]["Spec"]["Ports"][0],
            serde_json::json!({"TargetPort": 80})
        );
        assert!(v["Endpoint"].get("VirtualIPs").is_none());
    }

    #[test]
    fn defaults_are_swarmkits() {
        let mut s = engine::ServiceSpec {
            task_template: Some(engine::TaskSpec {
                container_spec: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        insert_defaults(&mut s);
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(v["UpdateConfig"]["Parallelism"], 1);
        assert_eq!(v["UpdateConfig"]["FailureAction"], "pause");
        assert_eq!(v["UpdateConfig"]["Monitor"], 5_000_000_000i64);
        assert_eq!(v["UpdateConfig"]["Order"], "stop-first");
        assert_eq!(v["RollbackConfig"]["Order"], "stop-first");
        assert_eq!(v["TaskTemplate"]["RestartPolicy"]["Condition"], "any");
        assert_eq!(
            v["TaskTemplate"]["RestartPolicy"]["Delay"],
            5_000_000_000i64
        );
        assert_eq!(
            v["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
            10_000_000_000i64
        );
    }
}
