//! How fast the routing mesh follows the tasks: two machines made with `shoal machine`, a
//! service publishing port 4000 (the built-in friendlyhello), and rounds of `service scale`
//! up and down. For each new task: the time from when the manager records it `running`
//! (its status timestamp) until both machines' port 4000 send a connection to it; for each
//! removed task: the time from its `service scale` until neither machine sends a connection to
//! it any more. Prints figures, asserts none.
//!
//! `cargo bench -p shoal --bench mesh_follow` (as root, with `ip`, `nft`, `nsenter`; skipped
//! otherwise). `SHOAL_BENCH_ROUNDS=N` rounds (default 5). Machines `bmf-1`, `bmf-2` on bridge
//! `shoal-bn-br13`, 10.98.13.0/24; removed at the end, also on panic.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::machines::Machines;
use common::mesh::{get, task_hostnames};
use common::wait_for;

const LONG: Duration = Duration::from_secs(90);
const PORT: u16 = 4000;

/// Polls both machines with fresh connections until `done` holds for what one round of
/// `probes` requests per machine answered; returns when it held.
fn poll_until(m: &Machines, probes: usize, done: impl Fn(&BTreeSet<String>) -> bool) -> Instant {
    let deadline = Instant::now() + LONG;
    loop {
        let mut seen = BTreeSet::new();
        for name in m.names() {
            for _ in 0..probes {
                if let Ok(h) = get(m.ip(name), PORT, "/hostname") {
                    seen.insert(h);
                }
            }
        }
        if done(&seen) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the mesh did not follow: {seen:?}"
        );
    }
}

/// When the manager recorded `task`'s current state (its status timestamp).
fn status_time(t: &serde_json::Value) -> Option<DateTime<Utc>> {
    t["Status"]["Timestamp"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn summary(name: &str, mut v: Vec<f64>) {
    if v.is_empty() {
        return;
    }
    v.sort_by(f64::total_cmp);
    let p50 = v[v.len() / 2];
    let max = v[v.len() - 1];
    println!(
        "{name:<48} n={:<3} p50 {:>7.1} ms   max {:>7.1} ms",
        v.len(),
        p50 * 1e3,
        max * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let Some(m) = Machines::create("bmf", "shoal-bn-br13", "10.98.13.0/24", 2) else {
        println!("mesh_follow: skipped (needs root, ip, nft, nsenter and the docker CLI)");
        return;
    };
    let m1 = m.names()[0].clone();
    m.swarm(1);
    m.docker(
        &m1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "4000:80",
            "shoal/friendlyhello",
        ],
    )
    .ok();
    m.wait_replicas(&m1, "web", "2/2");
    let mut up = Vec::new();
    let mut down = Vec::new();
    for round in 0..rounds {
        // Up: 2 -> 3. The new task's `running` time, then the first answer from it on both.
        let before = task_hostnames(&m, &m1, "web").expect("tasks");
        m.docker(&m1, &["service", "scale", "-d", "web=3"]).ok();
        let mut new_task = None;
        wait_for("the new task running", LONG, || {
            let tasks = m.tasks(&m1, "web")?;
            new_task = tasks
                .into_iter()
                .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
                .find(|t| {
                    t["ID"]
                        .as_str()
                        .is_some_and(|id| !before.contains(&id[..12]))
                });
            new_task
                .is_some()
                .then_some(())
                .ok_or("not yet".to_string())
        });
        let t = new_task.expect("new task");
        let host = t["ID"].as_str().expect("id")[..12].to_string();
        let running_at = status_time(&t).expect("status timestamp");
        let served = poll_until(&m, 6, |seen| seen.contains(&host));
        let served_at =
            Utc::now() - chrono::Duration::from_std(served.elapsed()).unwrap_or_default();
        let lag = served_at - running_at;
        up.push(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);

        // Down: 3 -> 2. From the scale until no machine sends a connection to a removed task
        // (three rounds in a row).
        let three = task_hostnames(&m, &m1, "web").expect("tasks");
        let asked = Instant::now();
        m.docker(&m1, &["service", "scale", "-d", "web=2"]).ok();
        let mut clean_rounds = 0;
        let mut last_gone = Instant::now();
        let deadline = Instant::now() + LONG;
        while clean_rounds < 3 {
            let now_tasks = task_hostnames(&m, &m1, "web").unwrap_or_default();
            let removed: BTreeSet<&String> = three.difference(&now_tasks).collect();
            let mut seen = BTreeSet::new();
            for name in m.names() {
                for _ in 0..4 {
                    if let Ok(h) = get(m.ip(name), PORT, "/hostname") {
                        seen.insert(h);
                    }
                }
            }
            if removed.is_empty() || seen.iter().any(|h| removed.contains(h)) {
                clean_rounds = 0;
                last_gone = Instant::now();
            } else {
                clean_rounds += 1;
            }
            assert!(Instant::now() < deadline, "the removed task kept answering");
        }
        down.push(last_gone.duration_since(asked).as_secs_f64());
        m.wait_replicas(&m1, "web", "2/2");
        eprintln!("round {} done", round + 1);
    }
    println!("\nrouting mesh following the tasks (2 machines, kernel datapath)");
    summary("new task: recorded running -> served on both", up);
    summary("removed task: scale down -> served by neither", down);
    m.rm_all();
}
