//! The worker: makes this node run what its manager assigned.
//!
//! ```text
//!  ManagerLink.assignments() ──► AssignmentSet ──► reconcile
//!        │                                          ├─ new task        → spawn a controller
//!        │                                          ├─ desired changed → tell its controller
//!        │                                          └─ gone from set   → stop, then runtime.remove
//!  controller (one per task):
//!    accepted → preparing → ready → starting → running → complete | failed
//!        │ prepare error: rejected          desired ≥ shutdown: stop → shutdown
//!  every change ──► reporter ──► ManagerLink.report(updates)   (retried until delivered)
//! ```
//!
//! After a daemon restart the worker asks each runtime what it still has (`recover`) and adopts
//! running tasks instead of starting them again, so no task runs twice and none is leaked.

use crate::health::{HealthCheck, HealthStatus};
use crate::network::{HostNetwork, TaskNetwork};
use crate::runtime::{MountedFile, Recovered, RunSpec, Runtime};
use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_api::dispatch::{Assignment, AssignmentSet, DependencyData, StatusUpdate};
use shoal_api::{engine, Task, TaskState, TaskStatus};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Error talking to the manager.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

/// The agent's view of its manager (the dispatcher), in-process or over the network.
#[async_trait::async_trait]
pub trait ManagerLink: Send + Sync + 'static {
    /// Opens a session; returns the heartbeat period to keep.
    async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, LinkError>;
    async fn heartbeat(&self, node_id: &str) -> Result<Duration, LinkError>;
    async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<BoxStream<'static, AssignmentSet>, LinkError>;
    async fn report(&self, node_id: &str, updates: Vec<StatusUpdate>) -> Result<(), LinkError>;
}

/// Static facts about this node's worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub node_id: String,
    pub addr: String,
    pub description: engine::NodeDescription,
    /// Runtime for tasks whose service names none.
    pub default_runtime: String,
}

/// Builds the runtime spec of a task.
pub fn run_spec(task: &Task) -> RunSpec {
    let c = task.spec.container_spec.clone().unwrap_or_default();
    let mut labels = c.labels.clone().unwrap_or_default();
    labels.insert("com.docker.swarm.task.id".into(), task.id.clone());
    labels.insert("com.docker.swarm.task.name".into(), task.runtime_name());
    labels.insert(
        "com.docker.swarm.service.id".into(),
        task.service_id.clone(),
    );
    labels.insert(
        "com.docker.swarm.service.name".into(),
        task.service_name.clone(),
    );
    if let Some(n) = &task.node_id {
        labels.insert("com.docker.swarm.node.id".into(), n.clone());
    }
    RunSpec {
        task_id: task.id.clone(),
        task_name: task.name(),
        image: c.image.clone().unwrap_or_default(),
        command: shoal_api::spec::command_line(&task.spec),
        uses_image_entrypoint: c.command.as_ref().is_none_or(|c| c.is_empty()),
        env: c.env.clone().unwrap_or_default(),
        dir: c.dir.clone().filter(|d| !d.is_empty()),
        user: c.user.clone().filter(|u| !u.is_empty()),
        // Docker's default hostname is the container ID's first 12 characters; a task's ID
        // stands in for the container's.
        hostname: c
            .hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(|h| expand_template(h, task))
            .or_else(|| Some(task.id.chars().take(12).collect())),
        netns: None,
        stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
        stop_grace: shoal_api::spec::stop_grace_period(&task.spec),
        labels,
        files: Vec::new(),
    }
}

