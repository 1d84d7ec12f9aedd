//! The node-to-node protocol over real mutual TLS on loopback: identities and roles, the
//! Dispatcher session, Raft transport, request forwarding, logs, failover and shutdown.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::{bootstrap_client_config, closed_port, eventually, Pki, TestServer};
use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_agent::runtime::{LogLine, LogOptions, LogStream};
use shoal_agent::worker::ManagerLink;
use shoal_api::dispatch::{Assignment, AssignmentSet, StatusUpdate};
use shoal_api::{engine, Task, TaskState, TaskStatus};
use shoal_raft::{RaftTransport, RpcKind, TransportError};
use shoal_rpc::{
    fetch_root_ca, BodyStream, CaHandler, ClientOptions, ControlHandler, DispatcherHandler,
    GrpcRaftTransport, Handlers, IssueRequest, IssuedCertificate, LogsHandler, ManagerMember,
    NodeClient, Peer, PeerRole, RaftHandler, RemoteManagerLink, RpcError,
};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// Handlers that record what they were asked.

struct TestCa {
    root_pem: String,
}

#[async_trait::async_trait]
impl CaHandler for TestCa {
    async fn root_ca(&self) -> Result<String, RpcError> {
        Ok(self.root_pem.clone())
    }

    async fn issue_certificate(
        &self,
        caller: Option<&Peer>,
        req: IssueRequest,
    ) -> Result<IssuedCertificate, RpcError> {
        assert!(caller.is_none(), "the joining node is anonymous");
        assert!(
            req.remote_addr.is_some(),
            "the server fills the remote address"
        );
        let role = match req.token.as_str() {
            "SWMTKN-worker" => PeerRole::Worker,
            "SWMTKN-manager" => PeerRole::Manager,
            _ => {
                return Err(RpcError::PermissionDenied(
                    "A valid join token is necessary to join this cluster".into(),
                ))
            }
        };
        Ok(IssuedCertificate {
            node_id: format!("new-{}", req.hostname),
            cert_pem: format!("CERT FOR {}", req.csr_pem),
            root_pem: self.root_pem.clone(),
            role,
            manager_addrs: vec!["10.0.0.1:2377".into()],
            cluster_id: "cluster-1".into(),
        })
    }

    async fn renew_certificate(&self, caller: &Peer, csr_pem: String) -> Result<String, RpcError> {
        Ok(format!("RENEWED {} {}", caller.node_id, csr_pem))
    }
}

#[derive(Default)]
struct TestDispatcher {
    calls: Mutex<Vec<(String, String)>>,
    reports: Mutex<Vec<(String, Vec<StatusUpdate>)>>,
    /// Each Assignments call takes the next receiver; sets sent on it are streamed.
    streams: Mutex<Vec<mpsc::UnboundedReceiver<AssignmentSet>>>,
    /// What `manager_addrs` answers.
    managers: Mutex<Vec<String>>,
    /// What `node_role` answers.
    role: Mutex<Option<PeerRole>>,
}

impl TestDispatcher {
    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }
    fn record(&self, what: &str, node_id: &str) {
        self.calls
            .lock()
            .unwrap()
            .push((what.to_string(), node_id.to_string()));
    }
    fn add_stream(&self) -> mpsc::UnboundedSender<AssignmentSet> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams.lock().unwrap().push(rx);
        tx
    }
}

#[async_trait::async_trait]
impl DispatcherHandler for TestDispatcher {
    async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, RpcError> {
        assert_eq!(description.hostname.as_deref(), Some("host-1"));
        assert_eq!(addr, "192.0.2.7:2377");
        self.record("register", node_id);
        Ok(Duration::from_millis(5000))
    }

    async fn heartbeat(&self, node_id: &str) -> Result<Duration, RpcError> {
        self.record("heartbeat", node_id);
        Ok(Duration::from_millis(4000))
    }

    async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<BoxStream<'static, AssignmentSet>, RpcError> {
        self.record("assignments", node_id);
        let rx = self.streams.lock().unwrap().pop();
        match rx {
            Some(rx) => Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()),
            None => Ok(futures::stream::pending().boxed()),
        }
    }

    async fn report(&self, node_id: &str, updates: Vec<StatusUpdate>) -> Result<(), RpcError> {
        self.record("report", node_id);
        self.reports
            .lock()
            .unwrap()
            .push((node_id.to_string(), updates));
        Ok(())
    }

    fn manager_addrs(&self) -> Vec<String> {
        self.managers.lock().unwrap().clone()
    }

    fn node_role(&self, _node_id: &str) -> Option<PeerRole> {
        *self.role.lock().unwrap()
    }
}

