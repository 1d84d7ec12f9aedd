//! `shoal testimage` (the built-in test workload) through the real binary: `--port 0` announces
//! the port it took, the page shows the host's name, `/crash` exits with code 3, echo over TCP
//! and UDP; and the `process` runtime running the built-in images (`friendlyhello` with no
//! command, `shoal/testimage` with args) under the real shim.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_agent::process::{kill_all_blocking, ProcessRuntime, ShimCommand};
use shoal_agent::runtime::{LogOptions, RunSpec, Runtime};

const T: Duration = Duration::from_secs(20);

fn shoal() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoal"))
}

/// A `shoal testimage` process, killed when dropped (also on panic).
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts `shoal testimage ARGS --port 0` and reads the port from its first line.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(shoal())
            .arg("testimage")
            .args(args)
            .args(["--port", "0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn shoal testimage");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        let port = listening_port(&line);
        Server { child, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of a `listening on 0.0.0.0:PORT[/udp]` line.
fn listening_port(line: &str) -> u16 {
    let addr = line
        .trim()
        .strip_prefix("listening on 0.0.0.0:")
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"));
    let port = addr.strip_suffix("/udp").unwrap_or(addr);
    let port: u16 = port.parse().expect("port");
    assert_ne!(port, 0, "the actual port is announced");
    port
}

/// One `GET path` on a fresh connection: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, T).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read until close");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_string())
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("hostname")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn hello_announces_its_port_serves_the_page_and_crashes_with_code_3() {
    let mut server = Server::start(&["hello"], &[("NAME", "Shoal")]);
    let (status, page) = get(server.addr(), "/");
    assert_eq!(status, 200);
    assert_eq!(
        page,
        format!(
            "<h3>Hello Shoal!</h3><b>Hostname:</b> {}<br/><b>Visits:</b> <i>cannot connect to \
             Redis, counter disabled</i>",
            hostname()
        )
    );
    assert_eq!(get(server.addr(), "/health"), (200, "ok\n".to_string()));
    let (status, _) = get(server.addr(), "/crash");
    assert_eq!(status, 200, "the crash is answered first");
    let deadline = Instant::now() + T;
    let code = loop {
        if let Some(st) = server.child.try_wait().expect("wait") {
            break st.code();
        }
        assert!(Instant::now() < deadline, "still running after /crash");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(3));
}

#[test]
fn bad_usage_and_a_bad_port_variable_exit_2() {
    let out = Command::new(shoal())
        .args(["testimage", "hello", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown argument: --bogus"), "{err}");
    let out = Command::new(shoal())
        .args(["testimage", "hello"])
        .env("PORT", "not-a-port")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid port \"not-a-port\""));
}

#[test]
fn echo_over_tcp_and_udp() {
    let tcp = Server::start(&["echo"], &[]);
    let mut s = TcpStream::connect_timeout(&tcp.addr(), T).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(b"hello echo").expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("echo");
    assert_eq!(back, b"hello echo");

    let udp = Server::start(&["echo", "--udp"], &[]);
    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    c.set_read_timeout(Some(T)).expect("timeout");
    c.send_to(b"datagram", udp.addr()).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).expect("reply");
    assert_eq!((&buf[..n], from), (&b"datagram"[..], udp.addr()));
}

/// A state root whose task processes are killed when dropped (also on panic).
struct Harness {
    dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        kill_all_blocking(self.dir.path());
    }
}

/// Starts `spec` on `rt` and returns the port its first output line announces.
async fn start_task(rt: &ProcessRuntime, spec: &RunSpec) -> u16 {
    rt.prepare(spec).await.expect("prepare");
    rt.start(&spec.task_id).await.expect("start");
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let stream = rt.logs(&spec.task_id, opts).await.expect("logs");
    let first = tokio::time::timeout(T, stream.take(1).collect::<Vec<_>>())
        .await
        .expect("the task announces its port");
    let line = first.first().expect("a first line");
    listening_port(&String::from_utf8_lossy(&line.line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_runtime_runs_the_builtin_images() {
    let h = Harness {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let rt = ProcessRuntime::new(
        h.dir.path().to_path_buf(),
        ShimCommand {
            program: shoal(),
            args: vec!["shim".into()],
        },
    );

    // friendlyhello with neither command nor args: `shoal testimage hello`.
    let mut hello = RunSpec::new("hello1", Vec::new());
    hello.image = "john/friendlyhello:part2".into();
    hello.uses_image_entrypoint = true;
    hello.env = vec!["PORT=0".into(), "NAME=Swarm".into()];
    let port = start_task(&rt, &hello).await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (status, page) = tokio::task::spawn_blocking(move || get(addr, "/"))
        .await
        .expect("request");
    assert_eq!(status, 200);
    assert!(
        page.starts_with("<h3>Hello Swarm!</h3><b>Hostname:</b> "),
        "{page}"
    );

    // shoal/testimage with args only: `shoal testimage echo --port 0`.
    let mut echo = RunSpec::new("echo1", vec!["echo".into(), "--port".into(), "0".into()]);
    echo.image = "shoal/testimage:latest".into();
    echo.uses_image_entrypoint = true;
    let port = start_task(&rt, &echo).await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let back = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect_timeout(&addr, T).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        s.write_all(b"through the shim").expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("echo");
        back
    })
    .await
    .expect("echo");
    assert_eq!(back, b"through the shim");

    for id in ["hello1", "echo1"] {
        rt.stop(id, None, Duration::from_secs(5))
            .await
            .expect("stop");
        let status = tokio::time::timeout(T, rt.wait(id))
            .await
            .expect("exits")
            .expect("wait");
        assert_eq!(status.signal, Some(15), "{id} ended by SIGTERM: {status:?}");
        rt.remove(id).await.expect("remove");
    }
}
