//! # shoal-rpc: the node-to-node protocol
//!
//! Every exchange between Shoal nodes is gRPC (tonic, prost) over mutual TLS (rustls, ring) on
//! the cluster management port, 2377: joining, agent sessions, Raft, request forwarding and task
//! logs. The wire schema is `proto/shoal.proto`; model payloads travel as JSON in `bytes`
//! fields because the model types (shoal-api) are serde.
//!
//! ```text
//!   worker agent ── RemoteManagerLink ──┐                 ┌── serve(listener, ServerConfig,
//!   joining node ── fetch_root_ca ──────┤                 │         PeerFn, Handlers, shutdown)
//!   manager raft ── GrpcRaftTransport ──┼── NodeClient ══ mTLS :2377 ══► authorize(Method, Peer)
//!   follower API ── forward_api ────────┤  (ClientConfig)  │      ├─► CaHandler
//!   manager logs ── task_logs ──────────┘                 │      ├─► DispatcherHandler
//!                                                         │      ├─► RaftHandler
//!                                                         │      ├─► ControlHandler
//!                                                         │      └─► LogsHandler
//! ```
//!
//! This crate does not make certificates or TLS configs: the caller passes rustls
//! `ServerConfig`/`ClientConfig` values (shoal-ca builds them) and a [`PeerFn`] that maps a
//! verified client certificate to a [`Peer`] (node ID from the CN, role from the OU).
//!
//! ## Identity and access
//!
//! The server reads the client certificate of each connection once, after the handshake. A
//! connection without one (or whose certificate names no node) is *anonymous*. Every call is
//! checked against one table, [`Method::access`], before its handler runs:
//!
//! | service.method | who may call | what it does |
//! | --- | --- | --- |
//! | `Ca.GetRootCa` | anyone, anonymous too | returns the root CA certificate (PEM); a joining node checks it against the token's digest |
//! | `Ca.IssueCertificate` | anyone, anonymous too | CSR + join token -> node ID, certificate, root, role, manager addresses, cluster ID; a wrong token is refused by the handler |
//! | `Ca.RenewCertificate` | any node | CSR -> a new certificate for the calling node (identity from its current certificate) |
//! | `Dispatcher.Register` | any node | opens the caller's agent session (description JSON, address) -> heartbeat period, managers' addresses, the caller's recorded role |
//! | `Dispatcher.Heartbeat` | any node | keeps the session -> heartbeat period, managers' addresses, the caller's recorded role |
//! | `Dispatcher.Assignments` | any node | server stream of the caller's full assignment sets (JSON), re-sent on change |
//! | `Dispatcher.ReportStatus` | any node | task status updates (JSON) for tasks on the caller's node |
//! | `Raft.Call` | managers | one openraft RPC as bytes (`RpcKind` code + payload) -> the reply bytes; `RpcKind::Propose` carries a follower's store write to the leader |
//! | `Raft.AddManager` | managers | a new manager asks the leader to add *itself* (raft ID, address) |
//! | `Raft.RemoveManager` | managers | asks the leader to remove a manager |
//! | `Control.ForwardApi` | managers | a follower forwards an Engine API request to the leader -> status, headers, body |
//! | `Control.ForwardApiStream` | managers | the same with a streamed body (first message: head) |
//! | `Logs.TaskLogs` | managers | server stream of a task's output lines from the node that runs it |
//!
//! An anonymous caller of a node-only method gets `Unauthenticated`; a worker calling a
//! manager-only method gets `PermissionDenied` (`node <id> is a worker and may not call
//! Raft.Call: ...`). Dispatcher calls always act for the certificate's node: a `node_id` in a
//! request is ignored (and logged when it differs), so a node cannot act for another.
//!
//! ## TLS and server names
//!
//! The server runs the caller's `ServerConfig` unchanged on connections it accepts itself
//! (handshakes in their own tasks, 10 s limit) and hands them to tonic with
//! `serve_with_incoming`. A certificate from another CA fails the handshake; a config that
//! allows clients without a certificate is what lets joining nodes reach `Ca`. The client runs
//! the caller's `ClientConfig` with its ALPN list set to `h2`, and asks for the server name in
//! [`ClientOptions::server_name`]: `swarm-manager` by default (every manager certificate carries
//! it); use `swarm-ca` for the join CSR call, or a node ID / `swarm-worker` to call a worker's
//! `Logs`.
//!
//! ## Failures
//!
//! Errors are [`RpcError`] on both sides: handlers return one, the client gets the same variant
//! back ([`RpcError::NotLeader`] keeps the leader's address). Connection failures are
//! [`RpcError::Connect`]; a connection that breaks mid-call is [`RpcError::Unavailable`].
//! [`GrpcRaftTransport`] maps both to `TransportError::Unreachable`; [`RemoteManagerLink`]
//! moves on to the next manager on any failure. On shutdown, [`serve`] stops accepting, ends
//! its server streams and returns within [`SHUTDOWN_GRACE`].
//!
//! ## Modules
//! - `auth`: [`Peer`], [`PeerRole`], [`PeerFn`], [`ConnInfo`], [`Method`], [`Access`],
//!   [`authorize`]
//! - `handlers`: the handler traits, [`Handlers`], [`ManagerLinkHandler`], [`RuntimeLogs`]
//! - `server`: [`serve`]
//! - `client`: [`NodeClient`], [`ClientOptions`], [`fetch_root_ca`]
//! - `raft_transport`: [`GrpcRaftTransport`]
//! - `manager_link`: [`RemoteManagerLink`]
//! - `error`: [`RpcError`]
//! - `tls`, `convert`: the TLS plumbing and wire conversions (private)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod client;
mod convert;
mod error;
mod handlers;
mod manager_link;
mod raft_transport;
mod server;
mod tls;

/// The generated protobuf messages, clients and servers (`proto/shoal.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("shoal.rpc.v1");
}

pub use auth::{authorize, Access, ConnInfo, Method, Peer, PeerFn, PeerRole};
pub use client::{fetch_root_ca, ClientOptions, NodeClient, SessionInfo, DEFAULT_SERVER_NAME};
pub use error::{RpcError, LEADER_ADDR_METADATA};
pub use handlers::{
    BodyStream, CaHandler, ControlHandler, DispatcherHandler, Handlers, IssueRequest,
    IssuedCertificate, LogsHandler, ManagerLinkHandler, ManagerMember, RaftHandler, RuntimeLogs,
};
pub use manager_link::RemoteManagerLink;
pub use raft_transport::GrpcRaftTransport;
pub use server::{serve, MAX_MESSAGE_BYTES, SHUTDOWN_GRACE};

/// The default node-to-node port.
pub const DEFAULT_PORT: u16 = 2377;
