//! `shoal info` and `shoal version`: the client and server sections docker
//! prints (including the Swarm part of `info`), or a `--format` template over
//! the daemon's JSON.

use clap::Args;
use serde_json::{json, Value};

use crate::client::{CliError, Client, Endpoint, CLIENT_API_VERSION};
use crate::format::{bytes_size, human_duration, out, tabwrite};
use crate::template::Template;

/// `info` flags.
#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// Format output using a custom template ('json', 'TEMPLATE')
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
}

/// `version` flags.
#[derive(Args, Debug, Clone)]
pub struct VersionArgs {
    /// Format output using a custom template ('json', 'TEMPLATE')
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
}

/// This CLI's version.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

fn go_os_arch() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    (std::env::consts::OS.to_string(), arch.to_string())
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn p(v: &Value, path: &str) -> String {
    match v.pointer(path) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(x)) => x.clone(),
        Some(other) => other.to_string(),
    }
}

fn n(v: &Value, path: &str) -> i64 {
    v.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

fn b(v: &Value, path: &str) -> bool {
    v.pointer(path).and_then(Value::as_bool).unwrap_or(false)
}

fn strs(v: &Value, path: &str) -> Vec<String> {
    v.pointer(path)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The client section of `info`.
pub fn info_client_section() -> String {
    format!("Client:\n Version:    {CLIENT_VERSION}\n Context:    default\n Debug Mode: false\n")
}

fn push_nonempty(o: &mut String, label: &str, value: &str) {
    if !value.is_empty() {
        o.push_str(&format!("{label} {value}\n"));
    }
}

/// The Swarm part of `info` (docker's `printSwarmInfo`).
pub fn swarm_section(info: &Value) -> String {
    let mut o = String::new();
    let state = s(info, "/Swarm/LocalNodeState");
    o.push_str(&format!(" Swarm: {state}\n"));
    if state == "inactive" || state == "locked" {
        return o;
    }
    o.push_str(&format!("  NodeID: {}\n", s(info, "/Swarm/NodeID")));
    let err = s(info, "/Swarm/Error");
    if !err.is_empty() {
        o.push_str(&format!("  Error: {err}\n"));
    }
    let manager = b(info, "/Swarm/ControlAvailable");
    o.push_str(&format!("  Is Manager: {manager}\n"));
    let cluster = info.pointer("/Swarm/Cluster").filter(|c| !c.is_null());
    if let Some(c) = cluster.filter(|_| manager && err.is_empty() && state != "error") {
        o.push_str(&format!("  ClusterID: {}\n", s(c, "/ID")));
        o.push_str(&format!("  Managers: {}\n", n(info, "/Swarm/Managers")));
        o.push_str(&format!("  Nodes: {}\n", n(info, "/Swarm/Nodes")));
        if c.get("DefaultAddrPool").is_some_and(|v| !v.is_null()) {
            let pools: String = strs(c, "/DefaultAddrPool")
                .iter()
                .map(|p| format!("{p}  "))
                .collect();
            o.push_str(&format!("  Default Address Pool: {pools}\n"));
            o.push_str(&format!("  SubnetSize: {}\n", n(c, "/SubnetSize")));
        }
        let dpp = n(c, "/DataPathPort");
        if dpp > 0 {
            o.push_str(&format!("  Data Path Port: {dpp}\n"));
        }
        o.push_str("  Orchestration:\n");
        o.push_str(&format!(
            "   Task History Retention Limit: {}\n",
            n(c, "/Spec/Orchestration/TaskHistoryRetentionLimit")
        ));
        o.push_str("  Raft:\n");
        o.push_str(&format!(
            "   Snapshot Interval: {}\n",
            n(c, "/Spec/Raft/SnapshotInterval")
        ));
        if c.pointer("/Spec/Raft/KeepOldSnapshots")
            .is_some_and(|v| !v.is_null())
        {
            o.push_str(&format!(
                "   Number of Old Snapshots to Retain: {}\n",
                n(c, "/Spec/Raft/KeepOldSnapshots")
            ));
        }
        o.push_str(&format!(
            "   Heartbeat Tick: {}\n",
            n(c, "/Spec/Raft/HeartbeatTick")
        ));
        o.push_str(&format!(
            "   Election Tick: {}\n",
            n(c, "/Spec/Raft/ElectionTick")
        ));
        o.push_str("  Dispatcher:\n");
        o.push_str(&format!(
            "   Heartbeat Period: {}\n",
            human_duration(n(c, "/Spec/Dispatcher/HeartbeatPeriod"))
        ));
        o.push_str("  CA Configuration:\n");
        o.push_str(&format!(
            "   Expiry Duration: {}\n",
            human_duration(n(c, "/Spec/CAConfig/NodeCertExpiry"))
        ));
        o.push_str(&format!(
            "   Force Rotate: {}\n",
            n(c, "/Spec/CAConfig/ForceRotate")
        ));
        let signing = s(c, "/Spec/CAConfig/SigningCACert").trim();
        if !signing.is_empty() {
            o.push_str(&format!("   Signing CA Certificate: \n{signing}\n\n"));
        }
        if let Some(cas) = c
            .pointer("/Spec/CAConfig/ExternalCAs")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            o.push_str("   External CAs:\n");
            for ca in cas {
                o.push_str(&format!("     {}: {}\n", s(ca, "/Protocol"), s(ca, "/URL")));
            }
        }
        o.push_str(&format!(
            "  Autolock Managers: {}\n",
            b(c, "/Spec/EncryptionConfig/AutoLockManagers")
        ));
        o.push_str(&format!(
            "  Root Rotation In Progress: {}\n",
            b(c, "/RootRotationInProgress")
        ));
    }
    o.push_str(&format!("  Node Address: {}\n", s(info, "/Swarm/NodeAddr")));
    let mut managers: Vec<String> = info
        .pointer("/Swarm/RemoteManagers")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|m| s(m, "/Addr").to_string()).collect())
        .unwrap_or_default();
    if !managers.is_empty() {
        managers.sort();
        o.push_str("  Manager Addresses:\n");
        for m in managers {
            o.push_str(&format!("   {m}\n"));
        }
    }
    o
}

