//! Cluster benchmark: real `shoal daemon`s (the release binary of this package) on their own
//! loopback addresses form a 3-manager swarm with workers, and the figures of the swarm as a
//! whole are measured and printed, one line per figure with its goal:
//!
//! 1. rescheduling: `--dispatcher-heartbeat 1s`, `kill -9` of a worker's daemon, time until all
//!    of its tasks run on the other worker (`GET /tasks` polled every 20 ms);
//! 2. throughput through the full Raft path: 20 services x 500 replicas created with raw
//!    Engine API calls, time until all 10,000 tasks are assigned to a node (`GET /tasks` of one
//!    service at a time polled every 50 ms on the leader, until each is complete). The tasks are
//!    constrained to a worker whose daemon is frozen (SIGSTOP) right after it joined, with a
//!    60 s heartbeat so it stays Ready: the managers create, schedule and commit every
//!    assignment, but no task process is started (10,000 processes would measure the host);
//! 3. leader resident memory (VmRSS) before and after those tasks exist, per 1,000 tasks;
//! 4. failover: `kill -9` of the leader, time until a write (`POST /services/create`) is
//!    acknowledged by a survivor (polled every 20 ms on both survivors, 10,000 tasks in the
//!    store).
//!
//! `cargo bench -p shoal --bench cluster`. `SHOAL_BENCH_NET=N` puts the daemons on 127.0.N.2-7
//! (default 77) so several runs can share a host; `SHOAL_BENCH_ONLY=resched,throughput,failover`
//! (any subset) measures only those figures (memory comes with throughput; failover without
//! throughput runs on an empty store). Every wait is bounded; every daemon and task process
//! started is stopped when the bench ends, also on panic (`TestDaemon`'s Drop, `Frozen`'s Drop).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{urlencode, wait_for, TestDaemon};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVICES: usize = 20;
const REPLICAS: usize = 500;
const TASKS: usize = SERVICES * REPLICAS;
const LONG: Duration = Duration::from_secs(120);
const RESCHED_REPLICAS: usize = 4;

/// One HTTP/1.1 request with a short bound on connect/read, for polling during failover.
fn quick_http(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<u16> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))
}

fn node_id(d: &TestDaemon) -> String {
    d.get_json("/info")["Swarm"]["NodeID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The index in `ds` of the daemon that is the Raft leader, as `GET /nodes` on `ask` says.
fn leader_index(ask: &TestDaemon, ds: &[&TestDaemon]) -> Result<usize, String> {
    let (code, body) = ask
        .try_api("GET", "/nodes", None)
        .map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("{code} {body}"));
    }
    let nodes: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let leader = nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["ManagerStatus"]["Leader"] == true)
        .and_then(|n| n["ID"].as_str().map(str::to_string))
        .ok_or_else(|| format!("no leader in {body}"))?;
    ds.iter()
        .position(|d| node_id(d) == leader)
        .ok_or_else(|| format!("leader {leader} is none of ours"))
}

fn service_spec(name: &str, replicas: usize, cmd: &[&str], constraints: &[String]) -> String {
    json!({
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": { "Image": "busybox", "Command": cmd },
            "Placement": { "Constraints": constraints },
            "RestartPolicy": { "Condition": "none" },
        },
        "Mode": { "Replicated": { "Replicas": replicas } },
    })
    .to_string()
}

fn create_service(d: &TestDaemon, spec: &str) {
    let (code, body) = d.api("POST", "/services/create", Some(spec));
    assert_eq!(code, 201, "service create: {body}");
}

