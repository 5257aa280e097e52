//! Network interfaces by name: where a rank listens when told an interface rather than an
//! address (`HOROVOD_GLOO_IFACE` here, `horovodrun --network-interfaces` in the launcher).

// std has no interface list: getifaddrs is the one way to map a name to its addresses.
#![allow(unsafe_code)]

use std::io;

/// The first IPv4 address (else IPv6) of the network interface `nic`, or None if it has none.
pub fn interface_ip(nic: &str) -> io::Result<Option<std::net::IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`; on success we free it below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut v4 = None;
    let mut v6 = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != nic.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family tells its real type and size.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET && v4.is_none() {
            // SAFETY: the family is AF_INET, so the sockaddr is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            v4 = Some(std::net::IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ));
        } else if family == libc::AF_INET6 && v6.is_none() {
            // SAFETY: the family is AF_INET6, so the sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            v6 = Some(std::net::IpAddr::from(sin6.sin6_addr.s6_addr));
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(v4.or(v6))
}

/// The first of `nics` that has an address here, with that address (`--network-interfaces`:
/// each host listens on the first of the list it has).
pub fn first_interface_ip<'a>(
    nics: impl IntoIterator<Item = &'a str>,
) -> io::Result<Option<(&'a str, std::net::IpAddr)>> {
    for nic in nics {
        if let Some(ip) = interface_ip(nic)? {
            return Ok(Some((nic, ip)));
        }
    }
    Ok(None)
}
