//! The seam between the worker and the node's data plane.
//!
//! ```text
//!  AssignmentSet.network ──► TaskNetwork::update      overlays, rules, DNS records
//!  controller, before prepare ──► attach(task)         the task's network namespace (path),
//!                                                      /etc/hosts, /etc/hostname,
//!                                                      /etc/resolv.conf as files to mount
//!  task ended ──► detach(task)                         namespace, links, DNS sockets gone
//!  first set after a restart ──► retain(ids)           what no assigned task owns is removed
//! ```
//!
//! [`HostNetwork`] is the data plane of a node that builds none (`--data-path none`): tasks
//! share the node's network, as the process runtime always did. The real one lives in
//! `shoal-net` (`shoal_net::dataplane`).

use crate::runtime::MountedFile;
use shoal_api::netmap::NetworkMap;
use shoal_api::Task;
use std::collections::HashSet;
use std::path::PathBuf;

/// What a task gets from the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The network namespace the task runs in (`/run/netns/...`).
    pub netns: PathBuf,
    /// Files the task sees over the node's (`/etc/hosts`, `/etc/hostname`,
    /// `/etc/resolv.conf`).
    pub files: Vec<MountedFile>,
}

/// A node's data plane, as the worker drives it.
#[async_trait::async_trait]
pub trait TaskNetwork: Send + Sync + 'static {
    /// Makes the node's overlays, rules and name records match `map`.
    async fn update(&self, map: &NetworkMap);
    /// Gives `task` (attached to the networks in `task.networks`) its network: idempotent, so
    /// a task adopted after a restart is attached again. `Ok(None)`: the task shares the
    /// node's network.
    async fn attach(&self, task: &Task, hostname: &str) -> Result<Option<Attached>, String>;
    /// Removes what `attach` made for the task (its process has ended).
    async fn detach(&self, task_id: &str);
    /// Removes what belongs to tasks not in `keep` (leftovers from before a restart).
    async fn retain(&self, keep: &HashSet<String>);
}

/// No data plane: tasks share the node's network.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostNetwork;

#[async_trait::async_trait]
impl TaskNetwork for HostNetwork {
    async fn update(&self, _map: &NetworkMap) {}

    async fn attach(&self, _task: &Task, _hostname: &str) -> Result<Option<Attached>, String> {
        Ok(None)
    }

    async fn detach(&self, _task_id: &str) {}

    async fn retain(&self, _keep: &HashSet<String>) {}
}
