//! `shoal service ...`: create, update, scale, ls, ps, inspect (raw, template,
//! `--pretty`), rm and logs. Service specs are built from flags the way the
//! docker CLI builds them (`ToService`, `updateService`), and task tables are
//! printed as docker's `task.Print` does (shared with `node ps`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use bollard::models::{
    EndpointPortConfig, EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit,
    NetworkAttachmentConfig, ResourceObject, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecModeReplicatedJob, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecDnsConfig, TaskSpecLogDriver, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions, UpdateServiceOptions};
use bollard::Docker;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{CliError, Client, Endpoint};
use crate::format::{
    bytes_size, capitalize_first, ellipsis, enum_str, familiar_image, go_duration, header,
    human_since, natural_cmp, out, render, timestamp, truncate_id, Format,
};
use crate::logs::LogsArgs;
use crate::opts;

/// docker's default `service ls` table.
pub const SERVICE_TABLE_FORMAT: &str =
    "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}";
/// docker's default task table (`service ps`, `node ps`).
pub const TASK_TABLE_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}";
/// Longest task error shown without `--no-trunc`.
const MAX_ERR_LENGTH: usize = 30;
/// swarmkit's default restart delay.
const DEFAULT_RESTART_DELAY: i64 = 5_000_000_000;
/// swarmkit's default update/rollback monitor period.
const DEFAULT_MONITOR: i64 = 5_000_000_000;

/// `service` subcommands.
#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// Display detailed information on one or more services
    Inspect(InspectArgs),
    /// Fetch the logs of a service or task
    Logs(LogsArgs),
    /// List services
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List the tasks of one or more services
    Ps(PsArgs),
    /// Remove one or more services
    #[command(alias = "remove")]
    Rm {
        /// Services to remove
        #[arg(value_name = "SERVICE", required = true)]
        services: Vec<String>,
    },
    /// Scale one or multiple replicated services
    Scale(ScaleArgs),
    /// Update a service
    Update(Box<UpdateArgs>),
}

/// Flags shared by `service create` and `service update`.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonFlags {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Endpoint mode (vip or dnsrr)
    #[arg(long = "endpoint-mode", value_name = "string", value_parser = ["vip", "dnsrr"])]
    pub endpoint_mode: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long, value_name = "command", value_parser = opts::words)]
    pub entrypoint: Option<opts::Words>,
    /// Command to run to check health
    #[arg(long = "health-cmd", value_name = "string")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long = "health-interval", value_name = "duration", value_parser = opts::duration)]
    pub health_interval: Option<i64>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", value_name = "int")]
    pub health_retries: Option<i64>,
    /// Time between running the check during the start period (ms|s|m|h)
    #[arg(long = "health-start-interval", value_name = "duration", value_parser = opts::duration)]
    pub health_start_interval: Option<i64>,
    /// Start period for the container to initialize before counting retries towards unstable (ms|s|m|h)
    #[arg(long = "health-start-period", value_name = "duration", value_parser = opts::duration)]
    pub health_start_period: Option<i64>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long = "health-timeout", value_name = "duration", value_parser = opts::duration)]
    pub health_timeout: Option<i64>,
    /// Container hostname
    #[arg(long, value_name = "string")]
    pub hostname: Option<String>,
    /// Use an init inside each service container to forward signals and reap processes
    #[arg(long, value_name = "bool", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub init: Option<bool>,
    /// Limit CPUs
    #[arg(long = "limit-cpu", value_name = "decimal", value_parser = opts::nano_cpus)]
    pub limit_cpu: Option<i64>,
    /// Limit Memory
    #[arg(long = "limit-memory", value_name = "bytes", value_parser = opts::mem_bytes)]
    pub limit_memory: Option<i64>,
    /// Limit maximum number of processes (default 0 = unlimited)
    #[arg(long = "limit-pids", value_name = "int")]
    pub limit_pids: Option<i64>,
    /// Logging driver for service
    #[arg(long = "log-driver", value_name = "string")]
    pub log_driver: Option<String>,
    /// Logging driver options
    #[arg(long = "log-opt", value_name = "list", value_parser = opts::validate_env)]
    pub log_opt: Vec<String>,
    /// Number of job tasks to run concurrently (default equal to --replicas)
    #[arg(long = "max-concurrent", value_name = "uint", value_parser = opts::uint)]
    pub max_concurrent: Option<u64>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck", value_name = "bool", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub no_healthcheck: Option<bool>,
    /// Do not query the registry to resolve image digest and supported platforms
    #[arg(long = "no-resolve-image")]
    pub no_resolve_image: bool,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only", value_name = "bool", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub read_only: Option<bool>,
    /// Number of tasks
    #[arg(long, value_name = "uint", value_parser = opts::uint)]
    pub replicas: Option<u64>,
    /// Maximum number of tasks per node (default 0 = unlimited)
    #[arg(long = "replicas-max-per-node", value_name = "uint", value_parser = opts::uint)]
    pub replicas_max_per_node: Option<u64>,
    /// Reserve CPUs
    #[arg(long = "reserve-cpu", value_name = "decimal", value_parser = opts::nano_cpus)]
    pub reserve_cpu: Option<i64>,
    /// Reserve Memory
    #[arg(long = "reserve-memory", value_name = "bytes", value_parser = opts::mem_bytes)]
    pub reserve_memory: Option<i64>,
    /// Restart when condition is met ("none", "on-failure", "any")
    #[arg(long = "restart-condition", value_name = "string", value_parser = ["none", "on-failure", "any"])]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (ns|us|ms|s|m|h)
    #[arg(long = "restart-delay", value_name = "duration", value_parser = opts::duration)]
    pub restart_delay: Option<i64>,
    /// Maximum number of restarts before giving up
    #[arg(long = "restart-max-attempts", value_name = "uint", value_parser = opts::uint)]
    pub restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h)
    #[arg(long = "restart-window", value_name = "duration", value_parser = opts::duration)]
    pub restart_window: Option<i64>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h)
    #[arg(long = "rollback-delay", value_name = "duration", value_parser = opts::any_duration)]
    pub rollback_delay: Option<i64>,
    /// Action on rollback failure ("pause", "continue")
    #[arg(long = "rollback-failure-action", value_name = "string", value_parser = ["pause", "continue"])]
    pub rollback_failure_action: Option<String>,
    /// Failure rate to tolerate during a rollback
    #[arg(long = "rollback-max-failure-ratio", value_name = "float")]
    pub rollback_max_failure_ratio: Option<f32>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h)
    #[arg(long = "rollback-monitor", value_name = "duration", value_parser = opts::any_duration)]
    pub rollback_monitor: Option<i64>,
    /// Rollback order ("start-first", "stop-first")
    #[arg(long = "rollback-order", value_name = "string", value_parser = ["start-first", "stop-first"])]
    pub rollback_order: Option<String>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once)
    #[arg(long = "rollback-parallelism", value_name = "uint")]
    pub rollback_parallelism: Option<u64>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h)
    #[arg(long = "stop-grace-period", value_name = "duration", value_parser = opts::duration)]
    pub stop_grace_period: Option<i64>,
    /// Signal to stop the container
    #[arg(long = "stop-signal", value_name = "string")]
    pub stop_signal: Option<String>,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long, value_name = "bool", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub tty: Option<bool>,
    /// Delay between updates (ns|us|ms|s|m|h)
    #[arg(long = "update-delay", value_name = "duration", value_parser = opts::any_duration)]
    pub update_delay: Option<i64>,
    /// Action on update failure ("pause", "continue", "rollback")
    #[arg(long = "update-failure-action", value_name = "string", value_parser = ["pause", "continue", "rollback"])]
    pub update_failure_action: Option<String>,
    /// Failure rate to tolerate during an update
    #[arg(long = "update-max-failure-ratio", value_name = "float")]
    pub update_max_failure_ratio: Option<f32>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h)
    #[arg(long = "update-monitor", value_name = "duration", value_parser = opts::any_duration)]
    pub update_monitor: Option<i64>,
    /// Update order ("start-first", "stop-first")
    #[arg(long = "update-order", value_name = "string", value_parser = ["start-first", "stop-first"])]
    pub update_order: Option<String>,
    /// Maximum number of tasks updated simultaneously (0 to update all at once)
    #[arg(long = "update-parallelism", value_name = "uint")]
    pub update_parallelism: Option<u64>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long, value_name = "string")]
    pub user: Option<String>,
    /// Send registry authentication details to swarm agents
    #[arg(long = "with-registry-auth")]
    pub with_registry_auth: bool,
    /// Working directory inside the container
    #[arg(short = 'w', long, value_name = "string")]
    pub workdir: Option<String>,
}

/// `service create` flags.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Placement constraints
    #[arg(long, value_name = "list")]
    pub constraint: Vec<String>,
    /// Specify configurations to expose to the service
    #[arg(long = "config", value_name = "config", value_parser = crate::service_refs::file_ref)]
    pub config: Vec<crate::service_refs::FileRef>,
    /// Container labels
    #[arg(long = "container-label", value_name = "list", value_parser = opts::validate_label)]
    pub container_label: Vec<String>,
    /// Set custom DNS servers
    #[arg(long, value_name = "list")]
    pub dns: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", value_name = "list")]
    pub dns_option: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search", value_name = "list")]
    pub dns_search: Vec<String>,
    /// Set environment variables
    #[arg(short = 'e', long, value_name = "list", value_parser = opts::validate_env)]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "list")]
    pub env_file: Vec<String>,
    /// Set one or more supplementary user groups for the container
    #[arg(long, value_name = "list")]
    pub group: Vec<String>,
    /// Set one or more custom host-to-IP mappings (host:ip)
    #[arg(long, value_name = "list")]
    pub host: Vec<String>,
    /// Service labels
    #[arg(short = 'l', long, value_name = "list", value_parser = opts::validate_label)]
    pub label: Vec<String>,
    /// Service mode ("replicated", "global", "replicated-job", "global-job")
    #[arg(long, value_name = "string", default_value = "replicated", value_parser = ["replicated", "global", "replicated-job", "global-job"])]
    pub mode: String,
    /// Service name
    #[arg(long, value_name = "string")]
    pub name: Option<String>,
    /// Network attachments
    #[arg(long, value_name = "network", value_parser = opts::network)]
    pub network: Vec<NetworkAttachmentConfig>,
    /// Add a placement preference
    #[arg(long = "placement-pref", value_name = "pref", value_parser = opts::placement_pref)]
    pub placement_pref: Vec<TaskSpecPlacementPreferences>,
    /// Publish a port as a node port
    #[arg(short = 'p', long, value_name = "port", value_parser = opts::ports)]
    pub publish: Vec<opts::Ports>,
    /// Specify secrets to expose to the service
    #[arg(long = "secret", value_name = "secret", value_parser = crate::service_refs::file_ref)]
    pub secret: Vec<crate::service_refs::FileRef>,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(
        value_name = "IMAGE",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub image_and_args: Vec<String>,
}

