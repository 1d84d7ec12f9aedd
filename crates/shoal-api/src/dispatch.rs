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
}

/// A task status change observed by an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub task_id: String,
    pub status: TaskStatus,
}
