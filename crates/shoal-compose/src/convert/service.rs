//! Conversion of one compose service into a swarm `ServiceSpec`, field by field as
//! `docker stack deploy` does it.

use super::{scope, stack_labels, ConvertContext, LABEL_IMAGE};
use crate::model::{
    parse_cpus, parse_memory, ComposeFile, Deploy, FileReference, Healthcheck, RestartPolicy,
    Service, ServiceVolume, UpdateConfig,
};
use bollard_stubs::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, GenericResourcesInner,
    GenericResourcesInnerDiscreteResourceSpec, HealthConfig, Limit, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, ResourceObject, ResourcesUlimits,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecModeReplicatedJob,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecDnsConfig,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1, TaskSpecContainerSpecIsolationEnum,
    TaskSpecContainerSpecPrivileges, TaskSpecContainerSpecSecrets, TaskSpecLogDriver,
    TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use std::collections::{BTreeMap, HashMap};

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn non_zero(n: i64) -> Option<i64> {
    (n != 0).then_some(n)
}

fn to_i64(n: u64, what: &str) -> Result<i64, String> {
    i64::try_from(n).map_err(|_| format!("{what} {n} is too large"))
}

/// Converts service `svc` of `file` for stack `namespace`. The error is the message
/// without the `service NAME: ` prefix.
pub fn convert_service(
    namespace: &str,
    svc: &Service,
    file: &ComposeFile,
    ctx: &ConvertContext,
) -> Result<ServiceSpec, String> {
    let image = svc
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| "no image specified".to_string())?;
    let default_deploy = Deploy::default();
    let deploy = svc.deploy.as_ref().unwrap_or(&default_deploy);

    let secrets = convert_secrets(namespace, svc, file)?;
    let configs = convert_configs(namespace, svc, file)?;
    let endpoint = convert_endpoint(deploy.endpoint_mode.as_deref(), svc)?;
    let mode = convert_mode(deploy.mode.as_deref(), deploy.replicas)?;
    let mut mounts = Vec::new();
    for v in svc.volumes.iter().flatten() {
        mounts.push(convert_volume(&v.0, file, namespace, ctx)?);
    }
    for t in svc.tmpfs.iter().flat_map(|t| t.0.iter()) {
        mounts.push(convert_tmpfs(t)?);
    }
    let resources = convert_resources(deploy)?;
    let restart_policy =
        convert_restart_policy(svc.restart.as_deref(), deploy.restart_policy.as_ref())?;
    let health_check = svc
        .healthcheck
        .as_ref()
        .map(convert_healthcheck)
        .transpose()?;
    let networks = convert_networks(namespace, svc, file)?;
    let env = convert_environment(svc, ctx)?;
    let (cap_add, cap_drop) = effective_caps(
        svc.cap_add.as_deref().unwrap_or_default(),
        svc.cap_drop.as_deref().unwrap_or_default(),
    );

    let dns = svc.dns.as_ref().map(|d| d.0.clone()).unwrap_or_default();
    let dns_search = svc
        .dns_search
        .as_ref()
        .map(|d| d.0.clone())
        .unwrap_or_default();
    let dns_opt = svc.dns_opt.clone().unwrap_or_default();
    let dns_config =
        (!dns.is_empty() || !dns_search.is_empty() || !dns_opt.is_empty()).then(|| {
            TaskSpecContainerSpecDnsConfig {
                nameservers: non_empty(dns),
                search: non_empty(dns_search),
                options: non_empty(dns_opt),
            }
        });

    let hosts: Vec<String> = svc
        .extra_hosts
        .iter()
        .flat_map(|h| h.0.iter())
        .map(|(host, ip)| format!("{ip} {host}"))
        .collect();

    let mut ulimits: Vec<ResourcesUlimits> = svc
        .ulimits
        .iter()
        .flatten()
        .map(|(name, u)| ResourcesUlimits {
            name: Some(name.clone()),
            soft: Some(u.soft),
            hard: Some(u.hard),
        })
        .collect();
    ulimits.sort_by(|a, b| a.name.cmp(&b.name));

    let placement = deploy.placement.clone().unwrap_or_default();
    let preferences: Vec<TaskSpecPlacementPreferences> = placement
        .preferences
        .iter()
        .flatten()
        .map(|p| TaskSpecPlacementPreferences {
            spread: Some(TaskSpecPlacementSpread {
                spread_descriptor: Some(p.spread.clone()),
            }),
        })
        .collect();

    let container = TaskSpecContainerSpec {
        image: Some(image.clone()),
        labels: Some(stack_labels(namespace, svc.labels.as_ref())),
        command: svc.entrypoint.as_ref().and_then(|c| non_empty(c.0.clone())),
        args: svc.command.as_ref().and_then(|c| non_empty(c.0.clone())),
        hostname: svc.hostname.clone().filter(|h| !h.is_empty()),
        env: non_empty(env),
        dir: svc.working_dir.clone().filter(|d| !d.is_empty()),
        user: svc.user.clone().filter(|u| !u.is_empty()),
        // As the docker CLI sends it (`NoNewPrivileges: false` included), so that the same
        // file deployed by either CLI gives the same spec and re-deploying replaces no task.
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(false),
            ..Default::default()
        }),
        tty: svc.tty.filter(|b| *b),
        open_stdin: svc.stdin_open.filter(|b| *b),
        read_only: svc.read_only.filter(|b| *b),
        mounts: non_empty(mounts),
        stop_signal: svc.stop_signal.clone().filter(|s| !s.is_empty()),
        stop_grace_period: svc.stop_grace_period.map(|d| d.0),
        health_check,
        hosts: non_empty(hosts),
        dns_config,
        secrets: non_empty(secrets),
        configs: non_empty(configs),
        init: svc.init,
        sysctls: svc
            .sysctls
            .as_ref()
            .map(|s| s.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        capability_add: non_empty(cap_add),
        capability_drop: non_empty(cap_drop),
        ulimits: non_empty(ulimits),
        oom_score_adj: svc.oom_score_adj,
        isolation: match svc.isolation.as_deref() {
            None | Some("") => None,
            Some("default") => Some(TaskSpecContainerSpecIsolationEnum::DEFAULT),
            Some("process") => Some(TaskSpecContainerSpecIsolationEnum::PROCESS),
            Some("hyperv") => Some(TaskSpecContainerSpecIsolationEnum::HYPERV),
            Some(other) => {
                return Err(format!(
                    "invalid isolation {other:?}: must be \"default\", \"process\" or \"hyperv\""
                ))
            }
        },
        ..Default::default()
    };

    let mut labels = stack_labels(namespace, deploy.labels.as_ref());
    labels.insert(LABEL_IMAGE.to_string(), image);

    Ok(ServiceSpec {
        name: Some(scope(namespace, &svc.name)),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(resources),
            restart_policy,
            placement: Some(TaskSpecPlacement {
                constraints: placement.constraints.clone().and_then(non_empty),
                preferences: non_empty(preferences),
                max_replicas: placement
                    .max_replicas_per_node
                    .map(|m| to_i64(m, "max_replicas_per_node"))
                    .transpose()?,
                platforms: None,
            }),
            networks: Some(networks),
            log_driver: svc.logging.as_ref().map(|l| TaskSpecLogDriver {
                name: l.driver.clone(),
                options: l
                    .options
                    .as_ref()
                    .map(|o| o.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            }),
            ..Default::default()
        }),
        mode: Some(mode),
        update_config: deploy
            .update_config
            .as_ref()
            .map(convert_update_config)
            .transpose()?,
        rollback_config: deploy
            .rollback_config
            .as_ref()
            .map(convert_rollback_config)
            .transpose()?,
        networks: None,
        endpoint_spec: Some(endpoint),
    })
}

