//! # shoal-net: Shoal's data plane
//!
//! Turns a node's [`NetworkMap`](shoal_api::netmap::NetworkMap) (computed by the managers, sent
//! with the node's assignment set) into packets that flow:
//!
//! ```text
//!  NetworkMap ──► kernel   bridges + VXLAN per overlay, one network namespace per task
//!            │            (veth per attachment, address, default route), nftables rules:
//!            │            routing mesh (DNAT on every node) and service VIPs (DNAT in tasks)
//!            ├──► proxy    the routing mesh in userspace, where the kernel path is unavailable
//!            └──► dns      names inside tasks: services (VIP or tasks), tasks.<svc>, aliases,
//!                          <svc>.<slot>; the rest forwarded to the node's resolvers
//! ```
//!
//! See docs/networking.md for the design and how the map reaches each node.

pub mod dataplane;
pub mod dns;
pub mod kernel;
pub mod proxy;
