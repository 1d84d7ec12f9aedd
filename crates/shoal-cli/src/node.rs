//! `shoal node ...`: ls, inspect (raw, template or `--pretty`), update,
//! promote, demote, rm and ps, printed as docker's node commands print them.

use std::str::FromStr;

use bollard::models::{Node, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, TlsInfo};
use bollard::query_parameters::{
    DeleteNodeOptions, ListNodesOptions, ListTasksOptions, UpdateNodeOptions,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{CliError, Client, Endpoint};
use crate::format::{
    bytes_size, capitalize_first, enum_str, go_time_pretty, header, inspect_raw_array, natural_cmp,
    out, render, timestamp, Format,
};
use crate::opts;
use crate::template::Template;

/// docker's default `node ls` table.
pub const NODE_TABLE_FORMAT: &str = "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}";

/// `node` subcommands.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Demote one or more nodes from manager in the swarm
    Demote {
        /// Nodes to demote
        #[arg(value_name = "NODE", required = true)]
        nodes: Vec<String>,
    },
    /// Display detailed information on one or more nodes
    Inspect(InspectArgs),
    /// List nodes in the swarm
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Promote one or more nodes to manager in the swarm
    Promote {
        /// Nodes to promote
        #[arg(value_name = "NODE", required = true)]
        nodes: Vec<String>,
    },
    /// List tasks running on one or more nodes, defaults to current node
    Ps(PsArgs),
    /// Remove one or more nodes from the swarm
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Update a node
    Update(UpdateArgs),
}

/// `node ls` flags.
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

/// `node inspect` flags.
#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// Format output using a custom template ('json', 'TEMPLATE')
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    /// Nodes to inspect (`self` is the current node)
    #[arg(value_name = "self|NODE", required = true)]
    pub nodes: Vec<String>,
}

/// `node ps` flags.
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
    /// Nodes (default: self)
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,
}

/// `node rm` flags.
#[derive(Args, Debug, Clone)]
pub struct RmArgs {
    /// Force remove a node from the swarm
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Nodes to remove
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

/// `node update` flags.
#[derive(Args, Debug, Clone)]
pub struct UpdateArgs {
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_name = "string", value_parser = ["active", "pause", "drain"])]
    pub availability: Option<String>,
    /// Add or update a node label ("key=value")
    #[arg(long = "label-add", value_name = "list")]
    pub label_add: Vec<String>,
    /// Remove a node label if exists
    #[arg(long = "label-rm", value_name = "list")]
    pub label_rm: Vec<String>,
    /// Role of the node ("worker", "manager")
    #[arg(long, value_name = "string", value_parser = ["worker", "manager"])]
    pub role: Option<String>,
    /// Node to update
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// Runs a `node` subcommand.
pub async fn run(host: &Endpoint, cmd: NodeCommand) -> Result<(), CliError> {
    let client = Client::connect(host).await?;
    match cmd {
        NodeCommand::Ls(a) => list(&client, a).await,
        NodeCommand::Inspect(a) => inspect(&client, a).await,
        NodeCommand::Update(a) => {
            let node_arg = a.node.clone();
            update_nodes(
                &client,
                std::slice::from_ref(&node_arg),
                |node| merge_update(node, &a).map(|()| true),
                |id| out(&format!("{id}\n")),
            )
            .await
        }
        NodeCommand::Promote { nodes } => {
            update_nodes(
                &client,
                &nodes,
                |node| {
                    if node.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER) {
                        out(&format!(
                            "Node {} is already a manager.\n",
                            node.id.as_deref().unwrap_or("")
                        ));
                        return Ok(false);
                    }
                    node.spec.get_or_insert_with(Default::default).role =
                        Some(NodeSpecRoleEnum::MANAGER);
                    Ok(true)
                },
                |id| out(&format!("Node {id} promoted to a manager in the swarm.\n")),
            )
            .await
        }
        NodeCommand::Demote { nodes } => {
            update_nodes(
                &client,
                &nodes,
                |node| {
                    if node.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::WORKER) {
                        out(&format!(
                            "Node {} is already a worker.\n",
                            node.id.as_deref().unwrap_or("")
                        ));
                        return Ok(false);
                    }
                    node.spec.get_or_insert_with(Default::default).role =
                        Some(NodeSpecRoleEnum::WORKER);
                    Ok(true)
                },
                |id| out(&format!("Manager {id} demoted in the swarm.\n")),
            )
            .await
        }
        NodeCommand::Rm(a) => {
            let mut errs = Vec::new();
            for id in &a.nodes {
                let res = async {
                    let resolved = reference(&client, id).await?;
                    client
                        .docker
                        .delete_node(&resolved, Some(DeleteNodeOptions { force: a.force }))
                        .await
                        .map_err(CliError::from)
                }
                .await;
                match res {
                    Ok(()) => out(&format!("{id}\n")),
                    Err(e) => errs.push(e),
                }
            }
            CliError::join(errs)
        }
        NodeCommand::Ps(a) => ps(&client, a).await,
    }
}