/// The server section of `info` (docker's `prettyPrintServerInfo`), without the
/// "Server:" title. Warnings are returned separately (they go to stderr).
pub fn info_server_section(info: &Value) -> (String, Vec<String>) {
    let mut o = String::new();
    o.push_str(&format!(" Containers: {}\n", n(info, "/Containers")));
    o.push_str(&format!("  Running: {}\n", n(info, "/ContainersRunning")));
    o.push_str(&format!("  Paused: {}\n", n(info, "/ContainersPaused")));
    o.push_str(&format!("  Stopped: {}\n", n(info, "/ContainersStopped")));
    o.push_str(&format!(" Images: {}\n", n(info, "/Images")));
    push_nonempty(&mut o, " Server Version:", s(info, "/ServerVersion"));
    push_nonempty(&mut o, " Storage Driver:", s(info, "/Driver"));
    for pair in info
        .pointer("/DriverStatus")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        o.push_str(&format!("  {}: {}\n", s(&pair, "/0"), s(&pair, "/1")));
    }
    for pair in info
        .pointer("/SystemStatus")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        o.push_str(&format!(" {}: {}\n", s(&pair, "/0"), s(&pair, "/1")));
    }
    push_nonempty(&mut o, " Logging Driver:", s(info, "/LoggingDriver"));
    push_nonempty(&mut o, " Cgroup Driver:", s(info, "/CgroupDriver"));
    push_nonempty(&mut o, " Cgroup Version:", s(info, "/CgroupVersion"));
    o.push_str(" Plugins:\n");
    o.push_str(&format!(
        "  Volume: {}\n",
        strs(info, "/Plugins/Volume").join(" ")
    ));
    o.push_str(&format!(
        "  Network: {}\n",
        strs(info, "/Plugins/Network").join(" ")
    ));
    let authz = strs(info, "/Plugins/Authorization");
    if !authz.is_empty() {
        o.push_str(&format!("  Authorization: {}\n", authz.join(" ")));
    }
    o.push_str(&format!(
        "  Log: {}\n",
        strs(info, "/Plugins/Log").join(" ")
    ));
    let cdi = strs(info, "/CDISpecDirs");
    if !cdi.is_empty() {
        o.push_str(" CDI spec directories:\n");
        for d in cdi {
            o.push_str(&format!("  {d}\n"));
        }
    }
    if let Some(devs) = info
        .pointer("/DiscoveredDevices")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        o.push_str(" Discovered Devices:\n");
        for d in devs {
            o.push_str(&format!("  {}: {}\n", s(d, "/Source"), s(d, "/ID")));
        }
    }
    o.push_str(&swarm_section(info));
    if let Some(rt) = info
        .pointer("/Runtimes")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
    {
        let mut names: Vec<&String> = rt.keys().collect();
        names.sort();
        o.push_str(&format!(
            " Runtimes: {}\n",
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        o.push_str(&format!(
            " Default Runtime: {}\n",
            s(info, "/DefaultRuntime")
        ));
    }
    let os_type = s(info, "/OSType");
    if os_type == "linux" {
        o.push_str(&format!(" Init Binary: {}\n", s(info, "/InitBinary")));
        o.push_str(&format!(
            " containerd version: {}\n",
            s(info, "/ContainerdCommit/ID")
        ));
        o.push_str(&format!(" runc version: {}\n", s(info, "/RuncCommit/ID")));
        o.push_str(&format!(" init version: {}\n", s(info, "/InitCommit/ID")));
        let secopts = strs(info, "/SecurityOptions");
        if !secopts.is_empty() {
            o.push_str(" Security Options:\n");
            for so in secopts {
                let mut name = so.clone();
                let mut profile = None;
                if so.starts_with("name=") {
                    for kv in so.split(',') {
                        match kv.split_once('=') {
                            Some(("name", v)) => name = v.to_string(),
                            Some(("profile", v)) => profile = Some(v.to_string()),
                            _ => {}
                        }
                    }
                }
                o.push_str(&format!("  {name}\n"));
                if let Some(pr) = profile {
                    o.push_str(&format!("   Profile: {pr}\n"));
                }
            }
        }
    }
    if os_type == "windows" {
        o.push_str(&format!(" Default Isolation: {}\n", s(info, "/Isolation")));
    }
    push_nonempty(&mut o, " Kernel Version:", s(info, "/KernelVersion"));
    push_nonempty(&mut o, " Operating System:", s(info, "/OperatingSystem"));
    push_nonempty(&mut o, " OSType:", os_type);
    push_nonempty(&mut o, " Architecture:", s(info, "/Architecture"));
    o.push_str(&format!(" CPUs: {}\n", n(info, "/NCPU")));
    o.push_str(&format!(
        " Total Memory: {}\n",
        bytes_size(n(info, "/MemTotal") as f64)
    ));
    push_nonempty(&mut o, " Name:", s(info, "/Name"));
    push_nonempty(&mut o, " ID:", s(info, "/ID"));
    o.push_str(&format!(
        " Docker Root Dir: {}\n",
        s(info, "/DockerRootDir")
    ));
    let debug = b(info, "/Debug");
    o.push_str(&format!(" Debug Mode: {debug}\n"));
    if debug {
        o.push_str(&format!("  File Descriptors: {}\n", n(info, "/NFd")));
        o.push_str(&format!("  Goroutines: {}\n", n(info, "/NGoroutines")));
        o.push_str(&format!("  System Time: {}\n", p(info, "/SystemTime")));
        o.push_str(&format!(
            "  EventsListeners: {}\n",
            n(info, "/NEventsListener")
        ));
    }
    push_nonempty(&mut o, " HTTP Proxy:", s(info, "/HttpProxy"));
    push_nonempty(&mut o, " HTTPS Proxy:", s(info, "/HttpsProxy"));
    push_nonempty(&mut o, " No Proxy:", s(info, "/NoProxy"));
    let labels = strs(info, "/Labels");
    if !labels.is_empty() {
        o.push_str(" Labels:\n");
        for l in labels {
            o.push_str(&format!("  {l}\n"));
        }
    }
    o.push_str(&format!(
        " Experimental: {}\n",
        b(info, "/ExperimentalBuild")
    ));
    let insecure_cidrs = strs(info, "/RegistryConfig/InsecureRegistryCIDRs");
    let index_configs = info
        .pointer("/RegistryConfig/IndexConfigs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !insecure_cidrs.is_empty() || !index_configs.is_empty() {
        o.push_str(" Insecure Registries:\n");
        let mut names: Vec<&String> = index_configs.keys().collect();
        names.sort();
        for name in names {
            if !b(&index_configs[name.as_str()], "/Secure") {
                o.push_str(&format!(
                    "  {}\n",
                    s(&index_configs[name.as_str()], "/Name")
                ));
            }
        }
        for c in insecure_cidrs {
            o.push_str(&format!("  {c}\n"));
        }
    }
    let mirrors = strs(info, "/RegistryConfig/Mirrors");
    if !mirrors.is_empty() {
        o.push_str(" Registry Mirrors:\n");
        for m in mirrors {
            o.push_str(&format!("  {m}\n"));
        }
    }
    o.push_str(&format!(
        " Live Restore Enabled: {}\n",
        b(info, "/LiveRestoreEnabled")
    ));
    push_nonempty(&mut o, " Product License:", s(info, "/ProductLicense"));
    if let Some(pools) = info
        .pointer("/DefaultAddressPools")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        o.push_str(" Default Address Pools:\n");
        for pool in pools {
            o.push_str(&format!(
                "   Base: {}, Size: {}\n",
                s(pool, "/Base"),
                n(pool, "/Size")
            ));
        }
    }
    o.push('\n');
    (o, strs(info, "/Warnings"))
}

