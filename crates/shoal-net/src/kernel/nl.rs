//! Thin helpers over an rtnetlink [`Handle`]: look links up by name, read their attributes,
//! make addresses, routes and VXLAN flood entries match a desired set. Every "not there"
//! answer of the kernel (`ENODEV`, `ESRCH`, `ENOENT`) on a delete is success, so callers stay
//! idempotent.

use std::net::{IpAddr, Ipv4Addr};

use futures::StreamExt;
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::KernelError;

/// A netlink connection to one network namespace.
#[derive(Clone)]
pub(crate) struct Nl(pub(crate) Handle);

/// The errno of a netlink error, if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn gone(e: &rtnetlink::Error) -> bool {
    matches!(
        errno(e),
        Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
    )
}

fn nlerr(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let op = op.into();
    move |source| KernelError::Netlink { op, source }
}

/// The facts about a link that Shoal looks at.
#[derive(Clone, Debug, Default)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub up: bool,
    pub mtu: u32,
    pub controller: Option<u32>,
    pub alias: Option<String>,
    pub mac: Vec<u8>,
    pub vxlan: Vec<InfoVxlan>,
}

impl Link {
    fn from_msg(msg: &LinkMessage) -> Link {
        let mut l = Link {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
            ..Link::default()
        };
        for a in &msg.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(m) => l.mtu = *m,
                LinkAttribute::Controller(c) => l.controller = Some(*c),
                LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
                LinkAttribute::Address(m) => l.mac = m.clone(),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = v.clone(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

impl Nl {
    /// Opens a netlink connection in the calling thread's network namespace; the connection
    /// task is spawned on the current tokio runtime.
    pub(crate) fn connect() -> Result<Nl, KernelError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|e| KernelError::Io {
            what: "connecting to netlink".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| KernelError::Io {
            what: "opening a netlink socket".into(),
            source,
        })?;
        rt.spawn(conn);
        Ok(Nl(handle))
    }

    pub(crate) async fn link(&self, name: &str) -> Result<Option<Link>, KernelError> {
        let mut s = self.0.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(Link::from_msg(&m))),
            Ok(None) => Ok(None),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(nlerr(format!("looking up link {name}"))(e)),
        }
    }

