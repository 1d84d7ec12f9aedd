//! Tests of the userspace routing mesh on loopback: backends are started in-test on ephemeral
//! ports; published ports are free ports found just before use.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

use super::*;

/// Generous bound on anything that should happen at once (never a timing assertion: only
/// "it did not hang").
const GUARD: Duration = Duration::from_secs(10);

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    s.local_addr().expect("addr").port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A port on loopback where nothing listens.
fn dead_addr() -> SocketAddr {
    loopback(free_tcp_port())
}

/// A backend that writes its name to every connection and closes it.
async fn name_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind(loopback(0)).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
            });
        }
    });
    addr
}

/// A backend that echoes every connection until end of file, then closes.
async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind(loopback(0)).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A UDP backend that answers each datagram with its name followed by the datagram.
async fn udp_backend(name: &'static str) -> SocketAddr {
    let s = UdpSocket::bind(loopback(0)).await.expect("bind");
    let addr = s.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let mut reply = name.as_bytes().to_vec();
            reply.push(b':');
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    addr
}

async fn read_all(port: u16) -> io::Result<String> {
    let mut s = TcpStream::connect(loopback(port)).await?;
    let mut out = String::new();
    tokio::time::timeout(GUARD, s.read_to_string(&mut out))
        .await
        .map_err(|_| io::Error::other("hung"))??;
    Ok(out)
}

fn configs() -> [ProxyConfig; 2] {
    [
        ProxyConfig::default(),
        ProxyConfig {
            splice: false,
            ..ProxyConfig::default()
        },
    ]
}

#[tokio::test]
async fn tcp_round_robin_over_three_backends() {
    let backends = vec![
        name_backend("a").await,
        name_backend("b").await,
        name_backend("c").await,
    ];
    let proxy = Proxy::new();
    let port = free_tcp_port();
    proxy
        .set_port(Protocol::Tcp, port, backends)
        .await
        .expect("publish");
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(read_all(port).await.expect("through the proxy"));
    }
    assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
    assert_eq!(proxy.ports(), vec![(Protocol::Tcp, port)]);
}

#[tokio::test]
async fn tcp_backend_swap_keeps_established_connections() {
    let echo = echo_backend().await;
    let other = name_backend("other").await;
    let proxy = Proxy::new();
    let port = free_tcp_port();
    proxy
        .set_port(Protocol::Tcp, port, vec![echo])
        .await
        .expect("publish");
    let mut old = TcpStream::connect(loopback(port)).await.expect("connect");
    old.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    old.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping");

    proxy
        .set_port(Protocol::Tcp, port, vec![other])
        .await
        .expect("swap");
    assert_eq!(read_all(port).await.expect("new connection"), "other");
    // The connection made before the swap still reaches the old backend.
    old.write_all(b"pong").await.expect("write");
    old.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"pong");
    assert_eq!(proxy.ports(), vec![(Protocol::Tcp, port)]);
}

#[tokio::test]
async fn tcp_zero_backends_closes_client_at_once() {
    let proxy = Proxy::new();
    let port = free_tcp_port();
    proxy
        .set_port(Protocol::Tcp, port, Vec::new())
        .await
        .expect("publish");
    let mut s = TcpStream::connect(loopback(port)).await.expect("connect");
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .expect("closed rather than left hanging");
    match r {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("read {n} bytes from a port with no backend"),
    }
    // Backends arriving later are used.
    let b = name_backend("late").await;
    proxy
        .set_port(Protocol::Tcp, port, vec![b])
        .await
        .expect("swap");
    assert_eq!(read_all(port).await.expect("through the proxy"), "late");
}

