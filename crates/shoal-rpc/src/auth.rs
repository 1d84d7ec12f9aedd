//! Who is calling, and what they may call: the one place where roles are checked.
//!
//! ```text
//!  TLS handshake (caller's rustls ServerConfig verifies the chain)
//!        │ end-entity certificate DER, or none
//!        ▼
//!  PeerFn(der) ──► Some(Peer{node_id, role}) | None (anonymous)
//!        │ stored per connection in ConnInfo (a request extension)
//!        ▼
//!  authorize(Method, ConnInfo) ── Method::access() ──► Anonymous | Node | Manager
//!        ├─ anonymous on a Node/Manager method ─► Unauthenticated
//!        ├─ worker on a Manager method ─────────► PermissionDenied
//!        └─ ok ─► the Peer (handlers act for it, never for an id in the request)
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::RpcError;

/// The role a node certificate grants (its OU: `swarm-manager` or `swarm-worker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// Runs tasks only.
    Worker,
    /// Runs tasks and the control plane.
    Manager,
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerRole::Worker => "worker",
            PeerRole::Manager => "manager",
        })
    }
}

/// The authenticated node at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The node ID (the certificate's CN).
    pub node_id: String,
    /// Its role (the certificate's OU).
    pub role: PeerRole,
}

impl Peer {
    /// A manager peer.
    pub fn manager(node_id: impl Into<String>) -> Peer {
        Peer {
            node_id: node_id.into(),
            role: PeerRole::Manager,
        }
    }

    /// A worker peer.
    pub fn worker(node_id: impl Into<String>) -> Peer {
        Peer {
            node_id: node_id.into(),
            role: PeerRole::Worker,
        }
    }
}

/// Maps the DER of a verified client certificate to the node it names; `None` if the certificate
/// does not name a node of this cluster (the connection is then treated as anonymous).
/// shoal-ca's `peer_identity` is the production implementation.
pub type PeerFn = Arc<dyn Fn(&[u8]) -> Option<Peer> + Send + Sync>;

/// What the server knows about a connection; every request carries it as an extension.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The authenticated node, or `None` for a connection without a (recognised) certificate.
    pub peer: Option<Peer>,
    /// The TCP address of the other end.
    pub remote_addr: Option<SocketAddr>,
}

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who completes the TLS handshake, with or without a certificate (joining nodes).
    Anonymous,
    /// Any node of the cluster (worker or manager).
    Node,
    /// Managers only.
    Manager,
}

/// Every RPC of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `Ca.GetRootCa`
    CaGetRootCa,
    /// `Ca.IssueCertificate`
    CaIssueCertificate,
    /// `Ca.RenewCertificate`
    CaRenewCertificate,
    /// `Dispatcher.Register`
    DispatcherRegister,
    /// `Dispatcher.Heartbeat`
    DispatcherHeartbeat,
    /// `Dispatcher.Assignments`
    DispatcherAssignments,
    /// `Dispatcher.ReportStatus`
    DispatcherReportStatus,
    /// `Raft.Call`
    RaftCall,
    /// `Raft.AddManager`
    RaftAddManager,
    /// `Raft.RemoveManager`
    RaftRemoveManager,
    /// `Control.ForwardApi`
    ControlForwardApi,
    /// `Control.ForwardApiStream`
    ControlForwardApiStream,
    /// `Logs.TaskLogs`
    LogsTaskLogs,
}

impl Method {
    /// Every method, for tables and tests.
    pub const ALL: [Method; 13] = [
        Method::CaGetRootCa,
        Method::CaIssueCertificate,
        Method::CaRenewCertificate,
        Method::DispatcherRegister,
        Method::DispatcherHeartbeat,
        Method::DispatcherAssignments,
        Method::DispatcherReportStatus,
        Method::RaftCall,
        Method::RaftAddManager,
        Method::RaftRemoveManager,
        Method::ControlForwardApi,
        Method::ControlForwardApiStream,
        Method::LogsTaskLogs,
    ];

