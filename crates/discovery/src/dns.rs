//! DNS for discovery: the resolver (the configured server, or the system's), CERT
//! (RFC 4398) and SRV lookups with their TTLs, host addresses, and fetching the
//! certificate an IPKIX record points to.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::{CERT, SRV};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

pub(crate) type DnsResolver = Resolver<TokioRuntimeProvider>;

/// The resolver: with `server` (`DIRECTMAIL_DNS_RESOLVER=host:port`) every query goes
/// to that one server over UDP, falling back to TCP for truncated answers; otherwise
/// the system's configuration. Same approach as the main crate's MX lookups.
pub(crate) fn resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<DnsResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 2;
    // Outcomes are cached by `Discovery` with the records' TTLs and the caller's
    // `now`; a second, wall-clock cache underneath would serve answers that the
    // outcome cache has already let expire.
    opts.cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// The answer to one lookup.
pub(crate) enum Answer<T> {
    /// Records, and the smallest TTL among them.
    Records(Vec<T>, u32),
    /// The name does not exist or has no records of the type.
    None,
    /// The lookup failed (timeout, SERVFAIL, refused, malformed answer).
    Failed(String),
}

/// CERT records at `name`.
pub(crate) async fn cert_records(resolver: &DnsResolver, name: &Name) -> Answer<CERT> {
    lookup(resolver, name, RecordType::CERT, |d| match d {
        RData::CERT(c) => Some(c.clone()),
        _ => None,
    })
    .await
}

/// SRV records at `name`.
pub(crate) async fn srv_records(resolver: &DnsResolver, name: &Name) -> Answer<SRV> {
    lookup(resolver, name, RecordType::SRV, |d| match d {
        RData::SRV(s) => Some(s.clone()),
        _ => None,
    })
    .await
}

async fn lookup<T>(
    resolver: &DnsResolver,
    name: &Name,
    rtype: RecordType,
    pick: impl Fn(&RData) -> Option<T>,
) -> Answer<T> {
    match resolver.lookup(name.clone(), rtype).await {
        Ok(found) => {
            let mut ttl = u32::MAX;
            let mut out = Vec::new();
            for r in found.answers() {
                if let Some(v) = pick(&r.data) {
                    ttl = ttl.min(r.ttl);
                    out.push(v);
                }
            }
            if out.is_empty() {
                Answer::None
            } else {
                Answer::Records(out, ttl)
            }
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Answer::None,
        Err(e) => Answer::Failed(describe(&e)),
    }
}

fn describe(e: &NetError) -> String {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("timed out") || text.contains("timeout") {
        "no answer (timed out)".into()
    } else {
        text
    }
}

/// The addresses of `host` from the same resolver.
pub(crate) async fn addresses(resolver: &DnsResolver, host: &Name) -> Result<Vec<IpAddr>, String> {
    match resolver.lookup_ip(host.clone()).await {
        Ok(ips) => Ok(ips.iter().collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Err("no address".into()),
        Err(e) => Err(describe(&e)),
    }
}

/// Limits for fetching the certificate an IPKIX record names.
pub(crate) struct FetchLimits {
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) network: directmail_net::Policy,
}

/// Fetch the certificate an IPKIX CERT record points to (RFC 4398 §2.1: the data is
/// a URL). Plain `http://` only, no redirects, no proxy, the host resolved through
/// discovery's own resolver and checked with the outbound-connection policy; the body is limited in
/// size and time. DER, or a PEM `CERTIFICATE` block.
pub(crate) async fn fetch_ipkix(
    resolver: &DnsResolver,
    raw_url: &[u8],
    limits: &FetchLimits,
) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(raw_url)
        .map_err(|_| "the IPKIX record does not hold a URL".to_owned())?
        .trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if url.scheme() != "http" {
        return Err(format!("{url}: only http:// URLs are fetched"));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let (host, ips) = match url.host() {
        Some(url::Host::Ipv4(ip)) => (None, vec![IpAddr::V4(ip)]),
        Some(url::Host::Ipv6(ip)) => (None, vec![IpAddr::V6(ip)]),
        Some(url::Host::Domain(d)) => {
            let name = Name::from_ascii(format!("{}.", d.trim_end_matches('.')))
                .map_err(|e| format!("{url}: bad host name ({e})"))?;
            let ips = addresses(resolver, &name)
                .await
                .map_err(|e| format!("{url}: host {d}: {e}"))?;
            (Some(d.to_owned()), ips)
        }
        None => return Err(format!("{url}: no host")),
    };
    let allowed: Vec<SocketAddr> = ips
        .iter()
        .filter(|ip| limits.network.permits(**ip))
        .map(|ip| SocketAddr::new(*ip, port))
        .collect();
    if allowed.is_empty() {
        return Err(format!(
            "{url}: refused, {} is not a public address",
            ips.first().map(|i| i.to_string()).unwrap_or_default()
        ));
    }
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(limits.timeout)
        .timeout(limits.timeout);
    if let Some(h) = host {
        // pin the connection to the addresses just checked
        builder = builder.resolve_to_addrs(&h, &allowed);
    }
    let client = builder
        .build()
        .map_err(|e| format!("{url}: HTTP client: {e}"))?;
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            format!(
                "{url}: no complete answer within {}",
                crate::ldap::secs(limits.timeout)
            )
        } else {
            format!("{url}: {e}")
        }
    };
    let mut response = client.get(url.clone()).send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let too_big = || format!("{url}: larger than {} bytes, not fetched", limits.max_bytes);
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_bytes as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(failed)?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > limits.max_bytes {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(pem_to_der(&body).unwrap_or(body))
}

/// The DER inside a PEM `CERTIFICATE` block, if `body` is one.
fn pem_to_der(body: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_body_yields_its_der() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_to_der(pem), Some(vec![0, 1, 2]));
        assert_eq!(pem_to_der(&[0x30, 0x82]), None);
    }
}
