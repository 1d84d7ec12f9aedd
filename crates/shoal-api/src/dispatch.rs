//! What crosses between a manager's dispatcher and a node's agent: the tasks assigned to the
//! node, and the status changes the agent reports back.

use crate::objects::{Task, TaskStatus};
use serde::{Deserialize, Serialize};

/// One task assigned to a node, with what the node needs to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: Task,
    /// Registry credentials of the task's service (`--with-registry-auth`).
    pub registry_auth: Option<String>,
    /// The runtime the service names (label `shoal.runtime`); the node's default when `None`.
    #[serde(default)]
    pub runtime: Option<String>,
}

/// The full set of tasks assigned to a node. The agent makes its world match it: tasks it runs
/// that are not in the set are stopped and removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentSet {
    pub tasks: Vec<Assignment>,
    /// The secrets the set's tasks reference (swarmkit's assignment of dependencies): exactly
    /// those, sorted by ID; a secret no task of the node uses any more is not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<DependencyData>,
    /// The configs the set's tasks reference, like `secrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<DependencyData>,
    /// The data plane the node must build (overlays, services, backends).
    #[serde(default)]
    pub network: crate::netmap::NetworkMap,
}

/// The data of one secret or config handed to a node with the tasks that use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyData {
    /// The secret's or config's ID (what a task's `SecretID` / `ConfigID` names).
    pub id: String,
    pub name: String,
    /// The data, base64 as the Engine API carries it.
    pub data: String,
}

impl AssignmentSet {
    /// The secret with this ID, if the set carries it.
    pub fn secret(&self, id: &str) -> Option<&DependencyData> {
        self.secrets.iter().find(|d| d.id == id)
    }

    /// The config with this ID, if the set carries it.
    pub fn config(&self, id: &str) -> Option<&DependencyData> {
        self.configs.iter().find(|d| d.id == id)
    }
}

/// A task status change observed by an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub task_id: String,
    pub status: TaskStatus,
}
