//! Address classification: which IP addresses a request may reach without naming them.
//!
//! An IPv6 address that carries an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, the
//! deprecated IPv4-compatible `::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64
//! `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) is judged by
//! the IPv4 policy of every IPv4 address it embeds: such addresses are routed to that IPv4
//! address by translators, tunnels or the kernel itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 addresses embedded in `v6` (none for an ordinary IPv6 address).
pub fn embedded_v4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let tail = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    // IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96 except :: and ::1 themselves,
    // which are classified as IPv6) and IPv4-translated (::ffff:0:0:0/96).
    if s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && !(s[6] == 0 && s[7] <= 1))) {
        return vec![tail(s[6], s[7])];
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return vec![tail(s[6], s[7])];
    }
    // NAT64: the well-known prefix and the local-use prefix (RFC 6052, RFC 8215).
    if (s[0] == 0x64 && s[1] == 0xff9b) && (s[2..6] == [0; 4] || s[2] == 1) {
        return vec![tail(s[6], s[7])];
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return vec![tail(s[1], s[2])];
    }
    // Teredo: 2001:0::/32; the server in bits 32..64, the client (inverted) in the last 32.
    if s[0] == 0x2001 && s[1] == 0 {
        return vec![tail(s[2], s[3]), tail(!s[6], !s[7])];
    }
    Vec::new()
}

/// Whether an address is one a request may reach without naming it explicitly: not
/// loopback, private, link-local (cloud metadata among them), CGNAT, unspecified,
/// multicast, documentation or reserved — in any of its IPv6 spellings.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            let embedded = embedded_v4(v6);
            if !embedded.is_empty() {
                return embedded.into_iter().all(public_v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 among them)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed locally)
                || (s[0] == 0x100 && s[1..4] == [0; 3]) // discard-only 100::/64
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || s[0] == 0x5f00) // SRv6 SIDs
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata 169.254.169.254 among them
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10 (Alibaba metadata)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

/// The address as IPv4 when it is one in an IPv6 spelling the kernel routes to IPv4
/// directly (mapped or compatible), else unchanged. Used to compare with listen addresses.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && !(s[6] == 0 && s[7] <= 1))) {
                IpAddr::V4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32))
            } else {
                ip
            }
        }
        v4 => v4,
    }
}

/// Whether `ip` is an address of this machine. Asked of the kernel by binding a UDP socket
/// to it: binding succeeds only for local addresses (no interface enumeration needed, and
/// no library offers a portable one in our dependency tree).
pub fn is_local(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The IPv6 unspecified address (a placeholder in error values).
pub(crate) const V6_UNSPECIFIED: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn non_public_addresses_in_every_spelling() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::7f00:1",
            "::ffff:0:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::",
            // Teredo: server 65.54.227.120, client 127.0.0.1 (inverted: 80ff:fffe).
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            // Teredo with a private server address.
            "2001:0:a00:1::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(a)), "{a} must not be public");
        }
        for a in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::",
        ] {
            assert!(is_public(ip(a)), "{a} must be public");
        }
    }

    #[test]
    fn mapped_and_compatible_forms_compare_as_ipv4() {
        assert_eq!(canonical(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert!(is_local(ip("127.0.0.1")));
        assert!(is_local(ip("::ffff:127.0.0.1")));
        assert!(
            !is_local(ip("192.0.2.1")),
            "documentation addresses are never local"
        );
    }
}
