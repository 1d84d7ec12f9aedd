//! Behaviour tests for shoal-raft: persistence across restarts, snapshots and log purging,
//! corrupt files, a three-node cluster over `LocalTransport`, and durability under `kill -9`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use shoal_raft::{
    LocalTransport, NoTransport, RaftConfig, RaftError, RaftNode, RaftRole, StateMachineTarget,
    DB_FILE,
};

/// A target that records every applied payload; its snapshot is the whole list.
#[derive(Default)]
struct ListTarget {
    state: Mutex<ListState>,
}

#[derive(Default, Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
struct ListState {
    items: Vec<(u64, Vec<u8>)>,
    #[serde(skip)]
    restored_at: Option<u64>,
}

impl ListTarget {
    fn items(&self) -> Vec<(u64, Vec<u8>)> {
        self.state.lock().unwrap().items.clone()
    }
    fn restored_at(&self) -> Option<u64> {
        self.state.lock().unwrap().restored_at
    }
}

impl StateMachineTarget for ListTarget {
    fn apply(&self, index: u64, payload: &[u8]) -> Result<(), String> {
        if payload == b"bad" {
            return Err("payload 'bad' is not allowed".into());
        }
        let mut st = self.state.lock().unwrap();
        if let Some((last, _)) = st.items.last() {
            assert!(index > *last, "applied out of order: {index} after {last}");
        }
        st.items.push((index, payload.to_vec()));
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.state.lock().unwrap()).unwrap()
    }

    fn restore(&self, index: u64, data: &[u8]) -> Result<(), String> {
        let mut st: ListState = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        st.restored_at = Some(index);
        *self.state.lock().unwrap() = st;
        Ok(())
    }
}

fn cfg(id: u64) -> RaftConfig {
    RaftConfig {
        node_id: id,
        addr: format!("node-{id}"),
        heartbeat_ms: 50,
        election_timeout_ms: (150, 300),
        propose_timeout_ms: 5_000,
        ..RaftConfig::default()
    }
}

async fn open_single(dir: &Path, cfg: RaftConfig) -> (RaftNode, Arc<ListTarget>) {
    let target = Arc::new(ListTarget::default());
    let node = RaftNode::open(dir, cfg, target.clone(), Arc::new(NoTransport))
        .await
        .expect("open");
    (node, target)
}