/// Environment: `env_file` entries first, then `environment` (which wins); a variable
/// without a value takes the deploying environment's value, or stays a bare name.
fn convert_environment(svc: &Service, ctx: &ConvertContext) -> Result<Vec<String>, String> {
    let mut vars: BTreeMap<String, Option<String>> = BTreeMap::new();
    for f in svc.env_file.iter().flat_map(|e| e.0.iter()) {
        let data = match ctx.read(&f.path) {
            Ok(d) => d,
            Err(_) if !f.required => continue,
            Err(e) => return Err(e),
        };
        let text = String::from_utf8(data).map_err(|_| {
            format!(
                "env file {}: invalid utf8 bytes",
                ctx.resolve(&f.path).display()
            )
        })?;
        for (k, v) in parse_env_file(&text, ctx)? {
            vars.insert(k, v);
        }
    }
    if let Some(env) = &svc.environment {
        for (k, v) in &env.0 {
            vars.insert(k.clone(), v.clone());
        }
    }
    Ok(vars
        .into_iter()
        .map(|(k, v)| match v.or_else(|| ctx.env(&k)) {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
        .collect())
}

/// Parses an env file: `KEY=VALUE` lines, `#` comments and blank lines skipped, a bare
/// `KEY` takes its value from the environment (and is dropped when unset).
pub fn parse_env_file(
    text: &str,
    ctx: &ConvertContext,
) -> Result<Vec<(String, Option<String>)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = match trimmed.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (trimmed.trim_end(), None),
        };
        if key.is_empty() {
            return Err(format!(
                "poorly formatted environment: no variable name on line '{trimmed}'"
            ));
        }
        if key.contains(char::is_whitespace) {
            return Err(format!(
                "poorly formatted environment: variable '{key}' contains whitespaces"
            ));
        }
        match value {
            Some(v) => out.push((key.to_string(), Some(v))),
            None => {
                if let Some(v) = ctx.env(key) {
                    out.push((key.to_string(), Some(v)));
                }
            }
        }
    }
    Ok(out)
}