/// Resolves `self` to the current node's ID (docker's `node.Reference`).
pub async fn reference(client: &Client, r: &str) -> Result<String, CliError> {
    if r != "self" {
        return Ok(r.to_string());
    }
    let info = client.info().await?;
    let id = info
        .pointer("/Swarm/NodeID")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if id.is_empty() {
        client.docker.list_nodes(None).await?;
        return Err(CliError::msg("node ID not found in /info"));
    }
    Ok(id)
}

/// The name docker shows for a node: its spec name, else its hostname, else the ID.
pub async fn display_name(client: &Client, id: &str) -> String {
    if id.is_empty() {
        return String::new();
    }
    match client.docker.inspect_node(id).await {
        Ok(n) => {
            if let Some(name) = n.spec.and_then(|s| s.name).filter(|s| !s.is_empty()) {
                return name;
            }
            n.description
                .and_then(|d| d.hostname)
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| id.to_string())
        }
        Err(_) => id.to_string(),
    }
}

fn tls_is_empty(t: &TlsInfo) -> bool {
    t.trust_root.as_deref().unwrap_or("").is_empty()
        && t.cert_issuer_subject.as_deref().unwrap_or("").is_empty()
        && t.cert_issuer_public_key.as_deref().unwrap_or("").is_empty()
}

/// The row of `node ls` for one node (docker's `nodeContext` fields).
pub fn node_row(n: &Node, self_id: &str, cluster_tls: Option<&TlsInfo>) -> Value {
    let id = n.id.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let manager_status = match &n.manager_status {
        Some(ms) if ms.leader == Some(true) => "Leader".to_string(),
        Some(ms) => capitalize_first(&enum_str(&ms.reachability)),
        None => String::new(),
    };
    let node_tls = desc.tls_info.clone().unwrap_or_default();
    let tls_status = match cluster_tls {
        Some(c) if !tls_is_empty(c) && !tls_is_empty(&node_tls) => {
            if *c == node_tls {
                "Ready"
            } else {
                "Needs Rotation"
            }
        }
        _ => "Unknown",
    };
    json!({
        "ID": id,
        "Self": !self_id.is_empty() && id == self_id,
        "Hostname": desc.hostname.clone().unwrap_or_default(),
        "Status": capitalize_first(&enum_str(&n.status.as_ref().and_then(|s| s.state))),
        "Availability": capitalize_first(&enum_str(&n.spec.as_ref().and_then(|s| s.availability))),
        "ManagerStatus": manager_status,
        "EngineVersion": desc.engine.and_then(|e| e.engine_version).unwrap_or_default(),
        "TLSStatus": tls_status,
    })
}

/// Column titles of `node ls`.
pub fn node_header() -> serde_json::Map<String, Value> {
    header(&[
        ("ID", "ID"),
        ("Self", ""),
        ("Hostname", "HOSTNAME"),
        ("Status", "STATUS"),
        ("Availability", "AVAILABILITY"),
        ("ManagerStatus", "MANAGER STATUS"),
        ("EngineVersion", "ENGINE VERSION"),
        ("TLSStatus", "TLS STATUS"),
    ])
}

