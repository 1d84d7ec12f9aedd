//! Connection to the daemon: `-H` host parsing, API version negotiation, the
//! bollard client used for typed calls, a small raw HTTP/1.1 client for the
//! endpoints bollard lacks (swarm unlock/unlock-key, init/join bodies with
//! `AutoLockManagers`/`Availability`, raw inspect JSON, multiplexed logs), and
//! the mapping of transport and API failures to docker's error texts.
//!
//! With TLS ([`crate::tls`]) both paths go through the same rustls connector: the raw client
//! directly, bollard through a custom transport that sends its requests over it.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use bollard::Docker;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

use crate::tls::{self, TlsOptions};

/// Where the CLI looks for the daemon when neither `-H`, `SHOAL_HOST` nor `DOCKER_HOST` is set.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";
/// Default port for `tcp://host` without a port (docker's plain-HTTP port).
pub const DEFAULT_TCP_PORT: u16 = 2375;
/// Highest API version this client speaks (docker CLI v28).
pub const CLIENT_API_VERSION: (usize, usize) = (1, 51);
/// API version assumed when the server does not send `Api-Version` (as docker does).
pub const FALLBACK_API_VERSION: (usize, usize) = (1, 24);
/// Timeout, in seconds, of bollard requests.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// The host string of the current connection, for error messages.
static CURRENT_HOST: OnceLock<RwLock<String>> = OnceLock::new();

fn set_current_host(host: &str) {
    let lock = CURRENT_HOST.get_or_init(|| RwLock::new(DEFAULT_HOST.to_string()));
    if let Ok(mut h) = lock.write() {
        *h = host.to_string();
    }
}

/// Everything a verb can fail with; `Display` is the text docker prints on stderr.
#[derive(Debug, Clone, PartialEq)]
pub enum CliError {
    /// A non-2xx answer: "Error response from daemon: {message}".
    Daemon {
        /// HTTP status code.
        status: u16,
        /// Message from the `{"message": ...}` body (or the body text).
        message: String,
    },
    /// The daemon could not be reached.
    Connect {
        /// The host as given (`unix:///...`, `tcp://...`).
        host: String,
    },
    /// Any other failure, printed as is, exit code 1.
    Message(String),
    /// A failure with its own exit code (usage errors: 125).
    Status {
        /// Process exit code.
        code: i32,
        /// Text printed on stderr (may be empty).
        message: String,
    },
}

