//! The outbound-connection policy: every connection the server makes on someone
//! else's word (AIA issuers and CRLs a certificate names, trust bundles and directory
//! sources, discovery's LDAP servers and IPKIX URLs, a recipient domain's MX hosts)
//! goes only to public addresses, unless the operator allows private networks.
//!
//! Loopback, private (RFC 1918), shared (RFC 6598), link-local (where cloud metadata
//! services answer), unique-local, multicast and unspecified addresses are refused.
//! The check is made on every address a name resolves to and on every redirect hop;
//! an HTTP client built with [`Policy::http_client`] cannot be pointed elsewhere.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Redirects followed by a client of [`Policy::http_client`] (each hop checked).
pub const MAX_REDIRECTS: usize = 3;

/// Where the server may connect on someone else's word.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    allow: Allow,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Allow {
    /// Public addresses only (the default).
    #[default]
    Public,
    /// Any address (the operator allowed private networks).
    Everything,
    /// Public addresses and these networks.
    Networks(Vec<Network>),
}

/// An IP network, `address/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Network, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("“{s}” is not an IP address or network"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("“{s}” has a prefix length outside 0–{max}"))?,
        };
        Ok(Network { addr, prefix })
    }
}

/// Why a connection was not made, in words for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl Policy {
    /// Public addresses only.
    pub fn public_only() -> Policy {
        Policy::default()
    }

    /// Every address (tests and closed networks).
    pub fn everything() -> Policy {
        Policy {
            allow: Allow::Everything,
        }
    }

    /// The operator's setting: `false` (or empty) for public addresses only, `true`
    /// for any address, or a comma-separated list of addresses and networks
    /// (`10.20.0.0/16, fd00::/8`) allowed besides the public ones.
    pub fn parse(setting: &str) -> Result<Policy, String> {
        let s = setting.trim();
        match s.to_ascii_lowercase().as_str() {
            "" | "false" | "no" | "0" => return Ok(Policy::public_only()),
            "true" | "yes" | "1" => return Ok(Policy::everything()),
            _ => {}
        }
        let networks = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Network>, String>>()?;
        Ok(Policy {
            allow: Allow::Networks(networks),
        })
    }

    /// Whether any private address is allowed at all.
    pub fn allows_private(&self) -> bool {
        self.allow != Allow::Public
    }

    /// Whether the server may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        match &self.allow {
            Allow::Everything => true,
            Allow::Public => is_public(ip),
            Allow::Networks(n) => is_public(ip) || n.iter().any(|n| n.contains(ip)),
        }
    }

    /// `ip`, or why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refused(format!(
                "refused: {ip} is not a public address (set DIRECTMAIL_ALLOW_PRIVATE_NETWORKS to allow it)"
            )))
        }
    }

    /// The allowed ones among `addrs`; an error naming the first when none is.
    pub fn filter(&self, addrs: &[IpAddr]) -> Result<Vec<IpAddr>, Refused> {
        let allowed: Vec<IpAddr> = addrs.iter().copied().filter(|a| self.permits(*a)).collect();
        match (allowed.is_empty(), addrs.first()) {
            (false, _) => Ok(allowed),
            (true, Some(first)) => self.check(*first).map(|()| Vec::new()),
            (true, None) => Err(Refused("the name has no address".into())),
        }
    }

    /// An `http`/`https` URL whose host, when it is an address, is allowed. (A host
    /// name is checked when it is resolved: see [`Policy::http_client`].)
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("{url}: only http and https are fetched")));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Refused(format!("{url}: no host"))),
        }
    }

    /// An HTTP client builder held to this policy: names resolve only to allowed
    /// addresses, every redirect hop is checked (at most [`MAX_REDIRECTS`]), and no
    /// proxy from the environment is used. Callers still check the first URL with
    /// [`Policy::check_url`] (an address in the URL is not resolved).
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        let policy = self.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                let e = Refused(format!("more than {MAX_REDIRECTS} redirects"));
                return attempt.error(e);
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        reqwest::Client::builder()
            .no_proxy()
            .redirect(redirects)
            .dns_resolver(Arc::new(Guarded(self.clone())))
    }
}

/// The policy's reason inside an error from a client of [`Policy::http_client`].
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut next: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// Resolves with the system's resolver and drops every address the policy refuses.
struct Guarded(Policy);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = found.iter().map(SocketAddr::ip).collect();
            let allowed = policy
                .filter(&ips)
                .map_err(|e| Refused(format!("{host}: {e}")))?;
            let addrs: reqwest::dns::Addrs =
                Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, shared (CGNAT),
/// link-local, unique-local, documentation, benchmarking, multicast, broadcast or
/// unspecified; IPv4-mapped and NAT64 addresses are judged as the IPv4 inside.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "64:ff9b::5db8:d822"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_setting_allows_nothing_everything_or_named_networks() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(!Policy::parse("false").unwrap().permits(loopback));
        assert!(!Policy::parse("").unwrap().allows_private());
        assert!(Policy::parse("true").unwrap().permits(loopback));
        let some = Policy::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        assert!(some.permits(loopback));
        assert!(!some.permits(other));
        assert!(some.permits("10.200.3.4".parse().unwrap()));
        assert!(some.permits("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!some.permits("::1".parse().unwrap()));
        assert!(Policy::parse("10.0.0.0/33").is_err());
        assert!(Policy::parse("nonsense").is_err());
    }

    #[test]
    fn urls_with_internal_addresses_are_refused() {
        let p = Policy::public_only();
        for u in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "file:///etc/passwd",
            "ldap://93.184.216.34/",
        ] {
            assert!(p.check_url(&u.parse().unwrap()).is_err(), "{u}");
        }
        assert!(
            p.check_url(&"http://93.184.216.34/x.crl".parse().unwrap())
                .is_ok()
        );
        assert!(
            p.check_url(&"http://crl.example.org/x.crl".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn filtering_names_the_refused_address() {
        let p = Policy::public_only();
        let e = p.filter(&["10.0.0.1".parse().unwrap()]).unwrap_err();
        assert!(e.0.contains("10.0.0.1"), "{e}");
        let mixed = p
            .filter(&[
                "10.0.0.1".parse().unwrap(),
                "93.184.216.34".parse().unwrap(),
            ])
            .unwrap();
        assert_eq!(mixed, vec!["93.184.216.34".parse::<IpAddr>().unwrap()]);
    }
}
