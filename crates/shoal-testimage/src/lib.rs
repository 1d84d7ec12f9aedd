//! `shoal testimage`: a small workload built into the `shoal` binary, so the getting-started
//! guide and the tests need nothing from outside.
//!
//! ```text
//! shoal testimage hello [--port N]          the guide's "friendlyhello" web page (port 80)
//! shoal testimage echo  [--port N] [--udp]  an echo server, TCP or UDP (port 7)
//! shoal testimage fetch [--count N] [--every MS] URL
//!                                           GET http://URL again and again (forever unless
//!                                           --count; every 500 ms), one line per answer
//! shoal testimage resolve [--count N] [--every MS] NAME...
//!                                           the addresses of each name, `NAME ADDR...`
//! ```
//!
//! The port is `--port N` if given, else the `PORT` environment variable, else the default;
//! `--port 0` takes a free port. Servers listen on `0.0.0.0` and print one line to stdout when
//! they do, with the actual port: `listening on 0.0.0.0:80` (`listening on 0.0.0.0:7/udp` for
//! UDP). A port that cannot be bound exits with code 1, bad usage with 2.
//!
//! `hello` speaks HTTP/1.1 with keep-alive (a connection serves requests until the client
//! closes it or sends `Connection: close`), one thread per connection:
//!
//! ```text
//! GET /             the friendlyhello page: <h3>Hello NAME!</h3><b>Hostname:</b> HOSTNAME<br/>
//!                   <b>Visits:</b> <i>cannot connect to Redis, counter disabled</i>
//!                   (NAME from the environment, default "world"; HOSTNAME is gethostname(2),
//!                   the hostname of the task's UTS namespace)
//! GET /hostname     the hostname alone, and a newline
//! GET /health       200 "ok", or 500 "unhealthy" once failed (or started with HEALTH=fail)
//! GET /health/fail  makes /health answer 500 from now on; GET /health/ok heals it
//! GET /echo?TEXT    TEXT; any method: a request with a body gets the body back
//! GET /crash        answers, then the process exits with code 3
//! ```
//!
//! `echo` copies every byte a TCP connection sends back to it (many connections at once, one
//! thread each), or with `--udp` sends each datagram back to its sender.
//!
//! ## The built-in images
//!
//! The agent's `process` runtime, which runs tasks as host processes and only records their
//! image, runs this workload for the built-in images ([`is_builtin_image`]): `shoal/testimage`,
//! and any image whose last path component is `friendlyhello` (such as `john/friendlyhello`),
//! with any registry, tag or digest. They behave like an image whose entrypoint is
//! `shoal testimage` and whose default command is `hello`:
//!
//! ```text
//! ContainerSpec.Command   ContainerSpec.Args   the task runs
//! (none)                  (none)               shoal testimage hello
//! (none)                  ARGS...              shoal testimage ARGS...     (e.g. echo --udp)
//! CMD...                  ARGS...              CMD... ARGS...              (as for any image)
//! ```
//!
//! `shoal` is the daemon's own executable, the one that runs the task's shim.

mod echo;
mod fetch;
mod hello;

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

pub use echo::{serve_tcp_echo, serve_udp_echo};
pub use hello::{serve_hello, Hello};

/// The subcommand of `shoal` that runs this workload.
pub const SUBCOMMAND: &str = "testimage";

/// What a built-in image runs when the task gives neither command nor arguments.
pub const DEFAULT_COMMAND: &str = "hello";

/// Default port of `hello` (the guide's app listens on 80).
pub const HELLO_PORT: u16 = 80;

/// Default port of `echo` (the echo protocol's).
pub const ECHO_PORT: u16 = 7;

const USAGE: &str = "usage: shoal testimage hello [--port N]\n       \
                     shoal testimage echo [--port N] [--udp]\n       \
                     shoal testimage fetch [--count N] [--every MS] URL\n       \
                     shoal testimage resolve [--count N] [--every MS] NAME...";

/// Whether `image` names a built-in image: `shoal/testimage`, or a name whose last path
/// component is `friendlyhello`. The registry (`docker.io/`, `localhost:5000/`, ...), the
/// `library/` namespace, the tag and the digest are ignored.
pub fn is_builtin_image(image: &str) -> bool {
    let name = image_path(image);
    name == "shoal/testimage" || name.rsplit('/').next() == Some("friendlyhello")
}

