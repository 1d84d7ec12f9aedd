//! `hello`: the guide's friendlyhello page over a minimal HTTP/1.1 server (std threads, one per
//! connection, keep-alive). Routes are listed in the crate's documentation.
//!
//! Only what the routes need is implemented: request bodies with `Content-Length` (a chunked
//! body is refused with 501), HTTP/1.0 and 1.1 connection handling, `HEAD`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Longest request line plus headers accepted (431 beyond).
const MAX_HEAD: u64 = 64 * 1024;
/// Largest request body accepted (413 beyond).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Exit code of `GET /crash`.
pub const CRASH_EXIT_CODE: i32 = 3;

/// The state of a `hello` server.
#[derive(Debug)]
pub struct Hello {
    /// Who the page greets (`NAME`).
    pub name: String,
    /// The hostname the page shows.
    pub hostname: String,
    healthy: AtomicBool,
}

impl Hello {
    /// A server greeting `name` from `hostname`, healthy.
    pub fn new(name: impl Into<String>, hostname: impl Into<String>) -> Self {
        Hello {
            name: name.into(),
            hostname: hostname.into(),
            healthy: AtomicBool::new(true),
        }
    }

    /// `NAME` (default "world"), the UTS namespace's hostname, and `HEALTH=fail` to start
    /// unhealthy.
    pub fn from_env() -> Self {
        let name = std::env::var("NAME").unwrap_or_else(|_| "world".into());
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hello = Hello::new(name, hostname);
        if std::env::var("HEALTH").is_ok_and(|h| h == "fail") {
            hello.set_healthy(false);
        }
        hello
    }

    /// Whether `/health` answers 200.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Makes `/health` answer 200 (true) or 500 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// The friendlyhello page.
    pub fn page(&self) -> String {
        format!(
            "<h3>Hello {}!</h3><b>Hostname:</b> {}<br/><b>Visits:</b> <i>cannot connect to \
             Redis, counter disabled</i>",
            escape(&self.name),
            escape(&self.hostname)
        )
    }
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Serves `hello` on `listener`, a thread per connection. Runs until the process ends.
pub fn serve_hello(listener: TcpListener, hello: Hello) -> std::io::Result<()> {
    let hello = Arc::new(hello);
    crate::echo::accept_loop(listener, move |stream| {
        let hello = Arc::clone(&hello);
        move || {
            if let Err(e) = serve_connection(stream, &hello) {
                // A client going away is its business; anything else is worth a line.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                ) {
                    eprintln!("hello: connection: {e}");
                }
            }
        }
    })
}

/// One parsed request.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    /// HTTP/1.0: a kept-alive connection must say so in each response.
    http10: bool,
    body: Vec<u8>,
}

/// A request that cannot be served: answered with `status` and the connection closed.
#[derive(Debug)]
struct Refusal {
    status: u16,
    message: &'static str,
}

fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

fn serve_connection(stream: TcpStream, hello: &Hello) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut out = Vec::with_capacity(1024);
    loop {
        let req = match read_request(&mut reader)? {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(refusal) => {
                out.clear();
                let body = format!("{}\n", refusal.message);
                write_response(
                    &mut out,
                    refusal.status,
                    "text/plain; charset=utf-8",
                    body.as_bytes(),
                    false,
                    false,
                    false,
                );
                writer.write_all(&out)?;
                return writer.shutdown(Shutdown::Write);
            }
        };
        out.clear();
        let head = req.method == "HEAD";
        let (status, content_type, body) = route(&req, hello);
        write_response(
            &mut out,
            status,
            content_type,
            &body,
            req.keep_alive,
            req.http10,
            head,
        );
        writer.write_all(&out)?;
        if status == 200 && path_of(&req.target) == "/crash" {
            writer.flush()?;
            let _ = writer.shutdown(Shutdown::Both);
            crate::say(&format!("crashing on request: exit code {CRASH_EXIT_CODE}"));
            std::process::exit(CRASH_EXIT_CODE);
        }
        if !req.keep_alive {
            return writer.shutdown(Shutdown::Write);
        }
    }
}

/// The answer to `req`: status, content type, body.
fn route(req: &Request, hello: &Hello) -> (u16, &'static str, Vec<u8>) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = path_of(&req.target);
    let query = req.target.split_once('?').map(|(_, q)| q);
    if path == "/echo" {
        let body = if req.body.is_empty() {
            query.unwrap_or("").as_bytes().to_vec()
        } else {
            req.body.clone()
        };
        return (200, "application/octet-stream", body);
    }
    let known = matches!(
        path,
        "/" | "/hostname" | "/health" | "/health/fail" | "/health/ok" | "/crash"
    );
    if !known {
        return (404, TEXT, b"404 page not found\n".to_vec());
    }
    if req.method != "GET" && req.method != "HEAD" {
        return (405, TEXT, b"method not allowed\n".to_vec());
    }
    match path {
        "/" => (200, "text/html; charset=utf-8", hello.page().into_bytes()),
        "/hostname" => (200, TEXT, format!("{}\n", hello.hostname).into_bytes()),
        "/health" if hello.healthy() => (200, TEXT, b"ok\n".to_vec()),
        "/health" => (500, TEXT, b"unhealthy\n".to_vec()),
        "/health/fail" => {
            hello.set_healthy(false);
            (200, TEXT, b"/health now answers 500\n".to_vec())
        }
        "/health/ok" => {
            hello.set_healthy(true);
            (200, TEXT, b"/health now answers 200\n".to_vec())
        }
        _ => (200, TEXT, b"crashing\n".to_vec()),
    }
}

