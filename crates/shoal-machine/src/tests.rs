//! Unit tests of the verbs against [`FakeHost`], a host in memory.

use super::*;
use host::Host;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

/// A link: (namespace, name); the host's namespace is `""`.
type Link = (String, String);

/// A host in memory. Namespaces and links appear and go with the `ip` commands as the kernel
/// would (deleting a veth end deletes its peer, deleting a namespace deletes its links), commands
/// naming a missing namespace or device fail, and one command can be made to fail.
#[derive(Default)]
struct FakeHost {
    root: bool,
    fail_on: Option<String>,
    daemon_starts: bool,
    answering: Cell<bool>,
    log: RefCell<Vec<String>>,
    links: RefCell<BTreeSet<Link>>,
    peers: RefCell<BTreeMap<Link, Link>>,
    netns: RefCell<BTreeSet<String>>,
    pids: RefCell<BTreeSet<u32>>,
    next_pid: Cell<u32>,
    daemon_args: RefCell<Vec<Vec<String>>>,
}

impl FakeHost {
    fn new() -> FakeHost {
        FakeHost {
            root: true,
            daemon_starts: true,
            answering: Cell::new(true),
            next_pid: Cell::new(1000),
            ..FakeHost::default()
        }
    }
    fn is_clean(&self) -> bool {
        self.links.borrow().is_empty()
            && self.netns.borrow().is_empty()
            && self.pids.borrow().is_empty()
    }
    fn leftovers(&self) -> String {
        format!(
            "links {:?} netns {:?} pids {:?}",
            self.links.borrow(),
            self.netns.borrow(),
            self.pids.borrow()
        )
    }
    fn has(&self, ns: &str, name: &str) -> bool {
        self.links
            .borrow()
            .contains(&(ns.to_string(), name.to_string()))
    }
    fn logged(&self, line: &str) -> bool {
        self.log.borrow().iter().any(|l| l == line)
    }
    fn del_link(&self, l: &Link) {
        self.links.borrow_mut().remove(l);
        let peer = self.peers.borrow_mut().remove(l);
        if let Some(p) = peer {
            self.peers.borrow_mut().remove(&p);
            self.links.borrow_mut().remove(&p);
        }
    }
    /// A reboot: no links, namespaces or processes survive.
    fn reboot(&self) {
        self.links.borrow_mut().clear();
        self.peers.borrow_mut().clear();
        self.netns.borrow_mut().clear();
        self.pids.borrow_mut().clear();
    }
}