/// `service update` flags.
#[derive(Args, Debug, Clone)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Service command args
    #[arg(long, value_name = "command", value_parser = opts::words)]
    pub args: Option<opts::Words>,
    /// Add or update a config file on a service
    #[arg(long = "config-add", value_name = "config", value_parser = crate::service_refs::file_ref)]
    pub config_add: Vec<crate::service_refs::FileRef>,
    /// Remove a configuration file
    #[arg(long = "config-rm", value_name = "list")]
    pub config_rm: Vec<String>,
    /// Add or update a placement constraint
    #[arg(long = "constraint-add", value_name = "list")]
    pub constraint_add: Vec<String>,
    /// Add or update a secret on a service
    #[arg(long = "secret-add", value_name = "secret", value_parser = crate::service_refs::file_ref)]
    pub secret_add: Vec<crate::service_refs::FileRef>,
    /// Remove a secret
    #[arg(long = "secret-rm", value_name = "list")]
    pub secret_rm: Vec<String>,
    /// Remove a constraint
    #[arg(long = "constraint-rm", value_name = "list")]
    pub constraint_rm: Vec<String>,
    /// Add or update a container label
    #[arg(long = "container-label-add", value_name = "list", value_parser = opts::validate_label)]
    pub container_label_add: Vec<String>,
    /// Remove a container label by its key
    #[arg(long = "container-label-rm", value_name = "list")]
    pub container_label_rm: Vec<String>,
    /// Add or update an environment variable
    #[arg(long = "env-add", value_name = "list", value_parser = opts::validate_env)]
    pub env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long = "env-rm", value_name = "list")]
    pub env_rm: Vec<String>,
    /// Force update even if no changes require it
    #[arg(long)]
    pub force: bool,
    /// Service image tag
    #[arg(long, value_name = "string")]
    pub image: Option<String>,
    /// Add or update a service label
    #[arg(long = "label-add", value_name = "list", value_parser = opts::validate_label)]
    pub label_add: Vec<String>,
    /// Remove a label by its key
    #[arg(long = "label-rm", value_name = "list")]
    pub label_rm: Vec<String>,
    /// Add a network
    #[arg(long = "network-add", value_name = "network", value_parser = opts::network)]
    pub network_add: Vec<NetworkAttachmentConfig>,
    /// Remove a network
    #[arg(long = "network-rm", value_name = "list")]
    pub network_rm: Vec<String>,
    /// Add a placement preference
    #[arg(long = "placement-pref-add", value_name = "pref", value_parser = opts::placement_pref)]
    pub placement_pref_add: Vec<TaskSpecPlacementPreferences>,
    /// Remove a placement preference
    #[arg(long = "placement-pref-rm", value_name = "pref", value_parser = opts::placement_pref)]
    pub placement_pref_rm: Vec<TaskSpecPlacementPreferences>,
    /// Add or update a published port
    #[arg(long = "publish-add", value_name = "port", value_parser = opts::ports)]
    pub publish_add: Vec<opts::Ports>,
    /// Remove a published port by its target port
    #[arg(long = "publish-rm", value_name = "port", value_parser = opts::ports)]
    pub publish_rm: Vec<opts::Ports>,
    /// Rollback to previous specification
    #[arg(long)]
    pub rollback: bool,
    /// Service to update
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// `service ls` flags.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter", value_name = "filter", value_parser = opts::filter)]
    pub filter: Vec<(String, String)>,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `service ps` flags.
#[derive(Args, Debug, Clone)]
pub struct PsArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter", value_name = "filter", value_parser = opts::filter)]
    pub filter: Vec<(String, String)>,
    /// Pretty-print tasks using a Go template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Do not map IDs to Names
    #[arg(long = "no-resolve")]
    pub no_resolve: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only display task IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Services
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

/// `service inspect` flags.
#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// Format output using a custom template ('json', 'TEMPLATE')
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    /// Services
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

/// `service scale` flags.
#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// SERVICE=REPLICAS pairs
    #[arg(value_name = "SERVICE=REPLICAS", required = true)]
    pub pairs: Vec<String>,
}

/// Runs a `service` subcommand.
pub async fn run(host: &Endpoint, cmd: ServiceCommand, changed: &[String]) -> Result<(), CliError> {
    // Errors docker reports before talking to the daemon.
    let spec = match &cmd {
        ServiceCommand::Create(a) => Some(build_spec(a)?),
        _ => None,
    };
    if let ServiceCommand::Update(a) = &cmd {
        if a.rollback {
            let other = changed
                .iter()
                .any(|f| !matches!(f.as_str(), "rollback" | "detach" | "quiet" | "service"));
            if other {
                return Err(CliError::msg(
                    "other flags may not be combined with --rollback",
                ));
            }
        }
    }
    if let ServiceCommand::Scale(a) = &cmd {
        for p in &a.pairs {
            match p.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {}
                _ => {
                    return Err(CliError::Status {
                        code: 1,
                        message: format!(
                            "invalid scale specifier '{p}'.\nSee 'shoal service scale --help'.\n\nUsage:  shoal service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]\n\nScale one or multiple replicated services"
                        ),
                    })
                }
            }
        }
    }
    let client = Client::connect(host).await?;
    match cmd {
        ServiceCommand::Create(a) => create(&client, &a, spec.unwrap_or_default()).await,
        ServiceCommand::Update(a) => update(&client, &a).await,
        ServiceCommand::Scale(a) => scale(&client, &a).await,
        ServiceCommand::Ls(a) => list(&client, &a).await,
        ServiceCommand::Ps(a) => ps(&client, &a).await,
        ServiceCommand::Inspect(a) => inspect(&client, &a).await,
        ServiceCommand::Logs(a) => crate::logs::run(&client, &a).await,
        ServiceCommand::Rm { services } => {
            let mut errs = Vec::new();
            for s in &services {
                match client.docker.delete_service(s).await {
                    Ok(()) => out(&format!("{s}\n")),
                    Err(e) => errs.push(CliError::from(e)),
                }
            }
            CliError::join(errs)
        }
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

fn non_zero(v: i64) -> Option<i64> {
    if v == 0 {
        None
    } else {
        Some(v)
    }
}

fn restart_condition(s: &str) -> Result<TaskSpecRestartPolicyConditionEnum, CliError> {
    TaskSpecRestartPolicyConditionEnum::from_str(s).map_err(CliError::Message)
}

/// swarmkit's default update config (`updateConfigFromDefaults`).
fn default_update_config() -> ServiceSpecUpdateConfig {
    ServiceSpecUpdateConfig {
        parallelism: Some(1),
        delay: None,
        failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
        monitor: Some(DEFAULT_MONITOR),
        max_failure_ratio: Some(0.0),
        order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
    }
}

/// swarmkit's default rollback config.
fn default_rollback_config() -> ServiceSpecRollbackConfig {
    ServiceSpecRollbackConfig {
        parallelism: Some(1),
        delay: None,
        failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
        monitor: Some(DEFAULT_MONITOR),
        max_failure_ratio: Some(0.0),
        order: Some(ServiceSpecRollbackConfigOrderEnum::STOP_FIRST),
    }
}

fn default_restart_policy() -> TaskSpecRestartPolicy {
    TaskSpecRestartPolicy {
        condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
        delay: Some(DEFAULT_RESTART_DELAY),
        max_attempts: Some(0),
        window: None,
    }
}

impl CommonFlags {
    fn any_update(&self) -> bool {
        self.update_parallelism.is_some()
            || self.update_delay.is_some()
            || self.update_monitor.is_some()
            || self.update_failure_action.is_some()
            || self.update_max_failure_ratio.is_some()
            || self.update_order.is_some()
    }

    fn any_rollback(&self) -> bool {
        self.rollback_parallelism.is_some()
            || self.rollback_delay.is_some()
            || self.rollback_monitor.is_some()
            || self.rollback_failure_action.is_some()
            || self.rollback_max_failure_ratio.is_some()
            || self.rollback_order.is_some()
    }

    fn any_restart(&self) -> bool {
        self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
    }

    fn apply_update_config(&self, cfg: &mut ServiceSpecUpdateConfig) -> Result<(), CliError> {
        if let Some(v) = self.update_parallelism {
            cfg.parallelism = Some(v as i64);
        }
        if let Some(v) = self.update_delay {
            cfg.delay = Some(v);
        }
        if let Some(v) = self.update_monitor {
            cfg.monitor = Some(v);
        }
        if let Some(v) = &self.update_failure_action {
            cfg.failure_action = Some(
                ServiceSpecUpdateConfigFailureActionEnum::from_str(v).map_err(CliError::Message)?,
            );
        }
        if let Some(v) = self.update_max_failure_ratio {
            cfg.max_failure_ratio = Some(f64::from(v));
        }
        if let Some(v) = &self.update_order {
            cfg.order =
                Some(ServiceSpecUpdateConfigOrderEnum::from_str(v).map_err(CliError::Message)?);
        }
        Ok(())
    }

    fn apply_rollback_config(&self, cfg: &mut ServiceSpecRollbackConfig) -> Result<(), CliError> {
        if let Some(v) = self.rollback_parallelism {
            cfg.parallelism = Some(v as i64);
        }
        if let Some(v) = self.rollback_delay {
            cfg.delay = Some(v);
        }
        if let Some(v) = self.rollback_monitor {
            cfg.monitor = Some(v);
        }
        if let Some(v) = &self.rollback_failure_action {
            cfg.failure_action = Some(
                ServiceSpecRollbackConfigFailureActionEnum::from_str(v)
                    .map_err(CliError::Message)?,
            );
        }
        if let Some(v) = self.rollback_max_failure_ratio {
            cfg.max_failure_ratio = Some(f64::from(v));
        }
        if let Some(v) = &self.rollback_order {
            cfg.order =
                Some(ServiceSpecRollbackConfigOrderEnum::from_str(v).map_err(CliError::Message)?);
        }
        Ok(())
    }

    fn apply_restart(&self, rp: &mut TaskSpecRestartPolicy) -> Result<(), CliError> {
        if let Some(c) = &self.restart_condition {
            rp.condition = Some(restart_condition(c)?);
        }
        if let Some(d) = self.restart_delay {
            rp.delay = Some(d);
        }
        if let Some(m) = self.restart_max_attempts {
            rp.max_attempts = Some(m as i64);
        }
        if let Some(w) = self.restart_window {
            rp.window = Some(w);
        }
        Ok(())
    }

    fn health_config(&self) -> Result<Option<HealthConfig>, CliError> {
        let have = self.health_cmd.as_deref().is_some_and(|c| !c.is_empty())
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_start_period.is_some()
            || self.health_start_interval.is_some()
            || self.health_retries.is_some_and(|r| r != 0);
        if self.no_healthcheck == Some(true) {
            if have {
                return Err(CliError::msg(
                    "--no-healthcheck conflicts with --health-* options",
                ));
            }
            return Ok(Some(HealthConfig {
                test: Some(vec!["NONE".to_string()]),
                ..Default::default()
            }));
        }
        if !have {
            return Ok(None);
        }
        Ok(Some(HealthConfig {
            test: self
                .health_cmd
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()]),
            interval: self.health_interval.and_then(non_zero),
            timeout: self.health_timeout.and_then(non_zero),
            retries: self.health_retries.and_then(non_zero),
            start_period: self.health_start_period.and_then(non_zero),
            start_interval: self.health_start_interval.and_then(non_zero),
        }))
    }

    fn log_driver(&self) -> Option<TaskSpecLogDriver> {
        let name = self.log_driver.clone().filter(|n| !n.is_empty())?;
        Some(TaskSpecLogDriver {
            name: Some(name),
            options: Some(opts::kv_map(&self.log_opt)),
        })
    }
}

