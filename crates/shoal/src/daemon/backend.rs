//! The daemon's side of the Engine API server: [`DaemonBackend`] answers the server's questions
//! about this node and carries out swarm init/leave; `listeners` opens the `-H` sockets.

use super::swarm::{Daemon, InitOptions, SwarmOpError};
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
        match self.daemon.current() {
            None => SwarmStatus::inactive(),
            Some((id, _)) => SwarmStatus {
                state: LocalNodeState::Active,
                node_id: id.node_id.clone(),
                node_addr: id
                    .advertise_addr
                    .rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_default(),
                control_available: id.manager,
                error: String::new(),
                remote_managers: vec![(id.node_id.clone(), id.advertise_addr.clone())],
            },
        }
    }

    fn manager(&self) -> Option<(Store, Arc<Control>)> {
        let (id, control) = self.daemon.current()?;
        id.manager.then(|| (self.daemon.store.clone(), control))
    }

    async fn init(&self, full: InitRequest) -> Result<String, ApiError> {
        let req = full.base;
        if req.force_new_cluster == Some(true) && self.daemon.current().is_some() {
            // A one-member cluster is already its own majority: nothing to recover.
            return Ok(self
                .daemon
                .current()
                .map(|(id, _)| id.node_id)
                .unwrap_or_default());
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
        };
        self.daemon.init(opts).await.map_err(api_err)
    }

    async fn join(&self, _req: JoinRequest) -> Result<(), ApiError> {
        if self.daemon.current().is_some() {
            return Err(ApiError::already_in_swarm());
        }
        Err(ApiError::NotImplemented(
            "joining another node's swarm is not supported by this version of Shoal yet".into(),
        ))
    }

    async fn leave(&self, force: bool) -> Result<(), ApiError> {
        self.daemon.leave(force).await.map_err(api_err)
    }

    async fn unlock(&self, _key: String) -> Result<(), ApiError> {
        Err(ApiError::not_locked())
    }

    fn unlock_key(&self) -> Result<String, ApiError> {
        if self.daemon.current().is_none() {
            return Err(ApiError::no_swarm());
        }
        Ok(String::new())
    }

    async fn task_logs(
        &self,
        task: &shoal_api::Task,
        opts: shoal_agent::runtime::LogOptions,
    ) -> Result<futures::stream::BoxStream<'static, shoal_agent::runtime::LogLine>, ApiError> {
        let local = self.daemon.current().map(|(id, _)| id.node_id);
        if task.node_id.is_none() || task.node_id != local {
            // Not run here (or never run): no output.
            return Ok(Box::pin(futures::stream::empty()));
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
