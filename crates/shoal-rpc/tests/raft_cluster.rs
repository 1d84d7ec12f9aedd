//! Three real `shoal_raft::RaftNode`s talking through `GrpcRaftTransport` and the `Raft`
//! service over mutual TLS on loopback: they elect a leader, replicate writes, and a follower's
//! proposal is refused with the leader's address.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Pki, TestServer};
use shoal_raft::openraft::BasicNode;
use shoal_raft::{RaftConfig, RaftError, RaftNode, RaftRole, RpcKind, StateMachineTarget};
use shoal_rpc::{
    GrpcRaftTransport, Handlers, ManagerMember, Peer, PeerRole, RaftHandler, RpcError,
};
use tokio::net::TcpListener;

#[derive(Default)]
struct ListTarget(Mutex<Vec<Vec<u8>>>);

impl ListTarget {
    fn items(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
}

impl StateMachineTarget for ListTarget {
    fn apply(&self, _index: u64, payload: &[u8]) -> Result<(), String> {
        self.0.lock().unwrap().push(payload.to_vec());
        Ok(())
    }
    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.0.lock().unwrap()).unwrap()
    }
    fn restore(&self, _index: u64, data: &[u8]) -> Result<(), String> {
        *self.0.lock().unwrap() = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The production shape of a Raft handler: bytes in, `RaftNode::handle_rpc`, bytes out.
struct NodeHandler(RaftNode);

#[async_trait::async_trait]
impl RaftHandler for NodeHandler {
    async fn call(&self, kind: RpcKind, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        Ok(self.0.handle_rpc(kind, &payload).await?)
    }
    async fn add_manager(&self, _caller: &Peer, _m: ManagerMember) -> Result<(), RpcError> {
        Err(RpcError::Unimplemented("not in this test".into()))
    }
    async fn remove_manager(&self, _caller: &Peer, _m: ManagerMember) -> Result<(), RpcError> {
        Err(RpcError::Unimplemented("not in this test".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_over_mutual_tls() {
    let pki = Pki::new("cluster-1");
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();

    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let cert = pki.node(&format!("manager{id}"), PeerRole::Manager);
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(ListTarget::default());
        let transport = Arc::new(GrpcRaftTransport::new(pki.client_config(&cert)));
        let cfg = RaftConfig {
            node_id: id,
            addr: addrs[i].clone(),
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            propose_timeout_ms: 10_000,
            ..RaftConfig::default()
        };
        let node = RaftNode::open(dir.path(), cfg, target.clone(), transport)
            .await
            .unwrap();
        servers.push(TestServer::start_on(
            listener,
            pki.server_config(&cert),
            pki.peer_fn(),
            Handlers::new().with_raft(Arc::new(NodeHandler(node.clone()))),
        ));
        nodes.push((node, target));
        dirs.push(dir);
    }
    let members: BTreeMap<u64, BasicNode> = (0..3)
        .map(|i| {
            (
                i as u64 + 1,
                BasicNode {
                    addr: addrs[i].clone(),
                },
            )
        })
        .collect();
    nodes[0].0.raft().initialize(members).await.unwrap();

    let leader = nodes[0]
        .0
        .wait_leader(Duration::from_secs(20))
        .await
        .unwrap();
    let (ln, _) = &nodes[(leader - 1) as usize];
    eventually("the leader to be leader", Duration::from_secs(10), || {
        ln.metrics().role == RaftRole::Leader
    })
    .await;
    for i in 0..10u32 {
        ln.propose(format!("w{i}").into_bytes()).await.unwrap();
    }
    let want: Vec<Vec<u8>> = (0..10u32).map(|i| format!("w{i}").into_bytes()).collect();
    for (node, target) in &nodes {
        eventually(
            "replication to every manager",
            Duration::from_secs(10),
            || target.items() == want,
        )
        .await;
        assert_eq!(node.metrics().voters, vec![1, 2, 3]);
    }

    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    let err = nodes[(follower - 1) as usize]
        .0
        .propose(b"nope".to_vec())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RaftError::NotLeader {
            leader: Some(leader),
            leader_addr: Some(addrs[(leader - 1) as usize].clone()),
        }
    );

    for (node, _) in &nodes {
        node.shutdown().await.unwrap();
    }
    for s in servers {
        s.stop().await;
    }
}
