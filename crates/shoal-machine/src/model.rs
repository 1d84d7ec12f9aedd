//! The pure part of machines: name rules, address allocation on a subnet, the JSON record kept
//! per machine, interface and namespace names, `ls` rows with their filters and formats, and what
//! `env` prints for each shell. Nothing here touches the host.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::template::{align_tabs, Template};
use crate::MachineError;

/// Default subnet of the host bridge.
pub const DEFAULT_SUBNET: &str = "10.97.0.0/24";
/// Default host bridge.
pub const DEFAULT_BRIDGE: &str = "shoal-br0";
/// Port of a machine's API over TCP with TLS, as docker-machine's engines use.
pub const DOCKER_TLS_PORT: u16 = 2376;

/// docker-machine's rule: a letter or digit, then letters, digits, `-` and `.`.
pub fn validate_name(name: &str) -> Result<(), MachineError> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        _ => false,
    };
    // The namespace name `shoal-NAME` must stay a usable file name.
    if ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(MachineError::InvalidName)
    }
}

/// A bridge name is also the name of the host's link to the machines, so it must be a valid
/// interface name: 1 to 15 bytes of letters, digits, `-`, `_` and `.`.
pub fn validate_bridge(name: &str) -> Result<(), MachineError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(MachineError::InvalidBridge(name.to_string()))
    }
}

/// An IPv4 subnet `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len` (host bits must be zero; the prefix must leave room for hosts).
    pub fn parse(s: &str) -> Result<Subnet, MachineError> {
        let bad = || MachineError::InvalidSubnet(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let sub = Subnet { network, prefix };
        if u32::from(network) & !sub.mask() != 0 {
            return Err(bad());
        }
        Ok(sub)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` is a usable host address of this subnet (not network, not broadcast).
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(self.network);
        let i = u32::from(ip);
        i & self.mask() == n && i != n && i != n | !self.mask()
    }

    /// The host side of the bridge: the first host address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The first free address after the gateway, skipping `used`.
    pub fn allocate(&self, used: &[Ipv4Addr]) -> Result<Ipv4Addr, MachineError> {
        let n = u32::from(self.network);
        let last = n | !self.mask();
        (n + 2..last)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| MachineError::SubnetFull(self.to_string()))
    }

    /// Checks a requested address: in the subnet, not the gateway, not taken.
    pub fn check_requested(&self, ip: Ipv4Addr, used: &[Ipv4Addr]) -> Result<(), MachineError> {
        if !self.contains_host(ip) || ip == self.gateway() {
            return Err(MachineError::InvalidIp(ip.to_string(), self.to_string()));
        }
        if used.contains(&ip) {
            return Err(MachineError::IpInUse(ip.to_string()));
        }
        Ok(())
    }
}

impl Subnet {
    /// Whether this subnet shares addresses with a route destination such as `10.0.0.0/8`,
    /// `192.168.1.0/24` or `10.97.0.5` (`default` and unparsable entries never clash).
    pub fn overlaps(&self, dest: &str) -> bool {
        let (ip, len) = dest.split_once('/').unwrap_or((dest, "32"));
        let (Ok(ip), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
            return false;
        };
        if len > 32 {
            return false;
        }
        let shorter = len.min(self.prefix);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(shorter))
        };
        u32::from(ip) & mask == u32::from(self.network) & mask
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether a machine should be running (what `stop`/`start` last asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Running,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "Running",
            State::Stopped => "Stopped",
        }
    }
}

/// `<machine dir>/config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub driver: String,
    pub ip: Ipv4Addr,
    pub subnet: Subnet,
    pub bridge: String,
    pub created: String,
    pub state: State,
    /// Pid of the machine's daemon while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// CPUs the machine's node reports (`create --cpus`); the host's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory in MB the machine's node reports (`create --memory`); the host's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
}

impl Record {
    /// The network namespace holding the bridge the machine is attached to.
    pub fn switch(&self) -> String {
        switch_netns_name(&self.bridge)
    }
    /// `shoal daemon` flags for the resources given at create time.
    pub fn daemon_resource_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = self.cpus {
            args.push("--node-cpus".to_string());
            args.push(c.to_string());
        }
        if let Some(m) = self.memory {
            args.push("--node-memory".to_string());
            args.push(m.to_string());
        }
        args
    }
    /// The machine's API as `env` and `ls` show it: `tcp://IP:2376`, TLS with client
    /// certificates.
    pub fn url(&self) -> String {
        format!("tcp://{}:{}", self.ip, DOCKER_TLS_PORT)
    }
    /// The machine's network namespace.
    pub fn netns(&self) -> String {
        netns_name(&self.name)
    }
    /// The switch side of the machine's veth pair.
    pub fn veth(&self) -> String {
        veth_name(&self.name)
    }
}

