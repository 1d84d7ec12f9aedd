//! The daemon's side of the Engine API server: [`DaemonBackend`] answers the server's questions
//! about this node and carries out swarm init/join/leave/unlock; `listeners` opens the `-H`
//! sockets. Task logs of a task on another node come from that node's Logs service.

use super::swarm::{Daemon, InitOptions, JoinOptions, SwarmOpError};
use super::DaemonArgs;
use shoal_api::engine;
use shoal_engine_api::backend::{
    HostInfo, InitRequest, JoinRequest, LocalNodeState, SwarmBackend, SwarmStatus,
};
use shoal_engine_api::error::ApiError;
use shoal_manager::control::Control;
use shoal_store::Store;
use std::sync::Arc;

/// Implements the API server's backend on top of the [`Daemon`].
pub struct DaemonBackend {
    daemon: Arc<Daemon>,
}

impl DaemonBackend {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        DaemonBackend { daemon }
    }
}

fn api_err(e: SwarmOpError) -> ApiError {
    match e {
        SwarmOpError::Unavailable(m) => ApiError::unavailable(m),
        SwarmOpError::InvalidArgument(m) => ApiError::bad_request(m),
        SwarmOpError::Internal(e) => ApiError::internal(format!("{e:#}")),
    }
}

#[async_trait::async_trait]
impl SwarmBackend for DaemonBackend {
    fn status(&self) -> SwarmStatus {
        if let Some(node_id) = self.daemon.locked_node() {
            return SwarmStatus {
                state: LocalNodeState::Locked,
                node_id,
                ..SwarmStatus::inactive()
            };
        }
        match self.daemon.current() {
            None => SwarmStatus::inactive(),
            Some(cur) => SwarmStatus {
                state: LocalNodeState::Active,
                node_id: cur.identity.node_id.clone(),
                node_addr: super::cluster::host_of(&cur.identity.advertise_addr),
                control_available: cur.identity.manager,
                error: String::new(),
                remote_managers: self.daemon.remote_managers(&cur),
            },
        }
    }

    fn manager(&self) -> Option<(Store, Arc<Control>)> {
        let control = self.daemon.current()?.control?;
        Some((self.daemon.store.clone(), control))
    }

    async fn init(&self, full: InitRequest) -> Result<String, ApiError> {
        let req = full.base;
        if req.force_new_cluster == Some(true) && self.daemon.current().is_some() {
            return self.daemon.force_new_cluster().await.map_err(api_err);
        }
        let availability = match full.availability.as_deref() {
            None | Some("") | Some("active") => None,
            Some("pause") => Some(engine::NodeSpecAvailabilityEnum::PAUSE),
            Some("drain") => Some(engine::NodeSpecAvailabilityEnum::DRAIN),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid availability {other:?}: expected active, pause or drain"
                )))
            }
        };
        let opts = InitOptions {
            advertise_addr: req.advertise_addr.unwrap_or_default(),
            listen_addr: req.listen_addr.unwrap_or_default(),
            availability,
            spec: req.spec,
            default_addr_pool: req.default_addr_pool.unwrap_or_default(),
            subnet_size: req.subnet_size.unwrap_or(0),
            data_path_port: req.data_path_port.unwrap_or(0),
            autolock: full.autolock.unwrap_or(false),
        };
        self.daemon.init(opts).await.map_err(api_err)
    }

    async fn join(&self, req: JoinRequest) -> Result<(), ApiError> {
        if self.daemon.current().is_some() || self.daemon.locked_node().is_some() {
            return Err(ApiError::already_in_swarm());
        }
        let availability = req.availability.clone().unwrap_or_default();
        if !matches!(availability.as_str(), "" | "active" | "pause" | "drain") {
            return Err(ApiError::bad_request(format!(
                "invalid availability {availability:?}: expected active, pause or drain"
            )));
        }
        let base = req.base;
        let opts = JoinOptions {
            remote_addrs: base.remote_addrs.unwrap_or_default(),
            token: base.join_token.unwrap_or_default(),
            advertise_addr: base.advertise_addr.unwrap_or_default(),
            listen_addr: base.listen_addr.unwrap_or_default(),
            availability,
        };
        self.daemon.join(opts).await.map_err(api_err)
    }

    async fn leave(&self, force: bool) -> Result<(), ApiError> {
        self.daemon.leave(force).await.map_err(api_err)
    }

    async fn unlock(&self, key: String) -> Result<(), ApiError> {
        if self.daemon.locked_node().is_none() {
            return Err(ApiError::not_locked());
        }
        self.daemon.unlock(&key).await.map_err(api_err)
    }

    fn unlock_key(&self) -> Result<String, ApiError> {
        if self.daemon.current().is_none() {
            return Err(ApiError::no_swarm());
        }
        Ok(self.daemon.unlock_key().unwrap_or_default())
    }

    async fn update_autolock(&self, autolock: bool, rotate: bool) -> Result<(), ApiError> {
        self.daemon
            .update_autolock(autolock, rotate)
            .await
            .map_err(api_err)
    }

    async fn task_logs(
        &self,
        task: &shoal_api::Task,
        opts: shoal_agent::runtime::LogOptions,
    ) -> Result<futures::stream::BoxStream<'static, shoal_agent::runtime::LogLine>, ApiError> {
        let Some(cur) = self.daemon.current() else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let Some(node_id) = task.node_id.clone() else {
            // Never scheduled: no output.
            return Ok(Box::pin(futures::stream::empty()));
        };
        if node_id != cur.identity.node_id {
            return remote_task_logs(&self.daemon.store, &cur, &node_id, &task.id, opts).await;
        }
        let runtime_name = self.daemon.store.view(|s| {
            s.services
                .get(&task.service_id)
                .and_then(|svc| shoal_api::spec::runtime_name(&svc.spec))
        });
        let name = runtime_name.unwrap_or_else(|| self.daemon.cfg.default_runtime.clone());
        let Some(rt) = self.daemon.runtimes.get(&name) else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        match rt.logs(&task.id, opts).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_found() => Ok(Box::pin(futures::stream::empty())),
            Err(e) => Err(ApiError::internal(e.to_string())),
        }
    }

    fn host_info(&self) -> HostInfo {
        let h = &self.daemon.host;
        let mut runtimes: Vec<String> = self.daemon.runtimes.keys().cloned().collect();
        runtimes.sort();
        HostInfo {
            name: h.hostname.clone(),
            ncpu: h.ncpu,
            mem_total: h.mem_total,
            os: h.os.clone(),
            kernel: h.kernel.clone(),
            arch: h.arch.clone(),
            data_root: self.daemon.cfg.data_root.display().to_string(),
            default_runtime: self.daemon.cfg.default_runtime.clone(),
            runtimes,
            server_version: crate::VERSION.to_string(),
            labels: Vec::new(),
        }
    }
}