/// The `--format` in effect for `node ls`.
pub fn list_format(format: Option<&str>, quiet: bool) -> String {
    match format.filter(|f| !f.is_empty()).unwrap_or("table") {
        "table" if quiet => "{{.ID}}".to_string(),
        "table" => NODE_TABLE_FORMAT.to_string(),
        "raw" if quiet => "node_id: {{.ID}}".to_string(),
        "raw" => "node_id: {{.ID}}\\nhostname: {{.Hostname}}\\nstatus: {{.Status}}\\navailability: {{.Availability}}\\nmanager_status: {{.ManagerStatus}}\\n".to_string(),
        other => other.to_string(),
    }
}

async fn list(client: &Client, a: ListArgs) -> Result<(), CliError> {
    let filters = opts::filter_map(&a.filter);
    let mut nodes = client
        .docker
        .list_nodes(Some(ListNodesOptions {
            filters: if filters.is_empty() {
                None
            } else {
                Some(filters)
            },
        }))
        .await?;
    let (mut self_id, mut cluster_tls) = (String::new(), None);
    if !nodes.is_empty() && !a.quiet {
        let info = client.info().await?;
        self_id = info
            .pointer("/Swarm/NodeID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        cluster_tls = info
            .pointer("/Swarm/Cluster/TLSInfo")
            .and_then(|t| serde_json::from_value::<TlsInfo>(t.clone()).ok());
    }
    nodes.sort_by(|x, y| {
        let h = |n: &Node| {
            n.description
                .as_ref()
                .and_then(|d| d.hostname.clone())
                .unwrap_or_default()
        };
        natural_cmp(&h(x), &h(y))
    });
    let rows: Vec<Value> = nodes
        .iter()
        .map(|n| node_row(n, &self_id, cluster_tls.as_ref()))
        .collect();
    let fmt = Format::new(&list_format(a.format.as_deref(), a.quiet));
    out(&render(&fmt, &node_header(), &rows).map_err(CliError::Message)?);
    Ok(())
}

fn labels_block(title: &str, labels: &std::collections::HashMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    let mut s = format!("\n{title}");
    for k in keys {
        let v = &labels[k];
        if v.is_empty() {
            s.push_str(&format!("\n - {k}"));
        } else {
            s.push_str(&format!("\n - {k}={v}"));
        }
    }
    s
}

/// `node inspect --pretty` for one node (docker's `nodeInspectPrettyTemplate`).
pub fn pretty(n: &Node) -> String {
    let spec = n.spec.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let mut s = format!("ID:\t\t\t{}", n.id.as_deref().unwrap_or(""));
    if let Some(name) = spec.name.as_deref().filter(|x| !x.is_empty()) {
        s.push_str(&format!("\nName:\t\t\t{name}"));
    }
    s.push_str(&labels_block(
        "Labels:",
        &spec.labels.clone().unwrap_or_default(),
    ));
    s.push_str(&format!(
        "\nHostname:              \t{}",
        desc.hostname.as_deref().unwrap_or("")
    ));
    s.push_str(&format!(
        "\nJoined at:             \t{}",
        go_time_pretty(timestamp(&n.created_at))
    ));
    s.push_str(&format!(
        "\nStatus:\n State:\t\t\t{}",
        capitalize_first(&enum_str(&status.state))
    ));
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(
            "\n Message:              \t{}",
            capitalize_first(m)
        ));
    }
    s.push_str(&format!(
        "\n Availability:         \t{}",
        capitalize_first(&enum_str(&spec.availability))
    ));
    if let Some(addr) = status.addr.as_deref().filter(|a| !a.is_empty()) {
        s.push_str(&format!("\n Address:\t\t{addr}"));
    }
    if let Some(ms) = &n.manager_status {
        s.push_str(&format!(
            "\nManager Status:\n Address:\t\t{}\n Raft Status:\t\t{}\n Leader:\t\t{}",
            ms.addr.as_deref().unwrap_or(""),
            capitalize_first(&enum_str(&ms.reachability)),
            if ms.leader == Some(true) { "Yes" } else { "No" }
        ));
    }
    let platform = desc.platform.clone().unwrap_or_default();
    s.push_str(&format!(
        "\nPlatform:\n Operating System:\t{}\n Architecture:\t\t{}",
        platform.os.as_deref().unwrap_or(""),
        platform.architecture.as_deref().unwrap_or("")
    ));
    let res = desc.resources.clone().unwrap_or_default();
    let mem = res.memory_bytes.unwrap_or(0);
    s.push_str(&format!(
        "\nResources:\n CPUs:\t\t\t{}\n Memory:\t\t{}",
        res.nano_cpus.unwrap_or(0) / 1_000_000_000,
        if mem == 0 {
            String::new()
        } else {
            bytes_size(mem as f64)
        }
    ));
    let engine = desc.engine.clone().unwrap_or_default();
    let plugins = engine.plugins.clone().unwrap_or_default();
    if !plugins.is_empty() {
        let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for p in plugins {
            by_type
                .entry(p.typ.unwrap_or_default())
                .or_default()
                .push(p.name.unwrap_or_default());
        }
        s.push_str("\nPlugins:");
        for (t, names) in by_type {
            let joined = names.join(", ");
            if joined.is_empty() {
                s.push_str(&format!("\n {t}:"));
            } else {
                s.push_str(&format!("\n {t}:\t\t{joined}"));
            }
        }
    }
    s.push_str(&format!(
        "\nEngine Version:\t\t{}",
        engine.engine_version.as_deref().unwrap_or("")
    ));
    s.push_str(&labels_block(
        "Engine Labels:",
        &engine.labels.clone().unwrap_or_default(),
    ));
    if let Some(tls) = desc.tls_info.as_ref().filter(|t| !tls_is_empty(t)) {
        s.push_str(&format!(
            "\nTLS Info:\n TrustRoot:\n{}\n Issuer Subject:\t{}\n Issuer Public Key:\t{}",
            tls.trust_root.as_deref().unwrap_or(""),
            tls.cert_issuer_subject.as_deref().unwrap_or(""),
            tls.cert_issuer_public_key.as_deref().unwrap_or("")
        ));
    }
    s
}

