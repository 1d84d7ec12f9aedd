//! End to end, as root: `examples/getstarted/getstarted.sh` (Docker's get-started part 4 with
//! Shoal machines: the guide's `docker-compose.yml` deployed as the stack `getstartedlab`,
//! scaled from 5 to 6 replicas by deploying the edited file again, to 7 by deploying it with
//! `docker stack deploy` (with `shoal` when the docker CLI is absent), a drained node, a stopped
//! machine, `stack rm`) runs on an isolated storage path, bridge and subnet, and what each step
//! printed is checked against what Docker prints at that point of the guide. Afterwards nothing
//! of the run may be left on the host: no namespace, no link, no process, no file. A guard
//! removes whatever is left, also when the test fails.
//!
//! ```text
//!  test ── timeout ── bash getstarted.sh ── shoal machine create/ssh/scp/stop/start/rm,
//!                                            shoal stack/node/service ..., docker node/stack ...
//!    └─ watcher thread (while the script runs): namespaces and bridge ports of the run, their
//!       namespace inodes, machine daemon pids  ──> leftovers check and Drop cleanup
//! ```

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{run, Out};

const BRIDGE: &str = "shoal-e2e-br10";
const SUBNET: &str = "10.98.10.0/24";
const VM1: &str = "e2e10-myvm1";
const VM2: &str = "e2e10-myvm2";
const STACK: &str = "getstartedlab";
/// What `docker stack deploy` prints first when `--detach` is not given.
const DETACH_NOTICE: [&str; 2] = [
    "Since --detach=false was not specified, tasks will be created in the background.",
    "In a future release, --detach=false will become the default.",
];
/// Bound of the whole script (it takes well under a minute when all goes well); `timeout`
/// sends SIGTERM to the script's process group so its EXIT trap removes the machines.
const SCRIPT_TIMEOUT_SECS: u64 = 240;

/// Whether a namespace or link name belongs to this test's run: the machines' (named after
/// them) and the bridge's (named after it, possibly with a prefix).
fn ours(name: &str) -> bool {
    name.contains("e2e10-") || name.ends_with(BRIDGE)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/getstarted/getstarted.sh")
}

fn names_in(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the run made, as seen while it ran.
#[derive(Default, Debug)]
struct Seen {
    /// Inodes of the run's network namespaces.
    netns_inodes: BTreeSet<u64>,
    /// Host links attached to the run's bridge.
    ports: BTreeSet<String>,
    /// Pids of the machines' daemons.
    pids: BTreeSet<u32>,
}

impl Seen {
    fn look(&mut self, storage: &Path) {
        for ns in names_in("/run/netns").into_iter().filter(|n| ours(n)) {
            if let Ok(md) = std::fs::metadata(Path::new("/run/netns").join(&ns)) {
                self.netns_inodes.insert(md.ino());
            }
        }
        self.ports
            .extend(names_in(&format!("/sys/class/net/{BRIDGE}/brif")));
        for vm in [VM1, VM2] {
            let text =
                std::fs::read_to_string(storage.join(vm).join("config.json")).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(pid) = v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                self.pids.insert(pid);
            }
        }
    }
}

