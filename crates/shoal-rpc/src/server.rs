//! The server: all five services on one listener, behind mutual TLS.
//!
//! ```text
//!  serve(listener, ServerConfig, PeerFn, Handlers, shutdown)
//!    tls::incoming ─► tonic Server (HTTP/2 only, keepalive 15 s)
//!       ├─ Ca          CaSvc ─┐
//!       ├─ Dispatcher  DispSvc ├─ each call: authorize(Method, ConnInfo) ─► handler(peer, ..)
//!       ├─ Raft        RaftSvc │     (auth::Method::access is the policy table)
//!       ├─ Control     CtlSvc  │
//!       └─ Logs        LogsSvc ┘
//!  shutdown = true ─► stop accepting; streams (assignments, logs, forwarded bodies) end;
//!                     in-flight unary calls finish; after SHUTDOWN_GRACE the server returns anyway
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_raft::RpcKind;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::{authorize, authorize_node, ConnInfo, Method, PeerFn};
use crate::convert;
use crate::handlers::{Handlers, IssueRequest, ManagerMember};
use crate::pb;
use crate::RpcError;

/// How long [`serve`] waits for open calls after `shutdown` before returning anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The largest message either side accepts (raft snapshots and forwarded API bodies are big).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 keepalive ping interval, both sides: a dead peer is noticed on idle streams.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a keepalive ping may go unanswered.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Resolves once `rx` holds `true`, or its sender is gone (nobody can stop us any more, so we
/// stop).
pub(crate) async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Serves the node-to-node protocol on `listener` until `shutdown` turns true (or its sender is
/// dropped).
///
/// `tls` is used as is: it decides which client certificates are accepted (and whether a client
/// may present none, as a joining node does). `peer_fn` maps each verified client certificate
/// to a [`crate::Peer`]. Services without a handler answer `Unimplemented`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    peer_fn: PeerFn,
    handlers: Handlers,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RpcError> {
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, ?handlers, "serving the node-to-node protocol");
    let incoming = crate::tls::incoming(listener, tls, peer_fn, shutdown.clone());

    macro_rules! svc {
        ($module:ident :: $server:ident, $inner:expr) => {
            pb::$module::$server::new($inner)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        };
    }
    let stop = shutdown.clone();
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(svc!(
            ca_server::CaServer,
            CaSvc {
                h: handlers.ca.clone()
            }
        ))
        .add_service(svc!(
            dispatcher_server::DispatcherServer,
            DispSvc {
                h: handlers.dispatcher.clone(),
                stop: stop.clone(),
            }
        ))
        .add_service(svc!(
            raft_server::RaftServer,
            RaftSvc {
                h: handlers.raft.clone()
            }
        ))
        .add_service(svc!(
            control_server::ControlServer,
            CtlSvc {
                h: handlers.control.clone(),
                stop: stop.clone(),
            }
        ))
        .add_service(svc!(
            logs_server::LogsServer,
            LogsSvc {
                h: handlers.logs.clone(),
                stop: stop.clone(),
            }
        ));

    let mut signal = shutdown.clone();
    let server = router.serve_with_incoming_shutdown(incoming, async move {
        wait_for_shutdown(&mut signal).await;
    });
    let mut deadline = shutdown;
    let res = tokio::select! {
        r = server => r.map_err(|e| RpcError::Internal(format!(
            "node-to-node server failed: {}", crate::tls::error_chain(&e)
        ))),
        _ = async {
            wait_for_shutdown(&mut deadline).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("node-to-node calls still open after the shutdown grace period; closing");
            Ok(())
        }
    };
    tracing::info!(addr = ?local, "node-to-node server stopped");
    res
}

fn conn<T>(req: &Request<T>) -> Option<&ConnInfo> {
    req.extensions().get::<ConnInfo>()
}

fn need<H: ?Sized>(h: &Option<Arc<H>>, method: Method) -> Result<&Arc<H>, Status> {
    h.as_ref().ok_or_else(|| {
        Status::unimplemented(format!(
            "this node does not serve the {} service ({} is not available here)",
            method.service(),
            method
        ))
    })
}

/// Ends `s` when the server shuts down, so graceful shutdown is not held up by open streams.
fn until_shutdown<T: Send + 'static>(
    s: BoxStream<'static, Result<T, Status>>,
    mut stop: watch::Receiver<bool>,
) -> BoxStream<'static, Result<T, Status>> {
    s.take_until(Box::pin(async move { wait_for_shutdown(&mut stop).await }))
        .boxed()
}

