//! Outgoing HTTP with a guard against server-side request forgery (rule 26), shared by request
//! callbacks and the webhook connector.
//!
//! A URL must use `https` unless its host is in the server's `outbound_allow`. Addresses are
//! checked where the connection is made: host names go through [`GuardedResolver`], which drops
//! every loopback, private, link-local, unique-local, shared (carrier-grade NAT, where some
//! clouds serve metadata) or otherwise special address unless it is allow-listed, so a name
//! that resolves differently between the check and the connection (DNS rebinding) still cannot
//! reach them. An address written in the URL itself never reaches a resolver, so
//! [`Guard::check_literal`] checks it before each request. Redirects are never followed and
//! proxies from the environment are ignored: either would take the request somewhere unchecked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use config::OutboundAllow;

/// Why an address is refused, or `None` when it is a public unicast address.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            // Addresses that carry an IPv4 address are judged by it: a connection to them
            // reaches that address through a translator or a tunnel.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let s = v6.segments();
            let v4 = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                Ipv4Addr::new(a, b, c, d)
            };
            // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765).
            if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
                return special_v4(v4(s[6], s[7]));
            }
            // 64:ff9b::/96, NAT64's well-known prefix (RFC 6052).
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                return special_v4(v4(s[6], s[7])).map(|_| "NAT64 of a special address");
            }
            // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): where the IPv4 address sits
            // depends on the prefix length the network chose, so it cannot be judged, and
            // the prefix is not globally reachable; `outbound_allow` can list it.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                return Some("local-use NAT64");
            }
            // 2002::/16, 6to4 (RFC 3056): the IPv4 address of the tunnel's end.
            if s[0] == 0x2002 {
                return special_v4(v4(s[1], s[2])).map(|_| "6to4 of a special address");
            }
            // 2001::/32, Teredo (RFC 4380): the server's IPv4 address in bits 32 to 63, the
            // client's, inverted, in the last 32 bits.
            if s[0] == 0x2001 && s[1] == 0 {
                let server = v4(s[2], s[3]);
                let client = v4(!s[6], !s[7]);
                return special_v4(client)
                    .or_else(|| special_v4(server))
                    .map(|_| "Teredo of a special address");
            }
            special_v6(v6)
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        // 169.254.169.254 is where most clouds serve instance metadata.
        _ if ip.is_link_local() => "link-local (cloud metadata)",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        // 100.64.0.0/10: shared address space; Alibaba Cloud serves metadata at 100.100.100.200.
        _ if a == 100 && (64..128).contains(&b) => "shared address space (cloud metadata)",
        _ if a == 192 && b == 0 && c == 0 => "IETF protocol assignment",
        _ if a == 198 && (18..20).contains(&b) => "benchmarking",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        _ if ip.is_documentation() => "documentation",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s0 = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        // fc00::/7; AWS serves metadata at fd00:ec2::254.
        _ if s0 & 0xfe00 == 0xfc00 => "unique-local (cloud metadata)",
        _ if s0 & 0xffc0 == 0xfe80 => "link-local",
        _ if s0 & 0xff00 == 0xff00 => "multicast",
        _ if s0 == 0x2001 && ip.segments()[1] == 0x0db8 => "documentation",
        // The deprecated IPv4-compatible form ::a.b.c.d.
        _ if ip.segments()[..6] == [0; 6] => "IPv4-compatible",
        // 100::/64, discard-only (RFC 6666).
        _ if ip.segments()[..4] == [0x100, 0, 0, 0] => "discard-only",
        _ => return None,
    })
}

/// The operator's allow-list and the checks made with it.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: Arc<OutboundAllow>,
}

/// The scheme, host and (when the host is an address) the IP of a URL, read the way the HTTP
/// client will read it: a WHATWG parser, so that `https://127.0.0.1\@evil.example/` is
/// 127.0.0.1 and `https://2130706433/` is 127.0.0.1 here too, as they are on the wire.
fn parse(url: &str) -> Result<(String, String, Option<IpAddr>), String> {
    let bad = || format!("{} is not an absolute http(s) URL", shown(url));
    let u = reqwest::Url::parse(url).map_err(|_| bad())?;
    let host = u.host_str().ok_or_else(bad)?.to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip = bare.parse::<IpAddr>().ok();
    Ok((u.scheme().to_owned(), bare.to_owned(), ip))
}

impl Guard {
    pub fn new(allow: OutboundAllow) -> Guard {
        Guard {
            allow: Arc::new(allow),
        }
    }

