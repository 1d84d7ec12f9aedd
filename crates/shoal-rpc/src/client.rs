//! The client: [`NodeClient`], one HTTP/2 connection to another node with a typed method for
//! every RPC, and [`fetch_root_ca`] for a node that is not part of the swarm yet.
//!
//! ```text
//!  NodeClient::connect(addr, ClientConfig, ClientOptions)
//!     TCP ─► TLS (ClientConfig + ALPN h2, server name = options.server_name) ─► tonic Channel
//!     errors here: RpcError::Connect  (nothing was sent)
//!  client.heartbeat(..) / raft_call(..) / task_logs(..) / ...
//!     errors here: what the server said (PermissionDenied, NotLeader, ...) or Unavailable
//! ```
//!
//! A `NodeClient` is cheap to clone (clones share the connection). tonic reconnects a broken
//! connection on the next call; callers that keep clients around ([`crate::GrpcRaftTransport`],
//! [`crate::RemoteManagerLink`]) drop them on transport errors and connect afresh.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use rustls_pki_types::ServerName;
use shoal_agent::runtime::{LogLine, LogOptions};
use shoal_api::dispatch::{AssignmentSet, StatusUpdate};
use shoal_api::engine;
use shoal_raft::RpcKind;
use tonic::transport::{Channel, Endpoint};

use crate::convert;
use crate::handlers::{BodyStream, IssueRequest, IssuedCertificate, ManagerMember};
use crate::pb;
use crate::server::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_MESSAGE_BYTES};
use crate::tls::{connector, error_chain, h2_client_config};
use crate::{PeerRole, RpcError};

/// What a manager answers to `Dispatcher.Register` / `Dispatcher.Heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The heartbeat period.
    pub period: Duration,
    /// The managers' node-to-node addresses (empty: the manager did not say).
    pub managers: Vec<String>,
    /// The role the swarm records for the caller (`None`: the manager did not say).
    pub role: Option<PeerRole>,
}

fn role_from_text(s: &str) -> Option<PeerRole> {
    match s {
        "manager" => Some(PeerRole::Manager),
        "worker" => Some(PeerRole::Worker),
        _ => None,
    }
}

/// The TLS server name presented by default: managers' certificates carry it (as in swarmkit).
pub const DEFAULT_SERVER_NAME: &str = "swarm-manager";

/// How a [`NodeClient`] connects and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit for TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for each call until the response starts (the whole call for unary RPCs; streams
    /// may then run for as long as they like). `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// The TLS server name to ask for and verify (how names are checked is the ClientConfig's
    /// business). A DNS name or an IP address.
    pub server_name: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            server_name: DEFAULT_SERVER_NAME.to_string(),
        }
    }
}

impl ClientOptions {
    /// These options with another server name (for example `swarm-worker` or a node ID when
    /// calling a worker's Logs service).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// These options with another connect timeout.
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// These options with another request timeout.
    pub fn with_request_timeout(mut self, t: Option<Duration>) -> Self {
        self.request_timeout = t;
        self
    }
}

/// A connection to another node's node-to-node server.
#[derive(Clone)]
pub struct NodeClient {
    addr: String,
    channel: Channel,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("addr", &self.addr)
            .finish()
    }
}

