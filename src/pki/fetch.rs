//! Fetching what certificates point to: CRLs from their distribution points and
//! missing issuers from their Authority Information Access (caIssuers). Plain HTTP
//! with a timeout and a size limit, held to the outbound-connection policy
//! (`directmail_net`: public addresses only unless the operator allows more, checked on
//! every resolved address and every redirect hop); answers are cached (CRLs until their
//! nextUpdate, issuers for a day) and failures briefly, in a cache bounded in bytes, so
//! one slow server does not slow every message. Trust bundles come through the same
//! client (HTTP or HTTPS, uncached).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use const_oid::ObjectIdentifier;
use directmail_smime::Certificate;
use tokio::sync::Mutex;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, CrlDistributionPoints};

use crate::metrics::{FetchKind, FetchResult};

/// RFC 5280 §4.2.2.1: id-ad-caIssuers.
const CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");
/// Largest CRL or certificate accepted.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// How long a failed fetch is remembered before it is tried again.
const FAILURE_TTL: i64 = 60;
/// How long a fetched issuer certificate is kept.
const ISSUER_TTL: i64 = 24 * 3600;
/// A CRL without nextUpdate is kept this long.
const CRL_DEFAULT_TTL: i64 = 3600;
/// Most bytes the cache holds (CRLs and issuer certificates together).
pub const CACHE_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Most entries the cache holds (remembered failures included).
const CACHE_MAX_ENTRIES: usize = 4096;

/// Why a fetch failed, in words for the operator's log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

#[derive(Clone)]
enum Cached {
    Ok(Arc<Vec<u8>>),
    Failed(String),
}

impl Cached {
    fn size(&self, url: &str) -> usize {
        url.len()
            + match self {
                Cached::Ok(b) => b.len(),
                Cached::Failed(why) => why.len(),
            }
    }
}

/// The cache: entries with their expiry and the order they were stored in, held
/// under [`CACHE_MAX_BYTES`] and [`CACHE_MAX_ENTRIES`] by dropping expired entries
/// first, then the oldest.
#[derive(Default)]
struct Cache {
    entries: HashMap<String, (Cached, i64, u64)>,
    bytes: usize,
    stored: u64,
}

impl Cache {
    fn get(&self, url: &str, now: i64) -> Option<Cached> {
        self.entries
            .get(url)
            .filter(|(_, until, _)| *until > now)
            .map(|(c, _, _)| c.clone())
    }

    fn insert(&mut self, url: &str, entry: Cached, until: i64, now: i64) {
        self.remove(url);
        let size = entry.size(url);
        if size > CACHE_MAX_BYTES {
            return;
        }
        if self.bytes + size > CACHE_MAX_BYTES || self.entries.len() >= CACHE_MAX_ENTRIES {
            let expired: Vec<String> = self
                .entries
                .iter()
                .filter(|(_, (_, until, _))| *until <= now)
                .map(|(u, _)| u.clone())
                .collect();
            for u in expired {
                self.remove(&u);
            }
        }
        while self.bytes + size > CACHE_MAX_BYTES || self.entries.len() >= CACHE_MAX_ENTRIES {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, _, n))| *n)
                .map(|(u, _)| u.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.stored += 1;
        self.bytes += size;
        self.entries
            .insert(url.to_owned(), (entry, until, self.stored));
    }

    fn remove(&mut self, url: &str) {
        if let Some((c, _, _)) = self.entries.remove(url) {
            self.bytes -= c.size(url);
        }
    }
}

/// A shared fetcher with its cache; cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    policy: directmail_net::Policy,
    cache: Arc<Mutex<Cache>>,
    /// Where fetches are counted by result (the application's; none for the CLI).
    metrics: Option<crate::metrics::Metrics>,
}