async fn inspect(client: &Client, a: InspectArgs) -> Result<(), CliError> {
    let format = if a.pretty {
        "pretty".to_string()
    } else {
        a.format.clone().unwrap_or_default()
    };
    if format.starts_with("pretty") && format != "pretty" {
        return Err(CliError::msg(
            "cannot supply extra formatting options to the pretty template",
        ));
    }
    if format == "pretty" {
        let mut text = String::new();
        for r in &a.nodes {
            let id = reference(client, r).await?;
            let node = client.docker.inspect_node(&id).await?;
            text.push_str(&pretty(&node));
            text.push('\n');
        }
        out(&text);
        return Ok(());
    }
    let mut raws = Vec::new();
    let mut errs = Vec::new();
    for r in &a.nodes {
        let res = async {
            let id = reference(client, r).await?;
            client.get_raw(&format!("/nodes/{id}"), &[]).await
        }
        .await;
        match res {
            Ok(raw) => raws.push(raw),
            Err(e) => errs.push(e),
        }
    }
    out(&render_inspect(&format, &raws)?);
    CliError::join(errs)
}

/// Renders inspect output for raw JSON objects: indented array, `json` (compact
/// array) or a template executed per object.
pub fn render_inspect(format: &str, raws: &[String]) -> Result<String, CliError> {
    match format {
        "" => Ok(inspect_raw_array(raws)),
        "json" => {
            if raws.is_empty() {
                return Ok("[]\n".to_string());
            }
            let joined = raws.iter().map(|r| r.trim()).collect::<Vec<_>>().join(",");
            Ok(format!("[{}]\n", crate::format::compact_json(&joined)))
        }
        tmpl => {
            let t = Template::parse(tmpl).map_err(|e| CliError::Status {
                code: 64,
                message: format!("template parsing error: {e}"),
            })?;
            let mut s = String::new();
            for raw in raws {
                let v: Value = serde_json::from_str(raw)
                    .map_err(|e| CliError::msg(format!("unable to read inspect data: {e}")))?;
                let line = t
                    .execute_lenient(&v)
                    .map_err(|e| CliError::msg(format!("template parsing error: {e}")))?;
                s.push_str(&line);
                s.push('\n');
            }
            if s.is_empty() {
                s.push('\n');
            }
            Ok(s)
        }
    }
}

