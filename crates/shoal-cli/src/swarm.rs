//! `shoal swarm ...`: init, join, leave, join-token, update, unlock and
//! unlock-key, with docker's messages (join instructions, unlock-key notice).

use std::io::{BufRead, IsTerminal};

use bollard::models::{
    Swarm, SwarmSpec, SwarmSpecCaConfig, SwarmSpecDispatcher, SwarmSpecEncryptionConfig,
    SwarmSpecOrchestration, SwarmSpecRaft,
};
use bollard::query_parameters::{LeaveSwarmOptions, UpdateSwarmOptions};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{CliError, Client, Endpoint};
use crate::format::out;
use crate::opts;

/// The command shown in join instructions (docker's exact text).
pub const JOIN_COMMAND: &str = "docker swarm join";

/// `swarm` subcommands.
#[derive(Subcommand, Debug)]
pub enum SwarmCommand {
    /// Initialize a swarm
    Init(InitArgs),
    /// Join a swarm as a node and/or manager
    Join(JoinArgs),
    /// Manage join tokens
    #[command(name = "join-token")]
    JoinToken(JoinTokenArgs),
    /// Leave the swarm
    Leave(LeaveArgs),
    /// Update the swarm
    Update(UpdateArgs),
    /// Unlock swarm
    Unlock,
    /// Manage the unlock key
    #[command(name = "unlock-key")]
    UnlockKey(UnlockKeyArgs),
}

/// Flags shared by `swarm init` and `swarm update`.
#[derive(Args, Debug, Clone, Default)]
pub struct SwarmSpecArgs {
    /// Validity period for node certificates (ns|us|ms|s|m|h) (default 2160h0m0s)
    #[arg(long = "cert-expiry", value_name = "duration", value_parser = opts::any_duration)]
    pub cert_expiry: Option<i64>,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h) (default 5s)
    #[arg(long = "dispatcher-heartbeat", value_name = "duration", value_parser = opts::any_duration)]
    pub dispatcher_heartbeat: Option<i64>,
    /// Number of additional Raft snapshots to retain
    #[arg(long = "max-snapshots", value_name = "uint")]
    pub max_snapshots: Option<u64>,
    /// Number of log entries between Raft snapshots (default 10000)
    #[arg(long = "snapshot-interval", value_name = "uint")]
    pub snapshot_interval: Option<u64>,
    /// Task history retention limit (default 5)
    #[arg(
        long = "task-history-limit",
        value_name = "int",
        allow_negative_numbers = true
    )]
    pub task_history_limit: Option<i64>,
}

impl SwarmSpecArgs {
    fn any(&self) -> bool {
        self.cert_expiry.is_some()
            || self.dispatcher_heartbeat.is_some()
            || self.max_snapshots.is_some()
            || self.snapshot_interval.is_some()
            || self.task_history_limit.is_some()
    }

    /// Applies the given flags to `spec` (docker's `mergeSwarmSpec`).
    pub fn merge(&self, spec: &mut SwarmSpec, autolock: Option<bool>) {
        if let Some(v) = self.task_history_limit {
            spec.orchestration
                .get_or_insert_with(SwarmSpecOrchestration::default)
                .task_history_retention_limit = Some(v);
        }
        if let Some(v) = self.dispatcher_heartbeat {
            spec.dispatcher
                .get_or_insert_with(SwarmSpecDispatcher::default)
                .heartbeat_period = Some(v);
        }
        if let Some(v) = self.max_snapshots {
            spec.raft
                .get_or_insert_with(SwarmSpecRaft::default)
                .keep_old_snapshots = Some(v);
        }
        if let Some(v) = self.snapshot_interval {
            spec.raft
                .get_or_insert_with(SwarmSpecRaft::default)
                .snapshot_interval = Some(v);
        }
        if let Some(v) = autolock {
            spec.encryption_config
                .get_or_insert_with(SwarmSpecEncryptionConfig::default)
                .auto_lock_managers = Some(v);
        }
        if let Some(v) = self.cert_expiry {
            spec.ca_config
                .get_or_insert_with(SwarmSpecCaConfig::default)
                .node_cert_expiry = Some(v);
        }
    }
}

fn availability(s: &str) -> Result<String, String> {
    let l = s.to_lowercase();
    match l.as_str() {
        "active" | "pause" | "drain" => Ok(l),
        _ => Err(format!(
            "invalid availability \"{s}\", only active, pause and drain are supported"
        )),
    }
}