/// Poll `cond` until it holds or `timeout` passes.
async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn single_node_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (node, target) = open_single(dir.path(), cfg(1)).await;
    assert!(!node.is_initialized().await.unwrap());
    node.initialize_single().await.unwrap();
    node.initialize_single().await.unwrap(); // idempotent
    assert_eq!(node.wait_leader(Duration::from_secs(5)).await.unwrap(), 1);

    let mut last = 0;
    for i in 0..50u32 {
        let index = node.propose(i.to_le_bytes().to_vec()).await.unwrap();
        assert!(index > last);
        last = index;
        // Applied by the time propose returns.
        assert_eq!(target.items().last().map(|(ix, _)| *ix), Some(index));
    }
    let before = target.items();
    assert_eq!(before.len(), 50);
    let st = node.metrics();
    assert_eq!(st.role, RaftRole::Leader);
    assert_eq!(st.voters, vec![1]);
    assert_eq!(st.last_applied, Some(last));
    node.shutdown().await.unwrap();

    // Reopen with a fresh target: committed entries are re-applied before open returns.
    let (node, target) = open_single(dir.path(), cfg(1)).await;
    assert_eq!(target.items(), before);
    assert!(node.is_initialized().await.unwrap());
    node.initialize_single().await.unwrap(); // no-op now
    node.wait_leader(Duration::from_secs(5)).await.unwrap();
    let index = node.propose(b"after".to_vec()).await.unwrap();
    assert!(index > last);
    assert_eq!(target.items().len(), 51);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn snapshot_purges_log_and_restores_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let c = RaftConfig {
        snapshot_every: 10,
        keep_after_snapshot: 2,
        ..cfg(1)
    };
    let (node, target) = open_single(dir.path(), c.clone()).await;
    node.initialize_single().await.unwrap();
    node.wait_leader(Duration::from_secs(5)).await.unwrap();
    for i in 0..57u32 {
        node.propose(format!("item-{i}").into_bytes())
            .await
            .unwrap();
    }
    let last = node.metrics().last_applied.unwrap();
    eventually("a snapshot and a purge", Duration::from_secs(5), || {
        let m = node.metrics();
        m.snapshot.unwrap_or(0) >= 40 && m.purged.is_some()
    })
    .await;
    let m = node.metrics();
    let snap = m.snapshot.unwrap();
    let purged = m.purged.unwrap();
    assert!(purged <= snap, "purged {purged} beyond snapshot {snap}");
    assert!(
        snap - purged <= 2 + 10,
        "kept too much: purged {purged} snapshot {snap}"
    );
    let (len, first) = node.log_extent().await.unwrap();
    assert_eq!(
        first,
        Some(purged + 1),
        "the log starts right after the purge point"
    );
    assert_eq!(len, last - purged);
    let before = target.items();
    node.shutdown().await.unwrap();

    let (node, target) = open_single(dir.path(), c).await;
    let restored = target.restored_at().expect("restored from the snapshot");
    assert!(
        restored >= snap,
        "restored at {restored}, snapshot was {snap}"
    );
    assert_eq!(
        target.items(),
        before,
        "snapshot + re-applied tail = previous state"
    );
    node.wait_leader(Duration::from_secs(5)).await.unwrap();
    node.propose(b"more".to_vec()).await.unwrap();
    assert_eq!(target.items().len(), 58);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rejected_payload_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (node, target) = open_single(dir.path(), cfg(1)).await;
    node.initialize_single().await.unwrap();
    node.wait_leader(Duration::from_secs(5)).await.unwrap();
    let a = node.propose(b"a".to_vec()).await.unwrap();
    let err = node.propose(b"bad".to_vec()).await.unwrap_err();
    match &err {
        RaftError::Rejected { index, reason } => {
            assert_eq!(*index, a + 1);
            assert!(reason.contains("not allowed"));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let c = node.propose(b"c".to_vec()).await.unwrap();
    assert_eq!(c, a + 2);
    assert_eq!(target.items(), vec![(a, b"a".to_vec()), (c, b"c".to_vec())]);
    assert_eq!(node.read_barrier().await.unwrap(), c);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn corrupt_file_is_an_error_not_a_panic() {
    // Garbage where the database should be.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0x5au8; 64 * 1024]).unwrap();
    let target = Arc::new(ListTarget::default());
    let err = RaftNode::open(dir.path(), cfg(1), target, Arc::new(NoTransport))
        .await
        .err()
        .expect("a corrupt file must not open");
    assert!(matches!(err, RaftError::Storage(_)), "{err:?}");
    assert!(err.to_string().contains(DB_FILE), "{err}");

    // A real database whose header was overwritten.
    let dir = tempfile::tempdir().unwrap();
    let (node, _t) = open_single(dir.path(), cfg(1)).await;
    node.initialize_single().await.unwrap();
    node.wait_leader(Duration::from_secs(5)).await.unwrap();
    node.propose(b"x".to_vec()).await.unwrap();
    node.shutdown().await.unwrap();
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b ^= 0xa5;
    }
    std::fs::write(&path, bytes).unwrap();
    let target = Arc::new(ListTarget::default());
    let res = RaftNode::open(dir.path(), cfg(1), target, Arc::new(NoTransport)).await;
    assert!(
        matches!(res, Err(RaftError::Storage(_))),
        "header corruption must be an error"
    );
}

#[tokio::test]
async fn config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let bad = RaftConfig {
        election_timeout_ms: (300, 100),
        ..cfg(1)
    };
    let target = Arc::new(ListTarget::default());
    let err = RaftNode::open(dir.path(), bad, target, Arc::new(NoTransport))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RaftError::Config(_)), "{err:?}");
}