#[tokio::test]
async fn tcp_dead_backends_are_skipped() {
    let live = name_backend("live").await;
    let proxy = Proxy::new();
    let port = free_tcp_port();
    proxy
        .set_port(Protocol::Tcp, port, vec![dead_addr(), live, dead_addr()])
        .await
        .expect("publish");
    for _ in 0..4 {
        assert_eq!(read_all(port).await.expect("through the proxy"), "live");
    }
    // All dead: the client is closed, not left waiting.
    proxy
        .set_port(Protocol::Tcp, port, vec![dead_addr(), dead_addr()])
        .await
        .expect("swap");
    match read_all(port).await {
        Ok(s) => assert_eq!(s, ""),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
}

#[tokio::test]
async fn tcp_connect_timeout_moves_on() {
    // A backend whose SYN is never answered: an address on TEST-NET-1 (RFC 5737), unroutable
    // here. If this machine has no route at all the connect fails at once, which is also fine.
    let live = name_backend("live").await;
    let proxy = Proxy::with_config(ProxyConfig {
        connect_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    });
    let port = free_tcp_port();
    let blackhole = SocketAddr::from(([192, 0, 2, 1], 9));
    proxy
        .set_port(Protocol::Tcp, port, vec![blackhole, live])
        .await
        .expect("publish");
    for _ in 0..2 {
        assert_eq!(read_all(port).await.expect("through the proxy"), "live");
    }
}

#[tokio::test]
async fn tcp_half_close_client_first() {
    for config in configs() {
        // The backend reads until end of file, then answers with the byte count.
        let l = TcpListener::bind(loopback(0)).await.expect("bind");
        let backend = l.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut data = Vec::new();
                if s.read_to_end(&mut data).await.is_ok() {
                    let _ = s.write_all(format!("got {}", data.len()).as_bytes()).await;
                }
            }
        });
        let proxy = Proxy::with_config(config.clone());
        let port = free_tcp_port();
        proxy
            .set_port(Protocol::Tcp, port, vec![backend])
            .await
            .expect("publish");
        let mut s = TcpStream::connect(loopback(port)).await.expect("connect");
        s.write_all(&[7u8; 100_000]).await.expect("write");
        s.shutdown().await.expect("shutdown write");
        let mut reply = String::new();
        tokio::time::timeout(GUARD, s.read_to_string(&mut reply))
            .await
            .expect("answered")
            .expect("read");
        assert_eq!(reply, "got 100000", "splice: {}", config.splice);
    }
}

#[tokio::test]
async fn tcp_half_close_backend_first() {
    for config in configs() {
        // The backend greets, shuts down its sending half, then counts what the client sends.
        let l = TcpListener::bind(loopback(0)).await.expect("bind");
        let backend = l.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"hello").await;
                let _ = s.shutdown().await;
                let mut data = Vec::new();
                let _ = s.read_to_end(&mut data).await;
                let _ = tx.send(data.len());
            }
        });
        let proxy = Proxy::with_config(config.clone());
        let port = free_tcp_port();
        proxy
            .set_port(Protocol::Tcp, port, vec![backend])
            .await
            .expect("publish");
        let mut s = TcpStream::connect(loopback(port)).await.expect("connect");
        let mut greeting = String::new();
        tokio::time::timeout(GUARD, s.read_to_string(&mut greeting))
            .await
            .expect("end of file passed on")
            .expect("read");
        assert_eq!(greeting, "hello");
        // The client can still send after seeing the backend's end of file.
        s.write_all(&[1u8; 1000]).await.expect("write");
        s.shutdown().await.expect("shutdown");
        let n = tokio::time::timeout(GUARD, rx)
            .await
            .expect("backend done")
            .expect("count");
        assert_eq!(n, 1000, "splice: {}", config.splice);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bulk_data_arrives_intact() {
    for config in configs() {
        let echo = echo_backend().await;
        let proxy = Proxy::with_config(config.clone());
        let port = free_tcp_port();
        proxy
            .set_port(Protocol::Tcp, port, vec![echo])
            .await
            .expect("publish");
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let s = TcpStream::connect(loopback(port)).await.expect("connect");
        let (mut r, mut w) = s.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.expect("write");
            w.shutdown().await.expect("shutdown");
        });
        let mut back = Vec::new();
        tokio::time::timeout(GUARD, r.read_to_end(&mut back))
            .await
            .expect("echoed")
            .expect("read");
        writer.await.expect("writer");
        assert!(back == data, "splice: {}: data differs", config.splice);
    }
}

