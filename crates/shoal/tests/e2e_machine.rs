//! End to end, as root: two machines made with `shoal machine` (network namespaces on a
//! test-only bridge and subnet) form a swarm through `shoal machine ssh`, and `rm` leaves
//! nothing behind (no namespace, link, process, mount or file); and the harness
//! ([`common::machines`]) leaves nothing behind either when a test panics.

mod common;

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use common::machines::{skip_reason, HostState, Machines, MachinesLock};
use common::{pids_running, wait_for};

const BRIDGE: &str = "shoal-e2e-br7";
const SUBNET: &str = "10.98.7.0/24";

#[test]
fn e2e_machine_two_machines_form_a_swarm_and_leave_nothing_behind() {
    let Some(m) = Machines::create("e2e7", BRIDGE, SUBNET, 2) else {
        return;
    };
    let (n1, n2) = (m.names()[0].clone(), m.names()[1].clone());
    let (ip1, ip2) = (m.ip(&n1).to_string(), m.ip(&n2).to_string());
    assert_eq!((ip1.as_str(), ip2.as_str()), ("10.98.7.2", "10.98.7.3"));

    let ls = m.machine(&["ls"]);
    let lines = ls.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS"]
    );
    assert!(
        lines[1].starts_with(n1.as_str()) && lines[1].contains("Running"),
        "{lines:?}"
    );

    let host = m.ssh(&n1, &["hostname"]).ok().trim().to_string();
    assert_eq!(host, n1);
    // `shoal machine env` points a client at the machine.
    let env = m.machine(&["env", &n1]);
    assert!(env.ok().contains("DOCKER_HOST="), "{env:?}");

    m.ssh(&n1, &["shoal", "swarm", "init", "--advertise-addr", &ip1])
        .ok();
    let token = m
        .ssh(&n1, &["shoal", "swarm", "join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    let joined = m.ssh(
        &n2,
        &[
            "shoal",
            "swarm",
            "join",
            "--token",
            &token,
            &format!("{ip1}:2377"),
        ],
    );
    assert!(joined
        .ok()
        .contains("This node joined a swarm as a worker."));

    wait_for("both machines in node ls", Duration::from_secs(30), || {
        let out = m.ssh(&n1, &["shoal", "node", "ls"]);
        let text = out.ok().to_string();
        let ready = |n: &str| {
            text.lines()
                .any(|l| l.split_whitespace().any(|w| w == n) && l.contains("Ready"))
        };
        if ready(&n1) && ready(&n2) {
            Ok(())
        } else {
            Err(text)
        }
    });
    // The docker CLI on the host reaches the same swarm through the machine's socket.
    let rows = m.node_ls(&n1).expect("node ls");
    assert_eq!(rows.len(), 2, "{rows:?}");

    // A stopped machine refuses commands.
    m.stop(&n2);
    assert_eq!(m.machine(&["status", &n2]).ok().trim(), "Stopped");
    let err = m.ssh(&n2, &["true"]).fails().to_string();
    assert!(err.contains("is not running"), "{err}");

    // While the machines exist the leftover check sees them (so an empty one means gone).
    let present = m.leftovers();
    for name in [&n1, &n2] {
        assert!(
            present.contains(&format!("netns shoal-{name}")),
            "{present:?}"
        );
        assert!(
            present
                .iter()
                .any(|l| l.starts_with("directory ") && l.ends_with(name.as_str())),
            "{present:?}"
        );
    }
    let daemon = m
        .daemon_pid(&n1)
        .expect("the daemon of the running machine");
    assert!(
        present
            .iter()
            .any(|l| l.starts_with(&format!("process {daemon} "))),
        "{present:?}"
    );

    m.rm_all();
    let left = m.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn e2e_machine_harness_cleans_up_after_a_panic() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    // Held across the panic, so the host is compared with no other machine test running.
    let lock = Rc::new(MachinesLock::take());
    let before = HostState::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let m = Machines::create_locked(lock.clone(), "e2e7", BRIDGE, SUBNET, 1);
        let name = m.names()[0].clone();
        // A process of the machine that its daemon does not know of.
        m.ssh(&name, &["sleep 6701 >/dev/null 2>&1 &"]).ok();
        wait_for("the stray process", Duration::from_secs(10), || {
            match m.running_in(&name, &["sleep", "6701"]) {
                1 => Ok(()),
                n => Err(format!("{n} running")),
            }
        });
        panic!("a machine test failing on purpose");
    }));
    let payload = result.expect_err("the closure panics");
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert_eq!(
        message, "a machine test failing on purpose",
        "the machine failed before the test's own panic"
    );
    let after = HostState::now();
    let netns: Vec<&String> = after.netns.difference(&before.netns).collect();
    let links: Vec<&String> = after.links.difference(&before.links).collect();
    assert!(
        netns.is_empty() && links.is_empty(),
        "left behind: netns {netns:?}, links {links:?}"
    );
    let shoal: Vec<&i32> = after.shoal_pids.difference(&before.shoal_pids).collect();
    assert!(
        pids_running(&["sleep", "6701"]).is_empty(),
        "the stray process survived"
    );
    // Daemons of other (loopback) tests may have started meanwhile: only a machine daemon,
    // whose data root is in a machine directory, would be ours.
    for pid in shoal {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
        assert!(
            !argv.contains("shoal-m-"),
            "a machine daemon survived: {pid} {argv}"
        );
    }
}