/// The path of a request target, without the query.
fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(p, _)| p)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    http10: bool,
    head: bool,
) {
    let connection = match (keep_alive, http10) {
        (false, _) => "Connection: close\r\n",
        (true, true) => "Connection: keep-alive\r\n",
        (true, false) => "",
    };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{connection}\r\n",
        reason(status),
        body.len()
    );
    if !head {
        out.extend_from_slice(body);
    }
}

/// Reads one request. `Ok(Ok(None))`: the client closed the connection between requests.
fn read_request<R: BufRead>(reader: &mut R) -> std::io::Result<Result<Option<Request>, Refusal>> {
    let mut head = reader.by_ref().take(MAX_HEAD);
    let mut line = Vec::new();
    // Empty lines before a request line are ignored (RFC 9112, 2.2).
    loop {
        line.clear();
        if head.read_until(b'\n', &mut line)? == 0 {
            return Ok(Ok(None));
        }
        if !trim_eol(&line).is_empty() {
            break;
        }
    }
    if !line.ends_with(b"\n") {
        return Ok(Err(too_long_or_cut(head.limit())));
    }
    let request_line = String::from_utf8_lossy(trim_eol(&line)).into_owned();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(refuse(400, "malformed request line")));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Ok(Err(refuse(505, "HTTP version not supported"))),
        _ => return Ok(Err(refuse(400, "malformed request line"))),
    };
    if method.is_empty() || !target.starts_with('/') {
        return Ok(Err(refuse(400, "malformed request line")));
    }
    let mut keep_alive = !http10;
    let mut content_length: usize = 0;
    loop {
        line.clear();
        head.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Ok(Err(too_long_or_cut(head.limit())));
        }
        let header = trim_eol(&line);
        if header.is_empty() {
            break;
        }
        let header = String::from_utf8_lossy(header);
        let Some((name, value)) = header.split_once(':') else {
            return Ok(Err(refuse(400, "malformed header")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => content_length = n,
                Ok(_) => return Ok(Err(refuse(413, "request body too large"))),
                Err(_) => return Ok(Err(refuse(400, "invalid Content-Length"))),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Err(refuse(501, "Transfer-Encoding is not supported")));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok(Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive,
        http10,
        body,
    })))
}

/// A head line without its end: the limit ran out (431) or the client stopped mid-line.
fn too_long_or_cut(limit_left: u64) -> Refusal {
    if limit_left == 0 {
        refuse(431, "request header too large")
    } else {
        refuse(400, "incomplete request")
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(text: &str) -> Result<Option<Request>, Refusal> {
        read_request(&mut Cursor::new(text.as_bytes().to_vec())).expect("no i/o error")
    }

    #[test]
    fn requests_parse_with_keep_alive_rules() {
        let r = parse("GET /echo?hi HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("ok")
            .expect("some");
        assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", "/echo?hi"));
        assert!(r.keep_alive && !r.http10);
        let r = parse("\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("ok")
            .expect("some");
        assert!(!r.keep_alive);
        let r = parse("GET / HTTP/1.0\r\n\r\n").expect("ok").expect("some");
        assert!(!r.keep_alive && r.http10);
        let r = parse("GET / HTTP/1.0\nConnection: Keep-Alive\n\n")
            .expect("ok")
            .expect("some");
        assert!(r.keep_alive);
        let r = parse("POST /echo HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcdef")
            .expect("ok")
            .expect("some");
        assert_eq!(r.body, b"abc");
        assert!(parse("").expect("ok").is_none());
    }

    #[test]
    fn bad_requests_are_refused() {
        let status = |t: &str| parse(t).map(|_| 0).unwrap_or_else(|r| r.status);
        assert_eq!(status("GET /\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1.1\r\nBad header\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x"), 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(status(&huge), 431);
    }

    #[test]
    fn page_is_the_guides_and_escapes() {
        let h = Hello::new("<Shoal>", "0123456789ab");
        assert_eq!(
            h.page(),
            "<h3>Hello &lt;Shoal&gt;!</h3><b>Hostname:</b> 0123456789ab<br/><b>Visits:</b> \
             <i>cannot connect to Redis, counter disabled</i>"
        );
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let mut out = Vec::new();
        write_response(&mut out, 200, "text/plain", b"ok\n", true, false, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
        );
        out.clear();
        write_response(&mut out, 500, "text/plain", b"x", false, false, true);
        assert_eq!(
            out,
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"
        );
    }
}