#[tokio::test]
async fn remove_port_closes_listener_but_not_connections() {
    let echo = echo_backend().await;
    let proxy = Proxy::new();
    let port = free_tcp_port();
    proxy
        .set_port(Protocol::Tcp, port, vec![echo])
        .await
        .expect("publish");
    let mut s = TcpStream::connect(loopback(port)).await.expect("connect");
    s.write_all(b"one").await.expect("write");
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).await.expect("echo");

    proxy.remove_port(Protocol::Tcp, port).await;
    assert!(proxy.ports().is_empty());
    let e = TcpStream::connect(loopback(port))
        .await
        .expect_err("listener closed");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    // The established connection finishes its business.
    s.write_all(b"two").await.expect("write");
    s.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"two");
    // Removing again is harmless, and the port can be published again.
    proxy.remove_port(Protocol::Tcp, port).await;
    proxy
        .set_port(Protocol::Tcp, port, vec![echo])
        .await
        .expect("publish again");
    TcpStream::connect(loopback(port))
        .await
        .expect("listening again");
}

#[tokio::test]
async fn shutdown_closes_everything() {
    let echo = echo_backend().await;
    let proxy = Proxy::new();
    let port = free_tcp_port();
    proxy
        .set_port(Protocol::Tcp, port, vec![echo])
        .await
        .expect("publish");
    let mut s = TcpStream::connect(loopback(port)).await.expect("connect");
    s.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf).await.expect("echo");

    proxy.shutdown().await;
    assert!(proxy.ports().is_empty());
    let e = TcpStream::connect(loopback(port))
        .await
        .expect_err("listener closed");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    // The established connection is ended too.
    let r = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .expect("ended");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(proxy
        .set_port(Protocol::Tcp, port, vec![echo])
        .await
        .is_err());
}

#[tokio::test]
async fn bind_error_names_the_port() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let proxy = Proxy::new();
    let e = proxy
        .set_port(Protocol::Tcp, port, Vec::new())
        .await
        .expect_err("port in use");
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(
        e.to_string(),
        format!(
            "Error starting userland proxy: listen tcp4 0.0.0.0:{port}: bind: address already in use"
        )
    );
    assert!(proxy.ports().is_empty());

    let taken = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let e = proxy
        .set_port(Protocol::Udp, port, Vec::new())
        .await
        .expect_err("port in use");
    assert!(
        e.to_string()
            .contains(&format!("listen udp4 0.0.0.0:{port}: bind")),
        "{e}"
    );
}

