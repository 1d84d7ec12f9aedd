//! The agent side end to end: a real `shoal_agent::worker::Worker` on a worker node talks to a
//! manager through `RemoteManagerLink`; the manager serves the Dispatcher with
//! `ManagerLinkHandler` over an in-process link; the worker's task output is read back through
//! the Logs service served by `RuntimeLogs`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Pki, TestServer};
use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_agent::mock::MockRuntime;
use shoal_agent::runtime::{LogOptions, LogStream, Runtime};
use shoal_agent::worker::{LinkError, ManagerLink, Worker, WorkerConfig};
use shoal_api::dispatch::{Assignment, AssignmentSet, StatusUpdate};
use shoal_api::{engine, Task, TaskState, TaskStatus};
use shoal_rpc::{
    ClientOptions, Handlers, ManagerLinkHandler, NodeClient, PeerRole, RemoteManagerLink, RpcError,
    RuntimeLogs,
};
use tokio::sync::{mpsc, watch};

/// The manager's side: what the daemon's in-process link to its dispatcher would do.
#[derive(Default)]
struct FakeDispatcher {
    registered: Mutex<Vec<(String, String)>>,
    reports: Mutex<Vec<(String, StatusUpdate)>>,
    sets: Mutex<Option<mpsc::UnboundedReceiver<AssignmentSet>>>,
    /// Heartbeats never get an answer: a manager cut off by a partition that drops packets.
    silent_heartbeats: bool,
}

#[async_trait::async_trait]
impl ManagerLink for FakeDispatcher {
    async fn register(
        &self,
        node_id: &str,
        _description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, LinkError> {
        if node_id != "worker1" {
            return Err(LinkError(format!(
                "node {node_id} is not part of this swarm"
            )));
        }
        self.registered
            .lock()
            .unwrap()
            .push((node_id.to_string(), addr.to_string()));
        Ok(Duration::from_millis(200))
    }

    async fn heartbeat(&self, _node_id: &str) -> Result<Duration, LinkError> {
        if self.silent_heartbeats {
            futures::future::pending::<()>().await;
        }
        Ok(Duration::from_millis(200))
    }

    async fn assignments(
        &self,
        _node_id: &str,
    ) -> Result<BoxStream<'static, AssignmentSet>, LinkError> {
        match self.sets.lock().unwrap().take() {
            Some(rx) => Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()),
            None => Ok(futures::stream::pending().boxed()),
        }
    }

    async fn report(&self, node_id: &str, updates: Vec<StatusUpdate>) -> Result<(), LinkError> {
        let mut r = self.reports.lock().unwrap();
        for u in updates {
            r.push((node_id.to_string(), u));
        }
        Ok(())
    }
}