struct Cluster {
    net: LocalTransport,
    nodes: Vec<(RaftNode, Arc<ListTarget>)>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(n: u64, tweak: impl Fn(RaftConfig) -> RaftConfig) -> Cluster {
        let net = LocalTransport::new();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for id in 1..=n {
            let dir = tempfile::tempdir().unwrap();
            let target = Arc::new(ListTarget::default());
            let node = RaftNode::open(
                dir.path(),
                tweak(cfg(id)),
                target.clone(),
                Arc::new(net.for_node(id)),
            )
            .await
            .unwrap();
            net.register(&node);
            nodes.push((node, target));
            dirs.push(dir);
        }
        let members: std::collections::BTreeMap<u64, BasicNode> = (1..=n)
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("node-{id}"),
                    },
                )
            })
            .collect();
        nodes[0].0.raft().initialize(members).await.unwrap();
        Cluster {
            net,
            nodes,
            _dirs: dirs,
        }
    }

    fn node(&self, id: u64) -> &(RaftNode, Arc<ListTarget>) {
        &self.nodes[(id - 1) as usize]
    }

    /// Wait until every node in `ids` agrees on one leader among `ids`.
    async fn agreed_leader(&self, ids: &[u64]) -> u64 {
        let mut leader = 0;
        eventually("one agreed leader", Duration::from_secs(10), || {
            let seen: Vec<Option<u64>> = ids
                .iter()
                .map(|id| self.node(*id).0.metrics().leader)
                .collect();
            match seen[0] {
                Some(l) if ids.contains(&l) && seen.iter().all(|s| *s == Some(l)) => {
                    leader = l;
                    self.node(l).0.metrics().role == RaftRole::Leader
                }
                _ => false,
            }
        })
        .await;
        leader
    }

    async fn shutdown(self) {
        for (node, _) in &self.nodes {
            node.shutdown().await.unwrap();
        }
    }
}

#[tokio::test]
async fn three_nodes_elect_replicate_and_redirect() {
    let c = Cluster::start(3, |c| c).await;
    let leader = c.agreed_leader(&[1, 2, 3]).await;
    // Exactly one leader.
    let leaders = c
        .nodes
        .iter()
        .filter(|(n, _)| n.metrics().role == RaftRole::Leader)
        .count();
    assert_eq!(leaders, 1);

    let (ln, _) = c.node(leader);
    let mut indexes = Vec::new();
    for i in 0..20u32 {
        indexes.push(ln.propose(format!("w{i}").into_bytes()).await.unwrap());
    }
    let want = c.node(leader).1.items();
    assert_eq!(want.len(), 20);
    for (node, target) in &c.nodes {
        eventually("replication to every node", Duration::from_secs(5), || {
            target.items() == want
        })
        .await;
        assert_eq!(node.metrics().voters, vec![1, 2, 3]);
    }

    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let err = c
        .node(follower)
        .0
        .propose(b"nope".to_vec())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RaftError::NotLeader {
            leader: Some(leader),
            leader_addr: Some(format!("node-{leader}")),
        }
    );
    assert!(matches!(
        c.node(follower).0.read_barrier().await,
        Err(RaftError::NotLeader { .. })
    ));
    c.shutdown().await;
}

#[tokio::test]
async fn leader_isolation_fails_over_and_heals() {
    let c = Cluster::start(3, |c| c).await;
    let old = c.agreed_leader(&[1, 2, 3]).await;
    c.node(old).0.propose(b"before".to_vec()).await.unwrap();

    c.net.isolate(old);
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = c.agreed_leader(&rest).await;
    assert_ne!(new, old);
    let idx = c.node(new).0.propose(b"during".to_vec()).await.unwrap();
    assert!(c.node(new).0.metrics().term > 0);

    c.net.heal();
    let want = c.node(new).1.items();
    assert_eq!(want.last(), Some(&(idx, b"during".to_vec())));
    let (_, old_target) = c.node(old);
    eventually(
        "the old leader to catch up",
        Duration::from_secs(10),
        || old_target.items() == want,
    )
    .await;
    assert_eq!(c.agreed_leader(&[1, 2, 3]).await, new);
    c.shutdown().await;
}

#[tokio::test]
async fn without_quorum_a_proposal_fails_with_no_quorum() {
    let c = Cluster::start(3, |c| RaftConfig {
        propose_timeout_ms: 500,
        ..c
    })
    .await;
    let leader = c.agreed_leader(&[1, 2, 3]).await;
    for id in (1..=3).filter(|id| *id != leader) {
        c.net.isolate(id);
    }
    let err = c
        .node(leader)
        .0
        .propose(b"lost?".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err, RaftError::NoQuorum);
    assert!(err.to_string().contains("more than half of the managers"));
    c.net.heal();
    c.shutdown().await;
}