async fn udp_ask(client: &UdpSocket, port: u16, msg: &str) -> (String, SocketAddr) {
    client
        .send_to(msg.as_bytes(), loopback(port))
        .await
        .expect("send");
    let mut buf = [0u8; 1024];
    let (n, from) = tokio::time::timeout(GUARD, client.recv_from(&mut buf))
        .await
        .expect("reply")
        .expect("recv");
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

#[tokio::test]
async fn udp_echo_sessions_and_round_robin() {
    let a = udp_backend("a").await;
    let b = udp_backend("b").await;
    let proxy = Proxy::new();
    let port = free_udp_port();
    proxy
        .set_port(Protocol::Udp, port, vec![a, b])
        .await
        .expect("publish");
    let c1 = UdpSocket::bind(loopback(0)).await.expect("bind");
    let c2 = UdpSocket::bind(loopback(0)).await.expect("bind");
    let (r1, from) = udp_ask(&c1, port, "hi").await;
    assert_eq!(r1, "a:hi");
    // The reply comes from the address the client wrote to.
    assert_eq!(from.port(), port);
    // The same client stays with its backend; the next client gets the next one.
    assert_eq!(udp_ask(&c1, port, "again").await.0, "a:again");
    assert_eq!(udp_ask(&c2, port, "x").await.0, "b:x");
    assert_eq!(proxy.udp_sessions(port), 2);
    assert_eq!(proxy.ports(), vec![(Protocol::Udp, port)]);

    // Backend a leaves: its session ends and the client moves to b.
    proxy
        .set_port(Protocol::Udp, port, vec![b])
        .await
        .expect("swap");
    assert_eq!(proxy.udp_sessions(port), 1);
    assert_eq!(udp_ask(&c1, port, "moved").await.0, "b:moved");

    proxy.remove_port(Protocol::Udp, port).await;
    assert_eq!(proxy.udp_sessions(port), 0);
    assert!(proxy.ports().is_empty());
    // The port is free again.
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("port released");
}

#[tokio::test]
async fn udp_sessions_expire_and_are_bounded() {
    let a = udp_backend("a").await;
    let proxy = Proxy::with_config(ProxyConfig {
        udp_idle_timeout: Duration::from_millis(300),
        udp_max_sessions: 2,
        ..ProxyConfig::default()
    });
    let port = free_udp_port();
    proxy
        .set_port(Protocol::Udp, port, vec![a])
        .await
        .expect("publish");
    let c1 = UdpSocket::bind(loopback(0)).await.expect("bind");
    let c2 = UdpSocket::bind(loopback(0)).await.expect("bind");
    let c3 = UdpSocket::bind(loopback(0)).await.expect("bind");
    assert_eq!(udp_ask(&c1, port, "1").await.0, "a:1");
    assert_eq!(udp_ask(&c2, port, "2").await.0, "a:2");
    c3.send_to(b"3", loopback(port)).await.expect("send");
    // Datagrams are handled in order: once c1's next one is answered, c3's was dropped.
    assert_eq!(udp_ask(&c1, port, "1b").await.0, "a:1b");
    assert_eq!(proxy.udp_sessions(port), 2);
    let mut buf = [0u8; 16];
    assert_eq!(
        c3.try_recv(&mut buf).expect_err("no session for c3").kind(),
        io::ErrorKind::WouldBlock
    );

    // Idle sessions end; then c3 gets one.
    let deadline = tokio::time::Instant::now() + GUARD;
    while proxy.udp_sessions(port) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(udp_ask(&c3, port, "3b").await.0, "a:3b");
    assert_eq!(proxy.udp_sessions(port), 1);
}

#[tokio::test]
async fn udp_zero_backends_drops_datagrams() {
    let proxy = Proxy::new();
    let port = free_udp_port();
    proxy
        .set_port(Protocol::Udp, port, Vec::new())
        .await
        .expect("publish");
    // With no backend a datagram opens no session and goes nowhere.
    let c = UdpSocket::bind(loopback(0)).await.expect("bind");
    c.send_to(b"x", loopback(port)).await.expect("send");
    let a = udp_backend("a").await;
    proxy
        .set_port(Protocol::Udp, port, vec![a])
        .await
        .expect("swap");
    // Backends arriving later are used.
    let c2 = UdpSocket::bind(loopback(0)).await.expect("bind");
    assert_eq!(udp_ask(&c2, port, "y").await.0, "a:y");
}

#[tokio::test]
async fn udp_refusing_backend_is_left_for_the_next() {
    // Nothing listens on `dead`: its ICMP port unreachable ends the session, and the client's
    // next datagram opens one to the next backend.
    let dead = loopback(free_udp_port());
    let live = udp_backend("live").await;
    let proxy = Proxy::new();
    let port = free_udp_port();
    proxy
        .set_port(Protocol::Udp, port, vec![dead, live])
        .await
        .expect("publish");
    let c = UdpSocket::bind(loopback(0)).await.expect("bind");
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + GUARD;
    let reply = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached the live backend"
        );
        c.send_to(b"hi", loopback(port)).await.expect("send");
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), c.recv_from(&mut buf)).await
        {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    };
    assert_eq!(reply, "live:hi");
}