fn warn_other_id(method: Method, claimed: &str, actual: &str) {
    if !claimed.is_empty() && claimed != actual {
        tracing::warn!(
            %method, claimed, actual,
            "request names another node; acting for the certificate's node"
        );
    }
}

// ---------------------------------------------------------------------------------------------

struct CaSvc {
    h: Option<Arc<dyn crate::CaHandler>>,
}

#[tonic::async_trait]
impl pb::ca_server::Ca for CaSvc {
    async fn get_root_ca(
        &self,
        req: Request<pb::GetRootCaRequest>,
    ) -> Result<Response<pb::GetRootCaResponse>, Status> {
        let m = Method::CaGetRootCa;
        authorize(m, conn(&req))?;
        let root_pem = need(&self.h, m)?.root_ca().await?;
        Ok(Response::new(pb::GetRootCaResponse { root_pem }))
    }

    async fn issue_certificate(
        &self,
        req: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let m = Method::CaIssueCertificate;
        let caller = authorize(m, conn(&req))?;
        let remote_addr = conn(&req).and_then(|c| c.remote_addr);
        let r = req.into_inner();
        let issued = need(&self.h, m)?
            .issue_certificate(
                caller.as_ref(),
                IssueRequest {
                    csr_pem: r.csr_pem,
                    token: r.token,
                    availability: r.availability,
                    advertise_addr: r.advertise_addr,
                    listen_addr: r.listen_addr,
                    hostname: r.hostname,
                    remote_addr,
                },
            )
            .await?;
        Ok(Response::new(pb::IssueCertificateResponse {
            node_id: issued.node_id,
            cert_pem: issued.cert_pem,
            root_pem: issued.root_pem,
            role: convert::role_to_pb(issued.role).into(),
            manager_addrs: issued.manager_addrs,
            cluster_id: issued.cluster_id,
        }))
    }

    async fn renew_certificate(
        &self,
        req: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let m = Method::CaRenewCertificate;
        let peer = authorize_node(m, conn(&req))?;
        let csr_pem = req.into_inner().csr_pem;
        let cert_pem = need(&self.h, m)?.renew_certificate(&peer, csr_pem).await?;
        Ok(Response::new(pb::RenewCertificateResponse { cert_pem }))
    }
}

// ---------------------------------------------------------------------------------------------

struct DispSvc {
    h: Option<Arc<dyn crate::DispatcherHandler>>,
    stop: watch::Receiver<bool>,
}

/// A role as the session answers name it (empty: unknown).
fn role_text(role: Option<crate::PeerRole>) -> String {
    role.map(|r| r.to_string()).unwrap_or_default()
}

fn period_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispSvc {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let m = Method::DispatcherRegister;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let r = req.into_inner();
        warn_other_id(m, &r.node_id, &peer.node_id);
        let description = convert::from_json("the node description", &r.description_json)?;
        let period = h.register(&peer.node_id, description, &r.addr).await?;
        Ok(Response::new(pb::RegisterResponse {
            period_ms: period_ms(period),
            managers: h.manager_addrs(),
            role: role_text(h.node_role(&peer.node_id)),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let m = Method::DispatcherHeartbeat;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        warn_other_id(m, &req.get_ref().node_id, &peer.node_id);
        let period = h.heartbeat(&peer.node_id).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            period_ms: period_ms(period),
            managers: h.manager_addrs(),
            role: role_text(h.node_role(&peer.node_id)),
        }))
    }

    type AssignmentsStream = BoxStream<'static, Result<pb::AssignmentsMessage, Status>>;

    async fn assignments(
        &self,
        req: Request<pb::AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let m = Method::DispatcherAssignments;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        warn_other_id(m, &req.get_ref().node_id, &peer.node_id);
        let sets = h.assignments(&peer.node_id).await?;
        let out = sets
            .map(|set| {
                convert::to_json("an assignment set", &set)
                    .map(|set_json| pb::AssignmentsMessage { set_json })
                    .map_err(Status::from)
            })
            .boxed();
        Ok(Response::new(until_shutdown(out, self.stop.clone())))
    }

    async fn report_status(
        &self,
        req: Request<pb::ReportStatusRequest>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        let m = Method::DispatcherReportStatus;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let r = req.into_inner();
        warn_other_id(m, &r.node_id, &peer.node_id);
        let updates = convert::from_json("the status updates", &r.updates_json)?;
        h.report(&peer.node_id, updates).await?;
        Ok(Response::new(pb::ReportStatusResponse {}))
    }
}

// ---------------------------------------------------------------------------------------------

