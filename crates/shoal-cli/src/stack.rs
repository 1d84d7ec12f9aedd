//! `shoal stack ...` (docker's `docker stack`): `deploy` reads compose files client side with
//! `shoal-compose` (loaded, interpolated, merged, validated and converted before the first API
//! call, errors at file:line), checks external networks, secrets and configs, then creates the
//! stack's missing networks, its secrets and configs, and creates or updates its services
//! (`--prune` removes those gone from the file; `--detach=false` waits with the progress
//! display of `service create`). `config` prints the merged file; `ls`, `services`, `ps` and
//! `rm` find the stack's objects by their `com.docker.stack.namespace` label. Decisions are
//! taken in [`crate::stack_plan`]; this module only talks to the daemon and prints.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{Service, ServiceSpec};
use bollard::query_parameters::{
    InspectNetworkOptions, ListConfigsOptions, ListNetworksOptions, ListSecretsOptions,
    ListServicesOptions, ListTasksOptions, UpdateConfigOptions, UpdateSecretOptions,
    UpdateServiceOptions,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use shoal_compose::convert::{convert, ConvertContext, ConvertError, Stack};
use shoal_compose::{ComposeError, Loaded, Source};

use crate::client::{CliError, Client, Endpoint};
use crate::format::{err, header, natural_cmp, out, render, Format};
use crate::opts;
use crate::stack_plan::{self as plan, ResolveImage, ServiceAction};

/// `stack` subcommands.
#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Outputs the final config file, after doing merges and interpolations
    Config(ConfigArgs),
    /// Deploy a new stack or update an existing stack
    #[command(alias = "up")]
    Deploy(DeployArgs),
    /// List stacks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the tasks in the stack
    Ps(PsArgs),
    /// Remove one or more stacks
    #[command(aliases = ["remove", "down"])]
    Rm(RmArgs),
    /// List the services in the stack
    Services(ServicesArgs),
}

/// `stack config` flags.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Path to a Compose file, or "-" to read from stdin
    #[arg(short = 'c', long = "compose-file", value_name = "strings")]
    pub compose_files: Vec<String>,
}

/// `stack deploy` flags.
#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// Path to a Compose file, or "-" to read from stdin
    #[arg(short = 'c', long = "compose-file", value_name = "strings")]
    pub compose_files: Vec<String>,
    /// Exit immediately instead of waiting for the stack services to converge (default true)
    #[arg(
        short = 'd',
        long,
        value_name = "bool",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub detach: Option<bool>,
    /// Prune services that are no longer referenced
    #[arg(long)]
    pub prune: bool,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Query the registry to resolve image digest and supported platforms ("always", "changed", "never")
    #[arg(
        long = "resolve-image",
        value_name = "string",
        default_value = "always"
    )]
    pub resolve_image: String,
    /// Send registry authentication details to Swarm agents
    #[arg(long = "with-registry-auth")]
    pub with_registry_auth: bool,
    /// Stack name
    #[arg(value_name = "STACK")]
    pub name: String,
}

/// `stack ls` flags.
#[derive(Args, Debug, Clone)]
pub struct LsArgs {
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
}

/// `stack ps` flags.
#[derive(Args, Debug, Clone)]
pub struct PsArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter", value_name = "filter", value_parser = opts::filter)]
    pub filter: Vec<(String, String)>,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
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
    /// Stack name
    #[arg(value_name = "STACK")]
    pub name: String,
}

/// `stack rm` flags.
#[derive(Args, Debug, Clone)]
pub struct RmArgs {
    /// Do not wait for stack removal (default true)
    #[arg(
        short = 'd',
        long,
        value_name = "bool",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub detach: Option<bool>,
    /// Stacks to remove
    #[arg(value_name = "STACK", required = true)]
    pub names: Vec<String>,
}

/// `stack services` flags.
#[derive(Args, Debug, Clone)]
pub struct ServicesArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter", value_name = "filter", value_parser = opts::filter)]
    pub filter: Vec<(String, String)>,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Stack name
    #[arg(value_name = "STACK")]
    pub name: String,
}

