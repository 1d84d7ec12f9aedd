//! `node promote` / `node demote`: the leader makes each node's role follow its desired role
//! (`Spec.Role`, written by `node update`), and each node follows the role the swarm records
//! for it.
//!
//! ```text
//!  leader (reconcile, every RECONCILE_EVERY while leading)
//!    desired manager, role worker ─► role = manager
//!    desired worker, role manager ─► another manager: Raft removes its member first, then
//!                                    role = worker, no manager status
//!                                  ─► the leader itself: role = worker; it leaves the Raft
//!                                    group itself when it changes roles (below)
//!  every node (its agent's heartbeat answers carry the recorded role; Daemon::change_role)
//!    recorded role ≠ its certificate's ─► Ca.RenewCertificate (issued with the recorded role)
//!    promoted: key store + empty Raft log, manager roles, Raft.AddManager (as a join does)
//!    demoted:  out of the Raft group if still in it, manager roles stopped, Raft log
//!              removed; it keeps running as a worker. Tasks keep running throughout.
//! ```
//!
//! `node update` itself (shoal-manager's `Control::update_node`) refuses to demote the last
//! manager or a manager whose removal would lose the quorum, with swarmkit's errors.

use shoal_api::{NodeRole, Object};
use shoal_raft::{RaftNode, RaftRole};
use shoal_store::{Store, StoreError};
use std::time::Duration;
use tokio::sync::watch;

/// How often the leader compares roles with desired roles.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// One change the leader makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    /// Record the node as a manager: it will renew its certificate and join Raft.
    Promote { node_id: String },
    /// Remove Raft member `raft_id` (if any), then record the node as a worker.
    Demote {
        node_id: String,
        raft_id: Option<u64>,
    },
    /// The leader's own demotion: record it as a worker; it leaves Raft itself.
    DemoteSelf { node_id: String },
}

/// The changes that make roles follow desired roles (`me`: the leader's Raft ID).
pub fn plan(store: &Store, me: u64) -> Vec<RoleChange> {
    store.view(|s| {
        let mut v: Vec<RoleChange> = s
            .nodes
            .values()
            .filter_map(|n| match (n.desired_role(), n.role) {
                (NodeRole::Manager, NodeRole::Worker) => Some(RoleChange::Promote {
                    node_id: n.id.clone(),
                }),
                (NodeRole::Worker, NodeRole::Manager) => {
                    let raft_id = n.manager_status.as_ref().map(|m| m.raft_id);
                    Some(if raft_id == Some(me) {
                        RoleChange::DemoteSelf {
                            node_id: n.id.clone(),
                        }
                    } else {
                        RoleChange::Demote {
                            node_id: n.id.clone(),
                            raft_id,
                        }
                    })
                }
                _ => None,
            })
            .collect();
        v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        v
    })
}

/// Records `node_id`'s role (when its desired role still asks for it); a demoted node also
/// loses its manager status unless `keep_status`.
async fn record_role(
    store: &Store,
    node_id: &str,
    role: NodeRole,
    keep_status: bool,
) -> Result<(), StoreError> {
    store
        .update(|tx| {
            if let Some(mut n) = tx.get_node(node_id) {
                if n.desired_role() == role && n.role != role {
                    n.role = role;
                    if role == NodeRole::Worker && !keep_status {
                        n.manager_status = None;
                    }
                    tx.update(Object::Node(n))?;
                }
            }
            Ok::<_, StoreError>(())
        })
        .await
}

/// Applies one change on the leader.
pub async fn apply(store: &Store, raft: &RaftNode, change: &RoleChange) -> anyhow::Result<()> {
    match change {
        RoleChange::Promote { node_id } => {
            record_role(store, node_id, NodeRole::Manager, false).await?;
            tracing::info!(node = %node_id, "node promoted to manager");
        }
        RoleChange::Demote { node_id, raft_id } => {
            if let Some(id) = raft_id {
                raft.remove_member(*id)
                    .await
                    .map_err(|e| anyhow::anyhow!("removing raft member {id}: {e}"))?;
            }
            record_role(store, node_id, NodeRole::Worker, false).await?;
            tracing::info!(node = %node_id, "manager demoted to worker");
        }
        RoleChange::DemoteSelf { node_id } => {
            record_role(store, node_id, NodeRole::Worker, true).await?;
            tracing::info!(node = %node_id, "this manager (the leader) is demoted; it leaves the raft group");
        }
    }
    Ok(())
}

/// On every manager, until `stop`: while this manager leads, makes roles follow desired roles.
pub async fn reconcile(store: Store, raft: RaftNode, mut stop: watch::Receiver<bool>) {
    loop {
        if raft.metrics().role == RaftRole::Leader {
            for change in plan(&store, raft.id()) {
                if *stop.borrow() {
                    return;
                }
                if let Err(e) = apply(&store, &raft, &change).await {
                    tracing::warn!(?change, error = %format!("{e:#}"), "changing a node's role failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A node whose leader is Raft member 1.
    fn node(id: &str, role: NodeRole, desired: NodeRole, raft_id: Option<u64>) -> shoal_api::Node {
        crate::daemon::testing::node(id, role, desired, raft_id, 1)
    }

    #[tokio::test]
    async fn roles_follow_desired_roles() {
        let store = Store::new();
        store
            .update(|tx| {
                tx.create(Object::Node(node(
                    "leader",
                    NodeRole::Manager,
                    NodeRole::Manager,
                    Some(1),
                )))?;
                tx.create(Object::Node(node(
                    "settled",
                    NodeRole::Worker,
                    NodeRole::Worker,
                    None,
                )))?;
                tx.create(Object::Node(node(
                    "up",
                    NodeRole::Worker,
                    NodeRole::Manager,
                    None,
                )))?;
                tx.create(Object::Node(node(
                    "down",
                    NodeRole::Manager,
                    NodeRole::Worker,
                    Some(7),
                )))
            })
            .await
            .unwrap();
        assert_eq!(
            plan(&store, 1),
            vec![
                RoleChange::Demote {
                    node_id: "down".into(),
                    raft_id: Some(7)
                },
                RoleChange::Promote {
                    node_id: "up".into()
                },
            ]
        );
        // Recording: a promotion; a demotion clears the manager status.
        record_role(&store, "up", NodeRole::Manager, false)
            .await
            .unwrap();
        record_role(&store, "down", NodeRole::Worker, false)
            .await
            .unwrap();
        // A role the desired role no longer asks for is not recorded.
        record_role(&store, "settled", NodeRole::Manager, false)
            .await
            .unwrap();
        store.view(|s| {
            assert_eq!(s.nodes["up"].role, NodeRole::Manager);
            assert_eq!(s.nodes["down"].role, NodeRole::Worker);
            assert!(s.nodes["down"].manager_status.is_none());
            assert_eq!(s.nodes["settled"].role, NodeRole::Worker);
        });
        assert!(plan(&store, 1).is_empty());

        // The leader's own demotion keeps its status until it leaves Raft itself.
        store
            .update(|tx| {
                let mut n = tx.get_node("leader").unwrap();
                n.spec.role = Some(shoal_api::engine::NodeSpecRoleEnum::WORKER);
                tx.update(Object::Node(n))
            })
            .await
            .unwrap();
        assert_eq!(
            plan(&store, 1),
            vec![RoleChange::DemoteSelf {
                node_id: "leader".into()
            }]
        );
        record_role(&store, "leader", NodeRole::Worker, true)
            .await
            .unwrap();
        store.view(|s| {
            assert_eq!(s.nodes["leader"].role, NodeRole::Worker);
            assert!(s.nodes["leader"].manager_status.is_some());
        });
    }
}
