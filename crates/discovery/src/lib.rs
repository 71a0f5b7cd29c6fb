//! Certificate discovery for Direct recipients hosted elsewhere (Applicability
//! Statement for Secure Health Transport §5; the Direct Certificate Discovery
//! Tool's test cases).
//!
//! [`Discovery::lookup`] looks, in this order, at:
//! 1. DNS CERT at the address-bound name (`bob.example.org` for `bob@example.org`;
//!    the local part is one label, so `john.doe@x` is `john\.doe.x`);
//! 2. DNS CERT at the domain (`example.org`);
//! 3. LDAP: servers from `_ldap._tcp.<domain>` SRV by priority then weight, base DNs
//!    from the rootDSE's `namingContexts`, `(mail=<address>)` on every server;
//! 4. LDAP: `(mail=<domain>)` the same way, for a domain-bound certificate.
//!
//! The first certificate that passes all checks is chosen. If an address-bound
//! certificate was found but every address-bound certificate at that place is
//! expired or revoked, discovery stops there: the domain-bound certificate must not
//! be used instead (AS §5). Every outcome carries a step log in plain words and a
//! one-sentence summary, and is cached (DNS TTL, a fixed time for LDAP, briefly for
//! failures).
//!
//! Checks: this crate parses each certificate, requires the subjectAltName binding
//! (rfc822Name = the address for an address-bound lookup, dNSName = the domain for a
//! domain-bound one) and the validity period at `now`; the trust check (anchors,
//! CRL, AIA, policy) is the caller's [`Validator`].

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod address;
mod cache;
mod certs;
mod dns;
mod ldap;
mod lookup;
mod publish;
pub mod responder;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use address::AddressError;
pub use certs::{Binding, BoxFuture, FnValidator, RejectKind, Rejection, Validator};
pub use ldap::SrvOrder;
pub use lookup::Progress;
pub use publish::{Publication, cert_records};

/// Settings for [`Discovery`]. `Config::default()` is what production should use,
/// apart from `dns_resolver`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Send every DNS query to this server (`DIRECTMAIL_DNS_RESOLVER=host:port` in
    /// the main crate); `None` uses the system's resolver configuration.
    pub dns_resolver: Option<SocketAddr>,
    /// How long one DNS query may take (it is tried twice).
    pub dns_timeout: Duration,
    /// How long connecting to one LDAP server may take before it counts as
    /// unreachable and the next one is tried.
    pub ldap_connect_timeout: Duration,
    /// How long one LDAP operation (rootDSE read, search) may take.
    pub ldap_timeout: Duration,
    /// How long fetching the certificate behind an IPKIX record may take.
    pub http_timeout: Duration,
    /// Largest certificate fetched for an IPKIX record, in bytes.
    pub max_fetch_bytes: usize,
    /// How long a certificate found in LDAP is cached (LDAP has no TTL).
    pub ldap_cache_ttl: Duration,
    /// How long an outcome without a usable certificate is cached.
    pub failure_cache_ttl: Duration,
    /// Upper bound on caching a DNS answer, whatever its TTL says.
    pub max_dns_cache_ttl: Duration,
    /// Most addresses kept in the cache (0 disables caching).
    pub cache_capacity: usize,
    /// Order of LDAP servers with equal SRV priority.
    pub srv_order: SrvOrder,
    /// Which addresses named by DNS (LDAP servers, IPKIX URLs) may be contacted: the
    /// server's one outbound-connection policy. Public addresses only by default so
    /// that someone else's DNS cannot point discovery at the HISP's own network;
    /// tests on loopback and deployments whose partners sit on a private network
    /// allow more.
    pub network: directmail_net::Policy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dns_resolver: None,
            dns_timeout: Duration::from_secs(5),
            ldap_connect_timeout: Duration::from_secs(5),
            ldap_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(10),
            max_fetch_bytes: 64 * 1024,
            ldap_cache_ttl: Duration::from_secs(3600),
            failure_cache_ttl: Duration::from_secs(60),
            max_dns_cache_ttl: Duration::from_secs(86_400),
            cache_capacity: 10_000,
            srv_order: SrvOrder::WeightedRandom,
            network: directmail_net::Policy::public_only(),
        }
    }
}

/// Where a certificate was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// A DNS CERT record (PKIX, or IPKIX and then fetched over HTTP).
    Dns,
    /// An LDAP `userCertificate` attribute.
    Ldap,
}

/// How a certificate was found: by which method, bound to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// DNS or LDAP.
    pub method: Method,
    /// Address-bound or domain-bound.
    pub binding: Binding,
}