impl host::Host for FakeHost {
    fn is_root(&self) -> bool {
        self.root
    }
    fn ip(&self, args: &[&str]) -> Result<(), MachineError> {
        let line = args.join(" ");
        self.log.borrow_mut().push(line.clone());
        let fail = || Err(MachineError::Host(format!("ip {line}: failed")));
        if self.fail_on.as_deref().is_some_and(|f| line.starts_with(f)) {
            return fail();
        }
        let (ns, rest) = match args {
            ["-n", ns, rest @ ..] => (ns.to_string(), rest),
            _ => (String::new(), args),
        };
        let ns_ok = |n: &str| n.is_empty() || self.netns.borrow().contains(n);
        if !ns_ok(&ns) {
            return fail();
        }
        // Any `dev X` or `link set X` names a device that must exist.
        let dev = match rest {
            ["link", "set", d, ..] | ["link", "del", d] => Some(*d),
            _ => rest
                .iter()
                .position(|w| *w == "dev")
                .and_then(|i| rest.get(i + 1).copied()),
        };
        if let Some(d) = dev {
            if !self.has(&ns, d) {
                return fail();
            }
        }
        match rest {
            ["link", "add", "name", name, "type", "veth", "peer", "name", peer, "netns", pns] => {
                if !ns_ok(pns) || self.has(&ns, name) || self.has(pns, peer) {
                    return fail();
                }
                let a = (ns.clone(), name.to_string());
                let b = (pns.to_string(), peer.to_string());
                self.links.borrow_mut().insert(a.clone());
                self.links.borrow_mut().insert(b.clone());
                self.peers.borrow_mut().insert(a.clone(), b.clone());
                self.peers.borrow_mut().insert(b, a);
            }
            ["link", "add", "name", name, "type", "bridge"] => {
                if self.has(&ns, name) {
                    return fail();
                }
                self.links.borrow_mut().insert((ns, name.to_string()));
            }
            ["link", "add", ..] => panic!("unexpected: ip {line}"),
            ["link", "del", name] => self.del_link(&(ns, name.to_string())),
            ["netns", "add", name] => {
                if !self.netns.borrow_mut().insert(name.to_string()) {
                    return fail();
                }
                self.links
                    .borrow_mut()
                    .insert((name.to_string(), "lo".to_string()));
            }
            ["netns", "del", name] => {
                if !self.netns.borrow_mut().remove(*name) {
                    return fail();
                }
                let inside: Vec<Link> = self
                    .links
                    .borrow()
                    .iter()
                    .filter(|(n, _)| n == name)
                    .cloned()
                    .collect();
                for l in inside {
                    self.del_link(&l);
                }
            }
            ["netns", "exec", name, ..] if !ns_ok(name) => return fail(),
            _ => {}
        }
        Ok(())
    }
    fn link_exists(&self, netns: Option<&str>, name: &str) -> bool {
        self.has(netns.unwrap_or(""), name)
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
    fn daemon_alive(&self, pid: u32, _socket: &Path) -> bool {
        self.pids.borrow().contains(&pid)
    }
    fn alive(&self, pid: u32) -> bool {
        self.pids.borrow().contains(&pid)
    }
    fn stop_pid(&self, pid: u32) -> Result<(), MachineError> {
        self.pids.borrow_mut().remove(&pid);
        Ok(())
    }
    fn kill_netns_pids(&self, _netns: &str) {}
    fn spawn_daemon(
        &self,
        rec: &Record,
        _p: &Paths,
        args: &[std::ffi::OsString],
    ) -> Result<u32, MachineError> {
        assert!(
            self.netns_exists(&rec.netns()),
            "daemon before its namespace"
        );
        let pid = self.next_pid.get();
        self.next_pid.set(pid + 1);
        if self.daemon_starts {
            self.pids.borrow_mut().insert(pid);
        }
        self.daemon_args.borrow_mut().push(
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        );
        Ok(pid)
    }
    fn ping(&self, _socket: &Path) -> Result<(), String> {
        if self.daemon_starts && self.answering.get() {
            Ok(())
        } else {
            Err("daemon not answering".into())
        }
    }
    fn engine_info(&self, _socket: &Path) -> (String, String, String) {
        (String::new(), "v0.1.0".into(), String::new())
    }
    fn exec_in(&self, _pid: u32, _p: &Paths, _command: &[String]) -> i32 {
        0
    }
}

const BR: &str = "br-test";
const SW: &str = "shoal-sw-br-test";

fn create_cmd(name: &str) -> Cmd {
    Cmd::Create {
        driver: "netns".into(),
        subnet: None,
        ip: None,
        bridge: BR.into(),
        cpus: None,
        memory: None,
        name: name.into(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn verb(which: &str, list: &[&str]) -> Cmd {
    let names = names(list);
    match which {
        "stop" => Cmd::Stop { names },
        "start" => Cmd::Start { names },
        "restart" => Cmd::Restart { names },
        "status" => Cmd::Status { names },
        "url" => Cmd::Url { names },
        "ssh" => Cmd::Ssh {
            name: names[0].clone(),
            command: vec!["true".into()],
        },
        "rm" => Cmd::Rm {
            force: false,
            yes: false,
            names,
        },
        "rm-f" => Cmd::Rm {
            force: true,
            yes: false,
            names,
        },
        "ip" => Cmd::Ip { names },
        other => panic!("no verb {other}"),
    }
}

/// Runs a verb; its output, or its error.
fn go(h: &FakeHost, root: &Path, cmd: Cmd) -> Result<String, MachineError> {
    let mut out = Vec::new();
    run(h, root, cmd, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn state(h: &FakeHost, root: &Path, name: &str) -> Live {
    live_state(h, root, &load(root, name).unwrap())
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
    let cli = MachineCli::try_parse_from([
        "m",
        "ls",
        "-q",
        "--filter",
        "state=Running",
        "--filter",
        "name=^m",
        "-f",
        "{{.Name}}",
    ])
    .unwrap();
    match cli.cmd {
        Cmd::Ls {
            quiet,
            filter,
            format,
        } => {
            assert!(quiet);
            assert_eq!(filter, ["state=Running", "name=^m"]);
            assert_eq!(format.as_deref(), Some("{{.Name}}"));
        }
        other => panic!("{other:?}"),
    }
    let cli = MachineCli::try_parse_from(["m", "scp", "-r", "m1:~/d", "m2:"]).unwrap();
    assert!(matches!(
        cli.cmd,
        Cmd::Scp {
            recursive: true,
            ..
        }
    ));
    let cli = MachineCli::try_parse_from(["m", "create", "--cpus", "2", "--memory", "512", "m1"])
        .unwrap();
    assert!(matches!(
        cli.cmd,
        Cmd::Create {
            cpus: Some(2),
            memory: Some(512),
            ..
        }
    ));
}

#[test]
fn machines_hang_off_a_switch_namespace_and_the_last_rm_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    let out = go(&h, root, create_cmd("m1")).unwrap();
    assert!(
        out.starts_with("Creating machine m1 (10.97.0.2 on br-test)...\n"),
        "{out}"
    );
    go(&h, root, create_cmd("m2")).unwrap();
    let all = load_all(root).unwrap();
    assert_eq!(all[0].ip, Ipv4Addr::new(10, 97, 0, 2));
    assert_eq!(all[1].ip, Ipv4Addr::new(10, 97, 0, 3));
    assert!(all.iter().all(|r| live_state(&h, root, r) == Live::Running));
    // The bridge is in the switch namespace with bridge netfilter off; the host has a link
    // named as the bridge carrying the gateway; each machine's veth is on the switch.
    assert!(h.netns_exists(SW));
    assert!(h.has(SW, model::SWITCH_BRIDGE));
    assert!(h.has(SW, model::SWITCH_UPLINK));
    assert!(h.has("", BR));
    assert!(h.logged("addr replace 10.97.0.1/24 dev br-test"));
    assert!(h.logged(&format!(
        "netns exec {SW} sysctl -qew net.bridge.bridge-nf-call-iptables=0 \
         net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0"
    )));
    for m in ["m1", "m2"] {
        assert!(h.has(SW, &model::veth_name(m)));
        assert!(
            !h.has("", &model::veth_name(m)),
            "no machine link on the host"
        );
        assert!(h.has(&model::netns_name(m), "eth0"));
        assert!(h.logged(&format!(
            "-n {SW} link set {} master br0 up",
            model::veth_name(m)
        )));
        assert!(h.logged(&format!(
            "netns exec shoal-{m} sysctl -qew net.ipv4.ip_forward=1 \
             net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
             net.bridge.bridge-nf-call-arptables=0"
        )));
    }
    let out = go(&h, root, verb("rm", &["m1"])).unwrap();
    assert_eq!(
        out,
        "About to remove m1\nWARNING: This action will delete both local reference and remote instance.\nSuccessfully removed m1\n"
    );
    // The switch stays while a machine uses it.
    assert!(h.netns_exists(SW) && h.has("", BR));
    assert!(!h.has(SW, &model::veth_name("m1")));
    go(&h, root, verb("rm", &["m2"])).unwrap();
    assert!(h.is_clean(), "left: {}", h.leftovers());
    assert!(load_all(root).unwrap().is_empty());
}

#[test]
fn a_failed_step_rolls_back_everything_it_made() {
    for step in [
        "netns add shoal-sw-br-test",
        "netns exec shoal-sw-br-test sysctl",
        "-n shoal-sw-br-test link add name br0",
        "link add name br-test",
        "addr replace",
        "netns add shoal-m1",
        "-n shoal-sw-br-test link add name shm",
        "-n shoal-m1 route",
        "netns exec shoal-m1 sysctl",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut h = FakeHost::new();
        h.fail_on = Some(step.into());
        let err = go(&h, dir.path(), create_cmd("m1")).unwrap_err();
        assert!(err.to_string().contains("failed"), "{step}: {err}");
        assert!(h.is_clean(), "{step}: left {}", h.leftovers());
        assert!(!dir.path().join("m1").exists(), "{step}");
    }
}

#[test]
fn a_failed_second_machine_keeps_the_switch_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = FakeHost::new();
    go(&h, dir.path(), create_cmd("m1")).unwrap();
    h.fail_on = Some("-n shoal-m2 route".into());
    go(&h, dir.path(), create_cmd("m2")).unwrap_err();
    assert!(h.netns_exists(SW) && h.has("", BR));
    assert!(!h.netns_exists("shoal-m2"));
    assert!(!h.has(SW, &model::veth_name("m2")));
    assert_eq!(state(&h, dir.path(), "m1"), Live::Running);
}

#[test]
fn a_daemon_that_does_not_start_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = FakeHost::new();
    h.daemon_starts = false;
    let err = go(&h, dir.path(), create_cmd("m1")).unwrap_err();
    assert!(err.to_string().contains("did not start"), "{err}");
    assert!(h.is_clean(), "left: {}", h.leftovers());
    assert!(!dir.path().join("m1").exists());
}

#[test]
fn bad_input_is_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    let made = h.log.borrow().len();
    let e = go(&h, root, create_cmd("m1")).unwrap_err();
    assert_eq!(e.to_string(), "Docker machine \"m1\" already exists");
    let e = go(&h, root, create_cmd("my_vm")).unwrap_err();
    assert!(matches!(e, MachineError::InvalidName));
    let e = go(&h, root, verb("ip", &["nope"])).unwrap_err();
    assert!(e.to_string().contains("\"nope\" does not exist"), "{e}");
    let with = |subnet: &str, bridge: &str, cpus: Option<u32>, memory: Option<u64>| Cmd::Create {
        driver: "netns".into(),
        subnet: Some(subnet.into()),
        ip: None,
        bridge: bridge.into(),
        cpus,
        memory,
        name: "m9".into(),
    };
    let e = go(&h, root, with("10.50.0.0/24", BR, None, None)).unwrap_err();
    assert!(matches!(e, MachineError::SubnetMismatch(..)), "{e}");
    let e = go(&h, root, with("10.50.3.0/24", "br-other", None, None)).unwrap_err();
    assert!(matches!(e, MachineError::SubnetClash(..)), "{e}");
    let e = go(
        &h,
        root,
        with("10.60.3.0/24", "a-bridge-name-too-long", None, None),
    )
    .unwrap_err();
    assert!(matches!(e, MachineError::InvalidBridge(_)), "{e}");
    let e = go(&h, root, with("10.60.3.0/24", "br-other", Some(0), None)).unwrap_err();
    assert!(matches!(e, MachineError::InvalidResource(_)), "{e}");
    let e = go(&h, root, with("10.60.3.0/24", "br-other", None, Some(0))).unwrap_err();
    assert!(matches!(e, MachineError::InvalidResource(_)), "{e}");
    assert_eq!(
        h.log.borrow().len(),
        made,
        "no host command after the first create"
    );
    // A host interface named as the bridge, without its switch, is someone else's.
    h.links
        .borrow_mut()
        .insert((String::new(), "eth9".to_string()));
    let e = go(&h, root, with("10.60.3.0/24", "eth9", None, None)).unwrap_err();
    assert!(matches!(e, MachineError::ForeignBridge(_)), "{e}");
    assert!(h.has("", "eth9"), "a foreign link is left alone");
    assert_eq!(h.log.borrow().len(), made);
    let mut not_root = FakeHost::new();
    not_root.root = false;
    for cmd in [
        create_cmd("m2"),
        verb("stop", &["m1"]),
        verb("start", &["m1"]),
        verb("restart", &["m1"]),
        verb("rm", &["m1"]),
        verb("ssh", &["m1"]),
    ] {
        let e = go(&not_root, root, cmd).unwrap_err();
        assert!(matches!(e, MachineError::NotRoot(_)), "{e}");
    }
    assert!(not_root.log.borrow().is_empty());
    assert!(!root.join("m2").exists());
}

#[test]
fn stop_and_start_follow_the_machine_state_with_docker_machine_messages() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    let out = go(&h, root, verb("stop", &["m1"])).unwrap();
    assert_eq!(out, "Stopping \"m1\"...\nMachine \"m1\" was stopped.\n");
    assert_eq!(state(&h, root, "m1"), Live::Stopped);
    assert_eq!(go(&h, root, verb("status", &["m1"])).unwrap(), "Stopped\n");
    assert!(h.pids.borrow().is_empty());
    assert!(h.logged("-n shoal-m1 link set eth0 down"));
    let e = go(&h, root, verb("stop", &["m1"])).unwrap_err();
    assert_eq!(e.to_string(), "Machine \"m1\" is already stopped.");
    let e = go(&h, root, verb("ssh", &["m1"])).unwrap_err();
    assert!(e.to_string().contains("is not running"), "{e}");
    let out = go(&h, root, verb("start", &["m1"])).unwrap();
    assert_eq!(
        out,
        "Starting \"m1\"...\nMachine \"m1\" was started.\nStarted machines may have new IP addresses. You may need to re-run the `shoal machine env` command.\n"
    );
    assert_eq!(go(&h, root, verb("status", &["m1"])).unwrap(), "Running\n");
    let e = go(&h, root, verb("start", &["m1"])).unwrap_err();
    assert_eq!(e.to_string(), "Machine \"m1\" is already running.");
    assert_eq!(
        run(&h, root, verb("ssh", &["m1"]), &mut Vec::new()).unwrap(),
        0
    );
}

#[test]
fn restart_cycles_a_running_machine_and_starts_a_stopped_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    go(&h, root, create_cmd("m2")).unwrap();
    go(&h, root, verb("stop", &["m2"])).unwrap();
    let pid1 = load(root, "m1").unwrap().pid.unwrap();
    let out = go(&h, root, verb("restart", &["m1", "m2"])).unwrap();
    assert_eq!(
        out,
        "Restarting \"m1\"...\nRestarting \"m2\"...\nStarting \"m2\"...\nMachine \"m2\" was started.\n\
         Restarted machines may have new IP addresses. You may need to re-run the `shoal machine env` command.\n"
    );
    let new1 = load(root, "m1").unwrap().pid.unwrap();
    assert_ne!(pid1, new1, "a new daemon");
    assert!(!h.pids.borrow().contains(&pid1), "the old one is gone");
    assert_eq!(state(&h, root, "m1"), Live::Running);
    assert_eq!(state(&h, root, "m2"), Live::Running);
}

