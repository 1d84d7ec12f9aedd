//! `shoal secret ...`: create, ls, inspect and rm, as docker's secret commands; the code they
//! share with `shoal config ...` ([`crate::config`]) is here, parameterised by [`Kind`].

use std::io::Read;

use base64::Engine as _;
use chrono::Utc;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{CliError, Client, Endpoint};
use crate::format::{go_time_pretty, header, human_since, natural_cmp, out, render, Format};
use crate::network::filters_query;
use crate::node::render_inspect;
use crate::opts;

/// Secrets or configs: the two differ in paths, columns and whether data is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Secret => "/secrets",
            Kind::Config => "/configs",
        }
    }

    /// docker's default `ls` table.
    pub fn table_format(self) -> &'static str {
        match self {
            Kind::Secret => "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
            Kind::Config => "table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
        }
    }
}

/// `secret` subcommands.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret from a file or STDIN as content
    Create(SecretCreateArgs),
    /// Display detailed information on one or more secrets
    Inspect(InspectArgs),
    /// List secrets
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more secrets
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// `secret create` flags.
#[derive(Args, Debug, Clone)]
pub struct SecretCreateArgs {
    /// Secret driver
    #[arg(short = 'd', long, value_name = "string")]
    pub driver: Option<String>,
    /// Secret labels
    #[arg(short = 'l', long, value_name = "list", value_parser = opts::validate_label)]
    pub label: Vec<String>,
    /// Template driver
    #[arg(long = "template-driver", value_name = "string")]
    pub template_driver: Option<String>,
    /// Secret name
    #[arg(value_name = "SECRET")]
    pub name: String,
    /// File with the secret's content, or - for standard input
    #[arg(value_name = "file|-")]
    pub file: Option<String>,
}

/// `secret ls` / `config ls` flags.
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

/// `secret inspect` / `config inspect` flags.
#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// Format output using a custom template ('json', 'TEMPLATE')
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    /// Objects to inspect
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// `secret rm` / `config rm` arguments.
#[derive(Args, Debug, Clone)]
pub struct RmArgs {
    /// Objects to remove
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// Runs a `secret` subcommand.
pub async fn run(host: &Endpoint, cmd: SecretCommand) -> Result<(), CliError> {
    let client = Client::connect(host).await?;
    match cmd {
        SecretCommand::Create(a) => {
            let data = match a.file.as_deref() {
                Some(f) => read_content(f)?,
                None if a.driver.is_some() => Vec::new(),
                None => {
                    return Err(CliError::Status {
                        code: crate::USAGE_EXIT_CODE,
                        message: "\"shoal secret create\" requires at least 2 arguments.\nSee 'shoal secret create --help'.".into(),
                    })
                }
            };
            let mut body = spec_body(&a.name, &a.label, &data, a.template_driver.as_deref());
            if let Some(d) = a.driver.as_deref().filter(|d| !d.is_empty()) {
                body["Driver"] = json!({ "Name": d });
            }
            create(&client, Kind::Secret, &body).await
        }
        SecretCommand::Ls(a) => list(&client, Kind::Secret, a).await,
        SecretCommand::Inspect(a) => inspect(&client, Kind::Secret, a).await,
        SecretCommand::Rm(a) => remove(&client, Kind::Secret, a).await,
    }
}

/// The content of `file`, or of standard input for `-`.
pub fn read_content(file: &str) -> Result<Vec<u8>, CliError> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::msg(format!("error reading content from STDIN: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(file).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            _ => e.to_string(),
        };
        CliError::msg(format!(
            "error reading content from \"{file}\": open {file}: {why}"
        ))
    })
}

/// The body of a create request: Name, Labels, Data (base64) and the template driver.
pub fn spec_body(name: &str, labels: &[String], data: &[u8], template: Option<&str>) -> Value {
    let mut body = json!({
        "Name": name,
        "Labels": opts::kv_map(labels),
        "Data": base64::engine::general_purpose::STANDARD.encode(data),
    });
    if let Some(t) = template.filter(|t| !t.is_empty()) {
        body["Templating"] = json!({ "Name": t });
    }
    body
}

/// Creates the object and prints its ID.
pub async fn create(client: &Client, kind: Kind, body: &Value) -> Result<(), CliError> {
    let raw = client
        .post_json(&format!("{}/create", kind.path()), &[], body)
        .await?;
    let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    out(&format!("{}\n", v["ID"].as_str().unwrap_or("")));
    Ok(())
}