/// Runs a `stack` subcommand.
pub async fn run(host: &Endpoint, cmd: StackCommand) -> Result<(), CliError> {
    match cmd {
        StackCommand::Config(a) => {
            let (loaded, _) = load(&a.compose_files, false)?;
            out(&shoal_compose::config_yaml(&loaded));
            Ok(())
        }
        StackCommand::Deploy(a) => deploy(host, &a).await,
        StackCommand::Ls(a) => ls(&Client::connect(host).await?, &a).await,
        StackCommand::Ps(a) => ps(&Client::connect(host).await?, &a).await,
        StackCommand::Rm(a) => rm(&Client::connect(host).await?, &a).await,
        StackCommand::Services(a) => services(&Client::connect(host).await?, &a).await,
    }
}

fn compose_err(e: ComposeError) -> CliError {
    CliError::msg(e.to_string())
}

/// Reads, loads and validates the compose files; prints the unset-variable warnings.
/// Returns the loaded files and the directory relative paths are resolved against.
fn load(files: &[String], quiet_warnings: bool) -> Result<(Loaded, PathBuf), CliError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut sources = Vec::with_capacity(files.len());
    let mut dir: Option<PathBuf> = None;
    for f in files {
        let source = if f == "-" {
            Source::from_reader(std::io::stdin().lock()).map_err(compose_err)?
        } else {
            Source::from_path(Path::new(f)).map_err(compose_err)?
        };
        if dir.is_none() {
            dir = Some(if f == "-" {
                cwd.clone()
            } else {
                let parent = Path::new(f).parent().unwrap_or(Path::new(""));
                cwd.join(parent)
            });
        }
        sources.push(source);
    }
    let dir = dir.unwrap_or(cwd);
    let env = shoal_compose::environment(std::env::vars(), Some(&dir)).map_err(compose_err)?;
    let loaded = shoal_compose::load(&sources, &env).map_err(compose_err)?;
    if !quiet_warnings {
        for w in &loaded.warnings {
            err(&format!("{w}\n"));
        }
    }
    // Validate the model even for `stack config`, as docker's loader does.
    loaded.model().map_err(compose_err)?;
    Ok((loaded, dir))
}

/// Loads and converts the files into stack `name`, printing docker's warnings.
fn prepare(files: &[String], name: &str) -> Result<(Loaded, Stack), CliError> {
    let (loaded, dir) = load(files, false)?;
    let model = loaded.model().map_err(compose_err)?;
    let warnings = model.warnings();
    if !warnings.is_empty() {
        err(&warnings);
    }
    let env = shoal_compose::environment(std::env::vars(), Some(&dir)).map_err(compose_err)?;
    let ctx = ConvertContext::new(dir).with_env(move |k| env.get(k).cloned());
    let stack = convert(name, &model, &ctx).map_err(|e| compose_err(loaded.convert_error(&e)))?;
    Ok((loaded, stack))
}

fn label_filter(namespace: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![plan::namespace_filter(namespace)])])
}

async fn stack_services(client: &Client, namespace: &str) -> Result<Vec<Service>, CliError> {
    Ok(client
        .docker
        .list_services(Some(ListServicesOptions {
            filters: Some(label_filter(namespace)),
            status: None,
        }))
        .await?)
}

/// The stack's networks as (name, ID).
async fn stack_networks(
    client: &Client,
    namespace: &str,
) -> Result<Vec<(String, String)>, CliError> {
    let nets = client
        .docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(namespace)),
        }))
        .await?;
    Ok(nets
        .into_iter()
        .map(|n| (n.name.unwrap_or_default(), n.id.unwrap_or_default()))
        .collect())
}

async fn stack_secrets(
    client: &Client,
    namespace: &str,
) -> Result<Vec<(String, String)>, CliError> {
    let list = client
        .docker
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(label_filter(namespace)),
        }))
        .await?;
    Ok(list
        .into_iter()
        .map(|s| {
            (
                s.spec.and_then(|sp| sp.name).unwrap_or_default(),
                s.id.unwrap_or_default(),
            )
        })
        .collect())
}

async fn stack_configs(
    client: &Client,
    namespace: &str,
) -> Result<Vec<(String, String)>, CliError> {
    let list = client
        .docker
        .list_configs(Some(ListConfigsOptions {
            filters: Some(label_filter(namespace)),
        }))
        .await?;
    Ok(list
        .into_iter()
        .map(|c| {
            (
                c.spec.and_then(|sp| sp.name).unwrap_or_default(),
                c.id.unwrap_or_default(),
            )
        })
        .collect())
}

