//! Fixtures shared by the daemon's unit tests.

use shoal_api::{engine, ManagerStatus, Meta, Node, NodeRole, NodeState, NodeStatus, Reachability};

/// A ready node with `role`, desired role `desired`, and, for a Raft member, its manager
/// status (`leader` names the Raft ID of the leader).
pub(crate) fn node(
    id: &str,
    role: NodeRole,
    desired: NodeRole,
    raft_id: Option<u64>,
    leader: u64,
) -> Node {
    Node {
        id: id.into(),
        meta: Meta::new_now(),
        spec: engine::NodeSpec {
            role: Some(match desired {
                NodeRole::Manager => engine::NodeSpecRoleEnum::MANAGER,
                NodeRole::Worker => engine::NodeSpecRoleEnum::WORKER,
            }),
            ..Default::default()
        },
        description: Default::default(),
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
            addr: "127.0.0.1".into(),
        },
        role,
        manager_status: raft_id.map(|raft_id| ManagerStatus {
            leader: raft_id == leader,
            reachability: Reachability::Reachable,
            addr: format!("127.0.0.{raft_id}:2377"),
            raft_id,
        }),
        addr_port: "127.0.0.1:2377".into(),
        network_addresses: Default::default(),
    }
}