/// The `ls` row of one secret or config (docker's `secretContext` / `configContext`).
pub fn row(kind: Kind, o: &Value, now: chrono::DateTime<Utc>) -> Value {
    let ts = |k: &str| {
        o[k].as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let spec = &o["Spec"];
    let labels = spec["Labels"]
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
    let mut r = json!({
        "ID": o["ID"].as_str().unwrap_or(""),
        "Name": spec["Name"].as_str().unwrap_or(""),
        "CreatedAt": format!("{} ago", human_since(ts("CreatedAt"), now)),
        "UpdatedAt": format!("{} ago", human_since(ts("UpdatedAt"), now)),
        "Labels": labels,
    });
    if kind == Kind::Secret {
        r["Driver"] = Value::String(spec["Driver"]["Name"].as_str().unwrap_or("").to_string());
    }
    r
}

fn list_header() -> serde_json::Map<String, Value> {
    header(&[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("CreatedAt", "CREATED"),
        ("UpdatedAt", "UPDATED"),
        ("Labels", "LABELS"),
    ])
}

/// `secret ls` / `config ls`, sorted by name.
pub async fn list(client: &Client, kind: Kind, a: ListArgs) -> Result<(), CliError> {
    let raw = client
        .get_raw(kind.path(), &filters_query(&a.filter))
        .await?;
    let mut objs: Vec<Value> = serde_json::from_str(&raw)
        .map_err(|e| CliError::msg(format!("error reading list: {e}")))?;
    let name = |v: &Value| v["Spec"]["Name"].as_str().unwrap_or("").to_string();
    objs.sort_by(|x, y| natural_cmp(&name(x), &name(y)));
    let now = Utc::now();
    let rows: Vec<Value> = objs.iter().map(|o| row(kind, o, now)).collect();
    let source = match a
        .format
        .as_deref()
        .filter(|f| !f.is_empty())
        .unwrap_or("table")
    {
        "table" if a.quiet => "{{.ID}}".to_string(),
        "table" => kind.table_format().to_string(),
        other => other.to_string(),
    };
    out(&render(&Format::new(&source), &list_header(), &rows).map_err(CliError::Message)?);
    Ok(())
}

/// `inspect --pretty` of one object (docker's pretty templates).
pub fn pretty(kind: Kind, o: &Value) -> String {
    let spec = &o["Spec"];
    let time = |k: &str| {
        go_time_pretty(
            o[k].as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc)),
        )
    };
    // docker's two templates differ in their alignment.
    let (id, name, created, updated) = match kind {
        Kind::Secret => (
            "ID:              ",
            "Name:              ",
            "Created at:        ",
            "Updated at:        ",
        ),
        Kind::Config => (
            "ID:\t\t\t",
            "Name:\t\t\t",
            "Created at:            \t",
            "Updated at:            \t",
        ),
    };
    let mut s = format!(
        "{id}{}\n{name}{}",
        o["ID"].as_str().unwrap_or(""),
        spec["Name"].as_str().unwrap_or("")
    );
    if let Some(labels) = spec["Labels"].as_object().filter(|m| !m.is_empty()) {
        s.push_str("\nLabels:");
        let mut keys: Vec<&String> = labels.keys().collect();
        keys.sort();
        for k in keys {
            match labels[k].as_str().unwrap_or("") {
                "" => s.push_str(&format!("\n - {k}")),
                v => s.push_str(&format!("\n - {k}={v}")),
            }
        }
    }
    if kind == Kind::Secret {
        s.push_str(&format!(
            "\nDriver:            {}",
            spec["Driver"]["Name"].as_str().unwrap_or("")
        ));
    }
    s.push_str(&format!(
        "\n{created}{}\n{updated}{}",
        time("CreatedAt"),
        time("UpdatedAt")
    ));
    if kind == Kind::Config {
        let data = spec["Data"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .unwrap_or_default();
        s.push_str(&format!("\nData:\n{}", String::from_utf8_lossy(&data)));
    }
    s
}

/// `secret inspect` / `config inspect`.
pub async fn inspect(client: &Client, kind: Kind, a: InspectArgs) -> Result<(), CliError> {
    let mut raws = Vec::new();
    let mut errs = Vec::new();
    for n in &a.names {
        match client
            .get_raw(&format!("{}/{}", kind.path(), urlencoding::encode(n)), &[])
            .await
        {
            Ok(raw) => raws.push(raw),
            Err(e) => errs.push(e),
        }
    }
    let format = a.format.clone().unwrap_or_default();
    if a.pretty || format == "pretty" {
        let mut text = String::new();
        for raw in &raws {
            let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
            text.push_str(&pretty(kind, &v));
            text.push('\n');
        }
        out(&text);
    } else {
        out(&render_inspect(&format, &raws)?);
    }
    CliError::join(errs)
}

/// `secret rm` / `config rm`: prints each name removed.
pub async fn remove(client: &Client, kind: Kind, a: RmArgs) -> Result<(), CliError> {
    let mut errs = Vec::new();
    for n in &a.names {
        let res = client
            .request(
                Method::DELETE,
                &format!("{}/{}", kind.path(), urlencoding::encode(n)),
                &[],
                None,
            )
            .await;
        match res {
            Ok(_) => out(&format!("{n}\n")),
            Err(e) => errs.push(e),
        }
    }
    CliError::join(errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_base64_data_and_labels() {
        let b = spec_body("db", &["env=prod".into()], b"s3cret", Some("golang"));
        assert_eq!(b["Name"], "db");
        assert_eq!(b["Labels"]["env"], "prod");
        assert_eq!(b["Data"], "czNjcmV0");
        assert_eq!(b["Templating"]["Name"], "golang");
        assert!(spec_body("x", &[], b"1", None).get("Templating").is_none());
    }

    #[test]
    fn rows_show_ages_and_pretty_shows_config_data() {
        let now = Utc::now();
        let created = (now - chrono::Duration::seconds(5)).to_rfc3339();
        let o = json!({"ID": "abc", "CreatedAt": created, "UpdatedAt": created,
            "Spec": {"Name": "db", "Labels": {"a": ""}, "Data": "aGVsbG8="}});
        let r = row(Kind::Secret, &o, now);
        assert_eq!(r["CreatedAt"], "5 seconds ago");
        assert_eq!(r["Name"], "db");
        assert_eq!(r["Driver"], "");
        assert!(row(Kind::Config, &o, now).get("Driver").is_none());
        let p = pretty(Kind::Config, &o);
        assert!(p.contains("\nLabels:\n - a\n"), "{p}");
        assert!(p.ends_with("Data:\nhello"), "{p}");
        assert!(!pretty(Kind::Secret, &o).contains("hello"));
    }

    #[test]
    fn missing_files_are_reported_like_docker() {
        let e = read_content("/nonexistent/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "error reading content from \"/nonexistent/x\": open /nonexistent/x: no such file or directory"
        );
    }
}