/// Docker's `checkDaemonIsSwarmManager`.
async fn check_manager(client: &Client) -> Result<(), CliError> {
    let info = client.info().await?;
    if info
        .pointer("/Swarm/ControlAvailable")
        .and_then(Value::as_bool)
        != Some(true)
    {
        return Err(CliError::msg(
            "this node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again",
        ));
    }
    Ok(())
}

/// A compose error about service `service` (placed at its file and line).
fn service_error(loaded: &Loaded, service: &str, message: String) -> CliError {
    compose_err(loaded.convert_error(&ConvertError::Service {
        service: service.to_string(),
        message,
    }))
}

/// Checks that the external networks, secrets and configs exist, before anything is created.
async fn check_external(client: &Client, loaded: &Loaded, stack: &Stack) -> Result<(), CliError> {
    for name in stack
        .external_networks
        .iter()
        .filter(|n| plan::network_needs_check(n))
    {
        let r = client
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
            .map_err(CliError::from);
        match r {
            Err(e) if e.is_not_found() => {
                return Err(CliError::msg(format!(
                    "network {name:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed"
                )))
            }
            Err(e) => return Err(e),
            Ok(n) => {
                let scope = n.scope.unwrap_or_default();
                if scope != "swarm" {
                    return Err(CliError::msg(format!(
                        "network {name:?} is declared as external, but it is not in the right scope: {scope:?} instead of \"swarm\""
                    )));
                }
            }
        }
    }
    for (names, config) in [
        (&stack.external_secrets, false),
        (&stack.external_configs, true),
    ] {
        for name in names {
            let r = if config {
                client.docker.inspect_config(name).await.map(|_| ())
            } else {
                client.docker.inspect_secret(name).await.map(|_| ())
            };
            match r.map_err(CliError::from) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {
                    let kind = if config { "config" } else { "secret" };
                    let users = plan::services_using(&stack.services, name, config);
                    let message = format!("{kind} not found: {name}");
                    return Err(match users.first() {
                        Some(svc) => service_error(loaded, svc, message),
                        None => CliError::msg(message),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Name -> ID of the secrets (or configs) named `names`.
async fn ids_by_name(
    client: &Client,
    names: &[String],
    config: bool,
) -> Result<HashMap<String, String>, CliError> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let filters = Some(HashMap::from([("name".to_string(), names.to_vec())]));
    let pairs: Vec<(String, String)> = if config {
        client
            .docker
            .list_configs(Some(ListConfigsOptions { filters }))
            .await?
            .into_iter()
            .map(|c| {
                (
                    c.spec.and_then(|s| s.name).unwrap_or_default(),
                    c.id.unwrap_or_default(),
                )
            })
            .collect()
    } else {
        client
            .docker
            .list_secrets(Some(ListSecretsOptions { filters }))
            .await?
            .into_iter()
            .map(|s| {
                (
                    s.spec.and_then(|s| s.name).unwrap_or_default(),
                    s.id.unwrap_or_default(),
                )
            })
            .collect()
    };
    // The name filter matches prefixes: keep exact names only.
    Ok(pairs
        .into_iter()
        .filter(|(n, _)| names.contains(n))
        .collect())
}

async fn create_secrets_and_configs(client: &Client, stack: &Stack) -> Result<(), CliError> {
    for spec in &stack.secrets {
        let name = spec.name.clone().unwrap_or_default();
        match client
            .docker
            .inspect_secret(&name)
            .await
            .map_err(CliError::from)
        {
            Ok(current) => {
                let version = current.version.and_then(|v| v.index).unwrap_or(0);
                client
                    .docker
                    .update_secret(
                        current.id.as_deref().unwrap_or(&name),
                        spec.clone(),
                        UpdateSecretOptions {
                            version: version as i64,
                        },
                    )
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "failed to update secret {name}: {}",
                            CliError::from(e)
                        ))
                    })?;
            }
            Err(e) if e.is_not_found() => {
                out(&format!("Creating secret {name}\n"));
                client
                    .docker
                    .create_secret(spec.clone())
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "failed to create secret {name}: {}",
                            CliError::from(e)
                        ))
                    })?;
            }
            Err(e) => return Err(e),
        }
    }
    for spec in &stack.configs {
        let name = spec.name.clone().unwrap_or_default();
        match client
            .docker
            .inspect_config(&name)
            .await
            .map_err(CliError::from)
        {
            Ok(current) => {
                let version = current.version.and_then(|v| v.index).unwrap_or(0);
                client
                    .docker
                    .update_config(
                        current.id.as_deref().unwrap_or(&name),
                        spec.clone(),
                        UpdateConfigOptions {
                            version: version as i64,
                        },
                    )
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "failed to update config {name}: {}",
                            CliError::from(e)
                        ))
                    })?;
            }
            Err(e) if e.is_not_found() => {
                out(&format!("Creating config {name}\n"));
                client
                    .docker
                    .create_config(spec.clone())
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "failed to create config {name}: {}",
                            CliError::from(e)
                        ))
                    })?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn remove_services(client: &Client, services: &[(String, String)]) -> bool {
    let mut failed = false;
    for (name, id) in services {
        out(&format!("Removing service {name}\n"));
        if let Err(e) = client.docker.delete_service(id).await {
            failed = true;
            err(&format!(
                "Failed to remove service {id}: {}\n",
                CliError::from(e)
            ));
        }
    }
    failed
}

