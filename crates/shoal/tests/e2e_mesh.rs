//! End to end, as root: the data plane on two machines made with `shoal machine` (a manager
//! and a worker), driven with the `docker` CLI:
//!
//! - every task has its own namespace and hostname (12 characters of its ID), so four replicas
//!   of the guide's friendlyhello all listen on port 80;
//! - the routing mesh: a port published in ingress mode answers on both machines and balances
//!   over every task wherever it runs; it follows scale and drain; a port published in host
//!   mode answers only where its task runs; UDP too;
//! - service discovery across machines: a task on the first machine reaches, by name, a service
//!   whose only task runs on the second (its VIP); the names a task resolves (VIP, alias,
//!   `tasks.<name>`, `<name>.<slot>`, dnsrr), and none of them once the task is moved to
//!   another network by an update;
//! - a daemon restart (SIGKILL, started again) keeps an established connection through the
//!   mesh (kernel datapath: the rules and connection tracking stay in the kernel);
//! - the userspace datapath (`SHOAL_DATA_PLANE=userspace`: the mesh in a proxy of the daemon);
//! - removing the services stops the ports answering and leaves no task namespace; `swarm
//!   leave` leaves no overlay device or nftables table in the machine.
//!
//! Machines `e2e11-*` on bridge `shoal-e2e-br11` (10.98.11.0/24) and `e2e12-*` on
//! `shoal-e2e-br12` (10.98.12.0/24). Every wait is bounded; nothing asserts on time.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use common::machines::{Machines, CLI_TIMEOUT};
use common::mesh::{connect, get, get_on, hostnames, task_hostnames};
use common::wait_for;

const LONG: Duration = common::cluster::LONG;

/// The machine names the running tasks of `service` are on.
fn task_nodes(m: &Machines, on: &str, service: &str) -> Result<BTreeSet<String>, String> {
    Ok(m.running_per_node(on, service)?.into_keys().collect())
}

fn create(m: &Machines, on: &str, args: &[&str]) {
    let mut all = vec!["service", "create", "-d"];
    all.extend_from_slice(args);
    m.docker(on, &all).ok();
}

/// Waits until fresh connections to `port` on every machine are answered by exactly the
/// service's running tasks, all of them.
#[track_caller]
fn wait_mesh(m: &Machines, service: &str, port: u16, what: &str) -> BTreeSet<String> {
    let first = m.names()[0].clone();
    let mut seen = BTreeSet::new();
    wait_for(what, LONG, || {
        let want = task_hostnames(m, &first, service)?;
        if want.is_empty() {
            return Err("no running task".into());
        }
        for name in m.names() {
            let got = hostnames(m.ip(name), port, 4 * want.len())?;
            if got != want {
                return Err(format!("{name} answered from {got:?}, tasks are {want:?}"));
            }
        }
        seen = want;
        Ok(())
    });
    seen
}

/// The lines a service's tasks (or one task, by ID) printed (`docker service logs --raw`).
fn logs(m: &Machines, on: &str, service: &str) -> String {
    m.try_docker(on, &["service", "logs", "--raw", service], CLI_TIMEOUT)
        .map(|o| o.stdout)
        .unwrap_or_default()
}

