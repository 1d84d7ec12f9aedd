//! The in-process link between this node's agent and its own manager's dispatcher.

use futures::stream::BoxStream;
use shoal_agent::worker::{LinkError, ManagerLink};
use shoal_api::dispatch::{AssignmentSet, StatusUpdate};
use shoal_api::engine;
use shoal_manager::dispatcher::Dispatcher;
use std::sync::Arc;
use std::time::Duration;

/// Calls the local dispatcher directly.
pub struct LocalLink(pub Arc<Dispatcher>);

fn err(e: impl std::fmt::Display) -> LinkError {
    LinkError(e.to_string())
}

#[async_trait::async_trait]
impl ManagerLink for LocalLink {
    async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, LinkError> {
        self.0
            .register(node_id, description, addr)
            .await
            .map_err(err)
    }

    async fn heartbeat(&self, node_id: &str) -> Result<Duration, LinkError> {
        self.0.heartbeat(node_id).await.map_err(err)
    }

    async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<BoxStream<'static, AssignmentSet>, LinkError> {
        Ok(self.0.assignments(node_id))
    }

    async fn report(&self, node_id: &str, updates: Vec<StatusUpdate>) -> Result<(), LinkError> {
        self.0.report(node_id, updates).await.map_err(err)
    }
}