#[tokio::test]
async fn a_leader_cut_off_from_the_majority_refuses_proposals_at_once() {
    // Proposals would otherwise wait out this timeout.
    let c = Cluster::start(3, |c| RaftConfig {
        propose_timeout_ms: 600_000,
        quorum_lease_ms: 300,
        ..c
    })
    .await;
    let old = c.agreed_leader(&[1, 2, 3]).await;
    let lease = c.node(old).0.quorum_lease();
    assert!(c.node(old).0.quorum_contact(lease));
    c.node(old).0.propose(b"before".to_vec()).await.unwrap();

    c.net.isolate(old);
    eventually(
        "the cut-off leader to lose its quorum",
        Duration::from_secs(10),
        || !c.node(old).0.quorum_contact(lease),
    )
    .await;
    // Raft itself still counts it as the leader (openraft has no CheckQuorum)...
    assert_eq!(c.node(old).0.metrics().role, RaftRole::Leader);
    // ...but it refuses to propose rather than wait.
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        c.node(old).0.propose(b"lost".to_vec()),
    )
    .await
    .expect("refused without waiting out the proposal timeout");
    assert_eq!(refused, Err(RaftError::NoQuorum));

    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = c.agreed_leader(&rest).await;
    assert!(c.node(new).0.quorum_contact(lease));
    c.node(new).0.propose(b"during".to_vec()).await.unwrap();

    c.net.heal();
    assert_eq!(c.agreed_leader(&[1, 2, 3]).await, new);
    let want = c.node(new).1.items();
    eventually(
        "the old leader to catch up",
        Duration::from_secs(10),
        || c.node(old).1.items() == want,
    )
    .await;
    assert!(want.iter().all(|(_, p)| p != b"lost"), "{want:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn a_follower_forwards_proposals_and_reads_its_own_write() {
    let c = Cluster::start(3, |c| c).await;
    let leader = c.agreed_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (node, target) = c.node(follower);
    let index = node
        .propose_anywhere(b"from-a-follower".to_vec())
        .await
        .unwrap();
    // Applied here by the time the call returns.
    assert!(target
        .items()
        .iter()
        .any(|(i, p)| *i == index && p == b"from-a-follower"));
    // A refused payload reports the target's error, on the follower too.
    let err = node.propose_anywhere(b"bad".to_vec()).await.unwrap_err();
    assert!(matches!(err, RaftError::Rejected { .. }), "{err:?}");
    // The leader proposes directly.
    c.node(leader)
        .0
        .propose_anywhere(b"x".to_vec())
        .await
        .unwrap();
    // Without a majority a follower's write fails with NoQuorum.
    c.net.isolate(follower);
    let err = RaftNode::propose_anywhere(node, b"lost".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err, RaftError::NoQuorum);
    c.net.heal();
    c.shutdown().await;
}

#[tokio::test]
async fn a_new_member_is_added_and_removed() {
    let net = LocalTransport::new();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let t1 = Arc::new(ListTarget::default());
    let n1 = RaftNode::open(
        dirs[0].path(),
        cfg(1),
        t1.clone(),
        Arc::new(net.for_node(1)),
    )
    .await
    .unwrap();
    net.register(&n1);
    n1.initialize_single().await.unwrap();
    n1.wait_leader(Duration::from_secs(5)).await.unwrap();
    for i in 0..5u32 {
        n1.propose(format!("e{i}").into_bytes()).await.unwrap();
    }
    let t2 = Arc::new(ListTarget::default());
    let n2 = RaftNode::open(
        dirs[1].path(),
        cfg(2),
        t2.clone(),
        Arc::new(net.for_node(2)),
    )
    .await
    .unwrap();
    net.register(&n2);
    n1.add_voter(2, "node-2").await.unwrap();
    assert_eq!(n1.metrics().voters, vec![1, 2]);
    n1.add_voter(2, "node-2").await.unwrap(); // idempotent
    eventually("the new member to catch up", Duration::from_secs(5), || {
        t2.items().len() >= 5
    })
    .await;
    assert_eq!(n1.member_addr(2).as_deref(), Some("node-2"));
    assert!(n1.last_contact(2).is_some());
    assert_eq!(n2.leader_addr(), Some((1, "node-1".to_string())));
    n1.remove_member(2).await.unwrap();
    assert_eq!(n1.metrics().voters, vec![1]);
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test]
async fn lagging_follower_catches_up_from_a_snapshot() {
    let c = Cluster::start(3, |c| RaftConfig {
        snapshot_every: 5,
        keep_after_snapshot: 0,
        ..c
    })
    .await;
    let leader = c.agreed_leader(&[1, 2, 3]).await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    c.net.isolate(lagging);
    for i in 0..30u32 {
        c.node(leader)
            .0
            .propose(format!("s{i}").into_bytes())
            .await
            .unwrap();
    }
    eventually(
        "the leader to purge its log",
        Duration::from_secs(5),
        || c.node(leader).0.metrics().purged.unwrap_or(0) >= 20,
    )
    .await;
    c.net.heal();
    let want = c.node(leader).1.items();
    let (ln, lt) = c.node(lagging);
    eventually(
        "the follower to install the snapshot",
        Duration::from_secs(10),
        || lt.items() == want,
    )
    .await;
    assert!(
        lt.restored_at().is_some(),
        "caught up through a snapshot, not the log"
    );
    assert!(ln.metrics().snapshot.is_some());
    c.shutdown().await;
}

