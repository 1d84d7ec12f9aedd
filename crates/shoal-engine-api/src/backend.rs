//! The seam between the HTTP server and the daemon: [`SwarmBackend`].
//!
//! ```text
//!   handlers ──► SwarmBackend::status()      local node state (ping header, /info)
//!            ──► SwarmBackend::manager()     Store + Control when this node is a ready manager
//!            ──► init / join / leave / unlock / unlock_key / task_logs / host_info
//! ```
//!
//! The daemon implements it; [`crate::testing::MockBackend`] implements it in memory for tests.

use crate::error::ApiError;
use shoal_api::engine;
use shoal_manager::control::Control;
use shoal_store::Store;
use std::sync::Arc;

/// The local node's swarm state, as `/info` and the `Swarm` ping header report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalNodeState {
    /// Not in a swarm.
    Inactive,
    /// Joining.
    Pending,
    /// In a swarm (manager or worker).
    Active,
    /// A manager whose state is encrypted and needs `swarm unlock`.
    Locked,
    /// The swarm components failed; `SwarmStatus::error` says why.
    Error,
}

impl LocalNodeState {
    /// The wire name (`inactive`, `pending`, `active`, `locked`, `error`).
    pub fn as_str(&self) -> &'static str {
        match self {
            LocalNodeState::Inactive => "inactive",
            LocalNodeState::Pending => "pending",
            LocalNodeState::Active => "active",
            LocalNodeState::Locked => "locked",
            LocalNodeState::Error => "error",
        }
    }

    /// The Engine API enum.
    pub fn to_engine(&self) -> engine::LocalNodeState {
        match self {
            LocalNodeState::Inactive => engine::LocalNodeState::INACTIVE,
            LocalNodeState::Pending => engine::LocalNodeState::PENDING,
            LocalNodeState::Active => engine::LocalNodeState::ACTIVE,
            LocalNodeState::Locked => engine::LocalNodeState::LOCKED,
            LocalNodeState::Error => engine::LocalNodeState::ERROR,
        }
    }
}

/// What the daemon knows about its own membership.
#[derive(Clone, Debug)]
pub struct SwarmStatus {
    pub state: LocalNodeState,
    /// This node's ID (empty when not in a swarm).
    pub node_id: String,
    /// The address other nodes reach this node at.
    pub node_addr: String,
    /// Whether this node is a manager that can serve control requests.
    pub control_available: bool,
    /// Why the swarm components failed (empty when they did not).
    pub error: String,
    /// Known managers: (node ID, address).
    pub remote_managers: Vec<(String, String)>,
}

impl SwarmStatus {
    /// The state of a node outside any swarm.
    pub fn inactive() -> Self {
        SwarmStatus {
            state: LocalNodeState::Inactive,
            node_id: String::new(),
            node_addr: String::new(),
            control_available: false,
            error: String::new(),
            remote_managers: Vec::new(),
        }
    }

    /// The value of the `Swarm` header of `/_ping`: `inactive`, `pending`, `error`, `locked`,
    /// `active/manager` or `active/worker`.
    pub fn ping_value(&self) -> &'static str {
        match self.state {
            LocalNodeState::Active if self.control_available => "active/manager",
            LocalNodeState::Active => "active/worker",
            ref s => s.as_str(),
        }
    }
}

/// Facts about the host for `/info` and `/version`.
#[derive(Clone, Debug, Default)]
pub struct HostInfo {
    /// Host name (`Name` in `/info`).
    pub name: String,
    pub ncpu: i64,
    /// Total memory in bytes.
    pub mem_total: i64,
    /// Operating system, pretty name (`Debian GNU/Linux 12 (bookworm)`).
    pub os: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine hardware name (`uname -m`: `x86_64`, `aarch64`).
    pub arch: String,
    /// Where the daemon keeps its state.
    pub data_root: String,
    /// The runtime tasks use unless their service names another.
    pub default_runtime: String,
    /// Runtimes this node can run tasks with.
    pub runtimes: Vec<String>,
    /// Shoal's version.
    pub server_version: String,
    /// Engine labels (`key=value`).
    pub labels: Vec<String>,
}

/// `POST /swarm/init` body: bollard's model plus the fields it lacks.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct InitRequest {
    #[serde(flatten)]
    pub base: engine::SwarmInitRequest,
    /// `active`, `pause` or `drain` (empty: active).
    #[serde(rename = "Availability", default)]
    pub availability: Option<String>,
    #[serde(rename = "AutoLockManagers", default)]
    pub autolock: Option<bool>,
}

/// `POST /swarm/join` body: bollard's model plus the fields it lacks.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct JoinRequest {
    #[serde(flatten)]
    pub base: engine::SwarmJoinRequest,
    #[serde(rename = "Availability", default)]
    pub availability: Option<String>,
}

/// What the HTTP server needs from the daemon.
#[async_trait::async_trait]
pub trait SwarmBackend: Send + Sync + 'static {
    /// This node's swarm state.
    fn status(&self) -> SwarmStatus;
    /// Store and control of this manager; None when not in a swarm or not a manager.
    fn manager(&self) -> Option<(Store, Arc<Control>)>;
    /// Creates a swarm with this node as its first manager; returns the node ID.
    async fn init(&self, req: InitRequest) -> Result<String, ApiError>;
    /// Joins an existing swarm.
    async fn join(&self, req: JoinRequest) -> Result<(), ApiError>;
    /// Leaves the swarm (`force` also for the last manager or a locked node).
    async fn leave(&self, force: bool) -> Result<(), ApiError>;
    /// Unlocks a locked manager with its unlock key.
    async fn unlock(&self, key: String) -> Result<(), ApiError>;
    /// The current unlock key (`SWMKEY-1-...`), empty when autolock is off.
    fn unlock_key(&self) -> Result<String, ApiError>;
    /// After `swarm update` on a manager: turn autolock on or off to match `autolock` and,
    /// when asked (`rotateManagerUnlockKey`), replace the unlock key.
    async fn update_autolock(
        &self,
        _autolock: bool,
        _rotate_unlock_key: bool,
    ) -> Result<(), ApiError> {
        Ok(())
    }
    /// Logs of one task from whichever node runs it.
    async fn task_logs(
        &self,
        task: &shoal_api::Task,
        opts: shoal_agent::runtime::LogOptions,
    ) -> Result<futures::stream::BoxStream<'static, shoal_agent::runtime::LogLine>, ApiError>;
    /// Host facts for `/info` and `/version`.
    fn host_info(&self) -> HostInfo;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_values() {
        let mut s = SwarmStatus::inactive();
        assert_eq!(s.ping_value(), "inactive");
        s.state = LocalNodeState::Active;
        assert_eq!(s.ping_value(), "active/worker");
        s.control_available = true;
        assert_eq!(s.ping_value(), "active/manager");
        s.state = LocalNodeState::Locked;
        assert_eq!(s.ping_value(), "locked");
        assert_eq!(LocalNodeState::Pending.as_str(), "pending");
        assert_eq!(
            LocalNodeState::Error.to_engine(),
            engine::LocalNodeState::ERROR
        );
    }
}
