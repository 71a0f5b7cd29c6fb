//! The operator's figures: counters of what happened (delivery attempts, received
//! messages, SMTP sessions, CRL and AIA fetches, HTTP requests), the time from sending
//! to the processed notification, and gauges read from the database when they are
//! asked for (queues, quarantine, when certificates end). One registry per application
//! instance, held in its state (tests run several instances in one process), served as
//! OpenMetrics text on `DIRECTMAIL_METRICS_ADDR` (`web::figures`) and shown on the
//! console's figures page.
//!
//! No label carries a person's address, a subject, or anything of a message: labels
//! are outcomes and reason codes from fixed lists, route templates (never the requested
//! path, which can carry ids), hosted domain and trust bundle names, and the first 16
//! hex digits of a certificate's SHA-256 fingerprint.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::Db;
use crate::store::figures::{self, CertificateEnd};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Seconds from sending a message to its processed notification: a minute or less
/// between HISPs that answer at once, hours when a peer batches.
const NOTIFICATION_BUCKETS: [f64; 11] = [
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    4.0 * 3600.0,
    12.0 * 3600.0,
    86_400.0,
];

/// Seconds an HTTP request takes, to the response's headers.
const HTTP_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Refusal reasons other than the trust verdict's codes (`inbound` routing checks).
const ROUTING_REASONS: [&str; 4] = [
    "envelope_sender_mismatch",
    "recipient_not_addressed",
    "no_hosted_recipient",
    "processing_failed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceivedLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    kind: &'static str,
    domain: String,
    bundle: String,
    fingerprint: String,
}

/// How one delivery attempt of an outbound queue entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Tried again later (until the retry deadline, when the entry fails).
    TemporaryFailure,
    PermanentFailure,
}

impl Delivery {
    pub const ALL: [Delivery; 3] = [
        Delivery::Sent,
        Delivery::TemporaryFailure,
        Delivery::PermanentFailure,
    ];

    /// The outcome of one attempt's result.
    pub fn of(result: &Result<(), crate::outbound::SendError>) -> Delivery {
        match result {
            Ok(()) => Delivery::Sent,
            Err(crate::outbound::SendError::Temporary(_)) => Delivery::TemporaryFailure,
            Err(crate::outbound::SendError::Permanent(_)) => Delivery::PermanentFailure,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::TemporaryFailure => "temporary_failure",
            Delivery::PermanentFailure => "permanent_failure",
        }
    }
}

/// What the SMTP listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smtp {
    /// A session started; [`Smtp::SessionEnded`] follows.
    SessionStarted,
    SessionEnded,
    /// A connection answered "too busy" (the session limit was reached).
    SessionRefusedBusy,
    RecipientAccepted,
    RecipientUnknown,
    /// A recipient refused with a temporary failure (the lookup failed).
    RecipientTemporaryFailure,
    MessageStored,
    MessageTemporaryFailure,
}

/// What a CRL or AIA fetch was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    Crl,
    Aia,
}

/// How a fetch ended: from the network, or from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    Fetched,
    Failed,
    Cached,
    /// A recent failure remembered, not tried again yet.
    CachedFailure,
}

impl FetchResult {
    const ALL: [FetchResult; 4] = [
        FetchResult::Fetched,
        FetchResult::Failed,
        FetchResult::Cached,
        FetchResult::CachedFailure,
    ];

    fn as_str(self) -> &'static str {
        match self {
            FetchResult::Fetched => "fetched",
            FetchResult::Failed => "failed",
            FetchResult::Cached => "cached",
            FetchResult::CachedFailure => "cached_failure",
        }
    }
}

impl FetchKind {
    fn as_str(self) -> &'static str {
        match self {
            FetchKind::Crl => "crl",
            FetchKind::Aia => "aia",
        }
    }
}