fn normalize_caps(caps: &[String]) -> Vec<String> {
    let mut out: Vec<String> = caps
        .iter()
        .map(|c| {
            let c = c.trim().to_ascii_uppercase();
            if c == "ALL" || c.starts_with("CAP_") {
                c
            } else {
                format!("CAP_{c}")
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// docker's rule: `ALL` trumps the others, and adding wins over dropping.
fn effective_caps(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let mut add = normalize_caps(add);
    let mut drop = normalize_caps(drop);
    if add.iter().any(|c| c == "ALL") {
        add = vec!["ALL".to_string()];
    }
    if drop.iter().any(|c| c == "ALL") {
        drop = vec!["ALL".to_string()];
    }
    let drop = drop.into_iter().filter(|c| !add.contains(c)).collect();
    (add, drop)
}

fn convert_mode(mode: Option<&str>, replicas: Option<u64>) -> Result<ServiceSpecMode, String> {
    let replicas = replicas.map(|r| to_i64(r, "replicas")).transpose()?;
    let global_err =
        || "replicas can only be used with replicated or replicated-job mode".to_string();
    Ok(match mode.unwrap_or("") {
        "" | "replicated" => ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas }),
            ..Default::default()
        },
        "global" => {
            if replicas.is_some() {
                return Err(global_err());
            }
            ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            }
        }
        "replicated-job" => ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: replicas,
                total_completions: replicas,
            }),
            ..Default::default()
        },
        "global-job" => {
            if replicas.is_some() {
                return Err(global_err());
            }
            ServiceSpecMode {
                global_job: Some(HashMap::new()),
                ..Default::default()
            }
        }
        other => return Err(format!("unknown mode: {other}")),
    })
}