fn task(id: &str) -> Task {
    Task {
        id: id.into(),
        meta: shoal_api::Meta::new_now(),
        service_id: "svc".into(),
        service_name: "web".into(),
        slot: 1,
        node_id: Some("worker1".into()),
        spec: std::sync::Arc::new(engine::TaskSpec {
            container_spec: Some(engine::TaskSpecContainerSpec {
                image: Some("busybox".into()),
                args: Some(vec!["sleep".into(), "100".into()]),
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

#[tokio::test]
async fn a_worker_runs_its_assignments_through_the_remote_link() {
    let pki = Pki::new("cluster-1");

    // Manager: Dispatcher over the in-process link.
    let fake = Arc::new(FakeDispatcher::default());
    let (sets_tx, sets_rx) = mpsc::unbounded_channel();
    *fake.sets.lock().unwrap() = Some(sets_rx);
    let m1 = pki.node("manager1", PeerRole::Manager);
    let manager = TestServer::start(
        pki.server_config(&m1),
        pki.peer_fn(),
        Handlers::new().with_dispatcher(Arc::new(ManagerLinkHandler(fake.clone()))),
    )
    .await;

    // Worker: serves Logs from its runtime; runs a Worker over RemoteManagerLink.
    let w1 = pki.node("worker1", PeerRole::Worker);
    let rt = MockRuntime::new();
    let worker_server = TestServer::start(
        pki.server_config(&w1),
        pki.peer_fn(),
        Handlers::new().with_logs(Arc::new(RuntimeLogs::new([
            Arc::new(rt.clone()) as Arc<dyn Runtime>
        ]))),
    )
    .await;
    let link = Arc::new(RemoteManagerLink::new(
        vec![manager.addr.clone()],
        pki.client_config(&w1),
    ));
    let cfg = WorkerConfig {
        node_id: "worker1".into(),
        addr: worker_server.addr.clone(),
        description: engine::NodeDescription {
            hostname: Some("w1".into()),
            ..Default::default()
        },
        default_runtime: "mock".into(),
    };
    let runtimes: HashMap<String, Arc<dyn Runtime>> =
        HashMap::from([("mock".to_string(), Arc::new(rt.clone()) as Arc<dyn Runtime>)]);
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(Worker::new(cfg, link, runtimes).run(stop_rx));

    sets_tx
        .send(AssignmentSet {
            tasks: vec![Assignment {
                task: task("t1"),
                registry_auth: None,
                runtime: None,
            }],
            ..Default::default()
        })
        .unwrap();
    eventually("the task reported running", Duration::from_secs(10), || {
        fake.reports.lock().unwrap().iter().any(|(n, u)| {
            n == "worker1" && u.task_id == "t1" && u.status.state == TaskState::Running
        })
    })
    .await;
    assert_eq!(
        fake.registered.lock().unwrap()[0],
        ("worker1".to_string(), worker_server.addr.clone())
    );

    // The manager reads the task's output from the worker.
    assert!(rt.emit("t1", LogStream::Stdout, "hello from t1"));
    assert!(rt.emit("t1", LogStream::Stderr, "warning from t1"));
    let m1_client = NodeClient::connect_with(
        &worker_server.addr,
        pki.client_config(&m1),
        ClientOptions::default().with_server_name("worker1"),
    )
    .await
    .unwrap();
    let lines: Vec<(LogStream, Vec<u8>)> = m1_client
        .task_logs("t1", &LogOptions::default())
        .await
        .unwrap()
        .map(|l| {
            let l = l.unwrap();
            (l.stream, l.line)
        })
        .collect()
        .await;
    assert_eq!(
        lines,
        vec![
            (LogStream::Stdout, b"hello from t1".to_vec()),
            (LogStream::Stderr, b"warning from t1".to_vec()),
        ]
    );
    let err = match m1_client.task_logs("t9", &LogOptions::default()).await {
        Err(e) => e,
        Ok(_) => panic!("logs of an unknown task"),
    };
    assert!(matches!(err, RpcError::NotFound(_)), "{err:?}");

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stops")
        .unwrap();
    worker_server.stop().await;
    manager.stop().await;
}

#[tokio::test]
async fn link_errors_reach_the_agent_as_failed_preconditions() {
    let pki = Pki::new("cluster-1");
    let m1 = pki.node("manager1", PeerRole::Manager);
    let server = TestServer::start(
        pki.server_config(&m1),
        pki.peer_fn(),
        Handlers::new().with_dispatcher(Arc::new(ManagerLinkHandler(Arc::new(
            FakeDispatcher::default(),
        )))),
    )
    .await;
    let stranger = pki.node("worker7", PeerRole::Worker);
    let client = NodeClient::connect(&server.addr, pki.client_config(&stranger))
        .await
        .unwrap();
    let err = client
        .register("worker1", &engine::NodeDescription::default(), "")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::FailedPrecondition("node worker7 is not part of this swarm".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn a_manager_that_stops_answering_heartbeats_loses_the_session_to_another() {
    let pki = Pki::new("cluster-1");
    let silent = Arc::new(FakeDispatcher {
        silent_heartbeats: true,
        ..FakeDispatcher::default()
    });
    let healthy = Arc::new(FakeDispatcher::default());
    let mut servers = Vec::new();
    for (name, fake) in [("manager1", &silent), ("manager2", &healthy)] {
        let node = pki.node(name, PeerRole::Manager);
        servers.push(
            TestServer::start(
                pki.server_config(&node),
                pki.peer_fn(),
                Handlers::new().with_dispatcher(Arc::new(ManagerLinkHandler(Arc::clone(fake)))),
            )
            .await,
        );
    }
    let w1 = pki.node("worker1", PeerRole::Worker);
    // The silent manager comes first, so the session starts there; requests would otherwise
    // wait out this (long) request timeout.
    let link = Arc::new(RemoteManagerLink::with_options(
        servers.iter().map(|s| s.addr.clone()).collect(),
        pki.client_config(&w1),
        ClientOptions::default().with_request_timeout(Some(Duration::from_secs(600))),
    ));
    let cfg = WorkerConfig {
        node_id: "worker1".into(),
        addr: "10.0.0.9:2377".into(),
        description: engine::NodeDescription::default(),
        default_runtime: "mock".into(),
    };
    let runtimes: HashMap<String, Arc<dyn Runtime>> = HashMap::from([(
        "mock".to_string(),
        Arc::new(MockRuntime::new()) as Arc<dyn Runtime>,
    )]);
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(Worker::new(cfg, link.clone(), runtimes).run(stop_rx));

    eventually(
        "a session with the first manager",
        Duration::from_secs(10),
        || !silent.registered.lock().unwrap().is_empty(),
    )
    .await;
    eventually(
        "the worker registered with the other manager",
        Duration::from_secs(20),
        || !healthy.registered.lock().unwrap().is_empty(),
    )
    .await;
    assert_eq!(link.current_manager(), Some(servers[1].addr.clone()));

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stops")
        .unwrap();
    for s in servers {
        s.stop().await;
    }
}