/// The figures of one application instance; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    started_at: i64,
    deliveries: Family<DeliveryLabels, Counter>,
    notification_timeouts: Counter,
    to_processed: Histogram,
    /// For the console (the histogram does not give its count and sum back): the
    /// processed notifications timed, and their seconds in all.
    processed: Counter,
    processed_seconds: Counter<f64, AtomicU64>,
    received: Family<ReceivedLabels, Counter>,
    smtp_sessions: Family<ResultLabels, Counter>,
    smtp_open: Gauge,
    smtp_recipients: Family<ResultLabels, Counter>,
    smtp_messages: Family<ResultLabels, Counter>,
    fetches: Family<FetchLabels, Counter>,
    http: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// For the console, which cannot list the families' label sets: every request,
    /// and those answered with a 5xx.
    http_requests: Counter,
    http_server_errors: Counter,
    outbound_queue: Family<StateLabels, Gauge>,
    inbound_queue: Family<StateLabels, Gauge>,
    quarantined: Gauge,
    days_left: Family<CertificateLabels, Gauge<f64, AtomicU64>>,
    /// One scrape at a time sets the gauges read from the database and encodes them
    /// (two at once would clear and fill the certificates' family under each other).
    scraping: tokio::sync::Mutex<()>,
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

impl Metrics {
    /// A fresh registry with every family, for an instance started at `now`.
    pub fn new(now: i64) -> Metrics {
        let mut inner = Inner {
            registry: Registry::with_prefix("directmail"),
            started_at: now,
            deliveries: Family::default(),
            notification_timeouts: Counter::default(),
            to_processed: Histogram::new(NOTIFICATION_BUCKETS),
            processed: Counter::default(),
            processed_seconds: Counter::default(),
            received: Family::default(),
            smtp_sessions: Family::default(),
            smtp_open: Gauge::default(),
            smtp_recipients: Family::default(),
            smtp_messages: Family::default(),
            fetches: Family::default(),
            http: Family::new_with_constructor(http_histogram as fn() -> Histogram),
            http_requests: Counter::default(),
            http_server_errors: Counter::default(),
            outbound_queue: Family::default(),
            inbound_queue: Family::default(),
            quarantined: Gauge::default(),
            days_left: Family::default(),
            scraping: tokio::sync::Mutex::new(()),
        };
        let registry = &mut inner.registry;
        registry.register(
            "outbound_deliveries",
            "Delivery attempts of outbound queue entries (one per recipient domain) by kind (message, mdn) and outcome (sent, temporary_failure, permanent_failure)",
            inner.deliveries.clone(),
        );
        registry.register(
            "outbound_notification_timeouts",
            "Recipients marked failed because no processed notification came in time",
            inner.notification_timeouts.clone(),
        );
        registry.register(
            "outbound_send_to_processed_seconds",
            "Seconds from a message being sent to its recipient's processed notification",
            inner.to_processed.clone(),
        );
        registry.register(
            "inbound_messages",
            "Received messages processed, by outcome (delivered, notification, quarantined) and reason (the trust verdict or routing code)",
            inner.received.clone(),
        );
        registry.register(
            "smtp_sessions",
            "Inbound SMTP connections by result (accepted, refused_busy)",
            inner.smtp_sessions.clone(),
        );
        registry.register(
            "smtp_sessions_open",
            "Inbound SMTP sessions in progress",
            inner.smtp_open.clone(),
        );
        registry.register(
            "smtp_recipients",
            "RCPT TO commands by result (accepted, unknown, temporary_failure)",
            inner.smtp_recipients.clone(),
        );
        registry.register(
            "smtp_messages",
            "Messages received over SMTP by result (stored, temporary_failure)",
            inner.smtp_messages.clone(),
        );
        registry.register(
            "pki_fetches",
            "CRL and AIA issuer fetches by kind (crl, aia) and result (fetched, failed, cached, cached_failure)",
            inner.fetches.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests of the portal by method, route template and status, and the seconds to their response",
            inner.http.clone(),
        );
        registry.register(
            "outbound_queue_entries",
            "Outbound queue entries by state (queued, sending, failed)",
            inner.outbound_queue.clone(),
        );
        registry.register(
            "inbound_queue_messages",
            "Received messages waiting to be processed, by state (received, processing)",
            inner.inbound_queue.clone(),
        );
        registry.register(
            "quarantined_messages",
            "Received messages in quarantine",
            inner.quarantined.clone(),
        );
        registry.register(
            "certificate_days_left",
            "Days until a hosted certificate, domain anchor or trust-bundle anchor ends (negative: ended)",
            inner.days_left.clone(),
        );
        Metrics(Arc::new(inner))
    }

