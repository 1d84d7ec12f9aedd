//! The embedded DNS server: one [`hickory_server::Server`] per task, on the UDP socket and TCP
//! listener bound in the task's namespace (127.0.0.11:53), all sharing one [`NetworkMap`].
//!
//! ```text
//!  task ns: 127.0.0.11:53 ──► TaskHandler(task's networks) ──► resolve(map) ── Found: A, TTL 600
//!                                                                   └ NotOurs: forward the query
//!                                                                     as received, from the
//!                                                                     node's namespace, over the
//!                                                                     client's transport
//! ```
//!
//! A queries for our names get the addresses (rotated between answers: round robin), other
//! types for our names an empty NOERROR (AAAA included: overlays are IPv4), PTR queries for our
//! addresses the task or service name; anything else goes to the node's resolvers, and SERVFAIL
//! comes back when none answers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, PTR};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use shoal_api::netmap::NetworkMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::files::node_resolv_conf;
use super::resolve::{resolve, reverse, Answer};

/// Docker's TTL for service records.
pub const SERVICE_TTL: u32 = 600;
/// How long one upstream resolver gets to answer a forwarded query.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an idle TCP client connection is kept.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Errors of the embedded DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the DNS server must be created inside a tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How the server answers what is not ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Resolvers to forward other names to, tried in order; empty: SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// How long each upstream gets.
    pub timeout: Duration,
    /// TTL of our answers.
    pub ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            upstreams: Vec::new(),
            timeout: DEFAULT_FORWARD_TIMEOUT,
            ttl: SERVICE_TTL,
        }
    }
}

impl DnsConfig {
    /// Forwarding to the node's resolvers (see [`super::node_resolv_conf`]).
    pub fn from_node() -> Self {
        DnsConfig {
            upstreams: node_resolv_conf().upstreams(),
            ..DnsConfig::default()
        }
    }
}

/// State shared by every task's handler.
struct Shared {
    map: RwLock<Arc<NetworkMap>>,
    config: DnsConfig,
    /// Turns answers with several addresses between queries (round robin).
    rotation: AtomicUsize,
}