/// `shoal-NAME`.
pub fn netns_name(name: &str) -> String {
    format!("shoal-{name}")
}

/// `shoal-sw-BRIDGE`: the "switch" namespace holding the bridge of the machines on `BRIDGE`,
/// out of reach of the host's firewall (see [`crate::net`]).
pub fn switch_netns_name(bridge: &str) -> String {
    format!("shoal-sw-{bridge}")
}

/// The bridge inside a switch namespace.
pub const SWITCH_BRIDGE: &str = "br0";
/// The switch end of the host's link (the host end is named as the bridge).
pub const SWITCH_UPLINK: &str = "host";

/// Switch-side veth name of a machine: `shm` + 8 hex digits of a stable hash of the name
/// (interface names are limited to 15 bytes, machine names are not).
pub fn veth_name(name: &str) -> String {
    // FNV-1a, stable across builds.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("shm{h:08x}")
}

/// One row of `machine ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsRow {
    pub name: String,
    pub active: bool,
    pub driver: String,
    pub state: String,
    pub url: String,
    pub swarm: String,
    pub docker: String,
    pub errors: String,
}

impl LsRow {
    /// The fields `ls --format` templates see, named as docker-machine's.
    pub fn to_json(&self) -> Value {
        json!({
            "Name": self.name,
            "Active": if self.active { "*" } else { "-" },
            "ActiveHost": self.active,
            "ActiveSwarm": false,
            "DriverName": self.driver,
            "State": self.state,
            "URL": self.url,
            "Swarm": self.swarm,
            "Error": self.errors,
            "DockerVersion": self.docker,
        })
    }
}

/// docker-machine's default `ls` format.
pub const DEFAULT_LS_FORMAT: &str = "table {{ .Name }}\t{{ .Active }}\t{{ .DriverName}}\t{{ .State }}\t{{ .URL }}\t{{ .Swarm }}\t{{ .DockerVersion }}\t{{ .Error}}";

/// Column titles of `table` formats.
fn ls_headers() -> Value {
    json!({
        "Name": "NAME",
        "Active": "ACTIVE",
        "ActiveHost": "ACTIVE_HOST",
        "ActiveSwarm": "ACTIVE_SWARM",
        "DriverName": "DRIVER",
        "State": "STATE",
        "URL": "URL",
        "Swarm": "SWARM",
        "Error": "ERRORS",
        "DockerVersion": "DOCKER",
        "ResponseTime": "RESPONSE",
    })
}

/// `ls` output for `format` (the default table when `None`): a format starting with `table`
/// gets a header line and aligned columns; `\t` and `\n` in it stand for tab and newline.
pub fn render_ls(rows: &[LsRow], format: Option<&str>) -> Result<String, MachineError> {
    let format = format
        .filter(|f| !f.is_empty())
        .unwrap_or(DEFAULT_LS_FORMAT);
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) => (true, rest),
        None => (false, format),
    };
    let body = body
        .trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n");
    let t = Template::parse(&format!("{body}\n"))?;
    let mut out = String::new();
    if table {
        out.push_str(&t.render(&ls_headers()));
    }
    for r in rows {
        out.push_str(&t.render(&r.to_json()));
    }
    Ok(if table { align_tabs(&out) } else { out })
}

