//! End to end, as root: two machines made with `shoal machine` (network namespaces on a
//! test-only bridge and subnet) form a swarm through `shoal machine ssh`, and `rm` leaves
//! nothing behind (no namespace, no link, no process, no file), also when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{run, wait_for, Out};

const BRIDGE: &str = "shoal-e2e-br7";
const SUBNET: &str = "10.98.7.0/24";
const NAMES: [&str; 2] = ["e2e7-m1", "e2e7-m2"];

struct Machines {
    storage: tempfile::TempDir,
    pids: Vec<u32>,
}

impl Machines {
    fn shoal(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(args)
            .env("SHOAL_MACHINE_STORAGE_PATH", self.storage.path())
            .env_remove("DOCKER_HOST")
            .env_remove("SHOAL_HOST");
        run(cmd, Duration::from_secs(90))
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.storage.path().join(name)
    }

    fn record_pid(&mut self, name: &str) {
        let text = std::fs::read_to_string(self.dir(name).join("config.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(pid) = v["pid"].as_u64() {
            self.pids.push(pid as u32);
        }
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

/// What is still on the host of the machines.
fn leftovers(m: &Machines) -> Vec<String> {
    let mut left = Vec::new();
    for name in NAMES {
        let ns = shoal_machine::model::netns_name(name);
        if netns_exists(&ns) {
            left.push(format!("netns {ns}"));
        }
        let veth = shoal_machine::model::veth_name(name);
        if link_exists(&veth) {
            left.push(format!("link {veth}"));
        }
        if m.dir(name).exists() {
            left.push(format!("dir {}", m.dir(name).display()));
        }
    }
    if link_exists(BRIDGE) {
        left.push(format!("link {BRIDGE}"));
    }
    for pid in &m.pids {
        if pid_alive(*pid) {
            left.push(format!("process {pid}"));
        }
    }
    left
}

impl Drop for Machines {
    fn drop(&mut self) {
        for name in NAMES {
            if self.dir(name).exists() {
                let _ = self.shoal(&["machine", "rm", "-f", name]);
            }
        }
        // Whatever `rm` could not remove.
        for pid in &self.pids {
            if pid_alive(*pid) {
                // SAFETY: kill with a valid signal number.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        for name in NAMES {
            let ns = shoal_machine::model::netns_name(name);
            if netns_exists(&ns) {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        if link_exists(BRIDGE) {
            let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        }
    }
}

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    for tool in ["ip", "unshare", "nsenter"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some("`ip`, `unshare` or `nsenter` missing");
        }
    }
    None
}

#[test]
fn e2e_machine_two_machines_form_a_swarm_and_leave_nothing_behind() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping e2e_machine: {why}");
        return;
    }
    let mut m = Machines {
        storage: tempfile::tempdir().expect("tempdir"),
        pids: Vec::new(),
    };
    for name in NAMES {
        m.shoal(&[
            "machine", "create", "--driver", "netns", "--bridge", BRIDGE, "--subnet", SUBNET, name,
        ])
        .ok();
        m.record_pid(name);
    }
    let ip1 = m
        .shoal(&["machine", "ip", NAMES[0]])
        .ok()
        .trim()
        .to_string();
    let ip2 = m
        .shoal(&["machine", "ip", NAMES[1]])
        .ok()
        .trim()
        .to_string();
    assert_eq!((ip1.as_str(), ip2.as_str()), ("10.98.7.2", "10.98.7.3"));

    let ls = m.shoal(&["machine", "ls"]);
    let lines = ls.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS"]
    );
    assert!(lines[1].starts_with(NAMES[0]) && lines[1].contains("Running"));

    let host = m
        .shoal(&["machine", "ssh", NAMES[0], "hostname"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(host, NAMES[0]);

    m.shoal(&[
        "machine",
        "ssh",
        NAMES[0],
        "shoal",
        "swarm",
        "init",
        "--advertise-addr",
        &ip1,
    ])
    .ok();
    let token = m
        .shoal(&[
            "machine",
            "ssh",
            NAMES[0],
            "shoal",
            "swarm",
            "join-token",
            "-q",
            "worker",
        ])
        .ok()
        .trim()
        .to_string();
    let joined = m.shoal(&[
        "machine",
        "ssh",
        NAMES[1],
        "shoal",
        "swarm",
        "join",
        "--token",
        &token,
        &format!("{ip1}:2377"),
    ]);
    assert!(joined
        .ok()
        .contains("This node joined a swarm as a worker."));

    wait_for("both machines in node ls", Duration::from_secs(30), || {
        let out = m.shoal(&["machine", "ssh", NAMES[0], "shoal", "node", "ls"]);
        let text = out.ok().to_string();
        let ready = |n: &str| {
            text.lines()
                .any(|l| l.split_whitespace().any(|w| w == n) && l.contains("Ready"))
        };
        if ready(NAMES[0]) && ready(NAMES[1]) {
            Ok(())
        } else {
            Err(text)
        }
    });

    // A stopped machine refuses commands.
    m.shoal(&["machine", "stop", NAMES[1]]).ok();
    assert_eq!(
        m.shoal(&["machine", "status", NAMES[1]]).ok().trim(),
        "Stopped"
    );
    let err = m
        .shoal(&["machine", "ssh", NAMES[1], "true"])
        .fails()
        .to_string();
    assert!(err.contains("is not running"), "{err}");

    for name in NAMES {
        m.shoal(&["machine", "rm", name]).ok();
    }
    let left = leftovers(&m);
    assert!(left.is_empty(), "left behind: {left:?}");
}