async fn deploy(host: &Endpoint, a: &DeployArgs) -> Result<(), CliError> {
    plan::validate_stack_name(&a.name).map_err(CliError::Message)?;
    // Everything local first: a broken file changes nothing.
    let (loaded, stack) = prepare(&a.compose_files, &a.name)?;
    if a.detach.is_none() {
        err("Since --detach=false was not specified, tasks will be created in the background.\nIn a future release, --detach=false will become the default.\n");
    }
    let resolve: ResolveImage = a.resolve_image.parse().map_err(CliError::Message)?;
    let client = Client::connect(host).await?;
    check_manager(&client).await?;
    check_external(&client, &loaded, &stack).await?;

    let existing = stack_services(&client, &a.name).await?;
    if a.prune {
        let gone = plan::services_to_prune(&a.name, &stack.services, &existing);
        remove_services(&client, &gone).await;
    }

    let existing_networks: Vec<String> = stack_networks(&client, &a.name)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in plan::networks_to_create(&stack.networks, &existing_networks) {
        let Some(req) = stack.networks.get(&name) else {
            continue;
        };
        out(&format!("Creating network {name}\n"));
        client
            .docker
            .create_network(req.clone())
            .await
            .map_err(|e| {
                CliError::msg(format!(
                    "failed to create network {name}: {}",
                    CliError::from(e)
                ))
            })?;
    }

    create_secrets_and_configs(&client, &stack).await?;

    let (secret_names, config_names) = plan::referenced_names(&stack.services);
    let secret_ids = ids_by_name(&client, &secret_names, false).await?;
    let config_ids = ids_by_name(&client, &config_names, true).await?;
    let mut specs: BTreeMap<String, ServiceSpec> = BTreeMap::new();
    for (key, spec) in &stack.services {
        let mut spec = spec.clone();
        plan::resolve_references(&mut spec, &secret_ids, &config_ids)
            .map_err(|m| service_error(&loaded, key, m))?;
        specs.insert(key.clone(), spec);
    }

    // Services gone with `--prune` are not updated.
    let existing: Vec<Service> = if a.prune {
        stack_services(&client, &a.name).await?
    } else {
        existing
    };
    let mut ids = Vec::new();
    for action in plan::plan_services(&specs, &existing, resolve) {
        let name = action.name().to_string();
        let image = action
            .spec()
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let creds = if a.with_registry_auth {
            opts::registry_credentials(&image)
        } else {
            None
        };
        match action {
            ServiceAction::Create { spec, .. } => {
                out(&format!("Creating service {name}\n"));
                let resp = client
                    .docker
                    .create_service(spec, creds)
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "failed to create service {name}: {}",
                            CliError::from(e)
                        ))
                    })?;
                for w in resp.warnings.unwrap_or_default() {
                    err(&format!("{w}\n"));
                }
                ids.push(resp.id.unwrap_or_default());
            }
            ServiceAction::Update {
                id, version, spec, ..
            } => {
                out(&format!("Updating service {name} (id: {id})\n"));
                let options = UpdateServiceOptions {
                    version: i32::try_from(version).map_err(|_| {
                        CliError::msg(format!("service version {version} out of range"))
                    })?,
                    registry_auth_from: if creds.is_some() {
                        String::new()
                    } else {
                        "spec".to_string()
                    },
                    rollback: None,
                };
                let resp = client
                    .docker
                    .update_service(&id, spec, options, creds)
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "failed to update service {name}: {}",
                            CliError::from(e)
                        ))
                    })?;
                for w in resp.warnings.unwrap_or_default() {
                    err(&format!("{w}\n"));
                }
                ids.push(id);
            }
        }
    }

    if a.detach.unwrap_or(true) {
        return Ok(());
    }
    let mut errs = Vec::new();
    for id in &ids {
        if let Err(e) = crate::progress::wait_on_service(&client, id, a.quiet).await {
            errs.push(CliError::msg(format!("{id}: {e}")));
        }
    }
    CliError::join(errs)
}