impl CliError {
    /// Shorthand for [`CliError::Message`].
    pub fn msg(s: impl Into<String>) -> CliError {
        CliError::Message(s.into())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Status { code, .. } => *code,
            _ => 1,
        }
    }

    /// Whether the daemon answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Daemon { status: 404, .. })
    }

    /// Joins several errors into one message, one per line (Go's `errors.Join`).
    pub fn join(errs: Vec<CliError>) -> Result<(), CliError> {
        if errs.is_empty() {
            return Ok(());
        }
        if errs.len() == 1 {
            return Err(errs.into_iter().next().unwrap_or(CliError::msg("")));
        }
        Err(CliError::Message(
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Daemon { message, .. } => write!(f, "Error response from daemon: {message}"),
            CliError::Connect { host } => write!(
                f,
                "Cannot connect to the Shoal daemon at {host}. Is the shoal daemon running?"
            ),
            CliError::Message(m) => f.write_str(m),
            CliError::Status { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {}

fn connect_error() -> CliError {
    CliError::Connect {
        host: CURRENT_HOST
            .get()
            .and_then(|l| l.read().ok().map(|h| h.clone()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string()),
    }
}

/// Builds the daemon error from a status and body, as docker's client does.
pub fn daemon_error(status: u16, content_type: Option<&str>, body: &[u8], path: &str) -> CliError {
    if body.is_empty() {
        let text = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        return CliError::Message(format!(
            "request returned {text} for API route and version {path}, check if the server supports the requested API version"
        ));
    }
    let text = String::from_utf8_lossy(body);
    let message = match content_type {
        Some(ct) if ct.starts_with("application/json") => {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| text.to_string())
        }
        _ => text.to_string(),
    };
    CliError::Daemon {
        status,
        message: message.trim().to_string(),
    }
}

impl From<bollard::errors::Error> for CliError {
    fn from(e: bollard::errors::Error) -> CliError {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError {
                status_code,
                message,
            } => {
                if message.trim().is_empty() {
                    daemon_error(status_code, None, b"", "")
                } else {
                    CliError::Daemon {
                        status: status_code,
                        message: message.trim().to_string(),
                    }
                }
            }
            E::SocketNotFoundError(_) => connect_error(),
            E::HyperLegacyError { err } if err.is_connect() => connect_error(),
            E::IOError { err }
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                connect_error()
            }
            other => CliError::Message(other.to_string()),
        }
    }
}

/// A parsed `-H` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port` reached over plain HTTP.
    Tcp(String),
}

impl Host {
    /// Parses `unix:///path`, `unix://path`, `/path`, `tcp://host[:port]`,
    /// `http://host[:port]`. An empty string is the default socket.
    pub fn parse(s: &str) -> Result<Host, String> {
        Host::parse_with(s, false)
    }

    /// [`Host::parse`], where a TCP host without a port gets docker's TLS port (2376) when
    /// `tls` is on, its plain port (2375) otherwise. `https://host[:port]` is accepted too.
    pub fn parse_with(s: &str, tls: bool) -> Result<Host, String> {
        let s = s.trim();
        if s.is_empty() {
            return Host::parse_with(DEFAULT_HOST, tls);
        }
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Host::parse_with(DEFAULT_HOST, tls);
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(Host::Unix(PathBuf::from(s)));
        }
        let rest = if let Some(r) = s.strip_prefix("tcp://") {
            r
        } else if let Some(r) = s.strip_prefix("http://") {
            r
        } else if let Some(r) = s.strip_prefix("https://") {
            r
        } else if s.contains("://") {
            return Err(format!("unable to parse docker host `{s}`"));
        } else {
            s
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("unable to parse docker host `{s}`"));
        }
        let (host, port) = split_host_port(rest);
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("invalid port in docker host `{s}`"))?,
            None if tls => tls::DEFAULT_TLS_PORT,
            None => DEFAULT_TCP_PORT,
        };
        Ok(Host::Tcp(format!("{host}:{port}")))
    }
}

/// Splits `host:port`, `[v6]:port`, `host` into host and optional port.
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &s[..end + 2];
            let after = &rest[end + 1..];
            return (host, after.strip_prefix(':'));
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

/// Chooses the host: flag, then `SHOAL_HOST`, then `DOCKER_HOST`, then the default.
pub fn resolve_host(flag: Option<&str>) -> String {
    if let Some(h) = flag {
        return h.to_string();
    }
    for var in ["SHOAL_HOST", "DOCKER_HOST"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return v;
            }
        }
    }
    DEFAULT_HOST.to_string()
}

/// Where and how to reach the daemon: the host string (as given, for messages) and the TLS
/// settings (`None`: plain HTTP). TLS applies to TCP hosts; a unix socket is always plain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// `-H` value, `$SHOAL_HOST`, `$DOCKER_HOST` or the default socket.
    pub host: String,
    /// TLS settings.
    pub tls: Option<TlsOptions>,
}

impl Endpoint {
    /// A plain (no TLS) endpoint.
    pub fn plain(host: impl Into<String>) -> Endpoint {
        Endpoint {
            host: host.into(),
            tls: None,
        }
    }
}

impl From<&str> for Endpoint {
    fn from(host: &str) -> Endpoint {
        Endpoint::plain(host)
    }
}

