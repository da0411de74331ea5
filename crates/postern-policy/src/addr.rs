//! Classification of destination addresses for the SSRF guard.
//!
//! The proxy refuses by default to connect to addresses that reach the proxy's own
//! host or network (loopback, private, link-local, ...). IPv4-mapped and
//! IPv4-compatible IPv6 forms are classified by the IPv4 address they carry, so
//! `::ffff:127.0.0.1` is loopback like `127.0.0.1`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is (or is not) a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Unspecified,
    Multicast,
    /// Reserved, documentation, benchmarking, shared (CGNAT) and broadcast ranges.
    Reserved,
    /// Cloud instance metadata services (credentials live there): refused even
    /// when private destinations are allowed, unless named explicitly.
    Metadata,
}

impl AddressClass {
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
            AddressClass::Metadata => "cloud metadata",
        }
    }
}

/// Classifies an address, looking through IPv6 forms that embed an IPv4 address.
pub fn classify(ip: IpAddr) -> AddressClass {
    if is_metadata(ip) {
        return AddressClass::Metadata;
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// Cloud metadata and host services, which hand out credentials:
/// 169.254.169.254 (AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean and
/// others), 169.254.170.2 (AWS ECS task metadata), 169.254.170.23 and
/// fd00:ec2::23 (AWS EKS Pod Identity), fd00:ec2::254 (AWS over IPv6),
/// fd20:ce::254 (GCP over IPv6), 100.100.100.200 (Alibaba), 169.254.0.23
/// (Tencent) and 168.63.129.16 (Azure's WireServer), in any of their IPv6
/// spellings.
fn is_metadata(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => embedded_v4(v6),
    };
    if let Some(v4) = v4 {
        return matches!(
            v4.octets(),
            [169, 254, 169, 254]
                | [169, 254, 170, 2]
                | [169, 254, 170, 23]
                | [100, 100, 100, 200]
                | [169, 254, 0, 23]
                | [168, 63, 129, 16]
        );
    }
    [
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
        Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),
    ]
    .iter()
    .any(|m| ip == IpAddr::V6(*m))
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        // RFC 1122 §3.2.1.3: 0.0.0.0/8 means "this host" and reaches local services.
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_broadcast()
        || a >= 240 // RFC 1112 reserved
        || (a == 100 && (64..128).contains(&b)) // RFC 6598 shared address space
        || (a == 192 && b == 0 && c == 0) // RFC 6890 IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // RFC 5737 documentation
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (18..20).contains(&b))
    // RFC 2544 benchmarking
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let seg = ip.segments();
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if seg[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if seg[0] & 0xfe00 == 0xfc00 || seg[0] & 0xffc0 == 0xfec0 {
        // RFC 4193 unique local, and the deprecated site-local range.
        AddressClass::Private
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8
        || seg[0] & 0xfff0 == 0x3ff0
        || seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]
        || seg[0] == 0x2001 && seg[1] == 0
    {
        // RFC 3849 and RFC 9637 documentation, RFC 6666 discard-only, and
        // Teredo (RFC 4380), which embeds IPv4 addresses that may be private.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address carried by an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), SIIT (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96` and the
/// local-use `64:ff9b:1::/48`) or 6to4 (`2002::/16`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let tail = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..5] == [0; 5] && (seg[5] == 0xffff || (seg[5] == 0 && seg[6] != 0)) {
        return Some(tail);
    }
    // RFC 6052 and RFC 8215: NAT64 prefixes; SIIT (RFC 6145) `::ffff:0:0/96`.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || seg[..3] == [0x64, 0xff9b, 1]
        || seg[..6] == [0, 0, 0, 0, 0xffff, 0]
    {
        return Some(tail);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    None
}

/// The textual form of `ip`, as `to_string` gives it, without the
/// formatting machinery for IPv4 (see `push_ip`).
pub fn ip_string(ip: IpAddr) -> String {
    let mut out = String::with_capacity(15);
    push_ip(&mut out, ip);
    out
}

/// Appends the textual form of `ip` (RFC 5952 for IPv6). IPv4, the common
/// case on every request that carries forwarding fields, is written digit by
/// digit: `Display` costs several times more through the formatting machinery.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Into a stack buffer first: one append instead of one per digit.
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            out.push_str(std::str::from_utf8(&text[..n]).unwrap_or_default());
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn loopback_in_every_form() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
        ] {
            assert_eq!(class(s), AddressClass::Loopback, "{s}");
        }
        assert_eq!(class("64:ff9b::7f00:1"), AddressClass::Loopback);
        assert_eq!(class("2002:7f00:1::"), AddressClass::Loopback);
        assert_eq!(class("::ffff:0:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("64:ff9b:1::a00:1"), AddressClass::Private);
    }

    #[test]
    fn private_link_local_and_others() {
        for s in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(class(s), AddressClass::Private, "{s}");
        }
        for s in ["169.254.1.1", "fe80::1"] {
            assert_eq!(class(s), AddressClass::LinkLocal, "{s}");
        }
        for s in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::23",
            "fd20:ce::254",
            "100.100.100.200",
            "169.254.0.23",
            "168.63.129.16",
            "::ffff:168.63.129.16",
        ] {
            assert_eq!(class(s), AddressClass::Metadata, "{s}");
        }
        for s in ["0.0.0.0", "0.1.2.3", "::"] {
            assert_eq!(class(s), AddressClass::Unspecified, "{s}");
        }
        for s in ["224.0.0.1", "ff02::1"] {
            assert_eq!(class(s), AddressClass::Multicast, "{s}");
        }
        for s in [
            "100.64.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "2001:db8::1",
            "240.0.0.1",
            "3fff::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert_eq!(class(s), AddressClass::Reserved, "{s}");
        }
    }

    #[test]
    fn public_addresses() {
        for s in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "100.128.0.1",
            "172.32.0.1",
        ] {
            assert_eq!(class(s), AddressClass::Public, "{s}");
        }
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.9.99",
            "::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::from("x");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}"));
        }
    }
}