fn all_tasks(d: &TestDaemon, filters: &Value) -> Vec<Value> {
    let path = format!("/tasks?filters={}", urlencode(&filters.to_string()));
    match d.try_api("GET", &path, None) {
        Ok((200, body)) => serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Polls `f` every `every` until it is true or `bound` passes; returns the elapsed time.
fn time_until(bound: Duration, every: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > bound {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A daemon frozen with SIGSTOP; SIGKILLed when dropped (a stopped process cannot handle
/// SIGTERM, and thawing it would start the tasks it was assigned).
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        common::kill9(self.0);
    }
}

fn line(what: &str, value: String, goal: &str) {
    println!("{what:<52} {value:>16}   (goal: {goal})");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(_) = common::docker_cli() else {
        println!("cluster bench skipped: the docker CLI is not installed");
        return;
    };
    let t0 = Instant::now();
    let net: u8 = std::env::var("SHOAL_BENCH_NET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(77);
    let only = std::env::var("SHOAL_BENCH_ONLY").unwrap_or_default();
    let wanted = |figure: &str| only.is_empty() || only.split(',').any(|f| f.trim() == figure);
    println!(
        "cluster bench: 3 managers + 3 workers on 127.0.{net}.2-7, binary {}",
        env!("CARGO_BIN_EXE_shoal")
    );
    let ip = |last: u8| format!("127.0.{net}.{last}");

    // --- the swarm ---------------------------------------------------------------------
    let mut ms: Vec<TestDaemon> = (2..=4).map(|l| TestDaemon::start_at(&ip(l))).collect();
    let mut ws: Vec<TestDaemon> = (5..=7).map(|l| TestDaemon::start_at(&ip(l))).collect();
    ms[0]
        .docker(&["swarm", "init", "--advertise-addr", ms[0].ip()])
        .ok();
    let mtoken = ms[0]
        .docker(&["swarm", "join-token", "-q", "manager"])
        .ok()
        .trim()
        .to_string();
    let wtoken = ms[0]
        .docker(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    let addr = ms[0].cluster_addr();
    for m in &ms[1..] {
        m.docker(&["swarm", "join", "--token", &mtoken, &addr]).ok();
    }
    for w in &ws {
        w.docker(&["swarm", "join", "--token", &wtoken, &addr]).ok();
    }
    wait_for("6 nodes ready, 3 managers", LONG, || {
        let nodes = ms[0].get_json("/nodes");
        let arr = nodes.as_array().cloned().unwrap_or_default();
        let ready = arr
            .iter()
            .filter(|n| n["Status"]["State"] == "ready")
            .count();
        let reach = arr
            .iter()
            .filter(|n| n["ManagerStatus"]["Reachability"] == "reachable")
            .count();
        if ready == 6 && reach == 3 {
            Ok(())
        } else {
            Err(format!("ready {ready}, reachable managers {reach}"))
        }
    });
    println!("swarm formed in {:.1?}", t0.elapsed());

    let w0 = node_id(&ws[0]);
    let w1 = node_id(&ws[1]);
    let w2 = node_id(&ws[2]);

    // --- 1. rescheduling ------------------------------------------------------------------
    if wanted("resched") {
        ms[0]
            .docker(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
            .ok();
        let not_w2 = vec![format!("node.id!={w2}"), "node.role==worker".to_string()];
        create_service(
            &ms[0],
            &service_spec("resched", RESCHED_REPLICAS, &["sleep", "7701"], &not_w2),
        );
        let running_on = |d: &TestDaemon| -> Vec<String> {
            all_tasks(
                d,
                &json!({"service": ["resched"], "desired-state": ["running"]}),
            )
            .into_iter()
            .filter(|t| t["Status"]["State"] == "running")
            .filter_map(|t| t["NodeID"].as_str().map(str::to_string))
            .collect()
        };
        wait_for("resched tasks running on both workers", LONG, || {
            let on = running_on(&ms[0]);
            if on.len() == RESCHED_REPLICAS && on.contains(&w0) && on.contains(&w1) {
                Ok(())
            } else {
                Err(format!("{on:?}"))
            }
        });
        // Let every node pick up the 1 s period before the kill: a node learns it from the
        // answer to its next heartbeat, which comes up to one old period (5 s) after the
        // update; until then the managers rightly give it 3 x 5 s (swarmkit does the same).
        std::thread::sleep(Duration::from_secs(6));
        ws[0].kill9();
        let resched = time_until(LONG, Duration::from_millis(20), || {
            let on = running_on(&ms[0]);
            on.len() == RESCHED_REPLICAS && on.iter().all(|n| *n == w1)
        });
        match resched {
            Some(t) => line(
                "rescheduling: worker kill -9 -> tasks running elsewhere",
                format!("{:.2} s", t.as_secs_f64()),
                "heartbeat timeout + < 1 s; heartbeat 1 s",
            ),
            None => line("rescheduling", format!("> {LONG:?}"), "heartbeat + < 1 s"),
        }
        let (code, body) = ms[0].api("DELETE", "/services/resched", None);
        assert!(code < 300, "service rm: {body}");
    }

    // --- 2/3. throughput and memory ------------------------------------------------------
    let mut frozen = None;
    if wanted("throughput") {
        ms[0]
            .docker(&["swarm", "update", "--dispatcher-heartbeat", "60s"])
            .ok();
        // The frozen worker must have learnt the 60 s period first: heartbeats come every 1 s.
        std::thread::sleep(Duration::from_secs(3));
        let stopped = Frozen(ws[2].pid().expect("worker pid"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stopped.0),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP");
        frozen = Some(stopped);
        let refs: Vec<&TestDaemon> = ms.iter().collect();
        let li = wait_for("a leader", LONG, || leader_index(&ms[0], &refs));
        drop(refs);
        let leader_pid = ms[li].pid().expect("leader pid");
        let rss_before = vm_rss_kib(leader_pid);
        let only_w2 = vec![format!("node.id=={w2}")];
        let start = Instant::now();
        for i in 0..SERVICES {
            create_service(
                &ms[li],
                &service_spec(&format!("tp-{i}"), REPLICAS, &["sleep", "100000"], &only_w2),
            );
        }
        let created = start.elapsed();
        // Polled one service at a time, in order, skipping those already complete: a poll
        // costs the leader one service's tasks (500), not all 10,000 as a `GET /tasks` of the
        // node did every 100 ms (~30% of the leader's CPU samples in this phase).
        let mut complete = 0;
        let mut last = 0;
        let assigned = time_until(LONG, Duration::from_millis(50), || {
            while complete < SERVICES {
                let filter = json!({"service": [format!("tp-{complete}")]});
                let n = all_tasks(&ms[li], &filter)
                    .iter()
                    .filter(|t| t["Status"]["State"] == "assigned" && t["NodeID"] == w2.as_str())
                    .count();
                last = complete * REPLICAS + n;
                if n < REPLICAS {
                    return false;
                }
                complete += 1;
            }
            last = TASKS;
            true
        });
        match assigned {
            Some(t) => {
                println!(
                "  ({SERVICES} service creates acknowledged in {:.2} s; all {TASKS} tasks assigned after {:.2} s)",
                created.as_secs_f64(),
                t.as_secs_f64()
            );
                line(
                    "throughput: tasks created + assigned, 3 managers",
                    format!("{:.0} tasks/s", TASKS as f64 / t.as_secs_f64()),
                    "20,000 tasks/s; Docker ~2,200",
                );
            }
            None => line(
                "throughput",
                format!("{last}/{TASKS} in {LONG:?}"),
                "20,000 tasks/s",
            ),
        }
        std::thread::sleep(Duration::from_secs(2));
        let rss_after = vm_rss_kib(leader_pid);
        println!(
            "  (leader VmRSS {:.1} MB before, {:.1} MB after {TASKS} tasks)",
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0
        );
        line(
            "leader memory per 1,000 tasks (VmRSS delta)",
            format!(
                "{:.2} MB",
                (rss_after as f64 - rss_before as f64) / 1024.0 / (TASKS as f64 / 1000.0)
            ),
            "< 5 MB; Docker 22-31 MB",
        );
    }

    // --- 4. failover -------------------------------------------------------------------------
    if wanted("failover") {
        let refs: Vec<&TestDaemon> = ms.iter().collect();
        let li = wait_for("a leader", LONG, || leader_index(&ms[0], &refs));
        drop(refs);
        let survivors: Vec<PathBuf> = (0..3)
            .filter(|&i| i != li)
            .map(|i| ms[i].socket())
            .collect();
        ms[li].kill9();
        let killed = Instant::now();
        let (tx, rx) = mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pollers: Vec<_> = survivors
            .into_iter()
            .enumerate()
            .map(|(k, sock)| {
                let tx = tx.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && killed.elapsed() < LONG
                    {
                        n += 1;
                        let spec = service_spec(&format!("fo-{k}-{n}"), 0, &["sleep", "1"], &[]);
                        if let Ok(201) = quick_http(
                            &sock,
                            "POST",
                            "/services/create",
                            &spec,
                            Duration::from_secs(2),
                        ) {
                            let _ = tx.send(killed.elapsed());
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        drop(tx);
        let first = rx.recv().ok();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for p in pollers {
            let _ = p.join();
        }
        match first {
            Some(t) => line(
                "failover: leader kill -9 -> next acknowledged write",
                format!("{:.2} s", t.as_secs_f64()),
                "< 2 s",
            ),
            None => line("failover", format!("> {LONG:?}"), "< 2 s"),
        }
    }

    drop(frozen);
    ws.clear();
    ms.clear();
    println!("cluster bench done in {:.1?}", t0.elapsed());
}