    /// The scheme rule, and an address written in the URL. Errors say why.
    pub fn check_literal(&self, url: &str) -> Result<(), String> {
        let (scheme, host, ip) = parse(url)?;
        match scheme.as_str() {
            "https" => {}
            "http" if self.allow.host(&host) => {}
            "http" => {
                return Err(format!(
                    "{} must use https: plain http is allowed only to hosts in the server's outbound_allow",
                    shown(url)
                ));
            }
            _ => return Err(format!("{} is not an http(s) URL", shown(url))),
        }
        if let Some(ip) = ip
            && let Some(why) = self.refused(&host, ip)
        {
            // The address is the caller's own input: naming its kind tells nothing new.
            return Err(format!(
                "{ip} is a {why} address, which outgoing requests may not reach unless the server's outbound_allow lists it"
            ));
        }
        Ok(())
    }

    /// Checks the URL the way a connection would, resolving its host: refused when the scheme
    /// is wrong or every address it resolves to is refused. A name that does not resolve
    /// (yet) passes: there is nothing to refuse, and delivery records the failure.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        self.check_literal(url)?;
        let (scheme, host, ip) = parse(url)?;
        if ip.is_some() || self.allow.host(&host) {
            return Ok(());
        }
        let port = if scheme == "https" { 443 } else { 80 };
        let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await else {
            return Ok(());
        };
        let addrs: Vec<SocketAddr> = addrs.collect();
        if addrs.is_empty() {
            return Ok(());
        }
        if addrs.iter().any(|a| self.refused(&host, a.ip()).is_none()) {
            return Ok(());
        }
        Err(not_allowed(&host, &addrs))
    }

    /// A TCP connection to `host`, on the first of its addresses this guard allows (a
    /// WebSocket, which the HTTP client's guarded resolver does not make).
    pub async fn connect(&self, host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.refused(host, a.ip()).is_none())
            .collect();
        if allowed.is_empty() {
            return Err(not_allowed(host, &addrs));
        }
        let mut last = String::new();
        for a in allowed {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("connecting to {host}: {e}"),
            }
        }
        Err(last)
    }

    /// Why `host` may not be reached at `ip`, or `None` when it may.
    fn refused(&self, host: &str, ip: IpAddr) -> Option<&'static str> {
        if self.allow.host(host) || self.allow.ip(ip) {
            return None;
        }
        special(ip)
    }

    /// An HTTP client that connects only where this guard allows, follows no redirect and
    /// ignores proxy settings.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, String> {
        crate::connector::install_tls_provider();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .dns_resolver(Arc::new(GuardedResolver {
                guard: self.clone(),
            }))
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
}

/// A URL as messages show it: scheme, host and path, without credentials or query (either may
/// hold a token).
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "[invalid url]".to_owned(),
    }
}

/// The refusal of a host name whose every address is refused. It says only that: which
/// address a name resolves to, and what kind it is, would tell anyone who may set a callback
/// URL how the server's network resolves internal names. The detail goes to the debug log.
fn not_allowed(host: &str, addrs: &[SocketAddr]) -> String {
    let found: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    tracing::debug!(host, addresses = ?found, "outgoing request refused: no allowed address");
    format!(
        "{host} resolves to an address that outgoing requests may not reach unless the server's outbound_allow lists it"
    )
}