/// A TLS session setup: the client configuration and the name the daemon must prove.
#[derive(Clone)]
struct TlsConn {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// The transport of the raw client (and of bollard when TLS is on).
#[derive(Clone)]
struct Transport {
    host: Host,
    host_str: String,
    tls: Option<TlsConn>,
}

/// A buffered raw response.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

/// A connection to the daemon: bollard for typed calls, raw HTTP for the rest.
#[derive(Clone)]
pub struct Client {
    /// The bollard client, pinned to the negotiated API version.
    pub docker: Docker,
    transport: Arc<Transport>,
    version: (usize, usize),
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.transport.host_str)
            .field("tls", &self.transport.tls.is_some())
            .field("version", &self.version)
            .finish()
    }
}

/// Picks the version to speak from the server's `Api-Version` header.
pub fn negotiate(server: Option<&str>) -> (usize, usize) {
    let parsed = server.and_then(|s| {
        let (maj, min) = s.trim().split_once('.')?;
        Some((maj.parse::<usize>().ok()?, min.parse::<usize>().ok()?))
    });
    match parsed {
        Some(v) if v < CLIENT_API_VERSION => v,
        Some(_) => CLIENT_API_VERSION,
        None => FALLBACK_API_VERSION,
    }
}

impl Client {
    /// Connects to the endpoint: pings the daemon (unversioned `GET /_ping`), negotiates
    /// the API version from its `Api-Version` header and builds the bollard client.
    /// With TLS, the certificate files are read first (a missing or unusable one is named).
    pub async fn connect(endpoint: &Endpoint) -> Result<Client, CliError> {
        let host_str = endpoint.host.as_str();
        set_current_host(host_str);
        let host = Host::parse_with(host_str, endpoint.tls.is_some()).map_err(CliError::Message)?;
        let tls = match (&host, &endpoint.tls) {
            (Host::Tcp(addr), Some(opts)) => Some(TlsConn {
                config: tls::client_config(opts)?,
                name: tls::server_name(addr)?,
            }),
            _ => None,
        };
        let transport = Arc::new(Transport {
            host: host.clone(),
            host_str: host_str.to_string(),
            tls,
        });
        let ping = send(
            &transport,
            Method::GET,
            "/_ping".to_string(),
            Vec::new(),
            None,
        )
        .await?;
        let api = ping
            .headers()
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let version = negotiate(api.as_deref());
        let bollard_version = bollard::ClientVersion {
            major_version: version.0,
            minor_version: version.1,
        };
        let docker = match &host {
            Host::Tcp(addr) if transport.tls.is_some() => {
                let t = transport.clone();
                Docker::connect_with_custom_transport(
                    move |req: bollard::BollardRequest| {
                        let t = t.clone();
                        async move { send_bollard(&t, req).await }
                    },
                    Some(format!("https://{addr}")),
                    REQUEST_TIMEOUT_SECS,
                    &bollard_version,
                )
            }
            Host::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                &bollard_version,
            ),
            Host::Tcp(addr) => Docker::connect_with_http(
                &format!("tcp://{addr}"),
                REQUEST_TIMEOUT_SECS,
                &bollard_version,
            ),
        }
        .map_err(CliError::from)?;
        Ok(Client {
            docker,
            transport,
            version,
        })
    }

    /// Whether this connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.transport.tls.is_some()
    }

    /// The negotiated API version, e.g. "1.51".
    pub fn api_version(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }

    /// The host string this client was built from.
    pub fn host(&self) -> &str {
        &self.transport.host_str
    }

    fn versioned(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut p = format!("/v{}.{}{}", self.version.0, self.version.1, path);
        if !query.is_empty() {
            p.push('?');
            p.push_str(
                &query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", urlencoding::encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        p
    }

    /// Sends a versioned request and returns the response once its status is 2xx;
    /// other statuses become [`CliError::Daemon`].
    pub async fn request_stream(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: Vec<(&'static str, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, CliError> {
        let full = self.versioned(path, query);
        let resp = send(&self.transport, method, full.clone(), headers, body).await?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(daemon_error(status, ct.as_deref(), &bytes, &full))
    }

    /// Sends a versioned request and buffers the 2xx body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, CliError> {
        let resp = self
            .request_stream(method, path, query, Vec::new(), body)
            .await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::msg(format!("error reading response: {e}")))?
            .to_bytes();
        Ok(RawResponse { status, body })
    }

    /// GET returning the raw JSON text.
    pub async fn get_raw(&self, path: &str, query: &[(&str, String)]) -> Result<String, CliError> {
        let r = self.request(Method::GET, path, query, None).await?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    /// `GET /info` as JSON (kept untyped so unknown enum values cannot break it).
    pub async fn info(&self) -> Result<serde_json::Value, CliError> {
        let raw = self.get_raw("/info", &[]).await?;
        serde_json::from_str(&raw).map_err(|e| CliError::msg(format!("error reading info: {e}")))
    }

    /// POST of a JSON body, returning the raw response text.
    pub async fn post_json(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &serde_json::Value,
    ) -> Result<String, CliError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CliError::msg(e.to_string()))?;
        let r = self.request(Method::POST, path, query, Some(bytes)).await?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }
}

