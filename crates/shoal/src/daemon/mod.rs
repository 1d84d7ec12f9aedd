//! `shoal daemon`: one machine's daemon. Serves the Engine API, and while the machine is part
//! of a swarm runs its manager and agent roles (see [`swarm`]).

pub mod backend;
pub mod cluster;
pub mod host;
pub mod identity;
pub mod leadership;
pub mod raft_glue;
pub mod renewal;
pub mod roles;
pub mod swarm;
#[cfg(test)]
mod testing;

use anyhow::{bail, Context};
use clap::Parser;
use shoal_agent::runtime::Runtime;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `shoal daemon`, named as dockerd's.
#[derive(Parser, Debug)]
#[command(
    name = "shoal daemon",
    about = "Run the Shoal daemon (one per machine)"
)]
pub struct DaemonArgs {
    /// Root directory of persistent state.
    #[arg(long, default_value = "/var/lib/shoal")]
    pub data_root: PathBuf,
    /// Socket(s) to listen on: unix:///path or tcp://IP:PORT.
    #[arg(short = 'H', long = "host")]
    pub hosts: Vec<String>,
    /// Runtime for tasks whose service names none.
    #[arg(long, default_value = "process")]
    pub default_runtime: String,
    /// Log level: trace, debug, info, warn, error.
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,
    /// Use TLS; implied by --tlsverify.
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and verify the remote (require client certificates signed by --tlscacert).
    #[arg(long)]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA.
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file.
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file.
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
    /// Keep task processes running when the daemon stops; a restarted daemon adopts them.
    #[arg(long)]
    pub live_restore: bool,
    /// Address to advertise to other nodes when `swarm init`/`join` name none (as dockerd's
    /// flag). A loopback address here also makes the cluster listener bind only to it, so
    /// several daemons can share one machine (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, value_name = "IP")]
    pub swarm_default_advertise_addr: Option<String>,
    /// CPUs this node reports (`NCPU`, node resources) instead of the host's; set by
    /// `shoal machine create --cpus`.
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub node_cpus: Option<u32>,
    /// Memory in MB this node reports (`MemTotal`, node resources) instead of the host's; set
    /// by `shoal machine create --memory`.
    #[arg(long, value_name = "MB", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_memory: Option<u64>,
    /// How tasks are networked: `kernel` (own network namespaces, VXLAN overlays, nftables
    /// for the routing mesh and VIPs), `userspace` (the same, with the routing mesh in a proxy
    /// of the daemon and VIP names resolved to tasks), `none` (tasks share the node's network),
    /// or `auto`: kernel when nftables NAT works here, else userspace; none when not root.
    #[arg(long, value_name = "MODE", env = "SHOAL_DATA_PLANE", default_value = "auto", value_parser = ["auto", "kernel", "userspace", "none"])]
    pub data_plane: String,
}

/// The log filter for `--log-level LEVEL` when `RUST_LOG` is not set. Below debug, openraft's
/// own messages are left out: it logs every failed message to an unreachable manager as an
/// error (several a second for as long as a partition lasts); the daemon reports those
/// managers itself, once, as they become unreachable and reachable again.
pub fn default_filter(level: &str) -> String {
    match level {
        "debug" | "trace" => level.to_string(),
        _ => format!("{level},openraft=off,hickory_server=warn,hickory_proto=warn"),
    }
}

/// The datapath `--data-plane MODE` asks for on this machine.
async fn resolve_datapath(mode: &str) -> anyhow::Result<Option<shoal_net::dataplane::Datapath>> {
    use shoal_net::dataplane::{supported, Datapath};
    let forced = match mode {
        "none" => return Ok(None),
        "kernel" => Some(Datapath::Kernel),
        "userspace" => Some(Datapath::Userspace),
        _ => None,
    };
    if !supported() {
        if forced.is_some() {
            bail!("--data-plane {mode} needs root (network namespaces, links)");
        }
        tracing::warn!("not running as root: tasks share the node's network (--data-plane none)");
        return Ok(None);
    }
    Ok(Some(match forced {
        Some(d) => d,
        None => Datapath::probe().await,
    }))
}

/// Default API socket.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";

/// Entry point of `shoal daemon ARGS...` (`args` excludes the program and verb).
pub fn main(args: Vec<OsString>) -> i32 {
    let mut argv = vec![OsString::from("shoal daemon")];
    argv.extend(args);
    let args = match DaemonArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter(&args.log_level)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal daemon: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("shoal daemon: {e:#}");
            1
        }
    }
}

async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_root)
        .with_context(|| format!("creating data root {}", args.data_root.display()))?;
    let data_root = std::fs::canonicalize(&args.data_root)?;
    let hosts = if args.hosts.is_empty() {
        vec![DEFAULT_HOST.to_string()]
    } else {
        args.hosts.clone()
    };
    let listeners = backend::listeners(&hosts, &args).await?;

    let exe = std::env::current_exe().context("locating the shoal executable for task shims")?;
    let mut runtimes: HashMap<String, Arc<dyn Runtime>> = HashMap::new();
    runtimes.insert(
        "process".into(),
        Arc::new(shoal_agent::process::ProcessRuntime::new(
            data_root.join("runtime").join("process"),
            shoal_agent::process::ShimCommand {
                program: exe,
                args: vec!["shim".into()],
            },
        )),
    );
    if !runtimes.contains_key(&args.default_runtime) {
        bail!(
            "unknown default runtime {:?}; available: process",
            args.default_runtime
        );
    }
    let datapath = resolve_datapath(&args.data_plane).await?;
    let daemon = swarm::Daemon::new(
        swarm::DaemonConfig {
            datapath,
            datapath_auto: args.data_plane == "auto",
            data_root: data_root.clone(),
            default_runtime: args.default_runtime.clone(),
            live_restore: args.live_restore,
            default_advertise_addr: args.swarm_default_advertise_addr.clone(),
        },
        host::Host::probe().with_resources(args.node_cpus, args.node_memory),
        runtimes,
    );
    daemon.resume().await.context("resuming the swarm")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let backend = Arc::new(backend::DaemonBackend::new(Arc::clone(&daemon)));
    let mut servers = Vec::new();
    for l in listeners {
        let mut rx = stop_rx.clone();
        let b: Arc<dyn shoal_engine_api::backend::SwarmBackend> = backend.clone();
        servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            if let Err(e) = shoal_engine_api::server::serve_bound(l, b, shutdown).await {
                tracing::error!(error = %e, "API server failed");
            }
        }));
    }
    tracing::info!(data_root = %data_root.display(), hosts = ?hosts, "shoal daemon started");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    daemon.shutdown().await;
    for s in servers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s).await;
    }
    Ok(())
}