fn mode_of(a: &CreateArgs) -> Result<ServiceSpecMode, CliError> {
    let c = &a.common;
    let mut mode = ServiceSpecMode::default();
    let replicas = c.replicas.map(|r| r as i64);
    match a.mode.as_str() {
        "global" => {
            if c.replicas.is_some() {
                return Err(CliError::msg(
                    "replicas can only be used with replicated or replicated-job mode",
                ));
            }
            if c.replicas_max_per_node.unwrap_or(0) > 0 {
                return Err(CliError::msg(
                    "replicas-max-per-node can only be used with replicated or replicated-job mode",
                ));
            }
            if c.max_concurrent.is_some() {
                return Err(CliError::msg(
                    "max-concurrent can only be used with replicated-job mode",
                ));
            }
            mode.global = Some(HashMap::new());
        }
        "replicated" => {
            if c.max_concurrent.is_some() {
                return Err(CliError::msg(
                    "max-concurrent can only be used with replicated-job mode",
                ));
            }
            mode.replicated = Some(ServiceSpecModeReplicated { replicas });
        }
        "replicated-job" => {
            mode.replicated_job = Some(ServiceSpecModeReplicatedJob {
                max_concurrent: c.max_concurrent.map(|m| m as i64).or(replicas),
                total_completions: replicas,
            });
        }
        "global-job" => {
            if c.replicas_max_per_node.unwrap_or(0) > 0 {
                return Err(CliError::msg(
                    "replicas-max-per-node can only be used with replicated or replicated-job mode",
                ));
            }
            if c.max_concurrent.is_some() {
                return Err(CliError::msg(
                    "max-concurrent can only be used with replicated-job mode",
                ));
            }
            if c.replicas.is_some() {
                return Err(CliError::msg(
                    "replicas can only be used with replicated or replicated-job mode",
                ));
            }
            mode.global_job = Some(HashMap::new());
        }
        other => {
            return Err(CliError::msg(format!(
                "Unknown mode: {other}, only replicated and global supported"
            )))
        }
    }
    Ok(mode)
}

/// Swarm's `host:ip` extra hosts become `ip host` lines.
fn swarm_hosts(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| h.split_once(':').map(|(host, ip)| format!("{ip} {host}")))
        .collect()
}

/// Builds the service spec for `service create` (docker's `ToService`).
pub fn build_spec(a: &CreateArgs) -> Result<ServiceSpec, CliError> {
    let c = &a.common;
    let image = a.image_and_args.first().cloned().unwrap_or_default();
    let args = a
        .image_and_args
        .get(1..)
        .map(<[String]>::to_vec)
        .unwrap_or_default();
    let env = opts::make_env(&a.env_file, &a.env).map_err(CliError::Message)?;
    let health = c.health_config()?;
    let mode = mode_of(a)?;
    let is_job = mode.replicated_job.is_some() || mode.global_job.is_some();
    let update_config = if c.any_update() {
        let mut cfg = default_update_config();
        c.apply_update_config(&mut cfg)?;
        Some(cfg)
    } else {
        None
    };
    let rollback_config = if c.any_rollback() {
        let mut cfg = default_rollback_config();
        c.apply_rollback_config(&mut cfg)?;
        Some(cfg)
    } else {
        None
    };
    if is_job && (update_config.is_some() || rollback_config.is_some()) {
        return Err(CliError::msg(
            "update and rollback configuration is not supported for jobs",
        ));
    }
    let restart_policy = if c.any_restart() {
        let mut rp = default_restart_policy();
        c.apply_restart(&mut rp)?;
        Some(rp)
    } else {
        None
    };
    let mut networks = a.network.clone();
    networks.sort_by(|x, y| x.target.cmp(&y.target));
    let ports: Vec<EndpointPortConfig> =
        a.publish.iter().flat_map(|p| p.0.iter()).cloned().collect();
    let labels = opts::kv_map(&a.label);
    let container_labels = opts::kv_map(&a.container_label);

    let container_spec = TaskSpecContainerSpec {
        image: Some(normalize_image(&image)),
        labels: if container_labels.is_empty() {
            None
        } else {
            Some(container_labels)
        },
        command: c.entrypoint.clone().and_then(|w| non_empty(w.0)),
        args: non_empty(args),
        hostname: c.hostname.clone().filter(|h| !h.is_empty()),
        env: non_empty(env),
        dir: c.workdir.clone().filter(|d| !d.is_empty()),
        user: c.user.clone().filter(|u| !u.is_empty()),
        groups: non_empty(a.group.clone()),
        tty: c.tty.filter(|t| *t),
        read_only: c.read_only.filter(|r| *r),
        stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
        stop_grace_period: c.stop_grace_period,
        health_check: health,
        hosts: non_empty(swarm_hosts(&a.host)),
        dns_config: Some(TaskSpecContainerSpecDnsConfig {
            nameservers: non_empty(a.dns.clone()),
            search: non_empty(a.dns_search.clone()),
            options: non_empty(a.dns_option.clone()),
        }),
        init: Some(c.init.unwrap_or(false)),
        ..Default::default()
    };
    Ok(ServiceSpec {
        name: c_name(a),
        labels: if labels.is_empty() {
            None
        } else {
            Some(labels)
        },
        task_template: Some(TaskSpec {
            container_spec: Some(container_spec),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: c.limit_cpu.and_then(non_zero),
                    memory_bytes: c.limit_memory.and_then(non_zero),
                    pids: c.limit_pids.and_then(non_zero),
                }),
                reservations: Some(ResourceObject {
                    nano_cpus: c.reserve_cpu.and_then(non_zero),
                    memory_bytes: c.reserve_memory.and_then(non_zero),
                    generic_resources: None,
                }),
                ..Default::default()
            }),
            restart_policy,
            placement: Some(TaskSpecPlacement {
                constraints: non_empty(a.constraint.clone()),
                preferences: non_empty(a.placement_pref.clone()),
                max_replicas: c.replicas_max_per_node.map(|m| m as i64).and_then(non_zero),
                platforms: None,
            }),
            networks: non_empty(networks),
            log_driver: c.log_driver(),
            ..Default::default()
        }),
        mode: Some(mode),
        update_config,
        rollback_config,
        networks: None,
        endpoint_spec: Some(EndpointSpec {
            mode: Some(
                EndpointSpecModeEnum::from_str(c.endpoint_mode.as_deref().unwrap_or("vip"))
                    .map_err(CliError::Message)?,
            ),
            ports: non_empty(ports),
        }),
    })
}

fn c_name(a: &CreateArgs) -> Option<String> {
    a.name.clone().filter(|n| !n.is_empty())
}

fn env_key(v: &str) -> &str {
    v.split_once('=').map(|(k, _)| k).unwrap_or(v)
}

fn port_key(p: &EndpointPortConfig) -> String {
    format!(
        "{}:{}/{}/{}",
        p.published_port.unwrap_or(0),
        p.target_port.unwrap_or(0),
        enum_str(&p.protocol),
        enum_str(&p.publish_mode)
    )
}

fn same_or_default(a: &str, b: &str, default: &str) -> bool {
    a == b || (a.is_empty() && b == default) || (b.is_empty() && a == default)
}

/// Applies `service update` flags to a spec (docker's `updateService`).
pub fn apply_update(spec: &mut ServiceSpec, a: &UpdateArgs) -> Result<(), CliError> {
    let c = &a.common;
    // Service labels.
    if !a.label_rm.is_empty() {
        if let Some(l) = spec.labels.as_mut() {
            for k in &a.label_rm {
                l.remove(k);
            }
        }
    }
    if !a.label_add.is_empty() {
        let l = spec.labels.get_or_insert_with(HashMap::new);
        l.extend(opts::kv_map(&a.label_add));
    }
    let task = spec.task_template.get_or_insert_with(TaskSpec::default);
    let cspec = task
        .container_spec
        .get_or_insert_with(TaskSpecContainerSpec::default);
    if !a.container_label_rm.is_empty() {
        if let Some(l) = cspec.labels.as_mut() {
            for k in &a.container_label_rm {
                l.remove(k);
            }
        }
    }
    if !a.container_label_add.is_empty() {
        let l = cspec.labels.get_or_insert_with(HashMap::new);
        l.extend(opts::kv_map(&a.container_label_add));
    }
    if let Some(image) = &a.image {
        cspec.image = Some(normalize_image(image));
    }
    if let Some(args) = &a.args {
        cspec.args = Some(args.0.clone());
    }
    if let Some(ep) = &c.entrypoint {
        cspec.command = Some(ep.0.clone());
    }
    // Environment: removals by key, then additions replacing in place.
    if !a.env_rm.is_empty() || !a.env_add.is_empty() {
        let rm: HashSet<&str> = a.env_rm.iter().map(String::as_str).collect();
        let mut env: Vec<String> = cspec
            .env
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !rm.contains(env_key(e)))
            .collect();
        for add in &a.env_add {
            match env.iter_mut().find(|e| env_key(e) == env_key(add)) {
                Some(slot) => *slot = add.clone(),
                None => env.push(add.clone()),
            }
        }
        cspec.env = Some(env);
    }
    if let Some(v) = &c.workdir {
        cspec.dir = Some(v.clone());
    }
    if let Some(v) = &c.user {
        cspec.user = Some(v.clone());
    }
    if let Some(v) = &c.hostname {
        cspec.hostname = Some(v.clone());
    }
    if let Some(v) = c.init {
        cspec.init = Some(v);
    }
    if let Some(v) = c.stop_grace_period {
        cspec.stop_grace_period = Some(v);
    }
    if let Some(v) = c.tty {
        cspec.tty = Some(v);
    }
    if let Some(v) = c.read_only {
        cspec.read_only = Some(v);
    }
    if let Some(v) = &c.stop_signal {
        cspec.stop_signal = Some(v.clone());
    }
    // Health check: only the flags given change the current config.
    if c.no_healthcheck == Some(true) {
        if c.health_cmd.is_some()
            || c.health_interval.is_some()
            || c.health_timeout.is_some()
            || c.health_retries.is_some()
            || c.health_start_period.is_some()
            || c.health_start_interval.is_some()
        {
            return Err(CliError::msg(
                "--no-healthcheck conflicts with --health-* options",
            ));
        }
        cspec.health_check = Some(HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        });
    } else if c.health_cmd.is_some()
        || c.health_interval.is_some()
        || c.health_timeout.is_some()
        || c.health_retries.is_some()
        || c.health_start_period.is_some()
        || c.health_start_interval.is_some()
    {
        let hc = cspec.health_check.get_or_insert_with(HealthConfig::default);
        if hc
            .test
            .as_ref()
            .is_some_and(|t| t.first().map(String::as_str) == Some("NONE"))
        {
            hc.test = None;
        }
        if let Some(cmd) = &c.health_cmd {
            hc.test = if cmd.is_empty() {
                None
            } else {
                Some(vec!["CMD-SHELL".to_string(), cmd.clone()])
            };
        }
        if let Some(v) = c.health_interval {
            hc.interval = Some(v);
        }
        if let Some(v) = c.health_timeout {
            hc.timeout = Some(v);
        }
        if let Some(v) = c.health_retries {
            hc.retries = Some(v);
        }
        if let Some(v) = c.health_start_period {
            hc.start_period = Some(v);
        }
        if let Some(v) = c.health_start_interval {
            hc.start_interval = Some(v);
        }
    }

    // Resources.
    if c.limit_cpu.is_some() || c.limit_memory.is_some() || c.limit_pids.is_some() {
        let res = task
            .resources
            .get_or_insert_with(TaskSpecResources::default);
        let l = res.limits.get_or_insert_with(Limit::default);
        if let Some(v) = c.limit_cpu {
            l.nano_cpus = Some(v);
        }
        if let Some(v) = c.limit_memory {
            l.memory_bytes = Some(v);
        }
        if let Some(v) = c.limit_pids {
            l.pids = Some(v);
        }
    }
    if c.reserve_cpu.is_some() || c.reserve_memory.is_some() {
        let res = task
            .resources
            .get_or_insert_with(TaskSpecResources::default);
        let r = res.reservations.get_or_insert_with(ResourceObject::default);
        if let Some(v) = c.reserve_cpu {
            r.nano_cpus = Some(v);
        }
        if let Some(v) = c.reserve_memory {
            r.memory_bytes = Some(v);
        }
    }
    if c.any_restart() {
        let rp = task
            .restart_policy
            .get_or_insert_with(default_restart_policy);
        c.apply_restart(rp)?;
    }
    // Placement.
    if !a.constraint_add.is_empty() || !a.constraint_rm.is_empty() {
        let p = task
            .placement
            .get_or_insert_with(TaskSpecPlacement::default);
        let mut cons = p.constraints.take().unwrap_or_default();
        cons.extend(a.constraint_add.iter().cloned());
        let rm: HashSet<&String> = a.constraint_rm.iter().collect();
        let mut cons: Vec<String> = cons.into_iter().filter(|x| !rm.contains(x)).collect();
        cons.sort();
        p.constraints = Some(cons);
    }
    if !a.placement_pref_add.is_empty() || !a.placement_pref_rm.is_empty() {
        let p = task
            .placement
            .get_or_insert_with(TaskSpecPlacement::default);
        let descriptor = |x: &TaskSpecPlacementPreferences| {
            x.spread.as_ref().and_then(|s| s.spread_descriptor.clone())
        };
        let mut prefs: Vec<TaskSpecPlacementPreferences> = p
            .preferences
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|existing| {
                !a.placement_pref_rm
                    .iter()
                    .any(|r| descriptor(r).is_some() && descriptor(r) == descriptor(existing))
            })
            .collect();
        prefs.extend(a.placement_pref_add.iter().cloned());
        p.preferences = Some(prefs);
    }
    if let Some(m) = c.replicas_max_per_node {
        task.placement
            .get_or_insert_with(TaskSpecPlacement::default)
            .max_replicas = Some(m as i64);
    }
    // Networks (by target; names are resolved by the daemon).
    if !a.network_add.is_empty() || !a.network_rm.is_empty() {
        let mut nets = task
            .networks
            .take()
            .or_else(|| spec.networks.take())
            .unwrap_or_default();
        let rm: HashSet<&String> = a.network_rm.iter().collect();
        nets.retain(|n| n.target.as_ref().is_none_or(|t| !rm.contains(t)));
        for n in &a.network_add {
            if nets.iter().any(|x| x.target == n.target) {
                return Err(CliError::msg(format!(
                    "service is already attached to network {}",
                    n.target.as_deref().unwrap_or("")
                )));
            }
            nets.push(n.clone());
        }
        nets.sort_by(|x, y| x.target.cmp(&y.target));
        task.networks = Some(nets);
    }
    if let Some(d) = c.log_driver() {
        task.log_driver = Some(d);
    }
    if a.force {
        task.force_update = Some(task.force_update.unwrap_or(0).wrapping_add(1));
    }

    // Mode.
    if let Some(r) = c.replicas {
        match spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
            Some(rep) => rep.replicas = Some(r as i64),
            None => {
                return Err(CliError::msg(
                    "replicas can only be used with replicated mode",
                ))
            }
        }
    }
    if c.any_update() {
        let cfg = spec.update_config.get_or_insert_with(default_update_config);
        c.apply_update_config(cfg)?;
    }
    if c.any_rollback() {
        let cfg = spec
            .rollback_config
            .get_or_insert_with(default_rollback_config);
        c.apply_rollback_config(cfg)?;
    }
    // Endpoint.
    if let Some(m) = &c.endpoint_mode {
        spec.endpoint_spec
            .get_or_insert_with(EndpointSpec::default)
            .mode = Some(EndpointSpecModeEnum::from_str(m).map_err(CliError::Message)?);
    }
    if !a.publish_add.is_empty() || !a.publish_rm.is_empty() {
        let ep = spec.endpoint_spec.get_or_insert_with(EndpointSpec::default);
        let mut seen = HashSet::new();
        let mut ports: Vec<EndpointPortConfig> = Vec::new();
        for p in ep.ports.take().unwrap_or_default() {
            if seen.insert(port_key(&p)) {
                ports.push(p);
            }
        }
        let rm: Vec<EndpointPortConfig> = a
            .publish_rm
            .iter()
            .flat_map(|p| p.0.iter())
            .cloned()
            .collect();
        ports.retain(|p| {
            !rm.iter().any(|r| {
                same_or_default(&enum_str(&p.protocol), &enum_str(&r.protocol), "tcp")
                    && p.target_port == r.target_port
                    && same_or_default(
                        &enum_str(&p.publish_mode),
                        &enum_str(&r.publish_mode),
                        "ingress",
                    )
            })
        });
        for p in a.publish_add.iter().flat_map(|p| p.0.iter()) {
            if seen.insert(port_key(p)) {
                ports.push(p.clone());
            }
        }
        ports.sort_by_key(port_key);
        ep.ports = Some(ports);
    }
    Ok(())
}

