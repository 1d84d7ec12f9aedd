//! Harness of the end-to-end tests on machines made with `shoal machine` (network namespaces on
//! this host, each with its own address, hostname and `shoal daemon`), driven as a user does:
//! `shoal machine` verbs, and the `docker` CLI against each machine's socket (what
//! `eval $(shoal machine env NAME)` sets up).
//!
//! ```text
//!  Machines::create(prefix, bridge, subnet, n)
//!     │  takes the machines lock (one harness user at a time on this host), records the host
//!     │  (netns, links, shoal processes), `shoal machine create` <prefix>-1 .. <prefix>-n
//!     ├─ swarm(k)               init on machine 1, k-1 managers and n-k workers join; all Ready
//!     ├─ docker(name, args)     `docker -H unix://<storage>/<name>/docker.sock ARGS`
//!     ├─ cut(name, Cut::Link | Cut::Firewall) / heal(name)
//!     ├─ kill_daemon(name) / stop(name) / start(name)
//!     ├─ leftovers()            what is on the host that was not before: the tests assert none
//!     └─ Drop (also on panic): `machine rm -f` each, SIGKILL what still runs in the machines'
//!        namespaces, delete the namespaces and links that appeared, unmount what is under the
//!        storage directory
//! ```
//!
//! Leftovers are found generically, by difference with the host as it was before: a namespace or
//! host link that appeared is the machines' when it is named after a machine or the bridge, or
//! holds an address of their subnet; a process is theirs when it runs in one of their
//! namespaces or names their storage directory. No internal name of `shoal machine` other than
//! the documented `shoal-NAME` namespace is assumed. Tests using this harness take a host-wide
//! lock ([`LOCK_PATH`]) for their whole run, so no two of them change the host at once; what
//! other programs make meanwhile is left alone. Every wait is bounded; nothing asserts on time.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use super::cluster::LONG;
use super::{client_command, docker_cli, procs, raw_http, run, urlencode, wait_for, Out};

/// The lock every harness user holds while its machines exist.
pub const LOCK_PATH: &str = "/run/lock/shoal-e2e-machines.lock";
/// Bound of one `shoal machine` verb (create and start wait for the daemon, stop for its exit).
const MACHINE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound of one CLI command against a machine.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// The nftables table [`Cut::Firewall`] adds in a machine's namespace.
const PARTITION_TABLE: &str = "shoal-partition";

/// Why the machine tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for tool in ["ip", "nsenter", "unshare", "nft"] {
        let found = Command::new(tool)
            .arg(if tool == "nft" { "--version" } else { "-V" })
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is missing"));
        }
    }
    if docker_cli().is_none() {
        return Some("the docker CLI is not installed".into());
    }
    None
}

/// What the host has that machines could leave behind.
#[derive(Clone, Debug, Default)]
pub struct HostState {
    /// Named network namespaces (/run/netns).
    pub netns: BTreeSet<String>,
    /// Network interfaces of the host namespace (/sys/class/net).
    pub links: BTreeSet<String>,
    /// Live processes of a `shoal` binary.
    pub shoal_pids: BTreeSet<i32>,
}

impl HostState {
    pub fn now() -> HostState {
        HostState {
            netns: dir_names(Path::new("/run/netns")),
            links: dir_names(Path::new("/sys/class/net")),
            shoal_pids: procs()
                .into_iter()
                .filter(|p| p.state != 'Z' && is_shoal(&p.argv))
                .map(|p| p.pid)
                .collect(),
        }
    }
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn is_shoal(argv: &[String]) -> bool {
    argv.first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "shoal")
}

/// The inode of a network namespace file (/run/netns/X or /proc/PID/ns/net).
fn ns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

fn sigkill(pid: i32) {
    // SAFETY: kill with a valid signal number; a gone pid only yields ESRCH.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Runs `cmd` for at most `timeout`: `None` when it had to be killed.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Option<Out> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let done = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            sigkill(pid);
            let _ = rx.recv();
            return None;
        }
    };
    let o = done.unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    Some(Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    })
}

