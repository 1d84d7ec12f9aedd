//! `shoal machine`: machines without a hypervisor. A machine is a network namespace
//! (`shoal-NAME`) on this host, attached by a veth pair to a host bridge, with its own address,
//! its own hostname (a UTS namespace) and its own `shoal daemon`, whose API socket lives in the
//! machine's directory on the host filesystem.
//!
//! ```text
//!  <storage>/NAME/{config.json, home/, data/, docker.sock, daemon.log}
//!  host: bridge (gateway .1) ── veth shmXXXXXXXX ══ eth0 in netns shoal-NAME (.2, .3, ...)
//! ```
//!
//! Host operations go through the `ip`, `unshare` and `nsenter` commands ([`host`]).

pub mod host;
pub mod model;

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use model::{LsRow, Record, State, Subnet};

/// What goes wrong, with docker-machine's wording where it has one.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("Error creating machine: Invalid hostname specified. Allowed hostname chars are: 0-9a-zA-Z . -")]
    InvalidName,
    #[error("Docker machine \"{0}\" already exists")]
    Exists(String),
    #[error("Docker machine \"{0}\" does not exist. Use \"shoal machine ls\" to list machines. Use \"shoal machine create\" to add a new one.")]
    NotFound(String),
    #[error("invalid subnet {0:?}: expected an IPv4 network such as 10.97.0.0/24")]
    InvalidSubnet(String),
    #[error("no free address left in {0}")]
    SubnetFull(String),
    #[error("invalid --ip {0}: not a machine address of {1}")]
    InvalidIp(String, String),
    #[error("address {0} is already used by another machine")]
    IpInUse(String),
    #[error("unknown driver {0:?}: the only driver is \"netns\"")]
    UnknownDriver(String),
    #[error("shoal machine {0} needs root privileges (network namespaces); run it as root")]
    NotRoot(String),
    #[error("Error: machine \"{0}\" is not running. Start it with \"shoal machine start {0}\"")]
    NotRunning(String),
    #[error("machine \"{0}\" uses bridge {1} with subnet {2}, not {3}")]
    SubnetMismatch(String, String, String, String),
    #[error("subnet {0} clashes with the host route {1} (dev {2}); choose another with --subnet")]
    SubnetClash(String, String, String),
    #[error("{0}")]
    Host(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// `shoal machine ...`.
#[derive(Parser, Debug)]
#[command(
    name = "shoal machine",
    about = "Manage machines (network namespaces running shoal)",
    subcommand_required = true,
    arg_required_else_help = true,
    disable_help_subcommand = true
)]
pub struct MachineCli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a machine
    Create {
        /// Driver to create the machine with
        #[arg(short = 'd', long, default_value = "netns")]
        driver: String,
        /// Subnet of the host bridge
        #[arg(long)]
        subnet: Option<String>,
        /// Address of the machine (default: the first free one)
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Host bridge to attach the machine to
        #[arg(long, default_value = model::DEFAULT_BRIDGE)]
        bridge: String,
        name: String,
    },
    /// List machines
    Ls,
    /// Get the IP address of a machine
    Ip { name: String },
    /// Get the status of a machine
    Status { name: String },
    /// Stop a machine
    Stop { name: String },
    /// Start a machine
    Start { name: String },
    /// Remove a machine
    Rm {
        /// Remove even if stopping or cleaning up fails
        #[arg(short = 'f', long)]
        force: bool,
        /// Accepted for docker-machine compatibility (no prompt is asked)
        #[arg(short = 'y')]
        yes: bool,
        name: String,
    },
    /// Run a command (or a shell) inside a machine
    Ssh {
        name: String,
        #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Display the commands to set up the environment for the shoal/docker client
    Env {
        /// Unset variables instead of setting them
        #[arg(short = 'u', long)]
        unset: bool,
        name: Option<String>,
    },
}

