//! Socket addresses in the kernel's form, for the backends' msghdrs.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

/// A socket address from kernel bytes (`sockaddr_in` or `sockaddr_in6`); IPv4-mapped IPv6
/// addresses come back as IPv4.
pub(crate) fn sockaddr_from(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    if family == libc::AF_INET && b.len() >= std::mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: length checked; read_unaligned copies the bytes.
        let s: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        Some(SocketAddr::from((
            s.sin_addr.s_addr.to_ne_bytes(),
            u16::from_be(s.sin_port),
        )))
    } else if family == libc::AF_INET6 && b.len() >= std::mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: as above.
        let s: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
        let port = u16::from_be(s.sin6_port);
        Some(match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, port)),
            None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, s.sin6_scope_id)),
        })
    } else {
        None
    }
}

/// The kernel form of `addr` for a socket of the shard's family: a dual-stack or IPv6 socket
/// takes IPv4 destinations as mapped addresses; an IPv4 socket gets a `sockaddr_in` (which fits
/// in the `sockaddr_in6` storage).
pub(crate) fn sockaddr_to(addr: SocketAddr) -> libc::sockaddr_in6 {
    // SAFETY: zeroed sockaddr_in6 is valid.
    let mut out: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is smaller than sockaddr_in6; both are plain C structs.
            let sin =
                unsafe { &mut *(&mut out as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_addr.s6_addr = a.ip().octets();
            out.sin6_scope_id = a.scope_id();
        }
    }
    out
}