/// A bollard client that sends `X-Registry-Auth` (base64url JSON, as docker encodes it).
fn with_registry_auth(docker: &Docker, image: &str) -> Docker {
    let Some(creds) = opts::registry_credentials(image) else {
        return docker.clone();
    };
    let value = opts::encode_registry_auth(&creds);
    docker.clone().with_request_modifier(move |mut req| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            req.headers_mut().insert("X-Registry-Auth", v);
        }
        req
    })
}

async fn create(client: &Client, a: &CreateArgs, mut spec: ServiceSpec) -> Result<(), CliError> {
    let image = a.image_and_args.first().cloned().unwrap_or_default();
    if !a.secret.is_empty() || !a.config.is_empty() {
        let secrets = crate::service_refs::secrets(client, &a.secret).await?;
        let configs = crate::service_refs::configs(client, &a.config).await?;
        let cs = spec
            .task_template
            .get_or_insert_with(Default::default)
            .container_spec
            .get_or_insert_with(Default::default);
        if !secrets.is_empty() {
            cs.secrets = Some(secrets);
        }
        if !configs.is_empty() {
            cs.configs = Some(configs);
        }
    }
    let docker = if a.common.with_registry_auth {
        with_registry_auth(&client.docker, &image)
    } else {
        client.docker.clone()
    };
    let resp = docker.create_service(spec, None).await?;
    for w in resp.warnings.unwrap_or_default() {
        crate::format::err(&format!("{w}\n"));
    }
    let id = resp.id.unwrap_or_default();
    out(&format!("{id}\n"));
    if a.common.detach {
        return Ok(());
    }
    crate::progress::wait_on_service(client, &id, a.common.quiet).await
}

async fn update(client: &Client, a: &UpdateArgs) -> Result<(), CliError> {
    let service = client.docker.inspect_service(&a.service, None).await?;
    let id = service.id.clone().unwrap_or_else(|| a.service.clone());
    let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    let mut spec = service.spec.clone().unwrap_or_default();
    apply_update(&mut spec, a)?;
    if !(a.secret_add.is_empty()
        && a.secret_rm.is_empty()
        && a.config_add.is_empty()
        && a.config_rm.is_empty())
    {
        let cs = spec
            .task_template
            .get_or_insert_with(Default::default)
            .container_spec
            .get_or_insert_with(Default::default);
        cs.secrets = crate::service_refs::update_secrets(
            client,
            cs.secrets.take(),
            &a.secret_rm,
            &a.secret_add,
        )
        .await?;
        cs.configs = crate::service_refs::update_configs(
            client,
            cs.configs.take(),
            &a.config_rm,
            &a.config_add,
        )
        .await?;
    }
    let mut options = UpdateServiceOptions {
        version: i32::try_from(version)
            .map_err(|_| CliError::msg(format!("service version {version} out of range")))?,
        registry_auth_from: "spec".to_string(),
        rollback: None,
    };
    if a.rollback {
        options.rollback = Some("previous".to_string());
    }
    let docker = if a.common.with_registry_auth {
        options.registry_auth_from = String::new();
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        with_registry_auth(&client.docker, &image)
    } else {
        client.docker.clone()
    };
    let resp = docker.update_service(&id, spec, options, None).await?;
    for w in resp.warnings.unwrap_or_default() {
        crate::format::err(&format!("{w}\n"));
    }
    out(&format!("{}\n", a.service));
    if a.common.detach {
        return Ok(());
    }
    crate::progress::wait_on_service(client, &a.service, a.common.quiet).await
}

async fn scale(client: &Client, a: &ScaleArgs) -> Result<(), CliError> {
    let mut errs: Vec<CliError> = Vec::new();
    let mut scaled = Vec::new();
    for pair in &a.pairs {
        let (name, value) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
        let n: u64 = match value.parse() {
            Ok(n) => n,
            Err(_) => {
                errs.push(CliError::msg(format!(
                    "{name}: invalid replicas value {value}: strconv.ParseUint: parsing {value:?}: invalid syntax"
                )));
                continue;
            }
        };
        let res = async {
            let service = client.docker.inspect_service(name, None).await?;
            let mut spec = service.spec.clone().unwrap_or_default();
            let mode = spec.mode.get_or_insert_with(ServiceSpecMode::default);
            if let Some(r) = mode.replicated.as_mut() {
                r.replicas = Some(n as i64);
            } else if let Some(j) = mode.replicated_job.as_mut() {
                j.total_completions = Some(n as i64);
            } else {
                return Err(CliError::msg(
                    "scale can only be used with replicated or replicated-job mode",
                ));
            }
            let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
            let options = UpdateServiceOptions {
                version: i32::try_from(version).unwrap_or(i32::MAX),
                registry_auth_from: String::new(),
                rollback: None,
            };
            let id = service.id.clone().unwrap_or_else(|| name.to_string());
            let resp = client
                .docker
                .update_service(&id, spec, options, None)
                .await?;
            Ok::<_, CliError>(resp.warnings.unwrap_or_default())
        }
        .await;
        match res {
            Ok(warnings) => {
                for w in warnings {
                    crate::format::err(&format!("{w}\n"));
                }
                out(&format!("{name} scaled to {n}\n"));
                scaled.push(name.to_string());
            }
            Err(e) => errs.push(CliError::msg(format!("{name}: {e}"))),
        }
    }
    if !a.detach {
        for name in &scaled {
            if let Err(e) = crate::progress::wait_on_service(client, name, false).await {
                errs.push(CliError::msg(format!("{name}: {e}")));
            }
        }
    }
    CliError::join(errs)
}

/// Column titles of `service ls`.
pub fn service_header() -> serde_json::Map<String, Value> {
    header(&[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Mode", "MODE"),
        ("Replicas", "REPLICAS"),
        ("Image", "IMAGE"),
        ("Ports", "PORTS"),
    ])
}

fn mode_name(spec: &ServiceSpec) -> &'static str {
    match &spec.mode {
        Some(m) if m.global.is_some() => "global",
        Some(m) if m.replicated.is_some() => "replicated",
        Some(m) if m.replicated_job.is_some() => "replicated job",
        Some(m) if m.global_job.is_some() => "global job",
        _ => "",
    }
}

