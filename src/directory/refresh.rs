//! Scheduled refresh of the shared directory from the URLs in
//! `DIRECTMAIL_DIRECTORY_SOURCES`, every `DIRECTMAIL_DIRECTORY_REFRESH_MINUTES`.
//!
//! Each URL is imported like a file (CSV or FHIR, format from the content) into the
//! shared directory as source `import:<url>`; entries that the source no longer lists
//! are removed. A failed fetch or a file with any bad row changes nothing: the error
//! is logged and shown on the import page, the previous entries stay, and the source
//! is tried again a minute later.

use std::time::Duration;

use anyhow::Context as _;

use super::Scope;
use super::import::{self, Options};
use crate::audit::Actor;
use crate::clock::Clock;
use crate::db::Db;
use crate::store::directory as store;

/// How often the worker checks whether a source is due (the interval itself is in
/// minutes, and compared with the database's record of the last attempt, so several
/// instances refresh each source once).
const TICK: Duration = Duration::from_secs(5);

/// The refresh worker started by `app.rs` when sources are configured.
pub struct Refresher {
    pub db: Db,
    pub clock: Clock,
    pub sources: Vec<url::Url>,
    pub every_minutes: u64,
    pub timeout: Duration,
    /// The outbound-connection policy (public addresses only by default).
    pub network: directmail_net::Policy,
    /// Extra HTTPS roots (`DIRECTMAIL_HTTPS_ROOTS`).
    pub https_roots: Vec<reqwest::Certificate>,
}

impl Refresher {
    pub async fn run(self) {
        let client = match client(self.timeout, &self.network, &self.https_roots) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "the directory refresh cannot start"
                );
                return;
            }
        };
        let every = i64::try_from(self.every_minutes.saturating_mul(60)).unwrap_or(i64::MAX);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            for url in &self.sources {
                let now = self.clock.now();
                match store::claim_source(&self.db, url.as_str(), now, every).await {
                    Ok(true) => {
                        refresh_one(&self.db, &client, &self.network, url, now, every).await;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "directory refresh: database unavailable"),
                }
            }
        }
    }
}

/// An HTTP client for sources: HTTPS (rustls on ring, the web PKI's roots), held to
/// the outbound-connection policy on every resolved address and redirect hop.
pub fn client(
    timeout: Duration,
    network: &directmail_net::Policy,
    https_roots: &[reqwest::Certificate],
) -> anyhow::Result<reqwest::Client> {
    let mut builder = network.http_client();
    for root in https_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        .https_only(true)
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent("directmail")
        .build()
        .context("the HTTP client for directory sources")
}

/// A failed refresh is tried again after this many seconds (or the interval, if
/// shorter).
const RETRY_SECONDS: i64 = 60;

/// Fetches and imports one source, recording (and logging) what happened.
pub async fn refresh_one(
    db: &Db,
    client: &reqwest::Client,
    network: &directmail_net::Policy,
    url: &url::Url,
    now: i64,
    every: i64,
) {
    let result = fetch_and_import(db, client, network, url, now).await;
    let recorded = match &result {
        Ok(count) => {
            tracing::info!(source = %url, entries = count, "directory refreshed");
            store::record_source(db, url.as_str(), Ok(*count), now, every, RETRY_SECONDS).await
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(source = %url, error = %message, "directory refresh failed; the previous entries are kept");
            store::record_source(db, url.as_str(), Err(&message), now, every, RETRY_SECONDS).await
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record the directory refresh");
    }
}

async fn fetch_and_import(
    db: &Db,
    client: &reqwest::Client,
    network: &directmail_net::Policy,
    url: &url::Url,
    now: i64,
) -> anyhow::Result<i64> {
    // a source is someone else's file: only over HTTPS, so that what is imported is
    // what its publisher serves
    if url.scheme() != "https" {
        anyhow::bail!(
            "{url} is not an https:// address; directory sources are fetched over HTTPS only"
        );
    }
    network
        .check_url(url)
        .map_err(|e| anyhow::anyhow!("{url} was not fetched ({e})"))?;
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("{url} could not be reached"))?;
    if !response.status().is_success() {
        anyhow::bail!("{url} answered {}", response.status());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("{url} stopped answering"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > super::MAX_IMPORT_BYTES {
            anyhow::bail!(
                "{url} sent more than {} MB",
                super::MAX_IMPORT_BYTES / (1024 * 1024)
            );
        }
    }
    let options = Options {
        scope: Scope::Public,
        source: import::source_for(url.as_str()),
        dry_run: false,
        prune: true,
    };
    let outcome = import::run(db, &Actor::system(), &body, &options, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(first) = outcome.errors.first() {
        anyhow::bail!(
            "{} row(s) of {url} are wrong, so nothing was changed; the first, row {}: {}",
            outcome.errors.len(),
            first.row,
            first.message
        );
    }
    Ok((outcome.added + outcome.updated) as i64)
}
