//! Slot ports nobody else may take. The agent holds the port of every slot
//! whose program is not running, TCP and UDP: a socket of each bound on the
//! IPv4 and the IPv6 wildcard (v6-only), never listening and without
//! `SO_REUSEADDR`, so no other process can bind that port on any address.
//! (With Landlock a slot's TCP binds are also limited by the kernel to its
//! own port; UDP has no such rule, so the holds are what keeps it.) The hold is released
//! just before the slot's program is spawned and taken again when it ends.
//!
//! The short gap between release and the program's own bind is covered by
//! the ping: a listener of another uid on a slot's port fails the ping (see
//! `supervisor`).

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
};

/// The held ports and their sockets.
#[derive(Default)]
pub struct PortHolds {
    held: HashMap<u16, Vec<OwnedFd>>,
}

impl PortHolds {
    /// Hold `port` on every address; returns whether the IPv4 wildcard (the
    /// address every client of the slot uses) could be bound. Holding a port
    /// already held changes nothing.
    pub fn hold(&mut self, port: u16) -> bool {
        if self.held.contains_key(&port) {
            return true;
        }
        let mut fds = Vec::with_capacity(4);
        let v4 = bind_v4(port, SockType::Stream);
        let ok = v4.is_some();
        fds.extend(v4);
        fds.extend(bind_v6(port, SockType::Stream));
        fds.extend(bind_v4(port, SockType::Datagram));
        fds.extend(bind_v6(port, SockType::Datagram));
        if !fds.is_empty() {
            self.held.insert(port, fds);
        }
        ok
    }

    /// Let `port` go (its program is about to bind it).
    pub fn release(&mut self, port: u16) {
        self.held.remove(&port);
    }

    /// Whether `port` is held.
    pub fn holds(&self, port: u16) -> bool {
        self.held.contains_key(&port)
    }
}

fn bind_v4(port: u16, kind: SockType) -> Option<OwnedFd> {
    let fd = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None).ok()?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(0, 0, 0, 0, port),
    )
    .ok()?;
    Some(fd)
}

fn bind_v6(port: u16, kind: SockType) -> Option<OwnedFd> {
    let fd = socket(AddressFamily::Inet6, kind, SockFlag::SOCK_CLOEXEC, None).ok()?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true).ok()?;
    let addr = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).ok()?;
    Some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_cannot_be_bound_on_any_address_until_released() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut h = PortHolds::default();
        assert!(h.hold(port));
        assert!(h.holds(port));
        // std sets SO_REUSEADDR, as most programs do; still refused.
        for addr in ["127.0.0.1", "0.0.0.0"] {
            assert!(std::net::TcpListener::bind((addr, port)).is_err(), "{addr}");
        }
        for addr in ["127.0.0.2", "0.0.0.0"] {
            assert!(
                std::net::UdpSocket::bind((addr, port)).is_err(),
                "udp {addr}"
            );
        }
        h.release(port);
        assert!(!h.holds(port));
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok());
    }
}