#[test]
fn verbs_take_several_names_and_an_unknown_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    go(&h, root, create_cmd("m2")).unwrap();
    assert_eq!(
        go(&h, root, verb("ip", &["m1", "m2"])).unwrap(),
        "10.97.0.2\n10.97.0.3\n"
    );
    let e = go(&h, root, verb("stop", &["m1", "nope"])).unwrap_err();
    assert!(e.to_string().contains("\"nope\" does not exist"), "{e}");
    assert_eq!(state(&h, root, "m1"), Live::Running);
    go(&h, root, verb("stop", &["m1", "m2"])).unwrap();
    assert_eq!(state(&h, root, "m1"), Live::Stopped);
    assert_eq!(state(&h, root, "m2"), Live::Stopped);
    // One already stopped: the other still starts, the error is reported.
    go(&h, root, verb("start", &["m1"])).unwrap();
    let e = go(&h, root, verb("start", &["m1", "m2"])).unwrap_err();
    assert_eq!(e.to_string(), "Machine \"m1\" is already running.");
    assert_eq!(state(&h, root, "m2"), Live::Running);
    let e = go(&h, root, verb("status", &["m1", "m2"])).unwrap_err();
    assert!(matches!(e, MachineError::ExpectedOne));
    go(&h, root, verb("rm", &["m1", "m2"])).unwrap();
    assert!(h.is_clean(), "left: {}", h.leftovers());
}

