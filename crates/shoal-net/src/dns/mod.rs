//! Service discovery inside tasks: the embedded DNS server on 127.0.0.11.
//!
//! - [`resolve`] / [`reverse`]: the pure rules (service name → VIP or tasks, `tasks.<service>`,
//!   network aliases, `<service>.<slot>[.<task id>]`), over the node's [`NetworkMap`] and the
//!   networks of the asking task.
//! - [`DnsServer`]: hickory-server answering those names for every task of the node, each on
//!   its own sockets bound in its namespace ([`bind_in_netns`]), forwarding the rest to the
//!   node's resolvers ([`node_resolv_conf`]).
//! - [`resolv_conf`] / [`hosts_file`]: what a task's resolver reads.
//!
//! [`NetworkMap`]: shoal_api::netmap::NetworkMap

mod files;
mod netns;
mod resolve;
mod server;

pub use files::{
    hosts_file, node_resolv_conf, resolv_conf, ResolvConf, EMBEDDED_DNS_ADDR, HOST_RESOLV_CONF,
    SYSTEMD_RESOLV_CONF,
};
pub use netns::bind_in_netns;
pub use resolve::{resolve, reverse, task_name, Answer};
pub use server::{DnsConfig, DnsError, DnsServer, DEFAULT_FORWARD_TIMEOUT, SERVICE_TTL};

#[cfg(test)]
mod tests;
