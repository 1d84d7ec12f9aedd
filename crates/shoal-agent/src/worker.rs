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

use crate::runtime::{Recovered, RunSpec, Runtime};
use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_api::dispatch::{Assignment, AssignmentSet, StatusUpdate};
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
        env: c.env.clone().unwrap_or_default(),
        dir: c.dir.clone().filter(|d| !d.is_empty()),
        user: c.user.clone().filter(|u| !u.is_empty()),
        // Docker's default hostname is the container ID's first 12 characters; a task's ID
        // stands in for the container's.
        hostname: c
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| Some(task.id.chars().take(12).collect())),
        stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
        stop_grace: shoal_api::spec::stop_grace_period(&task.spec),
        labels,
    }
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
        }
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
                        self.reconcile(set, &mut controllers, &mut recovered, &report_tx).await;
                        if first_set {
                            first_set = false;
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
            let (dtx, drx) = watch::channel(t.desired_state);
            let handle = tokio::spawn(run_controller(
                a.task.clone(),
                Arc::clone(&runtime),
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

/// Drives one task through its states.
async fn run_controller(
    task: Task,
    runtime: Arc<dyn Runtime>,
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
    let spec = run_spec(&task);
    let wants_stop = |d: TaskState| d > TaskState::Running;

    match recovered {
        Some(Recovered::Running) => {
            if task.status.state < TaskState::Running {
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
            send(status(TaskState::Running, "started"));
        }
    }

    // Running: wait for the exit or for the manager to ask for a stop.
    let wait = runtime.wait(&id);
    tokio::pin!(wait);
    loop {
        tokio::select! {
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
}