/// The PORTS column: published ingress ports, consecutive ones merged into ranges.
pub fn service_ports(ports: &[EndpointPortConfig]) -> String {
    let mut ports: Vec<&EndpointPortConfig> = ports.iter().collect();
    ports.sort_by(|a, b| {
        let (pa, pb) = (enum_str(&a.protocol), enum_str(&b.protocol));
        if pa == pb {
            a.published_port
                .unwrap_or(0)
                .cmp(&b.published_port.unwrap_or(0))
        } else {
            pa.cmp(&pb)
        }
    });
    #[derive(Default)]
    struct Range {
        p_start: u32,
        p_end: u32,
        t_start: u32,
        t_end: u32,
        proto: String,
    }
    impl Range {
        fn text(&self) -> String {
            let publ = if self.p_end > self.p_start {
                format!("{}-{}", self.p_start, self.p_end)
            } else {
                self.p_start.to_string()
            };
            let tgt = if self.t_end > self.t_start {
                format!("{}-{}", self.t_start, self.t_end)
            } else {
                self.t_start.to_string()
            };
            format!("*:{publ}->{tgt}/{}", self.proto)
        }
    }
    let mut out = Vec::new();
    let mut pr = Range::default();
    for p in ports {
        if enum_str(&p.publish_mode) != "ingress" {
            continue;
        }
        let published = p.published_port.unwrap_or(0) as u32;
        let target = p.target_port.unwrap_or(0) as u32;
        let proto = enum_str(&p.protocol);
        let is_range = pr.t_end != pr.t_start;
        let overlaps = target <= pr.t_end;
        if proto != pr.proto
            || published.wrapping_sub(pr.p_end) > 1
            || target.wrapping_sub(pr.t_end) > 1
            || (is_range && overlaps)
        {
            if pr.p_start > 0 {
                out.push(pr.text());
            }
            pr = Range {
                p_start: published,
                p_end: published,
                t_start: target,
                t_end: target,
                proto,
            };
            continue;
        }
        pr.p_end = published;
        pr.t_end = target;
    }
    if pr.p_start > 0 {
        out.push(pr.text());
    }
    out.join(", ")
}

/// The row of `service ls` for one service (docker's `serviceContext` fields).
pub fn service_row(s: &Service) -> Value {
    let spec = s.spec.clone().unwrap_or_default();
    let status = s.service_status.clone().unwrap_or_default();
    let (running, desired, completed) = (
        status.running_tasks.unwrap_or(0),
        status.desired_tasks.unwrap_or(0),
        status.completed_tasks.unwrap_or(0),
    );
    let mode = spec.mode.clone().unwrap_or_default();
    let replicas = if let Some(job) = &mode.replicated_job {
        format!(
            "{running}/{desired} ({completed}/{} completed)",
            job.total_completions.unwrap_or(0)
        )
    } else if mode.global_job.is_some() {
        format!(
            "{running}/{desired} ({completed}/{} completed)",
            desired + completed
        )
    } else {
        let max = if mode_name(&spec) == "replicated" {
            spec.task_template
                .as_ref()
                .and_then(|t| t.placement.as_ref())
                .and_then(|p| p.max_replicas)
                .unwrap_or(0)
        } else {
            0
        };
        if max > 0 {
            format!("{running}/{desired} (max {max} per node)")
        } else {
            format!("{running}/{desired}")
        }
    };
    let image = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let ports = s
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default();
    json!({
        "ID": truncate_id(s.id.as_deref().unwrap_or("")),
        "Name": spec.name.clone().unwrap_or_default(),
        "Mode": mode_name(&spec),
        "Replicas": replicas,
        "Image": familiar_image(&image),
        "Ports": service_ports(&ports),
    })
}

/// The `--format` in effect for `service ls`.
pub fn list_format(format: Option<&str>, quiet: bool) -> String {
    match format.filter(|f| !f.is_empty()).unwrap_or("table") {
        "table" if quiet => "{{.ID}}".to_string(),
        "table" => SERVICE_TABLE_FORMAT.to_string(),
        "raw" if quiet => "id: {{.ID}}".to_string(),
        "raw" => "id: {{.ID}}\\nname: {{.Name}}\\nmode: {{.Mode}}\\nreplicas: {{.Replicas}}\\nimage: {{.Image}}\\nports: {{.Ports}}\\n".to_string(),
        other => other.to_string(),
    }
}

/// IDs of the nodes that are not down.
pub async fn active_nodes(client: &Client) -> Result<HashSet<String>, CliError> {
    let nodes = client.docker.list_nodes(None).await?;
    Ok(nodes
        .into_iter()
        .filter(|n| enum_str(&n.status.as_ref().and_then(|s| s.state)) != "down")
        .filter_map(|n| n.id)
        .collect())
}

/// Fills `ServiceStatus` from tasks for daemons that do not (docker's `AppendServiceStatus`).
pub async fn append_service_status(
    client: &Client,
    services: &mut [Service],
) -> Result<(), CliError> {
    let mut wanted: Vec<String> = Vec::new();
    for s in services.iter_mut() {
        if s.service_status.is_some() {
            continue;
        }
        let mode = s
            .spec
            .as_ref()
            .and_then(|sp| sp.mode.clone())
            .unwrap_or_default();
        if let Some(r) = &mode.replicated {
            s.service_status = Some(bollard::models::ServiceServiceStatus {
                desired_tasks: Some(r.replicas.unwrap_or(0) as u64),
                running_tasks: Some(0),
                completed_tasks: None,
            });
        } else if mode.global.is_some() {
            s.service_status = Some(Default::default());
        } else {
            continue;
        }
        if let Some(id) = &s.id {
            wanted.push(id.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let mut filters = HashMap::new();
    filters.insert("service".to_string(), wanted.clone());
    let tasks = client
        .docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await?;
    if tasks.is_empty() {
        return Ok(());
    }
    let active = active_nodes(client).await?;
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    for t in &tasks {
        let sid = t.service_id.clone().unwrap_or_default();
        if !wanted.contains(&sid) {
            continue;
        }
        let e = counts.entry(sid).or_default();
        if enum_str(&t.desired_state) != "shutdown" {
            e.1 += 1;
        }
        let running = enum_str(&t.status.as_ref().and_then(|s| s.state)) == "running";
        if running && active.contains(t.node_id.as_deref().unwrap_or("")) {
            e.0 += 1;
        }
    }
    for s in services.iter_mut() {
        let Some(id) = &s.id else { continue };
        if !wanted.contains(id) {
            continue;
        }
        let (running, desired) = counts.get(id).copied().unwrap_or((0, 0));
        s.service_status = Some(bollard::models::ServiceServiceStatus {
            running_tasks: Some(running),
            desired_tasks: Some(desired),
            completed_tasks: None,
        });
    }
    Ok(())
}

async fn list(client: &Client, a: &ListArgs) -> Result<(), CliError> {
    let filters = opts::filter_map(&a.filter);
    let mut services = client
        .docker
        .list_services(Some(ListServicesOptions {
            filters: if filters.is_empty() {
                None
            } else {
                Some(filters)
            },
            status: Some(!a.quiet),
        }))
        .await?;
    if !a.quiet {
        append_service_status(client, &mut services).await?;
    }
    services.sort_by(|x, y| {
        let n = |s: &Service| {
            s.spec
                .as_ref()
                .and_then(|s| s.name.clone())
                .unwrap_or_default()
        };
        natural_cmp(&n(x), &n(y))
    });
    let rows: Vec<Value> = services.iter().map(service_row).collect();
    let fmt = Format::new(&list_format(a.format.as_deref(), a.quiet));
    out(&render(&fmt, &service_header(), &rows).map_err(CliError::Message)?);
    Ok(())
}

/// The `--format` in effect for task listings.
pub fn task_format(format: Option<&str>, quiet: bool) -> String {
    match format.filter(|f| !f.is_empty()).unwrap_or("table") {
        "table" if quiet => "{{.ID}}".to_string(),
        "table" => TASK_TABLE_FORMAT.to_string(),
        "raw" if quiet => "id: {{.ID}}".to_string(),
        "raw" => "id: {{.ID}}\\nname: {{.Name}}\\nimage: {{.Image}}\\nnode: {{.Node}}\\ndesired_state: {{.DesiredState}}\\ncurrent_state: {{.CurrentState}}\\nerror: {{.Error}}\\nports: {{.Ports}}\\n".to_string(),
        other => other.to_string(),
    }
}

/// Column titles of task tables.
pub fn task_header() -> serde_json::Map<String, Value> {
    header(&[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Image", "IMAGE"),
        ("Node", "NODE"),
        ("DesiredState", "DESIRED STATE"),
        ("CurrentState", "CURRENT STATE"),
        ("Error", "ERROR"),
        ("Ports", "PORTS"),
    ])
}

/// A task with the names docker shows for it.
#[derive(Debug, Clone)]
pub struct NamedTask {
    /// The task.
    pub task: Task,
    /// `service.slot` or `service.nodeID`.
    pub name: String,
    /// The resolved node name.
    pub node: String,
}

/// Orders tasks as docker does (name in natural order, newest first) and
/// returns the NAME column (history rows indented with ` \_ ` in tables).
pub fn order_tasks(tasks: &mut [NamedTask], table: bool) -> Vec<String> {
    tasks.sort_by(|a, b| {
        if a.name != b.name {
            return natural_cmp(&a.name, &b.name);
        }
        let ta = timestamp(&a.task.created_at);
        let tb = timestamp(&b.task.created_at);
        tb.cmp(&ta)
    });
    let mut prev = String::new();
    tasks
        .iter()
        .map(|t| {
            let n = if table && t.name == prev {
                format!(" \\_ {}", t.name)
            } else {
                t.name.clone()
            };
            prev = t.name.clone();
            n
        })
        .collect()
}

/// The row of a task table (docker's `taskContext` fields).
pub fn task_row(
    t: &NamedTask,
    display_name: &str,
    trunc: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let task = &t.task;
    let id = task.id.clone().unwrap_or_default();
    let image = task
        .spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let status = task.status.clone().unwrap_or_default();
    let current = format!(
        "{} {} ago",
        capitalize_first(&enum_str(&status.state)),
        human_since(timestamp(&status.timestamp), now).to_lowercase()
    );
    let mut err = status.err.clone().unwrap_or_default();
    if trunc {
        err = ellipsis(&err, MAX_ERR_LENGTH);
    }
    if !err.is_empty() {
        err = format!("\"{err}\"");
    }
    let ports = status
        .port_status
        .and_then(|p| p.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            format!(
                "*:{}->{}/{}",
                p.published_port.unwrap_or(0),
                p.target_port.unwrap_or(0),
                enum_str(&p.protocol)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    json!({
        "ID": if trunc { truncate_id(&id) } else { id },
        "Name": display_name,
        "Image": if trunc { familiar_image(&image) } else { image },
        "Node": t.node,
        "DesiredState": capitalize_first(&enum_str(&task.desired_state)),
        "CurrentState": current,
        "Error": err,
        "Ports": ports,
    })
}

/// Prints tasks as docker's `task.Print` does.
pub async fn print_tasks(
    client: &Client,
    tasks: Vec<Task>,
    no_resolve: bool,
    trunc: bool,
    format: &str,
) -> Result<(), CliError> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut named = Vec::with_capacity(tasks.len());
    for task in tasks {
        let sid = task.service_id.clone().unwrap_or_default();
        let service_name = if no_resolve {
            sid.clone()
        } else if let Some(n) = names.get(&sid) {
            n.clone()
        } else {
            let n = match client.docker.inspect_service(&sid, None).await {
                Ok(s) => s.spec.and_then(|s| s.name).unwrap_or_default(),
                Err(_) => sid.clone(),
            };
            names.insert(sid.clone(), n.clone());
            n
        };
        let node_id = task.node_id.clone().unwrap_or_default();
        let slot = task.slot.unwrap_or(0);
        let name = if slot != 0 {
            format!("{service_name}.{slot}")
        } else {
            format!("{service_name}.{node_id}")
        };
        let key = format!("node:{node_id}");
        let node = if no_resolve {
            node_id.clone()
        } else if let Some(n) = names.get(&key) {
            n.clone()
        } else {
            let n = crate::node::display_name(client, &node_id).await;
            names.insert(key, n.clone());
            n
        };
        named.push(NamedTask { task, name, node });
    }
    let fmt = Format::new(format);
    let display = order_tasks(&mut named, fmt.table);
    let now = chrono::Utc::now();
    let rows: Vec<Value> = named
        .iter()
        .zip(display.iter())
        .map(|(t, d)| task_row(t, d, trunc, now))
        .collect();
    out(&render(&fmt, &task_header(), &rows).map_err(CliError::Message)?);
    Ok(())
}

async fn ps(client: &Client, a: &PsArgs) -> Result<(), CliError> {
    let list_by = |key: &str| {
        let mut f = HashMap::new();
        f.insert(key.to_string(), a.services.clone());
        ListServicesOptions {
            filters: Some(f),
            status: None,
        }
    };
    let by_id = client.docker.list_services(Some(list_by("id"))).await?;
    let by_name = client.docker.list_services(Some(list_by("name"))).await?;
    let mut filter = a.filter.clone();
    let mut notfound = Vec::new();
    let mut count = 0;
    'outer: for s in &a.services {
        for svc in &by_id {
            if svc.id.as_deref() == Some(s.as_str()) {
                filter.push(("service".into(), s.clone()));
                count += 1;
                continue 'outer;
            }
        }
        for svc in &by_name {
            if svc.spec.as_ref().and_then(|sp| sp.name.as_deref()) == Some(s.as_str()) {
                filter.push(("service".into(), svc.id.clone().unwrap_or_default()));
                count += 1;
                continue 'outer;
            }
        }
        let mut found = false;
        for svc in &by_id {
            if let Some(id) = svc.id.as_deref().filter(|id| id.starts_with(s.as_str())) {
                if found {
                    return Err(CliError::msg(format!(
                        "multiple services found with provided prefix: {s}"
                    )));
                }
                filter.push(("service".into(), id.to_string()));
                count += 1;
                found = true;
            }
        }
        if !found {
            notfound.push(format!("no such service: {s}"));
        }
    }
    if count == 0 {
        return Err(CliError::msg(notfound.join("\n")));
    }
    // `node=self` and other node references.
    let mut resolved = Vec::with_capacity(filter.len());
    for (k, v) in filter {
        if k == "node" {
            resolved.push((k, crate::node::reference(client, &v).await?));
        } else {
            resolved.push((k, v));
        }
    }
    let tasks = client
        .docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(opts::filter_map(&resolved)),
        }))
        .await?;
    let format = task_format(a.format.as_deref(), a.quiet);
    let trunc = !(a.no_trunc || a.quiet);
    print_tasks(client, tasks, a.no_resolve, trunc, &format).await?;
    if !notfound.is_empty() {
        return Err(CliError::msg(notfound.join("\n")));
    }
    Ok(())
}