#[test]
fn no_name_means_the_default_machine() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    let e = go(&h, root, verb("ip", &[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Error: No machine name(s) specified and no \"default\" machine exists"
    );
    let e = go(&h, root, verb("rm", &[])).unwrap_err();
    assert!(matches!(e, MachineError::NoMachineSpecified));
    go(&h, root, create_cmd("default")).unwrap();
    assert_eq!(go(&h, root, verb("ip", &[])).unwrap(), "10.97.0.2\n");
    assert_eq!(go(&h, root, verb("status", &[])).unwrap(), "Running\n");
    assert_eq!(
        go(&h, root, verb("url", &[])).unwrap(),
        "tcp://10.97.0.2:2376\n"
    );
}

#[test]
fn rm_force_goes_on_past_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    let e = go(&h, root, verb("rm", &["nope", "m1"])).unwrap_err();
    assert!(
        e.to_string().starts_with("Error removing host \"nope\": "),
        "{e}"
    );
    assert!(!root.join("m1").exists(), "the known one is removed");
    go(&h, root, create_cmd("m1")).unwrap();
    let out = go(&h, root, verb("rm-f", &["nope", "m1"])).unwrap();
    assert!(out.ends_with("Successfully removed m1\n"), "{out}");
    assert!(h.is_clean(), "left: {}", h.leftovers());
}

