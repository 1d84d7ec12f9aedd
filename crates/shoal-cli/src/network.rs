//! `shoal network ...`: create, ls, inspect and rm of swarm-scoped networks, with docker's
//! flags and output (`network ls`: NETWORK ID, NAME, DRIVER, SCOPE, sorted by name).

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{CliError, Client, Endpoint};
use crate::format::{header, natural_cmp, out, render, truncate_id, Format};
use crate::node::render_inspect;
use crate::opts;

/// docker's default `network ls` table.
pub const NETWORK_TABLE_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";

/// `network` subcommands.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// `network create` flags (docker's).
#[derive(Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short = 'd', long, value_name = "string", default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long, value_name = "strings")]
    pub subnet: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long, value_name = "strings")]
    pub gateway: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range", value_name = "strings")]
    pub ip_range: Vec<String>,
    /// IP Address Management Driver
    #[arg(long = "ipam-driver", value_name = "string", default_value = "default")]
    pub ipam_driver: String,
    /// Set IPAM driver specific options
    #[arg(long = "ipam-opt", value_name = "map")]
    pub ipam_opt: Vec<String>,
    /// Enable manual container attachment
    #[arg(long)]
    pub attachable: bool,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Create swarm routing-mesh network
    #[arg(long)]
    pub ingress: bool,
    /// Set metadata on a network
    #[arg(long, value_name = "list", value_parser = opts::validate_label)]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt", value_name = "map")]
    pub opt: Vec<String>,
    /// Control the network's scope
    #[arg(long, value_name = "string")]
    pub scope: Option<String>,
    /// Network name
    #[arg(value_name = "NETWORK")]
    pub name: String,
}

/// `network ls` flags.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long = "filter", value_name = "filter", value_parser = opts::filter)]
    pub filter: Vec<(String, String)>,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only display network IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `network inspect` flags.
#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// Format output using a custom template ('json', 'TEMPLATE')
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    /// Verbose output for diagnostics
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Networks to inspect
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
}

/// `network rm` flags.
#[derive(Args, Debug, Clone)]
pub struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Networks to remove
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
}

/// Runs a `network` subcommand.
pub async fn run(host: &Endpoint, cmd: NetworkCommand) -> Result<(), CliError> {
    let client = Client::connect(host).await?;
    match cmd {
        NetworkCommand::Create(a) => create(&client, a).await,
        NetworkCommand::Ls(a) => list(&client, a).await,
        NetworkCommand::Inspect(a) => inspect(&client, a).await,
        NetworkCommand::Rm(a) => remove(&client, a).await,
    }
}

/// The `filters` query value (docker's map form) for `--filter` pairs.
pub fn filters_query(items: &[(String, String)]) -> Vec<(&'static str, String)> {
    if items.is_empty() {
        return Vec::new();
    }
    let m: serde_json::Map<String, Value> = opts::filter_map(items)
        .into_iter()
        .map(|(k, vs)| {
            let set: serde_json::Map<String, Value> =
                vs.into_iter().map(|v| (v, Value::Bool(true))).collect();
            (k, Value::Object(set))
        })
        .collect();
    vec![("filters", Value::Object(m).to_string())]
}

/// The IPAM section of a create request from `--subnet`, `--ip-range`, `--gateway` (docker's
/// `createIPAMConfig`: each range and gateway belongs to the one subnet containing it).
pub fn ipam_configs(a: &CreateArgs) -> Result<Vec<Value>, CliError> {
    if a.subnet.is_empty() && (!a.gateway.is_empty() || !a.ip_range.is_empty()) {
        return Err(CliError::msg(
            "every ip-range or gateway must have a corresponding subnet",
        ));
    }
    let mut configs: Vec<Value> = a.subnet.iter().map(|s| json!({ "Subnet": s })).collect();
    let place = |ip: &str, key: &str, configs: &mut Vec<Value>| -> Result<(), CliError> {
        let addr = ip.split('/').next().unwrap_or(ip);
        for c in configs.iter_mut() {
            let subnet = c["Subnet"].as_str().unwrap_or("");
            if subnet_contains(subnet, addr) {
                if c.get(key).is_some() {
                    return Err(CliError::msg(format!(
                        "cannot configure multiple {} for subnet {subnet}",
                        if key == "Gateway" {
                            "gateways"
                        } else {
                            "ranges"
                        }
                    )));
                }
                c[key] = Value::String(ip.to_string());
                return Ok(());
            }
        }
        Err(CliError::msg(format!(
            "no matching subnet for {} {ip}",
            if key == "Gateway" { "gateway" } else { "range" }
        )))
    };
    for r in &a.ip_range {
        place(r, "IPRange", &mut configs)?;
    }
    for g in &a.gateway {
        place(g, "Gateway", &mut configs)?;
    }
    Ok(configs)
}