/// Runs `ip ARGS`; returns its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `10.98.8.0/24` as (address, prefix length).
fn parse_subnet(s: &str) -> (u32, u32) {
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    let addr: std::net::Ipv4Addr = addr.parse().unwrap_or_else(|e| panic!("subnet {s}: {e}"));
    let len: u32 = len.parse().unwrap_or_else(|e| panic!("subnet {s}: {e}"));
    (u32::from(addr), len.min(32))
}

/// The IPv4 addresses `ip [-n NS] -4 -o addr show` lists.
fn addresses(netns: &[&str]) -> Vec<u32> {
    let out = Command::new("ip")
        .args(netns)
        .args(["-4", "-o", "addr", "show"])
        .stdin(Stdio::null())
        .output();
    parse_inet(&out.map(|o| o.stdout).unwrap_or_default())
}

/// The IPv4 addresses of one host link.
fn link_addresses(link: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", link])
        .stdin(Stdio::null())
        .output();
    parse_inet(&out.map(|o| o.stdout).unwrap_or_default())
}

fn parse_inet(out: &[u8]) -> Vec<u32> {
    let text = String::from_utf8_lossy(out);
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "inet")
        .filter_map(|w| w[1].split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
        .map(u32::from)
        .collect()
}

/// The named namespace of machine `name`.
pub fn netns_of(name: &str) -> String {
    format!("shoal-{name}")
}

/// One row of `docker node ls`.
#[derive(Clone, Debug)]
pub struct Node {
    pub hostname: String,
    pub id: String,
    pub status: String,
    pub availability: String,
    /// `Leader`, `Reachable`, `Unreachable` or empty for a worker.
    pub manager: String,
}

/// How a machine is cut off from the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// `ip -n shoal-NAME link set eth0 down`: the machine loses its link.
    Link,
    /// An nftables table in the machine's namespace dropping all input and output but loopback.
    Firewall,
}

/// How a cut machine was cut, and what to restore.
#[derive(Clone, Debug)]
struct CutState {
    how: Cut,
    /// `ip route` lines of the namespace before a [`Cut::Link`].
    routes: Vec<String>,
}

/// N machines on one bridge and subnet, removed (with everything they made) when dropped.
pub struct Machines {
    storage: tempfile::TempDir,
    docker_config: tempfile::TempDir,
    bridge: String,
    /// (network address, prefix length) of the machines' subnet.
    subnet: (u32, u32),
    names: Vec<String>,
    ips: Vec<String>,
    before: HostState,
    /// Every daemon pid a machine's config.json ever showed.
    daemon_pids: RefCell<BTreeSet<i32>>,
    /// Every namespace of the machines (appeared while they existed, named after a machine or
    /// the bridge, or holding an address of the subnet), with its inode (processes left in a
    /// deleted namespace keep the inode).
    new_netns: RefCell<BTreeMap<String, u64>>,
    cuts: RefCell<BTreeMap<String, CutState>>,
    /// When the machines were made ([`Self::step`] prints the time since).
    started: std::time::Instant,
    /// Held until the machines are gone (fields drop after [`Drop::drop`]).
    _lock: Rc<MachinesLock>,
}

/// The host-wide lock of the machine tests ([`LOCK_PATH`]), released when dropped.
pub struct MachinesLock {
    _file: std::fs::File,
}

impl MachinesLock {
    /// Waits for the lock.
    pub fn take() -> MachinesLock {
        let path = Path::new(LOCK_PATH);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {LOCK_PATH}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("waiting for {LOCK_PATH} (another machine test runs)");
            // SAFETY: as above.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            assert_eq!(
                r,
                0,
                "flock {LOCK_PATH}: {}",
                std::io::Error::last_os_error()
            );
        }
        MachinesLock { _file: f }
    }
}

/// Removes what an earlier, killed run of the same test left: the namespaces of its machine
/// names and its bridge.
fn clean_stale(names: &[String], bridge: &str) {
    for name in names {
        let ns = netns_of(name);
        if Path::new("/run/netns").join(&ns).exists() {
            eprintln!("removing the namespace {ns} an earlier run left");
            if let Some(ino) = ns_inode(&Path::new("/run/netns").join(&ns)) {
                kill_in_netns(&[ino].into_iter().collect());
            }
            let _ = ip(&["netns", "del", &ns]);
        }
    }
    if Path::new("/sys/class/net").join(bridge).exists() {
        eprintln!("removing the link {bridge} an earlier run left");
        let _ = ip(&["link", "del", bridge]);
    }
}