    /// `Service.Method`, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            Method::CaGetRootCa => "Ca.GetRootCa",
            Method::CaIssueCertificate => "Ca.IssueCertificate",
            Method::CaRenewCertificate => "Ca.RenewCertificate",
            Method::DispatcherRegister => "Dispatcher.Register",
            Method::DispatcherHeartbeat => "Dispatcher.Heartbeat",
            Method::DispatcherAssignments => "Dispatcher.Assignments",
            Method::DispatcherReportStatus => "Dispatcher.ReportStatus",
            Method::RaftCall => "Raft.Call",
            Method::RaftAddManager => "Raft.AddManager",
            Method::RaftRemoveManager => "Raft.RemoveManager",
            Method::ControlForwardApi => "Control.ForwardApi",
            Method::ControlForwardApiStream => "Control.ForwardApiStream",
            Method::LogsTaskLogs => "Logs.TaskLogs",
        }
    }

    /// The service the method belongs to.
    pub fn service(self) -> &'static str {
        self.name().split('.').next().unwrap_or_default()
    }

    /// The access policy: the single table every server-side check reads.
    pub fn access(self) -> Access {
        match self {
            Method::CaGetRootCa | Method::CaIssueCertificate => Access::Anonymous,
            Method::CaRenewCertificate
            | Method::DispatcherRegister
            | Method::DispatcherHeartbeat
            | Method::DispatcherAssignments
            | Method::DispatcherReportStatus => Access::Node,
            Method::RaftCall
            | Method::RaftAddManager
            | Method::RaftRemoveManager
            | Method::ControlForwardApi
            | Method::ControlForwardApiStream
            | Method::LogsTaskLogs => Access::Manager,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks `method`'s policy against the connection and returns the caller (`None` only for an
/// anonymous caller of an [`Access::Anonymous`] method).
pub fn authorize(method: Method, conn: Option<&ConnInfo>) -> Result<Option<Peer>, RpcError> {
    let peer = conn.and_then(|c| c.peer.as_ref());
    match (method.access(), peer) {
        (Access::Anonymous, p) => Ok(p.cloned()),
        (_, None) => Err(RpcError::Unauthenticated(format!(
            "{method} needs a node certificate, and this connection presented none that names \
             a node of this swarm; join the swarm first"
        ))),
        (Access::Node, Some(p)) => Ok(Some(p.clone())),
        (Access::Manager, Some(p)) if p.role == PeerRole::Manager => Ok(Some(p.clone())),
        (Access::Manager, Some(p)) => Err(RpcError::PermissionDenied(format!(
            "node {} is a {} and may not call {}: the {} service is for managers only",
            p.node_id,
            p.role,
            method,
            method.service()
        ))),
    }
}

/// [`authorize`] for a method that needs an authenticated node: returns that node.
pub(crate) fn authorize_node(method: Method, conn: Option<&ConnInfo>) -> Result<Peer, RpcError> {
    authorize(method, conn)?.ok_or_else(|| {
        // Only reachable if a caller uses this for an anonymous method.
        RpcError::Unauthenticated(format!("{method} needs a node certificate"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: Option<Peer>) -> ConnInfo {
        ConnInfo {
            peer,
            remote_addr: None,
        }
    }

    #[test]
    fn policy_table() {
        for m in Method::ALL {
            let anon = authorize(m, Some(&conn(None)));
            let worker = authorize(m, Some(&conn(Some(Peer::worker("w1")))));
            let manager = authorize(m, Some(&conn(Some(Peer::manager("m1")))));
            assert!(manager.is_ok(), "{m}: a manager may call everything");
            match m.access() {
                Access::Anonymous => {
                    assert!(anon.is_ok() && worker.is_ok(), "{m}");
                }
                Access::Node => {
                    assert!(matches!(anon, Err(RpcError::Unauthenticated(_))), "{m}");
                    assert!(worker.is_ok(), "{m}");
                }
                Access::Manager => {
                    assert!(matches!(anon, Err(RpcError::Unauthenticated(_))), "{m}");
                    assert!(matches!(worker, Err(RpcError::PermissionDenied(_))), "{m}");
                }
            }
        }
    }

    #[test]
    fn messages_name_the_node_and_the_call() {
        let e = authorize(Method::RaftCall, Some(&conn(Some(Peer::worker("abc"))))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node abc is a worker and may not call Raft.Call: the Raft service is for managers only"
        );
        let e = authorize(Method::DispatcherHeartbeat, None).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Dispatcher.Heartbeat needs a node certificate"));
    }

    #[test]
    fn only_ca_join_calls_are_anonymous() {
        let anon: Vec<_> = Method::ALL
            .into_iter()
            .filter(|m| m.access() == Access::Anonymous)
            .collect();
        assert_eq!(anon, vec![Method::CaGetRootCa, Method::CaIssueCertificate]);
        assert_eq!(Method::LogsTaskLogs.service(), "Logs");
    }
}
