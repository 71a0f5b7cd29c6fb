//! Sending Direct messages: a message is stored with one queue entry per recipient
//! domain in one transaction; a worker seals each entry (signed with the sender's
//! domain or address certificate, encrypted to the recipients and the sender) and
//! delivers it. Recipients on a domain hosted here go through the full S/MIME path
//! with only the network skipped. Delivery notifications (MDNs) are built here too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use directmail_smime::{self as smime, Certificate, Identity, Recipient, SealOptions};
use rand::Rng as _;

use crate::clock::Clock;
use crate::db::Db;
use crate::leases::Claim;
use crate::pki;
use crate::secrets::SecretKey;
use crate::stages::{self, Stage};
use crate::store::inbound::{self as inbound_store, NewInbound};
use crate::store::mailboxes::Mailbox;
use crate::store::orgs;
use crate::store::outbound::{self as store, Job, NewOutbound};

/// Why sending failed: temporary (retry later) or permanent (fail now).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Temporary(String),
    #[error("{0}")]
    Permanent(String),
}

/// A file attached to a message.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// What a user writes.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// The Message-ID this replies to, and the thread's References.
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    /// The patient block, sent as a Direct Context part; its `id`, when it has none,
    /// is the message's own (a reply with documents and a reminder keep the records
    /// request's id, which is how the requester knows what they answer).
    pub context: Option<directmail_content::context::Context>,
    /// Whether the attachments go out as one XDM package ([`crate::packaging`]); a
    /// message without attachments is sent as it is.
    pub as_xdm: bool,
    /// Set when the sender marked the message a sensitive record: its notice goes
    /// first, and an XDM package carries the law's labels. (The CDA documents among the
    /// attachments are labelled before they get here: [`crate::packaging::label_documents`].)
    pub sensitive: Option<crate::sensitivity::Outgoing>,
    /// The API client's `Idempotency-Key`: unique per sending mailbox, so that a
    /// request repeated after a lost answer finds this message instead of sending
    /// another ([`store::by_idempotency_key`]).
    pub idempotency_key: Option<String>,
}

/// A message written by a user: stored, its Sent copy filed, and queued per
/// recipient domain, all in one transaction. Returns the outbound id.
#[allow(clippy::too_many_arguments)]
pub async fn submit(
    db: &Db,
    mailbox: &Mailbox,
    sender_name: &str,
    to: &[String],
    cc: &[String],
    subject: &str,
    text: &str,
    now: i64,
) -> anyhow::Result<i64> {
    let draft = Draft {
        to: to.to_vec(),
        cc: cc.to_vec(),
        subject: subject.to_owned(),
        text: text.to_owned(),
        ..Draft::default()
    };
    submit_draft(db, mailbox, sender_name, &draft, now).await
}