#[test]
fn start_rebuilds_switch_and_namespace_after_a_host_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    h.reboot();
    // It was running and nobody stopped it.
    assert!(matches!(state(&h, root, "m1"), Live::Error(_)));
    go(&h, root, verb("start", &["m1"])).unwrap();
    assert!(h.netns_exists(SW) && h.has(SW, "br0") && h.has(SW, "host"));
    assert!(h.has("", BR));
    assert!(h.netns_exists("shoal-m1"));
    assert!(h.has(SW, &model::veth_name("m1")));
    assert_eq!(state(&h, root, "m1"), Live::Running);
    // A switch whose host link was deleted gets it back.
    h.del_link(&(String::new(), BR.to_string()));
    go(&h, root, verb("restart", &["m1"])).unwrap();
    assert!(h.has("", BR) && h.has(SW, "host"));
}

#[test]
fn a_daemon_that_died_shows_error_and_start_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    h.pids.borrow_mut().clear();
    let log = Paths::new(root, "m1").log();
    let want = format!("daemon exited; see {}", log.display());
    assert_eq!(state(&h, root, "m1"), Live::Error(want.clone()));
    assert_eq!(go(&h, root, verb("status", &["m1"])).unwrap(), "Error\n");
    let row = ls_row(&h, root, &load(root, "m1").unwrap(), "");
    assert_eq!(
        (row.state.as_str(), row.errors.as_str()),
        ("Error", want.as_str())
    );
    assert_eq!(row.url, "");
    let e = go(&h, root, verb("ssh", &["m1"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Error: machine \"m1\" is not running ({want}). Start it with \"shoal machine start m1\"")
    );
    go(&h, root, verb("start", &["m1"])).unwrap();
    assert_eq!(state(&h, root, "m1"), Live::Running);
    // Alive but not answering is an error too; stop still works on it.
    h.answering.set(false);
    assert!(
        matches!(state(&h, root, "m1"), Live::Error(w) if w.starts_with("daemon not answering"))
    );
    go(&h, root, verb("stop", &["m1"])).unwrap();
    assert_eq!(state(&h, root, "m1"), Live::Stopped);
}

#[test]
fn ls_marks_the_active_machine_and_blanks_url_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    let url = load(root, "m1").unwrap().url();
    let row = ls_row(&h, root, &load(root, "m1").unwrap(), &url);
    assert!(row.active);
    assert_eq!(row.state, "Running");
    assert_eq!(row.url, url);
    go(&h, root, verb("stop", &["m1"])).unwrap();
    let row = ls_row(&h, root, &load(root, "m1").unwrap(), &url);
    assert!(!row.active);
    assert_eq!(row.state, "Stopped");
    assert_eq!(row.url, "");
}