/// `swarm init` flags.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// Advertised address (format: "<ip|interface>[:port]")
    #[arg(long = "advertise-addr", value_name = "string")]
    pub advertise_addr: Option<String>,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager)
    #[arg(long)]
    pub autolock: bool,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_name = "string", value_parser = availability)]
    pub availability: Option<String>,
    /// Address or interface to use for data path traffic (format: "<ip|interface>")
    #[arg(long = "data-path-addr", value_name = "string")]
    pub data_path_addr: Option<String>,
    /// Port number to use for data path traffic (1024 - 49151). If no value is set or is set to 0, the default port (4789) is used.
    #[arg(long = "data-path-port", value_name = "uint32")]
    pub data_path_port: Option<u32>,
    /// default address pool in CIDR format
    #[arg(
        long = "default-addr-pool",
        value_name = "ipNetSlice",
        value_delimiter = ','
    )]
    pub default_addr_pool: Vec<String>,
    /// default address pool subnet mask length
    #[arg(
        long = "default-addr-pool-mask-length",
        value_name = "uint32",
        default_value_t = 24
    )]
    pub default_addr_pool_mask_length: u32,
    /// Force create a new cluster from current state
    #[arg(long = "force-new-cluster")]
    pub force_new_cluster: bool,
    /// Listen address (format: "<ip|interface>[:port]")
    #[arg(long = "listen-addr", value_name = "node-addr", default_value = "0.0.0.0:2377", value_parser = opts::node_addr)]
    pub listen_addr: String,
    #[command(flatten)]
    pub spec: SwarmSpecArgs,
}

/// `swarm join` flags.
#[derive(Args, Debug, Clone)]
pub struct JoinArgs {
    /// Advertised address (format: "<ip|interface>[:port]")
    #[arg(long = "advertise-addr", value_name = "string")]
    pub advertise_addr: Option<String>,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_name = "string", value_parser = availability)]
    pub availability: Option<String>,
    /// Address or interface to use for data path traffic (format: "<ip|interface>")
    #[arg(long = "data-path-addr", value_name = "string")]
    pub data_path_addr: Option<String>,
    /// Listen address (format: "<ip|interface>[:port]")
    #[arg(long = "listen-addr", value_name = "node-addr", default_value = "0.0.0.0:2377", value_parser = opts::node_addr)]
    pub listen_addr: String,
    /// Token for entry into the swarm
    #[arg(long, value_name = "string", default_value = "")]
    pub token: String,
    /// Address of a manager
    #[arg(value_name = "HOST:PORT")]
    pub remote: String,
}

/// `swarm join-token` flags.
#[derive(Args, Debug, Clone)]
pub struct JoinTokenArgs {
    /// Only display token
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Rotate join token
    #[arg(long)]
    pub rotate: bool,
    /// worker or manager
    #[arg(value_name = "worker|manager")]
    pub role: String,
}