/// docker-machine's `ls` table.
pub fn format_ls(rows: &[LsRow]) -> String {
    render_ls(rows, None).unwrap_or_default()
}

/// `ls --filter KEY=VALUE...`: every key given must match (values of one key are alternatives).
#[derive(Debug, Default)]
pub struct LsFilter {
    names: Vec<regex::Regex>,
    states: Vec<String>,
    drivers: Vec<String>,
    swarms: Vec<String>,
    labels: Vec<String>,
}

impl LsFilter {
    /// Parses docker-machine's filters: `name=REGEX`, `state=`, `driver=`, `swarm=`, `label=`.
    pub fn parse(filters: &[String]) -> Result<LsFilter, MachineError> {
        let mut f = LsFilter::default();
        for item in filters {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| MachineError::Filter("Unsupported filter syntax".into()))?;
            let value = value.to_string();
            match key.to_lowercase().as_str() {
                "name" => f.names.push(
                    regex::Regex::new(&value)
                        .map_err(|e| MachineError::Filter(format!("error parsing regexp: {e}")))?,
                ),
                "state" => f.states.push(value),
                "driver" => f.drivers.push(value),
                "swarm" => f.swarms.push(value),
                "label" => f.labels.push(value),
                other => {
                    return Err(MachineError::Filter(format!(
                        "Unsupported filter key '{other}'"
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Whether a row passes. Machines carry no engine labels, so a label filter passes none.
    pub fn matches(&self, row: &LsRow) -> bool {
        let any_eq = |wanted: &[String], have: &str| {
            wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(have))
        };
        (self.names.is_empty() || self.names.iter().any(|r| r.is_match(&row.name)))
            && any_eq(&self.states, &row.state)
            && any_eq(&self.drivers, &row.driver)
            && any_eq(&self.swarms, &row.swarm)
            && self.labels.is_empty()
    }
}

/// Shells `env --shell` writes for (docker-machine's set; any other name gets POSIX syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Posix,
    Fish,
    PowerShell,
    Cmd,
    Tcsh,
    Emacs,
}

impl Shell {
    /// From a name or a path such as `$SHELL` (`/usr/bin/fish`).
    pub fn from_name(name: &str) -> Shell {
        match name.rsplit('/').next().unwrap_or(name) {
            "fish" => Shell::Fish,
            "powershell" | "pwsh" => Shell::PowerShell,
            "cmd" => Shell::Cmd,
            "tcsh" | "csh" => Shell::Tcsh,
            "emacs" => Shell::Emacs,
            _ => Shell::Posix,
        }
    }

    /// (prefix, delimiter, suffix) around `NAME` and `VALUE` when setting.
    fn set_syntax(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Shell::Posix => ("export ", "=\"", "\"\n"),
            Shell::Fish => ("set -gx ", " \"", "\";\n"),
            Shell::PowerShell => ("$Env:", " = \"", "\"\n"),
            Shell::Cmd => ("SET ", "=", "\n"),
            Shell::Tcsh => ("setenv ", " \"", "\";\n"),
            Shell::Emacs => ("(setenv \"", "\" \"", "\")\n"),
        }
    }

    /// (prefix, delimiter, suffix) around `NAME` when unsetting.
    fn unset_syntax(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Shell::Posix => ("unset ", "", "\n"),
            Shell::Fish => ("set -e ", "", ";\n"),
            Shell::PowerShell => ("Remove-Item Env:\\\\", "", "\n"),
            Shell::Cmd => ("SET ", "=", "\n"),
            Shell::Tcsh => ("unsetenv ", "", ";\n"),
            Shell::Emacs => ("(setenv \"", "\" nil", ")\n"),
        }
    }

    /// The two trailing comment lines telling how to apply the output of `cmdline`.
    pub fn usage_hint(self, cmdline: &str) -> String {
        let (comment, cmd) = match self {
            Shell::Posix => ("#", format!("eval $({cmdline})")),
            Shell::Fish => ("#", format!("eval ({cmdline})")),
            Shell::PowerShell => ("#", format!("& {cmdline} | Invoke-Expression")),
            Shell::Cmd => (
                "REM",
                format!("\t@FOR /f \"tokens=*\" %i IN ('{cmdline}') DO @%i"),
            ),
            Shell::Tcsh => (":", format!("eval `{cmdline}`")),
            Shell::Emacs => (
                ";;",
                format!(
                    "(with-temp-buffer (shell-command \"{cmdline}\" (current-buffer)) (eval-buffer))"
                ),
            ),
        };
        format!("{comment} Run this command to configure your shell: \n{comment} {cmd}\n")
    }
}

/// What `machine env` prints: each variable set in `shell`'s syntax, then the usage hint.
pub fn format_env(shell: Shell, vars: &[(&str, &str)], cmdline: &str) -> String {
    let (prefix, delim, suffix) = shell.set_syntax();
    let mut out = String::new();
    for (k, v) in vars {
        out.push_str(&format!("{prefix}{k}{delim}{v}{suffix}"));
    }
    out.push_str(&shell.usage_hint(cmdline));
    out
}

/// Variables `env --unset` clears.
pub const UNSET_VARS: [&str; 4] = [
    "DOCKER_TLS_VERIFY",
    "DOCKER_HOST",
    "DOCKER_CERT_PATH",
    "DOCKER_MACHINE_NAME",
];

/// What `machine env --unset` prints.
pub fn format_unset(shell: Shell, cmdline: &str) -> String {
    let (prefix, delim, suffix) = shell.unset_syntax();
    let mut out = String::new();
    for k in UNSET_VARS {
        out.push_str(&format!("{prefix}{k}{delim}{suffix}"));
    }
    out.push_str(&shell.usage_hint(cmdline));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_machine_rule() {
        for ok in ["myvm1", "a", "m-1.example", "9lives"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "my_vm", "my vm", "a/b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn subnets_parse_and_reject() {
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 97, 0, 1));
        assert_eq!(s.to_string(), "10.97.0.0/24");
        for bad in [
            "10.97.0.1/24",
            "10.97.0.0",
            "10.97.0.0/31",
            "x/24",
            "10.97.0.0/ab",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_skips_gateway_and_used_and_ends_at_broadcast() {
        let s = Subnet::parse("10.98.7.0/30").unwrap();
        assert_eq!(s.allocate(&[]).unwrap(), Ipv4Addr::new(10, 98, 7, 2));
        assert!(s.allocate(&[Ipv4Addr::new(10, 98, 7, 2)]).is_err());
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        let used = [Ipv4Addr::new(10, 97, 0, 2), Ipv4Addr::new(10, 97, 0, 4)];
        assert_eq!(s.allocate(&used).unwrap(), Ipv4Addr::new(10, 97, 0, 3));
    }

    #[test]
    fn requested_addresses_are_checked() {
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        let used = [Ipv4Addr::new(10, 97, 0, 2)];
        assert!(s
            .check_requested(Ipv4Addr::new(10, 97, 0, 9), &used)
            .is_ok());
        for bad in [
            [10, 97, 0, 1],
            [10, 97, 0, 0],
            [10, 97, 0, 255],
            [10, 97, 1, 5],
        ] {
            assert!(s.check_requested(Ipv4Addr::from(bad), &used).is_err());
        }
        assert!(matches!(
            s.check_requested(Ipv4Addr::new(10, 97, 0, 2), &used),
            Err(MachineError::IpInUse(_))
        ));
    }

    #[test]
    fn overlaps_with_routes() {
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        for yes in ["10.0.0.0/8", "10.97.0.0/24", "10.97.0.128/25", "10.97.0.5"] {
            assert!(s.overlaps(yes), "{yes}");
        }
        for no in [
            "default",
            "10.98.0.0/24",
            "192.168.1.0/24",
            "fe80::/64",
            "x/8",
        ] {
            assert!(!s.overlaps(no), "{no}");
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let r = Record {
            name: "myvm1".into(),
            driver: "netns".into(),
            ip: Ipv4Addr::new(10, 97, 0, 2),
            subnet: Subnet::parse("10.97.0.0/24").unwrap(),
            bridge: DEFAULT_BRIDGE.into(),
            created: "2026-11-26T10:00:00Z".into(),
            state: State::Running,
            pid: Some(42),
            cpus: None,
            memory: Some(512),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"ip\":\"10.97.0.2\""), "{text}");
        assert!(
            text.contains("\"memory\":512") && !text.contains("cpus"),
            "{text}"
        );
        assert_eq!(r.daemon_resource_args(), ["--node-memory", "512"]);
        // Records written before the resources existed still load.
        let old = text.replace(",\"memory\":512", "");
        assert_eq!(serde_json::from_str::<Record>(&old).unwrap().memory, None);
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        assert_eq!(r.netns(), "shoal-myvm1");
        assert_eq!(r.switch(), "shoal-sw-shoal-br0");
        assert!(r.veth().len() <= 15);
        assert_ne!(veth_name("a"), veth_name("b"));
    }

    #[test]
    fn ls_table_matches_docker_machine_layout() {
        let rows = [LsRow {
            name: "myvm1".into(),
            active: true,
            driver: "netns".into(),
            state: "Running".into(),
            url: "unix:///m/docker.sock".into(),
            swarm: String::new(),
            docker: "v0.1.0".into(),
            errors: String::new(),
        }];
        let out = format_ls(&rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "NAME    ACTIVE   DRIVER   STATE     URL                     SWARM   DOCKER   ERRORS"
        );
        assert_eq!(
            lines[1],
            "myvm1   *        netns    Running   unix:///m/docker.sock           v0.1.0"
        );
    }

    #[test]
    fn env_output_has_the_shell_hint() {
        let vars = [
            ("DOCKER_HOST", "unix:///x/docker.sock"),
            ("DOCKER_MACHINE_NAME", "m1"),
        ];
        let out = format_env(Shell::Posix, &vars, "shoal machine env m1");
        assert!(out.starts_with("export DOCKER_HOST=\"unix:///x/docker.sock\"\n"));
        assert!(out.contains("# Run this command to configure your shell: \n"));
        assert!(out.ends_with("# eval $(shoal machine env m1)\n"));
        let out = format_env(Shell::Tcsh, &vars, "c");
        assert!(
            out.starts_with("setenv DOCKER_HOST \"unix:///x/docker.sock\";\n"),
            "{out}"
        );
        assert!(out.ends_with(": Run this command to configure your shell: \n: eval `c`\n"));
        let out = format_env(Shell::Emacs, &vars, "c");
        assert!(
            out.starts_with("(setenv \"DOCKER_HOST\" \"unix:///x/docker.sock\")\n"),
            "{out}"
        );
        assert!(format_unset(Shell::Posix, "c").contains("unset DOCKER_HOST\n"));
        assert!(format_unset(Shell::Tcsh, "c").contains("unsetenv DOCKER_HOST;\n"));
        assert!(format_unset(Shell::Emacs, "c").contains("(setenv \"DOCKER_HOST\" nil)\n"));
    }

    #[test]
    fn shells_are_recognised_by_name_or_path() {
        assert_eq!(Shell::from_name("/usr/bin/fish"), Shell::Fish);
        assert_eq!(Shell::from_name("powershell"), Shell::PowerShell);
        assert_eq!(Shell::from_name("cmd"), Shell::Cmd);
        assert_eq!(Shell::from_name("tcsh"), Shell::Tcsh);
        assert_eq!(Shell::from_name("emacs"), Shell::Emacs);
        for posix in ["sh", "bash", "/bin/zsh", "dash", "anything"] {
            assert_eq!(Shell::from_name(posix), Shell::Posix, "{posix}");
        }
    }

    #[test]
    fn bridge_names_must_be_interface_names() {
        for ok in ["shoal-br0", "b", "br_1.x", "a23456789012345"] {
            assert!(validate_bridge(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a234567890123456", "br 0", "br/0", "br:0"] {
            assert!(validate_bridge(bad).is_err(), "{bad}");
        }
    }
}