/// Applies `node update` flags to a node (docker's `mergeNodeUpdate`).
pub fn merge_update(node: &mut Node, a: &UpdateArgs) -> Result<(), CliError> {
    let spec = node.spec.get_or_insert_with(Default::default);
    if let Some(role) = &a.role {
        spec.role = Some(NodeSpecRoleEnum::from_str(role).map_err(CliError::Message)?);
    }
    if let Some(av) = &a.availability {
        spec.availability =
            Some(NodeSpecAvailabilityEnum::from_str(av).map_err(CliError::Message)?);
    }
    let labels = spec.labels.get_or_insert_with(Default::default);
    for (k, v) in opts::kv_map(&a.label_add) {
        labels.insert(k, v);
    }
    for k in &a.label_rm {
        if labels.remove(k).is_none() {
            return Err(CliError::msg(format!(
                "key {k} doesn't exist in node's labels"
            )));
        }
    }
    Ok(())
}

async fn update_nodes<M, S>(
    client: &Client,
    nodes: &[String],
    mut merge: M,
    success: S,
) -> Result<(), CliError>
where
    M: FnMut(&mut Node) -> Result<bool, CliError>,
    S: Fn(&str),
{
    for r in nodes {
        let id = reference(client, r).await?;
        let mut node = client.docker.inspect_node(&id).await?;
        if !merge(&mut node)? {
            continue;
        }
        let id = node.id.clone().unwrap_or(id);
        let version = node.version.as_ref().and_then(|v| v.index).unwrap_or(0) as i64;
        client
            .docker
            .update_node(
                &id,
                node.spec.clone().unwrap_or_default(),
                UpdateNodeOptions { version },
            )
            .await?;
        success(r);
    }
    Ok(())
}