/// `swarm leave` flags.
#[derive(Args, Debug, Clone)]
pub struct LeaveArgs {
    /// Force this node to leave the swarm, ignoring warnings
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `swarm update` flags.
#[derive(Args, Debug, Clone)]
pub struct UpdateArgs {
    /// Change manager autolocking setting (true|false)
    #[arg(long, value_name = "bool", num_args = 0..=1, default_missing_value = "true", require_equals = false)]
    pub autolock: Option<bool>,
    #[command(flatten)]
    pub spec: SwarmSpecArgs,
}

/// `swarm unlock-key` flags.
#[derive(Args, Debug, Clone)]
pub struct UnlockKeyArgs {
    /// Only display token
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Rotate unlock key
    #[arg(long)]
    pub rotate: bool,
}

/// Runs a `swarm` subcommand.
pub async fn run(host: &Endpoint, cmd: SwarmCommand) -> Result<(), CliError> {
    if let SwarmCommand::JoinToken(a) = &cmd {
        if a.role != "worker" && a.role != "manager" {
            return Err(CliError::msg(format!("unknown role {}", a.role)));
        }
    }
    if let SwarmCommand::Update(a) = &cmd {
        if a.autolock.is_none() && !a.spec.any() {
            crate::print_help(&["swarm", "update"]);
            return Ok(());
        }
    }
    let client = Client::connect(host).await?;
    match cmd {
        SwarmCommand::Init(a) => init(&client, a).await,
        SwarmCommand::Join(a) => join(&client, a).await,
        SwarmCommand::JoinToken(a) => join_token(&client, a).await,
        SwarmCommand::Leave(a) => {
            client
                .docker
                .leave_swarm(Some(LeaveSwarmOptions { force: a.force }))
                .await?;
            out("Node left the swarm.\n");
            Ok(())
        }
        SwarmCommand::Update(a) => update(&client, a).await,
        SwarmCommand::Unlock => unlock(&client).await,
        SwarmCommand::UnlockKey(a) => unlock_key(&client, a).await,
    }
}

/// Builds the `POST /swarm/init` body as docker's `swarm.InitRequest`.
pub fn init_request(a: &InitArgs) -> Value {
    let mut spec = SwarmSpec::default();
    a.spec
        .merge(&mut spec, if a.autolock { Some(true) } else { None });
    let mut body = json!({
        "ListenAddr": a.listen_addr,
        "AdvertiseAddr": a.advertise_addr.clone().unwrap_or_default(),
        "DataPathAddr": a.data_path_addr.clone().unwrap_or_default(),
        "DataPathPort": a.data_path_port.unwrap_or(0),
        "DefaultAddrPool": a.default_addr_pool,
        "ForceNewCluster": a.force_new_cluster,
        "Spec": serde_json::to_value(&spec).unwrap_or_else(|_| json!({})),
        "AutoLockManagers": a.autolock,
        "SubnetSize": a.default_addr_pool_mask_length,
    });
    if let Some(av) = &a.availability {
        body["Availability"] = json!(av);
    }
    body
}

/// The join instructions docker prints for a role.
pub fn join_instructions(role: &str, token: &str, addr: &str) -> String {
    format!(
        "To add a {role} to this swarm, run the following command:\n\n    {JOIN_COMMAND} --token {token} {addr}\n\n"
    )
}

/// The unlock-key notice docker prints.
pub fn unlock_notice(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    format!(
        "To unlock a swarm manager after it restarts, run the `docker swarm unlock`\ncommand and provide the following key:\n\n    {key}\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    )
}

async fn print_join_command(
    client: &Client,
    node_id: &str,
    worker: bool,
    manager: bool,
) -> Result<(), CliError> {
    let node = client.docker.inspect_node(node_id).await?;
    let sw = client.docker.inspect_swarm().await?;
    let tokens = sw.join_tokens.unwrap_or_default();
    if let Some(ms) = node.manager_status {
        let addr = ms.addr.unwrap_or_default();
        if worker {
            out(&join_instructions(
                "worker",
                tokens.worker.as_deref().unwrap_or(""),
                &addr,
            ));
        }
        if manager {
            out(&join_instructions(
                "manager",
                tokens.manager.as_deref().unwrap_or(""),
                &addr,
            ));
        }
    }
    Ok(())
}

async fn get_unlock_key(client: &Client) -> Result<String, CliError> {
    let raw = client
        .get_raw("/swarm/unlockkey", &[])
        .await
        .map_err(|e| CliError::msg(format!("could not fetch unlock key: {e}")))?;
    let v: Value = serde_json::from_str(&raw)
        .map_err(|e| CliError::msg(format!("could not fetch unlock key: {e}")))?;
    Ok(v.get("UnlockKey")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string())
}

async fn init(client: &Client, a: InitArgs) -> Result<(), CliError> {
    let raw = match client
        .post_json("/swarm/init", &[], &init_request(&a))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let text = e.to_string();
            if text.contains("could not choose an IP address to advertise")
                || text.contains("could not find the system's IP address")
            {
                return Err(CliError::msg(format!(
                    "{text} - specify one with --advertise-addr"
                )));
            }
            return Err(e);
        }
    };
    let node_id: String = serde_json::from_str(&raw).unwrap_or_else(|_| raw.trim().to_string());
    out(&format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n"
    ));
    print_join_command(client, &node_id, true, false).await?;
    out("To add a manager to this swarm, run 'docker swarm join-token manager' and follow the instructions.\n");
    if a.autolock {
        let key = get_unlock_key(client).await?;
        out(&unlock_notice(&key));
    }
    Ok(())
}

/// Builds the `POST /swarm/join` body as docker's `swarm.JoinRequest`.
pub fn join_request(a: &JoinArgs) -> Value {
    let mut body = json!({
        "ListenAddr": a.listen_addr,
        "AdvertiseAddr": a.advertise_addr.clone().unwrap_or_default(),
        "DataPathAddr": a.data_path_addr.clone().unwrap_or_default(),
        "RemoteAddrs": [a.remote],
        "JoinToken": a.token,
    });
    if let Some(av) = &a.availability {
        body["Availability"] = json!(av);
    }
    body
}