/// The certificate chosen for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Where and how it was found.
    pub source: Source,
    /// Its notAfter date (`YYYY-MM-DD`).
    pub not_after: String,
}

/// The result of a lookup in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A usable certificate was found.
    Found,
    /// No certificate was found anywhere.
    NotFound,
    /// Certificates were found but none passed the checks.
    Rejected,
    /// An address-bound certificate was found and is expired or revoked; discovery
    /// stopped there without looking for a domain-bound one.
    Stopped(RejectKind),
}

/// The outcome of one lookup, for the compose page, the sender and the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The address looked up, lower-cased.
    pub address: String,
    /// Found, not found, rejected or stopped.
    pub status: Status,
    /// The chosen certificate, when `status` is [`Status::Found`].
    pub certificate: Option<Discovered>,
    /// What was asked and answered, step by step, in plain words.
    pub steps: Vec<String>,
    /// One sentence for the user ("certificate found via DNS (address-bound)").
    pub summary: String,
    /// A lookup failed for another reason than "no such record" (DNS timeout, an
    /// LDAP error): a certificate may exist that was not seen; worth retrying later.
    pub incomplete: bool,
    /// When the lookup ran.
    pub looked_up_at: SystemTime,
    /// Until when the outcome is served from the cache.
    pub expires_at: SystemTime,
    /// This copy came from the cache.
    pub from_cache: bool,
}

/// Why a [`Discovery`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The system's DNS configuration could not be read.
    #[error("DNS is not usable: {0}")]
    Dns(String),
}

/// Certificate discovery with its resolver, trust check and cache. Share one per
/// process (it is `Send + Sync`).
pub struct Discovery {
    config: Config,
    resolver: dns::DnsResolver,
    validator: Arc<dyn Validator>,
    cache: cache::Cache,
}

impl Discovery {
    /// Build discovery with `config` and the caller's trust check. Call from within a
    /// Tokio runtime.
    pub fn new(config: Config, validator: Arc<dyn Validator>) -> Result<Self, DiscoveryError> {
        let resolver =
            dns::resolver(config.dns_resolver, config.dns_timeout).map_err(DiscoveryError::Dns)?;
        Ok(Discovery {
            cache: cache::Cache::new(config.cache_capacity),
            config,
            resolver,
            validator,
        })
    }

    /// The trust check discovery gives every candidate, for a certificate that came
    /// from elsewhere (one an operator attached to a directory entry).
    pub async fn validate(
        &self,
        cert_der: &[u8],
        address: &str,
        now: SystemTime,
    ) -> Result<(), certs::Rejection> {
        self.validator.check(cert_der, address, now).await
    }

    /// Find the certificate for `address` now (from the cache when fresh).
    pub async fn lookup(&self, address: &str) -> Result<Outcome, AddressError> {
        self.lookup_at(address, SystemTime::now()).await
    }

    /// Find the certificate for `address` as of `now`: `now` decides certificate
    /// validity and cache freshness.
    pub async fn lookup_at(&self, address: &str, now: SystemTime) -> Result<Outcome, AddressError> {
        let recipient = address::Recipient::parse(address)?;
        if let Some(hit) = self.cache.get(&recipient.address, now) {
            return Ok(hit);
        }
        let outcome = lookup::run(self, &recipient, now, None).await;
        tracing::debug!(address = %outcome.address, summary = %outcome.summary, "certificate discovery");
        self.cache.put(&outcome, now);
        Ok(outcome)
    }

    /// Look `address` up afresh (never from the cache) as of `now`, sending each step
    /// to `progress` as it is taken; the outcome is cached as [`Discovery::lookup_at`]'s.
    pub async fn lookup_watched(
        &self,
        address: &str,
        now: SystemTime,
        progress: Progress,
    ) -> Result<Outcome, AddressError> {
        let recipient = address::Recipient::parse(address)?;
        let outcome = lookup::run(self, &recipient, now, Some(progress)).await;
        self.cache.put(&outcome, now);
        Ok(outcome)
    }

    /// Drop the cached outcome for `address` (say, after the partner fixed their DNS).
    pub fn forget(&self, address: &str) {
        if let Ok(r) = address::Recipient::parse(address) {
            self.cache.forget(&r.address);
        }
    }

    /// Drop every cached outcome.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }
}

/// A DNS name for the step log: zone-file escaping, no trailing dot.
pub(crate) fn human_name(name: &hickory_resolver::proto::rr::Name) -> String {
    let s = address::zone_file_name(name);
    s.strip_suffix('.').map(str::to_owned).unwrap_or(s)
}