/// Runs `info`.
pub async fn info(host: &Endpoint, a: InfoArgs) -> Result<(), CliError> {
    let format = a.format.unwrap_or_default();
    if format.is_empty() {
        let client = match Client::connect(host).await {
            Ok(c) => c,
            Err(e) => {
                out(&format!("{}\nServer:\n", info_client_section()));
                return Err(e);
            }
        };
        out(&format!("{}\nServer:\n", info_client_section()));
        let raw = client.get_raw("/info", &[]).await?;
        let v: Value = serde_json::from_str(&raw)
            .map_err(|e| CliError::msg(format!("error reading info: {e}")))?;
        let (text, warnings) = info_server_section(&v);
        out(&text);
        for w in warnings {
            crate::format::err(&format!("{w}\n"));
        }
        return Ok(());
    }
    let client = Client::connect(host).await?;
    let raw = client.get_raw("/info", &[]).await?;
    let mut v: Value = serde_json::from_str(&raw)
        .map_err(|e| CliError::msg(format!("error reading info: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "ClientInfo".to_string(),
            json!({"Version": CLIENT_VERSION, "Context": "default", "Debug": false, "Plugins": []}),
        );
    }
    let tmpl = if format == "json" {
        "{{json .}}"
    } else {
        format.as_str()
    };
    let t = Template::parse(tmpl).map_err(|e| CliError::Status {
        code: 64,
        message: format!("template parsing error: {e}"),
    })?;
    let text = t
        .execute_lenient(&v)
        .map_err(|e| CliError::msg(format!("template parsing error: {e}")))?;
    out(&format!("{text}\n"));
    Ok(())
}

fn client_version_value(api: &str) -> Value {
    let (os, arch) = go_os_arch();
    json!({
        "Version": CLIENT_VERSION,
        "ApiVersion": api,
        "DefaultAPIVersion": format!("{}.{}", CLIENT_API_VERSION.0, CLIENT_API_VERSION.1),
        "Os": os,
        "Arch": arch,
        "Context": "default",
    })
}

/// The default `version` output (before tab alignment).
pub fn version_text(client: &Value, server: Option<&Value>) -> String {
    let mut o = String::from("Client:\n");
    o.push_str(&format!(" Version:\t{}\n", s(client, "/Version")));
    let api = s(client, "/ApiVersion");
    let default = s(client, "/DefaultAPIVersion");
    if api != default {
        o.push_str(&format!(
            " API version:\t{api} (downgraded from {default})\n"
        ));
    } else {
        o.push_str(&format!(" API version:\t{api}\n"));
    }
    o.push_str(&format!(
        " OS/Arch:\t{}/{}\n",
        s(client, "/Os"),
        s(client, "/Arch")
    ));
    o.push_str(&format!(" Context:\t{}", s(client, "/Context")));
    let Some(sv) = server else {
        return o;
    };
    let platform = s(sv, "/Platform/Name");
    if platform.is_empty() {
        o.push_str("\n\nServer:");
    } else {
        o.push_str(&format!("\n\nServer: {platform}"));
    }
    let mut components: Vec<Value> = sv
        .pointer("/Components")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !components.iter().any(|c| s(c, "/Name") == "Engine") {
        components.push(json!({
            "Name": "Engine",
            "Version": s(sv, "/Version"),
            "Details": {
                "ApiVersion": s(sv, "/ApiVersion"),
                "MinAPIVersion": s(sv, "/MinAPIVersion"),
                "GitCommit": s(sv, "/GitCommit"),
                "GoVersion": s(sv, "/GoVersion"),
                "Os": s(sv, "/Os"),
                "Arch": s(sv, "/Arch"),
                "BuildTime": s(sv, "/BuildTime"),
                "Experimental": b(sv, "/Experimental").to_string(),
            }
        }));
    }
    for c in &components {
        let name = s(c, "/Name");
        o.push_str(&format!("\n {name}:"));
        if name == "Engine" {
            let d = |k: &str| p(c, &format!("/Details/{k}"));
            o.push_str(&format!("\n  Version:\t{}", s(c, "/Version")));
            o.push_str(&format!(
                "\n  API version:\t{} (minimum version {})",
                d("ApiVersion"),
                d("MinAPIVersion")
            ));
            o.push_str(&format!("\n  Go version:\t{}", d("GoVersion")));
            o.push_str(&format!("\n  Git commit:\t{}", d("GitCommit")));
            o.push_str(&format!("\n  Built:\t{}", d("BuildTime")));
            o.push_str(&format!("\n  OS/Arch:\t{}/{}", d("Os"), d("Arch")));
            o.push_str(&format!("\n  Experimental:\t{}", d("Experimental")));
        } else {
            o.push_str(&format!("\n  Version:\t{}", s(c, "/Version")));
            if let Some(details) = c.pointer("/Details").and_then(Value::as_object) {
                let mut keys: Vec<&String> = details.keys().collect();
                keys.sort();
                for k in keys {
                    o.push_str(&format!("\n  {k}:\t{}", p(c, &format!("/Details/{k}"))));
                }
            }
        }
    }
    o
}

/// Runs `version`.
pub async fn version(host: &Endpoint, a: VersionArgs) -> Result<(), CliError> {
    let format = a.format.unwrap_or_default();
    let default_api = format!("{}.{}", CLIENT_API_VERSION.0, CLIENT_API_VERSION.1);
    let (client, conn_err) = match Client::connect(host).await {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e)),
    };
    let api = client
        .as_ref()
        .map(Client::api_version)
        .unwrap_or(default_api);
    let client_v = client_version_value(&api);
    let mut server: Option<Value> = None;
    let mut err = conn_err;
    if let Some(c) = &client {
        match c.get_raw("/version", &[]).await {
            Ok(raw) => server = serde_json::from_str(&raw).ok(),
            Err(e) => err = Some(e),
        }
    }
    if format.is_empty() {
        let text = version_text(&client_v, server.as_ref());
        out(&tabwrite(&format!("{text}\n"), 20, 1));
    } else {
        let tmpl = if format == "json" {
            "{{json .}}"
        } else {
            format.as_str()
        };
        let t = Template::parse(tmpl).map_err(|e| CliError::Status {
            code: 64,
            message: format!("template parsing error: {e}"),
        })?;
        let data = json!({"Client": client_v, "Server": server.clone().unwrap_or(Value::Null)});
        let text = t
            .execute_lenient(&data)
            .map_err(|e| CliError::msg(format!("template parsing error: {e}")))?;
        out(&format!("{text}\n"));
    }
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm_info() -> Value {
        json!({
            "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
            "Images": 0, "ServerVersion": "17.06.1-ce", "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "overlay"], "Log": ["json-file"]},
            "Swarm": {
                "NodeID": "qo2dfdig9mmxqkawulggepdih", "NodeAddr": "165.227.107.89",
                "LocalNodeState": "active", "ControlAvailable": true, "Error": "",
                "RemoteManagers": [{"NodeID": "qo2", "Addr": "165.227.107.89:2377"}],
                "Nodes": 1, "Managers": 1,
                "Cluster": {
                    "ID": "9vs5ygs0gguyyec4iqf2314c0",
                    "Spec": {
                        "Orchestration": {"TaskHistoryRetentionLimit": 5},
                        "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "HeartbeatTick": 1, "ElectionTick": 3},
                        "Dispatcher": {"HeartbeatPeriod": 5000000000i64},
                        "CAConfig": {"NodeCertExpiry": 7776000000000000i64},
                        "EncryptionConfig": {"AutoLockManagers": true}
                    },
                    "RootRotationInProgress": false
                }
            },
            "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
            "OSType": "linux", "InitBinary": "docker-init",
            "ContainerdCommit": {"ID": "6e23458c129b551d5c9871e5174f6b1b7f6d1170"},
            "RuncCommit": {"ID": "810190ceaa507aa2727d7ae6f4790c76ec150bd2"},
            "InitCommit": {"ID": "949e6fa"},
            "SecurityOptions": ["name=apparmor", "name=seccomp,profile=default"],
            "KernelVersion": "4.4.0-87-generic", "OperatingSystem": "Ubuntu 16.04.3 LTS",
            "Architecture": "x86_64", "NCPU": 2, "MemTotal": 2097356800i64,
            "Name": "system-sample", "ID": "EKHL", "DockerRootDir": "/var/lib/docker",
            "Debug": false, "Labels": ["provider=digitalocean"], "ExperimentalBuild": false,
            "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}},
            "LiveRestoreEnabled": false,
            "DefaultAddressPools": [{"Base": "10.123.0.0/16", "Size": 24}],
            "Warnings": ["WARNING: No swap limit support"]
        })
    }

    #[test]
    fn info_matches_docker_golden_swarm_part() {
        // cli/command/system/testdata/docker-info-with-swarm.golden
        let (text, warnings) = info_server_section(&swarm_info());
        let want_swarm = " Swarm: active
  NodeID: qo2dfdig9mmxqkawulggepdih
  Is Manager: true
  ClusterID: 9vs5ygs0gguyyec4iqf2314c0
  Managers: 1
  Nodes: 1
  Orchestration:
   Task History Retention Limit: 5
  Raft:
   Snapshot Interval: 10000
   Number of Old Snapshots to Retain: 0
   Heartbeat Tick: 1
   Election Tick: 3
  Dispatcher:
   Heartbeat Period: 5 seconds
  CA Configuration:
   Expiry Duration: 3 months
   Force Rotate: 0
  Autolock Managers: true
  Root Rotation In Progress: false
  Node Address: 165.227.107.89
  Manager Addresses:
   165.227.107.89:2377
 Runtimes: runc
 Default Runtime: runc
 Init Binary: docker-init
";
        assert!(text.contains(want_swarm), "{text}");
        assert!(text.starts_with(" Containers: 0\n  Running: 0\n  Paused: 0\n  Stopped: 0\n Images: 0\n Server Version: 17.06.1-ce\n Storage Driver: overlay2\n  Backing Filesystem: extfs\n"));
        assert!(text.contains(" Security Options:\n  apparmor\n  seccomp\n   Profile: default\n"));
        assert!(text.contains(" Total Memory: 1.953GiB\n"));
        assert!(text.contains(" Insecure Registries:\n  127.0.0.0/8\n Live Restore Enabled: false\n Default Address Pools:\n   Base: 10.123.0.0/16, Size: 24\n\n"));
        assert_eq!(warnings, vec!["WARNING: No swap limit support"]);
    }

    #[test]
    fn inactive_swarm_section() {
        let v = json!({"Swarm": {"LocalNodeState": "inactive", "NodeID": ""}});
        assert_eq!(swarm_section(&v), " Swarm: inactive\n");
        let v = json!({"Swarm": {"LocalNodeState": "active", "NodeID": "w1", "NodeAddr": "10.0.0.2",
                                 "ControlAvailable": false}});
        assert_eq!(
            swarm_section(&v),
            " Swarm: active\n  NodeID: w1\n  Is Manager: false\n  Node Address: 10.0.0.2\n"
        );
    }

    #[test]
    fn version_layout() {
        let client = json!({"Version": "0.1.0", "ApiVersion": "1.44", "DefaultAPIVersion": "1.51",
                            "Os": "linux", "Arch": "amd64", "Context": "default"});
        let server = json!({"Version": "0.1.0", "ApiVersion": "1.51", "MinAPIVersion": "1.24",
                            "GoVersion": "n/a", "GitCommit": "abc", "Os": "linux", "Arch": "amd64",
                            "BuildTime": "", "Experimental": false,
                            "Platform": {"Name": "Shoal"}});
        let text = tabwrite(
            &format!("{}\n", version_text(&client, Some(&server))),
            20,
            1,
        );
        assert_eq!(
            text,
            "Client:
 Version:           0.1.0
 API version:       1.44 (downgraded from 1.51)
 OS/Arch:           linux/amd64
 Context:           default

Server: Shoal
 Engine:
  Version:          0.1.0
  API version:      1.51 (minimum version 1.24)
  Go version:       n/a
  Git commit:       abc
  Built:            
  OS/Arch:          linux/amd64
  Experimental:     false
"
        );
    }

    #[test]
    fn client_section() {
        assert_eq!(
            info_client_section(),
            format!("Client:\n Version:    {CLIENT_VERSION}\n Context:    default\n Debug Mode: false\n")
        );
    }
}