#[test]
fn active_names_the_machine_docker_host_points_at() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    go(&h, root, create_cmd("m2")).unwrap();
    let url = load(root, "m2").unwrap().url();
    let rows: Vec<LsRow> = load_all(root)
        .unwrap()
        .iter()
        .map(|r| ls_row(&h, root, r, &url))
        .collect();
    assert_eq!(
        rows.iter().map(|r| r.active).collect::<Vec<_>>(),
        [false, true]
    );
    // Without DOCKER_HOST pointing at a machine, none is active (the test's environment has
    // no machine URL in DOCKER_HOST).
    let e = go(&h, root, Cmd::Active).unwrap_err();
    assert_eq!(e.to_string(), "No active host found");
}

#[test]
fn ls_lists_a_machine_whose_config_does_not_load_as_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    std::fs::create_dir_all(root.join("broken")).unwrap();
    std::fs::write(root.join("broken/config.json"), "{not json").unwrap();
    // A directory without a config (a create under way) is not listed.
    std::fs::create_dir_all(root.join("making")).unwrap();
    let out = go(
        &h,
        root,
        Cmd::Ls {
            quiet: false,
            filter: vec![],
            format: Some("{{.Name}}|{{.DriverName}}|{{.State}}|{{.Error}}".into()),
        },
    )
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "broken|not found|Error|{}: ",
            root.join("broken/config.json").display()
        )),
        "{out}"
    );
    assert!(lines[1].starts_with("m1|netns|Running|"), "{out}");
}

#[test]
fn ls_quiet_filter_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    for m in ["m1", "m2", "other"] {
        go(&h, root, create_cmd(m)).unwrap();
    }
    go(&h, root, verb("stop", &["m2"])).unwrap();
    let ls = |quiet: bool, filter: &[&str], format: Option<&str>| {
        go(
            &h,
            root,
            Cmd::Ls {
                quiet,
                filter: names(filter),
                format: format.map(str::to_string),
            },
        )
    };
    assert_eq!(ls(true, &[], None).unwrap(), "m1\nm2\nother\n");
    assert_eq!(ls(true, &["name=^m"], None).unwrap(), "m1\nm2\n");
    assert_eq!(ls(true, &["state=stopped"], None).unwrap(), "m2\n");
    assert_eq!(
        ls(true, &["state=Stopped", "state=Running", "name=^o"], None).unwrap(),
        "other\n"
    );
    assert_eq!(
        ls(true, &["driver=netns", "name=m2"], None).unwrap(),
        "m2\n"
    );
    assert_eq!(ls(true, &["driver=virtualbox"], None).unwrap(), "");
    assert_eq!(ls(true, &["label=a=b"], None).unwrap(), "");
    assert_eq!(
        ls(false, &["name=^m"], Some("{{.Name}}: {{.State}}")).unwrap(),
        "m1: Running\nm2: Stopped\n"
    );
    assert_eq!(
        ls(
            false,
            &["name=1$"],
            Some("table {{.Name}}\\t{{.DriverName}}")
        )
        .unwrap(),
        "NAME   DRIVER\nm1     netns\n"
    );
    let table = ls(false, &[], None).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS"]
    );
    assert!(
        lines[2].starts_with("m2 ") && lines[2].contains(" Stopped "),
        "{table}"
    );
    for bad in ["nokey", "color=red", "name=("] {
        let e = ls(false, &[bad], None).unwrap_err();
        assert!(matches!(e, MachineError::Filter(_)), "{bad}: {e}");
    }
    assert_eq!(
        ls(false, &["nokey"], None).unwrap_err().to_string(),
        "Unsupported filter syntax"
    );
    assert_eq!(
        ls(false, &["color=red"], None).unwrap_err().to_string(),
        "Unsupported filter key 'color'"
    );
    assert!(matches!(
        ls(false, &[], Some("{{.Name")).unwrap_err(),
        MachineError::Template(_)
    ));
}