impl Fetcher {
    /// A fetcher that waits at most `timeout` for an answer and connects only where
    /// `policy` allows; HTTPS answers are trusted through the web PKI's roots and
    /// `https_roots` (`DIRECTMAIL_HTTPS_ROOTS`).
    pub fn new(
        timeout: Duration,
        policy: directmail_net::Policy,
        https_roots: &[reqwest::Certificate],
    ) -> anyhow::Result<Fetcher> {
        let mut builder = policy.http_client();
        for root in https_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let client = builder
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("directmail")
            .build()?;
        Ok(Fetcher {
            client,
            timeout,
            policy,
            cache: Arc::default(),
            metrics: None,
        })
    }

    /// The same fetcher, counting CRL and AIA fetches in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Fetcher {
        self.metrics = Some(metrics);
        self
    }

    /// The client held to the outbound-connection policy (with the HTTPS roots and
    /// timeout), for other fetches made on someone else's word (single sign-on).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The outbound-connection policy the client is held to (an address written in
    /// a URL is checked with it before the first request).
    pub fn policy(&self) -> &directmail_net::Policy {
        &self.policy
    }

    /// How long one fetch may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The cache's size in bytes (for tests and the operator).
    pub async fn cached_bytes(&self) -> usize {
        self.cache.lock().await.bytes
    }

    /// The CRL at `url` (DER), from the cache while it is current. A list that was
    /// reached is returned even when it cannot be read (kept briefly): whether it
    /// can be used is for the caller to judge, and "unreachable" is not its answer.
    pub async fn crl(&self, url: &str, now: i64) -> Result<Arc<Vec<u8>>, FetchError> {
        self.cached(FetchKind::Crl, url, now, |bytes| {
            let der = pem_or_der(bytes, "X509 CRL");
            let until = match directmail_smime::crl::Crl::from_der(&der) {
                Ok(crl) => crl
                    .next_update()
                    .map_or(now + CRL_DEFAULT_TTL, |t| t as i64),
                Err(_) => now + FAILURE_TTL,
            };
            Ok((der, until))
        })
        .await
    }

    /// The issuer certificate(s) at an AIA `url` (DER, PEM or a .p7c bundle).
    pub async fn issuers(&self, url: &str, now: i64) -> Result<Vec<Certificate>, FetchError> {
        let bytes = self
            .cached(FetchKind::Aia, url, now, |bytes| {
                directmail_smime::parse_certificates(bytes)
                    .map_err(|e| FetchError(format!("{url} did not return a certificate ({e})")))?;
                Ok((bytes.to_vec(), now + ISSUER_TTL))
            })
            .await?;
        directmail_smime::parse_certificates(&bytes).map_err(|e| FetchError(e.to_string()))
    }

    async fn cached(
        &self,
        kind: FetchKind,
        url: &str,
        now: i64,
        accept: impl FnOnce(&[u8]) -> Result<(Vec<u8>, i64), FetchError>,
    ) -> Result<Arc<Vec<u8>>, FetchError> {
        let count = |result| {
            if let Some(m) = &self.metrics {
                m.fetch(kind, result);
            }
        };
        if let Some(entry) = self.cache.lock().await.get(url, now) {
            return match entry {
                Cached::Ok(bytes) => {
                    count(FetchResult::Cached);
                    Ok(bytes)
                }
                Cached::Failed(why) => {
                    count(FetchResult::CachedFailure);
                    Err(FetchError(why))
                }
            };
        }
        let result = match self.get(url).await {
            Ok(bytes) => accept(&bytes),
            Err(e) => Err(e),
        };
        count(match result {
            Ok(_) => FetchResult::Fetched,
            Err(_) => FetchResult::Failed,
        });
        let mut cache = self.cache.lock().await;
        match result {
            Ok((bytes, until)) => {
                let bytes = Arc::new(bytes);
                cache.insert(url, Cached::Ok(bytes.clone()), until.max(now + 1), now);
                Ok(bytes)
            }
            Err(e) => {
                cache.insert(url, Cached::Failed(e.0.clone()), now + FAILURE_TTL, now);
                Err(e)
            }
        }
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        if !url.starts_with("http://") {
            // RFC 5280 §4.2.1.13: distribution points and issuers are served over HTTP
            return Err(FetchError(format!("{url} is not an http:// address")));
        }
        self.download(url, MAX_BYTES).await
    }

    /// A trust bundle at `url` (`http://` or `https://`), at most `max_bytes`, never
    /// cached: a refresh always asks the publisher.
    pub async fn bundle(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(FetchError(format!(
                "{url} is not an http:// or https:// address"
            )));
        }
        self.download(url, max_bytes).await
    }

    async fn download(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
        let parsed =
            url::Url::parse(url).map_err(|e| FetchError(format!("{url} is not a URL ({e})")))?;
        self.policy
            .check_url(&parsed)
            .map_err(|e| FetchError(format!("{url} was not fetched ({e})")))?;
        let mut response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| FetchError(format!("{url} could not be reached ({})", short(&e))))?;
        if response
            .content_length()
            .is_some_and(|n| n > max_bytes as u64)
        {
            return Err(FetchError(format!(
                "{url} sent more than {max_bytes} bytes"
            )));
        }
        if !response.status().is_success() {
            return Err(FetchError(format!("{url} answered {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError(format!("{url} broke off ({})", short(&e))))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError(format!(
                    "{url} sent more than {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn short(e: &reqwest::Error) -> String {
    if let Some(refused) = directmail_net::refusal(e) {
        refused.to_string()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else if e.is_redirect() {
        "too many redirects".into()
    } else {
        "transfer error".into()
    }
}

/// PEM of `label` decoded to DER, or the input as it is.
fn pem_or_der(bytes: &[u8], label: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    if let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) {
        use base64::Engine as _;
        let body: String = text[b + begin.len()..e].split_whitespace().collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            return der;
        }
    }
    bytes.to_vec()
}

/// The http(s) URIs of a certificate's CRL distribution points.
pub fn crl_urls(cert: &Certificate) -> Vec<String> {
    let Ok(Some((_, points))) = cert
        .tbs_certificate()
        .get_extension::<CrlDistributionPoints>()
    else {
        return Vec::new();
    };
    points
        .0
        .iter()
        .filter_map(|p| match &p.distribution_point {
            Some(DistributionPointName::FullName(names)) => Some(names),
            _ => None,
        })
        .flatten()
        .filter_map(uri)
        .collect()
}

/// The caIssuers URIs of a certificate's Authority Information Access.
pub fn issuer_urls(cert: &Certificate) -> Vec<String> {
    let Ok(Some((_, aia))) = cert
        .tbs_certificate()
        .get_extension::<AuthorityInfoAccessSyntax>()
    else {
        return Vec::new();
    };
    aia.0
        .iter()
        .filter(|d| d.access_method == CA_ISSUERS)
        .filter_map(|d| uri(&d.access_location))
        .collect()
}

fn uri(name: &GeneralName) -> Option<String> {
    match name {
        GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_under_its_byte_bound_dropping_expired_then_oldest_entries() {
        let mut cache = Cache::default();
        let big = || Cached::Ok(Arc::new(vec![0u8; CACHE_MAX_BYTES / 4]));
        cache.insert("http://a/1", big(), 10, 0);
        cache.insert("http://a/2", big(), 1000, 0);
        cache.insert("http://a/3", big(), 1000, 0);
        // a fourth and fifth at t=20: the expired first entry goes, then the oldest
        cache.insert("http://a/4", big(), 1000, 20);
        cache.insert("http://a/5", big(), 1000, 20);
        assert!(cache.bytes <= CACHE_MAX_BYTES, "{}", cache.bytes);
        assert!(cache.get("http://a/1", 20).is_none());
        assert!(
            cache.get("http://a/2", 20).is_none(),
            "the oldest made room"
        );
        assert!(cache.get("http://a/5", 20).is_some());
        // an answer larger than the whole cache is not kept
        cache.insert(
            "http://a/huge",
            Cached::Ok(Arc::new(vec![0u8; CACHE_MAX_BYTES + 1])),
            1000,
            20,
        );
        assert!(cache.get("http://a/huge", 20).is_none());
        assert!(cache.bytes <= CACHE_MAX_BYTES);
    }
}
