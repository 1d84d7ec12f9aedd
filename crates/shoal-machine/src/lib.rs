//! `shoal machine`: machines without a hypervisor. A machine is a network namespace
//! (`shoal-NAME`) on this host with its own address, its own hostname (a UTS namespace) and its
//! own `shoal daemon`, whose API socket lives in the machine's directory on the host filesystem.
//! The machines of a bridge are wired to a "switch" namespace holding the bridge, and the host
//! reaches them through a link named as the bridge ([`net`]).
//!
//! ```text
//!  <storage>/NAME/{config.json, home/, data/, docker.sock, daemon.log}
//!  host: BRIDGE (gateway .1) ══ switch shoal-sw-BRIDGE (br0) ── eth0 in shoal-NAME (.2, .3, ...)
//! ```
//!
//! Host operations go through the `ip`, `unshare` and `nsenter` commands ([`host`]); `scp` copies
//! on the host filesystem ([`copy`]); `inspect` and `ls` formats use a Go-template subset
//! ([`template`]).

pub mod certs;
pub mod copy;
pub mod host;
pub mod model;
pub mod net;
pub mod template;

use std::ffi::OsString;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use model::{LsFilter, LsRow, Record, Shell, State, Subnet};

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
    #[error("invalid bridge name {0:?}: 1 to 15 letters, digits, '-', '_' or '.'")]
    InvalidBridge(String),
    #[error("a network interface named {0} already exists on this host and is not a Shoal machine bridge; remove it or choose another --bridge")]
    ForeignBridge(String),
    #[error("no free address left in {0}")]
    SubnetFull(String),
    #[error("invalid --ip {0}: not a machine address of {1}")]
    InvalidIp(String, String),
    #[error("address {0} is already used by another machine")]
    IpInUse(String),
    #[error("invalid {0}: must be at least 1")]
    InvalidResource(String),
    #[error("unknown driver {0:?}: the only driver is \"netns\"")]
    UnknownDriver(String),
    #[error("shoal machine {0} needs root privileges (network namespaces); run it as root")]
    NotRoot(String),
    #[error("Error: machine \"{0}\" is not running{1}. Start it with \"shoal machine start {0}\"")]
    NotRunning(String, String),
    #[error("Machine \"{0}\" is already {1}.")]
    AlreadyInState(String, &'static str),
    #[error("machine \"{0}\" uses bridge {1} with subnet {2}, not {3}")]
    SubnetMismatch(String, String, String, String),
    #[error("subnet {0} clashes with the host route {1} (dev {2}); choose another with --subnet")]
    SubnetClash(String, String, String),
    #[error("Error: No machine name(s) specified and no \"default\" machine exists")]
    NoDefault,
    #[error("Error: Expected one machine name as an argument")]
    ExpectedOne,
    #[error("Error: Expected to get one or more machine names as arguments")]
    NoMachineSpecified,
    #[error("No active host found")]
    NoActiveHost,
    #[error("Error: Expected no machine name when the -u flag is present")]
    UnsetWithName,
    #[error("template parsing error: {0}")]
    Template(String),
    #[error("{0}")]
    Filter(String),
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
    /// Errors of several machines, one a line (docker-machine's consolidated errors).
    #[error("{}", .0.join("\n"))]
    Many(Vec<String>),
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
        /// Subnet of the bridge
        #[arg(long)]
        subnet: Option<String>,
        /// Address of the machine (default: the first free one)
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Bridge to attach the machine to (also the name of the host's link to the machines)
        #[arg(long, default_value = model::DEFAULT_BRIDGE)]
        bridge: String,
        /// CPUs the machine's node reports (default: the host's)
        #[arg(long, value_name = "N")]
        cpus: Option<u32>,
        /// Memory in MB the machine's node reports (default: the host's)
        #[arg(long, value_name = "MB")]
        memory: Option<u64>,
        name: String,
    },
    /// List machines
    Ls {
        /// Enable quiet mode
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Filter output based on conditions provided (name=, state=, driver=, swarm=, label=)
        #[arg(long)]
        filter: Vec<String>,
        /// Pretty-print machines using a Go template
        #[arg(short = 'f', long)]
        format: Option<String>,
    },
    /// Print which machine is active (the one DOCKER_HOST points at)
    Active,
    /// Get the IP address of machines
    Ip {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Get the status of a machine
    Status {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Get the URL of a machine
    Url {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Inspect information about a machine
    Inspect {
        /// Format the output using the given go template
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Stop machines
    Stop {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Start machines
    Start {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Restart machines
    Restart {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Remove machines
    Rm {
        /// Remove local configuration even if machine cannot be removed, also implies an automatic yes (`-y`)
        #[arg(short = 'f', long)]
        force: bool,
        /// Accepted for docker-machine compatibility (no prompt is asked)
        #[arg(short = 'y')]
        yes: bool,
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Run a command (or a shell) inside a machine
    Ssh {
        name: String,
        #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Copy files between machines (arguments are [machine:][path] [machine:][path])
    Scp {
        /// Copy files recursively (required to copy directories)
        #[arg(short = 'r', long)]
        recursive: bool,
        #[arg(value_name = "[MACHINE:]SRC")]
        src: String,
        #[arg(value_name = "[MACHINE:]DST")]
        dst: String,
    },
    /// Display the commands to set up the environment for the shoal/docker client
    Env {
        /// Unset variables instead of setting them
        #[arg(short = 'u', long)]
        unset: bool,
        /// Force environment to be configured for a specified shell: [fish, cmd, powershell, tcsh, emacs, sh, bash, zsh], default is auto-detect
        #[arg(long)]
        shell: Option<String>,
        #[arg(value_name = "NAME")]
        names: Vec<String>,
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
    let mut out = std::io::stdout();
    match run(&host, &storage_root(), cli.cmd, &mut out) {
        Ok(code) => code,
        Err(e) => {
            let _ = out.flush();
            eprintln!("{e}");
            1
        }
    }
}

/// `$SHOAL_MACHINE_STORAGE_PATH`, else `/var/lib/shoal/machines`.
pub fn storage_root() -> PathBuf {
    storage_root_from(
        std::env::var_os("SHOAL_MACHINE_STORAGE_PATH"),
        std::env::current_dir().ok(),
    )
}

/// The storage root for a value of `SHOAL_MACHINE_STORAGE_PATH`: unset or empty means the
/// default; a relative path is taken from `cwd` (the daemon and `ssh` run elsewhere).
pub fn storage_root_from(var: Option<OsString>, cwd: Option<PathBuf>) -> PathBuf {
    match var.filter(|v| !v.is_empty()).map(PathBuf::from) {
        None => PathBuf::from("/var/lib/shoal/machines"),
        Some(p) if p.is_relative() => cwd.map_or(p.clone(), |c| c.join(&p)),
        Some(p) => p,
    }
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
    /// The API socket as a `unix://` URL: what `ssh` sets inside the machine and what the
    /// host-side tools and tests may use without TLS.
    pub fn socket_url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    /// Where the TLS material lives (`ca.pem`, `cert.pem`, `key.pem`, `server*.pem`), as
    /// docker-machine keeps it in the machine's directory: `DOCKER_CERT_PATH`.
    pub fn certs(&self) -> &Path {
        &self.dir
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

/// Writes to the verb's output; a closed stdout (`| head`) is not an error of the verb.
fn say(out: &mut dyn Write, text: &str) {
    let _ = out.write_all(text.as_bytes());
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

/// Machines whose `config.json` exists but does not load: (name, why), sorted by name.
fn load_broken(root: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| {
            let cfg = entry.path().join("config.json");
            let why = match std::fs::read_to_string(&cfg) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => e.to_string(),
                Ok(text) => serde_json::from_str::<Record>(&text).err()?.to_string(),
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            Some((name, format!("{}: {why}", cfg.display())))
        })
        .collect();
    out.sort();
    out
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

/// The names a verb acts on: those given, else the machine named `default` when it exists.
fn targets(root: &Path, names: Vec<String>) -> Result<Vec<String>, MachineError> {
    if !names.is_empty() {
        return Ok(names);
    }
    if Paths::new(root, "default").config().exists() {
        Ok(vec!["default".to_string()])
    } else {
        Err(MachineError::NoDefault)
    }
}

/// One target for verbs that take at most one name.
fn one_target(root: &Path, names: Vec<String>) -> Result<String, MachineError> {
    if names.len() > 1 {
        return Err(MachineError::ExpectedOne);
    }
    let mut t = targets(root, names)?;
    Ok(t.remove(0))
}

/// Loads every named machine before acting on any (an unknown name changes nothing).
fn load_many(root: &Path, names: &[String]) -> Result<Vec<Record>, MachineError> {
    let mut recs = Vec::new();
    let mut errs = Vec::new();
    for n in names {
        match load(root, n) {
            Ok(r) => recs.push(r),
            Err(e) => errs.push(e.to_string()),
        }
    }
    if errs.is_empty() {
        Ok(recs)
    } else {
        Err(MachineError::Many(errs))
    }
}

/// Runs `f` on each machine in turn; the errors, if any, together.
fn for_each(
    recs: Vec<Record>,
    mut f: impl FnMut(Record) -> Result<(), MachineError>,
) -> Result<(), MachineError> {
    let errs: Vec<String> = recs
        .into_iter()
        .filter_map(|r| f(r).err().map(|e| e.to_string()))
        .collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(MachineError::Many(errs))
    }
}

/// Runs one `machine` verb, writing its output to `out`; returns the exit code.
pub fn run(
    h: &dyn host::Host,
    root: &Path,
    cmd: Cmd,
    out: &mut dyn Write,
) -> Result<i32, MachineError> {
    match cmd {
        Cmd::Create {
            driver,
            subnet,
            ip,
            bridge,
            cpus,
            memory,
            name,
        } => {
            let spec = CreateSpec {
                driver: &driver,
                subnet: subnet.as_deref(),
                ip,
                bridge: &bridge,
                cpus,
                memory,
            };
            create(h, root, &spec, &name, out)?;
            Ok(0)
        }
        Cmd::Ls {
            quiet,
            filter,
            format,
        } => {
            let filter = LsFilter::parse(&filter)?;
            let active = std::env::var("DOCKER_HOST").unwrap_or_default();
            let mut rows: Vec<LsRow> = load_all(root)?
                .iter()
                .map(|r| ls_row(h, root, r, &active))
                .collect();
            // As docker-machine lists a host whose configuration does not load.
            rows.extend(load_broken(root).into_iter().map(|(name, why)| LsRow {
                name,
                active: false,
                driver: "not found".into(),
                state: "Error".into(),
                url: String::new(),
                swarm: String::new(),
                docker: "Unknown".into(),
                errors: why,
            }));
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            rows.retain(|r| filter.matches(r));
            if quiet {
                for r in &rows {
                    say(out, &format!("{}\n", r.name));
                }
            } else {
                say(out, &model::render_ls(&rows, format.as_deref())?);
            }
            Ok(0)
        }
        Cmd::Active => {
            let active = std::env::var("DOCKER_HOST").unwrap_or_default();
            let row = load_all(root)?
                .iter()
                .map(|r| ls_row(h, root, r, &active))
                .find(|r| r.active)
                .ok_or(MachineError::NoActiveHost)?;
            say(out, &format!("{}\n", row.name));
            Ok(0)
        }
        Cmd::Ip { names } => {
            let recs = load_many(root, &targets(root, names)?)?;
            for r in recs {
                say(out, &format!("{}\n", r.ip));
            }
            Ok(0)
        }
        Cmd::Status { names } => {
            let rec = load(root, &one_target(root, names)?)?;
            say(out, &format!("{}\n", live_state(h, root, &rec).as_str()));
            Ok(0)
        }
        Cmd::Url { names } => {
            let rec = load(root, &one_target(root, names)?)?;
            running_pid(h, root, &rec)?;
            say(out, &format!("{}\n", rec.url()));
            Ok(0)
        }
        Cmd::Inspect { format, names } => {
            let rec = load(root, &one_target(root, names)?)?;
            let v = inspect_json(root, &rec);
            match format.filter(|f| !f.is_empty()) {
                Some(f) => {
                    let t = template::Template::parse(&f)?;
                    say(out, &format!("{}\n", t.render(&v)));
                }
                None => say(out, &format!("{}\n", template::pretty_json(&v))),
            }
            Ok(0)
        }
        Cmd::Stop { names } => {
            need_root(h, "stop")?;
            let recs = load_many(root, &targets(root, names)?)?;
            for_each(recs, |mut rec| {
                say(out, &format!("Stopping \"{}\"...\n", rec.name));
                if live_state(h, root, &rec) == Live::Stopped {
                    return Err(MachineError::AlreadyInState(rec.name, "stopped"));
                }
                stop_and_record(h, root, &mut rec)?;
                say(out, &format!("Machine \"{}\" was stopped.\n", rec.name));
                Ok(())
            })?;
            Ok(0)
        }
        Cmd::Start { names } => {
            need_root(h, "start")?;
            let recs = load_many(root, &targets(root, names)?)?;
            for_each(recs, |mut rec| {
                say(out, &format!("Starting \"{}\"...\n", rec.name));
                if live_state(h, root, &rec) == Live::Running {
                    return Err(MachineError::AlreadyInState(rec.name, "running"));
                }
                recover_and_start(h, root, &mut rec)?;
                say(out, &format!("Machine \"{}\" was started.\n", rec.name));
                Ok(())
            })?;
            say(out, "Started machines may have new IP addresses. You may need to re-run the `shoal machine env` command.\n");
            Ok(0)
        }
        Cmd::Restart { names } => {
            need_root(h, "restart")?;
            let recs = load_many(root, &targets(root, names)?)?;
            for_each(recs, |mut rec| {
                say(out, &format!("Restarting \"{}\"...\n", rec.name));
                if live_state(h, root, &rec) == Live::Running {
                    stop_and_record(h, root, &mut rec)?;
                    start(h, root, &mut rec)
                } else {
                    say(out, &format!("Starting \"{}\"...\n", rec.name));
                    recover_and_start(h, root, &mut rec)?;
                    say(out, &format!("Machine \"{}\" was started.\n", rec.name));
                    Ok(())
                }
            })?;
            say(out, "Restarted machines may have new IP addresses. You may need to re-run the `shoal machine env` command.\n");
            Ok(0)
        }
        Cmd::Rm { force, names, .. } => {
            if names.is_empty() {
                return Err(MachineError::NoMachineSpecified);
            }
            need_root(h, "rm")?;
            say(out, &format!("About to remove {}\n", names.join(", ")));
            say(
                out,
                "WARNING: This action will delete both local reference and remote instance.\n",
            );
            let mut errs = Vec::new();
            for name in &names {
                let res = load(root, name).and_then(|rec| remove(h, root, &rec, force));
                match res {
                    Ok(()) => say(out, &format!("Successfully removed {name}\n")),
                    Err(e) => {
                        let msg = format!("Error removing host \"{name}\": {e}");
                        if force {
                            let _ = out.flush();
                            eprintln!("{msg}");
                        }
                        errs.push(msg);
                    }
                }
            }
            if errs.is_empty() || force {
                Ok(0)
            } else {
                Err(MachineError::Many(errs))
            }
        }
        Cmd::Ssh { name, command } => {
            let rec = load(root, &name)?;
            need_root(h, "ssh")?;
            let pid = running_pid(h, root, &rec)?;
            let _ = out.flush();
            Ok(h.exec_in(pid, &Paths::new(root, &name), &command))
        }
        Cmd::Scp {
            recursive,
            src,
            dst,
        } => {
            let src = scp_path(h, root, &src)?;
            let dst = scp_path(h, root, &dst)?;
            copy::copy(&src, &dst, recursive)?;
            Ok(0)
        }
        Cmd::Env {
            unset,
            shell,
            names,
        } => {
            let sh = shell
                .clone()
                .or_else(|| std::env::var("SHELL").ok())
                .map_or(Shell::Posix, |s| Shell::from_name(&s));
            let mut cmdline = "shoal machine env".to_string();
            if let Some(s) = &shell {
                cmdline.push_str(&format!(" --shell {s}"));
            }
            if unset {
                if !names.is_empty() {
                    return Err(MachineError::UnsetWithName);
                }
                say(out, &model::format_unset(sh, &format!("{cmdline} --unset")));
                return Ok(0);
            }
            for n in &names {
                cmdline.push_str(&format!(" {n}"));
            }
            let name = one_target(root, names)?;
            let rec = load(root, &name)?;
            running_pid(h, root, &rec)?;
            let url = rec.url();
            let p = Paths::new(root, &name);
            let cert_path = p.certs().display().to_string();
            let vars = [
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_HOST", url.as_str()),
                ("DOCKER_CERT_PATH", cert_path.as_str()),
                ("DOCKER_MACHINE_NAME", name.as_str()),
            ];
            say(out, &model::format_env(sh, &vars, &cmdline));
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

/// A machine's state as `ls` and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// The daemon is alive and answers.
    Running,
    /// Stopped with `stop` (or never started).
    Stopped,
    /// Should run but does not: the daemon exited or does not answer (why, with its log).
    Error(String),
}

impl Live {
    pub fn as_str(&self) -> &'static str {
        match self {
            Live::Running => "Running",
            Live::Stopped => "Stopped",
            Live::Error(_) => "Error",
        }
    }
}

/// Running only when the recorded daemon is alive and answers.
pub fn live_state(h: &dyn host::Host, root: &Path, rec: &Record) -> Live {
    if rec.state == State::Stopped {
        return Live::Stopped;
    }
    let p = Paths::new(root, &rec.name);
    match rec.pid {
        Some(pid) if h.daemon_alive(pid, &p.socket()) => match h.ping(&p.socket()) {
            Ok(()) => Live::Running,
            Err(why) => Live::Error(format!("{why}; see {}", p.log().display())),
        },
        _ => Live::Error(format!("daemon exited; see {}", p.log().display())),
    }
}

/// The daemon's pid of a running machine, else why the machine cannot be used.
fn running_pid(h: &dyn host::Host, root: &Path, rec: &Record) -> Result<u32, MachineError> {
    match (live_state(h, root, rec), rec.pid) {
        (Live::Running, Some(pid)) => Ok(pid),
        (Live::Error(why), _) => Err(MachineError::NotRunning(
            rec.name.clone(),
            format!(" ({why})"),
        )),
        _ => Err(MachineError::NotRunning(rec.name.clone(), String::new())),
    }
}

/// One side of `scp` as a host path (a machine side must name a running machine).
fn scp_path(h: &dyn host::Host, root: &Path, arg: &str) -> Result<PathBuf, MachineError> {
    match copy::parse_location(arg) {
        copy::Location::Local(p) => Ok(p),
        copy::Location::Machine { name, path } => {
            let rec = load(root, &name)?;
            running_pid(h, root, &rec)?;
            Ok(copy::machine_path(&Paths::new(root, &name).home(), &path))
        }
    }
}

fn ls_row(h: &dyn host::Host, root: &Path, rec: &Record, active: &str) -> LsRow {
    let p = Paths::new(root, &rec.name);
    let state = live_state(h, root, rec);
    let (swarm, docker, errors) = match &state {
        Live::Running => h.engine_info(&p.socket()),
        Live::Stopped => (String::new(), "Unknown".to_string(), String::new()),
        Live::Error(why) => (String::new(), "Unknown".to_string(), why.clone()),
    };
    let running = state == Live::Running;
    LsRow {
        name: rec.name.clone(),
        active: running && (active == rec.url() || active == p.socket_url()),
        driver: rec.driver.clone(),
        state: state.as_str().to_string(),
        url: if running { rec.url() } else { String::new() },
        swarm,
        docker,
        errors,
    }
}

/// What `inspect` shows, laid out as docker-machine's host JSON.
pub fn inspect_json(root: &Path, rec: &Record) -> Value {
    let p = Paths::new(root, &rec.name);
    json!({
        "ConfigVersion": 3,
        "Driver": {
            "IPAddress": rec.ip.to_string(),
            "MachineName": rec.name,
            "SSHUser": "root",
            "StorePath": root.display().to_string(),
            "CPU": rec.cpus.unwrap_or(0),
            "Memory": rec.memory.unwrap_or(0),
            "Bridge": rec.bridge,
            "Subnet": rec.subnet.to_string(),
            "Gateway": rec.subnet.gateway().to_string(),
            "Netns": rec.netns(),
            "SwitchNetns": rec.switch(),
            "Veth": rec.veth(),
            "Socket": p.socket().display().to_string(),
            "Pid": rec.pid.unwrap_or(0),
            "Created": rec.created,
        },
        "DriverName": rec.driver,
        "HostOptions": {
            "Driver": "",
            "Memory": 0,
            "Disk": 0,
            "EngineOptions": {
                "ArbitraryFlags": [],
                "Dns": null,
                "GraphDir": p.data().display().to_string(),
                "Env": [],
                "Ipv6": false,
                "InsecureRegistry": [],
                "Labels": [],
                "LogLevel": "",
                "StorageDriver": "",
                "SelinuxEnabled": false,
                "TlsVerify": false,
                "RegistryMirror": [],
                "InstallURL": "",
            },
            "SwarmOptions": {
                "IsSwarm": false,
                "Address": "",
                "Discovery": "",
                "Agent": false,
                "Master": false,
                "Host": "",
                "Image": "",
                "Strategy": "",
                "Heartbeat": 0,
                "Overcommit": 0,
                "ArbitraryFlags": [],
                "ArbitraryJoinFlags": [],
                "Env": null,
                "IsExperimental": false,
            },
            "AuthOptions": {
                "CertDir": "",
                "CaCertPath": "",
                "CaPrivateKeyPath": "",
                "CaCertRemotePath": "",
                "ServerCertPath": "",
                "ServerKeyPath": "",
                "ClientKeyPath": "",
                "ServerCertRemotePath": "",
                "ServerKeyRemotePath": "",
                "ClientCertPath": "",
                "ServerCertSANs": [],
                "StorePath": p.dir.display().to_string(),
            },
        },
        "Name": rec.name,
    })
}

/// `create`'s options.
struct CreateSpec<'a> {
    driver: &'a str,
    subnet: Option<&'a str>,
    ip: Option<Ipv4Addr>,
    bridge: &'a str,
    cpus: Option<u32>,
    memory: Option<u64>,
}

fn create(
    h: &dyn host::Host,
    root: &Path,
    spec: &CreateSpec,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), MachineError> {
    if spec.driver != "netns" {
        return Err(MachineError::UnknownDriver(spec.driver.to_string()));
    }
    model::validate_name(name)?;
    model::validate_bridge(spec.bridge)?;
    if spec.cpus == Some(0) {
        return Err(MachineError::InvalidResource("--cpus".into()));
    }
    if spec.memory == Some(0) {
        return Err(MachineError::InvalidResource("--memory".into()));
    }
    need_root(h, "create")?;
    let bridge = spec.bridge;
    let p = Paths::new(root, name);
    // Held until the machine is recorded and wired: parallel creates get distinct addresses
    // and do not build or remove the same switch at once.
    let guard = StoreLock::take(root)?;
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
    let all = load_all(root)?;
    let sw = model::switch_netns_name(bridge);
    if let Some(clash) = all.iter().find(|r| r.netns() == sw) {
        return Err(MachineError::Host(format!(
            "bridge {bridge} would need the namespace {sw}, which is machine {}'s; choose another --bridge",
            clash.name
        )));
    }
    let veth = model::veth_name(name);
    if h.link_exists(Some(&sw), &veth) {
        return Err(MachineError::Host(format!(
            "a network interface named {veth} already exists in {sw}; choose another machine name"
        )));
    }
    let on_bridge: Vec<&Record> = all.iter().filter(|r| r.bridge == bridge).collect();
    let subnet = match (spec.subnet, on_bridge.first()) {
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
    let ip = match spec.ip {
        Some(ip) => {
            subnet.check_requested(ip, &used)?;
            ip
        }
        None => subnet.allocate(&used)?,
    };
    if net::foreign_bridge(h, bridge) {
        return Err(MachineError::ForeignBridge(bridge.to_string()));
    }
    if !h.link_exists(None, bridge) {
        if let Some((dest, dev)) = h.routes().into_iter().find(|(d, _)| subnet.overlaps(d)) {
            return Err(MachineError::SubnetClash(subnet.to_string(), dest, dev));
        }
    }
    let mut rec = Record {
        name: name.to_string(),
        driver: spec.driver.to_string(),
        ip,
        subnet,
        bridge: bridge.to_string(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        state: State::Stopped,
        pid: None,
        cpus: spec.cpus,
        memory: spec.memory,
    };
    say(
        out,
        &format!("Creating machine {name} ({ip} on {bridge})...\n"),
    );
    let wired = (|| {
        std::fs::create_dir_all(p.home()).map_err(io(p.home().display()))?;
        std::fs::create_dir_all(p.data()).map_err(io(p.data().display()))?;
        save(root, &rec)?;
        plumb(h, &rec)
    })();
    drop(guard);
    if let Err(e) = wired.and_then(|()| run_daemon(h, root, &mut rec)) {
        let _ = teardown(h, root, &rec);
        let _ = remove_unused_switch(h, root, bridge);
        return Err(e);
    }
    say(
        out,
        &format!("Machine {name} is running: eval $(shoal machine env {name})\n"),
    );
    Ok(())
}

/// An exclusive `flock` on `<root>/.lock` while the value lives: changes to the set of
/// machines and to their switches happen one at a time across processes.
struct StoreLock {
    _file: std::fs::File,
}

impl StoreLock {
    fn take(root: &Path) -> Result<StoreLock, MachineError> {
        std::fs::create_dir_all(root).map_err(io(root.display()))?;
        let path = root.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(MachineError::Io(
                path.display().to_string(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(StoreLock { _file: f })
    }
}

/// The switch of `bridge` when no machine uses it any more.
fn remove_unused_switch(h: &dyn host::Host, root: &Path, bridge: &str) -> Result<(), MachineError> {
    let _guard = StoreLock::take(root)?;
    if load_all(root)?.iter().any(|r| r.bridge == bridge) {
        return Ok(());
    }
    net::remove_switch(h, bridge)
}

/// The machine's network, rebuilt where missing (e.g. after a host reboot).
fn plumb(h: &dyn host::Host, rec: &Record) -> Result<(), MachineError> {
    net::ensure_switch(h, rec)?;
    net::ensure_machine(h, rec)
}

/// Network, then the daemon, waited for.
fn start(h: &dyn host::Host, root: &Path, rec: &mut Record) -> Result<(), MachineError> {
    {
        let _guard = StoreLock::take(root)?;
        plumb(h, rec)?;
    }
    run_daemon(h, root, rec)
}

/// The daemon's flags after the fixed ones: the API on `tcp://IP:2376` with TLS, verifying
/// clients against the machine's CA (the unix socket stays for `ssh` and the host), then the
/// resources given at create time.
pub fn daemon_args(rec: &Record, p: &Paths) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-H".into(), rec.url().into()];
    args.extend(certs::daemon_tls_args(p.certs()));
    args.extend(rec.daemon_resource_args().into_iter().map(OsString::from));
    args
}

/// Starts the machine's daemon and waits until it answers; stopped again if it does not.
fn run_daemon(h: &dyn host::Host, root: &Path, rec: &mut Record) -> Result<(), MachineError> {
    let p = Paths::new(root, &rec.name);
    let _ = std::fs::remove_file(p.socket());
    certs::generate(p.certs(), rec.ip, &rec.name).map_err(|e| {
        MachineError::Host(format!(
            "the TLS certificates of machine {} in {}: {e}",
            rec.name,
            p.certs().display()
        ))
    })?;
    let pid = h.spawn_daemon(rec, &p, &daemon_args(rec, &p))?;
    rec.pid = Some(pid);
    rec.state = State::Running;
    save(root, rec)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.ping(&p.socket()).is_err() {
        // While it execs its way from `nsenter` to the daemon, its command line can be
        // briefly empty: only whether it still exists counts here.
        if !h.alive(pid) || Instant::now() > deadline {
            let _ = h.stop_pid(pid);
            h.kill_netns_pids(&rec.netns());
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

/// Start from Stopped or Error: whatever the dead daemon left in the namespace goes first.
fn recover_and_start(
    h: &dyn host::Host,
    root: &Path,
    rec: &mut Record,
) -> Result<(), MachineError> {
    if rec.state == State::Running {
        stop(h, root, rec)?;
    }
    start(h, root, rec)
}

/// Daemon and every process left in the namespace, then the links down.
fn stop(h: &dyn host::Host, root: &Path, rec: &Record) -> Result<(), MachineError> {
    let socket = Paths::new(root, &rec.name).socket();
    if let Some(pid) = rec.pid {
        if h.daemon_alive(pid, &socket) {
            h.stop_pid(pid)?;
        }
    }
    h.kill_netns_pids(&rec.netns());
    net::links_down(h, rec)
}

fn stop_and_record(h: &dyn host::Host, root: &Path, rec: &mut Record) -> Result<(), MachineError> {
    stop(h, root, rec)?;
    rec.state = State::Stopped;
    rec.pid = None;
    save(root, rec)
}

/// Everything the machine made, except its switch.
fn teardown(h: &dyn host::Host, root: &Path, rec: &Record) -> Result<(), MachineError> {
    let mut first_err = None;
    let p = Paths::new(root, &rec.name);
    if let Some(pid) = rec.pid {
        if h.daemon_alive(pid, &p.socket()) {
            if let Err(e) = h.stop_pid(pid) {
                first_err.get_or_insert(e);
            }
        }
    }
    h.kill_netns_pids(&rec.netns());
    if let Err(e) = net::remove_machine(h, rec) {
        first_err.get_or_insert(e);
    }
    if p.dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&p.dir) {
            first_err.get_or_insert(MachineError::Io(p.dir.display().to_string(), e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove(h: &dyn host::Host, root: &Path, rec: &Record, force: bool) -> Result<(), MachineError> {
    if let Err(e) = teardown(h, root, rec) {
        if !force {
            return Err(e);
        }
        let _ = std::fs::remove_dir_all(Paths::new(root, &rec.name).dir);
    }
    // The switch goes with the last machine on it.
    let res = remove_unused_switch(h, root, &rec.bridge);
    if !force {
        res?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