async fn join(client: &Client, a: JoinArgs) -> Result<(), CliError> {
    client
        .post_json("/swarm/join", &[], &join_request(&a))
        .await?;
    let info = client.info().await?;
    let manager = info
        .pointer("/Swarm/ControlAvailable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if manager {
        out("This node joined a swarm as a manager.\n");
    } else {
        out("This node joined a swarm as a worker.\n");
    }
    Ok(())
}

fn update_options(sw: &Swarm, worker: bool, manager: bool, unlock: bool) -> UpdateSwarmOptions {
    UpdateSwarmOptions {
        version: sw
            .version
            .as_ref()
            .and_then(|v| v.index)
            .map(|i| i as i64)
            .unwrap_or(0),
        rotate_worker_token: worker,
        rotate_manager_token: manager,
        rotate_manager_unlock_key: unlock,
    }
}

async fn join_token(client: &Client, a: JoinTokenArgs) -> Result<(), CliError> {
    let worker = a.role == "worker";
    let manager = a.role == "manager";
    if a.rotate {
        let sw = client.docker.inspect_swarm().await?;
        let opts = update_options(&sw, worker, manager, false);
        client
            .docker
            .update_swarm(sw.spec.clone().unwrap_or_default(), opts)
            .await?;
        if !a.quiet {
            out(&format!("Successfully rotated {} join token.\n\n", a.role));
        }
    }
    let sw = client.docker.inspect_swarm().await?;
    let tokens = sw.join_tokens.unwrap_or_default();
    if a.quiet {
        let t = if worker {
            tokens.worker
        } else {
            tokens.manager
        };
        out(&format!("{}\n", t.unwrap_or_default()));
        return Ok(());
    }
    let info = client.info().await?;
    let node_id = info
        .pointer("/Swarm/NodeID")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    print_join_command(client, &node_id, worker, manager).await
}

async fn update(client: &Client, a: UpdateArgs) -> Result<(), CliError> {
    let sw = client.docker.inspect_swarm().await?;
    let mut spec = sw.spec.clone().unwrap_or_default();
    let autolock_of = |s: &SwarmSpec| {
        s.encryption_config
            .as_ref()
            .and_then(|e| e.auto_lock_managers)
            .unwrap_or(false)
    };
    let prev = autolock_of(&spec);
    a.spec.merge(&mut spec, a.autolock);
    let cur = autolock_of(&spec);
    client
        .docker
        .update_swarm(spec, update_options(&sw, false, false, false))
        .await?;
    out("Swarm updated.\n");
    if cur && !prev {
        let key = get_unlock_key(client).await?;
        out(&unlock_notice(&key));
    }
    Ok(())
}

fn read_key(prompt: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        out(prompt);
        let key = read_password().map_err(|e| CliError::msg(e.to_string()))?;
        out("\n");
        return Ok(key);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::msg(e.to_string()))?;
    Ok(line.trim().to_string())
}

fn read_password() -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let original = tcgetattr(&stdin).map_err(std::io::Error::from)?;
    let mut silent = original.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &silent).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let result = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &original);
    result?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

async fn unlock(client: &Client) -> Result<(), CliError> {
    let info = client.info().await?;
    let state = info
        .pointer("/Swarm/LocalNodeState")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match state {
        "inactive" => return Err(CliError::msg("Error: This node is not part of a swarm")),
        "locked" => {}
        "pending" | "active" | "error" => return Err(CliError::msg("Error: swarm is not locked")),
        _ => {}
    }
    let key = read_key("Enter unlock key: ")?;
    client
        .post_json("/swarm/unlock", &[], &json!({ "UnlockKey": key }))
        .await?;
    Ok(())
}

