//! Forgetting UDP flows DNATed to backends that are gone (ctnetlink, over a netfilter netlink
//! socket in the calling thread's namespace).
//!
//! A TCP connection to a dead task ends; a UDP "flow" does not: its conntrack entry keeps
//! sending a client's datagrams (same source port) to the old address until it times out
//! (30 s, 120 s once replied). So after the rules change, entries that were DNATed to an
//! overlay address no longer among the backends are deleted, and the next datagram is balanced
//! afresh.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Status, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use rtnetlink::packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::KernelError;

fn io(what: &str) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        what: format!("conntrack: {what}"),
        source,
    }
}

/// Whether `ip` is in `net/len`.
pub(crate) fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn open() -> Result<Socket, KernelError> {
    let mut s = Socket::new(NETLINK_NETFILTER).map_err(io("opening a socket"))?;
    s.bind_auto().map_err(io("binding"))?;
    s.connect(&SocketAddr::new(0, 0))
        .map_err(io("connecting"))?;
    // Bounded waits: a reply that never comes is an error, not a hang.
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads `tv` (a valid timeval of the given size) on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io("setting a timeout")(std::io::Error::last_os_error()));
    }
    Ok(s)
}

fn send(s: &Socket, flags: u16, msg: ConntrackMessage) -> Result<(), KernelError> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    let mut packet = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            msg,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    s.send(&buf, 0).map_err(io("sending"))?;
    Ok(())
}

/// Reads replies until the end of a dump or an acknowledgement, passing each entry to `each`.
/// A "not found" error counts as done (the entry went by itself).
fn receive(s: &Socket, mut each: impl FnMut(&[ConntrackAttribute])) -> Result<(), KernelError> {
    loop {
        let (buf, _) = s.recv_from_full().map_err(io("receiving"))?;
        let mut off = 0;
        while off < buf.len() {
            let msg =
                NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..]).map_err(|e| {
                    io("parsing")(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    ))
                })?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(()),
                        Some(_) if e.to_io().raw_os_error() == Some(libc::ENOENT) => Ok(()),
                        Some(_) => Err(io("request")(e.to_io())),
                    };
                }
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                    ..
                }) => each(&attrs),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

fn reply_source(attrs: &[ConntrackAttribute]) -> Option<Ipv4Addr> {
    attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleReply(tuples) => tuples.iter().find_map(|t| match t {
            Tuple::Ip(ips) => ips.iter().find_map(|i| match i {
                IPTuple::SourceAddress(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

fn is_udp(tuples: &[Tuple]) -> bool {
    tuples.iter().any(|t| match t {
        Tuple::Proto(p) => p.contains(&ProtoTuple::Protocol(Protocol::Udp)),
        _ => false,
    })
}

/// Deletes the UDP conntrack entries of the calling thread's namespace that were DNATed to an
/// address inside one of `subnets` that is not in `keep`. Returns how many went.
pub(crate) fn flush_stale_udp(
    keep: &[Ipv4Addr],
    subnets: &[(Ipv4Addr, u8)],
) -> Result<usize, KernelError> {
    let s = open()?;
    send(
        &s,
        NLM_F_REQUEST | NLM_F_DUMP,
        ConntrackMessage::Get(vec![]),
    )?;
    let mut stale: Vec<Vec<Tuple>> = Vec::new();
    receive(&s, |attrs| {
        let dnat = attrs
            .iter()
            .any(|a| matches!(a, ConntrackAttribute::CtaStatus(st) if st.contains(Status::DstNat)));
        let Some(orig) = attrs.iter().find_map(|a| match a {
            ConntrackAttribute::CtaTupleOrig(t) => Some(t),
            _ => None,
        }) else {
            return;
        };
        let Some(target) = reply_source(attrs) else {
            return;
        };
        if dnat
            && is_udp(orig)
            && !keep.contains(&target)
            && subnets.iter().any(|(n, l)| in_subnet(target, *n, *l))
        {
            stale.push(orig.clone());
        }
    })?;
    let n = stale.len();
    for orig in stale {
        send(
            &s,
            NLM_F_REQUEST | NLM_F_ACK,
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(orig)]),
        )?;
        receive(&s, |_| {})?;
    }
    Ok(n)
}
