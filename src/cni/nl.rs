//! Small netlink helpers shared by the CNI's node, pod and peer code: error mapping,
//! link lookup by name, attribute accessors and "exactly this address" on a link.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::CniError;

/// The errno of a kernel rejection, if that is what `e` is.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Wraps a netlink failure with what we were doing (naming the link or address).
pub(crate) fn fail(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> CniError {
    let what = what.into();
    move |e| CniError::Netlink {
        what,
        source: match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io(),
            other => std::io::Error::other(other.to_string()),
        },
    }
}

/// The link called `name`, or `None` when there is none.
pub(crate) async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(fail(format!("look up link {name}"))(e)),
    }
}

/// The link with index `index`, or `None` when there is none.
pub(crate) async fn link_by_index(h: &Handle, index: u32) -> Result<Option<LinkMessage>, CniError> {
    let mut links = h.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(fail(format!("look up link #{index}"))(e)),
    }
}

/// Every link of the namespace.
pub(crate) async fn all_links(h: &Handle) -> Result<Vec<LinkMessage>, CniError> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(fail("list links"))
}

/// Finds an attribute of a link.
pub(crate) fn link_attr<T>(
    link: &LinkMessage,
    f: impl Fn(&LinkAttribute) -> Option<T>,
) -> Option<T> {
    link.attributes.iter().find_map(f)
}

/// A link's name.
pub(crate) fn name(link: &LinkMessage) -> Option<String> {
    link_attr(link, |a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// A link's MTU.
pub(crate) fn mtu(link: &LinkMessage) -> Option<u32> {
    link_attr(link, |a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// A link's hardware address, when it is an Ethernet MAC.
pub(crate) fn mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link_attr(link, |a| match a {
        LinkAttribute::Address(v) => <[u8; 6]>::try_from(v.as_slice()).ok(),
        _ => None,
    })
}

/// The bridge (or other controller) a link is enslaved to.
pub(crate) fn controller(link: &LinkMessage) -> Option<u32> {
    link_attr(link, |a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
pub(crate) fn peer_index(link: &LinkMessage) -> Option<u32> {
    link_attr(link, |a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })
}

/// A link's alias (`ip link set .. alias`).
pub(crate) fn alias(link: &LinkMessage) -> Option<String> {
    link_attr(link, |a| match a {
        LinkAttribute::IfAlias(s) => Some(s.clone()),
        _ => None,
    })
}

/// IPv4 addresses (with prefix and the kernel's message, for deletion) on link `index`.
pub(crate) async fn ipv4_addrs(
    h: &Handle,
    index: u32,
    what: &str,
) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>, CniError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(fail(format!("list addresses of {what}")))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
        .filter_map(|m| {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })?;
            Some((ip, m.header.prefix_len, m))
        })
        .collect())
}

/// Makes `ip/prefix` the only IPv4 address of link `index` (named `what` in errors);
/// an address that is already right is left alone, so nothing flaps on a restart.
pub(crate) async fn ensure_only_addr(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    what: &str,
) -> Result<(), CniError> {
    let mut present = false;
    for (have, have_prefix, msg) in ipv4_addrs(h, index, what).await? {
        if have == ip && have_prefix == prefix {
            present = true;
            continue;
        }
        h.address().del(msg).execute().await.map_err(fail(format!(
            "remove stale address {have}/{have_prefix} from {what}"
        )))?;
    }
    if !present {
        match h
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail(format!("add address {ip}/{prefix} to {what}"))(e)),
        }
    }
    Ok(())
}
