//! Helpers of the multi-daemon tests: `docker node ls` rows, waits on them, init / join of
//! a swarm of "machines" (daemons on their own loopback addresses), tasks per node.

use super::{wait_for, Out, TestDaemon};
use std::collections::HashMap;
use std::time::Duration;

/// Bound of the waits that span elections, heartbeat timeouts and rescheduling.
pub const LONG: Duration = Duration::from_secs(90);

/// One row of `docker node ls`.
#[derive(Clone, Debug)]
pub struct NodeRow {
    pub id: String,
    pub status: String,
    pub manager: String,
}

pub fn node_ls(d: &TestDaemon) -> Result<Vec<NodeRow>, String> {
    let out = d.docker(&[
        "node",
        "ls",
        "--format",
        "{{.ID}}|{{.Status}}|{{.ManagerStatus}}",
    ]);
    if out.code != 0 {
        return Err(format!("node ls failed: {}", out.stderr));
    }
    Ok(out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            NodeRow {
                id: f.first().unwrap_or(&"").to_string(),
                status: f.get(1).unwrap_or(&"").to_string(),
                manager: f.get(2).unwrap_or(&"").trim().to_string(),
            }
        })
        .collect())
}

/// Waits until `node ls` on `d` satisfies `ok`; returns the rows.
#[track_caller]
pub fn wait_nodes(d: &TestDaemon, what: &str, ok: impl Fn(&[NodeRow]) -> bool) -> Vec<NodeRow> {
    wait_for(what, LONG, || {
        let rows = node_ls(d)?;
        if ok(&rows) {
            Ok(rows)
        } else {
            Err(format!("{rows:#?}"))
        }
    })
}

pub fn node_id(d: &TestDaemon) -> String {
    d.get_json("/info")["Swarm"]["NodeID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn init(d: &TestDaemon) -> String {
    let out = d.docker(&["swarm", "init", "--advertise-addr", d.ip()]);
    assert!(out.ok().contains("swarm join --token SWMTKN-1-"), "{out:?}");
    assert!(out.stdout.contains(&d.cluster_addr()), "{out:?}");
    node_id(d)
}

pub fn token(d: &TestDaemon, role: &str) -> String {
    d.docker(&["swarm", "join-token", "-q", role])
        .ok()
        .trim()
        .to_string()
}

pub fn join(d: &TestDaemon, token: &str, manager: &TestDaemon) -> Out {
    d.docker(&["swarm", "join", "--token", token, &manager.cluster_addr()])
}

/// Starts a manager on `ips[0]` and joins the others as managers; waits until `node ls`
/// shows all of them ready, one leader and the rest reachable.
pub fn managers(ips: &[&str]) -> Vec<TestDaemon> {
    let first = TestDaemon::start_at(ips[0]);
    init(&first);
    let t = token(&first, "manager");
    let mut all = vec![first];
    for ip in &ips[1..] {
        let d = TestDaemon::start_at(ip);
        let out = join(&d, &t, &all[0]);
        assert_eq!(
            out.ok().trim(),
            "This node joined a swarm as a manager.",
            "{out:?}"
        );
        all.push(d);
    }
    let n = ips.len();
    wait_nodes(&all[0], "every manager ready, one leader", |rows| {
        rows.len() == n
            && rows.iter().all(|r| r.status == "Ready")
            && rows.iter().filter(|r| r.manager == "Leader").count() == 1
            && rows.iter().filter(|r| r.manager == "Reachable").count() == n - 1
    });
    all
}

/// Running tasks of `service` (desired running) per node ID, from `d`'s API.
pub fn running_per_node(d: &TestDaemon, service: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in d.running_tasks(service) {
        if t["DesiredState"] == "running" {
            *m.entry(t["NodeID"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    m
}