/// Whether IPv4 `addr` lies in `subnet` (`a.b.c.d/n`).
fn subnet_contains(subnet: &str, addr: &str) -> bool {
    let Some((net, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len), Ok(ip)) = (
        net.parse::<std::net::Ipv4Addr>(),
        len.parse::<u32>(),
        addr.parse::<std::net::Ipv4Addr>(),
    ) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(net) & mask == u32::from(ip) & mask
}

/// The body of `POST /networks/create` for these flags.
pub fn create_body(a: &CreateArgs) -> Result<Value, CliError> {
    let configs = ipam_configs(a)?;
    let mut body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "Options": opts::kv_map(&a.opt),
        "IPAM": {
            "Driver": a.ipam_driver,
            "Config": configs,
            "Options": opts::kv_map(&a.ipam_opt),
        },
        "Internal": a.internal,
        "Attachable": a.attachable,
        "Ingress": a.ingress,
        "ConfigOnly": false,
        "Labels": opts::kv_map(&a.label),
    });
    if let Some(scope) = &a.scope {
        body["Scope"] = Value::String(scope.clone());
    }
    Ok(body)
}

async fn create(client: &Client, a: CreateArgs) -> Result<(), CliError> {
    let body = create_body(&a)?;
    let raw = client.post_json("/networks/create", &[], &body).await?;
    let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    out(&format!("{}\n", v["Id"].as_str().unwrap_or("")));
    Ok(())
}

/// The row of `network ls` for one network (docker's `networkContext` fields).
pub fn network_row(n: &Value, no_trunc: bool) -> Value {
    let id = n["Id"].as_str().unwrap_or("");
    let labels = n["Labels"]
        .as_object()
        .map(|m| {
            let mut v: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            v.sort();
            v.join(",")
        })
        .unwrap_or_default();
    json!({
        "ID": if no_trunc { id.to_string() } else { truncate_id(id) },
        "Name": n["Name"].as_str().unwrap_or(""),
        "Driver": n["Driver"].as_str().unwrap_or(""),
        "Scope": n["Scope"].as_str().unwrap_or(""),
        "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
        "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
        "Labels": labels,
        "CreatedAt": go_time_string(n["Created"].as_str().unwrap_or("")),
        "IPv4": n["EnableIPv4"].as_bool().unwrap_or(true).to_string(),
    })
}

/// An RFC 3339 time as Go's `time.Time.String()` prints it in UTC
/// ("2024-01-02 03:04:05.12 +0000 UTC"); unparsable text is kept.
pub fn go_time_string(rfc3339: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return rfc3339.to_string();
    };
    let t = t.with_timezone(&chrono::Utc);
    let nanos = t.timestamp_subsec_nanos();
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{}", format!("{nanos:09}").trim_end_matches('0'))
    };
    format!("{}{frac} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S"))
}

/// Column titles of `network ls`.
pub fn network_header() -> serde_json::Map<String, Value> {
    header(&[
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("IPv6", "IPV6"),
        ("Internal", "INTERNAL"),
        ("Labels", "LABELS"),
        ("CreatedAt", "CREATED AT"),
        ("IPv4", "IPV4"),
    ])
}

async fn list(client: &Client, a: ListArgs) -> Result<(), CliError> {
    let raw = client
        .get_raw("/networks", &filters_query(&a.filter))
        .await?;
    let mut nets: Vec<Value> = serde_json::from_str(&raw)
        .map_err(|e| CliError::msg(format!("error reading networks: {e}")))?;
    nets.sort_by(|x, y| {
        natural_cmp(
            x["Name"].as_str().unwrap_or(""),
            y["Name"].as_str().unwrap_or(""),
        )
    });
    let rows: Vec<Value> = nets.iter().map(|n| network_row(n, a.no_trunc)).collect();
    let source = match a
        .format
        .as_deref()
        .filter(|f| !f.is_empty())
        .unwrap_or("table")
    {
        "table" if a.quiet => "{{.ID}}".to_string(),
        "table" => NETWORK_TABLE_FORMAT.to_string(),
        other => other.to_string(),
    };
    out(&render(&Format::new(&source), &network_header(), &rows).map_err(CliError::Message)?);
    Ok(())
}