/// [`submit`] with attachments.
pub async fn submit_draft(
    db: &Db,
    mailbox: &Mailbox,
    sender_name: &str,
    draft: &Draft,
    now: i64,
) -> anyhow::Result<i64> {
    let domain = mailbox
        .address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("localhost");
    let message_id = format!("{}@{domain}", crate::auth::new_token().0);
    let mut builder = mail_builder::MessageBuilder::new()
        .from((sender_name.to_owned(), mailbox.address.clone()))
        .to(draft.to.iter().map(|a| a.as_str()).collect::<Vec<_>>())
        .subject(draft.subject.clone())
        .message_id(message_id.clone())
        .date(now);
    builder = match &draft.sensitive {
        // the notice is the first text part; the sender's text follows it inline
        Some(sensitive) => {
            builder.attachments = Some(vec![
                mail_builder::mime::MimePart::new("text/plain", draft.text.clone()).inline(),
            ]);
            builder.text_body(sensitive.first_part.clone())
        }
        None => builder.text_body(draft.text.clone()),
    };
    if let Some(parent) = &draft.in_reply_to {
        builder = builder.in_reply_to(parent.clone());
    }
    if let Some(refs) = &draft.references {
        builder = builder.references(
            refs.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    if !draft.cc.is_empty() {
        builder = builder.cc(draft.cc.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    }
    let packaged;
    let attachments = if draft.as_xdm && !draft.attachments.is_empty() {
        let sender = directmail_content::xdm::Sender {
            person: Some(sender_name.trim().to_owned()).filter(|n| !n.is_empty()),
            institution: orgs::get(db, mailbox.org_id).await?.map(|o| o.name),
            address: mailbox.address.clone(),
        };
        let recipients: Vec<String> = draft.to.iter().chain(&draft.cc).cloned().collect();
        let (files, context) = (draft.attachments.clone(), draft.context.clone());
        let law = draft.sensitive.as_ref().map(|s| s.law);
        packaged = [tokio::task::spawn_blocking(move || {
            crate::packaging::package(&files, context.as_ref(), sender, recipients, law, now)
        })
        .await??];
        &packaged[..]
    } else {
        &draft.attachments[..]
    };
    for a in attachments {
        builder = builder.attachment(a.content_type.clone(), a.name.clone(), a.data.clone());
    }
    if let Some(context) = &draft.context {
        // Expressing Context in Direct Messaging v1.1: the header on the (signed)
        // message names, by Content-ID, a text/plain metadata.txt part
        let context = directmail_content::context::Context {
            id: context.id.clone().or_else(|| Some(message_id.clone())),
            ..context.clone()
        };
        let text = directmail_content::context::build_context(&context)?;
        let cid = format!("context.{message_id}");
        builder = builder.header(
            "X-Direct-Context",
            mail_builder::headers::message_id::MessageId::new(cid.clone()),
        );
        builder.attachments.get_or_insert_with(Vec::new).push(
            mail_builder::mime::MimePart::new("text/plain", text)
                .attachment("metadata.txt")
                .cid(cid),
        );
    }
    let raw = builder.write_to_vec()?;
    // the Sent copy names its patient, and records its clinical documents, as a
    // received copy would
    let filing = tokio::task::spawn_blocking({
        let raw = raw.clone();
        move || crate::filing::read(&raw)
    })
    .await?;
    let mut all: Vec<String> = draft.to.clone();
    all.extend(draft.cc.iter().cloned());
    let mut tx = db.begin().await?;
    let id = store::insert(
        &mut tx,
        NewOutbound {
            mailbox_id: Some(mailbox.id),
            kind: "message",
            from_addr: &mailbox.address,
            message_id: &message_id,
            subject: &draft.subject,
            raw: &raw,
            recipient_cert: None,
        },
        &all,
        now,
    )
    .await?;
    if let Some(key) = &draft.idempotency_key {
        store::set_idempotency_key(&mut tx, id, key).await?;
    }
    inbound_store::file_sent(
        &mut tx,
        mailbox.id,
        id,
        &message_id,
        &mailbox.address,
        &draft.subject,
        &raw,
        &filing,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// How many delivery workers run side by side.
pub const WORKERS: usize = 4;

/// How many queue entries a worker claims and delivers side by side at a time.
const BATCH: i64 = 4;

/// The delivery worker; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    pub db: Db,
    pub secret: Arc<SecretKey>,
    pub clock: Clock,
    /// Woken when something is queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// Woken after a local delivery, so the receiving side processes it at once.
    pub wake_inbound: Arc<tokio::sync::Notify>,
    /// `host:port` of the SMTP relay for other HISPs' domains.
    pub relay: Option<String>,
    /// The name given in EHLO.
    pub hostname: String,
    /// Seconds to wait for a processed notification.
    pub notify_timeout: i64,
    /// Seconds during which temporary failures are retried.
    pub retry_deadline: i64,
    /// The DNS resolver for MX lookups (`DIRECTMAIL_DNS_RESOLVER`), or the system's.
    pub dns_resolver: Option<std::net::SocketAddr>,
    /// The port mail exchangers listen on.
    pub mx_port: u16,
    /// The outbound-connection policy: MX answers are someone else's word.
    pub network: directmail_net::Policy,
    /// Finds certificates of recipients on other HISPs.
    pub discovery: Arc<directmail_discovery::Discovery>,
    /// Counts delivery attempts by outcome.
    pub metrics: crate::metrics::Metrics,
    /// Woken after outcomes were recorded: a status change queues webhook events.
    pub wake_webhooks: Arc<tokio::sync::Notify>,
    /// Set when the server stops: finish the batch in hand, claim no more.
    pub stop: crate::app::Stopping,
    /// The claims this instance holds, renewed while it works on them.
    pub leases: crate::leases::Leases,
}

impl Sender {
    pub async fn run(self) {
        while !self.stop.is_set() {
            match store::expire_waiting(&self.db, self.notify_timeout, self.clock.now()).await {
                Ok(0) => {}
                Ok(n) => {
                    self.metrics.notification_timeouts(n as u64);
                    tracing::warn!(
                        recipients = n,
                        "no delivery notification in time: marked failed"
                    )
                }
                Err(e) => tracing::error!(error = %e, "checking notification timeouts failed"),
            }
            match self.send_next().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "sending a queued message failed")
                }
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                () = self.wake.notified() => {},
                () = tokio::time::sleep(Duration::from_secs(5)) => {},
                () = stop.wait() => {},
            }
        }
    }

    /// Delivers due queue entries, a few at a time side by side; false when nothing
    /// was due. The outcomes of one batch are recorded in the same write as the claim
    /// of the next.
    pub async fn send_next(&self) -> anyhow::Result<bool> {
        let lease = self.leases.seconds();
        let mut batch = store::claim_next(&self.db, self.clock.now(), lease, BATCH).await?;
        if batch.is_empty() {
            return Ok(false);
        }
        loop {
            let _held: Vec<_> = batch
                .iter()
                .map(|job| {
                    self.leases
                        .hold(Claim::Outbound(job.queue_id), job.attempts)
                })
                .collect();
            let reads = BatchReads::default();
            let results =
                futures_util::future::join_all(batch.iter().map(|job| self.deliver(job, &reads)))
                    .await;
            // Recording the outcomes is retried on a passing database error: a message
            // may already be with the peer, so its job must not be sent again.
            let mut tries = 0;
            let next = loop {
                match self.record(&batch, &results, self.clock.now()).await {
                    Ok(next) => {
                        self.wake_webhooks.notify_one();
                        for (job, result) in batch.iter().zip(&results) {
                            let outcome = crate::metrics::Delivery::of(result);
                            self.metrics.delivery(&job.kind, outcome);
                        }
                        break next;
                    }
                    Err(e) if tries < 5 => {
                        tries += 1;
                        tracing::warn!(error = %e, "recording delivery outcomes failed; trying again");
                        tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            if next.is_empty() {
                return Ok(true);
            }
            batch = store::jobs(&self.db, &next).await?;
        }
    }

    /// Records each job's outcome and claims the next due entries, in one transaction.
    async fn record(
        &self,
        jobs: &[Job],
        results: &[Result<(), SendError>],
        now: i64,
    ) -> sqlx::Result<Vec<i64>> {
        let _turn = self.db.write_turn().await;
        // lost on a power failure, the entries are claimed and sent again
        let mut tx = self.db.begin_redoable().await?;
        for (job, result) in jobs.iter().zip(results) {
            self.record_one(&mut tx, job, result, now).await?;
        }
        // a server that is stopping finishes its batch and claims no more
        let more = if self.stop.is_set() { 0 } else { BATCH };
        let lease = self.leases.seconds();
        let next = store::claim_on(&mut tx, self.db.backend, now, lease, more).await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn record_one(
        &self,
        tx: &mut sqlx::AnyConnection,
        job: &Job,
        result: &Result<(), SendError>,
        now: i64,
    ) -> sqlx::Result<()> {
        let recorded = match result {
            Ok(()) => store::mark_sent(tx, job, now).await,
            Err(SendError::Permanent(reason)) => {
                tracing::warn!(queue = job.queue_id, domain = %job.domain, "delivery failed: {reason}");
                store::mark_failed(tx, job, reason, now).await
            }
            Err(SendError::Temporary(reason)) => {
                if now - job.created_at >= self.retry_deadline {
                    let reason = format!(
                        "{reason}; gave up after {} hours of retries",
                        self.retry_deadline / 3600
                    );
                    store::mark_failed(tx, job, &reason, now).await
                } else {
                    // exponential backoff from one minute, capped at an hour, with jitter
                    let base = 60i64
                        .saturating_mul(1 << job.attempts.clamp(0, 6))
                        .min(3600);
                    let jitter = rand::rng().random_range(0..=base / 4);
                    store::retry_later(tx, job, reason, now + base + jitter, now).await
                }
            }
        }?;
        if !recorded {
            // this instance stalled longer than a lease and another claimed the entry
            // again: that claim records the outcome (the peer may get the message twice)
            tracing::warn!(
                queue = job.queue_id,
                "the claim on a queue entry lapsed while it was delivered; its outcome is left to the new claim"
            );
        }
        Ok(())
    }

    async fn deliver(&self, job: &Job, reads: &BatchReads) -> Result<(), SendError> {
        let now = self.clock.now();
        let internal = |e: anyhow::Error| SendError::Temporary(format!("internal error: {e:#}"));
        let from_domain = job
            .from_addr
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default();
        let Some(sender_domain) = self.domain(reads, from_domain).await.map_err(internal)? else {
            return Err(SendError::Permanent(format!(
                "{from_domain} is not hosted here"
            )));
        };
        let identities = self
            .identities(reads, sender_domain.id)
            .await
            .map_err(internal)?;
        let signer = pick(&identities, &job.from_addr).ok_or_else(|| {
            SendError::Permanent(format!(
                "This HISP holds no certificate for {}; ask your administrator to import one.",
                job.from_addr
            ))
        })?;
        let hosted = self.domain(reads, &job.domain).await.map_err(internal)?;
        let key_transport = reads
            .key_transports
            .get(&job.domain, pki::key_transport_for(&self.db, &job.domain))
            .await
            .map_err(internal)?;
        let mut recipients = Vec::new();
        let fixed = match &job.recipient_cert {
            Some(pem) => smime::parse_certificates(pem.as_bytes())
                .map_err(|e| internal(e.into()))?
                .into_iter()
                .next(),
            None => None,
        };
        for address in &job.recipients {
            let cert = match &fixed {
                Some(c) => Some(c.clone()),
                None => self
                    .certificate_for(address, hosted.as_ref(), reads)
                    .await
                    .map_err(internal)?,
            };
            let Some(certificate) = cert else {
                return Err(SendError::Permanent(format!(
                    "No certificate was found for {address} (DNS CERT and LDAP discovery included), so the message cannot be encrypted for them. Check the address; if it is right, ask your administrator to add the recipient's certificate."
                )));
            };
            recipients.push(Recipient {
                certificate,
                key_transport,
            });
        }
        let options = SealOptions {
            no_notification_request: job.kind == "mdn",
            ..SealOptions::default()
        };
        let raw = job.raw.clone();
        let signer = signer.clone();
        let sealed = stages::timed(
            Stage::Seal,
            tokio::task::spawn_blocking(move || {
                smime::seal(&raw, &signer, &recipients, &options, system_time(now))
            }),
        )
        .await
        .map_err(|e| internal(e.into()))?
        .map_err(|e| {
            SendError::Permanent(format!(
                "The message could not be signed and encrypted: {e}."
            ))
        })?;
        let sending = std::time::Instant::now();
        let sent = self.hand_over(hosted.is_some(), job, &sealed, now).await;
        stages::record(Stage::Send, sending.elapsed());
        sent
    }

    /// Hands `sealed` to the next hop: our own inbound queue for a domain hosted here,
    /// else the relay or the recipient domain's mail exchangers.
    async fn hand_over(
        &self,
        hosted: bool,
        job: &Job,
        sealed: &[u8],
        now: i64,
    ) -> Result<(), SendError> {
        let internal = |e: anyhow::Error| SendError::Temporary(format!("internal error: {e:#}"));
        match hosted {
            // AS 1.3 routing within one HISP: the full path, only the network skipped
            true => {
                inbound_store::insert(
                    &self.db,
                    NewInbound {
                        mail_from: &job.from_addr,
                        rcpt_to: &job.recipients,
                        remote_ip: "local",
                        helo: "localhost",
                        tls: true,
                        raw: sealed,
                    },
                    now,
                )
                .await
                .map_err(|e| internal(e.into()))?;
                self.wake_inbound.notify_one();
                Ok(())
            }
            false => match &self.relay {
                Some(relay) => {
                    let name = relay.rsplit_once(':').map(|(h, _)| h).unwrap_or(relay);
                    smtp_send(
                        relay,
                        name,
                        &self.hostname,
                        &job.from_addr,
                        &job.recipients,
                        sealed,
                    )
                    .await
                }
                None => {
                    let hosts = mx_hosts(self.dns_resolver, &self.network, &job.domain).await?;
                    let mut last = SendError::Temporary(format!(
                        "no mail exchanger of {} answered",
                        job.domain
                    ));
                    for (name, ip) in hosts {
                        let target = std::net::SocketAddr::new(ip, self.mx_port).to_string();
                        match smtp_send(
                            &target,
                            &name,
                            &self.hostname,
                            &job.from_addr,
                            &job.recipients,
                            sealed,
                        )
                        .await
                        {
                            Ok(()) => return Ok(()),
                            // a refusal is final: other exchangers of the domain would say the same
                            Err(e @ SendError::Permanent(_)) => return Err(e),
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                }
            },
        }
    }

    /// The recipient's encryption certificate: a hosted domain's own, or one learned
    /// from the recipient's earlier signed messages.
    async fn certificate_for(
        &self,
        address: &str,
        hosted: Option<&orgs::Domain>,
        reads: &BatchReads,
    ) -> anyhow::Result<Option<Certificate>> {
        if let Some(domain) = hosted {
            let ids = self.identities(reads, domain.id).await?;
            return Ok(pick(&ids, address).map(|i| i.certificate().clone()));
        }
        let foreign = async {
            Ok(
                crate::recipients::foreign(&self.db, &self.discovery, address, self.clock.now())
                    .await?
                    .certificate,
            )
        };
        reads.certificates.get(address, foreign).await
    }

    /// A domain hosted here, by name, read once per batch.
    async fn domain(&self, reads: &BatchReads, name: &str) -> anyhow::Result<Option<orgs::Domain>> {
        let read = async { Ok(orgs::domain_by_name(&self.db, name).await?) };
        reads.domains.get(name, read).await
    }

    /// A hosted domain's identities, read once per batch.
    async fn identities(
        &self,
        reads: &BatchReads,
        domain_id: i64,
    ) -> anyhow::Result<Vec<Identity>> {
        let read = pki::identities(&self.db, &self.secret, domain_id);
        reads.identities.get(&domain_id.to_string(), read).await
    }
}

/// What the jobs of one batch read before sealing, read once for the whole batch: a
/// batch goes to one domain, and its jobs are mostly the notifications of one
/// received message, so each job read the same domains, keys and certificates
/// again (about six reads per notification). Kept only while the batch is delivered:
/// nothing outlives it, so a certificate removed or revoked, or a domain's key
/// replaced, is read afresh by the next batch, as it was by the next job.
#[derive(Default)]
struct BatchReads {
    domains: Memo<Option<orgs::Domain>>,
    identities: Memo<Vec<Identity>>,
    key_transports: Memo<smime::KeyTransport>,
    certificates: Memo<Option<Certificate>>,
}

/// One kind of read by key: the first job to ask reads it, the others asking for
/// the same key wait for that read and share its answer (a failure too, as its
/// sentence); different keys are read side by side.
type Answer<V> = Arc<tokio::sync::OnceCell<Result<V, String>>>;

struct Memo<V>(std::sync::Mutex<std::collections::HashMap<String, Answer<V>>>);

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo(Default::default())
    }
}

impl<V: Clone> Memo<V> {
    async fn get(
        &self,
        key: &str,
        read: impl std::future::Future<Output = anyhow::Result<V>>,
    ) -> anyhow::Result<V> {
        let answer = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone();
        let answer = answer
            .get_or_init(|| async { read.await.map_err(|e| format!("{e:#}")) })
            .await;
        answer.clone().map_err(anyhow::Error::msg)
    }
}

/// The domain's mail exchangers by preference (RFC 5321 §5.1), or the domain itself
/// when it publishes no MX. A domain that does not exist fails at once.
async fn mx_hosts(
    resolver: Option<std::net::SocketAddr>,
    network: &directmail_net::Policy,
    domain: &str,
) -> Result<Vec<(String, std::net::IpAddr)>, SendError> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::{Resolver, TokioResolver};

    let built = match resolver {
        Some(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut server.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
            .build()
        }
        None => TokioResolver::builder_tokio().and_then(|b| b.build()),
    };
    let resolver = built.map_err(|e| SendError::Temporary(format!("DNS is not usable: {e}")))?;
    let names = exchanges(&resolver, domain).await?;
    // the exchangers' addresses come from the same resolver as the MX records
    let mut out = Vec::new();
    let mut refused = None;
    for name in names {
        if let Ok(ips) = resolver.lookup_ip(format!("{name}.")).await {
            let ips: Vec<std::net::IpAddr> = ips.iter().collect();
            // the outbound-connection policy: a hostile domain's MX cannot point this
            // server at its own network
            match network.filter(&ips) {
                Ok(allowed) => out.extend(allowed.into_iter().map(|ip| (name.clone(), ip))),
                Err(e) => refused = Some(format!("mail exchanger {name}: {e}")),
            }
        }
    }
    if out.is_empty() {
        // a refusal by policy does not change by waiting
        return Err(match refused {
            Some(why) => SendError::Permanent(why),
            None => SendError::Temporary(format!(
                "no address was found for the mail exchangers of {domain}"
            )),
        });
    }
    Ok(out)
}

async fn exchanges<P: hickory_resolver::ConnectionProvider>(
    resolver: &hickory_resolver::Resolver<P>,
    domain: &str,
) -> Result<Vec<String>, SendError> {
    match resolver.mx_lookup(format!("{domain}.")).await {
        Ok(answer) => {
            let mut records: Vec<(u16, String)> = answer
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_utf8().trim_end_matches('.').to_owned(),
                    )),
                    _ => None,
                })
                .collect();
            records.sort();
            if records.is_empty() {
                return Ok(vec![domain.to_owned()]);
            }
            // RFC 7505: a single "." exchange means the domain accepts no mail
            if records.iter().all(|(_, h)| h.is_empty()) {
                return Err(SendError::Permanent(format!(
                    "{domain} accepts no mail (null MX)"
                )));
            }
            Ok(records
                .into_iter()
                .map(|(_, h)| h)
                .filter(|h| !h.is_empty())
                .collect())
        }
        Err(e) if e.is_nx_domain() => Err(SendError::Permanent(format!(
            "The domain {domain} does not exist; check the address."
        ))),
        Err(e) if e.is_no_records_found() => Ok(vec![domain.to_owned()]),
        Err(e) => Err(SendError::Temporary(format!(
            "looking up the mail exchanger of {domain} failed: {e}"
        ))),
    }
}

