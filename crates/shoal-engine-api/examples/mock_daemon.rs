//! Serves the Engine API on a unix socket against [`MockBackend`], with a toy orchestrator that
//! keeps `replicas` running tasks per replicated service (each with one log line), so the real
//! `docker` CLI can be pointed at it:
//!
//! ```text
//! cargo run -p shoal-engine-api --example mock_daemon -- /tmp/shoal-mock.sock &
//! DOCKER_HOST=unix:///tmp/shoal-mock.sock docker swarm init
//! ```

use shoal_agent::runtime::{LogLine, LogStream};
use shoal_api::{new_id, Meta, Object, Task, TaskState, TaskStatus};
use shoal_engine_api::testing::MockBackend;
use shoal_engine_api::{serve, Listener};
use std::sync::Arc;
use std::time::Duration;

/// One reconciliation pass: replace out-of-date tasks, add missing ones, drop extra ones.
async fn reconcile(b: &MockBackend) {
    let node = b.node_id();
    if node.is_empty() || b.store().view(|s| s.cluster.is_none()) {
        return;
    }
    let (services, tasks) = b.store().view(|s| {
        (
            s.services.values().cloned().collect::<Vec<_>>(),
            s.tasks.values().cloned().collect::<Vec<_>>(),
        )
    });
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    for svc in &services {
        let replicas = match shoal_api::spec::service_mode(&svc.spec) {
            shoal_api::spec::ServiceMode::Replicated { replicas } => replicas,
            _ => 1,
        };
        for slot in 1..=replicas.max(slot_max(&tasks, &svc.id)) {
            let live: Vec<&Task> = tasks
                .iter()
                .filter(|t| {
                    t.service_id == svc.id
                        && t.slot == slot
                        && t.desired_state == TaskState::Running
                })
                .collect();
            let mut current = false;
            for t in live {
                if t.spec_version != svc.spec_version || slot > replicas {
                    let mut t = t.clone();
                    t.desired_state = TaskState::Shutdown;
                    t.status = TaskStatus::new(TaskState::Shutdown, "shutdown");
                    updates.push(t);
                } else {
                    current = true;
                }
            }
            if !current && slot <= replicas {
                let id = new_id();
                b.set_task_logs(
                    &id,
                    vec![LogLine {
                        timestamp: chrono::Utc::now(),
                        stream: LogStream::Stdout,
                        line: format!("hello from {}.{slot}", svc.name()).into_bytes(),
                    }],
                );
                creates.push(Task {
                    id,
                    meta: Meta::new_now(),
                    service_id: svc.id.clone(),
                    service_name: svc.name().to_string(),
                    slot,
                    node_id: Some(node.clone()),
                    spec: svc.spec.task_template.clone().unwrap_or_default().into(),
                    spec_version: svc.spec_version,
                    desired_state: TaskState::Running,
                    status: TaskStatus::new(TaskState::Running, "started"),
                    labels: Default::default(),
                    job_iteration: None,
                    service_labels: None,
                    networks: Vec::new(),
                });
            }
        }
    }
    // Tasks of deleted services go away.
    let orphans: Vec<String> = tasks
        .iter()
        .filter(|t| !services.iter().any(|s| s.id == t.service_id))
        .map(|t| t.id.clone())
        .collect();
    let r = b
        .store()
        .update(|tx| {
            for t in updates {
                tx.update(Object::Task(t))?;
            }
            for t in creates {
                tx.create(Object::Task(t))?;
            }
            for id in &orphans {
                tx.delete(shoal_api::ObjectKind::Task, id)?;
            }
            Ok::<_, shoal_store::StoreError>(())
        })
        .await;
    if let Err(e) = r {
        eprintln!("reconcile: {e}");
    }
}

fn slot_max(tasks: &[Task], service_id: &str) -> u64 {
    tasks
        .iter()
        .filter(|t| t.service_id == service_id)
        .map(|t| t.slot)
        .max()
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/shoal-mock.sock".into());
    let backend = Arc::new(MockBackend::new());
    let b = backend.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            reconcile(&b).await;
        }
    });
    eprintln!("listening on unix://{path}");
    serve(Listener::Unix(path.into()), backend, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