async fn network_names(client: &Client, s: &Service) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let nets = s
        .spec
        .as_ref()
        .and_then(|sp| sp.task_template.as_ref())
        .and_then(|t| t.networks.clone())
        .unwrap_or_default();
    for n in nets {
        let Some(target) = n.target else { continue };
        if let Ok(raw) = client
            .get_raw(
                &format!("/networks/{target}"),
                &[("scope", "swarm".to_string())],
            )
            .await
        {
            if let Ok(v) = serde_json::from_str::<Value>(&raw) {
                if let Some(name) = v.get("Name").and_then(Value::as_str) {
                    m.insert(target.clone(), name.to_string());
                }
            }
        }
    }
    m
}

async fn inspect(client: &Client, a: &InspectArgs) -> Result<(), CliError> {
    if a.pretty && a.format.as_deref().is_some_and(|f| !f.is_empty()) {
        return Err(CliError::msg(
            "--format is incompatible with human friendly format",
        ));
    }
    let format = if a.pretty {
        "pretty".to_string()
    } else {
        a.format.clone().unwrap_or_default()
    };
    if format.starts_with("pretty") && format != "pretty" {
        return Err(CliError::msg(
            "Cannot supply extra formatting options to the pretty template",
        ));
    }
    let not_found = |r: &str, e: CliError| {
        if e.is_not_found() {
            CliError::msg(format!("Error: no such service: {r}"))
        } else {
            e
        }
    };
    let query = [("insertDefaults", "true".to_string())];
    if format == "pretty" {
        let mut text = String::new();
        for r in &a.services {
            let raw = client
                .get_raw(&format!("/services/{r}"), &query)
                .await
                .map_err(|e| not_found(r, e))?;
            let s: Service = serde_json::from_str(&raw)
                .map_err(|e| CliError::msg(format!("unable to read service: {e}")))?;
            let nets = network_names(client, &s).await;
            text.push_str(&pretty(&s, &nets, chrono::Utc::now()));
            text.push('\n');
        }
        out(&text);
        return Ok(());
    }
    let format = format.strip_prefix("raw").unwrap_or(&format).to_string();
    let mut raws = Vec::new();
    let mut errs = Vec::new();
    for r in &a.services {
        match client.get_raw(&format!("/services/{r}"), &query).await {
            Ok(raw) => raws.push(raw),
            Err(e) => errs.push(not_found(r, e)),
        }
    }
    out(&crate::node::render_inspect(&format, &raws)?);
    CliError::join(errs)
}

fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