/// The child half of `acknowledged_writes_survive_kill_9`: proposes forever, printing each
/// acknowledged index. Does nothing when run as a normal test.
#[tokio::test]
async fn kill9_child_writer() {
    let Ok(dir) = std::env::var("SHOAL_RAFT_KILL9_DIR") else {
        return;
    };
    let (node, _t) = open_single(Path::new(&dir), cfg(1)).await;
    node.initialize_single().await.unwrap();
    node.wait_leader(Duration::from_secs(5)).await.unwrap();
    use std::io::Write;
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let index = node.propose(i.to_le_bytes().to_vec()).await.unwrap();
        writeln!(out, "ACK {index} {i}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHOAL_RAFT_KILL9_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut it = rest.split(' ').map(|s| s.parse::<u64>().unwrap());
            acked.push((it.next().unwrap(), it.next().unwrap()));
            if acked.len() >= 200 {
                break;
            }
        }
    }
    // SIGKILL: no destructors, no clean close of the redb file.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 200);

    let (node, target) = open_single(dir.path(), cfg(1)).await;
    let items = target.items();
    for (index, i) in &acked {
        assert!(
            items.contains(&(*index, i.to_le_bytes().to_vec())),
            "acknowledged write {i} at index {index} was lost"
        );
    }
    node.shutdown().await.unwrap();
}

/// A codec that can be told to fail sealing log entries: a storage error in the log, which stops
/// openraft's core (a fatal error).
#[derive(Default)]
struct FlakyCodec {
    fail: std::sync::atomic::AtomicBool,
}