async fn inspect(client: &Client, a: InspectArgs) -> Result<(), CliError> {
    let mut raws = Vec::new();
    let mut errs = Vec::new();
    let mut query: Vec<(&str, String)> = Vec::new();
    if a.verbose {
        query.push(("verbose", "true".into()));
    }
    for n in &a.networks {
        match client
            .get_raw(&format!("/networks/{}", urlencoding::encode(n)), &query)
            .await
        {
            Ok(raw) => raws.push(raw),
            Err(e) => errs.push(e),
        }
    }
    out(&render_inspect(a.format.as_deref().unwrap_or(""), &raws)?);
    CliError::join(errs)
}

/// `network rm`: each failure is printed as it happens; any failure ends with docker's
/// `exit status 1`.
async fn remove(client: &Client, a: RmArgs) -> Result<(), CliError> {
    let mut failed = false;
    for n in &a.networks {
        let res = client
            .request(
                Method::DELETE,
                &format!("/networks/{}", urlencoding::encode(n)),
                &[],
                None,
            )
            .await;
        match res {
            Ok(_) => out(&format!("{n}\n")),
            Err(e) if a.force && e.is_not_found() => {}
            Err(e) => {
                crate::format::err(&format!("{e}\n"));
                failed = true;
            }
        }
    }
    if failed {
        return Err(CliError::msg("exit status 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: CreateArgs,
    }

    fn args(v: &[&str]) -> CreateArgs {
        let mut argv = vec!["t"];
        argv.extend_from_slice(v);
        T::try_parse_from(argv).map(|t| t.a).expect("valid flags")
    }

    #[test]
    fn create_body_matches_the_docker_cli() {
        let a = args(&[
            "-d",
            "overlay",
            "--subnet",
            "10.9.0.0/16",
            "--gateway",
            "10.9.0.254",
            "--attachable",
            "--label",
            "a=b",
            "net1",
        ]);
        let b = create_body(&a).unwrap();
        assert_eq!(b["Name"], "net1");
        assert_eq!(b["Driver"], "overlay");
        assert_eq!(b["Attachable"], true);
        assert_eq!(b["Internal"], false);
        assert_eq!(b["Labels"]["a"], "b");
        assert_eq!(b["IPAM"]["Driver"], "default");
        assert_eq!(
            b["IPAM"]["Config"],
            json!([{ "Subnet": "10.9.0.0/16", "Gateway": "10.9.0.254" }])
        );
        // docker's default driver is bridge.
        assert_eq!(create_body(&args(&["n"])).unwrap()["Driver"], "bridge");
    }

    #[test]
    fn gateways_need_a_matching_subnet() {
        let e = create_body(&args(&["--gateway", "10.0.0.1", "n"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "every ip-range or gateway must have a corresponding subnet"
        );
        let e = create_body(&args(&[
            "--subnet",
            "10.1.0.0/24",
            "--gateway",
            "10.2.0.1",
            "n",
        ]))
        .unwrap_err();
        assert_eq!(e.to_string(), "no matching subnet for gateway 10.2.0.1");
    }

    #[test]
    fn rows_truncate_ids_and_filters_use_the_map_form() {
        let n = json!({"Id": "abcdefghijklmnopqrstuvwxy", "Name": "web", "Driver": "overlay", "Scope": "swarm", "Labels": {"b": "2", "a": "1"}});
        let r = network_row(&n, false);
        assert_eq!(r["ID"], "abcdefghijkl");
        assert_eq!(r["Labels"], "a=1,b=2");
        assert_eq!(network_row(&n, true)["ID"], "abcdefghijklmnopqrstuvwxy");
        let q = filters_query(&[("name".into(), "web".into())]);
        assert_eq!(q[0].1, r#"{"name":{"web":true}}"#);
        assert!(filters_query(&[]).is_empty());
        assert_eq!(
            go_time_string("2026-11-26T12:18:27.051107662Z"),
            "2026-11-26 12:18:27.051107662 +0000 UTC"
        );
        assert_eq!(
            go_time_string("2026-11-26T12:18:27Z"),
            "2026-11-26 12:18:27 +0000 UTC"
        );
    }
}