/// Hands a sealed message to the relay. 4xx and connection errors are temporary;
/// 5xx is permanent. STARTTLS is used when the server offers it. The connection is
/// ours, with Nagle's algorithm off: lettre writes the message and its final dot
/// separately, and that small second write otherwise waited for the server's delayed
/// acknowledgement (40 ms per message).
async fn smtp_send(
    relay: &str,
    tls_name: &str,
    hostname: &str,
    from: &str,
    to: &[String],
    sealed: &[u8],
) -> Result<(), SendError> {
    use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;

    let (host, port) = relay
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            SendError::Permanent(format!("DIRECTMAIL_SMTP_RELAY {relay} is not host:port"))
        })?;
    let bad = |what: &str| SendError::Permanent(format!("{what} is not a usable address"));
    let envelope = lettre::address::Envelope::new(
        Some(from.parse().map_err(|_| bad(from))?),
        to.iter()
            .map(|t| t.parse().map_err(|_| bad(t)))
            .collect::<Result<Vec<_>, _>>()?,
    )
    .map_err(|e| SendError::Permanent(format!("the envelope is not valid: {e}")))?;
    let temporary = |e: &dyn std::fmt::Display| SendError::Temporary(format!("{relay}: {e}"));
    let answered = |e: lettre::transport::smtp::Error| {
        if e.is_permanent() {
            SendError::Permanent(format!("The receiving HISP refused the message: {e}."))
        } else {
            temporary(&e)
        }
    };
    let hello = ClientId::Domain(hostname.to_owned());
    let conversation = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| temporary(&e))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
            .await
            .map_err(answered)?;
        if conn.can_starttls()
            && let Ok(tls) = TlsParameters::new_rustls(tls_name.trim_matches(['[', ']']).to_owned())
        {
            conn.starttls(tls, &hello).await.map_err(answered)?;
        }
        conn.send(&envelope, sealed).await.map_err(answered)?;
        let _ = conn.quit().await;
        Ok(())
    };
    // a minute for the conversation, and a second more for every 64 KB of message
    let limit = Duration::from_secs(60 + (sealed.len() / 65_536) as u64);
    tokio::time::timeout(limit, conversation)
        .await
        .unwrap_or_else(|_| {
            Err(SendError::Temporary(format!(
                "{relay}: no answer within {} s",
                limit.as_secs()
            )))
        })
}