impl shoal_raft::Codec for FlakyCodec {
    fn id(&self) -> &str {
        "flaky-test"
    }
    fn seal(
        &self,
        kind: shoal_raft::RecordKind,
        plain: Vec<u8>,
    ) -> Result<Vec<u8>, shoal_raft::CodecError> {
        let failing = self.fail.load(std::sync::atomic::Ordering::SeqCst);
        if failing && matches!(kind, shoal_raft::RecordKind::LogEntry { .. }) {
            return Err(shoal_raft::CodecError {
                kind,
                reason: "injected failure".into(),
            });
        }
        Ok(plain)
    }
    fn open(
        &self,
        _kind: shoal_raft::RecordKind,
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>, shoal_raft::CodecError> {
        Ok(sealed)
    }
}

/// Indexes applied, each once and in order.
fn assert_applied_once(items: &[(u64, Vec<u8>)]) {
    assert!(
        items.windows(2).all(|w| w[0].0 < w[1].0),
        "an entry was applied twice or out of order: {items:?}"
    );
}

#[tokio::test]
async fn a_core_that_stops_by_itself_is_restarted_on_the_same_handle() {
    let dir = tempfile::tempdir().unwrap();
    let codec = Arc::new(FlakyCodec::default());
    let target = Arc::new(ListTarget::default());
    let node = RaftNode::open_with_codec(
        dir.path(),
        cfg(1),
        codec.clone(),
        target.clone(),
        Arc::new(NoTransport),
    )
    .await
    .unwrap();
    node.initialize_single().await.unwrap();
    node.wait_leader(Duration::from_secs(5)).await.unwrap();
    let mut watch = node.watch();
    for i in 0..5u32 {
        node.propose(format!("a{i}").into_bytes()).await.unwrap();
    }

    // The log cannot be written: openraft's core stops with a storage error.
    codec.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = node.propose(b"lost".to_vec()).await.unwrap_err();
    assert_eq!(
        err,
        RaftError::NoQuorum,
        "an unknown outcome, not a shutdown"
    );
    eventually("a restart", Duration::from_secs(10), || {
        node.restarts() >= 1
    })
    .await;
    codec.fail.store(false, std::sync::atomic::Ordering::SeqCst);

    // The same handle works again, on a new core: it leads, takes writes, applies each once.
    node.wait_leader(Duration::from_secs(10)).await.unwrap();
    let index = node.propose(b"after".to_vec()).await.unwrap();
    let items = target.items();
    assert_eq!(items.last(), Some(&(index, b"after".to_vec())));
    assert_eq!(items.len(), 6, "{items:?}");
    assert_applied_once(&items);
    assert_eq!(node.metrics().role, RaftRole::Leader);
    // The node's watch never showed the stop.
    assert!(watch.borrow_and_update().running_state.is_ok());
    node.shutdown().await.unwrap();
    assert!(watch.borrow_and_update().running_state.is_err());
    assert!(matches!(
        node.propose(b"x".to_vec()).await,
        Err(RaftError::Shutdown)
    ));

    // Everything acknowledged is in the log: a fresh open replays it.
    let again = Arc::new(ListTarget::default());
    let node = RaftNode::open_with_codec(
        dir.path(),
        cfg(1),
        Arc::new(FlakyCodec::default()),
        again.clone(),
        Arc::new(NoTransport),
    )
    .await
    .unwrap();
    let reopened = again.items();
    assert_eq!(reopened, items);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_follower_whose_core_stops_restarts_and_catches_up() {
    let net = LocalTransport::new();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    let codecs: Vec<Arc<FlakyCodec>> = (0..3).map(|_| Arc::default()).collect();
    for id in 1..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(ListTarget::default());
        let node = RaftNode::open_with_codec(
            dir.path(),
            cfg(id),
            codecs[(id - 1) as usize].clone(),
            target.clone(),
            Arc::new(net.for_node(id)),
        )
        .await
        .unwrap();
        net.register(&node);
        nodes.push((node, target));
        dirs.push(dir);
    }
    let members: std::collections::BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| {
            let addr = format!("node-{id}");
            (id, BasicNode { addr })
        })
        .collect();
    nodes[0].0.raft().initialize(members).await.unwrap();
    let leader = nodes[0]
        .0
        .wait_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    let (lnode, ltarget) = &nodes[(leader - 1) as usize];
    let (fnode, ftarget) = &nodes[(follower - 1) as usize];
    lnode.propose(b"one".to_vec()).await.unwrap();