#[test]
fn inspect_prints_docker_machine_json_and_formats_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(
        &h,
        root,
        Cmd::Create {
            driver: "netns".into(),
            subnet: None,
            ip: Some(Ipv4Addr::new(10, 97, 0, 9)),
            bridge: BR.into(),
            cpus: Some(2),
            memory: Some(512),
            name: "m1".into(),
        },
    )
    .unwrap();
    let inspect = |format: Option<&str>| {
        go(
            &h,
            root,
            Cmd::Inspect {
                format: format.map(str::to_string),
                names: names(&["m1"]),
            },
        )
        .unwrap()
    };
    let text = inspect(None);
    assert!(
        text.starts_with("{\n    \"ConfigVersion\": 3,\n    \"Driver\": {\n"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["Name"], "m1");
    assert_eq!(v["DriverName"], "netns");
    assert_eq!(v["Driver"]["IPAddress"], "10.97.0.9");
    assert_eq!(v["Driver"]["MachineName"], "m1");
    assert_eq!(v["Driver"]["CPU"], 2);
    assert_eq!(v["Driver"]["Memory"], 512);
    assert_eq!(v["Driver"]["SwitchNetns"], SW);
    assert!(v["HostOptions"]["EngineOptions"].is_object());
    assert_eq!(inspect(Some("{{.Driver.IPAddress}}")), "10.97.0.9\n");
    assert_eq!(
        inspect(Some("{{.Name}} on {{ .Driver.Bridge }}")),
        "m1 on br-test\n"
    );
    assert_eq!(
        inspect(Some("{{json .Driver.Subnet}}")),
        "\"10.97.0.0/24\"\n"
    );
    let e = go(
        &h,
        root,
        Cmd::Inspect {
            format: None,
            names: names(&["m1", "m2"]),
        },
    )
    .unwrap_err();
    assert!(matches!(e, MachineError::ExpectedOne));
}

#[test]
fn create_resources_are_recorded_and_passed_to_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(
        &h,
        root,
        Cmd::Create {
            driver: "netns".into(),
            subnet: None,
            ip: None,
            bridge: BR.into(),
            cpus: Some(3),
            memory: Some(1024),
            name: "m1".into(),
        },
    )
    .unwrap();
    go(&h, root, create_cmd("m2")).unwrap();
    let rec = load(root, "m1").unwrap();
    assert_eq!((rec.cpus, rec.memory), (Some(3), Some(1024)));
    let args = h.daemon_args.borrow().clone();
    let m1 = root.join("m1");
    let tls = |dir: &Path, ip: &str| {
        let mut v = names(&["-H", &format!("tcp://{ip}:2376"), "--tlsverify"]);
        for (flag, file) in [
            ("--tlscacert", "ca.pem"),
            ("--tlscert", "server.pem"),
            ("--tlskey", "server-key.pem"),
        ] {
            v.push(flag.to_string());
            v.push(dir.join(file).display().to_string());
        }
        v
    };
    let mut want_m1 = tls(&m1, &rec.ip.to_string());
    want_m1.extend(names(&["--node-cpus", "3", "--node-memory", "1024"]));
    let m2 = load(root, "m2").unwrap();
    assert_eq!(args, [want_m1, tls(&root.join("m2"), &m2.ip.to_string())]);
    for file in [
        "ca.pem",
        "cert.pem",
        "key.pem",
        "server.pem",
        "server-key.pem",
    ] {
        assert!(m1.join(file).exists(), "{file} missing");
    }
    // A restart passes them again.
    go(&h, root, verb("restart", &["m1"])).unwrap();
    assert_eq!(h.daemon_args.borrow()[2], args[0]);
}

fn env_cmd(shell: Option<&str>, unset: bool, list: &[&str]) -> Cmd {
    Cmd::Env {
        unset,
        shell: shell.map(str::to_string),
        names: names(list),
    }
}