    /// When this instance's counters started.
    pub fn started_at(&self) -> i64 {
        self.0.started_at
    }

    /// One delivery attempt of an outbound queue entry of `kind` (`message`, `mdn`).
    pub fn delivery(&self, kind: &str, outcome: Delivery) {
        let kind = if kind == "mdn" { "mdn" } else { "message" };
        self.0
            .deliveries
            .get_or_create(&DeliveryLabels {
                kind,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Recipients marked failed for want of a processed notification.
    pub fn notification_timeouts(&self, recipients: u64) {
        self.0.notification_timeouts.inc_by(recipients);
    }

    /// A notification moved a recipient of outbound message `outbound_id` from
    /// `before` to `state` at `now`. The first that says the message arrived (processed,
    /// or dispatched when it overtook processed: dispatched implies processed) is timed
    /// from sending.
    pub async fn notified(
        &self,
        conn: &mut sqlx::AnyConnection,
        outbound_id: i64,
        before: &str,
        state: &str,
        now: i64,
    ) -> sqlx::Result<()> {
        let first =
            matches!(before, "queued" | "sent") && matches!(state, "processed" | "dispatched");
        if !first {
            return Ok(());
        }
        if let Some(sent) = figures::sent_at(conn, outbound_id).await? {
            let seconds = (now - sent).max(0) as f64;
            self.0.to_processed.observe(seconds);
            self.0.processed.inc();
            self.0.processed_seconds.inc_by(seconds);
        }
        Ok(())
    }

    /// How a received message ended.
    pub fn received(&self, outcome: &crate::inbound::Outcome) {
        use crate::inbound::Outcome;
        let labels = match outcome {
            Outcome::Delivered { .. } => ReceivedLabels {
                outcome: "delivered",
                reason: "trusted",
            },
            Outcome::Notification => ReceivedLabels {
                outcome: "notification",
                reason: "mdn",
            },
            Outcome::Quarantined { verdict } => ReceivedLabels {
                outcome: "quarantined",
                reason: known_reason(verdict),
            },
        };
        self.0.received.get_or_create(&labels).inc();
    }

    pub fn smtp(&self, event: Smtp) {
        let count = |family: &Family<ResultLabels, Counter>, result| {
            family.get_or_create(&ResultLabels { result }).inc();
        };
        let m = &self.0;
        match event {
            Smtp::SessionStarted => {
                count(&m.smtp_sessions, "accepted");
                m.smtp_open.inc();
            }
            Smtp::SessionEnded => {
                m.smtp_open.dec();
            }
            Smtp::SessionRefusedBusy => count(&m.smtp_sessions, "refused_busy"),
            Smtp::RecipientAccepted => count(&m.smtp_recipients, "accepted"),
            Smtp::RecipientUnknown => count(&m.smtp_recipients, "unknown"),
            Smtp::RecipientTemporaryFailure => count(&m.smtp_recipients, "temporary_failure"),
            Smtp::MessageStored => count(&m.smtp_messages, "stored"),
            Smtp::MessageTemporaryFailure => count(&m.smtp_messages, "temporary_failure"),
        }
    }

    pub fn fetch(&self, kind: FetchKind, result: FetchResult) {
        self.0
            .fetches
            .get_or_create(&FetchLabels {
                kind: kind.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    /// An HTTP request answered: `route` is the matched route's template.
    pub fn http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        // any token is a method to HTTP: only the ones served keep their name
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        self.0
            .http
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .observe(seconds);
        self.0.http_requests.inc();
        if status >= 500 {
            self.0.http_server_errors.inc();
        }
    }

    /// Sets the gauges read from the database as of `now`, then encodes everything.
    pub async fn render(&self, db: &Db, now: i64) -> anyhow::Result<String> {
        let _one = self.0.scraping.lock().await;
        let read = Read::from_db(db).await?;
        let m = &self.0;
        for state in ["queued", "sending", "failed"] {
            m.outbound_queue
                .get_or_create(&StateLabels { state })
                .set(count_of(&read.outbound_queue, state));
        }
        for state in ["received", "processing"] {
            m.inbound_queue
                .get_or_create(&StateLabels { state })
                .set(count_of(&read.inbound_queue, state));
        }
        m.quarantined.set(read.quarantined);
        // certificates removed since the last scrape disappear from the family
        m.days_left.clear();
        for end in &read.certificates {
            m.days_left
                .get_or_create(&certificate_labels(end))
                .set(days_left(end.not_after, now));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry)?;
        Ok(text)
    }

    /// The figures for the console's page (days left are the page's to work out).
    pub async fn figures(&self, db: &Db) -> anyhow::Result<Figures> {
        let read = Read::from_db(db).await?;
        let m = &self.0;
        let mut deliveries = Vec::new();
        for kind in ["message", "mdn"] {
            for outcome in Delivery::ALL {
                let labels = DeliveryLabels {
                    kind,
                    outcome: outcome.as_str(),
                };
                deliveries.push((kind, outcome.as_str(), counter(&m.deliveries, &labels)));
            }
        }
        let mut received = vec![
            (
                "delivered",
                "trusted",
                counter(
                    &m.received,
                    &ReceivedLabels {
                        outcome: "delivered",
                        reason: "trusted",
                    },
                ),
            ),
            (
                "notification",
                "mdn",
                counter(
                    &m.received,
                    &ReceivedLabels {
                        outcome: "notification",
                        reason: "mdn",
                    },
                ),
            ),
        ];
        for reason in quarantine_reasons() {
            let labels = ReceivedLabels {
                outcome: "quarantined",
                reason,
            };
            let n = counter(&m.received, &labels);
            if n > 0 {
                received.push(("quarantined", reason, n));
            }
        }
        let mut fetches = Vec::new();
        for kind in [FetchKind::Crl, FetchKind::Aia] {
            for result in FetchResult::ALL {
                let labels = FetchLabels {
                    kind: kind.as_str(),
                    result: result.as_str(),
                };
                fetches.push((kind.as_str(), result.as_str(), counter(&m.fetches, &labels)));
            }
        }
        let result = |family: &Family<ResultLabels, Counter>, result| {
            counter(family, &ResultLabels { result })
        };
        let count = m.processed.get();
        Ok(Figures {
            started_at: m.started_at,
            outbound_queue: ["queued", "sending", "failed"]
                .into_iter()
                .map(|s| (s, count_of(&read.outbound_queue, s)))
                .collect(),
            inbound_queue: ["received", "processing"]
                .into_iter()
                .map(|s| (s, count_of(&read.inbound_queue, s)))
                .collect(),
            quarantined: read.quarantined,
            deliveries,
            notification_timeouts: m.notification_timeouts.get(),
            processed: count,
            processed_mean_seconds: if count > 0 {
                m.processed_seconds.get() / count as f64
            } else {
                0.0
            },
            received,
            smtp_accepted: result(&m.smtp_sessions, "accepted"),
            smtp_refused_busy: result(&m.smtp_sessions, "refused_busy"),
            smtp_open: m.smtp_open.get(),
            smtp_recipients_unknown: result(&m.smtp_recipients, "unknown"),
            smtp_stored: result(&m.smtp_messages, "stored"),
            fetches,
            http_requests: m.http_requests.get(),
            http_server_errors: m.http_server_errors.get(),
            certificates: read.certificates,
        })
    }
}

/// What the console's figures page shows: the database's figures, this instance's
/// counters since it started, and every certificate with when it ends.
#[derive(Debug, Clone)]
pub struct Figures {
    pub started_at: i64,
    pub outbound_queue: Vec<(&'static str, i64)>,
    pub inbound_queue: Vec<(&'static str, i64)>,
    pub quarantined: i64,
    /// (kind, outcome, count)
    pub deliveries: Vec<(&'static str, &'static str, u64)>,
    pub notification_timeouts: u64,
    /// Processed notifications timed, and their mean time since sending.
    pub processed: u64,
    pub processed_mean_seconds: f64,
    /// (outcome, reason, count)
    pub received: Vec<(&'static str, &'static str, u64)>,
    pub smtp_accepted: u64,
    pub smtp_refused_busy: u64,
    pub smtp_open: i64,
    pub smtp_recipients_unknown: u64,
    pub smtp_stored: u64,
    /// (kind, result, count)
    pub fetches: Vec<(&'static str, &'static str, u64)>,
    pub http_requests: u64,
    pub http_server_errors: u64,
    pub certificates: Vec<CertificateEnd>,
}

/// What one scrape reads from the database.
struct Read {
    outbound_queue: Vec<(String, i64)>,
    inbound_queue: Vec<(String, i64)>,
    quarantined: i64,
    certificates: Vec<CertificateEnd>,
}

impl Read {
    async fn from_db(db: &Db) -> sqlx::Result<Read> {
        Ok(Read {
            outbound_queue: figures::outbound_queue(db).await?,
            inbound_queue: figures::inbound_queue(db).await?,
            quarantined: crate::store::inbound::quarantined(db).await?,
            certificates: figures::certificate_ends(db).await?,
        })
    }
}

fn count_of(counts: &[(String, i64)], state: &str) -> i64 {
    counts
        .iter()
        .find(|(s, _)| s == state)
        .map_or(0, |(_, n)| *n)
}

fn counter<L>(family: &Family<L, Counter>, labels: &L) -> u64
where
    L: Clone + std::hash::Hash + Eq,
{
    family.get(labels).map_or(0, |c| c.get())
}

/// Every reason a received message can be quarantined for.
fn quarantine_reasons() -> impl Iterator<Item = &'static str> {
    directmail_smime::ReasonCode::ALL
        .into_iter()
        .map(|c| c.as_str())
        .filter(|c| *c != "trusted")
        .chain(ROUTING_REASONS)
        .chain(["other"])
}

/// `code` from the fixed list of reasons, or `other`: a label's values stay few.
fn known_reason(code: &str) -> &'static str {
    quarantine_reasons().find(|r| *r == code).unwrap_or("other")
}

/// Days from `now` to `not_after`, negative once it has passed.
pub fn days_left(not_after: i64, now: i64) -> f64 {
    (not_after - now) as f64 / 86_400.0
}

/// The first 16 hex digits of a fingerprint, whatever separators it was stored with.
fn fingerprint_prefix(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase()
}

fn certificate_labels(end: &CertificateEnd) -> CertificateLabels {
    CertificateLabels {
        kind: end.kind.as_str(),
        domain: end
            .domain
            .as_ref()
            .map(|(_, _, name)| name.clone())
            .unwrap_or_default(),
        bundle: end
            .bundle
            .as_ref()
            .map(|(_, name)| name.clone())
            .unwrap_or_default(),
        fingerprint: fingerprint_prefix(&end.fingerprint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_reason_is_counted_as_other_and_known_ones_as_themselves() {
        assert_eq!(known_reason("untrusted_anchor"), "untrusted_anchor");
        assert_eq!(
            known_reason("recipient_not_addressed"),
            "recipient_not_addressed"
        );
        assert_eq!(known_reason("dr.ana@direct.lakeside.test"), "other");
        assert_eq!(known_reason("trusted"), "other");
    }

    #[test]
    fn a_fingerprint_prefix_is_sixteen_lowercase_hex_digits() {
        assert_eq!(
            fingerprint_prefix("AB:CD:EF:01:23:45:67:89:AB:CD"),
            "abcdef0123456789"
        );
    }
}