impl Shared {
    fn map(&self) -> Arc<NetworkMap> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The embedded DNS server of one node, serving all its tasks.
pub struct DnsServer {
    shared: Arc<Shared>,
    tasks: Mutex<HashMap<String, Server<TaskHandler>>>,
    runtime: tokio::runtime::Handle,
}

impl DnsServer {
    /// A server with an empty map; call inside a tokio runtime, which then runs every task's
    /// listeners.
    pub fn new(config: DnsConfig) -> Result<Self, DnsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime)?;
        Ok(DnsServer {
            shared: Arc::new(Shared {
                map: RwLock::new(Arc::new(NetworkMap::default())),
                config,
                rotation: AtomicUsize::new(0),
            }),
            tasks: Mutex::new(HashMap::new()),
            runtime,
        })
    }

    /// Replaces the map every answer is computed from.
    pub fn set_map(&self, map: Arc<NetworkMap>) {
        *self
            .shared
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner) = map;
    }

    /// The map answers are computed from now.
    pub fn map(&self) -> Arc<NetworkMap> {
        self.shared.map()
    }

    /// The forwarding configuration.
    pub fn config(&self) -> &DnsConfig {
        &self.shared.config
    }

    /// Serves a task on its own sockets (non-blocking, e.g. from [`super::bind_in_netns`]),
    /// resolving for the given network IDs in that order. A task added again replaces its
    /// former sockets.
    pub fn add_task(
        &self,
        task_id: &str,
        networks: Vec<String>,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> Result<(), DnsError> {
        let _runtime = self.runtime.enter();
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let mut server = Server::new(TaskHandler {
            shared: self.shared.clone(),
            task_id: task_id.to_string(),
            networks,
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        let old = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(task_id.to_string(), server);
        if let Some(old) = old {
            stop(old);
        }
        Ok(())
    }

    /// Stops serving a task and closes its sockets; false when it was not served.
    pub fn remove_task(&self, task_id: &str) -> bool {
        let old = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(task_id);
        match old {
            Some(server) => {
                stop(server);
                true
            }
            None => false,
        }
    }

    /// The IDs of the tasks served, sorted.
    pub fn tasks(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let tasks = std::mem::take(self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner));
        tasks.into_values().for_each(stop);
    }
}

/// Cancels a task's server; dropping it aborts its listeners, which closes the sockets.
fn stop(server: Server<TaskHandler>) {
    server.shutdown_token().cancel();
    drop(server);
}

/// Answers one task's queries.
struct TaskHandler {
    shared: Arc<Shared>,
    task_id: String,
    networks: Vec<String>,
}

/// What to do with one query.
enum Reply {
    /// Answer records of ours (possibly none: NOERROR, no data).
    Local(Vec<Record>),
    /// Not ours: ask the node's resolvers.
    Forward,
    /// Answer with just this code.
    Error(ResponseCode),
}

impl TaskHandler {
    fn decide(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query
            || request.metadata.message_type != MessageType::Query
        {
            return Reply::Error(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::Error(ResponseCode::FormErr);
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return Reply::Forward;
        }
        let name: &Name = query.original().name();
        let text = name.to_ascii();
        let map = self.shared.map();
        let ttl = self.shared.config.ttl;
        match query.query_type() {
            RecordType::PTR => {
                let ip = name
                    .parse_arpa_name()
                    .ok()
                    .filter(|net| net.prefix_len() == 32)
                    .and_then(|net| match net.addr() {
                        std::net::IpAddr::V4(ip) => Some(ip),
                        std::net::IpAddr::V6(_) => None,
                    });
                let target = ip.and_then(|ip| reverse(&map, &self.networks, ip));
                match target.and_then(|t| Name::from_ascii(format!("{t}.")).ok()) {
                    Some(target) => Reply::Local(vec![Record::from_rdata(
                        name.clone(),
                        ttl,
                        RData::PTR(PTR(target)),
                    )]),
                    None => Reply::Forward,
                }
            }
            qtype => match resolve(&map, &self.networks, &text) {
                Answer::NotOurs => Reply::Forward,
                Answer::Found(_) if qtype != RecordType::A => Reply::Local(Vec::new()),
                Answer::Found(mut ips) => {
                    let turn = self.shared.rotation.fetch_add(1, Ordering::Relaxed);
                    let len = ips.len();
                    ips.rotate_left(turn % len);
                    Reply::Local(a_records(name, ttl, &ips))
                }
            },
        }
    }

    /// Sends `request` to the upstreams in turn over the client's transport; the first reply.
    async fn forward(&self, request: &Request) -> Option<Message> {
        let config = &self.shared.config;
        for upstream in &config.upstreams {
            let exchange = async {
                match request.protocol() {
                    Protocol::Udp => forward_udp(*upstream, request.as_slice()).await,
                    _ => forward_tcp(*upstream, request.as_slice()).await,
                }
            };
            let reply = tokio::time::timeout(config.timeout, exchange)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            match reply {
                Ok(msg) if msg.metadata.id == request.metadata.id => return Some(msg),
                Ok(_) => debug!(%upstream, "upstream answered another query id"),
                Err(error) => debug!(%upstream, %error, task = %self.task_id, "forwarding failed"),
            }
        }
        None
    }
}

fn a_records(name: &Name, ttl: u32, ips: &[Ipv4Addr]) -> Vec<Record> {
    ips.iter()
        .map(|ip| Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))))
        .collect()
}

async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A datagram that is not a DNS message is ignored; the timeout ends the wait.
        if let Ok(msg) = Message::from_vec(&buf[..n]) {
            return Ok(msg);
        }
    }
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Message::from_vec(&buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[async_trait::async_trait]
impl RequestHandler for TaskHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(edns) = &request.edns {
                b.edns(edns);
            }
            b
        };
        let sent = match self.decide(request) {
            Reply::Local(records) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.recursion_available = true;
                metadata.response_code = ResponseCode::NoError;
                let response = builder().build(
                    metadata,
                    records.iter(),
                    std::iter::empty(),
                    std::iter::empty(),
                    std::iter::empty(),
                );
                response_handle.send_response(response).await
            }
            Reply::Error(code) => {
                let response = builder().error_msg(&request.metadata, code);
                response_handle.send_response(response).await
            }
            Reply::Forward => match self.forward(request).await {
                Some(reply) => {
                    let mut b = MessageResponseBuilder::from_message_request(request);
                    if let Some(edns) = &reply.edns {
                        b.edns(edns);
                    }
                    let mut metadata = reply.metadata;
                    metadata.id = request.metadata.id;
                    let response = b.build(
                        metadata,
                        reply.answers.iter(),
                        reply.authorities.iter(),
                        std::iter::empty(),
                        reply.additionals.iter(),
                    );
                    response_handle.send_response(response).await
                }
                None => {
                    let response = builder().error_msg(&request.metadata, ResponseCode::ServFail);
                    response_handle.send_response(response).await
                }
            },
        };
        sent.unwrap_or_else(|error| {
            warn!(%error, task = %self.task_id, "could not send a DNS response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        })
    }
}