/// SIGKILL every process whose network namespace is one of `inodes`, until none is left
/// (bounded).
fn kill_in_netns(inodes: &BTreeSet<u64>) {
    for _ in 0..20 {
        let pids: Vec<i32> = procs()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| {
                ns_inode(Path::new(&format!("/proc/{}/ns/net", p.pid)))
                    .is_some_and(|i| inodes.contains(&i))
            })
            .map(|p| p.pid)
            .collect();
        if pids.is_empty() {
            return;
        }
        pids.into_iter().for_each(sigkill);
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Machines {
    /// Creates `n` machines `<prefix>-1` .. `<prefix>-n` on `bridge` with `subnet`. `None` (after
    /// printing why) when the machine tests cannot run here.
    pub fn create(prefix: &str, bridge: &str, subnet: &str, n: usize) -> Option<Machines> {
        if let Some(why) = skip_reason() {
            eprintln!(
                "SKIPPED: machine tests need root, ip, nsenter, unshare, nft and docker: {why}"
            );
            return None;
        }
        Some(Self::create_locked(
            Rc::new(MachinesLock::take()),
            prefix,
            bridge,
            subnet,
            n,
        ))
    }

    /// [`Self::create`] under a lock the caller already holds (and may keep after the machines
    /// are gone, e.g. to check the host then). The caller has checked [`skip_reason`].
    pub fn create_locked(
        lock: Rc<MachinesLock>,
        prefix: &str,
        bridge: &str,
        subnet: &str,
        n: usize,
    ) -> Machines {
        let names: Vec<String> = (1..=n).map(|i| format!("{prefix}-{i}")).collect();
        clean_stale(&names, bridge);
        let mut m = Machines {
            storage: tempfile::Builder::new()
                .prefix("shoal-m-")
                .tempdir()
                .expect("tempdir"),
            docker_config: tempfile::tempdir().expect("tempdir"),
            bridge: bridge.to_string(),
            subnet: parse_subnet(subnet),
            names: names.clone(),
            ips: Vec::new(),
            before: HostState::now(),
            daemon_pids: RefCell::new(BTreeSet::new()),
            new_netns: RefCell::new(BTreeMap::new()),
            cuts: RefCell::new(BTreeMap::new()),
            started: std::time::Instant::now(),
            _lock: lock,
        };
        for name in &names {
            let out = m.machine(&[
                "create", "--driver", "netns", "--bridge", bridge, "--subnet", subnet, name,
            ]);
            m.track();
            out.ok();
        }
        for name in &names {
            let ip = m.machine(&["ip", name]).ok().trim().to_string();
            m.ips.push(ip);
        }
        m
    }

    /// Prints a step of the test with the time since the machines were made (a figure to read
    /// in the test's output, never asserted).
    pub fn step(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// The machine names, `<prefix>-1` first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The machine's address (`shoal machine ip`).
    pub fn ip(&self, name: &str) -> &str {
        let i = self.index(name);
        &self.ips[i]
    }

    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no machine {name}"))
    }

    pub fn storage(&self) -> &Path {
        self.storage.path()
    }

    /// The machine's directory in the storage path.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.storage.path().join(name)
    }

    /// The machine's API socket.
    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir(name).join("docker.sock")
    }

    /// `unix://<socket>`, as `shoal machine env` sets DOCKER_HOST.
    pub fn host(&self, name: &str) -> String {
        format!("unix://{}", self.socket(name).display())
    }

    /// The daemon's log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir(name).join("daemon.log")).unwrap_or_default()
    }

    /// The daemon pid the machine's config.json shows.
    pub fn daemon_pid(&self, name: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir(name).join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().and_then(|p| i32::try_from(p).ok())
    }

    /// Records the daemons and namespaces there are now, for cleanup and [`Self::leftovers`].
    fn track(&self) {
        for name in &self.names {
            if let Some(pid) = self.daemon_pid(name) {
                self.daemon_pids.borrow_mut().insert(pid);
            }
        }
        let tasks = self.task_namespaces();
        for ns in dir_names(Path::new("/run/netns")) {
            if self.before.netns.contains(&ns) || self.new_netns.borrow().contains_key(&ns) {
                continue;
            }
            let ours = self.named_after_us(&ns)
                || addresses(&["-n", &ns]).iter().any(|a| self.in_subnet(*a))
                || tasks.contains(&ns);
            if !ours {
                continue;
            }
            if let Some(ino) = ns_inode(&Path::new("/run/netns").join(&ns)) {
                self.new_netns.borrow_mut().insert(ns, ino);
            }
        }
    }

    /// The task namespaces the machines' daemons have now (`shtask-*` with their mark).
    pub fn task_namespaces(&self) -> BTreeSet<String> {
        self.names
            .iter()
            .flat_map(|n| shoal_machine::host::owned_task_namespaces(&netns_of(n)))
            .collect()
    }

    fn shoal_cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        // The daemons inherit the environment: plain logs, without openraft's retry chatter.
        cmd.env("SHOAL_MACHINE_STORAGE_PATH", self.storage.path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,openraft=error")
            .env_remove("DOCKER_HOST")
            .env_remove("SHOAL_HOST");
        cmd
    }

    /// `shoal machine ARGS...` (bounded).
    pub fn machine(&self, args: &[&str]) -> Out {
        let mut cmd = self.shoal_cmd();
        cmd.arg("machine").args(args);
        let out = run(cmd, MACHINE_TIMEOUT);
        self.track();
        out
    }

    /// `shoal machine ssh NAME CMD...`.
    pub fn ssh(&self, name: &str, command: &[&str]) -> Out {
        let mut args = vec!["ssh", name];
        args.extend_from_slice(command);
        self.machine(&args)
    }

    fn docker_cmd(&self, name: &str, args: &[&str]) -> Command {
        let docker = docker_cli().expect("the docker CLI");
        let mut cmd = client_command(&docker, self.docker_config.path());
        cmd.arg("-H").arg(self.host(name)).args(args);
        cmd
    }

    /// `docker -H unix://<socket of NAME> ARGS...`; panics when it runs longer than
    /// [`CLI_TIMEOUT`].
    pub fn docker(&self, name: &str, args: &[&str]) -> Out {
        run(self.docker_cmd(name, args), CLI_TIMEOUT)
    }

    /// [`Self::docker`] bounded by `timeout`: `None` when it had to be killed.
    pub fn try_docker(&self, name: &str, args: &[&str], timeout: Duration) -> Option<Out> {
        run_bounded(self.docker_cmd(name, args), timeout)
    }

    /// One request to the machine's API over its socket.
    pub fn api(&self, name: &str, method: &str, path: &str) -> Result<(u16, String), String> {
        raw_http(&self.socket(name), method, path, None).map_err(|e| format!("{path}: {e}"))
    }

    /// `GET path` as JSON from machine `name`.
    pub fn get_json(&self, name: &str, path: &str) -> Result<serde_json::Value, String> {
        match self.api(name, "GET", path)? {
            (200, body) => serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}")),
            (code, body) => Err(format!("GET {path}: {code} {body}")),
        }
    }

    /// `docker node ls` as seen from machine `on`.
    pub fn node_ls(&self, on: &str) -> Result<Vec<Node>, String> {
        let out = self
            .try_docker(
                on,
                &[
                    "node",
                    "ls",
                    "--format",
                    "{{.Hostname}}|{{.ID}}|{{.Status}}|{{.Availability}}|{{.ManagerStatus}}",
                ],
                CLI_TIMEOUT,
            )
            .ok_or_else(|| format!("node ls on {on} did not answer within {CLI_TIMEOUT:?}"))?;
        if out.code != 0 {
            return Err(format!("node ls on {on} failed: {}", out.stderr));
        }
        Ok(out
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('|').map(str::trim).collect();
                let get = |i: usize| f.get(i).copied().unwrap_or("").to_string();
                Node {
                    hostname: get(0),
                    id: get(1),
                    status: get(2),
                    availability: get(3),
                    manager: get(4),
                }
            })
            .collect())
    }

    /// Waits until `node ls` on `on` satisfies `ok`; returns its rows.
    #[track_caller]
    pub fn wait_nodes(&self, on: &str, what: &str, ok: impl Fn(&[Node]) -> bool) -> Vec<Node> {
        wait_for(&format!("{what} (node ls on {on})"), LONG, || {
            let rows = self.node_ls(on)?;
            if ok(&rows) {
                Ok(rows)
            } else {
                Err(format!("{rows:#?}"))
            }
        })
    }

    /// The hostname (= machine name) of the leader `node ls` on `on` shows.
    pub fn leader(&self, on: &str) -> Option<String> {
        self.node_ls(on)
            .ok()?
            .into_iter()
            .find(|r| r.manager == "Leader")
            .map(|r| r.hostname)
    }

    /// Makes a swarm of all machines: `swarm init --advertise-addr <ip>` on the first, the next
    /// `managers - 1` join as managers and the rest as workers, and a 1 s dispatcher heartbeat
    /// (a lost node is marked down within seconds). Waits until `node ls` shows every machine
    /// Ready, one Leader and the other managers Reachable.
    pub fn swarm(&self, managers: usize) {
        assert!((1..=self.names.len()).contains(&managers));
        let first = &self.names[0];
        let ip0 = self.ip(first).to_string();
        let out = self.docker(first, &["swarm", "init", "--advertise-addr", &ip0]);
        assert!(out.ok().contains("swarm join --token SWMTKN-1-"), "{out:?}");
        assert!(out.stdout.contains(&format!("{ip0}:2377")), "{out:?}");
        self.docker(first, &["swarm", "update", "--dispatcher-heartbeat", "1s"])
            .ok();
        let token = |role: &str| {
            self.docker(first, &["swarm", "join-token", "-q", role])
                .ok()
                .trim()
                .to_string()
        };
        let (manager_token, worker_token) = (token("manager"), token("worker"));
        let remote = format!("{ip0}:2377");
        for (i, name) in self.names.iter().enumerate().skip(1) {
            let (t, role) = if i < managers {
                (&manager_token, "manager")
            } else {
                (&worker_token, "worker")
            };
            let out = self.docker(name, &["swarm", "join", "--token", t, &remote]);
            assert_eq!(
                out.ok().trim(),
                format!("This node joined a swarm as a {role}."),
                "{out:?}"
            );
        }
        let n = self.names.len();
        let rows = self.wait_nodes(first, "every machine ready, one leader", |rows| {
            rows.len() == n
                && rows.iter().all(|r| r.status == "Ready")
                && rows.iter().filter(|r| r.manager == "Leader").count() == 1
                && rows.iter().filter(|r| r.manager == "Reachable").count() == managers - 1
        });
        let mut hostnames: Vec<&str> = rows.iter().map(|r| r.hostname.as_str()).collect();
        hostnames.sort_unstable();
        let mut names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            hostnames, names,
            "each node's hostname is its machine's name"
        );
    }

    /// The tasks of `service` as machine `on`'s API returns them.
    pub fn tasks(&self, on: &str, service: &str) -> Result<Vec<serde_json::Value>, String> {
        let filters = serde_json::json!({ "service": [service] }).to_string();
        let v = self.get_json(on, &format!("/tasks?filters={}", urlencode(&filters)))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Running tasks of `service` that are meant to run, per machine name, from `on`'s API.
    pub fn running_per_node(
        &self,
        on: &str,
        service: &str,
    ) -> Result<BTreeMap<String, usize>, String> {
        let nodes = self.get_json(on, "/nodes")?;
        let host_of: BTreeMap<String, String> = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                Some((
                    n["ID"].as_str()?.to_string(),
                    n["Description"]["Hostname"].as_str()?.to_string(),
                ))
            })
            .collect();
        let mut per = BTreeMap::new();
        for t in self.tasks(on, service)? {
            if t["Status"]["State"] == "running" && t["DesiredState"] == "running" {
                let node = t["NodeID"].as_str().unwrap_or("");
                let host = host_of.get(node).cloned().unwrap_or_else(|| node.into());
                *per.entry(host).or_default() += 1;
            }
        }
        Ok(per)
    }

    /// (desired state, observed state) of each task of `service` on machine `host`, from `on`'s
    /// API.
    pub fn task_states_on(
        &self,
        on: &str,
        service: &str,
        host: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let nodes = self.get_json(on, "/nodes")?;
        let id = nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["Description"]["Hostname"] == host)
            .and_then(|n| n["ID"].as_str())
            .ok_or_else(|| format!("no node {host} in {nodes}"))?
            .to_string();
        Ok(self
            .tasks(on, service)?
            .iter()
            .filter(|t| t["NodeID"] == id.as_str())
            .map(|t| {
                (
                    t["DesiredState"].as_str().unwrap_or("").to_string(),
                    t["Status"]["State"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    /// Waits until `service ls` on `on` shows `replicas` (e.g. `3/3`) for `service`.
    #[track_caller]
    pub fn wait_replicas(&self, on: &str, service: &str, replicas: &str) {
        wait_for(&format!("{service} at {replicas} on {on}"), LONG, || {
            let out = self
                .try_docker(
                    on,
                    &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"],
                    CLI_TIMEOUT,
                )
                .ok_or("service ls did not answer")?;
            let want = format!("{service} {replicas}");
            if out.code == 0 && out.stdout.lines().any(|l| l.trim() == want) {
                Ok(())
            } else {
                Err(format!("{}{}", out.stdout, out.stderr))
            }
        });
    }

    /// The services `service ls` on `on` lists (names), or why it could not.
    pub fn services(&self, on: &str) -> Result<Vec<String>, String> {
        let out = self
            .try_docker(on, &["service", "ls", "--format", "{{.Name}}"], CLI_TIMEOUT)
            .ok_or("service ls did not answer")?;
        if out.code != 0 {
            return Err(out.stderr);
        }
        Ok(out.stdout.lines().map(|l| l.trim().to_string()).collect())
    }

    /// Processes in machine `name`'s network namespace: (pid, argv).
    pub fn processes_in(&self, name: &str) -> Vec<(i32, Vec<String>)> {
        let Some(ino) = ns_inode(&Path::new("/run/netns").join(netns_of(name))) else {
            return Vec::new();
        };
        procs()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| ns_inode(Path::new(&format!("/proc/{}/ns/net", p.pid))) == Some(ino))
            .map(|p| (p.pid, p.argv))
            .collect()
    }

    /// How many processes in machine `name` run exactly `argv`.
    pub fn running_in(&self, name: &str, argv: &[&str]) -> usize {
        self.processes_in(name)
            .iter()
            .filter(|(_, a)| a.iter().map(String::as_str).eq(argv.iter().copied()))
            .count()
    }

    /// Cuts machine `name` off from every other machine (its API socket still answers).
    pub fn cut(&self, name: &str, how: Cut) {
        let ns = netns_of(name);
        assert!(
            !self.cuts.borrow().contains_key(name),
            "{name} is already cut off"
        );
        let mut routes = Vec::new();
        match how {
            Cut::Link => {
                let out = Command::new("ip")
                    .args(["-n", &ns, "route", "show"])
                    .output()
                    .expect("ip route show");
                routes = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.contains("proto kernel"))
                    .map(str::to_string)
                    .collect();
                ip(&["-n", &ns, "link", "set", "eth0", "down"]).unwrap_or_else(|e| panic!("{e}"));
            }
            Cut::Firewall => {
                let rules = format!(
                    "table inet {PARTITION_TABLE} {{\n\
                     \tchain input {{\n\t\ttype filter hook input priority -400; policy drop;\n\t\tiif \"lo\" accept\n\t}}\n\
                     \tchain output {{\n\t\ttype filter hook output priority -400; policy drop;\n\t\toif \"lo\" accept\n\t}}\n\
                     }}\n"
                );
                let mut child = Command::new("ip")
                    .args(["netns", "exec", &ns, "nft", "-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawning nft");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(rules.as_bytes())
                    .expect("writing the ruleset");
                let out = child.wait_with_output().expect("nft");
                assert!(
                    out.status.success(),
                    "nft -f: {}\n{rules}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        self.cuts
            .borrow_mut()
            .insert(name.to_string(), CutState { how, routes });
    }

    /// Undoes [`Self::cut`].
    pub fn heal(&self, name: &str) {
        let ns = netns_of(name);
        let state = self
            .cuts
            .borrow_mut()
            .remove(name)
            .unwrap_or_else(|| panic!("{name} is not cut off"));
        match state.how {
            Cut::Link => {
                ip(&["-n", &ns, "link", "set", "eth0", "up"]).unwrap_or_else(|e| panic!("{e}"));
                // The routes through the link went with it.
                for route in &state.routes {
                    let mut args = vec!["-n", ns.as_str(), "route", "replace"];
                    args.extend(route.split_whitespace());
                    wait_for(&format!("route {route} back in {ns}"), LONG, || ip(&args));
                }
            }
            Cut::Firewall => {
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns, "nft", "delete", "table", "inet"])
                    .arg(PARTITION_TABLE)
                    .output()
                    .expect("nft");
                assert!(
                    out.status.success(),
                    "nft delete table: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// SIGKILL of the machine's daemon (its tasks keep running); returns its pid once gone.
    pub fn kill_daemon(&self, name: &str) -> i32 {
        let pid = self
            .daemon_pid(name)
            .unwrap_or_else(|| panic!("no daemon pid in {name}'s config.json"));
        assert!(alive(pid), "the daemon of {name} ({pid}) is not running");
        sigkill(pid);
        wait_for(&format!("the daemon of {name} gone"), LONG, || {
            if alive(pid) {
                Err(format!("{pid} alive"))
            } else {
                Ok(())
            }
        });
        pid
    }

    /// Restarts only the daemon of `name` (SIGKILL, then the same command line again in the
    /// machine's namespace), as a crash and a service manager's restart would: unlike
    /// `machine stop`/`start`, the machine's tasks and kernel state stay. The machine's record
    /// gets the new pid. Waits until the daemon answers.
    pub fn restart_daemon(&self, name: &str) {
        let pid = self
            .daemon_pid(name)
            .unwrap_or_else(|| panic!("no daemon pid in {name}'s config.json"));
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .expect("the daemon's command line")
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        self.kill_daemon(name);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir(name).join("daemon.log"))
            .expect("daemon log");
        let mut cmd = Command::new("nsenter");
        // As `shoal machine start` does: its namespace, and a UTS namespace named after it.
        cmd.arg(format!("--net=/run/netns/{}", netns_of(name)))
            .args([
                "--",
                "unshare",
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$@\"",
            ])
            .arg(name)
            .args(&argv)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,openraft=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let new = cmd.spawn().expect("restarting the daemon").id();
        let config = self.dir(name).join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).expect("config.json"))
                .expect("config.json");
        v["pid"] = serde_json::json!(new);
        std::fs::write(&config, v.to_string()).expect("config.json");
        self.track();
        wait_for(&format!("the restarted daemon of {name}"), LONG, || {
            self.api(name, "GET", "/_ping").map(|_| ())
        });
    }

    /// `shoal machine stop NAME`, asserting success.
    pub fn stop(&self, name: &str) {
        self.machine(&["stop", name]).ok();
    }

    /// `shoal machine start NAME`, asserting success.
    pub fn start(&self, name: &str) {
        self.machine(&["start", name]).ok();
    }

    /// `shoal machine rm NAME` of every machine still there, asserting success.
    pub fn rm_all(&self) {
        for name in &self.names {
            if self.dir(name).exists() {
                self.machine(&["rm", "-y", name]).ok();
            }
        }
    }

    /// What is on the host now that was not before the machines and is theirs: namespaces,
    /// links, live daemons and processes in their namespaces, machine directories, mounts
    /// under the storage directory. Empty once everything is removed.
    pub fn leftovers(&self) -> Vec<String> {
        self.track();
        let now = HostState::now();
        let mut left = Vec::new();
        for ns in now.netns.difference(&self.before.netns) {
            if self.netns_is_ours(ns) {
                left.push(format!("netns {ns}"));
            } else {
                eprintln!("note: namespace {ns} appeared meanwhile, not made by these machines");
            }
        }
        for link in now.links.difference(&self.before.links) {
            if self.link_is_ours(link) {
                left.push(format!("link {link}"));
            } else {
                eprintln!("note: link {link} appeared meanwhile, not made by these machines");
            }
        }
        for (pid, argv) in self.our_processes() {
            left.push(format!("process {pid} {argv:?}"));
        }
        for e in std::fs::read_dir(self.storage.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_dir() {
                left.push(format!("directory {}", e.path().display()));
            }
        }
        for mount in self.mounts() {
            left.push(format!("mount {mount}"));
        }
        left
    }

    /// Live processes of the machines: their daemons, anything in their namespaces, anything
    /// naming the storage directory.
    fn our_processes(&self) -> Vec<(i32, Vec<String>)> {
        let inodes: BTreeSet<u64> = self.new_netns.borrow().values().copied().collect();
        let daemons = self.daemon_pids.borrow();
        let storage = self.storage.path().to_string_lossy().into_owned();
        procs()
            .into_iter()
            .filter(|p| p.state != 'Z' && p.pid != std::process::id() as i32)
            .filter(|p| {
                let new_shoal = !self.before.shoal_pids.contains(&p.pid) && is_shoal(&p.argv);
                (daemons.contains(&p.pid) && new_shoal)
                    || p.argv.iter().any(|a| a.contains(&storage))
                    || ns_inode(Path::new(&format!("/proc/{}/ns/net", p.pid)))
                        .is_some_and(|i| inodes.contains(&i))
            })
            .map(|p| (p.pid, p.argv))
            .collect()
    }

    /// Mount points under the storage directory, deepest first.
    fn mounts(&self) -> Vec<String> {
        let storage = self.storage.path().to_string_lossy().into_owned();
        let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&storage))
            .collect();
        v.sort_by_key(|m| std::cmp::Reverse(m.len()));
        v
    }

    /// Whether a namespace that appeared since the machines were made is theirs (other tests
    /// may make namespaces meanwhile): see [`Self::track`].
    fn netns_is_ours(&self, ns: &str) -> bool {
        self.new_netns.borrow().contains_key(ns)
    }

    /// Whether a host link that appeared since the machines were made is theirs: named after a
    /// machine or the bridge, or holding an address of their subnet.
    fn link_is_ours(&self, link: &str) -> bool {
        self.named_after_us(link) || link_addresses(link).iter().any(|a| self.in_subnet(*a))
    }

    fn named_after_us(&self, what: &str) -> bool {
        what.contains(&self.bridge) || self.names.iter().any(|n| what.contains(n.as_str()))
    }

    fn in_subnet(&self, a: u32) -> bool {
        let (net, len) = self.subnet;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        a & mask == net & mask
    }

    /// Removes everything the machines made, whatever state they are in.
    fn cleanup(&self) {
        for name in &self.names {
            if self.dir(name).exists() {
                let mut cmd = self.shoal_cmd();
                cmd.args(["machine", "rm", "-f", name]);
                if let Some(out) = run_bounded(cmd, MACHINE_TIMEOUT) {
                    if out.code != 0 {
                        eprintln!("machine rm -f {name}: {}{}", out.stdout, out.stderr);
                    }
                }
            }
        }
        self.track();
        for _ in 0..20 {
            let left = self.our_processes();
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                sigkill(pid);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for mount in self.mounts() {
            let _ = Command::new("umount").args(["-l", &mount]).status();
        }
        let now = HostState::now();
        for ns in now.netns.difference(&self.before.netns) {
            if self.netns_is_ours(ns) {
                let _ = ip(&["netns", "del", ns]);
            }
        }
        // Links whose peer went with a namespace are gone already.
        for link in HostState::now().links.difference(&self.before.links) {
            if self.link_is_ours(link) {
                let _ = ip(&["link", "del", link]);
            }
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists()
            && !self.before.links.contains(&self.bridge)
        {
            let _ = ip(&["link", "del", &self.bridge]);
        }
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in &self.names {
                let log = self.log(name);
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "---- daemon log of machine {name} (last 60 lines) ----\n{}",
                    lines[lines.len().saturating_sub(60)..].join("\n")
                );
            }
        }
        self.cleanup();
        let left = self.leftovers();
        if !left.is_empty() {
            eprintln!("the machines left behind, even after cleanup: {left:?}");
        }
    }
}