    pub(crate) async fn links(&self) -> Result<Vec<Link>, KernelError> {
        let msgs: Vec<LinkMessage> = self
            .0
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nlerr("listing links"))?;
        Ok(msgs.iter().map(Link::from_msg).collect())
    }

    pub(crate) async fn add_link(&self, msg: LinkMessage, what: &str) -> Result<(), KernelError> {
        match self.0.link().add(msg).execute().await {
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(nlerr(format!("creating {what}"))),
        }
    }

    pub(crate) async fn set_link(&self, msg: LinkMessage, what: &str) -> Result<(), KernelError> {
        self.0
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nlerr(format!("configuring {what}")))
    }

    /// Sets MTU, controller (when given) and up on a link, only sending what differs.
    pub(crate) async fn conform(
        &self,
        link: &Link,
        mtu: u32,
        controller: Option<u32>,
    ) -> Result<(), KernelError> {
        if link.mtu == mtu && link.up && (controller.is_none() || link.controller == controller) {
            return Ok(());
        }
        let mut b = LinkUnspec::new_with_index(link.index).mtu(mtu);
        if let Some(c) = controller {
            if link.controller != Some(c) {
                b = b.controller(c);
            }
        }
        self.set_link(b.up().build(), &link.name).await
    }

    /// Gives a link the hardware address `mac` (taking it down for the change when needed:
    /// callers bring it up again with [`Nl::conform`]). Returns the link as it is now.
    pub(crate) async fn set_mac(&self, link: Link, mac: [u8; 6]) -> Result<Link, KernelError> {
        if link.mac == mac {
            return Ok(link);
        }
        let down = LinkUnspec::new_with_index(link.index).down().build();
        self.set_link(down, &link.name).await?;
        let msg = LinkUnspec::new_with_index(link.index)
            .address(mac.to_vec())
            .build();
        self.set_link(msg, &link.name).await?;
        Ok(Link {
            mac: mac.to_vec(),
            up: false,
            ..link
        })
    }

    pub(crate) async fn del_link(&self, index: u32, what: &str) -> Result<(), KernelError> {
        match self.0.link().del(index).execute().await {
            Err(e) if gone(&e) => Ok(()),
            r => r.map_err(nlerr(format!("deleting {what}"))),
        }
    }

    pub(crate) async fn del_link_named(&self, name: &str) -> Result<(), KernelError> {
        if let Some(l) = self.link(name).await? {
            self.del_link(l.index, name).await?;
        }
        Ok(())
    }

    /// Makes the IPv4 addresses of a link exactly `{ip/prefix}`.
    pub(crate) async fn set_only_addr(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), KernelError> {
        let msgs: Vec<AddressMessage> = self
            .0
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(nlerr(format!("listing addresses of {}", link.name)))?;
        let mut have = false;
        for m in msgs {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(a))
                | AddressAttribute::Address(IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
            if addr == Some(ip) && m.header.prefix_len == prefix && !have {
                have = true;
                continue;
            }
            match self.0.address().del(m).execute().await {
                Err(e) if !gone(&e) => {
                    return Err(nlerr(format!("removing an address of {}", link.name))(e))
                }
                _ => {}
            }
        }
        if !have {
            match self
                .0
                .address()
                .add(link.index, IpAddr::V4(ip), prefix)
                .execute()
                .await
            {
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                r => r.map_err(nlerr(format!("adding {ip}/{prefix} to {}", link.name)))?,
            }
        }
        Ok(())
    }

    /// Makes the IPv4 default route of the namespace go via `gw` (or removes it when `None`).
    pub(crate) async fn set_default_route(&self, gw: Option<Ipv4Addr>) -> Result<(), KernelError> {
        match gw {
            Some(gw) => self
                .0
                .route()
                .add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build())
                .replace()
                .execute()
                .await
                .map_err(nlerr(format!("setting the default route via {gw}"))),
            None => {
                let routes: Vec<RouteMessage> = self
                    .0
                    .route()
                    .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                    .execute()
                    .try_collect()
                    .await
                    .map_err(nlerr("listing routes"))?;
                for r in routes {
                    let is_default = r.header.destination_prefix_length == 0
                        && r.attributes
                            .iter()
                            .any(|a| matches!(a, RouteAttribute::Gateway(_)));
                    if is_default && r.header.table == 254 {
                        match self.0.route().del(r).execute().await {
                            Err(e) if !gone(&e) => {
                                return Err(nlerr("removing the default route")(e))
                            }
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The remote ends of the all-zeros (flood) FDB entries of a VXLAN device.
    pub(crate) async fn flood_entries(&self, vxlan: u32) -> Result<Vec<Ipv4Addr>, KernelError> {
        let mut s = self
            .0
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            let m = m.map_err(nlerr("listing forwarding entries"))?;
            if m.header.ifindex != vxlan {
                continue;
            }
            let zero = m
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l.iter().all(|b| *b == 0)));
            if !zero {
                continue;
            }
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => out.push(*ip),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                        out.push(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    fn flood_msg(vxlan: u32, dst: Ipv4Addr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = vxlan;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        m
    }

    /// `bridge fdb append 00:00:00:00:00:00 dev <vxlan> dst <dst>`.
    pub(crate) async fn add_flood(&self, vxlan: u32, dst: Ipv4Addr) -> Result<(), KernelError> {
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(Self::flood_msg(
            vxlan, dst,
        )));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        let mut handle = self.0.clone();
        let mut resp = handle
            .request(req)
            .map_err(nlerr(format!("adding flood entry {dst}")))?;
        while let Some(msg) = resp.next().await {
            if let NetlinkPayload::Error(err) = msg.payload {
                if err.code.is_some() && err.to_io().raw_os_error() != Some(libc::EEXIST) {
                    return Err(nlerr(format!("adding flood entry {dst}"))(
                        rtnetlink::Error::NetlinkError(err),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `bridge fdb del 00:00:00:00:00:00 dev <vxlan> dst <dst>`.
    pub(crate) async fn del_flood(&self, vxlan: u32, dst: Ipv4Addr) -> Result<(), KernelError> {
        match self
            .0
            .neighbours()
            .del(Self::flood_msg(vxlan, dst))
            .execute()
            .await
        {
            Err(e) if !gone(&e) => Err(nlerr(format!("removing flood entry {dst}"))(e)),
            _ => Ok(()),
        }
    }
}