fn convert_endpoint(mode: Option<&str>, svc: &Service) -> Result<EndpointSpec, String> {
    let mode = match mode.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => None,
        Some("vip") => Some(EndpointSpecModeEnum::VIP),
        Some("dnsrr") => Some(EndpointSpecModeEnum::DNSRR),
        Some(other) => {
            return Err(format!(
                "invalid endpoint mode {other:?}: must be \"vip\" or \"dnsrr\""
            ))
        }
    };
    let mut ports: Vec<EndpointPortConfig> = svc
        .port_configs()
        .into_iter()
        .map(|p| EndpointPortConfig {
            name: None,
            protocol: p.protocol.as_deref().map(|pr| match pr {
                "udp" => EndpointPortConfigProtocolEnum::UDP,
                "sctp" => EndpointPortConfigProtocolEnum::SCTP,
                _ => EndpointPortConfigProtocolEnum::TCP,
            }),
            target_port: Some(i64::from(p.target)),
            published_port: p.published.map(i64::from),
            publish_mode: p.mode.as_deref().map(|m| match m {
                "host" => EndpointPortConfigPublishModeEnum::HOST,
                _ => EndpointPortConfigPublishModeEnum::INGRESS,
            }),
        })
        .collect();
    ports.sort_by_key(|p| {
        (
            p.published_port.unwrap_or(0),
            p.target_port.unwrap_or(0),
            p.protocol.map(|x| x.to_string()),
            p.publish_mode.map(|x| x.to_string()),
        )
    });
    Ok(EndpointSpec {
        mode,
        ports: non_empty(ports),
    })
}

fn convert_networks(
    namespace: &str,
    svc: &Service,
    file: &ComposeFile,
) -> Result<Vec<NetworkAttachmentConfig>, String> {
    let mut list: Vec<(String, Option<&crate::model::ServiceNetworkConfig>)> = match &svc.networks {
        Some(n) if !n.0.is_empty() => n.0.iter().map(|(k, v)| (k.clone(), Some(v))).collect(),
        _ => vec![("default".to_string(), None)],
    };
    let mut out = Vec::with_capacity(list.len());
    for (name, cfg) in list.drain(..) {
        let declared = file.networks.get(&name);
        if declared.is_none() && name != "default" {
            return Err(format!("undefined network {name:?}"));
        }
        let target = declared
            .and_then(|d| d.name.clone())
            .unwrap_or_else(|| scope(namespace, &name));
        let mut aliases: Vec<String> = cfg.and_then(|c| c.aliases.clone()).unwrap_or_default();
        // Only user-defined networks take aliases.
        if !matches!(target.as_str(), "default" | "bridge" | "host" | "none")
            && !target.starts_with("container:")
        {
            aliases.push(svc.name.clone());
        }
        out.push(NetworkAttachmentConfig {
            target: Some(target),
            aliases: non_empty(aliases),
            driver_opts: cfg
                .and_then(|c| c.driver_opts.as_ref())
                .map(|o| o.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        });
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

struct FileTarget {
    object_name: String,
    target: String,
    uid: String,
    gid: String,
    mode: u32,
}

fn file_target(
    namespace: &str,
    r: &FileReference,
    declared_name: Option<&Option<String>>,
    kind: &str,
) -> Result<FileTarget, String> {
    let declared = declared_name.ok_or_else(|| format!("undefined {kind} {:?}", r.source))?;
    Ok(FileTarget {
        object_name: declared
            .clone()
            .unwrap_or_else(|| scope(namespace, &r.source)),
        target: r
            .target
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| r.source.clone()),
        uid: r.uid.clone().unwrap_or_else(|| "0".to_string()),
        gid: r.gid.clone().unwrap_or_else(|| "0".to_string()),
        mode: r.mode.unwrap_or(0o444),
    })
}

fn convert_secrets(
    namespace: &str,
    svc: &Service,
    file: &ComposeFile,
) -> Result<Vec<TaskSpecContainerSpecSecrets>, String> {
    let mut out = Vec::new();
    for r in svc.secrets.iter().flatten() {
        let t = file_target(
            namespace,
            r,
            file.secrets.get(&r.source).map(|s| &s.name),
            "secret",
        )?;
        out.push(TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(t.target),
                uid: Some(t.uid),
                gid: Some(t.gid),
                mode: Some(t.mode),
            }),
            secret_id: None,
            secret_name: Some(t.object_name),
        });
    }
    out.sort_by(|a, b| a.secret_name.cmp(&b.secret_name));
    Ok(out)
}