async fn ps(client: &Client, a: PsArgs) -> Result<(), CliError> {
    let refs = if a.nodes.is_empty() {
        vec!["self".to_string()]
    } else {
        a.nodes.clone()
    };
    let mut errs: Vec<String> = Vec::new();
    let mut tasks = Vec::new();
    for r in &refs {
        let res = async {
            let id = reference(client, r).await?;
            let node = client.docker.inspect_node(&id).await?;
            let mut filter = a.filter.clone();
            filter.push(("node".to_string(), node.id.unwrap_or(id)));
            let t = client
                .docker
                .list_tasks(Some(ListTasksOptions {
                    filters: Some(opts::filter_map(&filter)),
                }))
                .await?;
            Ok::<_, CliError>(t)
        }
        .await;
        match res {
            Ok(t) => tasks.extend(t),
            Err(e) => errs.push(e.to_string()),
        }
    }
    if errs.is_empty() || !tasks.is_empty() {
        let format = crate::service::task_format(a.format.as_deref(), a.quiet);
        if let Err(e) =
            crate::service::print_tasks(client, tasks, a.no_resolve, !a.no_trunc, &format).await
        {
            errs.push(e.to_string());
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(CliError::msg(errs.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_json() -> Value {
        json!({
            "ID": "nodeID",
            "Version": {"Index": 10},
            "CreatedAt": "2009-11-10T23:00:00Z",
            "Spec": {"Name": "defaultNodeName", "Labels": {"lbl1": "value1"}, "Role": "manager", "Availability": "active"},
            "Description": {
                "Hostname": "defaultNodeHostname",
                "Platform": {"Architecture": "x86_64", "OS": "linux"},
                "Resources": {"NanoCPUs": 0, "MemoryBytes": 20971520},
                "Engine": {"EngineVersion": "1.13.0", "Labels": {"engine": "label"},
                           "Plugins": [{"Type": "Network", "Name": "bridge"}, {"Type": "Network", "Name": "overlay"}, {"Type": "Volume", "Name": "local"}]}
            },
            "Status": {"State": "ready", "Addr": "127.0.0.1"}
        })
    }

    #[test]
    fn pretty_matches_docker_golden() {
        // cli/command/node/testdata/node-inspect-pretty.simple.golden
        let node: Node = serde_json::from_value(node_json()).unwrap();
        let want = "ID:\t\t\tnodeID
Name:\t\t\tdefaultNodeName
Labels:
 - lbl1=value1
Hostname:              \tdefaultNodeHostname
Joined at:             \t2009-11-10 23:00:00 +0000 utc
Status:
 State:\t\t\tReady
 Availability:         \tActive
 Address:\t\t127.0.0.1
Platform:
 Operating System:\tlinux
 Architecture:\t\tx86_64
Resources:
 CPUs:\t\t\t0
 Memory:\t\t20MiB
Plugins:
 Network:\t\tbridge, overlay
 Volume:\t\tlocal
Engine Version:\t\t1.13.0
Engine Labels:
 - engine=label";
        assert_eq!(pretty(&node), want);
    }

    #[test]
    fn pretty_manager_section() {
        let mut j = node_json();
        j["ManagerStatus"] =
            json!({"Leader": true, "Reachability": "reachable", "Addr": "127.0.0.1"});
        j["Spec"]["Labels"] = json!({});
        let node: Node = serde_json::from_value(j).unwrap();
        let p = pretty(&node);
        assert!(p.contains(
            "\nManager Status:\n Address:\t\t127.0.0.1\n Raft Status:\t\tReachable\n Leader:\t\tYes\nPlatform:"
        ));
        assert!(!p.contains("Labels:\n - lbl1"));
    }

    #[test]
    fn rows_and_table() {
        let mut j = node_json();
        j["ManagerStatus"] =
            json!({"Leader": false, "Reachability": "reachable", "Addr": "127.0.0.1"});
        let node: Node = serde_json::from_value(j).unwrap();
        let row = node_row(&node, "nodeID", None);
        assert_eq!(row["Self"], true);
        assert_eq!(row["Status"], "Ready");
        assert_eq!(row["Availability"], "Active");
        assert_eq!(row["ManagerStatus"], "Reachable");
        assert_eq!(row["TLSStatus"], "Unknown");
        let table = render(
            &Format::new(&list_format(None, false)),
            &node_header(),
            std::slice::from_ref(&row),
        )
        .unwrap();
        assert_eq!(
            table,
            "ID         HOSTNAME              STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\nnodeID *   defaultNodeHostname   Ready     Active         Reachable        1.13.0\n"
        );
        let quiet = render(
            &Format::new(&list_format(None, true)),
            &node_header(),
            &[row],
        )
        .unwrap();
        assert_eq!(quiet, "nodeID\n");
    }

    #[test]
    fn update_merges_labels_and_roles() {
        let mut node: Node = serde_json::from_value(node_json()).unwrap();
        let a = UpdateArgs {
            availability: Some("drain".into()),
            label_add: vec!["zone=a".into(), "ssd".into()],
            label_rm: vec!["lbl1".into()],
            role: Some("worker".into()),
            node: "nodeID".into(),
        };
        merge_update(&mut node, &a).unwrap();
        let spec = node.spec.clone().unwrap();
        assert_eq!(spec.role, Some(NodeSpecRoleEnum::WORKER));
        assert_eq!(spec.availability, Some(NodeSpecAvailabilityEnum::DRAIN));
        let labels = spec.labels.unwrap();
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(labels.get("ssd").map(String::as_str), Some(""));
        assert!(!labels.contains_key("lbl1"));

        let a = UpdateArgs {
            availability: None,
            label_add: vec![],
            label_rm: vec!["missing".into()],
            role: None,
            node: "nodeID".into(),
        };
        assert_eq!(
            merge_update(&mut node, &a).unwrap_err().to_string(),
            "key missing doesn't exist in node's labels"
        );
    }

    #[test]
    fn inspect_rendering() {
        let raws = vec!["{\"ID\":\"a\",\"Spec\":{\"Name\":\"x\"}}".to_string()];
        assert_eq!(
            render_inspect("{{.ID}} {{.Spec.Name}}", &raws).unwrap(),
            "a x\n"
        );
        assert_eq!(
            render_inspect("json", &raws).unwrap(),
            "[{\"ID\":\"a\",\"Spec\":{\"Name\":\"x\"}}]\n"
        );
        assert!(render_inspect("", &raws)
            .unwrap()
            .starts_with("[\n    {\n        \"ID\": \"a\","));
        assert_eq!(render_inspect("{{.ID}}", &[]).unwrap(), "\n");
    }
}