async fn ls(client: &Client, a: &LsArgs) -> Result<(), CliError> {
    let services = client
        .docker
        .list_services(Some(ListServicesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![shoal_compose::convert::LABEL_NAMESPACE.to_string()],
            )])),
            status: None,
        }))
        .await?;
    let rows: Vec<Value> = plan::count_stacks(&services)
        .into_iter()
        .map(|(name, n)| json!({"Name": name, "Services": n.to_string(), "Orchestrator": "Swarm", "Namespace": ""}))
        .collect();
    let format = match a.format.as_deref().filter(|f| !f.is_empty()) {
        None | Some("table") => "table {{.Name}}\t{{.Services}}".to_string(),
        Some(other) => other.to_string(),
    };
    let hdr = header(&[
        ("Name", "NAME"),
        ("Services", "SERVICES"),
        ("Orchestrator", "ORCHESTRATOR"),
        ("Namespace", "NAMESPACE"),
    ]);
    out(&render(&Format::new(&format), &hdr, &rows).map_err(CliError::Message)?);
    Ok(())
}

fn with_namespace(namespace: &str, filter: &[(String, String)]) -> Vec<(String, String)> {
    let mut f = filter.to_vec();
    f.push(("label".to_string(), plan::namespace_filter(namespace)));
    f
}

