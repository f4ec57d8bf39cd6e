//! Where outgoing HTTP may go (rule 26): the allow-list of the `server` block, and the URL
//! reading it needs. The refusal rules themselves (which addresses are private) live with the
//! HTTP client in the engine; this module only says what the operator allowed.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// Hosts and networks that callbacks and webhook connectors may reach over plain `http`, or
/// at loopback, private, link-local or unique-local addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundAllow {
    /// Host names and IP addresses as URLs write them, lower case, IPv6 without brackets.
    pub hosts: BTreeSet<String>,
    /// Networks written as `10.0.0.0/8` or `fd00::/8`.
    pub networks: Vec<Network>,
}

impl OutboundAllow {
    /// Reads `outbound_allow` entries: a host name, an IP address, or a network.
    pub fn parse(entries: &[String]) -> Result<OutboundAllow, String> {
        let mut out = OutboundAllow::default();
        for e in entries {
            let e = e.trim().to_ascii_lowercase();
            if e.contains('/') {
                out.networks.push(Network::parse(&e)?);
            } else {
                let h = e.trim_start_matches('[').trim_end_matches(']');
                let ok = !h.is_empty()
                    && h.len() <= 253
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:_".contains(c));
                if !ok {
                    return Err(format!(
                        "{e:?} is not a host name, an IP address or a network like 10.0.0.0/8"
                    ));
                }
                out.hosts.insert(h.to_owned());
            }
        }
        Ok(out)
    }

    /// Whether the host of a URL is allow-listed by name (or as an address, or inside an
    /// allowed network when it is an address).
    pub fn host(&self, host: &str) -> bool {
        let h = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if self.hosts.contains(&h) {
            return true;
        }
        h.parse::<IpAddr>().is_ok_and(|ip| self.ip(ip))
    }

    /// Whether an address may be reached whatever name led to it.
    pub fn ip(&self, ip: IpAddr) -> bool {
        self.hosts.contains(&ip.to_string()) || self.networks.iter().any(|n| n.contains(ip))
    }
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let bad = || format!("{text:?} is not a network like 10.0.0.0/8 or fd00::/8");
        let (a, p) = text.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (full, rest) = (usize::from(bits / 8), bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// The scheme and host of an absolute URL (`https://user@Host:443/x` → `("https", "host")`),
/// IPv6 hosts without brackets. `None` when the text is not such a URL.
pub fn url_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        hostport.split(':').next()?
    };
    if host.is_empty() || scheme.is_empty() {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let n = Network::parse("10.0.0.0/8").expect("net");
        assert!(n.contains("10.255.1.2".parse().expect("ip")));
        assert!(!n.contains("11.0.0.1".parse().expect("ip")));
        let n = Network::parse("172.16.0.0/12").expect("net");
        assert!(n.contains("172.31.255.255".parse().expect("ip")));
        assert!(!n.contains("172.32.0.0".parse().expect("ip")));
        let n = Network::parse("fd00::/8").expect("net");
        assert!(n.contains("fd12::1".parse().expect("ip")));
        assert!(!n.contains("10.0.0.1".parse().expect("ip")));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("nope/8").is_err());
    }

    #[test]
    fn hosts_match_by_name_address_or_network() {
        let allow = OutboundAllow::parse(&[
            "Receiver.Internal".into(),
            "[::1]".into(),
            "192.168.0.0/16".into(),
        ])
        .expect("allow");
        assert!(allow.host("receiver.internal"));
        assert!(allow.host("[::1]"));
        assert!(allow.host("192.168.4.5"));
        assert!(!allow.host("127.0.0.1"));
        assert!(!allow.host("other.internal"));
        assert!(OutboundAllow::parse(&["bad host".into()]).is_err());
    }

    #[test]
    fn url_host_reads_scheme_and_host() {
        let cases = [
            ("https://example.com/x", Some(("https", "example.com"))),
            ("http://u:p@Host:8080/x?y", Some(("http", "host"))),
            ("http://[::1]:9000/", Some(("http", "::1"))),
            ("https://h?x=1", Some(("https", "h"))),
            ("example.com", None),
            ("https:///x", None),
        ];
        for (url, want) in cases {
            let got = url_host(url);
            let want = want.map(|(s, h)| (s.to_owned(), h.to_owned()));
            assert_eq!(got, want, "{url}");
        }
    }
}