    codecs[(follower - 1) as usize]
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The next append reaching the follower stops its core; the other two still commit.
    lnode.propose(b"two".to_vec()).await.unwrap();
    eventually("the follower to restart", Duration::from_secs(10), || {
        fnode.restarts() >= 1
    })
    .await;
    codecs[(follower - 1) as usize]
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    lnode.propose(b"three".to_vec()).await.unwrap();
    eventually("the follower to catch up", Duration::from_secs(10), || {
        ftarget.items() == ltarget.items()
    })
    .await;
    assert_applied_once(&ftarget.items());
    assert_eq!(ftarget.items().len(), 3);
    // It forwards writes again, through the transport that still knows it.
    fnode.propose_anywhere(b"four".to_vec()).await.unwrap();
    assert_eq!(ftarget.items().len(), 4);
    for (n, _) in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// A transport that holds `AppendEntries` requests larger than `threshold` bytes for `delay`
/// (a big append on a busy link), and everything else not at all.
struct SlowBigAppends {
    inner: LocalTransport,
    threshold: usize,
    delay: Duration,
}

#[async_trait::async_trait]
impl shoal_raft::RaftTransport for SlowBigAppends {
    async fn send(
        &self,
        target: u64,
        addr: &str,
        kind: shoal_raft::RpcKind,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, shoal_raft::TransportError> {
        if kind == shoal_raft::RpcKind::AppendEntries && request.len() > self.threshold {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.send(target, addr, kind, request, timeout).await
    }
}

#[tokio::test(start_paused = true)]
async fn appends_slower_than_a_heartbeat_still_commit() {
    let net = LocalTransport::new();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for id in 1..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(ListTarget::default());
        let transport = SlowBigAppends {
            inner: net.for_node(id),
            threshold: 16 * 1024,
            // Twenty heartbeat intervals (openraft alone gives an append one), and longer than
            // a follower waits for its leader (the lease, 300 ms, plus 150-300 ms).
            delay: Duration::from_millis(1000),
        };
        let node = RaftNode::open(dir.path(), cfg(id), target.clone(), Arc::new(transport))
            .await
            .unwrap();
        net.register(&node);
        nodes.push((node, target));
        dirs.push(dir);
    }
    let members: std::collections::BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| {
            let addr = format!("node-{id}");
            (id, BasicNode { addr })
        })
        .collect();
    nodes[0].0.raft().initialize(members).await.unwrap();
    let leader = nodes[0]
        .0
        .wait_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let (lnode, ltarget) = &nodes[(leader - 1) as usize];
    eventually("all agree on the leader", Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|(n, _)| n.metrics().leader == Some(leader))
    })
    .await;
    let term = lnode.metrics().term;
    // Large writes, several at once (retries then carry more entries than the first attempt).
    let big = |i: u8| vec![i; 64 * 1024];
    let writes = (0..6u8).map(|i| lnode.propose(big(i)));
    for r in futures::future::join_all(writes).await {
        r.expect("a large write commits");
    }
    eventually("every node applied them", Duration::from_secs(10), || {
        nodes.iter().all(|(_, t)| t.items() == ltarget.items())
    })
    .await;
    assert_eq!(ltarget.items().len(), 6);
    for (_, t) in &nodes {
        assert_applied_once(&t.items());
    }
    // The followers kept hearing from their leader while the appends ran: no election.
    for (n, _) in &nodes {
        let m = n.metrics();
        assert_eq!((m.term, m.leader), (term, Some(leader)), "node {}", n.id());
    }
    for (n, _) in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// Deadlines follow tokio's clock: on a paused clock (the simulation's) a write that finds no
/// leader gives up after `propose_timeout_ms` of that clock.
#[tokio::test(start_paused = true)]
async fn deadlines_follow_the_paused_clock() {
    let dir = tempfile::tempdir().unwrap();
    let c = RaftConfig {
        propose_timeout_ms: 60_000,
        ..cfg(1)
    };
    // Never initialized: no leader, ever.
    let (node, _t) = open_single(dir.path(), c).await;
    let start = tokio::time::Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(90),
        node.propose_anywhere(b"x".to_vec()),
    )
    .await;
    assert_eq!(
        res.expect("gave up within the deadline on tokio's clock"),
        Err(RaftError::NoQuorum)
    );
    assert!(start.elapsed() >= Duration::from_secs(60));
    let res = tokio::time::timeout(
        Duration::from_secs(90),
        node.wait_leader(Duration::from_secs(60)),
    )
    .await;
    assert_eq!(res.expect("within the deadline"), Err(RaftError::NoQuorum));
    node.shutdown().await.unwrap();
}

/// On a paused clock, nodes started together tick together: two followers whose leader goes
/// away often stand for the same term at the same instant and split the vote (one leader per
/// term), and openraft 0.9 keeps each node's election timeout for its lifetime, so they could
/// split again term after term. Every round here must elect a leader among the survivors.
#[tokio::test(start_paused = true)]
async fn split_votes_do_not_repeat_forever() {
    // Every node draws (nearly) the same election timeout: the worst case, every time.
    let c = Cluster::start(3, |c| RaftConfig {
        heartbeat_ms: 100,
        election_timeout_ms: (400, 401),
        ..c
    })
    .await;
    // A message takes a moment: both candidates stand before either hears of the other.
    c.net
        .set_delay(Duration::from_millis(10), Duration::from_millis(10));
    for round in 0..8 {
        let old = c.agreed_leader(&[1, 2, 3]).await;
        c.net.isolate(old);
        let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
        let elected = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let m = c.node(others[0]).0.metrics();
                if m.leader.is_some_and(|l| l != old) && m.role != RaftRole::Candidate {
                    return;
                }
            }
        })
        .await;
        assert!(
            elected.is_ok(),
            "round {round}: no leader among {others:?} after 120 s"
        );
        c.net.heal();
    }
    c.shutdown().await;
}