/// The run's storage, what it was seen to make, and the cleanup of both.
struct Run {
    storage: tempfile::TempDir,
    /// The script's TMPDIR, so that even a killed script leaves no temporary file.
    tmp: tempfile::TempDir,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Run {
    fn start() -> Run {
        let storage = tempfile::Builder::new()
            .prefix("shoal-gs-")
            .tempdir()
            .expect("tempdir");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (seen, stop, path) = (seen.clone(), stop.clone(), storage.path().to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = seen.lock() {
                        s.look(&path);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Run {
            storage,
            tmp: tempfile::Builder::new()
                .prefix("shoal-gs-tmp-")
                .tempdir()
                .expect("tempdir"),
            seen,
            stop,
            watcher: Some(watcher),
        }
    }

    fn stop_watching(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }

    /// Processes of the run still alive: in one of its network namespaces, or naming its
    /// storage (daemons, shims). A namespace inode now used by a namespace of someone else was
    /// freed and reused, so it does not count.
    fn processes(&self) -> Vec<(u32, String)> {
        let mut inodes = self
            .seen
            .lock()
            .map(|s| s.netns_inodes.clone())
            .unwrap_or_default();
        for ns in names_in("/run/netns").into_iter().filter(|n| !ours(n)) {
            if let Ok(md) = std::fs::metadata(Path::new("/run/netns").join(&ns)) {
                inodes.remove(&md.ino());
            }
        }
        let storage = self.storage.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in names_in("/proc") {
            let Ok(pid) = entry.parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() || !alive(pid) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let in_our_netns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .and_then(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("net:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|ino| inodes.contains(&ino));
            if in_our_netns || cmdline.contains(&storage) {
                found.push((pid, cmdline.trim().to_string()));
            }
        }
        found
    }

    /// Namespaces and links of the run still on the host (`before`: the host's before the run).
    fn links_and_namespaces(&self, before: &(BTreeSet<String>, BTreeSet<String>)) -> Vec<String> {
        let ports = self
            .seen
            .lock()
            .map(|s| s.ports.clone())
            .unwrap_or_default();
        let (netns, links) = host_names();
        let mut left = Vec::new();
        for ns in netns.difference(&before.0) {
            if ours(ns) {
                left.push(format!("netns {ns}"));
            } else {
                eprintln!("note: netns {ns} appeared during the run (not this test's name)");
            }
        }
        for link in links.difference(&before.1) {
            if ours(link) || ports.contains(link) {
                left.push(format!("link {link}"));
            } else {
                eprintln!("note: link {link} appeared during the run (not this test's)");
            }
        }
        left
    }
}

fn host_names() -> (BTreeSet<String>, BTreeSet<String>) {
    (names_in("/run/netns"), names_in("/sys/class/net"))
}

fn alive(pid: u32) -> bool {
    // A zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

/// Runs a cleanup command, bounded, ignoring how it ends.
fn quietly(program: &str, args: &[&str], storage: &Path) {
    let _ = Command::new("timeout")
        .args(["-k", "5", "60", program])
        .args(args)
        .env("SHOAL_MACHINE_STORAGE_PATH", storage)
        .env_remove("DOCKER_HOST")
        .env_remove("SHOAL_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop_watching();
        let storage = self.storage.path().to_path_buf();
        for vm in [VM1, VM2] {
            if storage.join(vm).exists() {
                quietly(
                    env!("CARGO_BIN_EXE_shoal"),
                    &["machine", "rm", "-f", vm],
                    &storage,
                );
            }
        }
        for (pid, _) in self.processes() {
            if let Ok(p) = libc::pid_t::try_from(pid) {
                // SAFETY: kill with a valid signal number.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        for ns in names_in("/run/netns").into_iter().filter(|n| ours(n)) {
            quietly("ip", &["netns", "del", &ns], &storage);
        }
        let ports = self
            .seen
            .lock()
            .map(|s| s.ports.clone())
            .unwrap_or_default();
        for link in names_in("/sys/class/net")
            .into_iter()
            .filter(|l| ours(l) || ports.contains(l))
        {
            quietly("ip", &["link", "del", &link], &storage);
        }
    }
}

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    for tool in ["ip", "unshare", "nsenter", "timeout"] {
        let found = Command::new(tool)
            .arg(if tool == "timeout" { "--version" } else { "-V" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some("`ip`, `unshare`, `nsenter` or `timeout` missing");
        }
    }
    None
}

/// One printed step: the command after `$ ` and the lines it printed (comments between steps
/// included, trailing spaces trimmed).
#[derive(Debug)]
struct Step {
    cmd: String,
    lines: Vec<String>,
}

impl Step {
    fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// What the command printed: its non-empty lines, without the script's `# ` notes.
    fn said(&self) -> Vec<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .filter(|l| !l.is_empty() && !l.starts_with("# "))
            .collect()
    }

    /// The first table in the output (the block of lines starting with a line that starts
    /// with `first_title`), as rows of cells cut at the header's column starts.
    fn table(&self, first_title: &str) -> Vec<Vec<String>> {
        let Some(start) = self.lines.iter().position(|l| l.starts_with(first_title)) else {
            panic!("no table in the output of `{}`:\n{}", self.cmd, self.text());
        };
        let header = &self.lines[start];
        // Titles are separated by at least two spaces ("DESIRED STATE" is one title).
        let mut starts = vec![0];
        let bytes = header.as_bytes();
        for i in 2..bytes.len() {
            if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
                starts.push(i);
            }
        }
        self.lines[start..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .map(|l| {
                (0..starts.len())
                    .map(|c| {
                        let from = starts[c].min(l.len());
                        let to = starts.get(c + 1).copied().unwrap_or(l.len()).min(l.len());
                        l.get(from..to).unwrap_or("").trim().to_string()
                    })
                    .collect()
            })
            .collect()
    }

    /// Rows of the table as maps from title to cell.
    fn rows(&self, first_title: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        let table = self.table(first_title);
        let (header, rows) = table.split_first().expect("header");
        rows.iter()
            .map(|r| header.iter().cloned().zip(r.iter().cloned()).collect())
            .collect()
    }
}

fn steps(transcript: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for line in transcript.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Step {
                cmd: cmd.trim().to_string(),
                lines: Vec::new(),
            });
        } else if let Some(s) = out.last_mut() {
            s.lines.push(line.trim_end().to_string());
        }
    }
    out
}

/// Walks the steps in order.
struct Steps {
    all: Vec<Step>,
    next: std::cell::Cell<usize>,
}

impl Steps {
    /// The next step whose command is `cmd`.
    #[track_caller]
    fn expect(&self, cmd: &str) -> &Step {
        self.find(cmd, |s| s.cmd == cmd)
    }

    /// The next step whose command starts with `prefix`.
    #[track_caller]
    fn expect_prefix(&self, prefix: &str) -> &Step {
        self.find(prefix, |s| s.cmd.starts_with(prefix))
    }

    #[track_caller]
    fn find(&self, what: &str, f: impl Fn(&Step) -> bool) -> &Step {
        let from = self.next.get();
        let Some(i) = self.all[from..].iter().position(f) else {
            let rest: Vec<&str> = self.all[from..].iter().map(|s| s.cmd.as_str()).collect();
            panic!("no step `{what}` among the remaining ones: {rest:#?}");
        };
        self.next.set(from + i + 1);
        &self.all[from + i]
    }
}

fn row_of<'a>(
    rows: &'a [std::collections::BTreeMap<String, String>],
    key: &str,
    value: &str,
) -> &'a std::collections::BTreeMap<String, String> {
    rows.iter()
        .find(|r| r.get(key).map(String::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no row with {key} = {value} in {rows:#?}"))
}

/// Nodes of the running tasks of a `service ps` table, all checked to be running.
#[track_caller]
fn running_nodes(step: &Step) -> Vec<String> {
    let rows = step.rows("ID");
    let running: Vec<_> = rows
        .iter()
        .filter(|r| r["DESIRED STATE"] == "Running")
        .collect();
    for r in &running {
        assert!(
            r["CURRENT STATE"].starts_with("Running"),
            "task not running in `{}`:\n{}",
            step.cmd,
            step.text()
        );
    }
    running.iter().map(|r| r["NODE"].clone()).collect()
}

/// The IDs (12 characters, as `stack ps` shows them: the tasks' hostnames) of the running
/// tasks of a `stack ps` table.
fn running_ids(step: &Step) -> BTreeSet<String> {
    step.rows("ID")
        .into_iter()
        .filter(|r| r["DESIRED STATE"] == "Running" && r["CURRENT STATE"].starts_with("Running"))
        .map(|r| r["ID"].clone())
        .collect()
}

/// The step the script prints for 20 requests to `ip`'s port 4000.
fn mesh_loop(ip: &str) -> String {
    format!("for i in $(seq 20); do curl -s http://{ip}:4000/hostname; done | sort | uniq -c")
}

/// `uniq -c` output: hostname -> count.
fn hostname_counts(step: &Step) -> std::collections::BTreeMap<String, u32> {
    step.said()
        .iter()
        .map(|l| {
            let w = words(l);
            assert_eq!(w.len(), 2, "`{}` printed {l:?}:\n{}", step.cmd, step.text());
            (w[1].to_string(), w[0].parse().expect("a count"))
        })
        .collect()
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Checks the one row of `stack services` (the compose file's `web` service with `replicas`
/// running) and returns its (truncated) ID.
#[track_caller]
fn assert_web_service(step: &Step, replicas: &str) -> String {
    let rows = step.rows("ID");
    assert_eq!(rows.len(), 1, "{}", step.text());
    let r = &rows[0];
    assert_eq!(
        (
            r["NAME"].as_str(),
            r["MODE"].as_str(),
            r["REPLICAS"].as_str(),
            r["IMAGE"].as_str(),
            r["PORTS"].as_str()
        ),
        (
            "getstartedlab_web",
            "replicated",
            replicas,
            "shoal/friendlyhello:latest",
            "*:4000->80/tcp"
        ),
        "`{}`:\n{}",
        step.cmd,
        step.text()
    );
    assert_eq!(r["ID"].len(), 12, "{}", step.text());
    r["ID"].clone()
}

/// Checks that the running tasks of a `stack ps` table are the slots 1..=n of the stack's
/// `web` service, one task each.
#[track_caller]
fn assert_slots(step: &Step, n: usize) {
    let mut names: Vec<String> = step
        .rows("ID")
        .into_iter()
        .filter(|r| r["DESIRED STATE"] == "Running")
        .map(|r| r["NAME"].clone())
        .collect();
    names.sort();
    let mut want: Vec<String> = (1..=n).map(|i| format!("getstartedlab_web.{i}")).collect();
    want.sort();
    assert_eq!(names, want, "`{}`:\n{}", step.cmd, step.text());
}

#[track_caller]
fn assert_node(step: &Step, host: &str, status: &str, availability: &str, manager: &str) {
    let rows = step.rows("ID");
    let r = row_of(&rows, "HOSTNAME", host);
    assert_eq!(
        (
            r["STATUS"].as_str(),
            r["AVAILABILITY"].as_str(),
            r["MANAGER STATUS"].as_str()
        ),
        (status, availability, manager),
        "`{}`:\n{}",
        step.cmd,
        step.text()
    );
}

/// Checks what a `stack deploy` of the edited file printed (docker's lines, from either CLI):
/// the notice about `--detach`, then only the update of the stack's existing service.
#[track_caller]
fn assert_updated(deploy: &Step, web_id: &str) {
    let said = deploy.said();
    assert_eq!(said.len(), 3, "`{}`:\n{}", deploy.cmd, deploy.text());
    assert_eq!(
        said[..2],
        DETACH_NOTICE,
        "`{}`:\n{}",
        deploy.cmd,
        deploy.text()
    );
    let id = said[2]
        .strip_prefix("Updating service getstartedlab_web (id: ")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`{}`:\n{}", deploy.cmd, deploy.text()));
    assert_eq!(id.len(), 25, "{}", deploy.text());
    assert!(id.starts_with(web_id), "{id} is not {web_id}");
}

#[track_caller]
fn assert_says(step: &Step, text: &str) {
    assert!(
        step.lines.iter().any(|l| l == text),
        "`{}` should print {text:?}:\n{}",
        step.cmd,
        step.text()
    );
}

#[test]
fn e2e_getstarted_guide_scenario() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping e2e_getstarted: {why}");
        return;
    }
    // One machine test at a time on a host (they share /run/netns and the CPUs).
    let _lock = common::machines::MachinesLock::take();
    let before = host_names();
    let mut r = Run::start();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "30", &SCRIPT_TIMEOUT_SECS.to_string(), "bash"])
        .arg(script())
        .env("SHOAL", env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_MACHINE_STORAGE_PATH", r.storage.path())
        .env("GETSTARTED_VM1", VM1)
        .env("GETSTARTED_VM2", VM2)
        .env("GETSTARTED_BRIDGE", BRIDGE)
        .env("GETSTARTED_SUBNET", SUBNET)
        .env("GETSTARTED_WAIT", "90")
        .env("TMPDIR", r.tmp.path())
        .env_remove("DOCKER_HOST")
        .env_remove("SHOAL_HOST")
        .env_remove("DOCKER_MACHINE_NAME");
    let out: Out = run(cmd, Duration::from_secs(SCRIPT_TIMEOUT_SECS + 45));
    r.stop_watching();
    let transcript = out.ok().to_string();
    println!("{transcript}");
    let s = Steps {
        all: steps(&transcript),
        next: std::cell::Cell::new(0),
    };

    // Create two machines, list them.
    let flags = format!("--bridge {BRIDGE} --subnet {SUBNET}");
    for vm in [VM1, VM2] {
        let create = s.expect(&format!("shoal machine create --driver netns {flags} {vm}"));
        assert!(
            create
                .lines
                .iter()
                .any(|l| l.starts_with(&format!("Creating machine {vm}"))),
            "{}",
            create.text()
        );
    }
    let ls = s.expect("shoal machine ls");
    assert_eq!(
        ls.lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS"]
    );
    let rows = ls.rows("NAME");
    for vm in [VM1, VM2] {
        let row = row_of(&rows, "NAME", vm);
        assert_eq!(
            (row["ACTIVE"].as_str(), row["STATE"].as_str()),
            ("-", "Running")
        );
        assert!(!row["URL"].is_empty(), "{}", ls.text());
    }
    let ip = s.expect(&format!("shoal machine ip {VM1}"));
    assert_eq!(ip.lines[0], "10.98.10.2", "{}", ip.text());
    let ip = s.expect(&format!("shoal machine ip {VM2}"));
    assert_eq!(ip.lines[0], "10.98.10.3", "{}", ip.text());

    // swarm init on myvm1: docker's text and a join command at myvm1's ip:2377.
    let init = s.expect(&format!(
        "shoal machine ssh {VM1} \"shoal swarm init --advertise-addr 10.98.10.2\""
    ));
    let first = &init.lines[0];
    let id = first
        .strip_prefix("Swarm initialized: current node (")
        .and_then(|r| r.strip_suffix(") is now a manager."))
        .unwrap_or_else(|| panic!("swarm init said:\n{}", init.text()));
    assert_eq!(id.len(), 25, "node id {id:?}");
    assert_says(
        init,
        "To add a worker to this swarm, run the following command:",
    );
    let join = init
        .lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("docker swarm join --token "))
        .unwrap_or_else(|| panic!("no join command:\n{}", init.text()));
    let (token, addr) = join.split_once(' ').expect("token and address");
    assert!(token.starts_with("SWMTKN-1-"), "{token}");
    assert_eq!(addr, "10.98.10.2:2377");
    assert_says(init, "To add a manager to this swarm, run 'docker swarm join-token manager' and follow the instructions.");

    // join myvm2 with that command.
    let joined = s.expect(&format!(
        "shoal machine ssh {VM2} \"shoal swarm join --token {token} 10.98.10.2:2377\""
    ));
    assert_says(joined, "This node joined a swarm as a worker.");

    let nodes = s.expect(&format!("shoal machine ssh {VM1} \"shoal node ls\""));
    assert_node(nodes, VM1, "Ready", "Active", "Leader");
    assert_node(nodes, VM2, "Ready", "Active", "");
    let rows = nodes.rows("ID");
    assert!(row_of(&rows, "HOSTNAME", VM1)["ID"].ends_with(" *"));
    assert!(row_of(&rows, "HOSTNAME", VM1)["ID"].starts_with(id));

    // machine env, then ls marks myvm1 active.
    let env = s.expect(&format!("shoal machine env {VM1}"));
    assert!(
        env.lines
            .iter()
            .any(|l| l.starts_with("export DOCKER_HOST=\"")),
        "{}",
        env.text()
    );
    assert_says(env, &format!("export DOCKER_MACHINE_NAME=\"{VM1}\""));
    assert_says(env, &format!("# eval $(shoal machine env {VM1})"));
    s.expect(&format!("eval $(shoal machine env {VM1})"));
    let ls = s.expect("shoal machine ls");
    let rows = ls.rows("NAME");
    assert_eq!(row_of(&rows, "NAME", VM1)["ACTIVE"], "*");
    assert_eq!(row_of(&rows, "NAME", VM2)["ACTIVE"], "-");

    // The guide's compose file, copied to myvm1 and deployed there as a stack: docker's lines.
    let scp = s.expect(&format!("shoal machine scp docker-compose.yml {VM1}:~"));
    assert!(scp.text().trim().is_empty(), "{}", scp.text());
    let deploy = s.expect(&format!(
        "shoal machine ssh {VM1} \"shoal stack deploy -c docker-compose.yml {STACK}\""
    ));
    assert_eq!(
        deploy.said(),
        [
            DETACH_NOTICE[0],
            DETACH_NOTICE[1],
            "Creating network getstartedlab_webnet",
            "Creating service getstartedlab_web",
        ],
        "{}",
        deploy.text()
    );
    let ls = s.expect("shoal stack ls");
    assert_eq!(ls.said().len(), 2, "{}", ls.text());
    assert_eq!(words(ls.said()[0]), ["NAME", "SERVICES"], "{}", ls.text());
    assert_eq!(words(ls.said()[1]), [STACK, "1"], "{}", ls.text());
    let services = s.expect(&format!("shoal stack services {STACK}"));
    let web_id = assert_web_service(services, "5/5");
    let ps = s.expect(&format!("shoal stack ps {STACK}"));
    let on = running_nodes(ps);
    assert_eq!(on.len(), 5, "{}", ps.text());
    assert!(
        on.iter().any(|n| n == VM1) && on.iter().any(|n| n == VM2),
        "{on:?}"
    );
    assert_slots(ps, 5);

    // The routing mesh: the page on myvm1's port 4000, then 20 requests to each machine are
    // answered by all 5 tasks (the hostname is the task's ID, as `stack ps` shows it).
    let five = running_ids(ps);
    assert_eq!(five.len(), 5, "{}", ps.text());
    let page = s.expect("curl -s http://10.98.10.2:4000/");
    let text = page.text();
    assert!(
        text.contains("<h3>Hello world!</h3><b>Hostname:</b> ")
            && text.contains("<b>Visits:</b> <i>cannot connect to Redis, counter disabled</i>")
            && five.iter().any(|h| text.contains(h.as_str())),
        "{text}"
    );
    for ip in ["10.98.10.2", "10.98.10.3"] {
        let counts = hostname_counts(s.expect(&mesh_loop(ip)));
        assert_eq!(counts.values().sum::<u32>(), 20, "{ip}: {counts:?}");
        assert_eq!(
            counts.keys().cloned().collect::<BTreeSet<_>>(),
            five,
            "{ip} balanced over every task: {counts:?}"
        );
    }

    // Replicas edited to 6 in the file, deployed again from the host: the service is updated
    // in place (same id, the network is not created again) and runs 6 tasks.
    s.expect("sed -i 's/replicas: 5/replicas: 6/' docker-compose.yml");
    let deploy = s.expect(&format!("shoal stack deploy -c docker-compose.yml {STACK}"));
    assert_updated(deploy, &web_id);
    assert_eq!(
        assert_web_service(s.expect(&format!("shoal stack services {STACK}")), "6/6"),
        web_id
    );
    // Edited to 7 and deployed again, by the docker CLI when it is installed (by shoal
    // otherwise): docker prints the same lines and the same service scales to 7.
    s.expect("sed -i 's/replicas: 6/replicas: 7/' docker-compose.yml");
    let cli = if common::docker_cli().is_some() {
        "docker"
    } else {
        "shoal"
    };
    let deploy = s.expect(&format!("{cli} stack deploy -c docker-compose.yml {STACK}"));
    assert_updated(deploy, &web_id);
    assert_eq!(
        assert_web_service(s.expect(&format!("{cli} stack services {STACK}")), "7/7"),
        web_id
    );
    if cli == "docker" {
        let docker = s.expect("docker node ls");
        assert_node(docker, VM1, "Ready", "Active", "Leader");
        assert_node(docker, VM2, "Ready", "Active", "");
        let ps = s.expect(&format!("docker stack ps {STACK}"));
        let on = running_nodes(ps);
        assert_eq!(on.len(), 7, "{}", ps.text());
        assert!(
            on.iter().any(|n| n == VM1) && on.iter().any(|n| n == VM2),
            "{}",
            ps.text()
        );
        assert_slots(ps, 7);
        // Scaling replaced no task: only running ones are listed.
        assert_eq!(ps.rows("ID").len(), 7, "{}", ps.text());
    }

    // Drain myvm2: every task runs on myvm1, the old ones on myvm2 are shut down.
    let drain = s.expect(&format!("shoal node update --availability drain {VM2}"));
    assert_eq!(drain.lines[0], VM2);
    assert_node(s.expect("shoal node ls"), VM2, "Ready", "Drain", "");
    let ps = s.expect(&format!("shoal stack ps {STACK}"));
    assert_eq!(running_nodes(ps), vec![VM1; 7], "{}", ps.text());
    assert_slots(ps, 7);
    let rows = ps.rows("ID");
    let shut: Vec<_> = rows.iter().filter(|r| r["NODE"] == VM2).collect();
    assert!(!shut.is_empty(), "{}", ps.text());
    assert!(
        shut.iter()
            .all(|r| r["DESIRED STATE"] == "Shutdown"
                && r["NAME"].starts_with("\\_ getstartedlab_web.")),
        "{}",
        ps.text()
    );
    // Both addresses still answer, from the tasks on myvm1.
    let on_vm1 = running_ids(ps);
    for ip in ["10.98.10.2", "10.98.10.3"] {
        let counts = hostname_counts(s.expect(&mesh_loop(ip)));
        assert_eq!(counts.values().sum::<u32>(), 20, "{ip}: {counts:?}");
        assert!(
            counts.keys().all(|h| on_vm1.contains(h)) && counts.len() > 1,
            "{ip} answered by {counts:?}, the tasks on {VM1} are {on_vm1:?}"
        );
    }

    // Active again, tasks spread again by a forced update of the stack's service.
    s.expect(&format!("shoal node update --availability active {VM2}"));
    assert_node(s.expect("shoal node ls"), VM2, "Ready", "Active", "");
    let update = s.expect("shoal service update --force getstartedlab_web");
    assert_says(update, "verify: Service getstartedlab_web converged");
    let ps = s.expect(&format!("shoal stack ps -f desired-state=running {STACK}"));
    let on = running_nodes(ps);
    assert_eq!(on.len(), 7, "{}", ps.text());
    assert!(on.iter().any(|n| n == VM2), "{}", ps.text());

    // Stop myvm2: Stopped, Down, all 7 replicas on myvm1.
    assert_says(
        s.expect(&format!("shoal machine stop {VM2}")),
        &format!("Machine \"{VM2}\" was stopped."),
    );
    let ls = s.expect("shoal machine ls");
    let rows = ls.rows("NAME");
    assert_eq!(row_of(&rows, "NAME", VM2)["STATE"], "Stopped");
    assert_eq!(row_of(&rows, "NAME", VM1)["STATE"], "Running");
    let nodes = s.expect("shoal node ls");
    assert_node(nodes, VM2, "Down", "Active", "");
    assert_node(nodes, VM1, "Ready", "Active", "Leader");
    let ps = s.expect(&format!("shoal stack ps -f desired-state=running {STACK}"));
    assert_eq!(running_nodes(ps), vec![VM1; 7], "{}", ps.text());
    assert_slots(ps, 7);

    // Start it: Ready again.
    assert_says(
        s.expect(&format!("shoal machine start {VM2}")),
        &format!("Machine \"{VM2}\" was started."),
    );
    assert_node(s.expect("shoal node ls"), VM2, "Ready", "Active", "");

    // Clean up: stack rm prints docker's lines and leaves no stack and no stack network.
    let rm = s.expect(&format!("shoal stack rm {STACK}"));
    assert_eq!(
        rm.said(),
        [
            "Removing service getstartedlab_web",
            "Removing network getstartedlab_webnet"
        ],
        "{}",
        rm.text()
    );
    // The port no longer answers.
    assert_eq!(
        s.expect("curl -s -m 2 http://10.98.10.2:4000/ || echo \"port 4000: no answer\"")
            .said(),
        ["port 4000: no answer"]
    );
    let ls = s.expect("shoal stack ls");
    assert_eq!(ls.said().len(), 1, "{}", ls.text());
    assert_eq!(words(ls.said()[0]), ["NAME", "SERVICES"], "{}", ls.text());
    let networks = s.expect("shoal network ls");
    let rows = networks.rows("NETWORK ID");
    assert!(
        rows.iter().all(|r| !r["NAME"].contains(STACK)),
        "{}",
        networks.text()
    );
    s.expect("eval $(shoal machine env -u)");
    assert_says(
        s.expect(&format!("shoal machine ssh {VM2} \"shoal swarm leave\"")),
        "Node left the swarm.",
    );
    assert_says(
        s.expect(&format!(
            "shoal machine ssh {VM1} \"shoal swarm leave --force\""
        )),
        "Node left the swarm.",
    );
    for vm in [VM1, VM2] {
        assert_says(
            s.expect_prefix(&format!("shoal machine rm -y {vm}")),
            &format!("Successfully removed {vm}"),
        );
    }
    let ls = s.expect("shoal machine ls");
    assert_eq!(ls.lines.len(), 1, "{}", ls.text());

    // Nothing left behind.
    let mut left = r.links_and_namespaces(&before);
    left.extend(
        r.processes()
            .into_iter()
            .map(|(pid, cmd)| format!("process {pid}: {cmd}")),
    );
    // `<storage>/.lock` is the store's lock file, kept like the storage directory itself.
    left.extend(
        names_in(&r.storage.path().to_string_lossy())
            .into_iter()
            .filter(|f| f != ".lock")
            .map(|f| format!("file {f}")),
    );
    assert!(left.is_empty(), "left behind: {left:#?}");
    let seen = r.seen.lock().expect("seen");
    assert!(
        !seen.netns_inodes.is_empty() && seen.pids.len() >= 2,
        "the run was not observed: {seen:?}"
    );
}