/// Expands the placeholders Docker allows in a service's hostname (`{{.Service.Name}}`,
/// `{{.Service.ID}}`, `{{.Task.Name}}`, `{{.Task.ID}}`, `{{.Task.Slot}}`, `{{.Node.ID}}`);
/// anything else is left as written.
pub fn expand_template(template: &str, task: &Task) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = rest[start + 2..start + end].trim();
        let value = match inner {
            ".Service.Name" => Some(task.service_name.clone()),
            ".Service.ID" => Some(task.service_id.clone()),
            ".Task.Name" => Some(task.runtime_name()),
            ".Task.ID" => Some(task.id.clone()),
            ".Task.Slot" => Some(if task.slot > 0 {
                task.slot.to_string()
            } else {
                task.node_id.clone().unwrap_or_default()
            }),
            ".Node.ID" => Some(task.node_id.clone().unwrap_or_default()),
            _ => None,
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// The files a task sees for the secrets and configs its spec references, from the data the
/// assignment set carries: a secret's relative target goes under `/run/secrets`, a config's
/// under `/`; uid and gid default to 0, the mode to 0444, as Docker does.
pub fn task_files(
    task: &Task,
    secrets: &[DependencyData],
    configs: &[DependencyData],
) -> Result<Vec<MountedFile>, String> {
    use base64::Engine as _;
    /// A reference's `File`: name (target), uid, gid, mode.
    type FileFields<'a> = (
        &'a Option<String>,
        &'a Option<String>,
        &'a Option<String>,
        Option<u32>,
    );
    let Some(c) = task.spec.container_spec.as_ref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut add = |kind: &str,
                   id: Option<&str>,
                   name: Option<&str>,
                   file: Option<FileFields>,
                   have: &[DependencyData],
                   base: &str|
     -> Result<(), String> {
        let id = id.unwrap_or_default();
        let label = name.filter(|n| !n.is_empty()).unwrap_or(id);
        let dep = have
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| format!("{kind} {label} ({id}) was not sent to this node"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(dep.data.trim())
            .map_err(|e| format!("{kind} {label}: its data is not valid base64: {e}"))?;
        let (target, uid, gid, mode) = match file {
            Some((n, u, g, m)) => (n.clone(), u.clone(), g.clone(), m),
            None => (None, None, None, None),
        };
        let target = target.filter(|t| !t.is_empty()).unwrap_or(dep.name.clone());
        let target = if target.starts_with('/') {
            target
        } else {
            format!("{}/{target}", base.trim_end_matches('/'))
        };
        let num = |what: &str, v: Option<String>| -> Result<u32, String> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(0),
                Some(s) => s.parse().map_err(|_| {
                    format!("{kind} {label}: invalid {what} {s:?} (a number is needed)")
                }),
            }
        };
        out.push(MountedFile {
            target,
            data,
            uid: num("uid", uid)?,
            gid: num("gid", gid)?,
            mode: mode.unwrap_or(0o444),
        });
        Ok(())
    };
    for r in c.secrets.iter().flatten() {
        let file = r.file.as_ref().map(|f| (&f.name, &f.uid, &f.gid, f.mode));
        add(
            "secret",
            r.secret_id.as_deref(),
            r.secret_name.as_deref(),
            file,
            secrets,
            crate::files::SECRETS_DIR,
        )?;
    }
    for r in c.configs.iter().flatten() {
        // A config without a file (a credential spec's `runtime` target) is not mounted.
        let Some(f) = r.file.as_ref() else { continue };
        add(
            "config",
            r.config_id.as_deref(),
            r.config_name.as_deref(),
            Some((&f.name, &f.uid, &f.gid, f.mode)),
            configs,
            "/",
        )?;
    }
    Ok(out)
}

struct Controller {
    desired: watch::Sender<TaskState>,
    handle: JoinHandle<()>,
    runtime: Arc<dyn Runtime>,
}