/// Entry point of `shoal machine ARGS...` (args after `machine`).
pub fn main(args: Vec<OsString>) -> i32 {
    let mut argv = vec![OsString::from("shoal machine")];
    argv.extend(args);
    let cli = match MachineCli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 125,
            };
        }
    };
    let host = host::RealHost;
    match run(&host, &storage_root(), cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `$SHOAL_MACHINE_STORAGE_PATH`, else `/var/lib/shoal/machines`.
pub fn storage_root() -> PathBuf {
    std::env::var_os("SHOAL_MACHINE_STORAGE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/shoal/machines"))
}

/// Where one machine's files live.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, name: &str) -> Paths {
        Paths {
            dir: root.join(name),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> MachineError {
    let what = what.to_string();
    move |e| MachineError::Io(what, e)
}

/// Reads every machine record under `root`, sorted by name.
pub fn load_all(root: &Path) -> Result<Vec<Record>, MachineError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(MachineError::Io(root.display().to_string(), e)),
    };
    for entry in entries.flatten() {
        let cfg = entry.path().join("config.json");
        if let Ok(text) = std::fs::read_to_string(&cfg) {
            if let Ok(rec) = serde_json::from_str::<Record>(&text) {
                out.push(rec);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn load(root: &Path, name: &str) -> Result<Record, MachineError> {
    let p = Paths::new(root, name);
    let text = std::fs::read_to_string(p.config())
        .map_err(|_| MachineError::NotFound(name.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| MachineError::Host(format!("{}: {e}", p.config().display())))
}

fn save(root: &Path, rec: &Record) -> Result<(), MachineError> {
    let p = Paths::new(root, &rec.name);
    let text = serde_json::to_string_pretty(rec).map_err(|e| MachineError::Host(e.to_string()))?;
    let tmp = p.dir.join("config.json.tmp");
    std::fs::write(&tmp, text).map_err(io(tmp.display()))?;
    std::fs::rename(&tmp, p.config()).map_err(io(p.config().display()))
}

/// Runs one `machine` verb; returns the exit code.
pub fn run(h: &dyn host::Host, root: &Path, cmd: Cmd) -> Result<i32, MachineError> {
    match cmd {
        Cmd::Create {
            driver,
            subnet,
            ip,
            bridge,
            name,
        } => {
            create(h, root, &driver, subnet.as_deref(), ip, &bridge, &name)?;
            Ok(0)
        }
        Cmd::Ls => {
            let active = std::env::var("DOCKER_HOST").unwrap_or_default();
            let rows: Vec<LsRow> = load_all(root)?
                .iter()
                .map(|r| ls_row(h, root, r, &active))
                .collect();
            print!("{}", model::format_ls(&rows));
            Ok(0)
        }
        Cmd::Ip { name } => {
            let rec = load(root, &name)?;
            println!("{}", rec.ip);
            Ok(0)
        }
        Cmd::Status { name } => {
            let rec = load(root, &name)?;
            println!("{}", live_state(h, &rec).as_str());
            Ok(0)
        }
        Cmd::Stop { name } => {
            need_root(h, "stop")?;
            let mut rec = load(root, &name)?;
            stop(h, &rec)?;
            rec.state = State::Stopped;
            rec.pid = None;
            save(root, &rec)?;
            Ok(0)
        }
        Cmd::Start { name } => {
            need_root(h, "start")?;
            let mut rec = load(root, &name)?;
            if live_state(h, &rec) == State::Running {
                println!("Machine \"{name}\" is already running.");
                return Ok(0);
            }
            start(h, root, &mut rec)?;
            Ok(0)
        }
        Cmd::Rm { force, name, .. } => {
            need_root(h, "rm")?;
            let rec = load(root, &name)?;
            remove(h, root, &rec, force)?;
            println!("Successfully removed {name}");
            Ok(0)
        }
        Cmd::Ssh { name, command } => {
            let rec = load(root, &name)?;
            need_root(h, "ssh")?;
            let pid = match (live_state(h, &rec), rec.pid) {
                (State::Running, Some(pid)) => pid,
                _ => return Err(MachineError::NotRunning(name)),
            };
            let p = Paths::new(root, &name);
            Ok(h.exec_in(pid, &p, &command))
        }
        Cmd::Env { unset: true, .. } => {
            print!("{}", model::format_unset());
            Ok(0)
        }
        Cmd::Env { name, .. } => {
            let name = name.unwrap_or_else(|| "default".to_string());
            let rec = load(root, &name)?;
            if live_state(h, &rec) != State::Running {
                return Err(MachineError::NotRunning(name));
            }
            print!(
                "{}",
                model::format_env(&name, &Paths::new(root, &name).url())
            );
            Ok(0)
        }
    }
}

fn need_root(h: &dyn host::Host, verb: &str) -> Result<(), MachineError> {
    if h.is_root() {
        Ok(())
    } else {
        Err(MachineError::NotRoot(verb.to_string()))
    }
}

/// Running only when the recorded daemon is alive.
pub fn live_state(h: &dyn host::Host, rec: &Record) -> State {
    match rec.pid {
        Some(pid) if rec.state == State::Running && h.alive(pid) => State::Running,
        _ => State::Stopped,
    }
}

fn ls_row(h: &dyn host::Host, root: &Path, rec: &Record, active: &str) -> LsRow {
    let p = Paths::new(root, &rec.name);
    let state = live_state(h, rec);
    let (swarm, docker, errors) = if state == State::Running {
        h.engine_info(&p.socket())
    } else {
        (String::new(), "Unknown".to_string(), String::new())
    };
    LsRow {
        name: rec.name.clone(),
        active: !active.is_empty() && active == p.url(),
        driver: rec.driver.clone(),
        state: state.as_str().to_string(),
        url: if state == State::Running {
            p.url()
        } else {
            String::new()
        },
        swarm,
        docker,
        errors,
    }
}

#[allow(clippy::too_many_arguments)]
fn create(
    h: &dyn host::Host,
    root: &Path,
    driver: &str,
    subnet: Option<&str>,
    ip: Option<Ipv4Addr>,
    bridge: &str,
    name: &str,
) -> Result<(), MachineError> {
    if driver != "netns" {
        return Err(MachineError::UnknownDriver(driver.to_string()));
    }
    model::validate_name(name)?;
    need_root(h, "create")?;
    let p = Paths::new(root, name);
    if p.dir.exists() || h.netns_exists(&model::netns_name(name)) {
        return Err(MachineError::Exists(name.to_string()));
    }
    // sun_path holds 108 bytes, the terminating NUL included.
    if p.socket().as_os_str().len() >= 108 {
        return Err(MachineError::Host(format!(
            "the machine's socket path {} is too long for a unix socket; use a shorter SHOAL_MACHINE_STORAGE_PATH",
            p.socket().display()
        )));
    }
    let veth = model::veth_name(name);
    if h.link_exists(&veth) {
        // Not ours: rolling back would delete it.
        return Err(MachineError::Host(format!(
            "a network interface named {veth} already exists on this host; remove it or choose another machine name"
        )));
    }
    let all = load_all(root)?;
    let on_bridge: Vec<&Record> = all.iter().filter(|r| r.bridge == bridge).collect();
    let subnet = match (subnet, on_bridge.first()) {
        (Some(s), Some(other)) => {
            let s = Subnet::parse(s)?;
            if s != other.subnet {
                return Err(MachineError::SubnetMismatch(
                    other.name.clone(),
                    bridge.to_string(),
                    other.subnet.to_string(),
                    s.to_string(),
                ));
            }
            s
        }
        (Some(s), None) => Subnet::parse(s)?,
        (None, Some(other)) => other.subnet,
        (None, None) => Subnet::parse(model::DEFAULT_SUBNET)?,
    };
    let used: Vec<Ipv4Addr> = on_bridge.iter().map(|r| r.ip).collect();
    let ip = match ip {
        Some(ip) => {
            subnet.check_requested(ip, &used)?;
            ip
        }
        None => subnet.allocate(&used)?,
    };
    let mut rec = Record {
        name: name.to_string(),
        driver: driver.to_string(),
        ip,
        subnet,
        bridge: bridge.to_string(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        state: State::Stopped,
        pid: None,
    };
    println!("Creating machine {name} ({ip} on {bridge})...");
    let made_bridge = !h.link_exists(bridge);
    if made_bridge {
        if let Some((dest, dev)) = h.routes().into_iter().find(|(d, _)| subnet.overlaps(d)) {
            return Err(MachineError::SubnetClash(subnet.to_string(), dest, dev));
        }
    }
    let result = (|| {
        ensure_bridge(h, &rec)?;
        std::fs::create_dir_all(p.home()).map_err(io(p.home().display()))?;
        std::fs::create_dir_all(p.data()).map_err(io(p.data().display()))?;
        save(root, &rec)?;
        plumb(h, &rec)?;
        start(h, root, &mut rec)
    })();
    if let Err(e) = result {
        let _ = teardown(h, root, &rec);
        if made_bridge {
            let _ = h.ip(&["link", "del", bridge]);
        }
        return Err(e);
    }
    println!("Machine {name} is running: eval $(shoal machine env {name})");
    Ok(())
}

/// The host bridge with the gateway address, made when missing (first machine, or after a
/// reboot of the host).
fn ensure_bridge(h: &dyn host::Host, rec: &Record) -> Result<(), MachineError> {
    if h.link_exists(&rec.bridge) {
        return Ok(());
    }
    h.ip(&["link", "add", &rec.bridge, "type", "bridge"])?;
    let gw = format!("{}/{}", rec.subnet.gateway(), rec.subnet.prefix);
    h.ip(&["addr", "add", &gw, "dev", &rec.bridge])?;
    h.ip(&["link", "set", &rec.bridge, "up"])
}

/// Namespace, veth pair, address, loopback, default route.
fn plumb(h: &dyn host::Host, rec: &Record) -> Result<(), MachineError> {
    let ns = rec.netns();
    let veth = rec.veth();
    h.ip(&["netns", "add", &ns])?;
    h.ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    h.ip(&["link", "set", &veth, "master", &rec.bridge, "up"])?;
    let addr = format!("{}/{}", rec.ip, rec.subnet.prefix);
    h.ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
    h.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    links_up(h, rec)
}

fn links_up(h: &dyn host::Host, rec: &Record) -> Result<(), MachineError> {
    let ns = rec.netns();
    h.ip(&["link", "set", &rec.veth(), "up"])?;
    h.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    let gw = rec.subnet.gateway().to_string();
    h.ip(&["-n", &ns, "route", "replace", "default", "via", &gw])?;
    // Best effort: forwarding for the machine's own tasks.
    let _ = h.ip(&[
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    Ok(())
}

fn start(h: &dyn host::Host, root: &Path, rec: &mut Record) -> Result<(), MachineError> {
    ensure_bridge(h, rec)?;
    if !h.netns_exists(&rec.netns()) {
        plumb(h, rec)?;
    } else {
        links_up(h, rec)?;
    }
    let p = Paths::new(root, &rec.name);
    let _ = std::fs::remove_file(p.socket());
    let pid = h.spawn_daemon(rec, &p)?;
    rec.pid = Some(pid);
    rec.state = State::Running;
    save(root, rec)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h.ping(&p.socket()) {
        if !h.alive(pid) || Instant::now() > deadline {
            let _ = h.stop_pid(pid);
            rec.pid = None;
            rec.state = State::Stopped;
            let _ = save(root, rec);
            // The log goes with a rolled-back machine: show its end here.
            let log = std::fs::read_to_string(p.log()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n");
            return Err(MachineError::Host(format!(
                "the daemon of machine {} did not start ({}):\n{tail}",
                rec.name,
                p.log().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Daemon and every process left in the namespace, then the links down.
fn stop(h: &dyn host::Host, rec: &Record) -> Result<(), MachineError> {
    if let Some(pid) = rec.pid {
        if h.alive(pid) {
            h.stop_pid(pid)?;
        }
    }
    h.kill_netns_pids(&rec.netns());
    if h.netns_exists(&rec.netns()) {
        h.ip(&["-n", &rec.netns(), "link", "set", "eth0", "down"])?;
    }
    if h.link_exists(&rec.veth()) {
        h.ip(&["link", "set", &rec.veth(), "down"])?;
    }
    Ok(())
}

/// Everything the machine made, except the bridge.
fn teardown(h: &dyn host::Host, root: &Path, rec: &Record) -> Result<(), MachineError> {
    let mut first_err = None;
    if let Some(pid) = rec.pid {
        if h.alive(pid) {
            if let Err(e) = h.stop_pid(pid) {
                first_err.get_or_insert(e);
            }
        }
    }
    h.kill_netns_pids(&rec.netns());
    if h.link_exists(&rec.veth()) {
        if let Err(e) = h.ip(&["link", "del", &rec.veth()]) {
            first_err.get_or_insert(e);
        }
    }
    if h.netns_exists(&rec.netns()) {
        if let Err(e) = h.ip(&["netns", "del", &rec.netns()]) {
            first_err.get_or_insert(e);
        }
    }
    let p = Paths::new(root, &rec.name);
    if p.dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&p.dir) {
            first_err.get_or_insert(MachineError::Io(p.dir.display().to_string(), e));
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn remove(h: &dyn host::Host, root: &Path, rec: &Record, force: bool) -> Result<(), MachineError> {
    let res = teardown(h, root, rec);
    if let Err(e) = res {
        if !force {
            return Err(e);
        }
        let _ = std::fs::remove_dir_all(Paths::new(root, &rec.name).dir);
    }
    let others = load_all(root)?
        .into_iter()
        .any(|r| r.bridge == rec.bridge && r.name != rec.name);
    if !others && h.link_exists(&rec.bridge) {
        h.ip(&["link", "del", &rec.bridge])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::Host;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    /// A host in memory: links and namespaces appear and go with the `ip` commands, and one
    /// command can be made to fail.
    #[derive(Default)]
    struct FakeHost {
        root: bool,
        fail_on: Option<String>,
        daemon_starts: bool,
        log: RefCell<Vec<String>>,
        links: RefCell<BTreeSet<String>>,
        netns: RefCell<BTreeSet<String>>,
        pids: RefCell<BTreeSet<u32>>,
    }

    impl FakeHost {
        fn new() -> FakeHost {
            FakeHost {
                root: true,
                daemon_starts: true,
                ..FakeHost::default()
            }
        }
        fn is_clean(&self) -> bool {
            self.links.borrow().is_empty()
                && self.netns.borrow().is_empty()
                && self.pids.borrow().is_empty()
        }
    }

    impl host::Host for FakeHost {
        fn is_root(&self) -> bool {
            self.root
        }
        fn ip(&self, args: &[&str]) -> Result<(), MachineError> {
            let line = args.join(" ");
            self.log.borrow_mut().push(line.clone());
            if self.fail_on.as_deref().is_some_and(|f| line.starts_with(f)) {
                return Err(MachineError::Host(format!("ip {line}: failed")));
            }
            match args {
                ["link", "add", name, "type", ..] => {
                    self.links.borrow_mut().insert(name.to_string());
                }
                ["link", "del", name] => {
                    self.links.borrow_mut().remove(*name);
                }
                ["netns", "add", name] => {
                    self.netns.borrow_mut().insert(name.to_string());
                }
                ["netns", "del", name] => {
                    self.netns.borrow_mut().remove(*name);
                }
                _ => {}
            }
            Ok(())
        }
        fn link_exists(&self, name: &str) -> bool {
            self.links.borrow().contains(name)
        }
        fn routes(&self) -> Vec<(String, String)> {
            vec![
                ("default".into(), "eth0".into()),
                ("10.50.0.0/16".into(), "eth0".into()),
            ]
        }
        fn netns_exists(&self, name: &str) -> bool {
            self.netns.borrow().contains(name)
        }
        fn alive(&self, pid: u32) -> bool {
            self.pids.borrow().contains(&pid)
        }
        fn stop_pid(&self, pid: u32) -> Result<(), MachineError> {
            self.pids.borrow_mut().remove(&pid);
            Ok(())
        }
        fn kill_netns_pids(&self, _netns: &str) {}
        fn spawn_daemon(&self, _rec: &Record, _p: &Paths) -> Result<u32, MachineError> {
            let pid = 1000 + self.pids.borrow().len() as u32 + self.log.borrow().len() as u32;
            if self.daemon_starts {
                self.pids.borrow_mut().insert(pid);
            }
            Ok(pid)
        }
        fn ping(&self, _socket: &Path) -> bool {
            self.daemon_starts
        }
        fn engine_info(&self, _socket: &Path) -> (String, String, String) {
            (String::new(), "v0.1.0".into(), String::new())
        }
        fn exec_in(&self, _pid: u32, _p: &Paths, _command: &[String]) -> i32 {
            0
        }
    }

    fn create_cmd(name: &str) -> Cmd {
        Cmd::Create {
            driver: "netns".into(),
            subnet: None,
            ip: None,
            bridge: "br-test".into(),
            name: name.into(),
        }
    }

    fn verb(name: &str, which: &str) -> Cmd {
        let name = name.to_string();
        match which {
            "stop" => Cmd::Stop { name },
            "start" => Cmd::Start { name },
            "ssh" => Cmd::Ssh {
                name,
                command: vec!["true".into()],
            },
            "rm" => Cmd::Rm {
                force: false,
                yes: false,
                name,
            },
            _ => Cmd::Ip { name },
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        MachineCli::command().debug_assert();
        assert_eq!(main(vec![]), 0, "no verb prints the help");
        assert_eq!(main(vec!["bogus".into()]), 125);
        let cli = MachineCli::try_parse_from([
            "m",
            "ssh",
            "m1",
            "shoal",
            "swarm",
            "init",
            "--advertise-addr",
            "10.0.0.2",
        ])
        .unwrap();
        match cli.cmd {
            Cmd::Ssh { name, command } => {
                assert_eq!(name, "m1");
                assert_eq!(command.len(), 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_two_then_remove_both_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = FakeHost::new();
        run(&h, dir.path(), create_cmd("m1")).unwrap();
        run(&h, dir.path(), create_cmd("m2")).unwrap();
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].ip, Ipv4Addr::new(10, 97, 0, 2));
        assert_eq!(all[1].ip, Ipv4Addr::new(10, 97, 0, 3));
        assert!(all.iter().all(|r| live_state(&h, r) == State::Running));
        assert!(h.link_exists("br-test"));
        assert!(h
            .log
            .borrow()
            .contains(&"addr add 10.97.0.1/24 dev br-test".to_string()));
        run(&h, dir.path(), verb("m1", "rm")).unwrap();
        // The bridge stays while a machine uses it.
        assert!(h.link_exists("br-test"));
        run(&h, dir.path(), verb("m2", "rm")).unwrap();
        assert!(h.is_clean(), "left: {:?} {:?}", h.links, h.netns);
        assert!(load_all(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_failed_step_rolls_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = FakeHost::new();
        h.fail_on = Some("-n shoal-m1 route".into());
        let err = run(&h, dir.path(), create_cmd("m1")).unwrap_err();
        assert!(err.to_string().contains("route"), "{err}");
        assert!(h.is_clean(), "left: {:?} {:?}", h.links, h.netns);
        assert!(!dir.path().join("m1").exists());
    }

    #[test]
    fn a_daemon_that_does_not_start_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = FakeHost::new();
        h.daemon_starts = false;
        let err = run(&h, dir.path(), create_cmd("m1")).unwrap_err();
        assert!(err.to_string().contains("did not start"), "{err}");
        assert!(h.is_clean());
        assert!(!dir.path().join("m1").exists());
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let h = FakeHost::new();
        run(&h, dir.path(), create_cmd("m1")).unwrap();
        let made = h.log.borrow().len();
        let e = run(&h, dir.path(), create_cmd("m1")).unwrap_err();
        assert_eq!(e.to_string(), "Docker machine \"m1\" already exists");
        let e = run(&h, dir.path(), create_cmd("my_vm")).unwrap_err();
        assert!(matches!(e, MachineError::InvalidName));
        let e = run(&h, dir.path(), verb("nope", "ip")).unwrap_err();
        assert!(matches!(e, MachineError::NotFound(_)));
        let e = run(
            &h,
            dir.path(),
            Cmd::Create {
                driver: "netns".into(),
                subnet: Some("10.50.0.0/24".into()),
                ip: None,
                bridge: "br-test".into(),
                name: "m9".into(),
            },
        )
        .unwrap_err();
        assert!(matches!(e, MachineError::SubnetMismatch(..)), "{e}");
        assert_eq!(
            h.log.borrow().len(),
            made,
            "no host command after the first create"
        );
        let e = run(
            &h,
            dir.path(),
            Cmd::Create {
                driver: "netns".into(),
                subnet: Some("10.50.3.0/24".into()),
                ip: None,
                bridge: "br-other".into(),
                name: "m9".into(),
            },
        )
        .unwrap_err();
        assert!(matches!(e, MachineError::SubnetClash(..)), "{e}");
        assert_eq!(
            h.log.borrow().len(),
            made,
            "no host command after the first create"
        );
        h.links.borrow_mut().insert(model::veth_name("m7"));
        let e = run(&h, dir.path(), create_cmd("m7")).unwrap_err();
        assert!(e.to_string().contains("already exists on this host"), "{e}");
        assert!(
            h.link_exists(&model::veth_name("m7")),
            "a foreign link is left alone"
        );
        h.links.borrow_mut().remove(&model::veth_name("m7"));
        let mut not_root = FakeHost::new();
        not_root.root = false;
        let e = run(&not_root, dir.path(), create_cmd("m2")).unwrap_err();
        assert!(matches!(e, MachineError::NotRoot(_)));
        assert!(not_root.log.borrow().is_empty());
    }

    #[test]
    fn stop_and_start_follow_the_machine_state() {
        let dir = tempfile::tempdir().unwrap();
        let h = FakeHost::new();
        run(&h, dir.path(), create_cmd("m1")).unwrap();
        run(&h, dir.path(), verb("m1", "stop")).unwrap();
        let rec = load(dir.path(), "m1").unwrap();
        assert_eq!(live_state(&h, &rec), State::Stopped);
        assert!(h.pids.borrow().is_empty());
        assert!(h
            .log
            .borrow()
            .contains(&"-n shoal-m1 link set eth0 down".to_string()));
        let e = run(&h, dir.path(), verb("m1", "ssh")).unwrap_err();
        assert!(matches!(e, MachineError::NotRunning(_)), "{e}");
        run(&h, dir.path(), verb("m1", "start")).unwrap();
        let rec = load(dir.path(), "m1").unwrap();
        assert_eq!(live_state(&h, &rec), State::Running);
        assert_eq!(run(&h, dir.path(), verb("m1", "ssh")).unwrap(), 0);
    }

    #[test]
    fn start_rebuilds_bridge_and_namespace_after_a_host_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let h = FakeHost::new();
        run(&h, dir.path(), create_cmd("m1")).unwrap();
        // A reboot: no links, namespaces or processes survive.
        h.links.borrow_mut().clear();
        h.netns.borrow_mut().clear();
        h.pids.borrow_mut().clear();
        let rec = load(dir.path(), "m1").unwrap();
        assert_eq!(live_state(&h, &rec), State::Stopped);
        run(&h, dir.path(), verb("m1", "start")).unwrap();
        assert!(h.link_exists("br-test"));
        assert!(h.netns_exists("shoal-m1"));
        assert!(h.link_exists(&veth_name_of("m1")));
        let rec = load(dir.path(), "m1").unwrap();
        assert_eq!(live_state(&h, &rec), State::Running);
    }

    fn veth_name_of(name: &str) -> String {
        model::veth_name(name)
    }

    #[test]
    fn ls_marks_the_active_machine_and_blank_url_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let h = FakeHost::new();
        run(&h, dir.path(), create_cmd("m1")).unwrap();
        let rec = load(dir.path(), "m1").unwrap();
        let url = Paths::new(dir.path(), "m1").url();
        let row = ls_row(&h, dir.path(), &rec, &url);
        assert!(row.active);
        assert_eq!(row.state, "Running");
        assert_eq!(row.url, url);
        run(&h, dir.path(), verb("m1", "stop")).unwrap();
        let rec = load(dir.path(), "m1").unwrap();
        let row = ls_row(&h, dir.path(), &rec, "");
        assert!(!row.active);
        assert_eq!(row.state, "Stopped");
        assert_eq!(row.url, "");
    }
}
