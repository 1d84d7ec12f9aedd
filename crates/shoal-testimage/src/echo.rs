//! `echo`: TCP (a thread per connection, bytes copied back until the client closes) and UDP
//! (each datagram sent back to its sender) echo servers, and the accept loop `hello` shares.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// Stack of a connection thread: connections keep their buffers on the heap.
const CONN_STACK: usize = 256 * 1024;
/// Copy buffer of a TCP echo connection.
const TCP_BUF: usize = 64 * 1024;

/// Accepts connections forever, running `handler(stream)`'s closure on a thread of its own.
/// Failures to accept (out of descriptors, ...) are logged and retried after a pause.
pub(crate) fn accept_loop<H, F>(listener: TcpListener, mut handler: H) -> std::io::Result<()>
where
    H: FnMut(TcpStream) -> F,
    F: FnOnce() + Send + 'static,
{
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let work = handler(stream);
                if let Err(e) = std::thread::Builder::new()
                    .name("conn".into())
                    .stack_size(CONN_STACK)
                    .spawn(work)
                {
                    eprintln!("accept: no thread for the connection: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Serves TCP echo on `listener`. Runs until the process ends.
pub fn serve_tcp_echo(listener: TcpListener) -> std::io::Result<()> {
    accept_loop(listener, |stream| {
        move || {
            if let Err(e) = echo_connection(stream) {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) {
                    eprintln!("echo: connection: {e}");
                }
            }
        }
    })
}

fn echo_connection(stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = stream.try_clone()?;
    let mut writer = stream;
    let mut buf = vec![0u8; TCP_BUF];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
    }
    writer.shutdown(Shutdown::Write)
}

/// Serves UDP echo on `socket`. Runs until the process ends.
pub fn serve_udp_echo(socket: UdpSocket) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Err(e) = socket.send_to(&buf[..n], from) {
                    eprintln!("echo: udp reply to {from}: {e}");
                }
            }
            // ICMP errors of earlier replies surface here on Linux; they concern one peer.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e),
        }
    }
}