fn convert_configs(
    namespace: &str,
    svc: &Service,
    file: &ComposeFile,
) -> Result<Vec<TaskSpecContainerSpecConfigs>, String> {
    let mut out = Vec::new();
    for r in svc.configs.iter().flatten() {
        let t = file_target(
            namespace,
            r,
            file.configs.get(&r.source).map(|s| &s.name),
            "config",
        )?;
        out.push(TaskSpecContainerSpecConfigs {
            file: Some(TaskSpecContainerSpecFile1 {
                name: Some(t.target),
                uid: Some(t.uid),
                gid: Some(t.gid),
                mode: Some(t.mode),
            }),
            runtime: None,
            config_id: None,
            config_name: Some(t.object_name),
        });
    }
    out.sort_by(|a, b| a.config_name.cmp(&b.config_name));
    Ok(out)
}

fn convert_resources(deploy: &Deploy) -> Result<TaskSpecResources, String> {
    let mut out = TaskSpecResources::default();
    let Some(res) = &deploy.resources else {
        return Ok(out);
    };
    if let Some(l) = &res.limits {
        let cpus = match &l.cpus {
            Some(c) if !c.0.is_empty() => parse_cpus(&c.0)?,
            _ => 0,
        };
        out.limits = Some(Limit {
            nano_cpus: non_zero(cpus),
            memory_bytes: l.memory.map(|m| m.0).and_then(non_zero),
            pids: l.pids.and_then(non_zero),
        });
    }
    if let Some(r) = &res.reservations {
        let cpus = match &r.cpus {
            Some(c) if !c.0.is_empty() => parse_cpus(&c.0)?,
            _ => 0,
        };
        let generic: Vec<GenericResourcesInner> = r
            .generic_resources
            .iter()
            .flatten()
            .map(|g| GenericResourcesInner {
                named_resource_spec: None,
                discrete_resource_spec: g.discrete_resource_spec.as_ref().map(|d| {
                    GenericResourcesInnerDiscreteResourceSpec {
                        kind: Some(d.kind.clone()),
                        value: Some(d.value),
                    }
                }),
            })
            .collect();
        out.reservations = Some(ResourceObject {
            nano_cpus: non_zero(cpus),
            memory_bytes: r.memory.map(|m| m.0).and_then(non_zero),
            generic_resources: non_empty(generic),
        });
    }
    Ok(out)
}

fn restart_condition(c: &str) -> Result<TaskSpecRestartPolicyConditionEnum, String> {
    match c {
        "none" => Ok(TaskSpecRestartPolicyConditionEnum::NONE),
        "on-failure" => Ok(TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
        "any" => Ok(TaskSpecRestartPolicyConditionEnum::ANY),
        other => Err(format!(
            "invalid restart policy condition {other:?}: must be \"none\", \"on-failure\" or \"any\""
        )),
    }
}

fn convert_restart_policy(
    legacy: Option<&str>,
    policy: Option<&RestartPolicy>,
) -> Result<Option<TaskSpecRestartPolicy>, String> {
    if let Some(p) = policy {
        return Ok(Some(TaskSpecRestartPolicy {
            condition: p.condition.as_deref().map(restart_condition).transpose()?,
            delay: p.delay.map(|d| d.0),
            max_attempts: p
                .max_attempts
                .map(|m| to_i64(m, "max_attempts"))
                .transpose()?,
            window: p.window.map(|d| d.0),
        }));
    }
    let Some(legacy) = legacy.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let (name, count) = match legacy.split_once(':') {
        Some((n, c)) => {
            let c: i64 = c.parse().map_err(|_| {
                "invalid restart policy format: maximum retry count must be an integer".to_string()
            })?;
            if c < 0 {
                return Err(
                    "invalid restart policy: maximum retry count cannot be negative".to_string(),
                );
            }
            (n, c)
        }
        None => (legacy, 0),
    };
    let condition = match name {
        "no" => return Ok(None),
        "always" | "unless-stopped" => TaskSpecRestartPolicyConditionEnum::ANY,
        "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
        other => {
            return Err(format!(
                "invalid restart policy: unknown policy '{other}' (must be one of 'no', 'always', 'on-failure', or 'unless-stopped')"
            ))
        }
    };
    Ok(Some(TaskSpecRestartPolicy {
        condition: Some(condition),
        max_attempts: non_zero(count),
        ..Default::default()
    }))
}

fn convert_healthcheck(h: &Healthcheck) -> Result<HealthConfig, String> {
    let test = h.test.as_ref().map(|t| t.0.clone()).unwrap_or_default();
    if h.disable == Some(true) {
        if !test.is_empty() {
            return Err("test and disable can't be set at the same time".to_string());
        }
        return Ok(HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        });
    }
    Ok(HealthConfig {
        test: non_empty(test),
        interval: h.interval.map(|d| d.0).and_then(non_zero),
        timeout: h.timeout.map(|d| d.0).and_then(non_zero),
        retries: h
            .retries
            .map(|r| to_i64(r, "retries"))
            .transpose()?
            .and_then(non_zero),
        start_period: h.start_period.map(|d| d.0).and_then(non_zero),
        start_interval: h.start_interval.map(|d| d.0).and_then(non_zero),
    })
}