fn go_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e21 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// `service inspect --pretty` for one service (docker's `serviceInspectPrettyTemplate`).
pub fn pretty(
    s: &Service,
    networks: &HashMap<String, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let task = spec.task_template.clone().unwrap_or_default();
    let cs = task.container_spec.clone().unwrap_or_default();
    let mut o = String::from("\n");
    o.push_str(&format!(
        "ID:\t\t{}\nName:\t\t{}",
        s.id.as_deref().unwrap_or(""),
        spec.name.as_deref().unwrap_or("")
    ));
    let sorted = |m: &HashMap<String, String>| {
        let mut v: Vec<(String, String)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort();
        v
    };
    if let Some(labels) = spec.labels.as_ref().filter(|l| !l.is_empty()) {
        o.push_str("\nLabels:");
        for (k, v) in sorted(labels) {
            if v.is_empty() {
                o.push_str(&format!("\n {k}"));
            } else {
                o.push_str(&format!("\n {k}={v}"));
            }
        }
    }
    o.push_str("\nService Mode:");
    let mode = spec.mode.clone().unwrap_or_default();
    if mode.global.is_some() {
        o.push_str("\tGlobal");
    } else if let Some(r) = &mode.replicated {
        o.push_str("\tReplicated");
        if let Some(n) = r.replicas {
            o.push_str(&format!("\n Replicas:\t{n}"));
        }
    }
    if let Some(us) = s
        .update_status
        .as_ref()
        .filter(|u| !enum_str(&u.state).is_empty())
    {
        let state = enum_str(&us.state);
        o.push_str(&format!("\nUpdateStatus:\n State:\t\t{state}"));
        if let Some(t) = timestamp(&us.started_at) {
            o.push_str(&format!("\n Started:\t{} ago", human_since(Some(t), now)));
        }
        if state == "completed" {
            if let Some(t) = timestamp(&us.completed_at) {
                o.push_str(&format!("\n Completed:\t{} ago", human_since(Some(t), now)));
            }
        }
        o.push_str(&format!(
            "\n Message:\t{}",
            us.message.as_deref().unwrap_or("")
        ));
    }
    o.push_str("\nPlacement:");
    let placement = task.placement.clone().unwrap_or_default();
    if let Some(c) = placement.constraints.as_ref().filter(|c| !c.is_empty()) {
        o.push_str(&format!("\n Constraints:\t{}", go_list(c)));
    }
    let prefs: Vec<String> = placement
        .preferences
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.spread.as_ref())
        .map(|sp| format!("spread={}", sp.spread_descriptor.as_deref().unwrap_or("")))
        .collect();
    if !prefs.is_empty() {
        o.push_str(&format!("\n Preferences:   {}", go_list(&prefs)));
    }
    if let Some(m) = placement.max_replicas.filter(|m| *m > 0) {
        o.push_str(&format!("\n Max Replicas Per Node:   {m}"));
    }
    let config_block = |o: &mut String,
                        title: &str,
                        order_label: &str,
                        par: Option<i64>,
                        delay: Option<i64>,
                        fa: String,
                        mon: Option<i64>,
                        ratio: Option<f64>,
                        order: String| {
        o.push_str(&format!("\n{title}:\n Parallelism:\t{}", par.unwrap_or(0)));
        if let Some(d) = delay.filter(|d| *d > 0) {
            o.push_str(&format!("\n Delay:\t\t{}", go_duration(d)));
        }
        o.push_str(&format!("\n On failure:\t{fa}"));
        if let Some(m) = mon.filter(|m| *m > 0) {
            o.push_str(&format!("\n Monitoring Period: {}", go_duration(m)));
        }
        o.push_str(&format!(
            "\n Max failure ratio: {}",
            go_float(ratio.unwrap_or(0.0) as f32 as f64)
        ));
        o.push_str(&format!("\n {order_label}{order}"));
    };
    if let Some(u) = &spec.update_config {
        config_block(
            &mut o,
            "UpdateConfig",
            "Update order:      ",
            u.parallelism,
            u.delay,
            enum_str(&u.failure_action),
            u.monitor,
            u.max_failure_ratio,
            enum_str(&u.order),
        );
    }
    if let Some(r) = &spec.rollback_config {
        config_block(
            &mut o,
            "RollbackConfig",
            "Rollback order:    ",
            r.parallelism,
            r.delay,
            enum_str(&r.failure_action),
            r.monitor,
            r.max_failure_ratio,
            enum_str(&r.order),
        );
    }
    o.push_str(&format!(
        "\nContainerSpec:\n Image:\t\t{}",
        cs.image.as_deref().unwrap_or("")
    ));
    if let Some(args) = cs.args.as_ref().filter(|a| !a.is_empty()) {
        o.push_str("\n Args:\t\t");
        for a in args {
            o.push_str(&format!("{a} "));
        }
    }
    if let Some(env) = cs.env.as_ref().filter(|e| !e.is_empty()) {
        o.push_str("\n Env:\t\t");
        for e in env {
            o.push_str(&format!("{e} "));
        }
    }
    if let Some(d) = cs.dir.as_deref().filter(|d| !d.is_empty()) {
        o.push_str(&format!("\n Dir:\t\t{d}"));
    }
    if let Some(i) = cs.init {
        o.push_str(&format!("\n Init:\t\t{i}"));
    }
    if let Some(u) = cs.user.as_deref().filter(|u| !u.is_empty()) {
        o.push_str(&format!("\n User: {u}"));
    }
    let caps_add = cs.capability_add.clone().unwrap_or_default();
    let caps_drop = cs.capability_drop.clone().unwrap_or_default();
    if !caps_add.is_empty() || !caps_drop.is_empty() {
        o.push_str("\nCapabilities:");
        if !caps_add.is_empty() {
            o.push_str(&format!("\n Add: {}", caps_add.join(", ")));
        }
        if !caps_drop.is_empty() {
            o.push_str(&format!("\n Drop: {}", caps_drop.join(", ")));
        }
    }
    if let Some(sysctls) = cs.sysctls.as_ref().filter(|s| !s.is_empty()) {
        o.push_str("\nSysCtls:");
        for (k, v) in sorted(sysctls) {
            if v.is_empty() {
                o.push_str(&format!("\n {k}"));
            } else {
                o.push_str(&format!("\n {k}: {v}"));
            }
        }
    }
    if let Some(ulimits) = cs.ulimits.as_ref().filter(|u| !u.is_empty()) {
        let mut m: Vec<(String, String)> = ulimits
            .iter()
            .map(|u| {
                (
                    u.name.clone().unwrap_or_default(),
                    format!("{}:{}", u.soft.unwrap_or(0), u.hard.unwrap_or(0)),
                )
            })
            .collect();
        m.sort();
        o.push_str("\nUlimits:");
        for (k, v) in m {
            o.push_str(&format!("\n {k}: {v}"));
        }
    }
    let mounts = cs.mounts.clone().unwrap_or_default();
    if !mounts.is_empty() {
        o.push_str("\nMounts:");
    }
    for m in &mounts {
        o.push_str(&format!(
            "\n Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
            m.target.as_deref().unwrap_or(""),
            m.source.as_deref().unwrap_or(""),
            m.read_only.unwrap_or(false),
            enum_str(&m.typ)
        ));
    }
    if let Some(configs) = cs.configs.as_ref().filter(|c| !c.is_empty()) {
        o.push_str("\nConfigs:");
        for c in configs {
            o.push_str(&format!(
                "\n Target:\t{}\n  Source:\t{}",
                c.file
                    .as_ref()
                    .and_then(|f| f.name.as_deref())
                    .unwrap_or(""),
                c.config_name.as_deref().unwrap_or("")
            ));
        }
    }
    if let Some(secrets) = cs.secrets.as_ref().filter(|c| !c.is_empty()) {
        o.push_str("\nSecrets:");
        for c in secrets {
            o.push_str(&format!(
                "\n Target:\t{}\n  Source:\t{}",
                c.file
                    .as_ref()
                    .and_then(|f| f.name.as_deref())
                    .unwrap_or(""),
                c.secret_name.as_deref().unwrap_or("")
            ));
        }
    }
    if let Some(ld) = &task.log_driver {
        o.push_str("\nLog Driver:");
        if let Some(n) = ld.name.as_deref().filter(|n| !n.is_empty()) {
            o.push_str(&format!("\n Name:\t\t{n}"));
        }
        if let Some(opts) = ld.options.as_ref().filter(|o| !o.is_empty()) {
            o.push_str("\n LogOpts:");
            for (k, v) in sorted(opts) {
                if v.is_empty() {
                    o.push_str(&format!("\n  {k}"));
                } else {
                    o.push_str(&format!("\n  {k}:       {v}"));
                }
            }
        }
        o.push('\n');
    }
    if let Some(res) = &task.resources {
        o.push_str("\nResources:");
        if let Some(r) = &res.reservations {
            let cpu = r.nano_cpus.unwrap_or(0);
            let mem = r.memory_bytes.unwrap_or(0);
            if cpu > 0 || mem > 0 {
                o.push_str("\n Reservations:");
                if cpu > 0 {
                    o.push_str(&format!("\n  CPU:\t\t{}", go_float(cpu as f64 / 1e9)));
                }
                if mem > 0 {
                    o.push_str(&format!("\n  Memory:\t{}", bytes_size(mem as f64)));
                }
            }
        }
        if let Some(l) = &res.limits {
            let cpu = l.nano_cpus.unwrap_or(0);
            let mem = l.memory_bytes.unwrap_or(0);
            let pids = l.pids.unwrap_or(0);
            if cpu > 0 || mem > 0 || pids > 0 {
                o.push_str("\n Limits:");
                if cpu > 0 {
                    o.push_str(&format!("\n  CPU:\t\t{}", go_float(cpu as f64 / 1e9)));
                }
                if mem > 0 {
                    o.push_str(&format!("\n  Memory:\t{}", bytes_size(mem as f64)));
                }
            }
        }
    }
    let pids = task
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.pids)
        .unwrap_or(0);
    if pids > 0 {
        o.push_str(&format!("\n  PIDs:\t\t{pids}"));
    }
    let nets = task.networks.clone().unwrap_or_default();
    if !nets.is_empty() {
        o.push_str("\nNetworks:");
        for n in nets {
            let t = n.target.unwrap_or_default();
            let name = networks.get(&t).cloned().unwrap_or(t);
            o.push_str(&format!(" {name}"));
        }
        o.push(' ');
    }
    o.push_str(&format!(
        "\nEndpoint Mode:\t{}",
        spec.endpoint_spec
            .as_ref()
            .map(|e| enum_str(&e.mode))
            .unwrap_or_default()
    ));
    let ports = s
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default();
    if !ports.is_empty() {
        o.push_str("\nPorts:");
        for p in &ports {
            o.push_str(&format!(
                "\n PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}",
                p.published_port.unwrap_or(0),
                enum_str(&p.protocol),
                p.target_port.unwrap_or(0),
                enum_str(&p.publish_mode)
            ));
        }
        o.push(' ');
    }
    if let Some(hc) = &cs.health_check {
        o.push_str(&format!(
            "\n Healthcheck:\n  Interval = {}\n  Retries = {}\n  StartPeriod =\t{}\n  Timeout =\t{}",
            go_duration(hc.interval.unwrap_or(0)),
            hc.retries.unwrap_or(0),
            go_duration(hc.start_period.unwrap_or(0)),
            go_duration(hc.timeout.unwrap_or(0))
        ));
        if let Some(tests) = hc.test.as_ref().filter(|t| !t.is_empty()) {
            o.push_str("\n  Tests:");
            for t in tests {
                o.push_str(&format!("\n\t Test = {t}"));
            }
            o.push(' ');
        }
    }
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: ServiceCommand,
    }

    fn parse(args: &[&str]) -> ServiceCommand {
        let mut v = vec!["service"];
        v.extend_from_slice(args);
        T::try_parse_from(v).unwrap().cmd
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        let mut v = vec!["create"];
        v.extend_from_slice(args);
        match parse(&v) {
            ServiceCommand::Create(a) => *a,
            _ => panic!("not create"),
        }
    }

    fn update_args(args: &[&str]) -> UpdateArgs {
        let mut v = vec!["update"];
        v.extend_from_slice(args);
        match parse(&v) {
            ServiceCommand::Update(a) => *a,
            _ => panic!("not update"),
        }
    }

    #[test]
    fn secret_and_config_flags_parse() {
        let a = create_args(&[
            "--secret",
            "db_pw",
            "--secret",
            "source=api_key,target=key,uid=10,gid=20,mode=0400",
            "--config",
            "src=site,target=/etc/site.conf",
            "nginx",
        ]);
        assert_eq!(a.secret.len(), 2);
        assert_eq!(a.secret[0].target, "db_pw");
        assert_eq!(
            (
                a.secret[1].target.as_str(),
                a.secret[1].uid.as_str(),
                a.secret[1].mode
            ),
            ("key", "10", 0o400)
        );
        assert_eq!(a.config[0].target, "/etc/site.conf");
        let u = update_args(&[
            "--secret-add",
            "new",
            "--secret-rm",
            "old",
            "--config-add",
            "c",
            "--config-rm",
            "d",
            "web",
        ]);
        assert_eq!(u.secret_add[0].source, "new");
        assert_eq!(
            (u.secret_rm.as_slice(), u.config_rm.as_slice()),
            (&["old".to_string()][..], &["d".to_string()][..])
        );
        assert_eq!(u.config_add[0].source, "c");
    }

    #[test]
    fn create_minimal_spec_is_what_docker_sends() {
        let spec = build_spec(&create_args(&["nginx"])).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            v,
            json!({
                "TaskTemplate": {
                    // docker's client tags an untagged image (`TagNameOnly`).
                    "ContainerSpec": {"Image": "nginx:latest", "Init": false, "DNSConfig": {}},
                    "Resources": {"Limits": {}, "Reservations": {}},
                    "Placement": {}
                },
                "Mode": {"Replicated": {}},
                "EndpointSpec": {"Mode": "vip"}
            })
        );
    }

    #[test]
    fn create_with_flags() {
        let a = create_args(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "-e",
            "A=1",
            "--env",
            "B=2",
            "-l",
            "tier=front",
            "--container-label",
            "c=d",
            "--constraint",
            "node.role==worker",
            "--placement-pref",
            "spread=node.labels.dc",
            "--replicas-max-per-node",
            "2",
            "--reserve-cpu",
            "0.5",
            "--reserve-memory",
            "64m",
            "--limit-cpu",
            "1",
            "--limit-memory",
            "128m",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "--update-parallelism",
            "2",
            "--update-delay",
            "10s",
            "--update-order",
            "start-first",
            "-p",
            "8080:80",
            "--network",
            "front",
            "-w",
            "/app",
            "-u",
            "nobody",
            "--hostname",
            "h",
            "--entrypoint",
            "/bin/sh -c",
            "--stop-grace-period",
            "20s",
            "--stop-signal",
            "SIGTERM",
            "--with-registry-auth",
            "--detach",
            "nginx:1.25",
            "echo",
            "-n",
            "hi",
        ]);
        assert!(a.common.detach);
        assert!(a.common.with_registry_auth);
        let v = serde_json::to_value(build_spec(&a).unwrap()).unwrap();
        assert_eq!(v["Name"], "web");
        assert_eq!(v["Labels"], json!({"tier": "front"}));
        assert_eq!(v["Mode"], json!({"Replicated": {"Replicas": 3}}));
        let cs = &v["TaskTemplate"]["ContainerSpec"];
        assert_eq!(cs["Image"], "nginx:1.25");
        assert_eq!(cs["Command"], json!(["/bin/sh", "-c"]));
        assert_eq!(cs["Args"], json!(["echo", "-n", "hi"]));
        assert_eq!(cs["Env"], json!(["A=1", "B=2"]));
        assert_eq!(cs["Labels"], json!({"c": "d"}));
        assert_eq!(cs["Dir"], "/app");
        assert_eq!(cs["User"], "nobody");
        assert_eq!(cs["Hostname"], "h");
        assert_eq!(cs["StopGracePeriod"], 20_000_000_000i64);
        assert_eq!(cs["StopSignal"], "SIGTERM");
        let tt = &v["TaskTemplate"];
        assert_eq!(
            tt["Resources"],
            json!({"Limits": {"NanoCPUs": 1_000_000_000i64, "MemoryBytes": 134217728},
                   "Reservations": {"NanoCPUs": 500_000_000, "MemoryBytes": 67108864}})
        );
        assert_eq!(
            tt["RestartPolicy"],
            json!({"Condition": "on-failure", "Delay": 5_000_000_000i64, "MaxAttempts": 3})
        );
        assert_eq!(
            tt["Placement"],
            json!({"Constraints": ["node.role==worker"],
                   "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.dc"}}],
                   "MaxReplicas": 2})
        );
        assert_eq!(tt["Networks"], json!([{"Target": "front"}]));
        assert_eq!(
            v["UpdateConfig"],
            json!({"Parallelism": 2, "Delay": 10_000_000_000i64, "FailureAction": "pause",
                   "Monitor": 5_000_000_000i64, "MaxFailureRatio": 0.0, "Order": "start-first"})
        );
        assert_eq!(
            v["EndpointSpec"],
            json!({"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80,
                   "PublishedPort": 8080, "PublishMode": "ingress"}]})
        );
    }

    #[test]
    fn create_stops_parsing_flags_after_the_image() {
        let a = create_args(&["--name", "web", "busybox", "--name", "x", "-d"]);
        assert_eq!(a.name.as_deref(), Some("web"));
        assert!(!a.common.detach);
        assert_eq!(a.image_and_args, vec!["busybox", "--name", "x", "-d"]);
    }

    #[test]
    fn create_modes_and_errors() {
        let v = serde_json::to_value(build_spec(&create_args(&["--mode", "global", "x"])).unwrap())
            .unwrap();
        assert_eq!(v["Mode"], json!({"Global": {}}));
        let v = serde_json::to_value(
            build_spec(&create_args(&[
                "--mode",
                "replicated-job",
                "--replicas",
                "4",
                "x",
            ]))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            v["Mode"],
            json!({"ReplicatedJob": {"MaxConcurrent": 4, "TotalCompletions": 4}})
        );
        assert_eq!(
            build_spec(&create_args(&["--mode", "global", "--replicas", "2", "x"]))
                .unwrap_err()
                .to_string(),
            "replicas can only be used with replicated or replicated-job mode"
        );
        assert_eq!(
            build_spec(&create_args(&[
                "--mode",
                "global-job",
                "--update-delay",
                "1s",
                "x"
            ]))
            .unwrap_err()
            .to_string(),
            "update and rollback configuration is not supported for jobs"
        );
        assert!(T::try_parse_from(["service", "create", "--mode", "bogus", "x"]).is_err());
        assert!(T::try_parse_from(["service", "create"]).is_err());
    }

    #[test]
    fn update_applies_docker_semantics() {
        let mut spec = build_spec(&create_args(&[
            "--name",
            "web",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "-l",
            "x=1",
            "--constraint",
            "b==1",
            "-p",
            "8080:80",
            "--replicas",
            "1",
            "nginx",
        ]))
        .unwrap();
        let a = update_args(&[
            "--image",
            "nginx:2",
            "--env-add",
            "B=3",
            "--env-add",
            "C=4",
            "--env-rm",
            "A",
            "--label-add",
            "y=2",
            "--label-rm",
            "x",
            "--constraint-add",
            "a==1",
            "--constraint-rm",
            "b==1",
            "--replicas",
            "5",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "80",
            "--force",
            "--args",
            "sh -c 'sleep 1'",
            "--tty",
            "--update-parallelism",
            "0",
            "web",
        ]);
        apply_update(&mut spec, &a).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let cs = &v["TaskTemplate"]["ContainerSpec"];
        assert_eq!(cs["Image"], "nginx:2");
        assert_eq!(cs["Env"], json!(["B=3", "C=4"]));
        assert_eq!(cs["Args"], json!(["sh", "-c", "sleep 1"]));
        assert_eq!(cs["TTY"], true);
        assert_eq!(v["Labels"], json!({"y": "2"}));
        assert_eq!(
            v["TaskTemplate"]["Placement"]["Constraints"],
            json!(["a==1"])
        );
        assert_eq!(v["TaskTemplate"]["ForceUpdate"], 1);
        assert_eq!(v["Mode"]["Replicated"]["Replicas"], 5);
        assert_eq!(v["UpdateConfig"]["Parallelism"], 0);
        assert_eq!(v["UpdateConfig"]["Order"], "stop-first");
        assert_eq!(
            v["EndpointSpec"]["Ports"],
            json!([{"Protocol": "tcp", "TargetPort": 90, "PublishedPort": 9090, "PublishMode": "ingress"}])
        );

        let mut global = build_spec(&create_args(&["--mode", "global", "x"])).unwrap();
        assert_eq!(
            apply_update(&mut global, &update_args(&["--replicas", "2", "x"]))
                .unwrap_err()
                .to_string(),
            "replicas can only be used with replicated mode"
        );
    }

    #[test]
    fn rows_for_service_ls() {
        let s: Service = serde_json::from_value(json!({
            "ID": "abcdefghijklmnopqrstuvwxy",
            "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 3}},
                     "TaskTemplate": {"ContainerSpec": {"Image": "nginx:latest@sha256:0123"},
                                      "Placement": {"MaxReplicas": 2}}},
            "Endpoint": {"Ports": [
                {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8081, "PublishMode": "ingress"},
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
                {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"},
                {"Protocol": "tcp", "TargetPort": 22, "PublishedPort": 2222, "PublishMode": "host"}
            ]},
            "ServiceStatus": {"RunningTasks": 2, "DesiredTasks": 3}
        }))
        .unwrap();
        let row = service_row(&s);
        assert_eq!(row["ID"], "abcdefghijkl");
        assert_eq!(row["Mode"], "replicated");
        assert_eq!(row["Replicas"], "2/3 (max 2 per node)");
        assert_eq!(row["Image"], "nginx:latest");
        assert_eq!(row["Ports"], "*:8080-8081->80-81/tcp, *:53->53/udp");
        let table = render(
            &Format::new(&list_format(None, false)),
            &service_header(),
            &[row],
        )
        .unwrap();
        assert_eq!(
            table,
            "ID             NAME      MODE         REPLICAS               IMAGE          PORTS\nabcdefghijkl   web       replicated   2/3 (max 2 per node)   nginx:latest   *:8080-8081->80-81/tcp, *:53->53/udp\n"
        );

        let job: Service = serde_json::from_value(json!({
            "ID": "j", "Spec": {"Name": "job", "Mode": {"ReplicatedJob": {"TotalCompletions": 10}}},
            "ServiceStatus": {"RunningTasks": 2, "DesiredTasks": 3, "CompletedTasks": 5}
        }))
        .unwrap();
        assert_eq!(service_row(&job)["Replicas"], "2/3 (5/10 completed)");
        assert_eq!(service_row(&job)["Mode"], "replicated job");
    }

    #[test]
    fn task_table_rows() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T03:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mk = |id: &str, created: &str, err: &str| {
            NamedTask {
            task: serde_json::from_value(json!({
                "ID": id, "CreatedAt": created, "DesiredState": "running",
                "Spec": {"ContainerSpec": {"Image": "nginx:1@sha256:00"}},
                "Status": {"Timestamp": "2024-01-01T01:00:00Z", "State": "running", "Err": err,
                           "PortStatus": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080}]}}
            }))
            .unwrap(),
            name: "web.1".into(),
            node: "node-1".into(),
        }
        };
        let mut tasks = vec![
            mk(
                "older0000000000000000000a",
                "2024-01-01T00:00:00Z",
                "a very long error message that goes beyond thirty",
            ),
            mk("newer0000000000000000000b", "2024-01-01T00:30:00Z", ""),
        ];
        let names = order_tasks(&mut tasks, true);
        assert_eq!(names, vec!["web.1", " \\_ web.1"]);
        assert_eq!(
            tasks[0].task.id.as_deref(),
            Some("newer0000000000000000000b")
        );
        let row = task_row(&tasks[0], &names[0], true, now);
        assert_eq!(row["ID"], "newer0000000");
        assert_eq!(row["Image"], "nginx:1");
        assert_eq!(row["DesiredState"], "Running");
        assert_eq!(row["CurrentState"], "Running 2 hours ago");
        assert_eq!(row["Ports"], "*:8080->80/tcp");
        let row = task_row(&tasks[1], &names[1], true, now);
        assert_eq!(row["Error"], "\"a very long error message tha…\"");
        let row = task_row(&tasks[1], &names[1], false, now);
        assert_eq!(row["ID"], "older0000000000000000000a");
        assert_eq!(row["Image"], "nginx:1@sha256:00");
    }

    #[test]
    fn pretty_matches_docker_golden() {
        // cli/command/service/testdata/service-inspect-pretty.golden
        let s: Service = serde_json::from_value(json!({
            "ID": "de179gar9d0o7ltdybungplod",
            "Spec": {
                "Name": "my_service", "Labels": {"com.label": "foo"},
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "foo/bar@sha256:this_is_a_test",
                        "Configs": [{"File": {"Name": "/configtest.conf"}, "ConfigName": "configtest.conf"}],
                        "Secrets": [{"File": {"Name": "/secrettest.conf"}, "SecretName": "secrettest.conf"}],
                        "HealthCheck": {"Test": ["CMD-SHELL", "curl"], "Interval": 4, "Retries": 3, "StartPeriod": 2, "Timeout": 1}
                    },
                    "Resources": {"Limits": {"NanoCPUs": 100000000000i64, "MemoryBytes": 10490000, "Pids": 20}},
                    "Networks": [{"Target": "5vpyomhb6ievnk0i0o60gcnei"}],
                    "LogDriver": {"Name": "driver", "Options": {"max-file": "5"}}
                },
                "Mode": {"Replicated": {"Replicas": 2}},
                "EndpointSpec": {"Mode": "vip"}
            },
            "Endpoint": {"Ports": [{"Protocol": "tcp", "TargetPort": 5000, "PublishedPort": 30000}]}
        }))
        .unwrap();
        let mut nets = HashMap::new();
        nets.insert(
            "5vpyomhb6ievnk0i0o60gcnei".to_string(),
            "mynetwork".to_string(),
        );
        let want = "
