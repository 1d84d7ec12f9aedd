//! The servers on ephemeral ports, spoken to over loopback: the page, the routes, keep-alive,
//! the health switch, TCP echo with concurrent connections, UDP echo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use shoal_testimage::{bind_tcp, bind_udp, serve_hello, serve_tcp_echo, serve_udp_echo, Hello};

const T: Duration = Duration::from_secs(10);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn start_hello(hello: Hello) -> SocketAddr {
    let listener = bind_tcp(0).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || serve_hello(listener, hello));
    loopback(port)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, T).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s
}

/// A response: status, headers (lowercased names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_response(r: &mut BufReader<TcpStream>, head_only: bool) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header has a colon");
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().expect("length"))
        .expect("content-length");
    let mut body = vec![0; if head_only { 0 } else { len }];
    r.read_exact(&mut body).expect("body");
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("utf-8"),
    }
}

/// Sends `request` on a kept-alive connection and reads the answer.
fn exchange(r: &mut BufReader<TcpStream>, request: &str) -> Response {
    r.get_mut()
        .write_all(request.as_bytes())
        .expect("send request");
    read_response(r, request.starts_with("HEAD "))
}

fn get(r: &mut BufReader<TcpStream>, path: &str) -> Response {
    exchange(r, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}

#[test]
fn hello_serves_the_page_and_routes_on_one_kept_alive_connection() {
    let addr = start_hello(Hello::new("Shoal", "0123456789ab"));
    let mut c = BufReader::new(connect(addr));

    let page = get(&mut c, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.body,
        "<h3>Hello Shoal!</h3><b>Hostname:</b> 0123456789ab<br/><b>Visits:</b> <i>cannot \
         connect to Redis, counter disabled</i>"
    );
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert_eq!(
        page.header("connection"),
        None,
        "HTTP/1.1 keeps the connection"
    );

    let host = get(&mut c, "/hostname");
    assert_eq!((host.status, host.body.as_str()), (200, "0123456789ab\n"));

    let echo = get(&mut c, "/echo?hello%20there");
    assert_eq!((echo.status, echo.body.as_str()), (200, "hello%20there"));
    let posted = exchange(
        &mut c,
        "POST /echo HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello\nworld",
    );
    assert_eq!(posted.body, "hello\nworld");

    let head = exchange(&mut c, "HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );

    let missing = get(&mut c, "/nope");
    assert_eq!(missing.status, 404);
    let wrong_method = exchange(&mut c, "DELETE /health HTTP/1.1\r\n\r\n");
    assert_eq!(wrong_method.status, 405);

    // The same connection still answers: keep-alive held through every request above.
    assert_eq!(get(&mut c, "/health").status, 200);
}

#[test]
fn health_fails_on_request_and_heals() {
    let addr = start_hello(Hello::new("world", "h"));
    let mut c = BufReader::new(connect(addr));
    let ok = get(&mut c, "/health");
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));
    assert_eq!(get(&mut c, "/health/fail").status, 200);
    // Every connection sees it.
    let mut other = BufReader::new(connect(addr));
    let bad = get(&mut other, "/health");
    assert_eq!((bad.status, bad.body.as_str()), (500, "unhealthy\n"));
    assert_eq!(get(&mut c, "/health").status, 500);
    assert_eq!(get(&mut c, "/health/ok").status, 200);
    assert_eq!(get(&mut other, "/health").status, 200);
}

#[test]
fn connection_close_and_http10_end_the_connection() {
    let addr = start_hello(Hello::new("world", "h"));
    for request in [
        "GET /hostname HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /hostname HTTP/1.0\r\n\r\n",
    ] {
        let mut c = BufReader::new(connect(addr));
        let r = exchange(&mut c, request);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("the server closes");
        assert!(rest.is_empty(), "nothing after the response: {rest:?}");
    }
    // HTTP/1.0 with keep-alive stays open and says so.
    let mut c = BufReader::new(connect(addr));
    let r = exchange(
        &mut c,
        "GET /hostname HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(get(&mut c, "/hostname").body, "h\n");
}

#[test]
fn malformed_requests_get_400_and_a_closed_connection() {
    let addr = start_hello(Hello::new("world", "h"));
    let mut c = BufReader::new(connect(addr));
    let r = exchange(&mut c, "NONSENSE\r\n\r\n");
    assert_eq!(r.status, 400);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty());
}

fn start_tcp_echo() -> SocketAddr {
    let listener = bind_tcp(0).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || serve_tcp_echo(listener));
    loopback(port)
}

#[test]
fn tcp_echo_returns_every_byte_on_concurrent_connections() {
    let addr = start_tcp_echo();
    // Several connections open at once, each sending more than one buffer's worth.
    let conns: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..300_000u32).map(|n| (n as u8) ^ (i as u8)).collect();
                let mut writer = conn.try_clone().expect("clone");
                let sent = data.clone();
                let sender = std::thread::spawn(move || {
                    writer.write_all(&sent).expect("send");
                    writer
                        .shutdown(std::net::Shutdown::Write)
                        .expect("shutdown");
                });
                let mut got = Vec::new();
                let mut reader = conn;
                reader.read_to_end(&mut got).expect("echoed until close");
                sender.join().expect("sender");
                assert_eq!(got.len(), data.len(), "connection {i}");
                assert!(got == data, "connection {i}: bytes differ");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("connection worker");
    }
}

#[test]
fn udp_echo_returns_each_datagram_to_its_sender() {
    let socket = bind_udp(0).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    std::thread::spawn(move || serve_udp_echo(socket));
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("client");
    client.set_read_timeout(Some(T)).expect("timeout");
    client.connect(loopback(port)).expect("connect");
    let mut buf = [0u8; 2048];
    for msg in [&b"ping"[..], &[7u8; 1400][..], b""] {
        client.send(msg).expect("send");
        let n = client.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], msg);
    }
}