/// The worker role of a node.
pub struct Worker {
    cfg: WorkerConfig,
    link: Arc<dyn ManagerLink>,
    runtimes: HashMap<String, Arc<dyn Runtime>>,
    network: Arc<dyn TaskNetwork>,
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        link: Arc<dyn ManagerLink>,
        runtimes: HashMap<String, Arc<dyn Runtime>>,
    ) -> Self {
        Worker {
            cfg,
            link,
            runtimes,
            network: Arc::new(HostNetwork),
        }
    }

    /// The node's data plane (default: [`HostNetwork`], tasks share the node's network).
    pub fn with_network(mut self, network: Arc<dyn TaskNetwork>) -> Self {
        self.network = network;
        self
    }

    /// Runs until `shutdown` turns true. Task processes are left running on shutdown (a
    /// restarted daemon adopts them); they are stopped only when the manager says so.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let (report_tx, report_rx) = mpsc::unbounded_channel::<StatusUpdate>();
        let reporter = tokio::spawn(reporter(
            Arc::clone(&self.link),
            self.cfg.node_id.clone(),
            report_rx,
            shutdown.clone(),
        ));

        // What the runtimes still have from before a restart.
        let mut recovered: HashMap<String, (Recovered, Arc<dyn Runtime>)> = HashMap::new();
        for rt in self.runtimes.values() {
            match rt.recover().await {
                Ok(list) => {
                    for (id, r) in list {
                        recovered.insert(id, (r, Arc::clone(rt)));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "runtime recovery failed"),
            }
        }
        let mut controllers: HashMap<String, Controller> = HashMap::new();
        let mut first_set = true;
        let mut backoff = Duration::from_millis(100);

        'session: loop {
            if *shutdown.borrow() {
                break;
            }
            let period = match self
                .link
                .register(
                    &self.cfg.node_id,
                    self.cfg.description.clone(),
                    &self.cfg.addr,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "registering with the manager failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let mut stream = match self.link.assignments(&self.cfg.node_id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "opening the assignment stream failed; retrying");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let mut period = period;
            let mut hb = tokio::time::interval(period);
            hb.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.changed() => {
                        if *shutdown.borrow() { break 'session; }
                    }
                    _ = hb.tick() => {
                        match self.link.heartbeat(&self.cfg.node_id).await {
                            Err(e) => {
                                tracing::warn!(error = %e, "heartbeat failed; re-registering");
                                continue 'session;
                            }
                            // The cluster's heartbeat period changed (`swarm update
                            // --dispatcher-heartbeat`): keep the new one from now on.
                            Ok(p) if p != period && !p.is_zero() => {
                                period = p;
                                hb = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
                            }
                            Ok(_) => {}
                        }
                    }
                    next = stream.next() => {
                        let Some(set) = next else {
                            tracing::warn!("assignment stream ended; re-registering");
                            continue 'session;
                        };
                        let keep: HashSet<String> = set.tasks.iter().map(|a| a.task.id.clone()).collect();
                        self.reconcile(set, &mut controllers, &mut recovered, &report_tx).await;
                        if first_set {
                            first_set = false;
                            self.network.retain(&keep).await;
                            // Leftovers the manager no longer knows about.
                            for (id, (_, rt)) in recovered.drain() {
                                tracing::info!(task = %id, "removing a task the manager no longer assigns");
                                tokio::spawn(async move {
                                    if let Err(e) = rt.remove(&id).await {
                                        tracing::warn!(task = %id, error = %e, "removing leftover task failed");
                                    }
                                });
                            }
                        }
                    }
                }
            }
        }
        drop(report_tx);
        for (_, c) in controllers {
            c.handle.abort();
        }
        let _ = reporter.await;
    }

    fn runtime_for(&self, a: &Assignment) -> Result<Arc<dyn Runtime>, String> {
        let name = a
            .runtime
            .clone()
            .unwrap_or_else(|| self.cfg.default_runtime.clone());
        self.runtimes.get(&name).cloned().ok_or_else(|| {
            let mut known: Vec<&String> = self.runtimes.keys().collect();
            known.sort();
            format!("unsupported runtime {name:?} (this node has: {known:?})")
        })
    }

    async fn reconcile(
        &self,
        set: AssignmentSet,
        controllers: &mut HashMap<String, Controller>,
        recovered: &mut HashMap<String, (Recovered, Arc<dyn Runtime>)>,
        report: &mpsc::UnboundedSender<StatusUpdate>,
    ) {
        let ids: HashSet<String> = set.tasks.iter().map(|a| a.task.id.clone()).collect();
        self.network.update(&set.network).await;
        for a in set.tasks {
            let t = &a.task;
            if let Some(c) = controllers.get(&t.id) {
                c.desired.send_if_modified(|d| {
                    if *d != t.desired_state {
                        *d = t.desired_state;
                        true
                    } else {
                        false
                    }
                });
                continue;
            }
            let rec = recovered.remove(&t.id);
            if t.status.state.is_terminal() && rec.is_none() {
                continue; // finished before; nothing to run
            }
            let runtime = match (&rec, self.runtime_for(&a)) {
                (Some((_, rt)), _) => Arc::clone(rt),
                (None, Ok(rt)) => rt,
                (None, Err(msg)) => {
                    let mut st = TaskStatus::new(TaskState::Rejected, "unsupported runtime");
                    st.err = Some(msg);
                    let _ = report.send(StatusUpdate {
                        task_id: t.id.clone(),
                        status: st,
                    });
                    continue;
                }
            };
            if a.registry_auth.is_some() {
                // The process runtime pulls nothing: the credentials are only acknowledged.
                tracing::debug!(
                    task = %t.id,
                    service = %t.service_id,
                    "registry credentials received with the task (unused by this runtime)"
                );
            }
            let files = if rec.is_some() {
                Vec::new() // already prepared: its files are in place
            } else {
                match task_files(t, &set.secrets, &set.configs) {
                    Ok(f) => f,
                    Err(msg) => {
                        let mut st = TaskStatus::new(TaskState::Rejected, "missing dependency");
                        st.err = Some(msg);
                        let _ = report.send(StatusUpdate {
                            task_id: t.id.clone(),
                            status: st,
                        });
                        continue;
                    }
                }
            };
            let (dtx, drx) = watch::channel(t.desired_state);
            let handle = tokio::spawn(run_controller(
                a.task.clone(),
                files,
                Arc::clone(&runtime),
                Arc::clone(&self.network),
                drx,
                report.clone(),
                rec.map(|(r, _)| r),
            ));
            controllers.insert(
                t.id.clone(),
                Controller {
                    desired: dtx,
                    handle,
                    runtime,
                },
            );
        }
        let gone: Vec<String> = controllers
            .keys()
            .filter(|id| !ids.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(c) = controllers.remove(&id) {
                let _ = c.desired.send(TaskState::Remove);
                tokio::spawn(async move {
                    let _ = c.handle.await;
                    if let Err(e) = c.runtime.remove(&id).await {
                        tracing::warn!(task = %id, error = %e, "removing task failed");
                    }
                });
            }
        }
    }
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    TaskStatus::new(state, message)
}