struct RaftSvc {
    h: Option<Arc<dyn crate::RaftHandler>>,
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftSvc {
    async fn call(
        &self,
        req: Request<pb::RaftCallRequest>,
    ) -> Result<Response<pb::RaftCallResponse>, Status> {
        let m = Method::RaftCall;
        authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let r = req.into_inner();
        let kind = u8::try_from(r.kind)
            .ok()
            .and_then(RpcKind::from_code)
            .ok_or_else(|| {
                RpcError::InvalidArgument(format!("unknown raft message kind {}", r.kind))
            })?;
        let payload = h.call(kind, r.payload).await?;
        Ok(Response::new(pb::RaftCallResponse { payload }))
    }

    async fn add_manager(
        &self,
        req: Request<pb::AddManagerRequest>,
    ) -> Result<Response<pb::AddManagerResponse>, Status> {
        let m = Method::RaftAddManager;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let r = req.into_inner();
        if !r.node_id.is_empty() && r.node_id != peer.node_id {
            return Err(RpcError::PermissionDenied(format!(
                "node {} may not add node {} as a manager: a manager asks to add itself",
                peer.node_id, r.node_id
            ))
            .into());
        }
        if r.addr.is_empty() {
            return Err(RpcError::InvalidArgument(
                "AddManager needs the new manager's address".into(),
            )
            .into());
        }
        let member = ManagerMember {
            node_id: peer.node_id.clone(),
            raft_id: r.raft_id,
            addr: r.addr,
        };
        h.add_manager(&peer, member).await?;
        Ok(Response::new(pb::AddManagerResponse {}))
    }

    async fn remove_manager(
        &self,
        req: Request<pb::RemoveManagerRequest>,
    ) -> Result<Response<pb::RemoveManagerResponse>, Status> {
        let m = Method::RaftRemoveManager;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let r = req.into_inner();
        let member = ManagerMember {
            node_id: r.node_id,
            raft_id: r.raft_id,
            addr: String::new(),
        };
        h.remove_manager(&peer, member).await?;
        Ok(Response::new(pb::RemoveManagerResponse {}))
    }
}

// ---------------------------------------------------------------------------------------------

struct CtlSvc {
    h: Option<Arc<dyn crate::ControlHandler>>,
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl pb::control_server::Control for CtlSvc {
    async fn forward_api(
        &self,
        req: Request<pb::ApiRequest>,
    ) -> Result<Response<pb::ApiResponse>, Status> {
        let m = Method::ControlForwardApi;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let http_req = convert::request_from_pb(req.into_inner())?;
        let resp = h.forward_api(&peer, http_req).await?;
        Ok(Response::new(convert::response_to_pb(resp)))
    }

    type ForwardApiStreamStream = BoxStream<'static, Result<pb::ApiResponseChunk, Status>>;

    async fn forward_api_stream(
        &self,
        req: Request<pb::ApiRequest>,
    ) -> Result<Response<Self::ForwardApiStreamStream>, Status> {
        let m = Method::ControlForwardApiStream;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let http_req = convert::request_from_pb(req.into_inner())?;
        let resp = h.forward_api_stream(&peer, http_req).await?;
        let head = pb::ApiResponseChunk {
            part: Some(pb::api_response_chunk::Part::Head(convert::head_to_pb(
                &resp,
            ))),
        };
        let body = resp.into_body().map(|chunk| {
            chunk
                .map(|b| pb::ApiResponseChunk {
                    part: Some(pb::api_response_chunk::Part::Body(b.to_vec())),
                })
                .map_err(Status::from)
        });
        let out = futures::stream::once(async move { Ok(head) })
            .chain(body)
            .boxed();
        Ok(Response::new(until_shutdown(out, self.stop.clone())))
    }
}

// ---------------------------------------------------------------------------------------------

struct LogsSvc {
    h: Option<Arc<dyn crate::LogsHandler>>,
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl pb::logs_server::Logs for LogsSvc {
    type TaskLogsStream = BoxStream<'static, Result<pb::LogLineMessage, Status>>;

    async fn task_logs(
        &self,
        req: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        let m = Method::LogsTaskLogs;
        let peer = authorize_node(m, conn(&req))?;
        let h = need(&self.h, m)?;
        let r = req.into_inner();
        if r.task_id.is_empty() {
            return Err(RpcError::InvalidArgument("TaskLogs needs a task id".into()).into());
        }
        let opts = convert::log_options_from_pb(&r);
        let lines = h.task_logs(&peer, &r.task_id, opts).await?;
        let out = lines.map(|l| Ok(convert::log_line_to_pb(l))).boxed();
        Ok(Response::new(until_shutdown(out, self.stop.clone())))
    }
}