/// An established connection to the daemon, before the HTTP handshake.
enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// Why a connection could not be established.
enum ConnectFailure {
    /// Nothing listens there (docker's "Cannot connect to the daemon").
    Refused,
    /// The TLS handshake failed; the text is Go's.
    Tls(String),
}

/// `Get`, `Post`, ... as Go prints methods in `error during connect` messages.
fn go_method(m: &Method) -> String {
    let s = m.as_str().to_ascii_lowercase();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => s,
    }
}

impl Transport {
    fn refused(&self) -> CliError {
        CliError::Connect {
            host: self.host_str.clone(),
        }
    }

    /// `error during connect: Get "https://host:port/path": {detail}`.
    fn during_connect(&self, method: &Method, path: &str, detail: &str) -> CliError {
        let (scheme, authority) = match &self.host {
            Host::Unix(p) => ("http", p.display().to_string().replace('/', "%2F")),
            Host::Tcp(a) if self.tls.is_some() => ("https", a.clone()),
            Host::Tcp(a) => ("http", a.clone()),
        };
        let hint = match (&self.host, &self.tls) {
            (Host::Tcp(_), None) => {
                "\n* Are you trying to connect to a TLS-enabled daemon without TLS? (set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or pass --tlsverify)"
            }
            _ => "",
        };
        CliError::msg(format!(
            "error during connect: {} \"{scheme}://{authority}{path}\": {detail}{hint}",
            go_method(method)
        ))
    }

    async fn connect(&self) -> Result<Conn, ConnectFailure> {
        match &self.host {
            Host::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(Conn::Unix)
                .map_err(|_| ConnectFailure::Refused),
            Host::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|_| ConnectFailure::Refused)?;
                let _ = stream.set_nodelay(true);
                let Some(tls) = &self.tls else {
                    return Ok(Conn::Tcp(stream));
                };
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                match connector.connect(tls.name.clone(), stream).await {
                    Ok(s) => Ok(Conn::Tls(Box::new(s))),
                    Err(e) => Err(ConnectFailure::Tls(match tls::rustls_error(&e) {
                        Some(r) => tls::describe_rustls(r),
                        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            "remote error: tls: the daemon closed the connection during the TLS handshake".to_string()
                        }
                        None => e.to_string(),
                    })),
                }
            }
        }
    }

    /// Connects (TLS handshake included), performs the HTTP/1.1 handshake and sends `req`.
    /// Nothing listening is [`CliError::Connect`]; any later failure is docker's
    /// `error during connect: ...` text.
    async fn round_trip<B>(&self, req: Request<B>) -> Result<Response<Incoming>, CliError>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        let conn = match self.connect().await {
            Ok(c) => c,
            Err(ConnectFailure::Refused) => return Err(self.refused()),
            Err(ConnectFailure::Tls(detail)) => {
                return Err(self.during_connect(&method, &path, &detail))
            }
        };
        let result = match conn {
            Conn::Unix(s) => send_over(TokioIo::new(s), req).await,
            Conn::Tcp(s) => send_over(TokioIo::new(s), req).await,
            Conn::Tls(s) => send_over(TokioIo::new(*s), req).await,
        };
        result.map_err(|e| self.during_connect(&method, &path, &e))
    }
}