/// Runs one task's controller, then releases its network.
async fn run_controller(
    task: Task,
    files: Vec<MountedFile>,
    runtime: Arc<dyn Runtime>,
    network: Arc<dyn TaskNetwork>,
    desired: watch::Receiver<TaskState>,
    report: mpsc::UnboundedSender<StatusUpdate>,
    recovered: Option<Recovered>,
) {
    let attached = !task.networks.is_empty();
    let id = task.id.clone();
    drive(task, files, runtime, &*network, desired, report, recovered).await;
    // The task's process has ended (or never started): its addresses go back to the pool, so
    // its namespace goes now rather than when the task leaves the set.
    if attached {
        network.detach(&id).await;
    }
}

/// Drives one task through its states.
async fn drive(
    task: Task,
    mut files: Vec<MountedFile>,
    runtime: Arc<dyn Runtime>,
    network: &dyn TaskNetwork,
    mut desired: watch::Receiver<TaskState>,
    report: mpsc::UnboundedSender<StatusUpdate>,
    recovered: Option<Recovered>,
) {
    let id = task.id.clone();
    let send = |st: TaskStatus| {
        let _ = report.send(StatusUpdate {
            task_id: id.clone(),
            status: st,
        });
    };
    let mut spec = run_spec(&task);
    if !task.networks.is_empty()
        && !matches!(recovered, Some(Recovered::Exited(_) | Recovered::Gone))
    {
        let hostname = spec.hostname.clone().unwrap_or_default();
        match network.attach(&task, &hostname).await {
            Ok(Some(a)) => {
                spec.netns = Some(a.netns.to_string_lossy().into_owned());
                if !matches!(recovered, Some(Recovered::Running)) {
                    files.extend(a.files);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = report.send(StatusUpdate {
                    task_id: id.clone(),
                    status: {
                        let mut st = status(TaskState::Rejected, "network attachment failed");
                        st.err = Some(e);
                        st
                    },
                });
                return;
            }
        }
    }
    spec.files = files;
    let wants_stop = |d: TaskState| d > TaskState::Running;
    let health = health_check_for(&task, runtime.as_ref());
    // With a health check, `running` is reported only once the task is healthy.
    let mut reported_running = health.is_none() || task.status.state >= TaskState::Running;

    match recovered {
        Some(Recovered::Running) => {
            if task.status.state < TaskState::Running && health.is_none() {
                send(status(TaskState::Running, "started"));
            }
        }
        Some(Recovered::Exited(st)) => {
            send(exit_status(&st, *desired.borrow()));
            return;
        }
        Some(Recovered::Gone) => {
            let mut st = status(TaskState::Failed, "task process vanished");
            st.err = Some(
                "the task's process ended while the daemon was down and its exit status was lost"
                    .into(),
            );
            send(st);
            return;
        }
        Some(Recovered::Created) | None => {
            if wants_stop(*desired.borrow()) {
                send(status(TaskState::Shutdown, "shutdown"));
                return;
            }
            send(status(TaskState::Accepted, "accepted"));
            send(status(TaskState::Preparing, "preparing"));
            if let Err(e) = runtime.prepare(&spec).await {
                let mut st = status(TaskState::Rejected, "preparing failed");
                st.err = Some(e.to_string());
                send(st);
                return;
            }
            send(status(TaskState::Ready, "prepared"));
            if wants_stop(*desired.borrow()) {
                send(status(TaskState::Shutdown, "shutdown"));
                return;
            }
            send(status(TaskState::Starting, "starting"));
            if let Err(e) = runtime.start(&id).await {
                let mut st = status(TaskState::Failed, "starting failed");
                st.err = Some(e.to_string());
                send(st);
                return;
            }
            if health.is_none() {
                send(status(TaskState::Running, "started"));
            }
        }
    }

    // Running: wait for the exit or for the manager to ask for a stop.
    let (_monitor, mut health_rx) = match health {
        Some(check) => {
            let (g, rx) = crate::health::spawn_process_monitor(check, spec.clone());
            (Some(g), Some(rx))
        }
        None => (None, None),
    };
    let wait = runtime.wait(&id);
    tokio::pin!(wait);
    loop {
        let health_changed = async {
            match health_rx.as_mut() {
                Some(rx) => match rx.changed().await {
                    Ok(()) => Some(*rx.borrow_and_update()),
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(h) = health_changed => {
                match h {
                    HealthStatus::Healthy if !reported_running => {
                        reported_running = true;
                        send(status(TaskState::Running, "started"));
                    }
                    HealthStatus::Unhealthy => {
                        tracing::info!(task = %id, "task is unhealthy; stopping it");
                        if let Err(e) = runtime.stop(&id, None, spec.stop_grace).await {
                            tracing::warn!(task = %id, error = %e, "stopping task failed");
                        }
                        let exit = (&mut wait).await.ok();
                        if wants_stop(*desired.borrow()) {
                            send(status(TaskState::Shutdown, "shutdown"));
                        } else {
                            send(unhealthy_status(exit.as_ref(), reported_running));
                        }
                        return;
                    }
                    _ => {}
                }
            }
            res = &mut wait => {
                let st = match res {
                    Ok(exit) => exit_status(&exit, *desired.borrow()),
                    Err(e) => {
                        let mut st = status(TaskState::Failed, "waiting for the task failed");
                        st.err = Some(e.to_string());
                        st
                    }
                };
                send(st);
                return;
            }
            changed = desired.changed() => {
                let d = *desired.borrow();
                if changed.is_err() || wants_stop(d) {
                    if let Err(e) = runtime.stop(&id, None, spec.stop_grace).await {
                        tracing::warn!(task = %id, error = %e, "stopping task failed");
                    }
                    let _ = (&mut wait).await;
                    send(status(TaskState::Shutdown, "shutdown"));
                    return;
                }
            }
        }
    }
}

/// The health check the task's runtime runs for it: only the process runtime runs the
/// commands (on the host, in the task's environment).
fn health_check_for(task: &Task, runtime: &dyn Runtime) -> Option<HealthCheck> {
    if runtime.capabilities().name != "process" {
        return None;
    }
    HealthCheck::from_spec(
        task.spec
            .container_spec
            .as_ref()
            .and_then(|c| c.health_check.as_ref()),
    )
}

/// The failed status of a task stopped because it became unhealthy.
fn unhealthy_status(exit: Option<&crate::runtime::ExitStatus>, was_running: bool) -> TaskStatus {
    let msg = crate::health::unhealthy_error(exit, was_running);
    let mut st = if was_running {
        status(TaskState::Failed, &msg)
    } else {
        status(TaskState::Failed, "starting failed")
    };
    st.err = Some(msg);
    st.exit_code = exit.and_then(|e| e.exit_code()).map(i64::from);
    st
}

/// The status a task ends with after its process exited.
fn exit_status(exit: &crate::runtime::ExitStatus, desired: TaskState) -> TaskStatus {
    let mut st = if desired > TaskState::Running {
        status(TaskState::Shutdown, "shutdown")
    } else if exit.success() {
        status(TaskState::Complete, "finished")
    } else {
        let msg = exit.describe();
        let mut st = status(TaskState::Failed, &msg);
        st.err = Some(msg);
        st
    };
    st.exit_code = exit.exit_code().map(i64::from);
    st
}

/// Delivers status updates in order, batching what is queued and retrying failed deliveries.
async fn reporter(
    link: Arc<dyn ManagerLink>,
    node_id: String,
    mut rx: mpsc::UnboundedReceiver<StatusUpdate>,
    shutdown: watch::Receiver<bool>,
) {
    let mut pending: Vec<StatusUpdate> = Vec::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(u) => pending.push(u),
                None => return,
            }
        }
        while let Ok(u) = rx.try_recv() {
            pending.push(u);
        }
        match link.report(&node_id, pending.clone()).await {
            Ok(()) => pending.clear(),
            Err(e) => {
                if *shutdown.borrow() {
                    return;
                }
                tracing::warn!(error = %e, "reporting task status failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(hostname: Option<&str>) -> Task {
        Task {
            id: "0123456789abcdefghijklmno".into(),
            meta: shoal_api::Meta::new_now(),
            service_id: "svc".into(),
            service_name: "web".into(),
            slot: 1,
            node_id: Some("node".into()),
            spec: std::sync::Arc::new(engine::TaskSpec {
                container_spec: Some(engine::TaskSpecContainerSpec {
                    image: Some("busybox".into()),
                    args: Some(vec!["sleep".into(), "1".into()]),
                    hostname: hostname.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, "assigned"),
            labels: HashMap::new(),
            job_iteration: None,
            service_labels: None,
            networks: Vec::new(),
        }
    }

    #[test]
    fn hostname_defaults_to_the_short_task_id() {
        assert_eq!(
            run_spec(&task(None)).hostname.as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(
            run_spec(&task(Some(""))).hostname.as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(
            run_spec(&task(Some("web-1"))).hostname.as_deref(),
            Some("web-1")
        );
        let spec = run_spec(&task(None));
        assert_eq!(spec.task_name, "web.1");
        assert_eq!(
            spec.labels
                .get("com.docker.swarm.task.id")
                .map(String::as_str),
            Some("0123456789abcdefghijklmno")
        );
    }
    #[test]
    fn secrets_and_configs_become_files_at_their_targets() {
        let mut t = task(None);
        {
            let spec = std::sync::Arc::make_mut(&mut t.spec);
            let c = spec.container_spec.get_or_insert_with(Default::default);
            c.secrets = Some(vec![
                engine::TaskSpecContainerSpecSecrets {
                    secret_id: Some("s1".into()),
                    secret_name: Some("pw".into()),
                    file: Some(engine::TaskSpecContainerSpecFile {
                        name: Some("pw".into()),
                        uid: Some("0".into()),
                        gid: Some("0".into()),
                        mode: Some(0o444),
                    }),
                },
                engine::TaskSpecContainerSpecSecrets {
                    secret_id: Some("s1".into()),
                    secret_name: Some("pw".into()),
                    file: Some(engine::TaskSpecContainerSpecFile {
                        name: Some("/etc/pw".into()),
                        uid: Some("1000".into()),
                        gid: Some("50".into()),
                        mode: Some(0o400),
                    }),
                },
            ]);
            c.configs = Some(vec![engine::TaskSpecContainerSpecConfigs {
                config_id: Some("c1".into()),
                config_name: Some("cfg".into()),
                file: Some(engine::TaskSpecContainerSpecFile1 {
                    name: Some("".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        }
        let dep = |id: &str, name: &str, data: &str| DependencyData {
            id: id.into(),
            name: name.into(),
            data: data.into(),
        };
        let secrets = [dep("s1", "pw", "aHVudGVyMg==")];
        let configs = [dep("c1", "cfg", "YT0xCg==")];
        let files = task_files(&t, &secrets, &configs).expect("files");
        let got: Vec<(&str, &[u8], u32, u32, u32)> = files
            .iter()
            .map(|f| (f.target.as_str(), f.data.as_slice(), f.uid, f.gid, f.mode))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/run/secrets/pw", &b"hunter2"[..], 0, 0, 0o444),
                ("/etc/pw", &b"hunter2"[..], 1000, 50, 0o400),
                ("/cfg", &b"a=1\n"[..], 0, 0, 0o444),
            ]
        );
        let spec_json = serde_json::to_string(&RunSpec {
            files,
            ..run_spec(&t)
        })
        .expect("json");
        assert!(
            !spec_json.contains("aHVudGVyMg") && !spec_json.contains("hunter2"),
            "the data stays out of the runtime's records: {spec_json}"
        );

        let err = task_files(&t, &[], &configs).expect_err("the secret was not sent");
        assert!(err.contains("secret pw (s1) was not sent"), "{err}");
        let err = task_files(&t, &[dep("s1", "pw", "%%%")], &configs).expect_err("bad base64");
        assert!(err.contains("not valid base64"), "{err}");
    }

    #[test]
    fn only_the_process_runtime_runs_health_checks() {
        let mut t = task(None);
        let mut spec = (*t.spec).clone();
        if let Some(c) = spec.container_spec.as_mut() {
            c.health_check = Some(engine::HealthConfig {
                test: Some(vec!["CMD-SHELL".into(), "true".into()]),
                ..Default::default()
            });
        }
        t.spec = Arc::new(spec);
        let process = crate::process::ProcessRuntime::new(
            std::env::temp_dir().join("shoal-hc-unused"),
            crate::process::ShimCommand {
                program: "/bin/false".into(),
                args: vec![],
            },
        );
        let check = health_check_for(&t, &process).expect("process runtime checks health");
        assert_eq!(check.test, crate::health::HealthTest::Shell("true".into()));
        assert!(health_check_for(&t, &crate::mock::MockRuntime::new()).is_none());
        assert!(health_check_for(&task(None), &process).is_none());
    }

    #[test]
    fn unhealthy_tasks_fail_with_swarmkits_error() {
        let st = unhealthy_status(None, false);
        assert_eq!(st.state, TaskState::Failed);
        assert_eq!(st.err.as_deref(), Some("dockerexec: unhealthy container"));
        let exit = crate::runtime::ExitStatus::signaled(15);
        let st = unhealthy_status(Some(&exit), true);
        assert_eq!(
            st.err.as_deref(),
            Some("task: non-zero exit (143): dockerexec: unhealthy container")
        );
        assert_eq!(
            st.message,
            "task: non-zero exit (143): dockerexec: unhealthy container"
        );
        assert_eq!(st.exit_code, Some(143));
    }
}