/// Resolves host names with the system resolver and keeps only the addresses the guard allows.
struct GuardedResolver {
    guard: Guard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.refused(&host, a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                return Err(not_allowed(&host, &addrs).into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_named() {
        let table = [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local (cloud metadata)")),
            (
                "100.100.100.200",
                Some("shared address space (cloud metadata)"),
            ),
            ("0.0.0.0", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fd00:ec2::254", Some("unique-local (cloud metadata)")),
            ("fe80::1", Some("link-local")),
            ("::ffff:127.0.0.1", Some("loopback")),
            (
                "::ffff:169.254.169.254",
                Some("link-local (cloud metadata)"),
            ),
            ("64:ff9b::a00:1", Some("NAT64 of a special address")),
            ("93.184.215.14", None),
            ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
            ("64:ff9b::5db8:d70e", None),
        ];
        for (ip, want) in table {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(special(ip), want, "{ip}");
        }
    }

    /// Hardening item 6: IPv6 addresses that carry an IPv4 address are judged by it (by
    /// both, for Teredo), the local-use NAT64 prefix and the discard prefix are refused, and
    /// the same forms of a public address pass.
    #[test]
    fn hardening_6_embedded_ipv4_and_discard_addresses() {
        let table = [
            // IPv4-translated ::ffff:0:a.b.c.d
            ("::ffff:0:127.0.0.1", Some("loopback")),
            ("::ffff:0:a9fe:a9fe", Some("link-local (cloud metadata)")),
            ("::ffff:0:10.0.0.1", Some("private")),
            ("::ffff:0:93.184.215.14", None),
            // Local-use NAT64 64:ff9b:1::/48, whatever it embeds.
            ("64:ff9b:1::a00:1", Some("local-use NAT64")),
            ("64:ff9b:1::7f00:1", Some("local-use NAT64")),
            ("64:ff9b:1:fffe::5db8:d70e", Some("local-use NAT64")),
            ("64:ff9b:2::5db8:d70e", None),
            // 6to4 2002:aabb:ccdd::/48
            ("2002:7f00:1::1", Some("6to4 of a special address")),
            ("2002:a9fe:a9fe::", Some("6to4 of a special address")),
            ("2002:c0a8:101:1::1", Some("6to4 of a special address")),
            ("2002:5db8:d70e::1", None),
            // Teredo 2001:0:<server>:<flags>:<port>:<client xor ffffffff>
            // client 127.0.0.1 (80ff:fffe), server public 65.54.227.120
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                Some("Teredo of a special address"),
            ),
            // client 169.254.169.254 (5601:5601), server public
            (
                "2001:0:4136:e378:8000:63bf:5601:5601",
                Some("Teredo of a special address"),
            ),
            // client public 93.184.215.14 (a247:28f1), server 10.0.0.1
            (
                "2001:0:a00:1:8000:63bf:a247:28f1",
                Some("Teredo of a special address"),
            ),
            // client and server public
            ("2001:0:4136:e378:8000:63bf:a247:28f1", None),
            // Discard-only 100::/64
            ("100::", Some("discard-only")),
            ("100::1:2:3:4", Some("discard-only")),
            ("100:0:0:1::1", None),
        ];
        for (ip, want) in table {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(special(ip), want, "{ip}");
        }
        // The URL forms of these addresses are refused before any connection.
        let g = guard(&[]);
        for url in [
            "https://[::ffff:0:7f00:1]/x",
            "https://[64:ff9b:1::a9fe:a9fe]/x",
            "https://[2002:a9fe:a9fe::1]/x",
            "https://[2001:0:4136:e378:8000:63bf:5601:5601]/x",
            "https://[100::1]/x",
        ] {
            assert!(g.check_literal(url).is_err(), "{url}");
        }
        // An allow-listed network reaches them.
        assert!(
            guard(&["64:ff9b:1::/48"])
                .check_literal("https://[64:ff9b:1::5db8:d70e]/x")
                .is_ok()
        );
    }

    fn guard(allow: &[&str]) -> Guard {
        let entries: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        Guard::new(OutboundAllow::parse(&entries).expect("allow"))
    }

    #[test]
    fn rule_26_scheme_and_literal_addresses() {
        let g = guard(&[]);
        assert!(g.check_literal("https://example.com/hook").is_ok());
        let e = g
            .check_literal("http://example.com/hook")
            .expect_err("http");
        assert!(e.contains("must use https"), "{e}");
        let e = g
            .check_literal("https://127.0.0.1:8443/x")
            .expect_err("loopback");
        assert!(e.contains("loopback"), "{e}");
        let e = g.check_literal("https://[::1]/x").expect_err("loopback v6");
        assert!(e.contains("loopback"), "{e}");
        let e = g
            .check_literal("https://169.254.169.254/latest/meta-data")
            .expect_err("metadata");
        assert!(e.contains("metadata"), "{e}");
        assert!(g.check_literal("ftp://example.com").is_err());
        assert!(g.check_literal("not a url").is_err());
        // Written so that a naive parser sees another host; the HTTP client reads them as
        // loopback, and so does the guard.
        for sneaky in [
            "https://127.0.0.1\\@evil.example/x",
            "https://2130706433/x",
            "https://0x7f.1/x",
            "https://127.1/x",
            "https://[::ffff:127.0.0.1]/x",
        ] {
            let e = g.check_literal(sneaky).expect_err(sneaky);
            assert!(e.contains("loopback"), "{sneaky}: {e}");
        }

        let g = guard(&["127.0.0.1", "10.0.0.0/8"]);
        assert!(g.check_literal("http://127.0.0.1:9000/x").is_ok());
        assert!(g.check_literal("https://10.2.3.4/x").is_ok());
        assert!(g.check_literal("http://10.2.3.4/x").is_ok());
        assert!(g.check_literal("https://192.168.0.1/x").is_err());
    }

    /// Rule 26, and hardening item 6 (the DNS oracle): a name is refused by what it
    /// resolves to, and the refusal names neither the address nor its kind.
    #[tokio::test]
    async fn rule_26_names_are_checked_by_what_they_resolve_to() {
        let e = guard(&[])
            .check_url("https://localhost:9/x")
            .await
            .expect_err("localhost is loopback");
        assert!(
            e.contains("localhost") && e.contains("may not reach"),
            "{e}"
        );
        for secret in ["127.0.0.1", "::1", "loopback"] {
            assert!(!e.contains(secret), "the refusal tells {secret}: {e}");
        }
        assert!(
            guard(&["localhost"])
                .check_url("http://localhost:9/x")
                .await
                .is_ok()
        );
        // A name that does not resolve passes the check; delivery records the failure.
        assert!(
            guard(&[])
                .check_url("https://no-such-host.invalid/x")
                .await
                .is_ok()
        );
    }
}