/// The identity bound to `address`: an address-bound certificate first, else the
/// domain-bound one (AS 1.3 §1.4).
fn pick<'a>(identities: &'a [Identity], address: &str) -> Option<&'a Identity> {
    identities
        .iter()
        .find(|i| {
            smime::san_rfc822_names(i.certificate())
                .iter()
                .any(|n| n.eq_ignore_ascii_case(address))
        })
        .or_else(|| {
            identities
                .iter()
                .find(|i| smime::binds_address(i.certificate(), address))
        })
}

fn system_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)
}

/// What an MDN reports (Implementation Guide for Delivery Notification in Direct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Received, decrypted and trusted by the receiving HISP.
    Processed,
    /// Delivered to the recipient's mailbox (final destination).
    Dispatched,
    /// Refused by the receiving HISP (not trusted, or not routed as Direct requires).
    Failed,
}

/// Builds a delivery notification from `final_recipient` to `notify_to` about the
/// message `original_id` (RFC 8098 multipart/report).
pub fn build_mdn(
    final_recipient: &str,
    notify_to: &str,
    original_id: &str,
    original_subject: &str,
    disposition: Disposition,
    now: i64,
) -> (String, Vec<u8>) {
    let domain = final_recipient
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("localhost");
    let message_id = format!("{}@{domain}", crate::auth::new_token().0);
    let boundary = format!("mdn-{}", &crate::auth::new_token().0[..16]);
    let (word, text, extension) = match disposition {
        Disposition::Processed => (
            "processed",
            "was received, decrypted and its signature verified",
            "",
        ),
        Disposition::Dispatched => (
            "dispatched",
            "was delivered to the recipient's mailbox",
            "X-DIRECT-FINAL-DESTINATION-DELIVERY\r\n",
        ),
        Disposition::Failed => (
            "failed",
            "was not accepted: the receiving system could not trust it or it was not addressed as Direct requires. It was not delivered",
            "",
        ),
    };
    let date = mail_builder::headers::date::Date::new(now).to_rfc822();
    let subject: String = original_subject
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let subject = if subject.is_ascii() {
        subject
    } else {
        "your message".into()
    };
    let raw = format!(
        "From: <{final_recipient}>\r\nTo: <{notify_to}>\r\nSubject: {Word}: {subject}\r\nDate: {date}\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nYour message to {final_recipient} {text}.\r\n\r\n--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: directmail; directmail\r\nOriginal-Recipient: rfc822;{final_recipient}\r\nFinal-Recipient: rfc822;{final_recipient}\r\nOriginal-Message-ID: <{original}>\r\nDisposition: automatic-action/MDN-sent-automatically;{word}\r\n{extension}\r\n--{boundary}--\r\n",
        Word = match word {
            "processed" => "Processed",
            "dispatched" => "Dispatched",
            _ => "Not delivered",
        },
        original = original_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>'),
    );
    (message_id, raw.into_bytes())
}