macro_rules! client {
    ($self:ident, $module:ident :: $client:ident) => {
        pb::$module::$client::new($self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
}

impl NodeClient {
    /// Connects to `addr` (`host:port`) with default [`ClientOptions`].
    pub async fn connect(
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<NodeClient, RpcError> {
        Self::connect_with(addr, tls, ClientOptions::default()).await
    }

    /// Connects to `addr` (`host:port`, `[v6]:port`) with `tls` (its ALPN is set to `h2`).
    pub async fn connect_with(
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
        opts: ClientOptions,
    ) -> Result<NodeClient, RpcError> {
        let cerr = |reason: String| RpcError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let server_name = ServerName::try_from(opts.server_name.clone()).map_err(|_| {
            RpcError::InvalidArgument(format!(
                "{:?} is not a valid TLS server name",
                opts.server_name
            ))
        })?;
        // The scheme only labels requests; TLS is done by our connector, whatever tonic's
        // features (an `https` URI would make tonic insist on its own TLS when some other crate
        // enables it).
        let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| {
                RpcError::InvalidArgument(format!("{addr:?} is not a valid host:port address"))
            })?
            .connect_timeout(opts.connect_timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(t) = opts.request_timeout {
            endpoint = endpoint.timeout(t);
        }
        let conn = connector(addr.to_string(), h2_client_config(&tls), server_name);
        let channel = endpoint
            .connect_with_connector(conn)
            .await
            .map_err(|e| cerr(error_chain(&e)))?;
        Ok(NodeClient {
            addr: addr.to_string(),
            channel,
        })
    }

    /// The address this client dialed.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    // -- Ca ------------------------------------------------------------------------------------

    /// `Ca.GetRootCa`: the root CA certificate, PEM.
    pub async fn get_root_ca(&self) -> Result<String, RpcError> {
        let r = client!(self, ca_client::CaClient)
            .get_root_ca(pb::GetRootCaRequest {})
            .await?;
        Ok(r.into_inner().root_pem)
    }

    /// `Ca.IssueCertificate`: a first certificate against a join token
    /// (`req.remote_addr` is not sent).
    pub async fn issue_certificate(
        &self,
        req: IssueRequest,
    ) -> Result<IssuedCertificate, RpcError> {
        let r = client!(self, ca_client::CaClient)
            .issue_certificate(pb::IssueCertificateRequest {
                csr_pem: req.csr_pem,
                token: req.token,
                availability: req.availability,
                advertise_addr: req.advertise_addr,
                listen_addr: req.listen_addr,
                hostname: req.hostname,
            })
            .await?
            .into_inner();
        Ok(IssuedCertificate {
            role: convert::role_from_pb(r.role)?,
            node_id: r.node_id,
            cert_pem: r.cert_pem,
            root_pem: r.root_pem,
            manager_addrs: r.manager_addrs,
            cluster_id: r.cluster_id,
        })
    }

    /// `Ca.RenewCertificate`: a new certificate for this node, PEM.
    pub async fn renew_certificate(&self, csr_pem: &str) -> Result<String, RpcError> {
        let r = client!(self, ca_client::CaClient)
            .renew_certificate(pb::RenewCertificateRequest {
                csr_pem: csr_pem.to_string(),
            })
            .await?;
        Ok(r.into_inner().cert_pem)
    }

    // -- Dispatcher ----------------------------------------------------------------------------
    // `node_id` is sent for diagnostics only: the server acts for the certificate's node.

    /// `Dispatcher.Register`: opens a session; returns the heartbeat period.
    pub async fn register(
        &self,
        node_id: &str,
        description: &engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, RpcError> {
        Ok(self.register_info(node_id, description, addr).await?.period)
    }

    /// `Dispatcher.Register`, with everything the manager answered.
    pub async fn register_info(
        &self,
        node_id: &str,
        description: &engine::NodeDescription,
        addr: &str,
    ) -> Result<SessionInfo, RpcError> {
        let r = client!(self, dispatcher_client::DispatcherClient)
            .register(pb::RegisterRequest {
                description_json: convert::to_json("the node description", description)?,
                addr: addr.to_string(),
                node_id: node_id.to_string(),
            })
            .await?
            .into_inner();
        Ok(SessionInfo {
            period: Duration::from_millis(r.period_ms),
            managers: r.managers,
            role: role_from_text(&r.role),
        })
    }

    /// `Dispatcher.Heartbeat`: keeps the session; returns the heartbeat period.
    pub async fn heartbeat(&self, node_id: &str) -> Result<Duration, RpcError> {
        Ok(self.heartbeat_info(node_id).await?.period)
    }

    /// `Dispatcher.Heartbeat`, with everything the manager answered.
    pub async fn heartbeat_info(&self, node_id: &str) -> Result<SessionInfo, RpcError> {
        let r = client!(self, dispatcher_client::DispatcherClient)
            .heartbeat(pb::HeartbeatRequest {
                node_id: node_id.to_string(),
            })
            .await?
            .into_inner();
        Ok(SessionInfo {
            period: Duration::from_millis(r.period_ms),
            managers: r.managers,
            role: role_from_text(&r.role),
        })
    }

    /// `Dispatcher.Assignments`: the node's assignment sets, the current one first.
    pub async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<BoxStream<'static, Result<AssignmentSet, RpcError>>, RpcError> {
        let r = client!(self, dispatcher_client::DispatcherClient)
            .assignments(pb::AssignmentsRequest {
                node_id: node_id.to_string(),
            })
            .await?;
        Ok(r.into_inner()
            .map(|m| {
                let m = m?;
                convert::from_json::<AssignmentSet>("an assignment set", &m.set_json)
            })
            .boxed())
    }

    /// `Dispatcher.ReportStatus`: task status changes.
    pub async fn report_status(
        &self,
        node_id: &str,
        updates: &[StatusUpdate],
    ) -> Result<(), RpcError> {
        client!(self, dispatcher_client::DispatcherClient)
            .report_status(pb::ReportStatusRequest {
                updates_json: convert::to_json("the status updates", &updates)?,
                node_id: node_id.to_string(),
            })
            .await?;
        Ok(())
    }

    // -- Raft ----------------------------------------------------------------------------------

    /// `Raft.Call`: one encoded Raft RPC; returns the callee's reply bytes. `timeout` bounds the
    /// whole call (also sent to the server as the gRPC deadline).
    pub async fn raft_call(
        &self,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, RpcError> {
        let mut req = tonic::Request::new(pb::RaftCallRequest {
            kind: u32::from(kind.code()),
            payload,
        });
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        let mut client = client!(self, raft_client::RaftClient);
        let fut = client.call(req);
        let r = match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
                RpcError::DeadlineExceeded(format!(
                    "raft {kind:?} to {} took longer than {t:?}",
                    self.addr
                ))
            })??,
            None => fut.await?,
        };
        Ok(r.into_inner().payload)
    }

    /// `Raft.AddManager`: asks the callee (the leader) to add this node, as `raft_id` at `addr`.
    pub async fn add_manager(&self, member: &ManagerMember) -> Result<(), RpcError> {
        client!(self, raft_client::RaftClient)
            .add_manager(pb::AddManagerRequest {
                node_id: member.node_id.clone(),
                raft_id: member.raft_id,
                addr: member.addr.clone(),
            })
            .await?;
        Ok(())
    }

    /// `Raft.RemoveManager`: asks the callee (the leader) to remove a manager.
    pub async fn remove_manager(&self, node_id: &str, raft_id: u64) -> Result<(), RpcError> {
        client!(self, raft_client::RaftClient)
            .remove_manager(pb::RemoveManagerRequest {
                node_id: node_id.to_string(),
                raft_id,
            })
            .await?;
        Ok(())
    }

    // -- Control -------------------------------------------------------------------------------

    /// `Control.ForwardApi`: runs an Engine API request on the callee (the leader).
    pub async fn forward_api(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, RpcError> {
        let r = client!(self, control_client::ControlClient)
            .forward_api(convert::request_to_pb(req))
            .await?;
        convert::response_from_pb(r.into_inner())
    }

    /// `Control.ForwardApiStream`: the same, with the response body streamed.
    pub async fn forward_api_stream(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<BodyStream>, RpcError> {
        let mut stream = client!(self, control_client::ControlClient)
            .forward_api_stream(convert::request_to_pb(req))
            .await?
            .into_inner();
        let head = match stream.message().await? {
            Some(pb::ApiResponseChunk {
                part: Some(pb::api_response_chunk::Part::Head(h)),
            }) => convert::head_from_pb(h)?,
            _ => {
                return Err(RpcError::Internal(
                    "the forwarded response did not start with its status and headers".into(),
                ))
            }
        };
        let body: BodyStream = stream
            .map(|chunk| match chunk?.part {
                Some(pb::api_response_chunk::Part::Body(b)) => Ok(Bytes::from(b)),
                _ => Err(RpcError::Internal(
                    "unexpected part in a forwarded response body".into(),
                )),
            })
            .boxed();
        Ok(head.map(|()| body))
    }

    // -- Logs ----------------------------------------------------------------------------------

    /// `Logs.TaskLogs`: the output of a task running on the callee.
    pub async fn task_logs(
        &self,
        task_id: &str,
        opts: &LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine, RpcError>>, RpcError> {
        let r = client!(self, logs_client::LogsClient)
            .task_logs(convert::log_options_to_pb(task_id, opts))
            .await?;
        Ok(r.into_inner()
            .map(|m| convert::log_line_from_pb(m?))
            .boxed())
    }
}

/// Fetches the root CA certificate (PEM) of the swarm at `addr`, as a joining node does before
/// it has a certificate. `bootstrap` is the ClientConfig to use: typically one that presents no
/// client certificate and does not verify the server, because the caller checks the returned
/// PEM against the join token's digest itself.
pub async fn fetch_root_ca(
    addr: &str,
    bootstrap: Arc<rustls::ClientConfig>,
) -> Result<String, RpcError> {
    NodeClient::connect(addr, bootstrap)
        .await?
        .get_root_ca()
        .await
}