async fn unlock_key(client: &Client, a: UnlockKeyArgs) -> Result<(), CliError> {
    if a.rotate {
        let sw = client.docker.inspect_swarm().await?;
        let autolock = sw
            .spec
            .as_ref()
            .and_then(|s| s.encryption_config.as_ref())
            .and_then(|e| e.auto_lock_managers)
            .unwrap_or(false);
        if !autolock {
            return Err(CliError::msg(
                "cannot rotate because autolock is not turned on",
            ));
        }
        let opts = update_options(&sw, false, false, true);
        client
            .docker
            .update_swarm(sw.spec.clone().unwrap_or_default(), opts)
            .await?;
        if !a.quiet {
            out("Successfully rotated manager unlock key.\n");
        }
    }
    let key = get_unlock_key(client).await?;
    if key.is_empty() {
        return Err(CliError::msg("no unlock key is set"));
    }
    if a.quiet {
        out(&format!("{key}\n"));
    } else {
        out(&unlock_notice(&key));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: SwarmCommand,
    }

    fn parse(args: &[&str]) -> SwarmCommand {
        let mut v = vec!["swarm"];
        v.extend_from_slice(args);
        T::try_parse_from(v).unwrap().cmd
    }

    #[test]
    fn init_body_defaults_and_flags() {
        let SwarmCommand::Init(a) = parse(&["init"]) else {
            panic!("not init")
        };
        let b = init_request(&a);
        assert_eq!(b["ListenAddr"], "0.0.0.0:2377");
        assert_eq!(b["AdvertiseAddr"], "");
        assert_eq!(b["SubnetSize"], 24);
        assert_eq!(b["AutoLockManagers"], false);
        assert_eq!(b["Spec"], json!({}));
        assert!(b.get("Availability").is_none());

        let SwarmCommand::Init(a) = parse(&[
            "init",
            "--advertise-addr",
            "10.0.0.1",
            "--listen-addr",
            "10.0.0.1",
            "--autolock",
            "--availability",
            "DRAIN",
            "--task-history-limit",
            "10",
            "--dispatcher-heartbeat",
            "10s",
            "--default-addr-pool",
            "10.10.0.0/16,10.20.0.0/16",
            "--data-path-port",
            "7777",
        ]) else {
            panic!("not init")
        };
        let b = init_request(&a);
        assert_eq!(b["ListenAddr"], "10.0.0.1:2377");
        assert_eq!(b["AdvertiseAddr"], "10.0.0.1");
        assert_eq!(b["AutoLockManagers"], true);
        assert_eq!(b["Availability"], "drain");
        assert_eq!(b["DataPathPort"], 7777);
        assert_eq!(
            b["DefaultAddrPool"],
            json!(["10.10.0.0/16", "10.20.0.0/16"])
        );
        assert_eq!(b["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"], 10);
        assert_eq!(
            b["Spec"]["Dispatcher"]["HeartbeatPeriod"],
            10_000_000_000i64
        );
        assert_eq!(b["Spec"]["EncryptionConfig"]["AutoLockManagers"], true);
    }

    #[test]
    fn join_body() {
        let SwarmCommand::Join(a) = parse(&["join", "--token", "SWMTKN-1-x", "10.0.0.1:2377"])
        else {
            panic!("not join")
        };
        let b = join_request(&a);
        assert_eq!(b["RemoteAddrs"], json!(["10.0.0.1:2377"]));
        assert_eq!(b["JoinToken"], "SWMTKN-1-x");
        assert_eq!(b["ListenAddr"], "0.0.0.0:2377");
    }

    #[test]
    fn rejects_bad_availability() {
        let mut v = vec!["swarm", "init", "--availability", "sleepy"];
        assert!(T::try_parse_from(v.drain(..)).is_err());
    }

    #[test]
    fn update_autolock_flag_forms() {
        let SwarmCommand::Update(a) = parse(&["update", "--autolock"]) else {
            panic!()
        };
        assert_eq!(a.autolock, Some(true));
        let SwarmCommand::Update(a) = parse(&["update", "--autolock=false"]) else {
            panic!()
        };
        assert_eq!(a.autolock, Some(false));
        let mut spec = SwarmSpec::default();
        a.spec.merge(&mut spec, a.autolock);
        assert_eq!(
            spec.encryption_config.unwrap().auto_lock_managers,
            Some(false)
        );
    }

    #[test]
    fn messages_match_docker_goldens() {
        assert_eq!(
            join_instructions("manager", "manager-join-token", "127.0.0.1"),
            "To add a manager to this swarm, run the following command:\n\n    docker swarm join --token manager-join-token 127.0.0.1\n\n"
        );
        assert_eq!(
            unlock_notice("unlock-key"),
            "To unlock a swarm manager after it restarts, run the `docker swarm unlock`\ncommand and provide the following key:\n\n    unlock-key\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
        );
        assert_eq!(unlock_notice(""), "");
    }
}