async fn send(
    transport: &Transport,
    method: Method,
    path_and_query: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
) -> Result<Response<Incoming>, CliError> {
    let authority = match &transport.host {
        Host::Unix(_) => "localhost".to_string(),
        Host::Tcp(a) => a.clone(),
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(path_and_query.as_str())
        .header("Host", authority)
        .header(
            "User-Agent",
            format!("shoal-cli/{}", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        builder = builder.header("Content-Type", "application/json");
    }
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    let req = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| CliError::msg(e.to_string()))?;
    transport.round_trip(req).await
}

/// The bollard custom transport: rewrites bollard's absolute URI to origin form and sends the
/// request over the TLS connector.
async fn send_bollard(
    transport: &Transport,
    req: bollard::BollardRequest,
) -> Result<Response<Incoming>, bollard::errors::Error> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let authority = match &transport.host {
        Host::Unix(_) => "localhost".to_string(),
        Host::Tcp(a) => a.clone(),
    };
    parts.uri = path.parse().map_err(|e: hyper::http::uri::InvalidUri| {
        bollard::errors::Error::IOError {
            err: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        }
    })?;
    if let Ok(v) = hyper::header::HeaderValue::from_str(&authority) {
        parts.headers.insert(hyper::header::HOST, v);
    }
    let req = Request::from_parts(parts, body);
    transport.round_trip(req).await.map_err(|e| {
        let kind = match e {
            CliError::Connect { .. } => std::io::ErrorKind::ConnectionRefused,
            _ => std::io::ErrorKind::Other,
        };
        bollard::errors::Error::IOError {
            err: std::io::Error::new(kind, e.to_string()),
        }
    })
}

async fn send_over<I, B>(io: I, req: Request<B>) -> Result<Response<Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let conn_task = tokio::spawn(conn);
    match sender.send_request(req).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            // When the connection itself failed (a TLS alert read right after a TLS 1.3
            // handshake: no or a rejected client certificate), its error says why; the
            // request only knows the connection went away.
            let conn_result =
                tokio::time::timeout(std::time::Duration::from_secs(1), conn_task).await;
            match conn_result {
                Ok(Ok(Err(ce))) => Err(hyper_error_text(&ce)),
                _ => Err(hyper_error_text(&e)),
            }
        }
    }
}