fn convert_update_config(u: &UpdateConfig) -> Result<ServiceSpecUpdateConfig, String> {
    Ok(ServiceSpecUpdateConfig {
        parallelism: Some(to_i64(u.parallelism.unwrap_or(1), "parallelism")?),
        delay: u.delay.map(|d| d.0).and_then(non_zero),
        failure_action: match u.failure_action.as_deref() {
            None | Some("") => None,
            Some("pause") => Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            Some("continue") => Some(ServiceSpecUpdateConfigFailureActionEnum::CONTINUE),
            Some("rollback") => Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            Some(other) => {
                return Err(format!(
                    "invalid update_config failure_action {other:?}: must be \"pause\", \"continue\" or \"rollback\""
                ))
            }
        },
        monitor: u.monitor.map(|d| d.0).and_then(non_zero),
        max_failure_ratio: Some(u.max_failure_ratio.unwrap_or(0.0)),
        order: match u.order.as_deref() {
            None | Some("") => None,
            Some("stop-first") => Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
            Some("start-first") => Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            Some(other) => {
                return Err(format!(
                    "invalid update_config order {other:?}: must be \"stop-first\" or \"start-first\""
                ))
            }
        },
    })
}

fn convert_rollback_config(u: &UpdateConfig) -> Result<ServiceSpecRollbackConfig, String> {
    Ok(ServiceSpecRollbackConfig {
        parallelism: Some(to_i64(u.parallelism.unwrap_or(1), "parallelism")?),
        delay: u.delay.map(|d| d.0).and_then(non_zero),
        failure_action: match u.failure_action.as_deref() {
            None | Some("") => None,
            Some("pause") => Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            Some("continue") => Some(ServiceSpecRollbackConfigFailureActionEnum::CONTINUE),
            Some(other) => {
                return Err(format!(
                    "invalid rollback_config failure_action {other:?}: must be \"pause\" or \"continue\""
                ))
            }
        },
        monitor: u.monitor.map(|d| d.0).and_then(non_zero),
        max_failure_ratio: Some(u.max_failure_ratio.unwrap_or(0.0)),
        order: match u.order.as_deref() {
            None | Some("") => None,
            Some("stop-first") => Some(ServiceSpecRollbackConfigOrderEnum::STOP_FIRST),
            Some("start-first") => Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
            Some(other) => {
                return Err(format!(
                    "invalid rollback_config order {other:?}: must be \"stop-first\" or \"start-first\""
                ))
            }
        },
    })
}