async fn services(client: &Client, a: &ServicesArgs) -> Result<(), CliError> {
    let filters = opts::filter_map(&with_namespace(&a.name, &a.filter));
    let mut services = client
        .docker
        .list_services(Some(ListServicesOptions {
            filters: Some(filters),
            status: Some(!a.quiet),
        }))
        .await?;
    if services.is_empty() {
        err(&format!("Nothing found in stack: {}\n", a.name));
        return Ok(());
    }
    if !a.quiet {
        crate::service::append_service_status(client, &mut services).await?;
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
    let rows: Vec<Value> = services.iter().map(crate::service::service_row).collect();
    let fmt = Format::new(&crate::service::list_format(a.format.as_deref(), a.quiet));
    out(&render(&fmt, &crate::service::service_header(), &rows).map_err(CliError::Message)?);
    Ok(())
}

async fn ps(client: &Client, a: &PsArgs) -> Result<(), CliError> {
    let mut resolved = Vec::new();
    for (k, v) in with_namespace(&a.name, &a.filter) {
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
    if tasks.is_empty() {
        return Err(CliError::msg(format!("nothing found in stack: {}", a.name)));
    }
    let format = crate::service::task_format(a.format.as_deref(), a.quiet);
    // Unlike `service ps`, docker's `stack ps -q` keeps IDs truncated.
    let trunc = !a.no_trunc;
    crate::service::print_tasks(client, tasks, a.no_resolve, trunc, &format).await
}

async fn rm(client: &Client, a: &RmArgs) -> Result<(), CliError> {
    let mut errs = Vec::new();
    for namespace in &a.names {
        let mut services: Vec<(String, String)> = stack_services(client, namespace)
            .await?
            .into_iter()
            .map(|s| {
                (
                    s.spec.and_then(|sp| sp.name).unwrap_or_default(),
                    s.id.unwrap_or_default(),
                )
            })
            .collect();
        services.sort_by(|x, y| natural_cmp(&x.0, &y.0));
        let networks = stack_networks(client, namespace).await?;
        let secrets = stack_secrets(client, namespace).await?;
        let configs = stack_configs(client, namespace).await?;
        if services.len() + networks.len() + secrets.len() + configs.len() == 0 {
            err(&format!("Nothing found in stack: {namespace}\n"));
            continue;
        }
        let mut failed = remove_services(client, &services).await;
        for (name, id) in &secrets {
            out(&format!("Removing secret {name}\n"));
            if let Err(e) = client.docker.delete_secret(id).await {
                failed = true;
                err(&format!(
                    "Failed to remove secret {id}: {}\n",
                    CliError::from(e)
                ));
            }
        }
        for (name, id) in &configs {
            out(&format!("Removing config {name}\n"));
            if let Err(e) = client.docker.delete_config(id).await {
                failed = true;
                err(&format!(
                    "Failed to remove config {id}: {}\n",
                    CliError::from(e)
                ));
            }
        }
        for (name, id) in &networks {
            out(&format!("Removing network {name}\n"));
            if let Err(e) = client.docker.remove_network(id).await {
                failed = true;
                err(&format!(
                    "Failed to remove network {id}: {}\n",
                    CliError::from(e)
                ));
            }
        }
        if failed {
            errs.push(format!(
                "Failed to remove some resources from stack: {namespace}"
            ));
            continue;
        }
        if a.detach == Some(false) {
            if let Err(e) = wait_on_tasks(client, namespace).await {
                errs.push(format!(
                    "Failed to wait on tasks of stack: {namespace}: {e}"
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(CliError::msg(errs.join("\n")))
    }
}

/// Waits until every task of the stack has ended (or is gone).
async fn wait_on_tasks(client: &Client, namespace: &str) -> Result<(), CliError> {
    loop {
        let tasks = client
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(label_filter(namespace)),
            }))
            .await
            .map_err(|e| CliError::msg(format!("failed to get tasks: {}", CliError::from(e))))?;
        if plan::all_tasks_terminal(&tasks) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn deploy_args(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        let mut argv = vec!["shoal", "stack", "deploy"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Stack {
                cmd: StackCommand::Deploy(a),
            } => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn deploy_flags_parse_like_docker() {
        let a = deploy_args(&["-c", "a.yml", "-c", "-", "web"]).expect("parse");
        assert_eq!(a.compose_files, ["a.yml", "-"]);
        assert_eq!(a.detach, None);
        assert_eq!(a.resolve_image, "always");
        assert!(!a.prune && !a.with_registry_auth);
        let a = deploy_args(&[
            "--compose-file=a.yml",
            "--detach=false",
            "--prune",
            "--with-registry-auth",
            "--resolve-image",
            "never",
            "web",
        ])
        .expect("parse");
        assert_eq!(a.detach, Some(false));
        assert!(a.prune && a.with_registry_auth);
        assert_eq!(a.resolve_image, "never");
        assert_eq!(
            deploy_args(&["-d", "web"]).expect("parse").detach,
            Some(true)
        );
        // A bool flag takes its value after `=` only, as pflag does.
        assert!(deploy_args(&["--detach", "false", "web"]).is_err());
        assert!(deploy_args(&[]).is_err());
    }

    #[test]
    fn rm_and_ps_flags() {
        let cli = Cli::try_parse_from(["shoal", "stack", "down", "--detach=false", "a", "b"])
            .expect("parse");
        match cli.command {
            Command::Stack {
                cmd: StackCommand::Rm(a),
            } => {
                assert_eq!(a.detach, Some(false));
                assert_eq!(a.names, ["a", "b"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "shoal",
            "stack",
            "ps",
            "--no-trunc",
            "-f",
            "desired-state=running",
            "web",
        ])
        .expect("parse");
        match cli.command {
            Command::Stack {
                cmd: StackCommand::Ps(a),
            } => {
                assert!(a.no_trunc);
                assert_eq!(
                    a.filter,
                    [("desired-state".to_string(), "running".to_string())]
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["shoal", "stack", "rm"]).is_err());
    }

    #[test]
    fn namespace_is_added_to_user_filters() {
        let f = with_namespace("ns", &[("name".to_string(), "web".to_string())]);
        assert_eq!(
            f,
            [
                ("name".to_string(), "web".to_string()),
                (
                    "label".to_string(),
                    "com.docker.stack.namespace=ns".to_string()
                )
            ]
        );
    }
}