/// The text of a failed exchange: the TLS alert or verification failure when there is one
/// (with TLS 1.3 the daemon rejects a client certificate after the handshake, on first read),
/// Go's `EOF` for a connection closed without an answer, else hyper's error and its causes.
fn hyper_error_text(e: &hyper::Error) -> String {
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return tls::describe_rustls(r);
        }
        if let Some(r) = s
            .downcast_ref::<std::io::Error>()
            .and_then(tls::rustls_error)
        {
            return tls::describe_rustls(r);
        }
        causes.push(s.to_string());
        src = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() {
        return "EOF".to_string();
    }
    let mut text = e.to_string();
    for c in causes {
        text.push_str(": ");
        text.push_str(&c);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts() {
        assert_eq!(
            Host::parse("unix:///run/shoal/shoal.sock"),
            Ok(Host::Unix(PathBuf::from("/run/shoal/shoal.sock")))
        );
        assert_eq!(
            Host::parse("unix://relative.sock"),
            Ok(Host::Unix(PathBuf::from("relative.sock")))
        );
        assert_eq!(
            Host::parse(""),
            Ok(Host::Unix(PathBuf::from("/run/shoal/shoal.sock")))
        );
        assert_eq!(
            Host::parse("/tmp/x.sock"),
            Ok(Host::Unix(PathBuf::from("/tmp/x.sock")))
        );
        assert_eq!(
            Host::parse("tcp://10.0.0.1:2376"),
            Ok(Host::Tcp("10.0.0.1:2376".to_string()))
        );
        assert_eq!(
            Host::parse("tcp://example.com"),
            Ok(Host::Tcp("example.com:2375".to_string()))
        );
        assert_eq!(
            Host::parse("http://127.0.0.1:8080/"),
            Ok(Host::Tcp("127.0.0.1:8080".to_string()))
        );
        assert_eq!(
            Host::parse("tcp://[::1]:2375"),
            Ok(Host::Tcp("[::1]:2375".to_string()))
        );
        assert_eq!(
            Host::parse("tcp://:2375"),
            Ok(Host::Tcp("127.0.0.1:2375".to_string()))
        );
        assert_eq!(
            Host::parse_with("tcp://10.97.0.2", true),
            Ok(Host::Tcp("10.97.0.2:2376".to_string()))
        );
        assert_eq!(
            Host::parse_with("https://10.97.0.2:12376", true),
            Ok(Host::Tcp("10.97.0.2:12376".to_string()))
        );
        assert_eq!(
            Host::parse_with("unix:///x.sock", true),
            Ok(Host::Unix(PathBuf::from("/x.sock")))
        );
        assert!(Host::parse("ssh://user@host").is_err());
        assert!(Host::parse("tcp://host:notaport").is_err());
        assert!(Host::parse("tcp://host:80/path").is_err());
    }

    #[test]
    fn unreachable_daemons_give_docker_style_errors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for host in ["tcp://127.0.0.1:1", "unix:///nonexistent/shoal.sock"] {
            let err = rt.block_on(Client::connect(&host.into())).unwrap_err();
            assert_eq!(
                err,
                CliError::Connect {
                    host: host.to_string()
                }
            );
            assert_eq!(err.exit_code(), 1);
        }
        assert!(rt.block_on(Client::connect(&"ssh://x".into())).is_err());
    }

    #[test]
    fn negotiates_versions() {
        assert_eq!(negotiate(Some("1.51")), (1, 51));
        assert_eq!(negotiate(Some("1.53")), (1, 51));
        assert_eq!(negotiate(Some("1.44")), (1, 44));
        assert_eq!(negotiate(None), (1, 24));
        assert_eq!(negotiate(Some("garbage")), (1, 24));
    }

    #[test]
    fn error_texts() {
        let e = CliError::Connect {
            host: "unix:///run/shoal/shoal.sock".to_string(),
        };
        assert_eq!(
            e.to_string(),
            "Cannot connect to the Shoal daemon at unix:///run/shoal/shoal.sock. Is the shoal daemon running?"
        );
        let e = daemon_error(
            503,
            Some("application/json"),
            br#"{"message":"This node is not a swarm manager.\n"}"#,
            "/v1.51/nodes",
        );
        assert_eq!(
            e.to_string(),
            "Error response from daemon: This node is not a swarm manager."
        );
        assert_eq!(e.exit_code(), 1);
        let e = daemon_error(404, Some("text/plain"), b"page not found\n", "/v1.51/x");
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "Error response from daemon: page not found");
        let e = daemon_error(500, None, b"", "/v1.51/x");
        assert_eq!(
            e.to_string(),
            "request returned Internal Server Error for API route and version /v1.51/x, check if the server supports the requested API version"
        );
        let b: CliError = bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message: "name conflicts".to_string(),
        }
        .into();
        assert_eq!(b.to_string(), "Error response from daemon: name conflicts");
        assert_eq!(
            CliError::join(vec![CliError::msg("a"), CliError::msg("b")]),
            Err(CliError::msg("a\nb"))
        );
        assert_eq!(CliError::join(vec![]), Ok(()));
    }
}