/// The output of a task that runs on another node, from that node's Logs service (dialed by
/// its node ID, which its certificate carries). A node that cannot be reached contributes
/// nothing, as Docker shows what it can.
async fn remote_task_logs(
    store: &Store,
    cur: &super::swarm::Current,
    node_id: &str,
    task_id: &str,
    opts: shoal_agent::runtime::LogOptions,
) -> Result<futures::stream::BoxStream<'static, shoal_agent::runtime::LogLine>, ApiError> {
    use futures::StreamExt;
    let addr = store.view(|s| s.nodes.get(node_id).map(|n| n.addr_port.clone()));
    let Some(addr) = addr.filter(|a| !a.is_empty()) else {
        return Ok(Box::pin(futures::stream::empty()));
    };
    let client_opts = shoal_rpc::ClientOptions::default()
        .with_server_name(node_id)
        .with_connect_timeout(std::time::Duration::from_secs(3))
        .with_request_timeout(Some(std::time::Duration::from_secs(10)));
    let res = async {
        let client =
            shoal_rpc::NodeClient::connect_with(&addr, cur.client_tls.clone(), client_opts).await?;
        client.task_logs(task_id, &opts).await
    }
    .await;
    match res {
        Ok(stream) => Ok(stream
            .take_while(|line| futures::future::ready(line.is_ok()))
            .filter_map(|line| futures::future::ready(line.ok()))
            .boxed()),
        Err(shoal_rpc::RpcError::NotFound(_)) => Ok(Box::pin(futures::stream::empty())),
        Err(e) => {
            tracing::warn!(node = %node_id, task = %task_id, error = %e, "reading a remote task's logs");
            Ok(Box::pin(futures::stream::empty()))
        }
    }
}

/// Turns the `-H` addresses into bound listeners. TCP off loopback requires TLS, as dockerd does.
pub async fn listeners(
    hosts: &[String],
    args: &DaemonArgs,
) -> anyhow::Result<Vec<shoal_engine_api::server::Bound>> {
    let mut out = Vec::new();
    for h in hosts {
        let l = parse_host(h, args)?;
        let bound = shoal_engine_api::server::bind(l)
            .await
            .map_err(|e| anyhow::anyhow!("listening on {h}: {e}"))?;
        out.push(bound);
    }
    Ok(out)
}

/// Parses one `-H` value.
pub fn parse_host(h: &str, args: &DaemonArgs) -> anyhow::Result<shoal_engine_api::Listener> {
    use shoal_engine_api::server::TlsFiles;
    if let Some(path) = h.strip_prefix("unix://") {
        if path.is_empty() {
            anyhow::bail!("invalid host {h:?}: empty socket path");
        }
        return Ok(shoal_engine_api::Listener::Unix(path.into()));
    }
    if let Some(addr) = h.strip_prefix("tcp://") {
        let addr: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid host {h:?}: {e} (expected tcp://IP:PORT)"))?;
        let tls = args.tls || args.tlsverify;
        let tls = if tls {
            let (Some(cert), Some(key)) = (args.tlscert.clone(), args.tlskey.clone()) else {
                anyhow::bail!("--tls/--tlsverify need --tlscert and --tlskey");
            };
            if args.tlsverify && args.tlscacert.is_none() {
                anyhow::bail!("--tlsverify needs --tlscacert to verify clients against");
            }
            Some(TlsFiles {
                cert,
                key,
                ca: args.tlscacert.clone(),
                verify_clients: args.tlsverify,
            })
        } else {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "API-Endpoint: binding to {h} without TLS is not allowed: anyone on the network could control this daemon; use --tlsverify with --tlscacert, --tlscert and --tlskey, or listen on a loopback address"
                );
            }
            None
        };
        return Ok(shoal_engine_api::Listener::Tcp { addr, tls });
    }
    anyhow::bail!("invalid host {h:?}: use unix:///path or tcp://IP:PORT")
}