/// A notification about one of our messages, read from a received MDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub original_message_id: String,
    pub final_recipient: String,
    /// `processed`, `dispatched`, `failed`, … as the report says.
    pub disposition: String,
}

/// Whether the header block of `raw` says multipart/report of `kind`. Only the headers
/// are read (every received message is asked, and most are not reports).
fn is_report(raw: &[u8], kind: &str) -> bool {
    let end = |sep: &[u8]| raw.windows(sep.len()).position(|w| w == sep);
    let Some(end) = end(b"\r\n\r\n").or_else(|| end(b"\n\n")) else {
        return false;
    };
    let unfolded = String::from_utf8_lossy(&raw[..end])
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .to_ascii_lowercase();
    unfolded.contains("multipart/report") && unfolded.contains(kind)
}

/// Reads a received message as an MDN, if it is one.
pub fn read_mdn(raw: &[u8]) -> Option<Notification> {
    if !is_report(raw, "disposition-notification") {
        return None;
    }
    let text = String::from_utf8_lossy(raw);
    let field = |name: &str| {
        text.lines()
            .find(|l| l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name))
            .map(|l| l[name.len()..].trim().to_owned())
    };
    let original = field("Original-Message-ID:")?;
    let recipient = field("Final-Recipient:")?;
    let disposition = field("Disposition:")?;
    let word = disposition
        .rsplit(';')
        .next()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(Notification {
        original_message_id: original
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
        final_recipient: recipient
            .rsplit(';')
            .next()
            .unwrap_or("")
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_ascii_lowercase(),
        disposition: word,
    })
}