#[derive(Default)]
struct TestRaft {
    added: Mutex<Vec<(String, ManagerMember)>>,
    /// When set, AddManager answers NotLeader with this address.
    leader_elsewhere: Option<String>,
}

#[async_trait::async_trait]
impl RaftHandler for TestRaft {
    async fn call(&self, kind: RpcKind, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let mut out = vec![kind.code()];
        out.extend(payload.iter().rev());
        Ok(out)
    }

    async fn add_manager(&self, caller: &Peer, member: ManagerMember) -> Result<(), RpcError> {
        if let Some(addr) = &self.leader_elsewhere {
            return Err(RpcError::NotLeader {
                message: "this manager is not the leader".into(),
                leader_addr: Some(addr.clone()),
            });
        }
        self.added
            .lock()
            .unwrap()
            .push((caller.node_id.clone(), member));
        Ok(())
    }

    async fn remove_manager(&self, _caller: &Peer, _member: ManagerMember) -> Result<(), RpcError> {
        Ok(())
    }
}

struct TestControl;

#[async_trait::async_trait]
impl ControlHandler for TestControl {
    async fn forward_api(
        &self,
        caller: &Peer,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, RpcError> {
        let body = format!(
            "{} {} {} from {} auth={}",
            req.method(),
            req.uri(),
            String::from_utf8_lossy(req.body()),
            caller.node_id,
            req.headers()
                .get("x-registry-auth")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
        );
        Ok(http::Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .body(Bytes::from(body))
            .unwrap())
    }

    async fn forward_api_stream(
        &self,
        _caller: &Peer,
        _req: http::Request<Bytes>,
    ) -> Result<http::Response<BodyStream>, RpcError> {
        let chunks: BodyStream = futures::stream::iter(
            ["one ", "two ", "three"].map(|c| Ok(Bytes::from_static(c.as_bytes()))),
        )
        .boxed();
        Ok(http::Response::builder()
            .status(200)
            .header("content-type", "application/vnd.docker.multiplexed-stream")
            .body(chunks)
            .unwrap())
    }
}

struct TestLogs;

fn ts(n: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_nanos(1_700_000_000_000_000_000 + n)
}

#[async_trait::async_trait]
impl LogsHandler for TestLogs {
    async fn task_logs(
        &self,
        caller: &Peer,
        task_id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, RpcError> {
        assert_eq!(caller.role, PeerRole::Manager);
        if task_id != "task-1" {
            return Err(RpcError::NotFound(format!("no such task: {task_id}")));
        }
        let mut lines: Vec<LogLine> = (0..5)
            .map(|i| LogLine {
                timestamp: ts(i),
                stream: if i % 2 == 0 {
                    LogStream::Stdout
                } else {
                    LogStream::Stderr
                },
                line: format!("line {i}").into_bytes(),
            })
            .collect();
        if let Some(since) = opts.since {
            lines.retain(|l| l.timestamp >= since);
        }
        if let Some(n) = opts.tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        let s = futures::stream::iter(lines);
        Ok(if opts.follow {
            s.chain(futures::stream::pending()).boxed()
        } else {
            s.boxed()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// A cluster: one PKI, a manager serving everything, a worker and a second manager as clients.

struct Cluster {
    pki: Pki,
    server: TestServer,
    dispatcher: Arc<TestDispatcher>,
    raft: Arc<TestRaft>,
}

impl Cluster {
    async fn start() -> Cluster {
        let pki = Pki::new("cluster-1");
        let m1 = pki.node("manager1", PeerRole::Manager);
        let dispatcher = Arc::new(TestDispatcher::default());
        let raft = Arc::new(TestRaft::default());
        let handlers = Handlers::new()
            .with_ca(Arc::new(TestCa {
                root_pem: pki.root_pem.clone(),
            }))
            .with_dispatcher(dispatcher.clone())
            .with_raft(raft.clone())
            .with_control(Arc::new(TestControl))
            .with_logs(Arc::new(TestLogs));
        let server = TestServer::start(pki.server_config(&m1), pki.peer_fn(), handlers).await;
        Cluster {
            pki,
            server,
            dispatcher,
            raft,
        }
    }

    async fn client(&self, node_id: &str, role: PeerRole) -> NodeClient {
        let cert = self.pki.node(node_id, role);
        NodeClient::connect(&self.server.addr, self.pki.client_config(&cert))
            .await
            .unwrap()
    }

    async fn anonymous(&self) -> NodeClient {
        NodeClient::connect(&self.server.addr, self.pki.anonymous_client_config())
            .await
            .unwrap()
    }
}

fn description() -> engine::NodeDescription {
    engine::NodeDescription {
        hostname: Some("host-1".into()),
        ..Default::default()
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

fn set_of(ids: &[&str]) -> AssignmentSet {
    AssignmentSet {
        tasks: ids
            .iter()
            .map(|id| Assignment {
                task: task(id),
                registry_auth: None,
                runtime: None,
            })
            .collect(),
        ..Default::default()
    }
}

fn api_request(method: &str, path: &str, body: &'static str) -> http::Request<Bytes> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("x-registry-auth", "secret")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn anonymous_peer_may_join_but_not_use_the_dispatcher() {
    let c = Cluster::start().await;
    let anon = c.anonymous().await;

    assert_eq!(anon.get_root_ca().await.unwrap(), c.pki.root_pem);

    let err = anon.heartbeat("worker1").await.unwrap_err();
    assert!(matches!(err, RpcError::Unauthenticated(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("Dispatcher.Heartbeat needs a node certificate"),
        "{err}"
    );
    let err = anon
        .raft_call(RpcKind::Vote, vec![1], None)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Unauthenticated(_)), "{err:?}");
    let err = anon.renew_certificate("csr").await.unwrap_err();
    assert!(matches!(err, RpcError::Unauthenticated(_)), "{err:?}");

    // Joining: a wrong token is refused with the handler's message, a right one answered.
    let mut req = IssueRequest {
        csr_pem: "CSR".into(),
        token: "SWMTKN-wrong".into(),
        hostname: "host-9".into(),
        ..Default::default()
    };
    let err = anon.issue_certificate(req.clone()).await.unwrap_err();
    assert_eq!(
        err,
        RpcError::PermissionDenied("A valid join token is necessary to join this cluster".into())
    );
    req.token = "SWMTKN-manager".into();
    let issued = anon.issue_certificate(req).await.unwrap();
    assert_eq!(issued.node_id, "new-host-9");
    assert_eq!(issued.role, PeerRole::Manager);
    assert_eq!(issued.cert_pem, "CERT FOR CSR");
    assert_eq!(issued.manager_addrs, vec!["10.0.0.1:2377".to_string()]);
    assert_eq!(issued.cluster_id, "cluster-1");

    // Before it trusts anything, a joining node fetches the root with a non-verifying config.
    let root = fetch_root_ca(&c.server.addr, bootstrap_client_config())
        .await
        .unwrap();
    assert_eq!(root, c.pki.root_pem);

    assert!(c.dispatcher.calls().is_empty());
    c.server.stop().await;
}

#[tokio::test]
async fn workers_may_not_call_manager_services() {
    let c = Cluster::start().await;
    let worker = c.client("worker1", PeerRole::Worker).await;

    let err = worker
        .raft_call(RpcKind::AppendEntries, vec![1, 2, 3], None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::PermissionDenied(
            "node worker1 is a worker and may not call Raft.Call: the Raft service is for \
             managers only"
                .into()
        )
    );
    let err = worker
        .forward_api(api_request("POST", "/services/create", "{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::PermissionDenied(_)), "{err:?}");
    assert!(
        err.to_string().contains("may not call Control.ForwardApi"),
        "{err}"
    );
    let err = match worker
        .forward_api_stream(api_request("GET", "/events", ""))
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("a worker forwarded a request"),
    };
    assert!(matches!(err, RpcError::PermissionDenied(_)), "{err:?}");
    let err = worker
        .add_manager(&ManagerMember {
            node_id: "worker1".into(),
            raft_id: 9,
            addr: "127.0.0.1:1".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::PermissionDenied(_)), "{err:?}");
    let err = match worker.task_logs("task-1", &LogOptions::default()).await {
        Err(e) => e,
        Ok(_) => panic!("a worker read logs"),
    };
    assert!(matches!(err, RpcError::PermissionDenied(_)), "{err:?}");

    // A worker may renew its own certificate and use the dispatcher.
    assert_eq!(
        worker.renew_certificate("CSR2").await.unwrap(),
        "RENEWED worker1 CSR2"
    );
    assert_eq!(
        worker.heartbeat("worker1").await.unwrap(),
        Duration::from_millis(4000)
    );
    c.server.stop().await;
}

#[tokio::test]
async fn managers_may_call_everything() {
    let c = Cluster::start().await;
    let m2 = c.client("manager2", PeerRole::Manager).await;

    let reply = m2
        .raft_call(RpcKind::Vote, vec![1, 2, 3], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(reply, vec![RpcKind::Vote.code(), 3, 2, 1]);

    let resp = m2
        .forward_api(api_request(
            "POST",
            "/v1.51/services/create?x=1",
            "{\"a\":1}",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.body().as_ref(),
        b"POST /v1.51/services/create?x=1 {\"a\":1} from manager2 auth=secret"
    );

    let resp = m2
        .forward_api_stream(api_request("GET", "/v1.51/services/x/logs?follow=1", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let chunks: Vec<Bytes> = resp
        .into_body()
        .map(|c| c.unwrap())
        .collect::<Vec<_>>()
        .await;
    assert_eq!(chunks.concat(), b"one two three");

    m2.add_manager(&ManagerMember {
        node_id: "manager2".into(),
        raft_id: 2,
        addr: "127.0.0.1:2377".into(),
    })
    .await
    .unwrap();
    // A manager adds itself only.
    let err = m2
        .add_manager(&ManagerMember {
            node_id: "manager3".into(),
            raft_id: 3,
            addr: "127.0.0.1:2378".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::PermissionDenied(_)), "{err:?}");
    let added = c.raft.added.lock().unwrap().clone();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].0, "manager2");
    assert_eq!(added[0].1.raft_id, 2);
    m2.remove_manager("manager3", 3).await.unwrap();
    c.server.stop().await;
}

#[tokio::test]
async fn not_leader_carries_the_leader_address() {
    let pki = Pki::new("c");
    let m1 = pki.node("manager1", PeerRole::Manager);
    let raft = Arc::new(TestRaft {
        leader_elsewhere: Some("10.1.2.3:2377".into()),
        ..TestRaft::default()
    });
    let server = TestServer::start(
        pki.server_config(&m1),
        pki.peer_fn(),
        Handlers::new().with_raft(raft),
    )
    .await;
    let m2 = pki.node("manager2", PeerRole::Manager);
    let client = NodeClient::connect(&server.addr, pki.client_config(&m2))
        .await
        .unwrap();
    let err = client
        .add_manager(&ManagerMember {
            node_id: "manager2".into(),
            raft_id: 2,
            addr: "127.0.0.1:9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::NotLeader {
            message: "this manager is not the leader".into(),
            leader_addr: Some("10.1.2.3:2377".into()),
        }
    );
    // Services without a handler say so.
    let err = client.heartbeat("manager2").await.unwrap_err();
    assert!(matches!(err, RpcError::Unimplemented(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("does not serve the Dispatcher service"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn dispatcher_acts_for_the_certificate_not_the_request() {
    let c = Cluster::start().await;
    let worker = c.client("worker1", PeerRole::Worker).await;

    let period = worker
        .register("someone-else", &description(), "192.0.2.7:2377")
        .await
        .unwrap();
    assert_eq!(period, Duration::from_secs(5));
    worker.heartbeat("someone-else").await.unwrap();
    let update = StatusUpdate {
        task_id: "t1".into(),
        status: TaskStatus::new(TaskState::Running, "started"),
    };
    worker
        .report_status("someone-else", std::slice::from_ref(&update))
        .await
        .unwrap();
    let _stream = worker.assignments("someone-else").await.unwrap();

    let calls = c.dispatcher.calls();
    assert_eq!(
        calls,
        ["register", "heartbeat", "report", "assignments"]
            .map(|w| (w.to_string(), "worker1".to_string()))
            .to_vec()
    );
    let reports = c.dispatcher.reports.lock().unwrap().clone();
    assert_eq!(reports, vec![("worker1".to_string(), vec![update])]);
    c.server.stop().await;
}

#[tokio::test]
async fn certificates_from_another_ca_fail_the_handshake() {
    let c = Cluster::start().await;
    let rogue_pki = Pki::new("rogue");

    // A client whose certificate another CA signed: refused before any handler runs (with
    // TLS 1.3 the client learns it on its first read, so either step may report it).
    let rogue = rogue_pki.node("worker1", PeerRole::Manager);
    let rogue_cfg = rogue_pki.client_config_trusting(&rogue, &c.pki);
    let outcome = match NodeClient::connect(&c.server.addr, rogue_cfg).await {
        Err(e) => Err(e),
        Ok(client) => client.heartbeat("worker1").await.map(|_| ()),
    };
    let err = outcome.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(err.to_string().contains("UnknownCA"), "{err}");

    // A server whose certificate another CA signed: the client refuses to connect.
    let rogue_server_cert = rogue_pki.node("manager9", PeerRole::Manager);
    let rogue_server = TestServer::start(
        rogue_pki.server_config(&rogue_server_cert),
        rogue_pki.peer_fn(),
        Handlers::new().with_ca(Arc::new(TestCa {
            root_pem: "ROGUE".into(),
        })),
    )
    .await;
    let honest = c.pki.node("worker2", PeerRole::Worker);
    let err = NodeClient::connect(&rogue_server.addr, c.pki.client_config(&honest))
        .await
        .unwrap_err();
    match &err {
        RpcError::Connect { addr, reason } => {
            assert_eq!(addr, &rogue_server.addr);
            assert!(reason.to_lowercase().contains("certificate"), "{reason}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }

    assert!(c.dispatcher.calls().is_empty());
    rogue_server.stop().await;
    c.server.stop().await;
}

#[tokio::test]
async fn assignments_stream_delivers_every_set_in_order() {
    let c = Cluster::start().await;
    let tx = c.dispatcher.add_stream();
    let worker = c.client("worker1", PeerRole::Worker).await;
    let mut stream = worker.assignments("worker1").await.unwrap();

    let sets = [
        set_of(&[]),
        set_of(&["t1"]),
        set_of(&["t1", "t2"]),
        set_of(&["t2"]),
    ];
    for s in &sets {
        tx.send(s.clone()).unwrap();
    }
    for want in &sets {
        let got = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a set in time")
            .expect("stream open")
            .expect("no error");
        assert_eq!(&got, want);
    }
    // The dispatcher ends the stream: so does the client's.
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none());
    c.server.stop().await;
}

#[tokio::test]
async fn logs_stream_from_the_node_running_the_task() {
    // A worker node serves Logs only; the manager calls it.
    let pki = Pki::new("c");
    let w1 = pki.node("worker1", PeerRole::Worker);
    let server = TestServer::start(
        pki.server_config(&w1),
        pki.peer_fn(),
        Handlers::new().with_logs(Arc::new(TestLogs)),
    )
    .await;
    let m1 = pki.node("manager1", PeerRole::Manager);
    let opts = ClientOptions::default().with_server_name("swarm-worker");
    let client = NodeClient::connect_with(&server.addr, pki.client_config(&m1), opts)
        .await
        .unwrap();

    let lines: Vec<LogLine> = client
        .task_logs("task-1", &LogOptions::default())
        .await
        .unwrap()
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0].line, b"line 0");
    assert_eq!(lines[0].stream, LogStream::Stdout);
    assert_eq!(lines[1].stream, LogStream::Stderr);
    assert_eq!(lines[4].timestamp, ts(4));

    // Options travel: tail and since.
    let opts = LogOptions {
        tail: Some(2),
        ..LogOptions::default()
    };
    let tail: Vec<Vec<u8>> = client
        .task_logs("task-1", &opts)
        .await
        .unwrap()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(tail, vec![b"line 3".to_vec(), b"line 4".to_vec()]);
    let opts = LogOptions {
        since: Some(ts(3)),
        ..LogOptions::default()
    };
    let since = client
        .task_logs("task-1", &opts)
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(since.len(), 2);

    // Follow: lines arrive, the stream stays open.
    let opts = LogOptions {
        follow: true,
        ..LogOptions::default()
    };
    let mut follow = client.task_logs("task-1", &opts).await.unwrap();
    for _ in 0..5 {
        follow.next().await.unwrap().unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), follow.next())
            .await
            .is_err(),
        "a followed stream stays open"
    );

    // Unknown task.
    let err = match client.task_logs("nope", &LogOptions::default()).await {
        Err(e) => e,
        Ok(_) => panic!("logs of an unknown task"),
    };
    assert_eq!(err, RpcError::NotFound("no such task: nope".into()));

    // Shutdown ends the followed stream instead of waiting for it.
    let took = server.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .expect("the followed stream ends on server shutdown");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}

#[tokio::test]
async fn raft_transport_round_trips_and_reports_unreachable() {
    let c = Cluster::start().await;
    let m2 = c.pki.node("manager2", PeerRole::Manager);
    let transport = GrpcRaftTransport::new(c.pki.client_config(&m2));

    for i in 0..3u8 {
        let reply = transport
            .send(
                1,
                &c.server.addr,
                RpcKind::AppendEntries,
                vec![i, 10, 20],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(reply, vec![RpcKind::AppendEntries.code(), 20, 10, i]);
    }

    let dead = closed_port().await;
    let err = transport
        .send(2, &dead, RpcKind::Vote, vec![1], Duration::from_secs(2))
        .await
        .unwrap_err();
    match err {
        TransportError::Unreachable { target, reason } => {
            assert_eq!(target, 2);
            assert!(reason.contains(&dead), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // A worker's certificate cannot carry raft traffic.
    let w = c.pki.node("worker1", PeerRole::Worker);
    let as_worker = GrpcRaftTransport::new(c.pki.client_config(&w));
    let err = as_worker
        .send(
            1,
            &c.server.addr,
            RpcKind::Vote,
            vec![1],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Failed { reason, .. } if reason.contains("is a worker")),
        "{err:?}"
    );

    // The leader goes away and comes back on the same port: the transport reconnects.
    let addr = c.server.addr.clone();
    let m1 = c.pki.node("manager1", PeerRole::Manager);
    let raft = c.raft.clone();
    c.server.stop().await;
    let err = transport
        .send(1, &addr, RpcKind::Vote, vec![1], Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let again = TestServer::start_on(
        listener,
        c.pki.server_config(&m1),
        c.pki.peer_fn(),
        Handlers::new().with_raft(raft),
    );
    let reply = transport
        .send(1, &addr, RpcKind::Vote, vec![7], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, vec![RpcKind::Vote.code(), 7]);
    again.stop().await;
}

#[tokio::test]
async fn remote_manager_link_fails_over_to_a_live_manager() {
    let c = Cluster::start().await;
    let w = c.pki.node("worker1", PeerRole::Worker);
    let dead = closed_port().await;
    let link = RemoteManagerLink::new(
        vec![dead.clone(), c.server.addr.clone()],
        c.pki.client_config(&w),
    );
    assert_eq!(link.current_manager(), None);

    let period = link
        .register("worker1", description(), "192.0.2.7:2377")
        .await
        .unwrap();
    assert_eq!(period, Duration::from_secs(5));
    assert_eq!(
        link.current_manager().as_deref(),
        Some(c.server.addr.as_str())
    );
    link.heartbeat("worker1").await.unwrap();
    link.report(
        "worker1",
        vec![StatusUpdate {
            task_id: "t1".into(),
            status: TaskStatus::new(TaskState::Running, "started"),
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        c.dispatcher
            .calls()
            .iter()
            .map(|(w, _)| w.as_str())
            .collect::<Vec<_>>(),
        vec!["register", "heartbeat", "report"]
    );

    // Only dead managers: the session is gone, so heartbeats fail at once (the worker
    // registers again), and registering fails with an error naming each manager.
    link.set_managers(vec![dead.clone()]);
    assert_eq!(link.current_manager(), None);
    let err = link.heartbeat("worker1").await.unwrap_err();
    assert!(err.0.contains("no session"), "{err}");
    let err = link
        .register("worker1", description(), "192.0.2.7:2377")
        .await
        .unwrap_err();
    assert!(err.0.contains(&dead), "{err}");
    c.server.stop().await;
}

#[tokio::test]
async fn the_link_learns_the_managers_from_register_and_heartbeat_answers() {
    let c = Cluster::start().await;
    let w = c.pki.node("worker1", PeerRole::Worker);
    let link = RemoteManagerLink::new(vec![c.server.addr.clone()], c.pki.client_config(&w));
    // Nothing said: the list stays.
    link.register("worker1", description(), "192.0.2.7:2377")
        .await
        .unwrap();
    assert_eq!(link.managers(), vec![c.server.addr.clone()]);
    // A new manager appears in the heartbeat answer: adopted; the connection is kept.
    *c.dispatcher.managers.lock().unwrap() =
        vec!["192.0.2.99:2377".to_string(), c.server.addr.clone()];
    link.heartbeat("worker1").await.unwrap();
    let mut want = vec!["192.0.2.99:2377".to_string(), c.server.addr.clone()];
    want.sort();
    assert_eq!(link.managers(), want);
    assert_eq!(
        link.current_manager().as_deref(),
        Some(c.server.addr.as_str())
    );
    let client = c.client("worker1", PeerRole::Worker).await;
    let session = client.heartbeat_info("worker1").await.unwrap();
    assert_eq!(session.period, Duration::from_secs(4));
    assert_eq!(session.managers.len(), 2);

    // The recorded role: nothing said keeps the last known; a change is published.
    let mut role = link.role_watch();
    assert_eq!(*role.borrow_and_update(), None);
    assert_eq!(client.heartbeat_info("worker1").await.unwrap().role, None);
    *c.dispatcher.role.lock().unwrap() = Some(PeerRole::Worker);
    link.heartbeat("worker1").await.unwrap();
    assert!(role.has_changed().unwrap());
    assert_eq!(*role.borrow_and_update(), Some(PeerRole::Worker));
    *c.dispatcher.role.lock().unwrap() = Some(PeerRole::Manager);
    assert_eq!(
        client.heartbeat_info("worker1").await.unwrap().role,
        Some(PeerRole::Manager)
    );
    link.heartbeat("worker1").await.unwrap();
    assert_eq!(*role.borrow_and_update(), Some(PeerRole::Manager));
    *c.dispatcher.role.lock().unwrap() = None;
    link.heartbeat("worker1").await.unwrap();
    assert!(!role.has_changed().unwrap());
    assert_eq!(*link.role_watch().borrow(), Some(PeerRole::Manager));
    c.server.stop().await;
}

#[tokio::test]
async fn remote_manager_link_moves_on_when_its_manager_goes_away() {
    // Two managers; the worker's stream is on the first; it shuts down; the stream ends and the
    // next registration lands on the second.
    let pki = Pki::new("c");
    let mut servers = Vec::new();
    let mut dispatchers = Vec::new();
    for id in ["manager1", "manager2"] {
        let cert = pki.node(id, PeerRole::Manager);
        let d = Arc::new(TestDispatcher::default());
        let server = TestServer::start(
            pki.server_config(&cert),
            pki.peer_fn(),
            Handlers::new().with_dispatcher(d.clone()),
        )
        .await;
        servers.push(server);
        dispatchers.push(d);
    }
    let tx1 = dispatchers[0].add_stream();
    let tx2 = dispatchers[1].add_stream();
    let w = pki.node("worker1", PeerRole::Worker);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let link = RemoteManagerLink::new(addrs.clone(), pki.client_config(&w));

    link.register("worker1", description(), "192.0.2.7:2377")
        .await
        .unwrap();
    assert_eq!(link.current_manager().as_deref(), Some(addrs[0].as_str()));
    let mut stream = link.assignments("worker1").await.unwrap();
    let first_set = set_of(&["t1"]);
    tx1.send(first_set.clone()).unwrap();
    assert_eq!(stream.next().await.unwrap(), first_set);

    let first = servers.remove(0);
    let took = first.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends when its manager shuts down");
    assert!(end.is_none());
    assert_eq!(link.current_manager(), None);

    // What the worker does next: register again, open a new stream.
    link.register("worker1", description(), "192.0.2.7:2377")
        .await
        .unwrap();
    assert_eq!(link.current_manager().as_deref(), Some(addrs[1].as_str()));
    let mut stream = link.assignments("worker1").await.unwrap();
    let second_set = set_of(&["t1", "t2"]);
    tx2.send(second_set.clone()).unwrap();
    assert_eq!(stream.next().await.unwrap(), second_set);
    eventually(
        "the second manager saw the session",
        Duration::from_secs(1),
        || dispatchers[1].calls().len() == 2,
    )
    .await;
    servers.remove(0).stop().await;
}

#[tokio::test]
async fn a_bad_address_or_server_name_is_an_invalid_argument() {
    let pki = Pki::new("c");
    let w = pki.node("worker1", PeerRole::Worker);
    let err = NodeClient::connect("not an address", pki.client_config(&w))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::InvalidArgument(_)), "{err:?}");
    let opts = ClientOptions::default().with_server_name("bad name!");
    let err = NodeClient::connect_with("127.0.0.1:1", pki.client_config(&w), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::InvalidArgument(_)), "{err:?}");
    let err = NodeClient::connect(&closed_port().await, pki.client_config(&w))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Connect { .. }), "{err:?}");
}