#[test]
fn env_prints_each_shells_syntax_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    let url = load(root, "m1").unwrap().url();
    assert!(
        url.starts_with("tcp://10.") && url.ends_with(":2376"),
        "{url}"
    );
    let certs = root.join("m1").display().to_string();
    let env = |shell: Option<&str>| go(&h, root, env_cmd(shell, false, &["m1"])).unwrap();
    assert_eq!(
        env(Some("bash")),
        format!(
            "export DOCKER_TLS_VERIFY=\"1\"\nexport DOCKER_HOST=\"{url}\"\n\
             export DOCKER_CERT_PATH=\"{certs}\"\nexport DOCKER_MACHINE_NAME=\"m1\"\n\
             # Run this command to configure your shell: \n# eval $(shoal machine env --shell bash m1)\n"
        )
    );
    assert_eq!(
        env(Some("fish")),
        format!(
            "set -gx DOCKER_TLS_VERIFY \"1\";\nset -gx DOCKER_HOST \"{url}\";\n\
             set -gx DOCKER_CERT_PATH \"{certs}\";\nset -gx DOCKER_MACHINE_NAME \"m1\";\n\
             # Run this command to configure your shell: \n# eval (shoal machine env --shell fish m1)\n"
        )
    );
    assert_eq!(
        env(Some("powershell")),
        format!(
            "$Env:DOCKER_TLS_VERIFY = \"1\"\n$Env:DOCKER_HOST = \"{url}\"\n\
             $Env:DOCKER_CERT_PATH = \"{certs}\"\n$Env:DOCKER_MACHINE_NAME = \"m1\"\n\
             # Run this command to configure your shell: \n\
             # & shoal machine env --shell powershell m1 | Invoke-Expression\n"
        )
    );
    assert_eq!(
        env(Some("cmd")),
        format!(
            "SET DOCKER_TLS_VERIFY=1\nSET DOCKER_HOST={url}\n\
             SET DOCKER_CERT_PATH={certs}\nSET DOCKER_MACHINE_NAME=m1\n\
             REM Run this command to configure your shell: \n\
             REM \t@FOR /f \"tokens=*\" %i IN ('shoal machine env --shell cmd m1') DO @%i\n"
        )
    );
    assert!(env(Some("zsh")).starts_with("export DOCKER_TLS_VERIFY="));
    assert!(env(Some("/usr/bin/fish")).starts_with("set -gx DOCKER_TLS_VERIFY "));
    let unset = |shell: Option<&str>| go(&h, root, env_cmd(shell, true, &[])).unwrap();
    assert_eq!(
        unset(Some("sh")),
        "unset DOCKER_TLS_VERIFY\nunset DOCKER_HOST\nunset DOCKER_CERT_PATH\nunset DOCKER_MACHINE_NAME\n\
         # Run this command to configure your shell: \n# eval $(shoal machine env --shell sh --unset)\n"
    );
    assert!(unset(Some("fish")).starts_with("set -e DOCKER_TLS_VERIFY;\nset -e DOCKER_HOST;\n"));
    assert!(unset(Some("powershell")).starts_with("Remove-Item Env:\\\\DOCKER_TLS_VERIFY\n"));
    assert!(unset(Some("cmd")).starts_with("SET DOCKER_TLS_VERIFY=\n"));
    let e = go(&h, root, env_cmd(None, true, &["m1"])).unwrap_err();
    assert!(matches!(e, MachineError::UnsetWithName));
    go(&h, root, verb("stop", &["m1"])).unwrap();
    let e = go(&h, root, env_cmd(Some("bash"), false, &["m1"])).unwrap_err();
    assert!(e.to_string().contains("is not running"), "{e}");
}

#[test]
fn scp_copies_between_host_and_machines_homes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let h = FakeHost::new();
    go(&h, root, create_cmd("m1")).unwrap();
    go(&h, root, create_cmd("m2")).unwrap();
    let local = root.join("local.txt");
    std::fs::write(&local, "data").unwrap();
    let scp = |recursive: bool, src: &str, dst: &str| {
        go(
            &h,
            root,
            Cmd::Scp {
                recursive,
                src: src.into(),
                dst: dst.into(),
            },
        )
    };
    let home1 = Paths::new(root, "m1").home();
    let home2 = Paths::new(root, "m2").home();
    scp(false, local.to_str().unwrap(), "m1:~/a.txt").unwrap();
    assert_eq!(
        std::fs::read_to_string(home1.join("a.txt")).unwrap(),
        "data"
    );
    scp(false, "m1:a.txt", "m2:").unwrap();
    assert_eq!(
        std::fs::read_to_string(home2.join("a.txt")).unwrap(),
        "data"
    );
    let back = root.join("back.txt");
    scp(false, "m2:~/a.txt", back.to_str().unwrap()).unwrap();
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "data");
    std::fs::create_dir_all(home1.join("tree/sub")).unwrap();
    std::fs::write(home1.join("tree/sub/f"), "x").unwrap();
    let e = scp(false, "m1:tree", "m2:").unwrap_err();
    assert!(e.to_string().ends_with("not a regular file"), "{e}");
    scp(true, "m1:tree", "m2:").unwrap();
    assert_eq!(
        std::fs::read_to_string(home2.join("tree/sub/f")).unwrap(),
        "x"
    );
    let e = scp(false, "m1:missing", "m2:").unwrap_err();
    assert!(e.to_string().ends_with("No such file or directory"), "{e}");
    let e = scp(false, "nope:x", "m2:").unwrap_err();
    assert!(matches!(e, MachineError::NotFound(_)), "{e}");
    go(&h, root, verb("stop", &["m2"])).unwrap();
    let e = scp(false, "m1:a.txt", "m2:b.txt").unwrap_err();
    assert!(e.to_string().contains("is not running"), "{e}");
    assert!(!home2.join("b.txt").exists());
}

#[test]
fn storage_root_defaults_when_unset_or_empty_and_anchors_relative_paths() {
    let cwd = Some(PathBuf::from("/home/u"));
    let default = PathBuf::from("/var/lib/shoal/machines");
    assert_eq!(storage_root_from(None, cwd.clone()), default);
    assert_eq!(storage_root_from(Some("".into()), cwd.clone()), default);
    assert_eq!(
        storage_root_from(Some("m".into()), cwd.clone()),
        PathBuf::from("/home/u/m")
    );
    assert_eq!(
        storage_root_from(Some("/srv/m".into()), cwd),
        PathBuf::from("/srv/m")
    );
}