ID:\t\tde179gar9d0o7ltdybungplod
Name:\t\tmy_service
Labels:
 com.label=foo
Service Mode:\tReplicated
 Replicas:\t2
Placement:
ContainerSpec:
 Image:\t\tfoo/bar@sha256:this_is_a_test
Configs:
 Target:\t/configtest.conf
  Source:\tconfigtest.conf
Secrets:
 Target:\t/secrettest.conf
  Source:\tsecrettest.conf
Log Driver:
 Name:\t\tdriver
 LogOpts:
  max-file:       5

Resources:
 Limits:
  CPU:\t\t100
  Memory:\t10MiB
  PIDs:\t\t20
Networks: mynetwork 
Endpoint Mode:\tvip
Ports:
 PublishedPort = 30000
  Protocol = tcp
  TargetPort = 5000
  PublishMode =  
 Healthcheck:
  Interval = 4ns
  Retries = 3
  StartPeriod =\t2ns
  Timeout =\t1ns
  Tests:
\t Test = CMD-SHELL
\t Test = curl 
";
        assert_eq!(pretty(&s, &nets, chrono::Utc::now()), want);
    }

    #[test]
    fn pretty_update_config_block() {
        let s: Service = serde_json::from_value(json!({
            "ID": "x",
            "Spec": {"Name": "web", "Mode": {"Global": {}},
                     "TaskTemplate": {"ContainerSpec": {"Image": "nginx", "Args": ["a", "b"], "Init": false}},
                     "UpdateConfig": {"Parallelism": 1, "Delay": 10000000000i64, "FailureAction": "pause",
                                      "Monitor": 5000000000i64, "MaxFailureRatio": 0, "Order": "stop-first"},
                     "EndpointSpec": {"Mode": "vip"}}
        }))
        .unwrap();
        let p = pretty(&s, &HashMap::new(), chrono::Utc::now());
        assert!(p.contains("Service Mode:\tGlobal\nPlacement:\nUpdateConfig:\n Parallelism:\t1\n Delay:\t\t10s\n On failure:\tpause\n Monitoring Period: 5s\n Max failure ratio: 0\n Update order:      stop-first\nContainerSpec:\n Image:\t\tnginx\n Args:\t\ta b \n Init:\t\tfalse\nEndpoint Mode:\tvip\n"));
    }

    #[test]
    fn scale_and_rollback_argument_checks() {
        match parse(&["scale", "web=3", "api=1", "-d"]) {
            ServiceCommand::Scale(a) => {
                assert!(a.detach);
                assert_eq!(a.pairs, vec!["web=3", "api=1"]);
            }
            _ => panic!(),
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(run(
                &"unix:///nonexistent.sock".into(),
                parse(&["update", "--rollback", "--image", "x", "web"]),
                &["rollback".into(), "image".into(), "service".into()],
            ))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "other flags may not be combined with --rollback"
        );
        let err = rt
            .block_on(run(
                &"unix:///nonexistent.sock".into(),
                parse(&["scale", "web"]),
                &[],
            ))
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid scale specifier 'web'."));
        let err = rt
            .block_on(run(&"unix:///nonexistent.sock".into(), parse(&["ls"]), &[]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot connect to the Shoal daemon at unix:///nonexistent.sock. Is the shoal daemon running?"
        );
    }
}

/// The image reference as the docker CLI sends it when no digest is resolved: a reference
/// without tag or digest gets `:latest` (docker's `TagNameOnly`).
pub fn normalize_image(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod image_tests {
    use super::normalize_image;

    #[test]
    fn images_get_latest_like_docker() {
        assert_eq!(normalize_image("busybox"), "busybox:latest");
        assert_eq!(normalize_image("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            normalize_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_image("localhost:5000/app:v2"),
            "localhost:5000/app:v2"
        );
        assert_eq!(normalize_image("app@sha256:abc"), "app@sha256:abc");
    }
}