/// The repository path of an image reference: without registry, `library/`, tag or digest.
fn image_path(image: &str) -> &str {
    let image = image.trim();
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    // A tag follows the last `:` after the last `/` (a `:` before it belongs to a registry port).
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let image = match image[last_slash..].find(':') {
        Some(i) => &image[..last_slash + i],
        None => image,
    };
    // The first component is a registry if it looks like a host: a dot, a port, or localhost.
    let image = match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => image,
    };
    image.strip_prefix("library/").unwrap_or(image)
}

/// Entry point of `shoal testimage`; `args` are the arguments after `testimage`. Servers run
/// until killed; the return value is the exit code of a failure (1: cannot listen, 2: usage).
pub fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("shoal testimage: {msg}\n{USAGE}");
            return 2;
        }
    };
    let result = match cmd {
        Cmd::Help => {
            say(USAGE);
            return 0;
        }
        Cmd::Hello { port } => bind_tcp(port).and_then(|listener| {
            announce(&listener.local_addr()?, "");
            serve_hello(listener, Hello::from_env())
        }),
        Cmd::Echo { port, udp: false } => bind_tcp(port).and_then(|listener| {
            announce(&listener.local_addr()?, "");
            serve_tcp_echo(listener)
        }),
        Cmd::Echo { port, udp: true } => bind_udp(port).and_then(|socket| {
            announce(&socket.local_addr()?, "/udp");
            serve_udp_echo(socket)
        }),
        Cmd::Resolve {
            names,
            count,
            every,
        } => {
            fetch::resolve(&names, count, std::time::Duration::from_millis(every), say);
            Ok(())
        }
        Cmd::Fetch { url, count, every } => {
            fetch::run(&url, count, std::time::Duration::from_millis(every), say)
                .map_err(std::io::Error::other)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shoal testimage: {e}");
            1
        }
    }
}

/// Listens on TCP `0.0.0.0:port` (0: a free port).
pub fn bind_tcp(port: u16) -> std::io::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("listen tcp {addr}: {e}")))
}

/// Binds UDP `0.0.0.0:port` (0: a free port).
pub fn bind_udp(port: u16) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    UdpSocket::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("listen udp {addr}: {e}")))
}

fn announce(addr: &SocketAddr, suffix: &str) {
    say(&format!("listening on {addr}{suffix}"));
}