/// Reads a received message as a delivery status notification (RFC 3464), if it is
/// one: one [`Notification`] per failed recipient of the message whose headers it
/// returns (`disposition` is `failed`; delayed and delivered reports are ignored).
pub fn read_dsn(raw: &[u8]) -> Option<Vec<Notification>> {
    if !is_report(raw, "delivery-status") {
        return None;
    }
    let text = String::from_utf8_lossy(raw);
    let (_, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))?;
    let value = |l: &str, name: &str| -> Option<String> {
        (l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name))
            .then(|| l[name.len()..].trim().to_owned())
    };
    // the returned headers carry the original Message-ID
    let original = body
        .lines()
        .find_map(|l| value(l, "Message-ID:"))?
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    let mut out = Vec::new();
    let mut recipient: Option<String> = None;
    for line in body.lines() {
        if let Some(r) = value(line, "Final-Recipient:") {
            recipient = r
                .rsplit(';')
                .next()
                .map(|a| a.trim().trim_matches(['<', '>']).to_ascii_lowercase());
        } else if let Some(action) = value(line, "Action:")
            && action.eq_ignore_ascii_case("failed")
            && let Some(r) = recipient.take()
        {
            out.push(Notification {
                original_message_id: original.clone(),
                final_recipient: r,
                disposition: "failed".into(),
            });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mdn_we_build_reads_back() {
        let (_, raw) = build_mdn(
            "front@a.test",
            "dr@b.test",
            "<abc@b.test>",
            "Referral",
            Disposition::Dispatched,
            1_800_000_000,
        );
        let n = read_mdn(&raw).unwrap();
        assert_eq!(n.original_message_id, "abc@b.test");
        assert_eq!(n.final_recipient, "front@a.test");
        assert_eq!(n.disposition, "dispatched");
        assert!(
            String::from_utf8(raw)
                .unwrap()
                .contains("X-DIRECT-FINAL-DESTINATION-DELIVERY")
        );
        assert!(read_mdn(b"From: a@b\r\nSubject: hi\r\n\r\nDisposition: fake\r\n").is_none());
    }

    #[test]
    fn a_failure_dsn_names_the_failed_recipients_of_our_message() {
        let dsn = b"From: MAILER-DAEMON@b.test\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns;b.test\r\n\r\nFinal-Recipient: rfc822;kim@b.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\nFinal-Recipient: rfc822;lee@b.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n--x\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <abc@a.test>\r\nSubject: hi\r\n--x--\r\n";
        let n = read_dsn(dsn).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].original_message_id, "abc@a.test");
        assert_eq!(n[0].final_recipient, "kim@b.test");
        assert!(read_dsn(b"From: a@b\r\n\r\nhello").is_none());
    }
}