fn propagation(p: &str) -> Result<MountBindOptionsPropagationEnum, String> {
    Ok(match p {
        "private" => MountBindOptionsPropagationEnum::PRIVATE,
        "rprivate" => MountBindOptionsPropagationEnum::RPRIVATE,
        "shared" => MountBindOptionsPropagationEnum::SHARED,
        "rshared" => MountBindOptionsPropagationEnum::RSHARED,
        "slave" => MountBindOptionsPropagationEnum::SLAVE,
        "rslave" => MountBindOptionsPropagationEnum::RSLAVE,
        other => return Err(format!("invalid propagation mode: {other}")),
    })
}

fn convert_volume(
    v: &ServiceVolume,
    file: &ComposeFile,
    namespace: &str,
    ctx: &ConvertContext,
) -> Result<Mount, String> {
    let source = v.source.clone().filter(|s| !s.is_empty());
    let mut m = Mount {
        target: Some(v.target.clone()),
        source: source.clone(),
        read_only: v.read_only.filter(|b| *b),
        consistency: v.consistency.clone(),
        ..Default::default()
    };
    let kind = if v.kind.is_empty() {
        "volume"
    } else {
        v.kind.as_str()
    };
    let incompatible = |opt: &str| format!("{opt} options are incompatible with type {kind}");
    match kind {
        "volume" => {
            m.typ = Some(MountType::VOLUME);
            if v.tmpfs.is_some() {
                return Err(incompatible("tmpfs"));
            }
            if v.bind.is_some() {
                return Err(incompatible("bind"));
            }
            let Some(src) = source else {
                return Ok(m);
            };
            let stack_volume = file
                .volumes
                .get(&src)
                .ok_or_else(|| format!("undefined volume {src:?}"))?;
            m.source = Some(
                stack_volume
                    .name
                    .clone()
                    .unwrap_or_else(|| scope(namespace, &src)),
            );
            let mut opts = MountVolumeOptions {
                no_copy: v.volume.as_ref().and_then(|o| o.nocopy).filter(|b| *b),
                subpath: v.volume.as_ref().and_then(|o| o.subpath.clone()),
                ..Default::default()
            };
            if !stack_volume.is_external() {
                opts.labels = Some(stack_labels(namespace, stack_volume.labels.as_ref()));
                if stack_volume.driver.is_some() || stack_volume.driver_opts.is_some() {
                    opts.driver_config = Some(MountVolumeOptionsDriverConfig {
                        name: stack_volume.driver.clone(),
                        options: stack_volume
                            .driver_opts
                            .as_ref()
                            .map(|o| o.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                    });
                }
            }
            m.volume_options = Some(opts);
        }
        "bind" | "npipe" => {
            m.typ = Some(if kind == "bind" {
                MountType::BIND
            } else {
                MountType::NPIPE
            });
            let Some(src) = source else {
                return Err(format!("invalid {kind} source, source cannot be empty"));
            };
            if v.volume.is_some() {
                return Err(incompatible("volume"));
            }
            if v.tmpfs.is_some() {
                return Err(incompatible("tmpfs"));
            }
            if kind == "bind" {
                m.source = Some(ctx.resolve(&src).to_string_lossy().into_owned());
            }
            if let Some(b) = &v.bind {
                m.bind_options = Some(MountBindOptions {
                    propagation: b.propagation.as_deref().map(propagation).transpose()?,
                    ..Default::default()
                });
            }
        }
        "tmpfs" => {
            m.typ = Some(MountType::TMPFS);
            if source.is_some() {
                return Err("invalid tmpfs source, source must be empty".to_string());
            }
            if v.bind.is_some() {
                return Err(incompatible("bind"));
            }
            if v.volume.is_some() {
                return Err(incompatible("volume"));
            }
            if let Some(t) = &v.tmpfs {
                m.tmpfs_options = Some(MountTmpfsOptions {
                    size_bytes: t.size.map(|s| s.0),
                    mode: t.mode.map(i64::from),
                    options: None,
                });
            }
        }
        "cluster" => {
            m.typ = Some(MountType::CLUSTER);
            let Some(src) = source else {
                return Err("invalid cluster source, source cannot be empty".to_string());
            };
            if !src.starts_with("group:") {
                let stack_volume = file
                    .volumes
                    .get(&src)
                    .ok_or_else(|| format!("undefined volume {src:?}"))?;
                m.source = Some(
                    stack_volume
                        .name
                        .clone()
                        .unwrap_or_else(|| scope(namespace, &src)),
                );
            }
        }
        _ => return Err("volume type must be volume, bind, tmpfs, npipe, or cluster".to_string()),
    }
    Ok(m)
}

/// A service `tmpfs:` entry (`/run` or `/tmp:size=64m,mode=1777`) as a tmpfs mount.
fn convert_tmpfs(entry: &str) -> Result<Mount, String> {
    let (target, opts) = match entry.split_once(':') {
        Some((t, o)) => (t, o),
        None => (entry, ""),
    };
    if target.is_empty() {
        return Err(format!("invalid tmpfs {entry:?}: empty path"));
    }
    let mut size = None;
    let mut mode = None;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", s)) => size = Some(parse_memory(s)?),
            Some(("mode", s)) => {
                mode = Some(
                    i64::from_str_radix(s, 8).map_err(|_| format!("invalid tmpfs mode {s:?}"))?,
                )
            }
            _ => {}
        }
    }
    Ok(Mount {
        target: Some(target.to_string()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: (size.is_some() || mode.is_some()).then_some(MountTmpfsOptions {
            size_bytes: size,
            mode,
            options: None,
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_docker_rules() {
        let (a, d) = effective_caps(
            &["net_admin".into(), "CAP_SYS_TIME".into()],
            &["NET_ADMIN".into(), "chown".into()],
        );
        assert_eq!(a, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
        assert_eq!(d, ["CAP_CHOWN"]);
        let (a, d) = effective_caps(&["all".into(), "chown".into()], &["ALL".into()]);
        assert_eq!(a, ["ALL"]);
        assert!(d.is_empty());
    }

    #[test]
    fn legacy_restart_values() {
        let p = convert_restart_policy(Some("on-failure:3"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            p.condition,
            Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE)
        );
        assert_eq!(p.max_attempts, Some(3));
        let p = convert_restart_policy(Some("unless-stopped"), None)
            .unwrap()
            .unwrap();
        assert_eq!(p.condition, Some(TaskSpecRestartPolicyConditionEnum::ANY));
        assert_eq!(convert_restart_policy(Some("no"), None).unwrap(), None);
        assert!(convert_restart_policy(Some("sometimes"), None)
            .unwrap_err()
            .starts_with("invalid restart policy: unknown policy 'sometimes'"));
    }

    #[test]
    fn env_files() {
        let ctx = ConvertContext::in_memory(
            "/",
            BTreeMap::new(),
            BTreeMap::from([("SET".to_string(), "v".to_string())]),
        );
        let parsed = parse_env_file("\u{feff}# c\n  A=1\nB==2\nSET\nUNSET\n\nC=\n", &ctx).unwrap();
        assert_eq!(
            parsed,
            [
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), Some("=2".to_string())),
                ("SET".to_string(), Some("v".to_string())),
                ("C".to_string(), Some(String::new())),
            ]
        );
        assert_eq!(
            parse_env_file("A B=1\n", &ctx).unwrap_err(),
            "poorly formatted environment: variable 'A B' contains whitespaces"
        );
        assert_eq!(
            parse_env_file("=1\n", &ctx).unwrap_err(),
            "poorly formatted environment: no variable name on line '=1'"
        );
    }

    #[test]
    fn tmpfs_entries() {
        let m = convert_tmpfs("/tmp:size=64m,mode=1777").unwrap();
        assert_eq!(m.target.as_deref(), Some("/tmp"));
        let o = m.tmpfs_options.unwrap();
        assert_eq!(o.size_bytes, Some(64 << 20));
        assert_eq!(o.mode, Some(0o1777));
        assert!(convert_tmpfs("/run").unwrap().tmpfs_options.is_none());
    }
}