/// A service's virtual IP on a network (bare address).
fn vip_on(m: &Machines, on: &str, service: &str, network_id: &str) -> String {
    let svc = m
        .get_json(on, &format!("/services/{service}"))
        .expect("service");
    svc["Endpoint"]["VirtualIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["NetworkID"] == network_id)
        .and_then(|v| v["Addr"].as_str())
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no VIP of {service} on {network_id}: {svc}"))
        .to_string()
}

/// The addresses on `network` (by name) of a service's running tasks (of one slot if given).
fn addresses_on(
    m: &Machines,
    on: &str,
    service: &str,
    network: &str,
    slot: Option<u64>,
) -> BTreeSet<String> {
    m.tasks(on, service)
        .expect("tasks")
        .iter()
        .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
        .filter(|t| slot.is_none_or(|s| t["Slot"] == s))
        .flat_map(|t| {
            t["NetworksAttachments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|a| a["Network"]["Spec"]["Name"] == network)
        .filter_map(|a| {
            a["Addresses"][0]
                .as_str()
                .map(|x| x.split('/').next().unwrap_or(x).to_string())
        })
        .collect()
}

/// The addresses of the last `NAME ADDR...` line `shoal testimage resolve` printed for `name`.
fn last_resolved(out: &str, name: &str) -> Option<BTreeSet<String>> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect(),
    )
}

/// None of the task namespaces seen during the test is left (other tests on the host may
/// have task namespaces of their own).
fn assert_gone(seen: &BTreeSet<String>) {
    let left: Vec<&String> = seen
        .iter()
        .filter(|ns| std::path::Path::new("/run/netns").join(ns).exists())
        .collect();
    assert!(left.is_empty(), "task namespaces left: {left:?}");
}

#[test]
fn e2e_mesh_kernel_datapath() {
    let Some(m) = Machines::create("e2e11", "shoal-e2e-br11", "10.98.11.0/24", 2) else {
        return;
    };
    let (m1, m2) = (m.names()[0].clone(), m.names()[1].clone());
    m.swarm(1);
    m.step("swarm ready");
    m.docker(&m1, &["network", "create", "-d", "overlay", "webnet"])
        .ok();
    create(
        &m,
        &m1,
        &[
            "--name",
            "web",
            "--replicas",
            "4",
            "--network",
            "webnet",
            "-p",
            "4000:80",
            "shoal/friendlyhello",
        ],
    );
    create(
        &m,
        &m1,
        &[
            "--name",
            "solo",
            "--network",
            "name=webnet,alias=www",
            "--constraint",
            &format!("node.hostname=={m2}"),
            "shoal/testimage",
        ],
    );
    m.wait_replicas(&m1, "web", "4/4");
    m.wait_replicas(&m1, "solo", "1/1");
    m.step("services running");

    // The routing mesh: both machines, all four tasks, wherever they run.
    let all = wait_mesh(&m, "web", 4000, "port 4000 balanced over every task");
    assert_eq!(all.len(), 4, "four tasks with their own hostnames: {all:?}");
    assert_eq!(
        task_nodes(&m, &m1, "web").expect("tasks"),
        [m1.clone(), m2.clone()].into_iter().collect(),
        "spread over both machines"
    );
    let page = get(m.ip(&m2), 4000, "/").expect("the page");
    assert!(
        page.starts_with("<h3>Hello world!</h3><b>Hostname:</b> ")
            && all.iter().any(|h| page.contains(h.as_str())),
        "{page}"
    );
    m.step("mesh answers on both machines");
    let mut seen = m.task_namespaces();
    assert_eq!(seen.len(), 5, "a namespace per task: {seen:?}");

    // By name across machines: a task on m1 reaches `solo` (only on m2) and `web` (VIP).
    create(
        &m,
        &m1,
        &[
            "--name",
            "client",
            "--network",
            "webnet",
            "--constraint",
            &format!("node.hostname=={m1}"),
            "shoal/testimage",
            "fetch",
            "--every",
            "200",
            "http://solo/hostname",
        ],
    );
    m.wait_replicas(&m1, "client", "1/1");
    let solo = task_hostnames(&m, &m1, "solo").expect("solo's task");
    wait_for("client on m1 reaches solo on m2 by name", LONG, || {
        let out = logs(&m, &m1, "client");
        if solo.iter().all(|h| out.lines().any(|l| l.trim() == h)) {
            Ok(())
        } else {
            Err(out)
        }
    });
    m.docker(
        &m1,
        &[
            "service",
            "update",
            "-d",
            "--args",
            "fetch --every 100 http://web/hostname",
            "client",
        ],
    )
    .ok();
    wait_for(
        "client balanced over web's tasks through its VIP",
        LONG,
        || {
            let out = logs(&m, &m1, "client");
            let seen: BTreeSet<&str> = out
                .lines()
                .map(str::trim)
                .filter(|l| all.contains(*l))
                .collect();
            if seen.len() == all.len() {
                Ok(())
            } else {
                Err(format!("{seen:?} of {all:?}"))
            }
        },
    );
    m.step("service discovery across machines");

    // The names a task resolves: a VIP, an alias, tasks.<svc>, <svc>.<slot>, dnsrr; then the
    // task moved to another network sees none of them.
    create(
        &m,
        &m1,
        &[
            "--name",
            "rr",
            "--replicas",
            "2",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "webnet",
            "shoal/testimage",
        ],
    );
    create(
        &m,
        &m1,
        &[
            "--name",
            "dns",
            "--network",
            "webnet",
            "shoal/testimage",
            "resolve",
            "--every",
            "300",
            "solo",
            "www",
            "tasks.web",
            "web.1",
            "rr",
            "tasks.rr",
        ],
    );
    m.wait_replicas(&m1, "rr", "2/2");
    m.wait_replicas(&m1, "dns", "1/1");
    let webnet = m.get_json(&m1, "/networks/webnet").expect("webnet")["Id"]
        .as_str()
        .expect("id")
        .to_string();
    let solo_vip = vip_on(&m, &m1, "solo", &webnet);
    let web_ips = addresses_on(&m, &m1, "web", "webnet", None);
    let web_1 = addresses_on(&m, &m1, "web", "webnet", Some(1));
    let rr_ips = addresses_on(&m, &m1, "rr", "webnet", None);
    assert_eq!((web_ips.len(), web_1.len(), rr_ips.len()), (4, 1, 2));
    let want: Vec<(&str, BTreeSet<String>)> = vec![
        ("solo", [solo_vip.clone()].into_iter().collect()),
        ("www", [solo_vip].into_iter().collect()),
        ("tasks.web", web_ips),
        ("web.1", web_1),
        ("rr", rr_ips.clone()),
        ("tasks.rr", rr_ips),
    ];
    wait_for("every name resolved as Docker resolves it", LONG, || {
        let out = logs(&m, &m1, "dns");
        for (name, ips) in &want {
            let got = last_resolved(&out, name).ok_or(format!("no line for {name}: {out}"))?;
            if got != *ips {
                return Err(format!("{name}: {got:?}, want {ips:?}"));
            }
        }
        Ok(())
    });
    m.docker(&m1, &["network", "create", "-d", "overlay", "othernet"])
        .ok();
    m.docker(
        &m1,
        &[
            "service",
            "update",
            "-d",
            "--network-add",
            "othernet",
            "--network-rm",
            "webnet",
            "dns",
        ],
    )
    .ok();
    wait_for("the moved task resolves nothing of webnet", LONG, || {
        // The task made by the update (on othernet), by its own logs: the old task's lines
        // may come after its in the service's merged logs.
        let moved = m
            .tasks(&m1, "dns")?
            .into_iter()
            .find(|t| {
                t["DesiredState"] == "running"
                    && t["NetworksAttachments"][0]["Network"]["Spec"]["Name"] == "othernet"
            })
            .and_then(|t| t["ID"].as_str().map(str::to_string))
            .ok_or("no task on othernet yet")?;
        let out = logs(&m, &m1, &moved);
        let names = ["solo", "www", "tasks.web", "web.1", "rr", "tasks.rr"];
        let failed = |name: &str| {
            out.lines()
                .rev()
                .find(|l| l.split_whitespace().next() == Some(name))
                .is_some_and(|l| l.contains(" error: "))
        };
        if names.iter().all(|n| failed(n)) {
            Ok(())
        } else {
            Err(out)
        }
    });
    let moved = m.tasks(&m1, "dns").expect("tasks");
    let running: Vec<_> = moved
        .iter()
        .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
        .collect();
    assert_eq!(running.len(), 1);
    assert_eq!(
        running[0]["NetworksAttachments"][0]["Network"]["Spec"]["Name"], "othernet",
        "{}",
        running[0]
    );
    m.step("names and a network move");
    seen.extend(m.task_namespaces());

    // An established connection survives a daemon crash and restart.
    let mut kept = connect(m.ip(&m1), 4000).expect("connect");
    let first = get_on(&mut kept, "/hostname").expect("first request");
    m.restart_daemon(&m1);
    assert_eq!(
        get_on(&mut kept, "/hostname").expect("the same connection after the restart"),
        first
    );
    drop(kept);
    m.step("connection kept across a daemon restart");

    // Scale and drain: the mesh follows.
    m.docker(&m1, &["service", "scale", "-d", "web=2"]).ok();
    m.wait_replicas(&m1, "web", "2/2");
    let two = wait_mesh(&m, "web", 4000, "port 4000 over the 2 tasks left");
    assert_eq!(two.len(), 2);
    m.docker(&m1, &["node", "update", "--availability", "drain", &m2])
        .ok();
    wait_for("web only on m1", LONG, || {
        let nodes = task_nodes(&m, &m1, "web")?;
        (nodes == [m1.clone()].into_iter().collect())
            .then_some(())
            .ok_or(format!("{nodes:?}"))
    });
    m.wait_replicas(&m1, "web", "2/2");
    wait_mesh(
        &m,
        "web",
        4000,
        "port 4000 on both machines after the drain",
    );
    m.docker(&m1, &["node", "update", "--availability", "active", &m2])
        .ok();
    m.step("scale and drain followed");

    // Host mode: only where the task runs. UDP through the mesh.
    create(
        &m,
        &m1,
        &[
            "--name",
            "hostport",
            "--constraint",
            &format!("node.hostname=={m2}"),
            "--publish",
            "mode=host,target=80,published=4100",
            "shoal/testimage",
        ],
    );
    create(
        &m,
        &m1,
        &[
            "--name",
            "udp",
            "-p",
            "9000:9000/udp",
            "shoal/testimage",
            "echo",
            "--udp",
            "--port",
            "9000",
        ],
    );
    m.wait_replicas(&m1, "hostport", "1/1");
    m.wait_replicas(&m1, "udp", "1/1");
    wait_for("host-mode port on m2 only", LONG, || {
        let on2 = get(m.ip(&m2), 4100, "/hostname")?;
        match get(m.ip(&m1), 4100, "/hostname") {
            Err(_) => Ok(()),
            Ok(b) => Err(format!("m1 answered {b}; m2 answered {on2}")),
        }
    });
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    for name in m.names() {
        wait_for(&format!("UDP echo through {name}"), LONG, || {
            sock.send_to(b"ping", format!("{}:9000", m.ip(name)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 16];
            let (n, _) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
            (&buf[..n] == b"ping")
                .then_some(())
                .ok_or("wrong echo".into())
        });
    }
    m.step("host mode and UDP");
    seen.extend(m.task_namespaces());

    // Removing the services: the ports stop answering, the task namespaces go.
    for s in ["web", "solo", "client", "hostport", "udp", "rr", "dns"] {
        m.docker(&m1, &["service", "rm", s]).ok();
    }
    wait_for("port 4000 no longer answers", LONG, || {
        for name in m.names() {
            if let Ok(b) = get(m.ip(name), 4000, "/hostname") {
                return Err(format!("{name} answered {b}"));
            }
        }
        Ok(())
    });
    wait_for("no task namespace left", LONG, || {
        let left = m.task_namespaces();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
    assert_gone(&seen);

    // Leaving: the worker's overlays and rules go.
    m.docker(&m2, &["swarm", "leave"]).ok();
    let ns = common::machines::netns_of(&m2);
    let links = std::process::Command::new("ip")
        .args(["-n", &ns, "-br", "link"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(
        !links.contains("shb") && !links.contains("shx") && !links.contains("shv"),
        "{links}"
    );
    let tables = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "nft", "list", "tables"])
        .output()
        .expect("nft");
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    assert!(!tables.contains("shoal"), "{tables}");
    m.step("left cleanly");

    m.rm_all();
    assert_gone(&seen);
    let left = m.leftovers();
    assert!(left.is_empty(), "left on the host: {left:?}");
}

#[test]
fn e2e_mesh_userspace_datapath() {
    // The machines' daemons inherit the environment of `shoal machine create`.
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment
    // concurrently here.
    unsafe { std::env::set_var("SHOAL_DATA_PLANE", "userspace") };
    let Some(m) = Machines::create("e2e12", "shoal-e2e-br12", "10.98.12.0/24", 2) else {
        return;
    };
    let m1 = m.names()[0].clone();
    m.swarm(1);
    assert!(
        m.log(&m1).contains("datapath=\"userspace\""),
        "the daemon runs the userspace datapath"
    );
    m.docker(&m1, &["network", "create", "-d", "overlay", "webnet"])
        .ok();
    create(
        &m,
        &m1,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "--network",
            "webnet",
            "-p",
            "4000:80",
            "shoal/friendlyhello",
        ],
    );
    m.wait_replicas(&m1, "web", "3/3");
    let all = wait_mesh(&m, "web", 4000, "port 4000 balanced by the proxy");
    let mut seen = m.task_namespaces();
    assert_eq!(all.len(), 3);
    // Without NAT, a service name resolves to its tasks.
    create(
        &m,
        &m1,
        &[
            "--name",
            "client",
            "--network",
            "webnet",
            "shoal/testimage",
            "fetch",
            "--every",
            "100",
            "http://web/hostname",
        ],
    );
    m.wait_replicas(&m1, "client", "1/1");
    seen.extend(m.task_namespaces());
    wait_for("client reaches web by name", LONG, || {
        let out = logs(&m, &m1, "client");
        out.lines()
            .any(|l| all.contains(l.trim()))
            .then_some(())
            .ok_or(out)
    });
    m.docker(&m1, &["service", "rm", "web", "client"]).ok();
    wait_for("port 4000 closed", LONG, || {
        match get(m.ip(&m1), 4000, "/hostname") {
            Err(_) => Ok(()),
            Ok(b) => Err(b),
        }
    });
    m.rm_all();
    assert_gone(&seen);
    let left = m.leftovers();
    assert!(left.is_empty(), "left on the host: {left:?}");
}
