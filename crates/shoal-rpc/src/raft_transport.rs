//! [`GrpcRaftTransport`]: shoal-raft's [`RaftTransport`] over the `Raft.Call` RPC.
//!
//! ```text
//!  openraft ─► RaftTransport::send(target, addr, kind, bytes, timeout)
//!                 │ cached NodeClient for addr? ── no ─► connect (fails: Unreachable)
//!                 ▼
//!              Raft.Call{kind, payload} ══ mTLS ══► RaftHandler::call ─► RaftNode::handle_rpc
//!                 │ ok: reply bytes
//!                 └ error: drop the cached client (next send reconnects);
//!                          Connect/Unavailable ─► Unreachable, anything else ─► Failed
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use shoal_raft::{RaftTransport, RpcKind, TransportError};

use crate::{ClientOptions, NodeClient, RpcError};

/// Carries Raft traffic to other managers over the node-to-node protocol, one cached
/// connection per target address.
pub struct GrpcRaftTransport {
    tls: RwLock<Arc<rustls::ClientConfig>>,
    opts: ClientOptions,
    clients: Mutex<HashMap<String, NodeClient>>,
}

impl GrpcRaftTransport {
    /// A transport presenting this manager's certificate through `tls`.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self::with_options(tls, ClientOptions::default())
    }

    /// The same with explicit client options (the request timeout is replaced by each RPC's).
    pub fn with_options(tls: Arc<rustls::ClientConfig>, opts: ClientOptions) -> Self {
        GrpcRaftTransport {
            tls: RwLock::new(tls),
            opts,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the client configuration (after a certificate renewal); open connections are
    /// dropped so the next messages use the new certificate.
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
        self.clients_mut().clear();
    }

    fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn clients_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeClient>> {
        // A poisoned lock only means a panic elsewhere; the cache is still usable.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn client(&self, addr: &str, timeout: Duration) -> Result<NodeClient, RpcError> {
        if let Some(c) = self.clients_mut().get(addr) {
            return Ok(c.clone());
        }
        let opts = ClientOptions {
            connect_timeout: self.opts.connect_timeout.min(timeout),
            request_timeout: None,
            ..self.opts.clone()
        };
        let c = NodeClient::connect_with(addr, self.tls(), opts).await?;
        Ok(self
            .clients_mut()
            .entry(addr.to_string())
            .or_insert(c)
            .clone())
    }

    fn forget(&self, addr: &str) {
        self.clients_mut().remove(addr);
    }
}

#[async_trait::async_trait]
impl RaftTransport for GrpcRaftTransport {
    async fn send(
        &self,
        target: u64,
        addr: &str,
        kind: RpcKind,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let client = self
            .client(addr, timeout)
            .await
            .map_err(|e| TransportError::Unreachable {
                target,
                reason: e.to_string(),
            })?;
        match client.raft_call(kind, request, Some(timeout)).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                self.forget(addr);
                let reason = format!("{addr}: {e}");
                Err(match e {
                    RpcError::Connect { .. } | RpcError::Unavailable(_) => {
                        TransportError::Unreachable { target, reason }
                    }
                    _ => TransportError::Failed { target, reason },
                })
            }
        }
    }
}