/// Writes a line to stdout, at once. Unlike `println!`, does not panic when nobody reads it.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmd {
    Help,
    Hello {
        port: u16,
    },
    Echo {
        port: u16,
        udp: bool,
    },
    Fetch {
        url: String,
        count: u64,
        every: u64,
    },
    Resolve {
        names: Vec<String>,
        count: u64,
        every: u64,
    },
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("missing command".into());
    };
    let env_port = || std::env::var("PORT").ok().filter(|p| !p.is_empty());
    let mut port: Option<String> = None;
    let mut udp = false;
    let (mut count, mut every, mut url) = (0u64, 500u64, None::<String>);
    let mut names: Vec<String> = Vec::new();
    let client = sub == "fetch" || sub == "resolve";
    let number = |flag: &str, v: Option<&String>| -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("flag needs an argument: {flag}"))?;
        v.parse()
            .map_err(|_| format!("invalid value {v:?} for {flag}: a number"))
    };
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" if client => count = number("--count", it.next())?,
            "--every" if client => every = number("--every", it.next())?,
            n if sub == "resolve" && !n.starts_with('-') => names.push(n.to_string()),
            u if sub == "fetch" && !u.starts_with('-') && url.is_none() => {
                url = Some(u.to_string());
            }
            "--port" | "-p" => {
                port = Some(it.next().ok_or("flag needs an argument: --port")?.clone());
            }
            "--udp" if sub == "echo" => udp = true,
            "-h" | "--help" => return Ok(Cmd::Help),
            other => match other.strip_prefix("--port=") {
                Some(v) => port = Some(v.to_string()),
                None => return Err(format!("unknown argument: {other}")),
            },
        }
    }
    let port = |default: u16| -> Result<u16, String> {
        match port.or_else(env_port) {
            None => Ok(default),
            Some(p) => p
                .parse()
                .map_err(|_| format!("invalid port {p:?}: a number from 0 to 65535")),
        }
    };
    match sub.as_str() {
        "hello" => Ok(Cmd::Hello {
            port: port(HELLO_PORT)?,
        }),
        "echo" => Ok(Cmd::Echo {
            port: port(ECHO_PORT)?,
            udp,
        }),
        "fetch" => Ok(Cmd::Fetch {
            url: url.ok_or("fetch needs a URL")?,
            count,
            every,
        }),
        "resolve" if names.is_empty() => Err("resolve needs a name".into()),
        "resolve" => Ok(Cmd::Resolve {
            names,
            count,
            every,
        }),
        "help" | "-h" | "--help" => Ok(Cmd::Help),
        other => Err(format!("unknown command: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_parse_their_flags() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse(&a(&["fetch", "--every", "100", "http://web/"])),
            Ok(Cmd::Fetch {
                url: "http://web/".into(),
                count: 0,
                every: 100
            })
        );
        assert_eq!(
            parse(&a(&["resolve", "--count", "1", "web", "tasks.web"])),
            Ok(Cmd::Resolve {
                names: a(&["web", "tasks.web"]),
                count: 1,
                every: 500
            })
        );
        assert!(parse(&a(&["resolve"]))
            .unwrap_err()
            .contains("needs a name"));
        assert!(parse(&a(&["fetch"])).unwrap_err().contains("needs a URL"));
        assert!(parse(&a(&["fetch", "--count", "x", "http://w/"]))
            .unwrap_err()
            .contains("invalid value"));
    }

    #[test]
    fn builtin_images_match_by_path_whatever_registry_tag_or_digest() {
        for image in [
            "shoal/testimage",
            "shoal/testimage:latest",
            "docker.io/shoal/testimage:1.0",
            "localhost:5000/shoal/testimage@sha256:0123abcd",
            "friendlyhello",
            "friendlyhello:latest",
            "library/friendlyhello",
            "john/friendlyhello:part2",
            "registry.example.com:5000/team/app/friendlyhello:v1@sha256:ff",
        ] {
            assert!(is_builtin_image(image), "{image} is built in");
        }
        for image in [
            "",
            "busybox:latest",
            "shoal/testimage2",
            "other/testimage",
            "testimage",
            "friendlyhello2",
            "friendlyhello/app",
            "shoal.io/testimage",
            "john/get-started:friendlyhello",
            "registry:5000/shoal",
        ] {
            assert!(!is_builtin_image(image), "{image} is not built in");
        }
    }

    #[test]
    fn image_paths_drop_registry_library_tag_and_digest() {
        assert_eq!(image_path("docker.io/library/redis:7"), "redis");
        assert_eq!(image_path("localhost/a/b:t"), "a/b");
        assert_eq!(image_path("host:5000/a"), "a");
        assert_eq!(image_path("a/b@sha256:00"), "a/b");
        assert_eq!(image_path("user/repo"), "user/repo");
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_parse() {
        // PORT is not set in the test environment unless a test sets it; none here does.
        assert_eq!(parse(&args(&["hello"])), Ok(Cmd::Hello { port: 80 }));
        assert_eq!(
            parse(&args(&["hello", "--port", "8080"])),
            Ok(Cmd::Hello { port: 8080 })
        );
        assert_eq!(
            parse(&args(&["hello", "--port=0"])),
            Ok(Cmd::Hello { port: 0 })
        );
        assert_eq!(
            parse(&args(&["echo", "--udp", "-p", "9"])),
            Ok(Cmd::Echo { port: 9, udp: true })
        );
        assert_eq!(
            parse(&args(&["echo"])),
            Ok(Cmd::Echo {
                port: 7,
                udp: false
            })
        );
        assert_eq!(parse(&args(&["hello", "--help"])), Ok(Cmd::Help));
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["hello", "--udp"]))
            .unwrap_err()
            .contains("unknown argument: --udp"));
        assert!(parse(&args(&["hello", "--port"])).is_err());
        assert!(parse(&args(&["hello", "--port", "70000"]))
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse(&args(&["sink"]))
            .unwrap_err()
            .contains("unknown command: sink"));
    }

    #[test]
    fn main_refuses_bad_usage_with_code_2() {
        assert_eq!(main(vec!["nope".into()]), 2);
        assert_eq!(main(vec![]), 2);
        assert_eq!(main(vec!["hello".into(), "--help".into()]), 0);
    }
}
