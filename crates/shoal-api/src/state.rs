//! The task state machine.
//!
//! ```text
//!  new -> pending -> assigned -> accepted -> preparing -> ready -> starting -> running
//!   (manager side: orchestrator,   (agent side: the worker's controller)       |
//!    allocator, scheduler)                                                      v
//!                         complete | shutdown | failed | rejected | orphaned | remove
//! ```
//! States only move forward: an update that would move a task's observed state backwards is
//! ignored. `desired_state` is what the manager wants (running, shutdown, remove, complete);
//! the observed `status.state` is what the agent last reported.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A task's state, ordered: a later variant is further along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Allocated,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// All states, in order.
    pub const ALL: [TaskState; 15] = [
        TaskState::New,
        TaskState::Allocated,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ];

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Allocated => "allocated",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// A task in a terminal state will not run again (complete and beyond).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// The task has been handed to (or is being handled by) an agent but has not finished.
    pub fn is_active_on_node(self) -> bool {
        self >= TaskState::Assigned && self <= TaskState::Running
    }

    /// Whether an observed transition from `self` to `next` is allowed (forward only).
    pub fn can_move_to(self, next: TaskState) -> bool {
        next > self
    }

    /// The Engine API's enum for this state.
    pub fn to_engine(self) -> crate::engine::TaskState {
        use crate::engine::TaskState as E;
        match self {
            TaskState::New => E::NEW,
            TaskState::Allocated => E::ALLOCATED,
            TaskState::Pending => E::PENDING,
            TaskState::Assigned => E::ASSIGNED,
            TaskState::Accepted => E::ACCEPTED,
            TaskState::Preparing => E::PREPARING,
            TaskState::Ready => E::READY,
            TaskState::Starting => E::STARTING,
            TaskState::Running => E::RUNNING,
            TaskState::Complete => E::COMPLETE,
            TaskState::Shutdown => E::SHUTDOWN,
            TaskState::Failed => E::FAILED,
            TaskState::Rejected => E::REJECTED,
            TaskState::Remove => E::REMOVE,
            TaskState::Orphaned => E::ORPHANED,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown task state name.
#[derive(Debug, thiserror::Error)]
#[error("invalid task state '{0}'")]
pub struct ParseTaskStateError(pub String);

impl FromStr for TaskState {
    type Err = ParseTaskStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseTaskStateError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_ordered_and_round_trip() {
        for w in TaskState::ALL.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].can_move_to(w[1]));
            assert!(!w[1].can_move_to(w[0]));
        }
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().ok(), Some(s));
            assert_eq!(s.to_engine().to_string(), s.as_str());
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert!("bogus".parse::<TaskState>().is_err());
        assert!(TaskState::Running.is_active_on_node());
        assert!(!TaskState::Pending.is_active_on_node());
        assert!(TaskState::Failed.is_terminal());
        assert!(!TaskState::Running.is_terminal());
    }
}
